//! `recharge` through a Ping++ charge, and what a charge's state means for its waiting order.
//! The wallet is credited from the Ping++ clearing account only once a charge is paid, by the
//! one completion rule here that `recharge.retrieve` and the webhook both go through.

use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, SystemAccount};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::policy::{WalletPolicy, CHANNELS_NEEDING_SUCCESS_URL};
use super::validate::{int_field, text_field, IntField, TextField};

pub const MSG_CHANNEL_REQUIRED: &str = "请选择充值方式";
pub const MSG_UNSUPPORTED_CHANNEL: &str = "选择的充值方式错误";
pub const MSG_AMOUNT_REQUIRED: &str = "请选择需要充值金额";
pub const MSG_INVALID_AMOUNT: &str = "充值金额不合法";
pub const MSG_AMOUNT_TOO_LARGE: &str = "充值金额超出最大充值限制";
pub const MSG_BAD_PARAMS: &str = "参数错误";
pub const MSG_CREATED: &str = "创建充值订单成功";
pub const MSG_NOT_RECHARGE: &str = "该订单不是充值订单";

pub const TARGET_TYPE: &str = "recharge_ping_p_p";
pub const TITLE: &str = "充值";
pub const BODY: &str = "余额充值";
pub const CURRENCY: &str = "cny";
/// Used when upstream does not pass the payer's address.
pub const DEFAULT_CLIENT_IP: &str = "127.0.0.1";

#[derive(Debug, Clone, PartialEq)]
pub struct RechargeRequest {
    pub user: i64,
    pub channel: String,
    pub amount: i64,
    pub extra: Option<Map<String, Value>>,
    pub client_ip: String,
}

pub fn parse(
    user: i64,
    data: &Map<String, Value>,
    policy: &WalletPolicy,
) -> Result<RechargeRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let channel = match text_field(data, "type") {
        TextField::Missing => {
            errors.add(Code::ChannelRequired, "type", MSG_CHANNEL_REQUIRED);
            String::new()
        }
        TextField::Value(c) if policy.recharge_types.contains(&c) => c,
        _ => {
            errors.add(Code::UnsupportedChannel, "type", MSG_UNSUPPORTED_CHANNEL);
            String::new()
        }
    };
    let amount = parse_amount(data, policy, &mut errors);
    let extra = match data.get("extra") {
        None | Some(Value::Null) => None,
        Some(Value::Object(extra)) => Some(extra.clone()),
        // PHP clients send an empty extra as `[]`.
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(_) => {
            errors.add(Code::InvalidExtra, "extra", MSG_BAD_PARAMS);
            None
        }
    };
    if CHANNELS_NEEDING_SUCCESS_URL.contains(&channel.as_str()) {
        let url = extra.as_ref().and_then(|e| e.get("success_url"));
        let is_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !matches!(url, Some(Value::String(u)) if is_url(u)) {
            errors.add(Code::InvalidExtra, "extra.success_url", MSG_BAD_PARAMS);
        }
    }
    let client_ip = match text_field(data, "client_ip") {
        TextField::Missing => DEFAULT_CLIENT_IP.to_owned(),
        // Ping++ takes the payer's IPv4 address only.
        TextField::Value(ip) if ip.parse::<Ipv4Addr>().is_ok() => ip,
        _ => {
            errors.add(Code::InvalidClientIp, "client_ip", MSG_BAD_PARAMS);
            String::new()
        }
    };
    errors.finish(|| RechargeRequest {
        user,
        channel,
        amount,
        extra,
        client_ip,
    })
}

/// A recharge's `amount`, within the wallet's limits (0 after an error).
pub fn parse_amount(
    data: &Map<String, Value>,
    policy: &WalletPolicy,
    errors: &mut FieldErrors,
) -> i64 {
    match int_field(data, "amount") {
        IntField::Missing => {
            errors.add(Code::AmountRequired, "amount", MSG_AMOUNT_REQUIRED);
            0
        }
        IntField::NotInteger => {
            errors.add(Code::InvalidAmount, "amount", MSG_INVALID_AMOUNT);
            0
        }
        IntField::Value(v) if v < policy.recharge_min => {
            errors.add(Code::AmountTooSmall, "amount", MSG_INVALID_AMOUNT);
            0
        }
        IntField::Overflow => {
            errors.add(Code::AmountTooLarge, "amount", MSG_AMOUNT_TOO_LARGE);
            0
        }
        IntField::Value(v) if v > policy.recharge_max => {
            errors.add(Code::AmountTooLarge, "amount", MSG_AMOUNT_TOO_LARGE);
            0
        }
        IntField::Value(v) => v,
    }
}

