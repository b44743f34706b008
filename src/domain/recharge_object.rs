//! `recharge` through a Ping++ recharge object (`pingpp.recharge_mode = "recharge_object"`):
//! the terms it adds to a charge-mode recharge (user fee or balance bonus, description,
//! metadata, expiry), checked against Ping++'s limits before anything is called, and the
//! Ping++ user id of our user.
//!
//! The order's amount is what the wallet is credited: the charge amount less the user fee
//! plus the balance bonus. The fee must stay below the amount (Ping++ allows equal, but a
//! recharge crediting nothing would be an order of 0, which no order may be).

use serde_json::{Map, Value};

use super::outcome::{Code, FieldErrors, Rejection};
use super::policy::WalletPolicy;
use super::recharge::{self, RechargeRequest};
use super::validate::{int_field, IntField};

pub const DEFAULT_USER_ID_TEMPLATE: &str = "user_{id}";
/// Ping++'s limit on a user id.
pub const MAX_USER_ID_CHARS: usize = 64;
pub const MAX_DESCRIPTION_CHARS: usize = 255;
/// Ping++'s largest charge amount, also the bound of a bonus here.
pub const MAX_PINGPP_AMOUNT: i64 = 1_000_000_000;
/// Keys pluspay puts in the recharge's metadata itself.
pub const RESERVED_METADATA_KEYS: [&str; 2] = ["order_id", "user_id"];

pub const MSG_INVALID_USER_FEE: &str = "手续费不合法";
pub const MSG_USER_FEE_TOO_LARGE: &str = "手续费须小于充值金额";
pub const MSG_INVALID_BONUS: &str = "赠送金额不合法";
pub const MSG_FEE_AND_BONUS: &str = "手续费和赠送金额不能同时设置";
pub const MSG_DESCRIPTION_TOO_LONG: &str = "附加说明最多 255 个字符";
pub const MSG_INVALID_TIME_EXPIRE: &str = "支付失效时间不合法";

/// What a recharge object adds to a recharge, all checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RechargeTerms {
    pub user_fee: Option<i64>,
    pub balance_bonus: Option<i64>,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub time_expire: Option<i64>,
}

impl RechargeTerms {
    pub fn fee(&self) -> i64 {
        self.user_fee.unwrap_or(0)
    }

    pub fn bonus(&self) -> i64 {
        self.balance_bonus.unwrap_or(0)
    }

    /// What the wallet gets for a charge of `amount`.
    pub fn credited(&self, amount: i64) -> i64 {
        amount - self.fee() + self.bonus()
    }
}

/// A `{id}` template that makes Ping++ user ids of at most 64 letters, digits, `_` or `-`.
pub fn check_user_id_template(template: &str) -> Result<(), String> {
    if !template.contains("{id}") {
        return Err("must contain {id}".into());
    }
    let longest = pingpp_user(template, i64::MAX);
    if longest.chars().count() > MAX_USER_ID_CHARS {
        return Err(format!(
            "makes user ids longer than {MAX_USER_ID_CHARS} characters"
        ));
    }
    if !longest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Err("may hold only letters, digits, '_' and '-' besides {id}".into());
    }
    Ok(())
}

/// The Ping++ user id of our user `user`.
pub fn pingpp_user(template: &str, user: i64) -> String {
    template.replace("{id}", &user.to_string())
}

/// Parses a recharge-object `recharge`: the charge-mode fields, then the terms, every field
/// error at once. `now` (unix seconds) bounds `time_expire`.
pub fn parse(
    user: i64,
    data: &Map<String, Value>,
    policy: &WalletPolicy,
    now: i64,
) -> Result<(RechargeRequest, RechargeTerms), Rejection> {
    let base = recharge::parse(user, data, policy);
    let amount = base.as_ref().map_or(None, |r| Some(r.amount));
    let channel = data.get("type").and_then(Value::as_str).unwrap_or_default();
    let terms = parse_terms(data, amount, channel, now);
    match (base, terms) {
        (Ok(request), Ok(terms)) => Ok((request, terms)),
        (Err(mut rejection), Err(more)) => {
            for (field, messages) in more.errors {
                rejection.errors.entry(field).or_default().extend(messages);
            }
            Err(rejection)
        }
        (Err(rejection), Ok(_)) | (Ok(_), Err(rejection)) => Err(rejection),
    }
}

