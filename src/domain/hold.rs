//! Holds: money set aside from a wallet for a reason (a question's bounty, a paid post's
//! purchase) until it is captured (paid, all or part, to another user, the rest given back),
//! released, or expired. While a hold is open its money is in the owner's `held` account: out of
//! the balance they can spend, still theirs.
//!
//! Orders: the owner's expense when the hold is made (`hold`), the receiver's income when it is
//! captured (`hold_capture`), and the owner's income for what comes back (`hold_release`), each
//! with the hold's id as `target_id` and its reason as `body`.

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, WalletFigures};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{self, AmountMessages};

pub const MAX_REASON_CHARS: usize = 255;
/// The longest a hold may stay open: a year and a day.
pub const MAX_EXPIRES_IN_SECS: i64 = 366 * 24 * 3600;

pub const MSG_CREATED: &str = "冻结成功";
pub const MSG_CAPTURED: &str = "支付成功";
pub const MSG_RELEASED: &str = "解冻成功";
pub const MSG_AMOUNT_REQUIRED: &str = "请输入冻结金额";
pub const MSG_AMOUNT_TOO_SMALL: &str = "冻结金额不能小于0.01元";
pub const MSG_INSUFFICIENT: &str = "冻结金额超出账户余额";
pub const MSG_REASON_REQUIRED: &str = "请填写冻结原因";
pub const MSG_EXPIRES_IN_REQUIRED: &str = "请设置冻结期限";
pub const MSG_BAD_EXPIRES_IN: &str = "冻结期限必须在1秒到366天之间";
pub const MSG_HOLD_REQUIRED: &str = "请选择冻结记录";
pub const MSG_HOLD_NOT_FOUND: &str = "冻结记录不存在";
pub const MSG_HOLD_CLOSED: &str = "该冻结已结束";
pub const MSG_CAPTURE_REQUIRED: &str = "请输入支付金额";
pub const MSG_CAPTURE_TOO_SMALL: &str = "支付金额不能小于0.01元";
pub const MSG_CAPTURE_TOO_LARGE: &str = "支付金额超出冻结金额";
pub const MSG_RECEIVER_REQUIRED: &str = "请填写收款用户";
pub const MSG_SELF_CAPTURE: &str = "不能支付给自己";

pub const TARGET_HOLD: &str = "hold";
pub const TARGET_CAPTURE: &str = "hold_capture";
pub const TARGET_RELEASE: &str = "hold_release";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub user: i64,
    pub amount: i64,
    pub reason: String,
    pub expires_in: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureRequest {
    pub hold: i64,
    pub receiver: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<HoldStatus> {
        [
            HoldStatus::Held,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A hold as locked for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedHold {
    pub id: i64,
    pub user: i64,
    pub amount: i64,
    pub status: HoldStatus,
    pub reason: String,
    /// Whether its expiry has come (by the database's clock): it can then only expire.
    pub past_expiry: bool,
}

/// How a hold closes: what its receiver gets and what goes back to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub status: HoldStatus,
    pub receiver: Option<i64>,
    pub captured: i64,
    pub released: i64,
    pub journal: Journal,
    /// The receiver's order first (a capture), then the owner's (what came back), if any.
    pub orders: Vec<OrderDraft>,
}

pub fn parse_create(user: i64, data: &Map<String, Value>) -> Result<CreateRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let amount = validate::amount(
        &mut errors,
        data,
        "amount",
        &AmountMessages {
            required: MSG_AMOUNT_REQUIRED,
            too_small: MSG_AMOUNT_TOO_SMALL,
        },
    );
    let reason = validate::text(
        &mut errors,
        data,
        "reason",
        (Code::ReasonRequired, Code::InvalidReason),
        MSG_REASON_REQUIRED,
        MAX_REASON_CHARS,
    );
    let expires_in = expires_in(&mut errors, data, MAX_EXPIRES_IN_SECS, MSG_BAD_EXPIRES_IN);
    errors.finish(|| CreateRequest {
        user,
        amount,
        reason,
        expires_in,
    })
}

/// `expires_in`: whole seconds from 1 to `max`; 0 after an error.
pub fn expires_in(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    max: i64,
    out_of_range: &str,
) -> i64 {
    match validate::int_field(data, "expires_in") {
        validate::IntField::Missing => {
            errors.add(
                Code::ExpiresInRequired,
                "expires_in",
                MSG_EXPIRES_IN_REQUIRED,
            );
            0
        }
        validate::IntField::Value(v) if (1..=max).contains(&v) => v,
        validate::IntField::Value(_) | validate::IntField::Overflow => {
            errors.add(Code::InvalidExpiresIn, "expires_in", out_of_range);
            0
        }
        validate::IntField::NotInteger => {
            errors.add(Code::InvalidExpiresIn, "expires_in", validate::MSG_BAD_DATA);
            0
        }
    }
}

fn hold_id(errors: &mut FieldErrors, data: &Map<String, Value>) -> i64 {
    validate::id(
        errors,
        data,
        "hold",
        (Code::HoldRequired, Code::InvalidHold),
        MSG_HOLD_REQUIRED,
    )
}

pub fn parse_capture(owner: i64, data: &Map<String, Value>) -> Result<CaptureRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let hold = hold_id(&mut errors, data);
    let receiver = validate::id(
        &mut errors,
        data,
        "user",
        (Code::UserRequired, Code::InvalidUser),
        MSG_RECEIVER_REQUIRED,
    );
    if receiver == owner {
        errors.add(Code::SelfTransfer, "user", MSG_SELF_CAPTURE);
    }
    let amount = validate::amount(
        &mut errors,
        data,
        "amount",
        &AmountMessages {
            required: MSG_CAPTURE_REQUIRED,
            too_small: MSG_CAPTURE_TOO_SMALL,
        },
    );
    errors.finish(|| CaptureRequest {
        hold,
        receiver,
        amount,
    })
}

