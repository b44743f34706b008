//! Decoding a message into a command envelope, and the fingerprint that tells a redelivery from
//! a different command reusing an id.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Larger messages are refused unread: no wallet command but `upload_pic` needs more.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The largest `upload_pic` message read: room for `wallet.pic_max_bytes` at its largest
/// ([`crate::domain::account::MAX_PIC_BYTES`], 3 MiB, which is 4 MiB in base64) and the rest of
/// the command.
pub const MAX_PICTURE_MESSAGE_BYTES: usize = 5 * 1024 * 1024;
pub const MAX_ID_LEN: usize = 128;

/// The command types of docs/CONTRACT.md §1, which are also their routing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    Recharge,
    RechargeRetrieve,
    Cash,
    CashApprove,
    CashReject,
    CashRetrieve,
    Transfer,
    Reward,
    Transform,
    OrdersList,
    OrdersGet,
    CashesList,
    ChargesList,
    ChargesGet,
    WalletGet,
    AccountOpen,
    AccountGet,
    AccountCards,
    UploadPic,
    CardBin,
    MerchantCreate,
    MerchantGet,
    MerchantApply,
    MerchantApplicationGet,
    MerchantSettleAccount,
    OrderCreate,
    OrderPay,
    OrderGet,
    OrderRefund,
    OrderRefunds,
    OrderRefundGet,
    AllocationCreate,
    AllocationGet,
    AllocationRefund,
    AllocationComplete,
    HoldCreate,
    HoldCapture,
    HoldRelease,
    WalletFreeze,
    WalletUnfreeze,
    LimitsSet,
    RechargeRefund,
    RedpacketCreate,
    RedpacketClaim,
    RedpacketGet,
    WalletChanges,
    WalletStatement,
    WalletProof,
}

impl CommandType {
    /// Commands only operators may send: the broker-validated `user_id` of their message must
    /// name one of `security.operator_users`.
    pub fn operator_only(self) -> bool {
        matches!(
            self,
            CommandType::CashApprove
                | CommandType::CashReject
                | CommandType::CashRetrieve
                | CommandType::WalletFreeze
                | CommandType::WalletUnfreeze
                | CommandType::LimitsSet
        )
    }

    /// Reads of pluspay's own rows that change nothing, not even by asking Ping++: a replay
    /// of one may be answered afresh, so their stored results are removed after
    /// `worker.read_retention_secs`. `order.get`, `account.get` and the like are not: they can
    /// complete what they read.
    pub fn is_local_read(self) -> bool {
        matches!(
            self,
            CommandType::OrdersList
                | CommandType::OrdersGet
                | CommandType::CashesList
                | CommandType::ChargesList
                | CommandType::ChargesGet
                | CommandType::WalletGet
                | CommandType::WalletChanges
                | CommandType::WalletStatement
                | CommandType::WalletProof
        )
    }