/// The waiting order; its target becomes the charge id once the charge exists.
pub fn order(request: &RechargeRequest) -> OrderDraft {
    order_of(request.user, request.amount)
}

/// The waiting order of a recharge of `amount` for `user`, however the money comes in.
pub fn order_of(user: i64, amount: i64) -> OrderDraft {
    OrderDraft {
        owner_id: user,
        target_type: TARGET_TYPE,
        target_id: "0".into(),
        title: TITLE,
        body: Some(BODY.into()),
        direction: 1,
        amount,
        state: OrderState::Waiting,
    }
}

/// Ping++'s `order_no`: "a" and the order id padded to 19 digits, unique as the id is.
pub fn order_no(order_id: i64) -> String {
    format!("a{order_id:019}")
}

/// What a charge object says about its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeState {
    Paid,
    /// Ping++ reported a failure (`failure_code`), or the charge expired unpaid.
    Failed {
        reason: String,
    },
    /// Not paid yet and still payable.
    Pending,
}

/// The facts of a charge that completing an order depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeFacts {
    pub id: String,
    pub order_no: String,
    pub amount: i64,
    pub currency: String,
    pub livemode: bool,
    pub state: ChargeState,
}

/// Reads a charge object; `now` (unix seconds) decides whether an unpaid charge has expired.
pub fn charge_facts(charge: &Value, now: i64) -> Result<ChargeFacts, String> {
    let text = |name: &str| {
        charge
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("the charge has no {name}"))
    };
    let amount = charge
        .get("amount")
        .and_then(Value::as_i64)
        .ok_or("the charge has no amount")?;
    let paid = charge.get("paid").and_then(Value::as_bool) == Some(true);
    let failure = charge.get("failure_code").and_then(Value::as_str);
    let expires = charge.get("time_expire").and_then(Value::as_i64);
    let state = if paid {
        ChargeState::Paid
    } else if let Some(code) = failure {
        let message = charge
            .get("failure_msg")
            .and_then(Value::as_str)
            .unwrap_or("");
        ChargeState::Failed {
            reason: format!("{code}: {message}"),
        }
    } else if expires.is_some_and(|t| t <= now) {
        ChargeState::Failed {
            reason: "expired".into(),
        }
    } else {
        ChargeState::Pending
    };
    Ok(ChargeFacts {
        id: text("id")?,
        order_no: text("order_no")?,
        amount,
        currency: text("currency")?,
        livemode: charge.get("livemode").and_then(Value::as_bool) == Some(true),
        state,
    })
}

/// A waiting recharge order as stored, with what was asked of Ping++ for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRecharge {
    pub order_id: i64,
    pub owner: i64,
    /// The order's amount: what the wallet is credited.
    pub amount: i64,
    pub charge_id: String,
    pub livemode: bool,
    /// A recharge object's user fee, kept out of what is credited (0 for a plain charge).
    pub user_fee: i64,
    /// A recharge object's balance bonus, credited on top (0 for a plain charge).
    pub bonus: i64,
}

impl WaitingRecharge {
    /// What the payer pays through Ping++: the charge's amount.
    pub fn charge_amount(&self) -> i64 {
        self.amount + self.user_fee - self.bonus
    }
}

/// What a charge does to its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Paid: the wallet gets the amount from the clearing account; order state 1.
    Credit(Journal),
    /// Failed or expired: order state -1, no money moves.
    Fail { reason: String },
    /// Still payable: nothing changes.
    Wait,
}

/// Why a charge can't complete an order: it is someone else's or disagrees with what was
/// created. Nothing is credited; the reason goes to the dead-letter queue and the logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("charge {charge} is not the charge of order {order} ({expected})")]
    Charge {
        charge: String,
        order: i64,
        expected: String,
    },
    #[error("order_no {got} is not order {order}'s ({expected})")]
    OrderNo {
        got: String,
        order: i64,
        expected: String,
    },
    #[error("charge amount {got} {currency} differs from order {order}'s {expected} cny")]
    Amount {
        got: i64,
        currency: String,
        order: i64,
        expected: i64,
    },
    #[error("charge livemode {got} differs from the charge created ({expected})")]
    Livemode { got: bool, expected: bool },
    /// A field of the charge is missing or of the wrong type (`"amount": 700.0`, `"700"`).
    #[error("unreadable Ping++ charge: {reason}")]
    Unreadable { reason: String },
}