/// The user a command's `user` field names (a capture's receiver, the wallet an operator's
/// control is about), if it names one that can be: for locking its wallet before the command is
/// decided.
pub fn user_named(data: &Map<String, Value>) -> Option<i64> {
    match validate::int_field(data, "user") {
        validate::IntField::Value(user) if user > 0 => Some(user),
        _ => None,
    }
}

pub fn parse_release(data: &Map<String, Value>) -> Result<i64, Rejection> {
    let mut errors = FieldErrors::default();
    let hold = hold_id(&mut errors, data);
    errors.finish(|| hold)
}

/// The hold, when the acting user may still capture or release it: somebody else's hold is
/// not found (its existence is not theirs to learn), a closed or expired one is closed.
pub fn open_for(hold: Option<&LockedHold>, actor: i64) -> Result<&LockedHold, Rejection> {
    match hold {
        Some(hold) if hold.user == actor => {
            if hold.status != HoldStatus::Held || hold.past_expiry {
                Err(Rejection::field(Code::HoldClosed, "hold", MSG_HOLD_CLOSED))
            } else {
                Ok(hold)
            }
        }
        _ => Err(Rejection::field(
            Code::HoldNotFound,
            "hold",
            MSG_HOLD_NOT_FOUND,
        )),
    }
}

/// The wallet's money into its held account, when the balance has it.
pub fn decide_create(request: &CreateRequest, wallet: WalletFigures) -> Result<Journal, Rejection> {
    let into = AccountRef::Held(request.user);
    let refusal = ("amount", MSG_INSUFFICIENT);
    super::ledger::set_aside(request.user, into, request.amount, wallet, refusal)
}

pub fn create_order(request: &CreateRequest, hold_id: i64) -> OrderDraft {
    OrderDraft {
        owner_id: request.user,
        target_type: TARGET_HOLD,
        target_id: hold_id.to_string(),
        title: "资金冻结",
        body: Some(request.reason.clone()),
        direction: -1,
        amount: request.amount,
        state: OrderState::Succeeded,
    }
}

/// Pays `request.amount` of an open hold to the receiver and gives the rest back to the owner.
pub fn decide_capture(
    hold: &LockedHold,
    request: &CaptureRequest,
    receiver: WalletFigures,
) -> Result<Closing, Rejection> {
    if request.amount > hold.amount {
        return Err(Rejection::field(
            Code::AmountTooLarge,
            "amount",
            MSG_CAPTURE_TOO_LARGE,
        ));
    }
    if receiver.moved(request.amount).is_none() {
        return Err(Rejection::field(
            Code::AmountOverflow,
            "amount",
            validate::MSG_BAD_DATA,
        ));
    }
    let rest = hold.amount - request.amount;
    let journal = Journal::new(&[
        (AccountRef::Held(hold.user), -hold.amount),
        (AccountRef::Wallet(request.receiver), request.amount),
        (AccountRef::Wallet(hold.user), rest),
    ])
    .expect("a capture balances: what the hold had, to the receiver and back");
    let mut orders = vec![OrderDraft {
        owner_id: request.receiver,
        target_type: TARGET_CAPTURE,
        target_id: hold.id.to_string(),
        title: "冻结资金支付",
        body: Some(hold.reason.clone()),
        direction: 1,
        amount: request.amount,
        state: OrderState::Succeeded,
    }];
    if rest > 0 {
        orders.push(release_order(hold, rest));
    }
    Ok(Closing {
        status: HoldStatus::Captured,
        receiver: Some(request.receiver),
        captured: request.amount,
        released: rest,
        journal,
        orders,
    })
}

/// Everything back to the owner: by `hold.release` (`Released`) or by the expiry (`Expired`).
/// Never refused: the money was the owner's all along.
pub fn give_back(hold: &LockedHold, status: HoldStatus) -> Closing {
    debug_assert!(matches!(status, HoldStatus::Released | HoldStatus::Expired));
    Closing {
        status,
        receiver: None,
        captured: 0,
        released: hold.amount,
        journal: Journal::transfer(
            AccountRef::Held(hold.user),
            AccountRef::Wallet(hold.user),
            hold.amount,
        )
        .expect("a hold's amount is positive"),
        orders: vec![release_order(hold, hold.amount)],
    }
}

