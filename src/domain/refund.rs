//! `recharge.refund` (the money with the platform): giving a succeeded recharge back through
//! its Ping++ charge. What may be refunded, the journals of each step and the refund's state
//! machine; no I/O.
//!
//! The money leaves the wallet when the refund is requested (wallet → `pending_refunds`, the
//! refund's expense order waiting), so it can't be spent twice while Ping++ decides. Succeeded:
//! `pending_refunds` → `pingpp_clearing`, which reverses the recharge's own journal, and the
//! order is 1. Failed: back to the wallet, the order -1.

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, SystemAccount, WalletFigures};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::purchase::RefundStatus;
use super::validate::{int_field, text_field, IntField, TextField, MSG_BAD_DATA};

/// The refund's own order: an expense whose target is the recharge order refunded.
pub const TARGET_TYPE: &str = "recharge_refund";
pub const TITLE: &str = "充值退款";

/// Ping++ takes a description of at most this many characters, and requires one.
pub const MAX_DESCRIPTION_CHARS: usize = 255;

pub const MSG_AMOUNT_REQUIRED: &str = "请输入退款金额";
pub const MSG_INVALID_AMOUNT: &str = "退款金额不合法";
pub const MSG_DESCRIPTION_REQUIRED: &str = "请输入退款描述";
pub const MSG_DESCRIPTION_TOO_LONG: &str = "退款描述不能超过255个字符";
pub const MSG_NOT_PAID: &str = "充值订单未支付成功";
pub const MSG_NOT_REFUNDABLE: &str = "该充值订单不支持退款";
pub const MSG_TOO_LARGE: &str = "退款金额超出可退金额";
pub const MSG_INSUFFICIENT: &str = "账户余额不足";
pub const MSG_CREATED: &str = "退款申请已提交";
/// The reason of a failed refund when Ping++ gives none.
pub const MSG_FAILED: &str = "退款失败";

/// The journal kinds: the request, its success and its failure.
pub const JOURNAL_REQUESTED: &str = "recharge.refund";
pub const JOURNAL_SUCCEEDED: &str = "recharge.refund_succeeded";
pub const JOURNAL_RETURNED: &str = "recharge.refund_returned";

/// `recharge.refund`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The recharge order to refund.
    pub order: i64,
    pub amount: i64,
    pub description: String,
}

pub fn parse(data: &Map<String, Value>) -> Result<RefundRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let order = match int_field(data, "order") {
        IntField::Missing => {
            errors.add(
                Code::OrderRequired,
                "order",
                super::query::MSG_ORDER_REQUIRED,
            );
            0
        }
        IntField::Value(v) if v > 0 => v,
        _ => {
            errors.add(Code::InvalidOrder, "order", MSG_BAD_DATA);
            0
        }
    };
    let amount = match int_field(data, "amount") {
        IntField::Missing => {
            errors.add(Code::AmountRequired, "amount", MSG_AMOUNT_REQUIRED);
            0
        }
        IntField::Value(v) if v > 0 => v,
        // Larger than any charge: more than the charge paid.
        IntField::Overflow if is_positive(data.get("amount")) => {
            errors.add(Code::RefundTooLarge, "amount", MSG_TOO_LARGE);
            0
        }
        _ => {
            errors.add(Code::InvalidAmount, "amount", MSG_INVALID_AMOUNT);
            0
        }
    };
    let description = match text_field(data, "description") {
        TextField::Value(d) if d.chars().count() <= MAX_DESCRIPTION_CHARS => d,
        TextField::Value(_) => {
            errors.add(
                Code::InvalidDescription,
                "description",
                MSG_DESCRIPTION_TOO_LONG,
            );
            String::new()
        }
        TextField::Missing => {
            errors.add(
                Code::InvalidDescription,
                "description",
                MSG_DESCRIPTION_REQUIRED,
            );
            String::new()
        }
        TextField::NotText => {
            errors.add(Code::InvalidDescription, "description", MSG_BAD_DATA);
            String::new()
        }
    };
    errors.finish(|| RefundRequest {
        order,
        amount,
        description,
    })
}

fn is_positive(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_f64)
        .is_some_and(|v| v > 0.0 && v.is_finite())
}

/// The refund's mark at Ping++ (`metadata.refund_no`): `f` and its row id in 19 digits. A
/// charge refund has no order number of ours, so this is how a refund whose answer was lost
/// is told among the charge's.
pub fn refund_no(id: i64) -> String {
    format!("f{id:019}")
}

