//! Daily limits on what a user sends, by command type (a count and a sum per day), and frozen
//! wallets, which send nothing at all. Both are decided in the transaction that moves the money,
//! under the sender's wallet lock, so concurrent commands cannot pass them together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::command::CommandType;
use super::ledger::MAX_COMMAND_AMOUNT;
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{self, IntField};

pub const MSG_FROZEN: &str = "钱包已被冻结，无法支出";
pub const MSG_FROZEN_DONE: &str = "钱包已冻结";
pub const MSG_UNFROZEN_DONE: &str = "钱包已解冻";
pub const MSG_LIMITS_SET: &str = "限额设置成功";
pub const MSG_USER_REQUIRED: &str = "请填写用户";
pub const MSG_REASON_REQUIRED: &str = "请填写原因";
pub const MSG_TYPE_REQUIRED: &str = "请选择限额类型";
pub const MSG_UNLIMITABLE_TYPE: &str = "该类型不支持限额";
pub const MSG_BAD_LIMIT: &str = "限额必须是不小于0的整数";
pub const MAX_REASON_CHARS: usize = 255;

/// A day's limit on one command type: how many and how much (fen). `None`: no limit of that
/// kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DailyLimit {
    pub daily_count: Option<i64>,
    pub daily_amount: Option<i64>,
}

impl DailyLimit {
    pub fn is_none(&self) -> bool {
        self.daily_count.is_none() && self.daily_amount.is_none()
    }
}

/// What a user sent of one type so far today.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub count: i64,
    pub amount: i64,
}

/// The command types a daily limit may be set on: those that send the user's money, with the
/// target type of the sender's order each writes (how a day's usage is counted from the orders
/// when no count was kept yet) and the word for the message.
pub fn limitable(kind: CommandType) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        CommandType::Transfer => ("user", "转账"),
        CommandType::Reward => ("reward", "打赏"),
        CommandType::Cash => ("widthdraw", "提现"),
        CommandType::Transform => ("transform", "兑换"),
        CommandType::HoldCreate => (super::hold::TARGET_HOLD, "冻结"),
        CommandType::RedpacketCreate => ("redpacket", "发红包"),
        _ => return None,
    })
}

/// Whether one more command of `amount` stays within the limit after today's usage.
pub fn admit(
    kind: CommandType,
    limit: &DailyLimit,
    usage: Usage,
    amount: i64,
) -> Result<(), Rejection> {
    let word = limitable(kind).map_or("支出", |(_, word)| word);
    if limit.daily_count.is_some_and(|max| usage.count >= max) {
        return Err(Rejection::field(
            Code::LimitExceeded,
            "amount",
            &format!("今日{word}次数已达上限"),
        ));
    }
    if limit
        .daily_amount
        .is_some_and(|max| usage.amount.saturating_add(amount) > max)
    {
        return Err(Rejection::field(
            Code::LimitExceeded,
            "amount",
            &format!("今日{word}金额超出限额"),
        ));
    }
    Ok(())
}

/// A frozen wallet sends nothing.
pub fn not_frozen(frozen: bool) -> Result<(), Rejection> {
    if frozen {
        Err(Rejection::field(Code::WalletFrozen, "user_id", MSG_FROZEN))
    } else {
        Ok(())
    }
}

/// The limits of the settings (`[wallet.daily_limits.<type>]`): names the first that makes no
/// sense.
pub fn check_settings(limits: &BTreeMap<String, DailyLimit>) -> Result<(), String> {
    for (name, limit) in limits {
        let limitable = CommandType::parse(name).and_then(limitable).is_some();
        if !limitable {
            return Err(format!(
                "wallet.daily_limits.{name}: not a command type that sends money \
                 (transfer, reward, cash, transform, hold.create, redpacket.create)"
            ));
        }
        for (field, value) in [
            ("daily_count", limit.daily_count),
            ("daily_amount", limit.daily_amount),
        ] {
            if value.is_some_and(|v| !(0..=MAX_COMMAND_AMOUNT).contains(&v)) {
                return Err(format!(
                    "wallet.daily_limits.{name}.{field} must be between 0 and {MAX_COMMAND_AMOUNT}"
                ));
            }
        }
    }
    Ok(())
}

/// `wallet.freeze` / `wallet.unfreeze`: whose wallet, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeRequest {
    pub user: i64,
    pub reason: String,
}

/// The user an operator's control is about.
fn whose(errors: &mut FieldErrors, data: &Map<String, Value>) -> i64 {
    validate::id(
        errors,
        data,
        "user",
        (Code::UserRequired, Code::InvalidUser),
        MSG_USER_REQUIRED,
    )
}