    pub const ALL: [CommandType; 48] = [
        CommandType::Recharge,
        CommandType::RechargeRetrieve,
        CommandType::Cash,
        CommandType::CashApprove,
        CommandType::CashReject,
        CommandType::CashRetrieve,
        CommandType::Transfer,
        CommandType::Reward,
        CommandType::Transform,
        CommandType::OrdersList,
        CommandType::OrdersGet,
        CommandType::CashesList,
        CommandType::ChargesList,
        CommandType::ChargesGet,
        CommandType::WalletGet,
        CommandType::AccountOpen,
        CommandType::AccountGet,
        CommandType::AccountCards,
        CommandType::UploadPic,
        CommandType::CardBin,
        CommandType::MerchantCreate,
        CommandType::MerchantGet,
        CommandType::MerchantApply,
        CommandType::MerchantApplicationGet,
        CommandType::MerchantSettleAccount,
        CommandType::OrderCreate,
        CommandType::OrderPay,
        CommandType::OrderGet,
        CommandType::OrderRefund,
        CommandType::OrderRefunds,
        CommandType::OrderRefundGet,
        CommandType::AllocationCreate,
        CommandType::AllocationGet,
        CommandType::AllocationRefund,
        CommandType::AllocationComplete,
        CommandType::HoldCreate,
        CommandType::HoldCapture,
        CommandType::HoldRelease,
        CommandType::WalletFreeze,
        CommandType::WalletUnfreeze,
        CommandType::LimitsSet,
        CommandType::RechargeRefund,
        CommandType::RedpacketCreate,
        CommandType::RedpacketClaim,
        CommandType::RedpacketGet,
        CommandType::WalletChanges,
        CommandType::WalletStatement,
        CommandType::WalletProof,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::Recharge => "recharge",
            CommandType::RechargeRetrieve => "recharge.retrieve",
            CommandType::Cash => "cash",
            CommandType::CashApprove => "cash.approve",
            CommandType::CashReject => "cash.reject",
            CommandType::CashRetrieve => "cash.retrieve",
            CommandType::Transfer => "transfer",
            CommandType::Reward => "reward",
            CommandType::Transform => "transform",
            CommandType::OrdersList => "orders.list",
            CommandType::OrdersGet => "orders.get",
            CommandType::CashesList => "cashes.list",
            CommandType::ChargesList => "charges.list",
            CommandType::ChargesGet => "charges.get",
            CommandType::WalletGet => "wallet.get",
            CommandType::AccountOpen => "account.open",
            CommandType::AccountGet => "account.get",
            CommandType::AccountCards => "account.cards",
            CommandType::UploadPic => "upload_pic",
            CommandType::CardBin => "card_bin",
            CommandType::MerchantCreate => "merchant.create",
            CommandType::MerchantGet => "merchant.get",
            CommandType::MerchantApply => "merchant.apply",
            CommandType::MerchantApplicationGet => "merchant.application.get",
            CommandType::MerchantSettleAccount => "merchant.settle_account",
            CommandType::OrderCreate => "order.create",
            CommandType::OrderPay => "order.pay",
            CommandType::OrderGet => "order.get",
            CommandType::OrderRefund => "order.refund",
            CommandType::OrderRefunds => "order.refunds",
            CommandType::OrderRefundGet => "order.refund.get",
            CommandType::AllocationCreate => "allocation.create",
            CommandType::AllocationGet => "allocation.get",
            CommandType::AllocationRefund => "allocation.refund",
            CommandType::AllocationComplete => "allocation.complete",
            CommandType::HoldCreate => "hold.create",
            CommandType::HoldCapture => "hold.capture",
            CommandType::HoldRelease => "hold.release",
            CommandType::WalletFreeze => "wallet.freeze",
            CommandType::WalletUnfreeze => "wallet.unfreeze",
            CommandType::LimitsSet => "limits.set",
            CommandType::RechargeRefund => "recharge.refund",
            CommandType::RedpacketCreate => "redpacket.create",
            CommandType::RedpacketClaim => "redpacket.claim",
            CommandType::RedpacketGet => "redpacket.get",
            CommandType::WalletChanges => "wallet.changes",
            CommandType::WalletStatement => "wallet.statement",
            CommandType::WalletProof => "wallet.proof",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether the command's `data` carries personal data (names, ID numbers, mobiles, card
    /// numbers, ID photos): its fingerprint is then keyed ([`set_fingerprint_key`]).
    pub fn carries_personal_data(self) -> bool {
        matches!(
            self,
            CommandType::AccountOpen
                | CommandType::UploadPic
                | CommandType::CardBin
                | CommandType::MerchantApply
                | CommandType::MerchantSettleAccount
        )
    }

    /// The largest message of this type that is read: an ID photo is larger than any other
    /// command.
    pub fn max_message_bytes(self) -> usize {
        match self {
            CommandType::UploadPic => MAX_PICTURE_MESSAGE_BYTES,
            _ => MAX_MESSAGE_BYTES,
        }
    }
}

/// The server secret that keys the fingerprints of commands carrying personal data, set once at
/// start-up. A plain hash of an ID number is brute-forced in minutes (it has few possible
/// values); a keyed one can't be without the key.
static FINGERPRINT_KEY: OnceLock<Vec<u8>> = OnceLock::new();

/// Sets the key; the first call wins (one process, one key).
pub fn set_fingerprint_key(key: &[u8]) {
    let _ = FINGERPRINT_KEY.set(key.to_vec());
}

/// What may hold a command id before the command log has its result: a command that calls
/// Ping++ between transactions records its progress under its id first, with its fingerprint.
/// The id is held against any command with other content (another type is other content):
/// that command's own redeliveries go on with it, anything else with that id is an
/// `idempotency_conflict` and leaves no trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdHolder {
    /// A recharge in progress (`recharges`).
    Recharge,
    /// A payout through Ping++ (`cash_payouts`): a `cash.approve`, or an e-wallet `cash`.
    PayoutWithOtherContent,
    /// A deposit into a user's e-wallet in progress (`deposits`).
    Deposit,
    /// A personal account application in progress (`cus_applications`).
    Application,
    /// A sub-merchant being created (`sub_merchants`).
    SubMerchant,
    /// A merchant application in progress (`merchant_applications`).
    MerchantApplication,
    /// A purchase being made at Ping++ (`pingpp_orders`).
    Purchase,
    /// A refund of a purchase in progress (`order_refunds`).
    Refund,
    /// An allocation, allocation refund or completion in progress (`allocations`).
    Allocation,
    /// A refund of a recharge in progress (`recharge_refunds`).
    RechargeRefund,
}

