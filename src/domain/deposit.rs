//! `recharge` with the money at Ping++ (`wallet.custody = "pingpp"`): a deposit into the user's
//! own e-wallet (个人用户钱包充值). The waiting order is credited once, when Ping++ reports the
//! deposit succeeded, from the account that stands for the world outside the e-wallets.

use serde_json::{Map, Value};

use super::account::parse_return_url;
use super::ledger::{AccountRef, Journal, SystemAccount};
use super::outcome::{FieldErrors, Rejection};
use super::policy::WalletPolicy;
use super::recharge::parse_amount;

/// The payment link lives 15 minutes (充值链接有效期为 15 分钟); a new one takes a new recharge.
pub const PAYMENT_LINK_LIFETIME_SECS: i64 = 900;
pub const MSG_DEPOSIT_FAILED: &str = "充值失败";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRequest {
    pub user: i64,
    pub amount: i64,
    pub return_url: String,
}

pub fn parse(
    user: i64,
    data: &Map<String, Value>,
    policy: &WalletPolicy,
) -> Result<DepositRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let amount = parse_amount(data, policy, &mut errors);
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
    errors.finish(|| DepositRequest {
        user,
        amount,
        return_url,
    })
}

/// Ping++'s `order_no` of a deposit: `d` and the order id padded to 19 digits.
pub fn order_no(order_id: i64) -> String {
    format!("d{order_id:019}")
}

/// What a deposit's `status` means for its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositState {
    /// `created` (or `pending`/`processing`): not paid yet.
    Waiting,
    Succeeded,
    /// `failed`, `canceled` or `expired`: it will never be paid; why.
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositFacts {
    pub id: String,
    pub order_no: String,
    pub amount: i64,
    pub user: String,
    pub status: String,
    pub state: DepositState,
}

/// How long past its link's lifetime an unpaid deposit is still taken as payable: Ping++'s
/// clock and ours may disagree.
pub const EXPIRY_MARGIN_SECS: i64 = 600;
pub const MSG_EXPIRED: &str = "充值链接已过期";

/// Reads a deposit object; `Err` for anything that is not a readable one. One still unpaid
/// long after its payment link expired (`created` + 15 minutes, with a margin, before `now`)
/// has failed: a new recharge makes a new link. Paid after all, it is credited late.
pub fn facts(deposit: &Value, now: i64) -> Result<DepositFacts, String> {
    if deposit.get("object").and_then(Value::as_str) != Some("deposit") {
        return Err("not a deposit object".into());
    }
    let text = |name: &str| {
        deposit
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("the deposit has no {name}"))
    };
    let status = text("status")?;
    let state = match status.as_str() {
        "created" | "pending" | "processing" => DepositState::Waiting,
        "succeeded" => DepositState::Succeeded,
        "failed" | "canceled" | "cancelled" | "expired" | "closed" => DepositState::Failed {
            reason: deposit
                .get("failure_msg")
                .and_then(Value::as_str)
                .filter(|m| !m.trim().is_empty())
                .unwrap_or(MSG_DEPOSIT_FAILED)
                .to_owned(),
        },
        other => return Err(format!("unknown deposit status {other:?}")),
    };
    let created = deposit.get("created").and_then(Value::as_i64);
    let state = match (state, created) {
        (DepositState::Waiting, Some(created))
            if created + PAYMENT_LINK_LIFETIME_SECS + EXPIRY_MARGIN_SECS < now =>
        {
            DepositState::Failed {
                reason: MSG_EXPIRED.into(),
            }
        }
        (state, _) => state,
    };
    Ok(DepositFacts {
        id: text("id")?,
        order_no: text("order_no")?,
        amount: deposit
            .get("amount")
            .and_then(Value::as_i64)
            .filter(|a| *a > 0)
            .ok_or("the deposit has no positive amount")?,
        user: text("user")?,
        status,
        state,
    })
}

/// The journal of a deposit that succeeded: the money came into the user's e-wallet from
/// outside.
pub fn credit(owner: i64, amount: i64) -> Option<Journal> {
    Journal::transfer(
        AccountRef::System(SystemAccount::EwalletOutside),
        AccountRef::Wallet(owner),
        amount,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outcome::Code;
    use serde_json::json;

    #[test]
    fn a_deposit_needs_an_amount_and_a_return_url() {
        let policy = WalletPolicy::default();
        let ok = parse(
            3,
            json!({"amount": 100, "return_url": "https://example.com/back"})
                .as_object()
                .unwrap(),
            &policy,
        )
        .unwrap();
        assert_eq!(ok.amount, 100);
        let refused = parse(3, json!({"amount": 0}).as_object().unwrap(), &policy).unwrap_err();
        assert_eq!(
            refused.errors.keys().collect::<Vec<_>>(),
            ["amount", "return_url"]
        );
        assert_eq!(refused.code, Code::AmountTooSmall);
    }

    #[test]
    fn deposit_states() {
        let deposit = |status: &str| {
            json!({"object": "deposit", "id": "601", "order_no": "d1", "amount": 5,
                   "user": "u1", "status": status, "failure_msg": null, "created": 1000})
        };
        let now = 1000 + PAYMENT_LINK_LIFETIME_SECS;
        let state = |status: &str, at: i64| facts(&deposit(status), at).unwrap().state;
        assert_eq!(state("created", now), DepositState::Waiting);
        assert_eq!(state("succeeded", now), DepositState::Succeeded);
        assert!(matches!(
            state("canceled", now),
            DepositState::Failed { .. }
        ));
        // Unpaid long after its link expired: failed; paid, it stays paid.
        let later = now + EXPIRY_MARGIN_SECS + 1;
        assert_eq!(
            state("created", later),
            DepositState::Failed {
                reason: MSG_EXPIRED.into()
            }
        );
        assert_eq!(state("succeeded", later), DepositState::Succeeded);
        assert!(facts(&deposit("weird"), now).is_err());
        assert!(facts(&json!({"object": "charge"}), now).is_err());
    }
}