fn release_order(hold: &LockedHold, amount: i64) -> OrderDraft {
    OrderDraft {
        owner_id: hold.user,
        target_type: TARGET_RELEASE,
        target_id: hold.id.to_string(),
        title: "资金解冻",
        body: Some(hold.reason.clone()),
        direction: 1,
        amount,
        state: OrderState::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn open(amount: i64) -> LockedHold {
        LockedHold {
            id: 7,
            user: 1,
            amount,
            status: HoldStatus::Held,
            reason: "悬赏".into(),
            past_expiry: false,
        }
    }

    #[test]
    fn create_checks_every_field() {
        let ok = parse_create(
            1,
            &data(json!({"amount": 100, "reason": "悬赏", "expires_in": 60})),
        )
        .unwrap();
        assert_eq!((ok.amount, ok.expires_in), (100, 60));
        let bad = parse_create(1, &data(json!({"amount": 0, "expires_in": 0}))).unwrap_err();
        assert_eq!(bad.code, Code::AmountTooSmall);
        assert_eq!(
            bad.errors.keys().collect::<Vec<_>>(),
            vec!["amount", "expires_in", "reason"]
        );
        let too_long = parse_create(
            1,
            &data(json!({"amount": 1, "reason": "x", "expires_in": MAX_EXPIRES_IN_SECS + 1})),
        )
        .unwrap_err();
        assert_eq!(too_long.code, Code::InvalidExpiresIn);
        let long_reason = "x".repeat(MAX_REASON_CHARS + 1);
        let reason = parse_create(
            1,
            &data(json!({"amount": 1, "reason": long_reason, "expires_in": 1})),
        )
        .unwrap_err();
        assert_eq!(reason.code, Code::InvalidReason);
    }

    #[test]
    fn create_needs_the_balance() {
        let request = parse_create(
            1,
            &data(json!({"amount": 100, "reason": "r", "expires_in": 5})),
        )
        .unwrap();
        assert_eq!(
            decide_create(&request, 99.into()).unwrap_err().code,
            Code::InsufficientBalance
        );
        let journal = decide_create(&request, 100.into()).unwrap();
        assert_eq!(
            journal.entries().collect::<Vec<_>>(),
            vec![(AccountRef::Wallet(1), -100), (AccountRef::Held(1), 100)]
        );
    }

    #[test]
    fn capture_pays_part_and_gives_back_the_rest() {
        let request = parse_capture(1, &data(json!({"hold": 7, "user": 2, "amount": 60}))).unwrap();
        let closing = decide_capture(&open(100), &request, 0.into()).unwrap();
        assert_eq!((closing.captured, closing.released), (60, 40));
        assert_eq!(
            closing.journal.entries().collect::<Vec<_>>(),
            vec![
                (AccountRef::Wallet(1), 40),
                (AccountRef::Wallet(2), 60),
                (AccountRef::Held(1), -100)
            ]
        );
        assert_eq!(closing.orders.len(), 2);
        assert_eq!(closing.orders[0].owner_id, 2);
        assert_eq!(closing.orders[1].target_type, TARGET_RELEASE);
        let all = parse_capture(1, &data(json!({"hold": 7, "user": 2, "amount": 100}))).unwrap();
        assert_eq!(
            decide_capture(&open(100), &all, 0.into())
                .unwrap()
                .orders
                .len(),
            1
        );
        let more = parse_capture(1, &data(json!({"hold": 7, "user": 2, "amount": 101}))).unwrap();
        assert_eq!(
            decide_capture(&open(100), &more, 0.into())
                .unwrap_err()
                .code,
            Code::AmountTooLarge
        );
    }

    #[test]
    fn capture_to_oneself_is_refused() {
        let refused = parse_capture(1, &data(json!({"hold": 7, "user": 1, "amount": 1})));
        assert_eq!(refused.unwrap_err().code, Code::SelfTransfer);
        assert_eq!(
            parse_capture(1, &data(json!({"user": 2, "amount": 1})))
                .unwrap_err()
                .code,
            Code::HoldRequired
        );
    }

    #[test]
    fn only_the_owner_sees_an_open_hold() {
        let hold = open(5);
        assert!(open_for(Some(&hold), 1).is_ok());
        assert_eq!(
            open_for(Some(&hold), 2).unwrap_err().code,
            Code::HoldNotFound
        );
        assert_eq!(open_for(None, 1).unwrap_err().code, Code::HoldNotFound);
        let expired = LockedHold {
            past_expiry: true,
            ..open(5)
        };
        assert_eq!(
            open_for(Some(&expired), 1).unwrap_err().code,
            Code::HoldClosed
        );
        let released = LockedHold {
            status: HoldStatus::Released,
            ..open(5)
        };
        assert_eq!(
            open_for(Some(&released), 1).unwrap_err().code,
            Code::HoldClosed
        );
    }

    #[test]
    fn giving_back_returns_everything() {
        let closing = give_back(&open(100), HoldStatus::Expired);
        assert_eq!((closing.captured, closing.released), (0, 100));
        assert_eq!(closing.orders[0].amount, 100);
        assert_eq!(closing.orders[0].direction, 1);
    }
}
