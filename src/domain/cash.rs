//! `cash` (a request to take money out), and the operator's `cash.approve` / `cash.reject`.
//! The money leaves the wallet at once for a pending-payout account, so it can't be spent twice
//! while the request waits; approval sends it out, rejection brings it back.

use serde_json::{Map, Value};

use super::account::parse_return_url;
use super::custody::Custody;
use super::ledger::{AccountRef, Journal, SystemAccount, WalletFigures};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::policy::WalletPolicy;
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
pub const MSG_FIRST_APPROVAL: &str = "审批成功，等待另一位管理员审批";
pub const MSG_ALREADY_APPROVED: &str = "你已审批过该提现申请，需要另一位管理员审批";
pub const MSG_OWN_REQUEST: &str = "不能审批自己的提现申请";

/// Why a Ping++ withdrawal came back, when Ping++ gives no `failure_msg`.
pub const MSG_PAYOUT_FAILED: &str = "提现失败";
pub const MSG_PAYOUT_CANCELED: &str = "提现已取消";
pub const MSG_WITHDRAWAL_MISMATCH: &str = "Ping++ 提现记录与提现申请不符";

/// The only channel Ping++'s account-system withdrawal takes.
pub const DEFAULT_WITHDRAWAL_CHANNEL: &str = "yeepay";
pub const MAX_RETURN_URL_CHARS: usize = 1024;

pub const MAX_ACCOUNT_CHARS: usize = 255;
pub const MAX_REMARK_CHARS: usize = 255;

/// The `status` of a cash record (提现记录).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CashStatus {
    /// 0: 待审批, waiting for an operator.
    Waiting,
    /// 1: 已审批.
    Approved,
    /// 2: 被拒绝 (or its payout returned).
    Rejected,
}

impl CashStatus {
    /// The number the wallet API stores and shows.
    pub fn code(self) -> i16 {
        match self {
            CashStatus::Waiting => 0,
            CashStatus::Approved => 1,
            CashStatus::Rejected => 2,
        }
    }

    pub fn from_code(code: i16) -> Option<CashStatus> {
        Some(match code {
            0 => CashStatus::Waiting,
            1 => CashStatus::Approved,
            2 => CashStatus::Rejected,
            _ => return None,
        })
    }
}

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
    let value = parse_value(data, policy, &mut errors);
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

/// A cash request's `value`, at least `wallet.cash_min` (0 after an error).
fn parse_value(data: &Map<String, Value>, policy: &WalletPolicy, errors: &mut FieldErrors) -> i64 {
    match int_field(data, "value") {
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
    }
}

/// The wallet pays the pending-payout account, if the balance allows.
pub fn decide_request(
    request: &CashRequest,
    wallet: impl Into<WalletFigures>,
) -> Result<Journal, Rejection> {
    decide_request_into(request, wallet, SystemAccount::PendingPayouts)
}

fn decide_request_into(
    request: &CashRequest,
    wallet: impl Into<WalletFigures>,
    pending: SystemAccount,
) -> Result<Journal, Rejection> {
    let wallet = wallet.into();
    if request.value > wallet.balance {
        return Err(Rejection::field(
            Code::InsufficientBalance,
            "value",
            MSG_INSUFFICIENT,
        ));
    }
    if wallet.moved(-request.value).is_none() {
        return Err(Rejection::field(
            Code::AmountOverflow,
            "value",
            MSG_BAD_DATA,
        ));
    }
    Journal::transfer(
        AccountRef::Wallet(request.user),
        AccountRef::System(pending),
        request.value,
    )
    .map_err(|_| Rejection::field(Code::AmountOverflow, "value", MSG_BAD_DATA))
}

/// `cash` with the money at Ping++: a withdrawal from the user's own e-wallet, `value` fen,
/// the user's cashier page returning to `return_url`. No type or account: Ping++ pays to the
/// card bound to the e-wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EwalletCashRequest {
    pub user: i64,
    pub value: i64,
    pub return_url: String,
}

/// The cash record's `type` of an e-wallet withdrawal.
pub const EWALLET_CASH_TYPE: &str = "yeepay";

pub fn parse_ewallet_request(
    user: i64,
    data: &Map<String, Value>,
    policy: &WalletPolicy,
) -> Result<EwalletCashRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let value = parse_value(data, policy, &mut errors);
    let return_url = match parse_return_url(data) {
        Ok(url) => url,
        Err(rejection) => {
            for (field, messages) in &rejection.errors {
                for message in messages {
                    errors.add(rejection.code, field, message);
                }
            }
            String::new()
        }
    };
    errors.finish(|| EwalletCashRequest {
        user,
        value,
        return_url,
    })
}