pub fn complete(order: &WaitingRecharge, charge: &ChargeFacts) -> Result<Completion, Mismatch> {
    if charge.id != order.charge_id {
        return Err(Mismatch::Charge {
            charge: charge.id.clone(),
            order: order.order_id,
            expected: order.charge_id.clone(),
        });
    }
    if charge.order_no != order_no(order.order_id) {
        return Err(Mismatch::OrderNo {
            got: charge.order_no.clone(),
            order: order.order_id,
            expected: order_no(order.order_id),
        });
    }
    if charge.amount != order.charge_amount() || charge.currency != CURRENCY {
        return Err(Mismatch::Amount {
            got: charge.amount,
            currency: charge.currency.clone(),
            order: order.order_id,
            expected: order.charge_amount(),
        });
    }
    if charge.livemode != order.livemode {
        return Err(Mismatch::Livemode {
            got: charge.livemode,
            expected: order.livemode,
        });
    }
    Ok(match &charge.state {
        // The payer's money comes in through the clearing account; the wallet gets the order's
        // amount, the fee goes to its own account, and the platform pays the bonus.
        ChargeState::Paid => Completion::Credit(
            Journal::new(&[
                (
                    AccountRef::System(SystemAccount::PingppClearing),
                    -order.charge_amount(),
                ),
                (AccountRef::Wallet(order.owner), order.amount),
                (
                    AccountRef::System(SystemAccount::RechargeFees),
                    order.user_fee,
                ),
                (
                    AccountRef::System(SystemAccount::RechargeBonuses),
                    -order.bonus,
                ),
            ])
            .expect("a positive order amount makes a balanced journal"),
        ),
        ChargeState::Failed { reason } => Completion::Fail {
            reason: reason.clone(),
        },
        ChargeState::Pending => Completion::Wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<RechargeRequest, Rejection> {
        parse(5, v.as_object().unwrap(), &WalletPolicy::default())
    }

    #[test]
    fn accepts_good_requests() {
        let r = parse_json(json!({"type": "alipay", "amount": 100})).unwrap();
        assert_eq!((r.amount, r.client_ip.as_str()), (100, DEFAULT_CLIENT_IP));
        let r = parse_json(json!({"type": "alipay_wap", "amount": 1_000_000,
            "extra": {"success_url": "https://plus.io/r"}, "client_ip": "10.0.0.9"}))
        .unwrap();
        assert_eq!(r.client_ip, "10.0.0.9");
        assert!(parse_json(json!({"type": "wx", "amount": 5, "extra": []})).is_ok());
    }

    #[test]
    fn rejects_with_the_wallet_api_words() {
        let first = |v: Value| {
            let r = parse_json(v).unwrap_err();
            (r.code, r.messages()[0].clone())
        };
        assert_eq!(
            first(json!({"amount": 100})),
            (Code::ChannelRequired, MSG_CHANNEL_REQUIRED.into())
        );
        assert_eq!(
            first(json!({"type": "wx_pub", "amount": 100})),
            (Code::UnsupportedChannel, MSG_UNSUPPORTED_CHANNEL.into())
        );
        assert_eq!(
            first(json!({"type": "wx"})),
            (Code::AmountRequired, MSG_AMOUNT_REQUIRED.into())
        );
        assert_eq!(
            first(json!({"type": "wx", "amount": 0})),
            (Code::AmountTooSmall, MSG_INVALID_AMOUNT.into())
        );
        assert_eq!(
            first(json!({"type": "wx", "amount": "1"})),
            (Code::InvalidAmount, MSG_INVALID_AMOUNT.into())
        );
        assert_eq!(
            first(json!({"type": "wx", "amount": 1_000_001})),
            (Code::AmountTooLarge, MSG_AMOUNT_TOO_LARGE.into())
        );
        assert_eq!(
            first(json!({"type": "alipay_qr", "amount": 5})),
            (Code::InvalidExtra, MSG_BAD_PARAMS.into())
        );
        assert_eq!(
            first(json!({"type": "wx", "amount": 5, "extra": "x"})),
            (Code::InvalidExtra, MSG_BAD_PARAMS.into())
        );
        assert_eq!(
            first(json!({"type": "wx", "amount": 5, "client_ip": "nope"})),
            (Code::InvalidClientIp, MSG_BAD_PARAMS.into())
        );
    }

    #[test]
    fn order_numbers_are_twenty_characters() {
        assert_eq!(order_no(8), "a0000000000000000008");
        assert_eq!(order_no(i64::MAX).len(), 20);
    }

    fn charge(paid: bool) -> Value {
        json!({"id": "ch_1", "order_no": order_no(3), "amount": 500, "currency": "cny",
               "livemode": false, "paid": paid, "failure_code": null, "time_expire": 2000})
    }

    fn waiting() -> WaitingRecharge {
        WaitingRecharge {
            order_id: 3,
            owner: 5,
            amount: 500,
            charge_id: "ch_1".into(),
            livemode: false,
            user_fee: 0,
            bonus: 0,
        }
    }

    #[test]
    fn fees_and_bonuses_have_their_own_entries() {
        let paid = charge_facts(&charge(true), 0).unwrap();
        let entries = |w: &WaitingRecharge| match complete(w, &paid) {
            Ok(Completion::Credit(journal)) => journal.entries().collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let clearing = AccountRef::System(SystemAccount::PingppClearing);
        let fees = AccountRef::System(SystemAccount::RechargeFees);
        let bonuses = AccountRef::System(SystemAccount::RechargeBonuses);
        assert_eq!(
            entries(&waiting()),
            vec![(AccountRef::Wallet(5), 500), (clearing, -500)]
        );
        // A charge of 500 with a fee of 20 credits 480.
        let with_fee = WaitingRecharge {
            amount: 480,
            user_fee: 20,
            ..waiting()
        };
        assert_eq!(
            entries(&with_fee),
            vec![(AccountRef::Wallet(5), 480), (clearing, -500), (fees, 20)]
        );
        // A charge of 500 with a bonus of 30 credits 530.
        let with_bonus = WaitingRecharge {
            amount: 530,
            bonus: 30,
            ..waiting()
        };
        assert_eq!(
            entries(&with_bonus),
            vec![
                (AccountRef::Wallet(5), 530),
                (clearing, -500),
                (bonuses, -30)
            ]
        );
        let wrong = WaitingRecharge {
            amount: 500,
            bonus: 30,
            ..waiting()
        };
        assert!(matches!(
            complete(&wrong, &paid),
            Err(Mismatch::Amount { .. })
        ));
    }

    #[test]
    fn charge_states() {
        let facts = |v: Value, now| charge_facts(&v, now).unwrap().state;
        assert_eq!(facts(charge(true), 3000), ChargeState::Paid);
        assert_eq!(facts(charge(false), 1000), ChargeState::Pending);
        assert!(matches!(
            facts(charge(false), 2000),
            ChargeState::Failed { .. }
        ));
        let mut failed = charge(false);
        failed["failure_code"] = json!("card_declined");
        assert!(matches!(facts(failed, 0), ChargeState::Failed { .. }));
        assert!(charge_facts(&json!({"id": "x"}), 0).is_err());
    }

    #[test]
    fn completion_checks_the_charge_against_the_order() {
        let paid = charge_facts(&charge(true), 0).unwrap();
        assert!(matches!(
            complete(&waiting(), &paid),
            Ok(Completion::Credit(_))
        ));
        let mut other = paid.clone();
        other.amount = 501;
        assert!(matches!(
            complete(&waiting(), &other),
            Err(Mismatch::Amount { .. })
        ));
        let mut other = paid.clone();
        other.currency = "usd".into();
        assert!(matches!(
            complete(&waiting(), &other),
            Err(Mismatch::Amount { .. })
        ));
        let mut other = paid.clone();
        other.id = "ch_2".into();
        assert!(matches!(
            complete(&waiting(), &other),
            Err(Mismatch::Charge { .. })
        ));
        let mut other = paid.clone();
        other.livemode = true;
        assert!(matches!(
            complete(&waiting(), &other),
            Err(Mismatch::Livemode { .. })
        ));
        let mut other = paid;
        other.order_no = order_no(4);
        assert!(matches!(
            complete(&waiting(), &other),
            Err(Mismatch::OrderNo { .. })
        ));
        let pending = charge_facts(&charge(false), 0).unwrap();
        assert_eq!(complete(&waiting(), &pending), Ok(Completion::Wait));
    }
}