/// A decoded command: the fields every command has. `data` is validated by the command's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: String,
    pub kind: CommandType,
    pub user_id: i64,
    pub data: Map<String, Value>,
}

/// Why a message is not a command. What could be read of it is kept so a `malformed` result
/// can still be correlated.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub reason: String,
    pub id: Option<String>,
    pub kind: Option<String>,
}

fn malformed(reason: impl Into<String>, object: Option<&Map<String, Value>>) -> Malformed {
    let text = |key: &str| {
        object
            .and_then(|o| o.get(key))
            .and_then(Value::as_str)
            .filter(|s| s.len() <= MAX_ID_LEN)
            .map(str::to_owned)
    };
    Malformed {
        reason: reason.into(),
        id: text("id").filter(|id| valid_id(id)),
        kind: text("type"),
    }
}

pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Reads a message body. Anything that is not an object with a valid `id`, a known `type`, a
/// positive integer `user_id` and an object (or absent) `data` is malformed.
pub fn decode(body: &[u8]) -> Result<Envelope, Malformed> {
    if body.len() > MAX_PICTURE_MESSAGE_BYTES {
        return Err(malformed(
            format!(
                "message of {} bytes exceeds the limit of {MAX_PICTURE_MESSAGE_BYTES}",
                body.len()
            ),
            None,
        ));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}"), None))?;
    let Value::Object(mut object) = value else {
        return Err(malformed("not a JSON object", None));
    };
    let id = match object.get("id") {
        Some(Value::String(id)) if valid_id(id) => id.clone(),
        Some(_) => {
            return Err(malformed(
                "id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
                Some(&object),
            ))
        }
        None => return Err(malformed("id is missing", Some(&object))),
    };
    let kind = match object.get("type") {
        Some(Value::String(name)) => match CommandType::parse(name) {
            Some(kind) => kind,
            None => return Err(malformed("unknown command type", Some(&object))),
        },
        _ => return Err(malformed("type is missing or not a string", Some(&object))),
    };
    if body.len() > kind.max_message_bytes() {
        return Err(malformed(
            format!(
                "message of {} bytes exceeds the limit of {} for {}",
                body.len(),
                kind.max_message_bytes(),
                kind.as_str()
            ),
            Some(&object),
        ));
    }
    let user_id = match object.get("user_id").and_then(Value::as_i64) {
        Some(user_id) if user_id > 0 => user_id,
        _ => {
            return Err(malformed(
                "user_id must be a positive integer",
                Some(&object),
            ))
        }
    };
    let data = match object.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(malformed("data must be an object", Some(&object))),
    };
    Ok(Envelope {
        id,
        kind,
        user_id,
        data,
    })
}