/// The e-wallet withdrawal's hold: the money stays in the user's e-wallet at Ping++, but is
/// no longer theirs to spend while the withdrawal is under way.
pub fn hold_for_withdrawal(
    request: &EwalletCashRequest,
    wallet: impl Into<WalletFigures>,
) -> Result<Journal, Rejection> {
    let as_cash = CashRequest {
        user: request.user,
        value: request.value,
        kind: EWALLET_CASH_TYPE.into(),
        account: String::new(),
    };
    decide_request_into(&as_cash, wallet, SystemAccount::EwalletWithdrawals)
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
        state: OrderState::Waiting,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn status(self) -> CashStatus {
        match self {
            Decision::Approve => CashStatus::Approved,
            Decision::Reject => CashStatus::Rejected,
        }
    }

    /// The state its expense order ends in.
    pub fn order_state(self) -> OrderState {
        match self {
            Decision::Approve => OrderState::Succeeded,
            Decision::Reject => OrderState::Failed,
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

/// `cash.retrieve`: the cash record to look at.
pub fn parse_cash_id(data: &Map<String, Value>) -> Result<i64, Rejection> {
    match int_field(data, "cash") {
        IntField::Missing => Err(Rejection::field(
            Code::CashRequired,
            "cash",
            MSG_CASH_REQUIRED,
        )),
        IntField::Value(v) if v > 0 => Ok(v),
        _ => Err(Rejection::field(Code::InvalidCash, "cash", MSG_BAD_DATA)),
    }
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
    status: CashStatus,
    owner: i64,
    value: i64,
) -> Result<DecisionEffect, Rejection> {
    if status == decision.status() {
        return Ok(DecisionEffect::AlreadyDone);
    }
    if status != CashStatus::Waiting {
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

/// What an operator's approval of a waiting cash request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStep {
    /// The request is approved and paid out.
    Settle,
    /// The request needs a second operator: this approval is recorded, the request waits.
    RecordFirst,
}

/// The two-person rule: a request above `threshold` (fen) is settled by the approval of a second
/// operator, other than the first; nobody approves their own request, whatever its size.
/// `approved_by` are the operators whose approvals of this request are recorded.
pub fn approval_step(
    operator: i64,
    owner: i64,
    value: i64,
    threshold: Option<i64>,
    approved_by: &[i64],
) -> Result<ApprovalStep, Rejection> {
    if operator == owner {
        return Err(Rejection::field(
            Code::OwnCashRequest,
            "cash",
            MSG_OWN_REQUEST,
        ));
    }
    if approved_by.contains(&operator) {
        return Err(Rejection::field(
            Code::AlreadyApproved,
            "cash",
            MSG_ALREADY_APPROVED,
        ));
    }
    Ok(
        if needs_two_approvals(value, threshold) && approved_by.is_empty() {
            ApprovalStep::RecordFirst
        } else {
            ApprovalStep::Settle
        },
    )
}

/// Whether a request of `value` fen needs two operators' approvals.
pub fn needs_two_approvals(value: i64, threshold: Option<i64>) -> bool {
    threshold.is_some_and(|threshold| value > threshold)
}

/// A payout account as operators see it in lists: enough to recognise, not to copy. An email
/// keeps its first letter and domain, a number (phone, card) its first three and last four
/// digits, anything else its first and last character.
pub fn mask_account(account: &str) -> String {
    let chars: Vec<char> = account.chars().collect();
    if let Some(at) = account.find('@') {
        let first = account[..at]
            .chars()
            .next()
            .map_or(String::new(), String::from);
        return format!("{first}***{}", &account[at..]);
    }
    if chars.len() >= 8 && chars.iter().all(|c| c.is_ascii_digit()) {
        let hidden = chars.len() - 7;
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        return format!("{head}{}{tail}", "*".repeat(hidden));
    }
    match chars.as_slice() {
        [] => String::new(),
        [_] | [_, _] => "***".into(),
        [first, .., last] => format!("{first}***{last}"),
    }
}

/// A Ping++ channel name: letters, digits and `_`.
pub fn check_withdrawal_channel(channel: &str) -> Result<(), String> {
    if channel.is_empty()
        || channel.len() > 32
        || !channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!("{channel:?} is not a Ping++ channel name"));
    }
    Ok(())
}

/// `extra[return_url]`: an absolute http(s) URL without spaces.
pub fn check_return_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err("must be an http(s) URL".into());
    };
    if rest.is_empty()
        || rest.starts_with('/')
        || url.len() > MAX_RETURN_URL_CHARS
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "must be an http(s) URL with a host, without spaces, at most {MAX_RETURN_URL_CHARS} characters"
        ));
    }
    Ok(())
}

/// The `order_no` of a payout attempt: 20 letters and digits, like a recharge's.
pub fn withdrawal_order_no(payout_id: i64) -> String {
    format!("w{payout_id:019}")
}