/// The row id in a mark of [`refund_no`]'s shape.
pub fn id_of_refund_no(refund_no: &str) -> Option<i64> {
    let digits = refund_no.strip_prefix('f')?;
    if digits.len() != 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The recharge order named by a refund, as locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recharge {
    pub owner: i64,
    pub target_type: String,
    pub state: OrderState,
    /// The charge that paid it, once Ping++ made one.
    pub charge_id: Option<String>,
    /// Made as a recharge object (a fee or bonus on top of the charge): Ping++ refunds those
    /// through the recharge, not the charge.
    pub via_recharge_object: bool,
    /// What the charge paid (fen); in charge mode the order's amount.
    pub amount: i64,
}

/// Whether `recharge` is one the acting `user` may refund now; `Ok` with its charge.
pub fn refundable(user: i64, recharge: Option<&Recharge>) -> Result<&str, Rejection> {
    let Some(recharge) = recharge.filter(|r| r.owner == user) else {
        return Err(super::query::unknown_order());
    };
    if recharge.target_type != super::recharge::TARGET_TYPE {
        return Err(Rejection::field(
            Code::NotRecharge,
            "order",
            super::recharge::MSG_NOT_RECHARGE,
        ));
    }
    if recharge.via_recharge_object {
        return Err(Rejection::field(
            Code::NotRefundable,
            "order",
            MSG_NOT_REFUNDABLE,
        ));
    }
    match (&recharge.charge_id, recharge.state) {
        (Some(charge), OrderState::Succeeded) => Ok(charge),
        _ => Err(Rejection::field(Code::OrderNotPaid, "order", MSG_NOT_PAID)),
    }
}

/// The request's journal (wallet → `pending_refunds`), if the amount is at most what the charge
/// paid less its refunds not failed (`taken`: pending and succeeded) and at most what the
/// wallet holds now.
pub fn decide(
    user: i64,
    amount: i64,
    paid: i64,
    taken: i64,
    wallet: impl Into<WalletFigures>,
) -> Result<Journal, Rejection> {
    let left = paid.saturating_sub(taken).max(0);
    if amount > left {
        return Err(Rejection::field(
            Code::RefundTooLarge,
            "amount",
            MSG_TOO_LARGE,
        ));
    }
    let wallet = wallet.into();
    if amount > wallet.balance {
        return Err(Rejection::field(
            Code::InsufficientBalance,
            "amount",
            MSG_INSUFFICIENT,
        ));
    }
    if wallet.moved(-amount).is_none() {
        return Err(Rejection::field(
            Code::AmountOverflow,
            "amount",
            MSG_BAD_DATA,
        ));
    }
    Journal::transfer(
        AccountRef::Wallet(user),
        AccountRef::System(SystemAccount::PendingRefunds),
        amount,
    )
    .map_err(|_| Rejection::field(Code::AmountOverflow, "amount", MSG_BAD_DATA))
}

/// The refund's expense order, waiting.
pub fn order(user: i64, recharge_order: i64, amount: i64, description: &str) -> OrderDraft {
    OrderDraft {
        owner_id: user,
        target_type: TARGET_TYPE,
        target_id: recharge_order.to_string(),
        title: TITLE,
        body: Some(description.to_owned()),
        direction: -1,
        amount,
        state: OrderState::Waiting,
    }
}

/// What a refund's end moves: a success reverses the recharge (`pending_refunds` →
/// `pingpp_clearing`), a failure gives the money back to the wallet.
pub fn settle(outcome: Settle, user: i64, amount: i64) -> Option<(&'static str, Journal)> {
    let pending = AccountRef::System(SystemAccount::PendingRefunds);
    let (kind, to) = match outcome {
        Settle::Succeed => (
            JOURNAL_SUCCEEDED,
            AccountRef::System(SystemAccount::PingppClearing),
        ),
        Settle::Fail => (JOURNAL_RETURNED, AccountRef::Wallet(user)),
    };
    Journal::transfer(pending, to, amount)
        .ok()
        .map(|journal| (kind, journal))
}

/// The end of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Succeed,
    Fail,
}

impl Settle {
    pub fn status(self) -> RefundStatus {
        match self {
            Settle::Succeed => RefundStatus::Succeeded,
            Settle::Fail => RefundStatus::Failed,
        }
    }

    pub fn order_state(self) -> OrderState {
        match self {
            Settle::Succeed => OrderState::Succeeded,
            Settle::Fail => OrderState::Failed,
        }
    }
}

/// What Ping++'s refund object (`object: "refund"`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFacts {
    pub id: String,
    pub charge: String,
    pub amount: i64,
    pub status: RefundStatus,
    /// Our mark, `metadata.refund_no`, when Ping++ shows it.
    pub refund_no: Option<String>,
    pub failure_code: Option<String>,
    pub failure_msg: Option<String>,
}