/// The terms alone; `amount` is the valid recharge amount, if it is one.
pub fn parse_terms(
    data: &Map<String, Value>,
    amount: Option<i64>,
    channel: &str,
    now: i64,
) -> Result<RechargeTerms, Rejection> {
    let mut errors = FieldErrors::default();
    let user_fee = match int_field(data, "user_fee") {
        IntField::Missing => None,
        IntField::Value(v) if v < 0 => {
            errors.add(Code::InvalidUserFee, "user_fee", MSG_INVALID_USER_FEE);
            None
        }
        IntField::Value(v) if amount.is_some_and(|a| v >= a) => {
            errors.add(Code::InvalidUserFee, "user_fee", MSG_USER_FEE_TOO_LARGE);
            None
        }
        IntField::Value(v) => Some(v),
        IntField::Overflow => {
            errors.add(Code::InvalidUserFee, "user_fee", MSG_USER_FEE_TOO_LARGE);
            None
        }
        IntField::NotInteger => {
            errors.add(Code::InvalidUserFee, "user_fee", MSG_INVALID_USER_FEE);
            None
        }
    };
    // An integer, or Ping++'s own shape `{"amount": n}`.
    let bonus_field = match data.get("balance_bonus") {
        Some(Value::Object(bonus)) => match int_field(bonus, "amount") {
            IntField::Missing => IntField::NotInteger,
            other => other,
        },
        _ => int_field(data, "balance_bonus"),
    };
    let balance_bonus = match bonus_field {
        IntField::Missing => None,
        IntField::Value(v) if (0..=MAX_PINGPP_AMOUNT).contains(&v) => Some(v),
        _ => {
            errors.add(
                Code::InvalidBalanceBonus,
                "balance_bonus",
                MSG_INVALID_BONUS,
            );
            None
        }
    };
    let both = !matches!(data.get("user_fee"), None | Some(Value::Null))
        && !matches!(data.get("balance_bonus"), None | Some(Value::Null));
    if both {
        errors.add(Code::FeeAndBonus, "balance_bonus", MSG_FEE_AND_BONUS);
    }
    let description = match data.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION_CHARS => Some(d.clone()),
        Some(_) => {
            errors.add(
                Code::InvalidDescription,
                "description",
                MSG_DESCRIPTION_TOO_LONG,
            );
            None
        }
    };
    let metadata = match data.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if !RESERVED_METADATA_KEYS.iter().any(|k| m.contains_key(*k)) => {
            Some(m.clone())
        }
        // PHP clients send an empty object as `[]`.
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(_) => {
            errors.add(Code::InvalidMetadata, "metadata", recharge::MSG_BAD_PARAMS);
            None
        }
    };
    // Ping++: 1 minute to 15 days after creation, WeChat 7 days. A minute of margin on the
    // lower bound, since Ping++'s clock decides and the request is sent a moment later.
    let max_days = if channel.starts_with("wx") { 7 } else { 15 };
    let time_expire = match int_field(data, "time_expire") {
        IntField::Missing => None,
        IntField::Value(t) if t >= now + 120 && t <= now + max_days * 86_400 => Some(t),
        _ => {
            errors.add(
                Code::InvalidTimeExpire,
                "time_expire",
                MSG_INVALID_TIME_EXPIRE,
            );
            None
        }
    };
    errors.finish(|| RechargeTerms {
        user_fee,
        balance_bonus,
        description,
        metadata,
        time_expire,
    })
}

