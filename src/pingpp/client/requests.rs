//! What we ask of Ping++: the request types, Ping++'s own limits on them (checked before
//! anything is sent, so a request Ping++ would refuse is neither sent nor retried) and the JSON
//! body each becomes.

use std::net::Ipv4Addr;

#[cfg(doc)]
use super::PingppClient;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pingpp::error::PingppError;

/// A charge to create (`POST /v1/charges`). Amount in fen; currency is always CNY.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The merchant's order number: 8 to 20 ASCII letters and digits, unique per charge.
    /// Retries and crash recovery send the same one again: Ping++ then answers with the charge
    /// it made, or refuses the used number, and [`PingppClient::find_charge`] finds the charge.
    pub order_no: String,
    pub channel: String,
    pub amount: u64,
    /// The payer's IPv4 address.
    pub client_ip: String,
    /// At most 32 characters.
    pub subject: String,
    /// At most 128 characters.
    pub body: String,
    /// Channel-specific parameters (e.g. `success_url` for alipay_wap), a JSON object.
    pub extra: Option<Value>,
    /// Unix seconds after which the charge can no longer be paid.
    pub time_expire: Option<i64>,
    /// A JSON object stored with the charge.
    pub metadata: Option<Value>,
    /// At most 255 characters.
    pub description: Option<String>,
}

/// A recharge object to create (`POST /v1/apps/{app}/recharges`): a charge paid by `user`
/// that credits their Ping++ balance, less `user_fee` or plus `balance_bonus` (never both).
/// Only the charge's `order_no`, `channel`, `amount`, `client_ip`, `subject`, `body`, `extra`
/// and `time_expire` are sent, as `charge[...]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RechargeObjectRequest {
    /// The Ping++ user id, at most 64 characters.
    pub user: String,
    pub charge: ChargeRequest,
    /// Fen kept as a fee; at most the charge amount.
    pub user_fee: Option<u64>,
    /// Fen given on top, sent as `balance_bonus[amount]`.
    pub balance_bonus: Option<u64>,
    /// At most 255 characters.
    pub description: Option<String>,
    /// A JSON object stored with the recharge.
    pub metadata: Option<Value>,
}

/// A withdrawal to create (`POST /v1/apps/{app}/withdrawals`): money out of `user`'s wallet
/// through `channel`. As for charges, retries send the same `order_no`; a refused repeat is
/// settled by [`PingppClient::find_withdrawal`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithdrawalRequest {
    /// The Ping++ user id, at most 64 characters.
    pub user: String,
    pub channel: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// 8 to 20 letters and digits, unique per withdrawal.
    pub order_no: String,
    /// `extra[return_url]`: where the user's cashier page returns to.
    pub return_url: String,
}

/// What `PUT /v1/apps/{app}/withdrawals/{id}` asks of a created withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawalUpdate {
    /// `{"status": "pending"}`: confirm it.
    Confirm,
    /// `{"status": "canceled"}`: cancel it.
    Cancel,
}

impl WithdrawalUpdate {
    pub fn status(self) -> &'static str {
        match self {
            WithdrawalUpdate::Confirm => "pending",
            WithdrawalUpdate::Cancel => "canceled",
        }
    }

    /// The body of the update: `{"status": ...}`.
    pub(super) fn body(self) -> Value {
        json!({ "status": self.status() })
    }
}

/// What Ping++ ids (and app ids and channel names) are made of.
pub(super) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Ping++ ids are letters, digits and `_` (a charge's is `ch_` and letters and digits); checking
/// them keeps the path (and what is signed) free of anything needing percent-encoding.
pub(super) fn check_id(what: &str, id: &str) -> Result<(), PingppError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(is_id_char) {
        return Err(PingppError::InvalidInput(format!(
            "{what} id {id:?} is not letters, digits and _"
        )));
    }
    Ok(())
}

pub(super) fn check_charge_id(id: &str) -> Result<(), PingppError> {
    check_id("charge", id)
}

pub(super) fn check_withdrawal_id(id: &str) -> Result<(), PingppError> {
    check_id("withdrawal", id)
}

/// Ping++'s own limits, so a request it would refuse is not sent (nor retried).
pub(super) fn validate_charge(req: &ChargeRequest) -> Result<(), PingppError> {
    let invalid = |m: String| Err(PingppError::InvalidInput(m));
    let n = req.order_no.len();
    if !(8..=20).contains(&n) || !req.order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid(format!(
            "order_no {:?} must be 8 to 20 letters and digits",
            req.order_no
        ));
    }
    if req.channel.is_empty() || !req.channel.chars().all(is_id_char) {
        return invalid(format!("channel {:?} is not a channel name", req.channel));
    }
    if req.amount == 0 {
        return invalid("amount must be at least 1 fen".into());
    }
    if req.client_ip.parse::<Ipv4Addr>().is_err() {
        return invalid(format!(
            "client_ip {:?} is not an IPv4 address",
            req.client_ip
        ));
    }
    let chars = |s: &str| s.chars().count();
    if req.subject.is_empty() || chars(&req.subject) > 32 {
        return invalid(format!(
            "subject must be 1 to 32 characters, not {}",
            chars(&req.subject)
        ));
    }
    if req.body.is_empty() || chars(&req.body) > 128 {
        return invalid(format!(
            "body must be 1 to 128 characters, not {}",
            chars(&req.body)
        ));
    }
    if let Some(description) = &req.description {
        if chars(description) > 255 {
            return invalid("description must be at most 255 characters".into());
        }
    }
    for (name, value) in [("extra", &req.extra), ("metadata", &req.metadata)] {
        if value.as_ref().is_some_and(|v| !v.is_object()) {
            return invalid(format!("{name} must be a JSON object"));
        }
    }
    if req.time_expire.is_some_and(|t| t <= 0) {
        return invalid("time_expire must be a Unix time".into());
    }
    Ok(())
}

