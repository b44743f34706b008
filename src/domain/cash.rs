//! `cash` (a request to take money out), and the operator's `cash.approve` / `cash.reject`.
//! The money leaves the wallet at once for a pending-payout account, so it can't be spent twice
//! while the request waits; approval sends it out, rejection brings it back.

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, SystemAccount};
use super::outcome::{Code, FieldErrors, Rejection};
use super::policy::WalletPolicy;
use super::transfer::OrderDraft;
use super::validate::{int_field, text_field, IntField, TextField};

pub const MSG_VALUE_REQUIRED: &str = "请输入提现金额";
pub const MSG_BAD_DATA: &str = "发送的数据错误";
pub const MSG_VALUE_TOO_SMALL: &str = "输入的提现金额不合法";
pub const MSG_INSUFFICIENT: &str = "提现金额超出账户余额";
pub const MSG_TYPE_REQUIRED: &str = "请选择提现方式";
pub const MSG_UNSUPPORTED_TYPE: &str = "你选择的提现方式不支持";
pub const MSG_ACCOUNT_REQUIRED: &str = "请输入你的提现账户";
pub const MSG_REQUESTED: &str = "申请提现成功";
pub const MSG_REMARK_REQUIRED: &str = "请输入备注信息";
pub const MSG_CASH_REQUIRED: &str = "请选择提现记录";
pub const MSG_UNKNOWN_CASH: &str = "提现记录不存在";
pub const MSG_ALREADY_DECIDED: &str = "该提现申请已被处理";
pub const MSG_APPROVED: &str = "审批成功";
pub const MSG_REJECTED: &str = "拒绝成功";

pub const MAX_ACCOUNT_CHARS: usize = 255;
pub const MAX_REMARK_CHARS: usize = 255;

/// `status` of a cash record, as the seeds number it.
pub const WAITING: i16 = 0;
pub const APPROVED: i16 = 1;
pub const REJECTED: i16 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashRequest {
    pub user: i64,
    pub value: i64,
    pub kind: String,
    pub account: String,
}

pub fn parse_request(
    user: i64,
    data: &Map<String, Value>,
    policy: &WalletPolicy,
) -> Result<CashRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let value = match int_field(data, "value") {
        IntField::Missing => {
            errors.add(Code::AmountRequired, "value", MSG_VALUE_REQUIRED);
            0
        }
        IntField::NotInteger => {
            errors.add(Code::InvalidAmount, "value", MSG_BAD_DATA);
            0
        }
        IntField::Overflow => {
            errors.add(Code::AmountOverflow, "value", MSG_BAD_DATA);
            0
        }
        IntField::Value(v) if v < 1 => {
            errors.add(Code::InvalidAmount, "value", MSG_BAD_DATA);
            0
        }
        IntField::Value(v) if v < policy.cash_min => {
            errors.add(Code::AmountTooSmall, "value", MSG_VALUE_TOO_SMALL);
            0
        }
        IntField::Value(v) => v,
    };
    let kind = match text_field(data, "type") {
        TextField::Missing => {
            errors.add(Code::CashTypeRequired, "type", MSG_TYPE_REQUIRED);
            String::new()
        }
        TextField::Value(t) if policy.cash_types.contains(&t) => t,
        _ => {
            errors.add(Code::UnsupportedCashType, "type", MSG_UNSUPPORTED_TYPE);
            String::new()
        }
    };
    let account = match text_field(data, "account") {
        TextField::Missing => {
            errors.add(Code::AccountRequired, "account", MSG_ACCOUNT_REQUIRED);
            String::new()
        }
        TextField::Value(a) if a.chars().count() <= MAX_ACCOUNT_CHARS => a,
        _ => {
            errors.add(Code::InvalidAccount, "account", MSG_BAD_DATA);
            String::new()
        }
    };
    errors.finish(|| CashRequest {
        user,
        value,
        kind,
        account,
    })
}

/// The wallet pays the pending-payout account, if the balance allows.
pub fn decide_request(request: &CashRequest, balance: i64) -> Result<Journal, Rejection> {
    if request.value > balance {
        return Err(Rejection::field(
            Code::InsufficientBalance,
            "value",
            MSG_INSUFFICIENT,
        ));
    }
    Journal::transfer(
        AccountRef::Wallet(request.user),
        AccountRef::System(SystemAccount::PendingPayouts),
        request.value,
    )
    .map_err(|_| Rejection::field(Code::AmountOverflow, "value", MSG_BAD_DATA))
}