impl Envelope {
    /// SHA-256 of the command's content in a canonical form (serde_json's maps are sorted), so
    /// the same command re-serialized by another publisher still matches. For a command that
    /// carries personal data it is an HMAC-SHA-256 keyed with the server secret; without a key
    /// (a mode where such commands are refused anyway) its data is left out altogether.
    pub fn fingerprint(&self) -> [u8; 32] {
        let personal = self.kind.carries_personal_data();
        let key = FINGERPRINT_KEY.get().filter(|_| personal);
        let nothing = Map::new();
        let data = if personal && key.is_none() {
            &nothing
        } else {
            &self.data
        };
        let canonical = serde_json::json!({
            "type": self.kind.as_str(),
            "user_id": self.user_id,
            "data": data,
        });
        match key {
            Some(key) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
                mac.update(canonical.to_string().as_bytes());
                mac.finalize().into_bytes().into()
            }
            None => Sha256::digest(canonical.to_string().as_bytes()).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_transfer() {
        let env =
            decode(br#"{"id":"k-1","type":"transfer","user_id":1,"data":{"user":2,"amount":100}}"#)
                .unwrap();
        assert_eq!(env.kind, CommandType::Transfer);
        assert_eq!(env.user_id, 1);
        assert_eq!(env.data["amount"], 100);
    }

    #[test]
    fn refuses_what_is_not_a_command() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"type":"transfer","user_id":1}"#, "id is missing"),
            (br#"{"id":"","type":"transfer","user_id":1}"#, "id must be"),
            (
                br#"{"id":"a b","type":"transfer","user_id":1}"#,
                "id must be",
            ),
            (
                br#"{"id":"a","type":"nope","user_id":1}"#,
                "unknown command type",
            ),
            (br#"{"id":"a","user_id":1}"#, "type is missing"),
            (br#"{"id":"a","type":"transfer","user_id":0}"#, "user_id"),
            (br#"{"id":"a","type":"transfer","user_id":"1"}"#, "user_id"),
            (
                br#"{"id":"a","type":"transfer","user_id":1,"data":[]}"#,
                "data must be",
            ),
        ];
        for (body, reason) in cases {
            let err = decode(body).unwrap_err();
            assert!(
                err.reason.contains(reason),
                "{err:?} for {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn keeps_what_it_can_of_a_malformed_command() {
        let err = decode(br#"{"id":"k-9","type":"nope","user_id":1}"#).unwrap_err();
        assert_eq!(err.id.as_deref(), Some("k-9"));
        assert_eq!(err.kind.as_deref(), Some("nope"));
    }

    #[test]
    fn refuses_oversized_messages_unread() {
        let body = vec![b' '; MAX_PICTURE_MESSAGE_BYTES + 1];
        assert!(decode(&body).unwrap_err().reason.contains("exceeds"));
        let padding = " ".repeat(MAX_MESSAGE_BYTES);
        let transfer = format!(r#"{{"id":"k","type":"transfer","user_id":1{padding}}}"#);
        assert!(decode(transfer.as_bytes())
            .unwrap_err()
            .reason
            .contains("for transfer"));
        let picture = format!(r#"{{"id":"k","type":"upload_pic","user_id":1{padding}}}"#);
        assert!(decode(picture.as_bytes()).is_ok());
    }

    #[test]
    fn personal_data_is_fingerprinted_with_a_key() {
        let open = |number: &str| {
            decode(
                format!(
                    r#"{{"id":"k","type":"account.open","user_id":1,"data":{{"cert_number":"{number}"}}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let canonical =
            r#"{"data":{"cert_number":"110101199003074514"},"type":"account.open","user_id":1}"#;
        let plain: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
        set_fingerprint_key(b"a test key that is long enough to use");
        assert_ne!(open("110101199003074514").fingerprint(), plain);
        assert_ne!(
            open("110101199003074514").fingerprint(),
            open("110101199003074522").fingerprint()
        );
    }

    #[test]
    fn ids_follow_the_contract() {
        assert!(valid_id("9f0c2c1e-upstream-key"));
        assert!(valid_id("a.b_c:d-E9"));
        assert!(valid_id(&"x".repeat(128)));
        assert!(!valid_id(&"x".repeat(129)));
        assert!(!valid_id("é"));
        assert!(!valid_id("a/b"));
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_content() {
        let a =
            decode(br#"{"id":"k","type":"transfer","user_id":1,"data":{"user":2,"amount":100}}"#)
                .unwrap();
        let b =
            decode(br#"{"data":{"amount":100,"user":2},"user_id":1,"type":"transfer","id":"k"}"#)
                .unwrap();
        let c =
            decode(br#"{"id":"k","type":"transfer","user_id":1,"data":{"user":2,"amount":101}}"#)
                .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