pub fn facts(refund: &Value) -> Result<RefundFacts, String> {
    if refund.get("object").and_then(Value::as_str) != Some("refund") {
        return Err("not a refund object".into());
    }
    let text = |name: &str| {
        refund
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let required = |name: &str| text(name).ok_or_else(|| format!("the refund has no {name}"));
    let status = match required("status")?.as_str() {
        "pending" | "processing" => RefundStatus::Pending,
        "succeeded" => RefundStatus::Succeeded,
        "failed" => RefundStatus::Failed,
        other => return Err(format!("unknown refund status {other:?}")),
    };
    let amount = refund
        .get("amount")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .ok_or("the refund has no positive amount")?;
    Ok(RefundFacts {
        id: required("id")?,
        charge: required("charge")?,
        amount,
        status,
        refund_no: refund
            .get("metadata")
            .and_then(|m| m.get("refund_no"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        failure_code: text("failure_code"),
        failure_msg: text("failure_msg"),
    })
}

/// What a report of Ping++ (`reported`) does to a refund recorded as `recorded`: a pending
/// one ends once; a decided one stays as it is (a `pending` read before it was decided is only
/// late). `Err`: a report that contradicts the decision; nothing may move without a person
/// looking.
pub fn transition(
    recorded: RefundStatus,
    reported: RefundStatus,
) -> Result<Option<Settle>, String> {
    use RefundStatus::*;
    match (recorded, reported) {
        (Pending, Succeeded) => Ok(Some(Settle::Succeed)),
        (Pending, Failed) => Ok(Some(Settle::Fail)),
        (_, Pending) | (Succeeded, Succeeded) | (Failed, Failed) => Ok(None),
        (decided, now) => Err(format!(
            "Ping++ reports a {} refund as {}",
            decided.as_str(),
            now.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn first(v: Value) -> (Code, String, String) {
        let rejection = parse(&data(v)).unwrap_err();
        let (field, messages) = rejection.errors.iter().next().unwrap();
        (rejection.code, field.clone(), messages[0].clone())
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        let ok = parse(&data(
            json!({"order": 7, "amount": 300, "description": "退回"}),
        ))
        .unwrap();
        assert_eq!(
            ok,
            RefundRequest {
                order: 7,
                amount: 300,
                description: "退回".into()
            }
        );
        let cases = [
            (
                json!({"amount": 1, "description": "d"}),
                Code::OrderRequired,
                "order",
            ),
            (
                json!({"order": "7", "amount": 1, "description": "d"}),
                Code::InvalidOrder,
                "order",
            ),
            (
                json!({"order": 7, "description": "d"}),
                Code::AmountRequired,
                "amount",
            ),
            (
                json!({"order": 7, "amount": 0, "description": "d"}),
                Code::InvalidAmount,
                "amount",
            ),
            (
                json!({"order": 7, "amount": 1.5, "description": "d"}),
                Code::InvalidAmount,
                "amount",
            ),
            (
                json!({"order": 7, "amount": 1e30, "description": "d"}),
                Code::RefundTooLarge,
                "amount",
            ),
            (
                json!({"order": 7, "amount": 1}),
                Code::InvalidDescription,
                "description",
            ),
            (
                json!({"order": 7, "amount": 1, "description": "x".repeat(256)}),
                Code::InvalidDescription,
                "description",
            ),
        ];
        for (input, code, field) in cases {
            let (got, got_field, _) = first(input.clone());
            assert_eq!((got, got_field.as_str()), (code, field), "{input}");
        }
        assert_eq!(
            first(json!({"order": 7, "amount": 1})).2,
            MSG_DESCRIPTION_REQUIRED
        );
        let all = parse(&data(json!({}))).unwrap_err();
        assert_eq!(all.errors.len(), 3, "every field's error at once");
        assert!(parse(&data(
            json!({"order": 7, "amount": 1, "description": "字".repeat(255)})
        ))
        .is_ok());
    }

    fn recharge() -> Recharge {
        Recharge {
            owner: 1,
            target_type: "recharge_ping_p_p".into(),
            state: OrderState::Succeeded,
            charge_id: Some("ch_1".into()),
            via_recharge_object: false,
            amount: 500,
        }
    }

    #[test]
    fn only_the_owners_paid_charge_recharges_are_refundable() {
        assert_eq!(refundable(1, Some(&recharge())), Ok("ch_1"));
        let code = |user: i64, r: Option<&Recharge>| refundable(user, r).unwrap_err().code;
        assert_eq!(code(2, Some(&recharge())), Code::UnknownOrder);
        assert_eq!(code(1, None), Code::UnknownOrder);
        let transfer = Recharge {
            target_type: "user".into(),
            ..recharge()
        };
        assert_eq!(code(1, Some(&transfer)), Code::NotRecharge);
        let object = Recharge {
            via_recharge_object: true,
            ..recharge()
        };
        assert_eq!(code(1, Some(&object)), Code::NotRefundable);
        for state in [OrderState::Waiting, OrderState::Failed] {
            let unpaid = Recharge {
                state,
                ..recharge()
            };
            assert_eq!(code(1, Some(&unpaid)), Code::OrderNotPaid);
        }
        let no_charge = Recharge {
            charge_id: None,
            ..recharge()
        };
        assert_eq!(code(1, Some(&no_charge)), Code::OrderNotPaid);
    }

    #[test]
    fn a_refund_takes_at_most_what_is_left_of_the_charge_and_of_the_wallet() {
        let journal = decide(1, 300, 500, 200, 1_000).unwrap();
        assert_eq!(
            journal.entries().collect::<Vec<_>>(),
            vec![
                (AccountRef::Wallet(1), -300),
                (AccountRef::System(SystemAccount::PendingRefunds), 300)
            ]
        );
        assert_eq!(
            decide(1, 301, 500, 200, 1_000).unwrap_err().code,
            Code::RefundTooLarge
        );
        assert_eq!(
            decide(1, 1, 500, 600, 1_000).unwrap_err().code,
            Code::RefundTooLarge
        );
        let short = decide(1, 300, 500, 0, 299).unwrap_err();
        assert_eq!(short.code, Code::InsufficientBalance);
        assert_eq!(short.messages(), vec![MSG_INSUFFICIENT]);
        assert!(decide(1, 300, 500, 0, 300).is_ok());
        let at_the_ceiling = WalletFigures {
            balance: 300,
            total_income: 0,
            total_expenses: crate::domain::ledger::WALLET_CEILING,
        };
        assert_eq!(
            decide(1, 300, 500, 0, at_the_ceiling).unwrap_err().code,
            Code::AmountOverflow
        );
    }

    #[test]
    fn a_success_reverses_the_recharge_and_a_failure_gives_the_money_back() {
        let (kind, journal) = settle(Settle::Succeed, 1, 300).unwrap();
        assert_eq!(kind, JOURNAL_SUCCEEDED);
        assert_eq!(
            journal.entries().collect::<Vec<_>>(),
            vec![
                (AccountRef::System(SystemAccount::PingppClearing), 300),
                (AccountRef::System(SystemAccount::PendingRefunds), -300),
            ]
        );
        let (kind, journal) = settle(Settle::Fail, 1, 300).unwrap();
        assert_eq!(kind, JOURNAL_RETURNED);
        assert_eq!(
            journal.entries().collect::<Vec<_>>(),
            vec![
                (AccountRef::Wallet(1), 300),
                (AccountRef::System(SystemAccount::PendingRefunds), -300),
            ]
        );
        assert_eq!(Settle::Succeed.order_state(), OrderState::Succeeded);
        assert_eq!(Settle::Fail.status(), RefundStatus::Failed);
    }

    #[test]
    fn the_state_machine_moves_a_pending_refund_once() {
        use RefundStatus::*;
        assert_eq!(transition(Pending, Succeeded), Ok(Some(Settle::Succeed)));
        assert_eq!(transition(Pending, Failed), Ok(Some(Settle::Fail)));
        for same in [Pending, Succeeded, Failed] {
            assert_eq!(transition(same, same), Ok(None));
            assert_eq!(transition(same, Pending), Ok(None), "a late read");
        }
        for (decided, now) in [(Succeeded, Failed), (Failed, Succeeded)] {
            assert!(transition(decided, now).is_err(), "{decided:?} {now:?}");
        }
    }

    #[test]
    fn a_ping_plus_plus_refund_is_read() {
        let refund = json!({
            "id": "re_1", "object": "refund", "amount": 300, "status": "failed",
            "charge": "ch_1", "metadata": {"refund_no": refund_no(42)},
            "failure_code": "refund_failed", "failure_msg": "渠道退款失败",
        });
        let read = facts(&refund).unwrap();
        assert_eq!(read.status, RefundStatus::Failed);
        assert_eq!(read.refund_no.as_deref(), Some("f0000000000000000042"));
        assert_eq!(read.failure_msg.as_deref(), Some("渠道退款失败"));
        let mut pending = refund.clone();
        pending["status"] = json!("pending");
        pending["failure_code"] = Value::Null;
        assert_eq!(facts(&pending).unwrap().failure_code, None);
        for (field, bad) in [
            ("object", json!("order_refund")),
            ("status", json!("weird")),
            ("amount", json!("300")),
            ("amount", json!(0)),
            ("charge", Value::Null),
            ("id", json!("")),
        ] {
            let mut broken = refund.clone();
            broken[field] = bad;
            assert!(facts(&broken).is_err(), "{field}");
        }
    }

    #[test]
    fn refund_numbers_round_trip() {
        assert_eq!(refund_no(7), "f0000000000000000007");
        assert_eq!(id_of_refund_no(&refund_no(7)), Some(7));
        for bad in [
            "",
            "f",
            "a0000000000000000007",
            "f000000000000000007",
            "f00000000000000000x7",
        ] {
            assert_eq!(id_of_refund_no(bad), None, "{bad}");
        }
    }
}