/// What a Ping++ withdrawal's `status` means for its cash record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithdrawalState {
    /// `created`: made but not confirmed.
    Created,
    /// `pending` / `processing`: confirmed, the money is on its way.
    InProgress,
    Succeeded,
    /// `failed` or `canceled`, and why.
    Returned {
        reason: String,
    },
}

/// A Ping++ withdrawal's `status`, read once: the word Ping++ uses is kept (it is shown on the
/// cash record), `pending` and `processing` alike mean "on its way".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawalStatus {
    Created,
    Pending,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl WithdrawalStatus {
    /// Ping++'s word (`cancelled`, the British spelling, is read as `canceled`).
    pub fn parse(status: &str) -> Option<WithdrawalStatus> {
        Some(match status {
            "created" => WithdrawalStatus::Created,
            "pending" => WithdrawalStatus::Pending,
            "processing" => WithdrawalStatus::Processing,
            "succeeded" => WithdrawalStatus::Succeeded,
            "failed" => WithdrawalStatus::Failed,
            "canceled" | "cancelled" => WithdrawalStatus::Canceled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalStatus::Created => "created",
            WithdrawalStatus::Pending => "pending",
            WithdrawalStatus::Processing => "processing",
            WithdrawalStatus::Succeeded => "succeeded",
            WithdrawalStatus::Failed => "failed",
            WithdrawalStatus::Canceled => "canceled",
        }
    }

    /// Failed or canceled: it will never pay out.
    pub fn is_returned(self) -> bool {
        matches!(self, WithdrawalStatus::Failed | WithdrawalStatus::Canceled)
    }
}

/// The facts of a withdrawal object that its cash record is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalFacts {
    pub id: String,
    pub order_no: String,
    pub amount: i64,
    pub status: WithdrawalStatus,
    pub state: WithdrawalState,
}

pub fn withdrawal_facts(withdrawal: &serde_json::Value) -> Result<WithdrawalFacts, String> {
    let text = |name: &str| {
        withdrawal
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("the withdrawal has no {name}"))
    };
    if withdrawal.get("object").and_then(Value::as_str) != Some("withdrawal") {
        return Err("not a withdrawal object".into());
    }
    let word = text("status")?;
    let status = WithdrawalStatus::parse(&word)
        .ok_or_else(|| format!("unknown withdrawal status {word:?}"))?;
    let failure = withdrawal
        .get("failure_msg")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty());
    let state = match status {
        WithdrawalStatus::Created => WithdrawalState::Created,
        WithdrawalStatus::Pending | WithdrawalStatus::Processing => WithdrawalState::InProgress,
        WithdrawalStatus::Succeeded => WithdrawalState::Succeeded,
        WithdrawalStatus::Failed => WithdrawalState::Returned {
            reason: failure.unwrap_or(MSG_PAYOUT_FAILED).to_owned(),
        },
        WithdrawalStatus::Canceled => WithdrawalState::Returned {
            reason: failure.unwrap_or(MSG_PAYOUT_CANCELED).to_owned(),
        },
    };
    Ok(WithdrawalFacts {
        id: text("id")?,
        order_no: text("order_no")?,
        amount: withdrawal
            .get("amount")
            .and_then(Value::as_i64)
            .ok_or("the withdrawal has no amount")?,
        status,
        state,
    })
}