/// Ping++'s limits on a recharge object (the charge part is checked as a charge).
pub(super) fn validate_recharge(req: &RechargeObjectRequest) -> Result<(), PingppError> {
    let invalid = |m: String| Err(PingppError::InvalidInput(m));
    validate_charge(&req.charge)?;
    if req.user.is_empty() || req.user.chars().count() > 64 {
        return invalid("user must be 1 to 64 characters".into());
    }
    if req.user_fee.is_some() && req.balance_bonus.is_some() {
        return invalid("user_fee and balance_bonus cannot be sent together".into());
    }
    if req.user_fee.is_some_and(|fee| fee > req.charge.amount) {
        return invalid("user_fee must not exceed charge[amount]".into());
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 255)
    {
        return invalid("description must be at most 255 characters".into());
    }
    if req.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return invalid("metadata must be a JSON object".into());
    }
    Ok(())
}

/// What Ping++ asks of a withdrawal request.
pub(super) fn validate_withdrawal(req: &WithdrawalRequest) -> Result<(), PingppError> {
    let invalid = |m: String| Err(PingppError::InvalidInput(m));
    let n = req.order_no.len();
    if !(8..=20).contains(&n) || !req.order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid(format!(
            "order_no {:?} must be 8 to 20 letters and digits",
            req.order_no
        ));
    }
    if req.user.is_empty() || req.user.chars().count() > 64 {
        return invalid("user must be 1 to 64 characters".into());
    }
    if req.channel.is_empty() || !req.channel.chars().all(is_id_char) {
        return invalid(format!("channel {:?} is not a channel name", req.channel));
    }
    if req.amount == 0 {
        return invalid("amount must be at least 1 fen".into());
    }
    if req.return_url.is_empty() {
        return invalid("extra[return_url] is required".into());
    }
    Ok(())
}

/// The body of `POST /v1/charges`: the charge for app `app_id`, in CNY, with the optional
/// fields only when set.
pub(super) fn charge_body(req: &ChargeRequest, app_id: &str) -> Value {
    let mut body = json!({
        "order_no": req.order_no,
        "app": { "id": app_id },
        "channel": req.channel,
        "amount": req.amount,
        "client_ip": req.client_ip,
        "currency": "cny",
        "subject": req.subject,
        "body": req.body,
    });
    let optional = [
        ("extra", req.extra.clone()),
        ("time_expire", req.time_expire.map(Value::from)),
        ("metadata", req.metadata.clone()),
        ("description", req.description.clone().map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    body
}

/// The body of `POST /v1/apps/{app}/recharges` (the app is in the path, not in `charge`).
pub(super) fn recharge_body(req: &RechargeObjectRequest) -> Value {
    let c = &req.charge;
    let mut charge = json!({
        "amount": c.amount,
        "channel": c.channel,
        "order_no": c.order_no,
        "subject": c.subject,
        "body": c.body,
        "client_ip": c.client_ip,
    });
    if let Some(extra) = &c.extra {
        charge["extra"] = extra.clone();
    }
    if let Some(time_expire) = c.time_expire {
        charge["time_expire"] = json!(time_expire);
    }
    let mut body = json!({ "user": req.user, "charge": charge });
    if let Some(fee) = req.user_fee {
        body["user_fee"] = json!(fee);
    }
    if let Some(bonus) = req.balance_bonus {
        body["balance_bonus"] = json!({ "amount": bonus });
    }
    if let Some(description) = &req.description {
        body["description"] = json!(description);
    }
    if let Some(metadata) = &req.metadata {
        body["metadata"] = metadata.clone();
    }
    body
}

/// The body of `POST /v1/apps/{app}/withdrawals`.
pub(super) fn withdrawal_body(req: &WithdrawalRequest) -> Value {
    json!({
        "user": req.user,
        "channel": req.channel,
        "amount": req.amount,
        "order_no": req.order_no,
        "extra": { "return_url": req.return_url },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge() -> ChargeRequest {
        ChargeRequest {
            order_no: "a0000000000000000008".into(),
            channel: "alipay".into(),
            amount: 500,
            client_ip: "127.0.0.1".into(),
            subject: "余额充值".into(),
            body: "账户余额充值".into(),
            extra: None,
            time_expire: None,
            metadata: None,
            description: None,
        }
    }

    #[test]
    fn charge_limits() {
        assert!(validate_charge(&charge()).is_ok());
        let bad: Vec<fn(&mut ChargeRequest)> = vec![
            |c| c.order_no = "1234567".into(),
            |c| c.order_no = "123456789012345678901".into(),
            |c| c.order_no = "1234-5678".into(),
            |c| c.amount = 0,
            |c| c.client_ip = "::1".into(),
            |c| c.subject = "字".repeat(33),
            |c| c.subject = String::new(),
            |c| c.body = "b".repeat(129),
            |c| c.channel = "ali pay".into(),
            |c| c.extra = Some(json!([1])),
            |c| c.metadata = Some(json!("x")),
            |c| c.description = Some("d".repeat(256)),
        ];
        for change in bad {
            let mut c = charge();
            change(&mut c);
            assert!(
                matches!(validate_charge(&c), Err(PingppError::InvalidInput(_))),
                "{c:?}"
            );
        }
        // Limits count characters, not bytes.
        let mut c = charge();
        c.subject = "字".repeat(32);
        c.body = "字".repeat(128);
        assert!(validate_charge(&c).is_ok());
    }
}