/// The expense order of a cash request; its target is the cash record.
pub fn request_order(request: &CashRequest, cash_id: i64) -> OrderDraft {
    OrderDraft {
        owner_id: request.user,
        target_type: "widthdraw",
        target_id: cash_id.to_string(),
        title: "提现",
        body: None,
        direction: -1,
        amount: request.value,
        state: 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn status(self) -> i16 {
        match self {
            Decision::Approve => APPROVED,
            Decision::Reject => REJECTED,
        }
    }

    /// The state its expense order ends in.
    pub fn order_state(self) -> i16 {
        match self {
            Decision::Approve => 1,
            Decision::Reject => -1,
        }
    }

    pub fn success_message(self) -> &'static str {
        match self {
            Decision::Approve => MSG_APPROVED,
            Decision::Reject => MSG_REJECTED,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRequest {
    pub decision: Decision,
    pub cash_id: i64,
    pub remark: String,
}

pub fn parse_decision(
    decision: Decision,
    data: &Map<String, Value>,
) -> Result<DecisionRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let cash_id = match int_field(data, "cash") {
        IntField::Missing => {
            errors.add(Code::CashRequired, "cash", MSG_CASH_REQUIRED);
            0
        }
        IntField::Value(v) if v > 0 => v,
        _ => {
            errors.add(Code::InvalidCash, "cash", MSG_BAD_DATA);
            0
        }
    };
    let remark = match text_field(data, "remark") {
        TextField::Missing => {
            errors.add(Code::RemarkRequired, "remark", MSG_REMARK_REQUIRED);
            String::new()
        }
        TextField::Value(r) if r.chars().count() <= MAX_REMARK_CHARS => r,
        _ => {
            errors.add(Code::InvalidRemark, "remark", MSG_BAD_DATA);
            String::new()
        }
    };
    errors.finish(|| DecisionRequest {
        decision,
        cash_id,
        remark,
    })
}

/// What a decision does to a cash record in `status` holding `value` for `owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionEffect {
    /// Move the money and record the decision.
    Apply(Journal),
    /// Decided this way already (by another command): nothing more to do.
    AlreadyDone,
}

pub fn decide(
    decision: Decision,
    status: i16,
    owner: i64,
    value: i64,
) -> Result<DecisionEffect, Rejection> {
    if status == decision.status() {
        return Ok(DecisionEffect::AlreadyDone);
    }
    if status != WAITING {
        return Err(Rejection::field(
            Code::CashAlreadyDecided,
            "cash",
            MSG_ALREADY_DECIDED,
        ));
    }
    let pending = AccountRef::System(SystemAccount::PendingPayouts);
    let to = match decision {
        Decision::Approve => AccountRef::System(SystemAccount::PaidOut),
        Decision::Reject => AccountRef::Wallet(owner),
    };
    Journal::transfer(pending, to, value)
        .map(DecisionEffect::Apply)
        .map_err(|_| Rejection::field(Code::AmountOverflow, "cash", MSG_BAD_DATA))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CashRequest, Rejection> {
        parse_request(7, v.as_object().unwrap(), &WalletPolicy::default())
    }

    fn first(v: Value) -> (Code, Vec<String>) {
        let r = parse(v).unwrap_err();
        (r.code, r.messages())
    }

    #[test]
    fn accepts_a_good_request() {
        let r = parse(json!({"value": 100, "type": "alipay", "account": "a@b.c"})).unwrap();
        assert_eq!((r.user, r.value, r.kind.as_str()), (7, 100, "alipay"));
    }

    #[test]
    fn rejects_with_the_seed_words() {
        let ok = |k: &str, v: Value| {
            let mut d = json!({"value": 100, "type": "alipay", "account": "x"});
            d[k] = v;
            d
        };
        assert_eq!(
            first(json!({"type": "alipay", "account": "x"})),
            (Code::AmountRequired, vec![MSG_VALUE_REQUIRED.into()])
        );
        assert_eq!(first(ok("value", json!("100"))).0, Code::InvalidAmount);
        assert_eq!(first(ok("value", json!(-1))).0, Code::InvalidAmount);
        assert_eq!(
            first(ok("value", json!(99))),
            (Code::AmountTooSmall, vec![MSG_VALUE_TOO_SMALL.into()])
        );
        assert_eq!(first(ok("value", json!(1e30))).0, Code::AmountOverflow);
        assert_eq!(
            first(ok("type", Value::Null)),
            (Code::CashTypeRequired, vec![MSG_TYPE_REQUIRED.into()])
        );
        assert_eq!(
            first(ok("type", json!("bank"))),
            (Code::UnsupportedCashType, vec![MSG_UNSUPPORTED_TYPE.into()])
        );
        assert_eq!(
            first(ok("account", json!(" "))),
            (Code::AccountRequired, vec![MSG_ACCOUNT_REQUIRED.into()])
        );
        assert_eq!(
            first(ok("account", json!("x".repeat(256)))).0,
            Code::InvalidAccount
        );
        assert_eq!(parse(json!({})).unwrap_err().errors.len(), 3);
    }

    #[test]
    fn a_request_needs_the_balance() {
        let r = parse(json!({"value": 100, "type": "wechat", "account": "x"})).unwrap();
        assert_eq!(
            decide_request(&r, 99).unwrap_err().code,
            Code::InsufficientBalance
        );
        let j = decide_request(&r, 100).unwrap();
        assert_eq!(
            j.entries().collect::<Vec<_>>(),
            vec![
                (AccountRef::Wallet(7), -100),
                (AccountRef::System(SystemAccount::PendingPayouts), 100)
            ]
        );
    }

    #[test]
    fn decisions() {
        let approve = decide(Decision::Approve, WAITING, 7, 100).unwrap();
        assert!(matches!(approve, DecisionEffect::Apply(_)));
        let reject = decide(Decision::Reject, WAITING, 7, 100).unwrap();
        let DecisionEffect::Apply(journal) = reject else {
            panic!("a waiting request is rejected")
        };
        assert!(journal.entries().any(|e| e == (AccountRef::Wallet(7), 100)));
        assert_eq!(
            decide(Decision::Approve, APPROVED, 7, 100).unwrap(),
            DecisionEffect::AlreadyDone
        );
        assert_eq!(
            decide(Decision::Reject, APPROVED, 7, 100).unwrap_err().code,
            Code::CashAlreadyDecided
        );
        assert_eq!(
            decide(Decision::Approve, REJECTED, 7, 100)
                .unwrap_err()
                .code,
            Code::CashAlreadyDecided
        );
    }

    #[test]
    fn a_decision_needs_a_remark_and_a_cash_id() {
        let r = parse_decision(Decision::Approve, json!({}).as_object().unwrap()).unwrap_err();
        assert_eq!(r.code, Code::CashRequired);
        assert!(r.messages().contains(&MSG_REMARK_REQUIRED.to_owned()));
        let r = parse_decision(
            Decision::Reject,
            json!({"cash": 3, "remark": "账户不符"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!((r.cash_id, r.remark.as_str()), (3, "账户不符"));
    }
}