/// What a withdrawal's final state does to an approved cash record of `value` for `owner`:
/// the money leaves the pending account for the paid one (pending_payouts and paid_out with
/// the platform holding the money, ewallet_withdrawals and ewallet_outside with Ping++
/// holding it), or goes back to the wallet.
pub fn settle(
    custody: Custody,
    state: &WithdrawalState,
    owner: i64,
    value: i64,
) -> Option<Journal> {
    let pending = AccountRef::System(custody.withdrawals_pending());
    let to = match state {
        WithdrawalState::Succeeded => AccountRef::System(custody.withdrawals_paid()),
        WithdrawalState::Returned { .. } => AccountRef::Wallet(owner),
        WithdrawalState::Created | WithdrawalState::InProgress => return None,
    };
    Journal::transfer(pending, to, value).ok()
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
    fn rejects_with_the_wallet_api_words() {
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
        let approve = decide(Decision::Approve, CashStatus::Waiting, 7, 100).unwrap();
        assert!(matches!(approve, DecisionEffect::Apply(_)));
        let reject = decide(Decision::Reject, CashStatus::Waiting, 7, 100).unwrap();
        let DecisionEffect::Apply(journal) = reject else {
            panic!("a waiting request is rejected")
        };
        assert!(journal.entries().any(|e| e == (AccountRef::Wallet(7), 100)));
        assert_eq!(
            decide(Decision::Approve, CashStatus::Approved, 7, 100).unwrap(),
            DecisionEffect::AlreadyDone
        );
        assert_eq!(
            decide(Decision::Reject, CashStatus::Approved, 7, 100)
                .unwrap_err()
                .code,
            Code::CashAlreadyDecided
        );
        assert_eq!(
            decide(Decision::Approve, CashStatus::Rejected, 7, 100)
                .unwrap_err()
                .code,
            Code::CashAlreadyDecided
        );
    }

    #[test]
    fn withdrawals_are_read_and_settled() {
        let w = serde_json::json!({"object": "withdrawal", "id": "1712", "order_no": "w0000000000000000001",
                                   "amount": 100, "status": "processing", "failure_msg": null});
        let facts = withdrawal_facts(&w).unwrap();
        assert_eq!(facts.state, WithdrawalState::InProgress);
        assert_eq!(settle(Custody::Platform, &facts.state, 7, 100), None);
        let mut failed = w.clone();
        failed["status"] = json!("failed");
        failed["failure_msg"] = json!("账户不存在");
        let facts = withdrawal_facts(&failed).unwrap();
        assert_eq!(
            facts.state,
            WithdrawalState::Returned {
                reason: "账户不存在".into()
            }
        );
        let back = settle(Custody::Platform, &facts.state, 7, 100).unwrap();
        assert!(back.entries().any(|e| e == (AccountRef::Wallet(7), 100)));
        let mut canceled = w.clone();
        canceled["status"] = json!("canceled");
        assert_eq!(
            withdrawal_facts(&canceled).unwrap().state,
            WithdrawalState::Returned {
                reason: MSG_PAYOUT_CANCELED.into()
            }
        );
        let mut paid = w.clone();
        paid["status"] = json!("succeeded");
        let out = settle(
            Custody::Platform,
            &withdrawal_facts(&paid).unwrap().state,
            7,
            100,
        )
        .unwrap();
        assert!(out
            .entries()
            .any(|e| e == (AccountRef::System(SystemAccount::PaidOut), 100)));
        for bad in [
            json!({"object": "charge"}),
            json!({"object": "withdrawal", "id": "1"}),
        ] {
            assert!(withdrawal_facts(&bad).is_err());
        }
        let mut odd = w;
        odd["status"] = json!("lost");
        assert!(withdrawal_facts(&odd).is_err());
        assert_eq!(withdrawal_order_no(42), "w0000000000000000042");
    }

    #[test]
    fn withdrawal_settings() {
        assert!(check_withdrawal_channel(DEFAULT_WITHDRAWAL_CHANNEL).is_ok());
        assert!(check_withdrawal_channel("yee pay").is_err());
        assert!(check_withdrawal_channel("").is_err());
        assert!(check_return_url("https://example.com/wallet?x=1").is_ok());
        for bad in [
            "",
            "example.com",
            "https://",
            "https:///x",
            "ftp://x",
            "https://a b",
        ] {
            assert!(check_return_url(bad).is_err(), "{bad}");
        }
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

    #[test]
    fn two_operators_settle_a_request_above_the_threshold() {
        let threshold = Some(10_000);
        // At the threshold one approval settles; above it the first is recorded.
        assert_eq!(
            approval_step(1, 7, 10_000, threshold, &[]),
            Ok(ApprovalStep::Settle)
        );
        assert_eq!(
            approval_step(1, 7, 10_001, threshold, &[]),
            Ok(ApprovalStep::RecordFirst)
        );
        assert_eq!(
            approval_step(2, 7, 10_001, threshold, &[1]),
            Ok(ApprovalStep::Settle)
        );
        let twice = approval_step(1, 7, 10_001, threshold, &[1]).unwrap_err();
        assert_eq!(twice.code, Code::AlreadyApproved);
        // Without a threshold every request is settled by one operator.
        assert_eq!(
            approval_step(1, 7, i64::MAX, None, &[]),
            Ok(ApprovalStep::Settle)
        );
    }

    #[test]
    fn nobody_approves_their_own_request() {
        for (value, threshold, approved_by) in [
            (100, None, vec![]),
            (20_000, Some(10_000), vec![]),
            (20_000, Some(10_000), vec![1]),
        ] {
            let refused = approval_step(7, 7, value, threshold, &approved_by).unwrap_err();
            assert_eq!(refused.code, Code::OwnCashRequest);
            assert_eq!(refused.messages(), vec![MSG_OWN_REQUEST.to_owned()]);
        }
    }

    #[test]
    fn accounts_are_masked_for_lists() {
        assert_eq!(mask_account("zhang.san@example.com"), "z***@example.com");
        assert_eq!(mask_account("13812345678"), "138****5678");
        assert_eq!(mask_account("6222020200112233445"), "622************3445");
        assert_eq!(mask_account("张三丰"), "张***丰");
        assert_eq!(mask_account("ab"), "***");
        assert_eq!(mask_account(""), "");
        assert!(!mask_account("13812345678").contains("1234"));
    }
}