pub fn parse_freeze(data: &Map<String, Value>) -> Result<FreezeRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let user = whose(&mut errors, data);
    let reason = validate::text(
        &mut errors,
        data,
        "reason",
        (Code::ReasonRequired, Code::InvalidReason),
        MSG_REASON_REQUIRED,
        MAX_REASON_CHARS,
    );
    errors.finish(|| FreezeRequest { user, reason })
}

/// `limits.set`: a user's own limit on one type, replacing the settings' for them. A missing or
/// null field is no limit of that kind; both missing removes the user's own limit, and the
/// settings' applies again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsRequest {
    pub user: i64,
    pub kind: CommandType,
    pub limit: DailyLimit,
}

pub fn parse_limits(data: &Map<String, Value>) -> Result<LimitsRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let user = whose(&mut errors, data);
    let kind = match validate::text_field(data, "type") {
        validate::TextField::Missing => {
            errors.add(Code::LimitTypeRequired, "type", MSG_TYPE_REQUIRED);
            None
        }
        validate::TextField::Value(name) => {
            match CommandType::parse(&name).filter(|k| limitable(*k).is_some()) {
                Some(kind) => Some(kind),
                None => {
                    errors.add(Code::InvalidLimitType, "type", MSG_UNLIMITABLE_TYPE);
                    None
                }
            }
        }
        validate::TextField::NotText => {
            errors.add(Code::InvalidLimitType, "type", validate::MSG_BAD_DATA);
            None
        }
    };
    let mut bound = |name: &str| match validate::int_field(data, name) {
        IntField::Missing => None,
        IntField::Value(v) if (0..=MAX_COMMAND_AMOUNT).contains(&v) => Some(v),
        _ => {
            errors.add(Code::InvalidLimit, name, MSG_BAD_LIMIT);
            None
        }
    };
    let limit = DailyLimit {
        daily_count: bound("daily_count"),
        daily_amount: bound("daily_amount"),
    };
    errors.finish(|| LimitsRequest {
        user,
        kind: kind.expect("no error means a type"),
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_limit_counts_and_sums_the_day() {
        let limit = DailyLimit {
            daily_count: Some(2),
            daily_amount: Some(100),
        };
        let used = |count, amount| Usage { count, amount };
        assert!(admit(CommandType::Transfer, &limit, used(1, 40), 60).is_ok());
        let count = admit(CommandType::Transfer, &limit, used(2, 0), 1).unwrap_err();
        assert_eq!(count.code, Code::LimitExceeded);
        assert_eq!(count.messages(), vec!["今日转账次数已达上限"]);
        let sum = admit(CommandType::Cash, &limit, used(1, 40), 61).unwrap_err();
        assert_eq!(sum.messages(), vec!["今日提现金额超出限额"]);
        assert!(admit(
            CommandType::Transfer,
            &DailyLimit::default(),
            used(99, 99),
            1
        )
        .is_ok());
        let nothing = DailyLimit {
            daily_count: Some(0),
            daily_amount: None,
        };
        assert!(admit(CommandType::Transfer, &nothing, used(0, 0), 1).is_err());
    }

    #[test]
    fn only_money_sending_types_take_limits() {
        assert!(limitable(CommandType::Transfer).is_some());
        assert!(limitable(CommandType::WalletGet).is_none());
        let mut settings = BTreeMap::new();
        settings.insert("transfer".to_owned(), DailyLimit::default());
        assert!(check_settings(&settings).is_ok());
        settings.insert("wallet.get".to_owned(), DailyLimit::default());
        assert!(check_settings(&settings).is_err());
        let bad = data(json!({"user": 1, "type": "orders.list", "daily_count": -1}));
        let refused = parse_limits(&bad).unwrap_err();
        assert_eq!(refused.code, Code::InvalidLimitType);
        assert!(refused.errors.contains_key("daily_count"));
        let ok = parse_limits(&data(
            json!({"user": 1, "type": "cash", "daily_amount": 500}),
        ))
        .unwrap();
        assert_eq!(ok.limit.daily_amount, Some(500));
        assert_eq!(ok.limit.daily_count, None);
    }

    #[test]
    fn a_freeze_names_a_user_and_a_reason() {
        assert_eq!(
            parse_freeze(&data(json!({"user": 3, "reason": "风控"}))).unwrap(),
            FreezeRequest {
                user: 3,
                reason: "风控".into()
            }
        );
        let refused = parse_freeze(&data(json!({"user": 0}))).unwrap_err();
        assert_eq!(refused.code, Code::InvalidUser);
        assert!(refused.errors.contains_key("reason"));
        assert_eq!(not_frozen(true).unwrap_err().code, Code::WalletFrozen);
        assert!(not_frozen(false).is_ok());
    }
}