/// Whether a recharge object (from an event) is the one made for an order: its id and its
/// user fee and balance bonus as recorded. The charge inside is checked by completion.
pub fn matches(
    object: &Value,
    recharge_id: Option<&str>,
    user_fee: Option<i64>,
    balance_bonus: Option<i64>,
) -> Result<(), String> {
    let id = object.get("id").and_then(Value::as_str);
    if recharge_id.is_none() || id != recharge_id {
        return Err(format!(
            "recharge {} is not the recharge made ({})",
            id.unwrap_or("without id"),
            recharge_id.unwrap_or("none")
        ));
    }
    let fee = object.get("user_fee").and_then(Value::as_i64).unwrap_or(0);
    let bonus = object
        .get("balance_bonus")
        .and_then(|b| b.get("amount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if fee != user_fee.unwrap_or(0) || bonus != balance_bonus.unwrap_or(0) {
        return Err(format!(
            "recharge user_fee {fee} / balance_bonus {bonus} differ from those asked for ({} / {})",
            user_fee.unwrap_or(0),
            balance_bonus.unwrap_or(0)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn parse_json(v: Value) -> Result<(RechargeRequest, RechargeTerms), Rejection> {
        parse(5, v.as_object().unwrap(), &WalletPolicy::default(), NOW)
    }

    fn code(v: Value) -> (Code, Vec<String>) {
        let r = parse_json(v).unwrap_err();
        (r.code, r.errors.keys().cloned().collect())
    }

    #[test]
    fn accepts_fees_bonuses_and_the_rest() {
        let (r, t) = parse_json(json!({"type": "wx", "amount": 1000, "user_fee": 100,
            "description": "d", "metadata": {"k": "v"}, "time_expire": NOW + 3600}))
        .unwrap();
        assert_eq!((r.amount, t.fee(), t.credited(r.amount)), (1000, 100, 900));
        let (_, t) =
            parse_json(json!({"type": "wx", "amount": 1000, "balance_bonus": {"amount": 50}}))
                .unwrap();
        assert_eq!(t.credited(1000), 1050);
        let (_, t) = parse_json(json!({"type": "wx", "amount": 1000, "balance_bonus": 7})).unwrap();
        assert_eq!(t.bonus(), 7);
        let (_, t) = parse_json(json!({"type": "wx", "amount": 10})).unwrap();
        assert_eq!(t, RechargeTerms::default());
    }

    #[test]
    fn rejects_each_limit_with_its_field() {
        let base = || json!({"type": "wx", "amount": 1000});
        let with = |k: &str, v: Value| {
            let mut d = base();
            d[k] = v;
            d
        };
        assert_eq!(
            code(with("user_fee", json!(1000))),
            (Code::InvalidUserFee, vec!["user_fee".into()])
        );
        assert_eq!(code(with("user_fee", json!(-1))).0, Code::InvalidUserFee);
        assert_eq!(code(with("user_fee", json!("5"))).0, Code::InvalidUserFee);
        assert_eq!(
            code(with("balance_bonus", json!({"amount": -1}))).0,
            Code::InvalidBalanceBonus
        );
        assert_eq!(
            code(with("balance_bonus", json!({}))).0,
            Code::InvalidBalanceBonus
        );
        let mut both = with("user_fee", json!(1));
        both["balance_bonus"] = json!({"amount": 1});
        assert_eq!(
            code(both),
            (Code::FeeAndBonus, vec!["balance_bonus".into()])
        );
        assert_eq!(
            code(with("description", json!("x".repeat(256)))),
            (Code::InvalidDescription, vec!["description".into()])
        );
        assert!(parse_json(with("description", json!("说".repeat(255)))).is_ok());
        assert_eq!(code(with("metadata", json!("x"))).0, Code::InvalidMetadata);
        assert_eq!(
            code(with("metadata", json!({"order_id": 1}))).0,
            Code::InvalidMetadata
        );
        assert_eq!(
            code(with("time_expire", json!(NOW + 30))).0,
            Code::InvalidTimeExpire
        );
        assert_eq!(
            code(with("time_expire", json!(NOW + 8 * 86_400))).0,
            Code::InvalidTimeExpire
        );
        // Charge-mode errors and term errors come together.
        let r = parse_json(json!({"type": "wx", "amount": 0, "description": 5})).unwrap_err();
        assert_eq!(r.code, Code::AmountTooSmall);
        assert!(r.errors.contains_key("description"));
    }

    #[test]
    fn a_recharge_object_matches_what_was_recorded() {
        let object = json!({"id": "220", "user_fee": 0, "balance_bonus": {"amount": 30}});
        assert!(matches(&object, Some("220"), None, Some(30)).is_ok());
        assert!(matches(&object, Some("221"), None, Some(30)).is_err());
        assert!(matches(&object, None, None, Some(30)).is_err());
        assert!(matches(&object, Some("220"), Some(5), None).is_err());
        assert!(matches(
            &json!({"id": "220", "balance_bonus": {}}),
            Some("220"),
            None,
            None
        )
        .is_ok());
    }

    #[test]
    fn user_id_templates() {
        assert!(check_user_id_template(DEFAULT_USER_ID_TEMPLATE).is_ok());
        assert_eq!(pingpp_user("user_{id}", 42), "user_42");
        assert!(check_user_id_template("user").is_err());
        assert!(check_user_id_template("a b{id}").is_err());
        assert!(check_user_id_template(&format!("{}{{id}}", "x".repeat(50))).is_err());
    }
}
