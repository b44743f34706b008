//! What we ask of Ping++'s account system for spending from an e-wallet: orders (a buyer pays
//! a sub-merchant), their refunds, and the allocation of an order's takings among users
//! (allocations, allocation refunds, the allocation's completion). The request types, the
//! shapes checked before sending, and the JSON bodies.
//!
//! Only shapes are checked: amounts, lengths, what goes into a path or must be unique. What
//! the money may do (a balance large enough, an amount still refundable) is Ping++'s to
//! decide. No message here quotes a value: errors end up in logs and command results.

use std::net::IpAddr;

#[cfg(doc)]
use super::PingppClient;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::requests::is_id_char;
use crate::pingpp::error::PingppError;

/// Most recipients (or senders) one allocation (or allocation refund) may name: the bound the
/// client keeps a request to, so a runaway list is never sent.
pub const MAX_ALLOCATION_SHARES: usize = 50;

/// An order to create (`POST /v1/orders`): `uid` pays `amount` fen to the sub-merchant
/// `receipt_app`, in CNY. Keyed by `merchant_order_no`: a retry with the same content is
/// answered with the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// 1 to 64 letters, digits and `_`, unique per order.
    pub merchant_order_no: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// The buyer's IPv4 or IPv6 address.
    pub client_ip: String,
    /// At most 32 characters.
    pub subject: String,
    /// At most 128 characters.
    pub body: String,
    /// The paying Ping++ user (an open e-wallet, to pay with `balance`).
    pub uid: String,
    /// The sub_app paid.
    pub receipt_app: String,
    /// Unix seconds; Ping++ takes 1 minute to 7 days after creation, 1 day by default.
    pub time_expire: Option<i64>,
    /// At most 255 characters.
    pub description: Option<String>,
    /// The takings stay with the order until allocated or the allocation is completed
    /// ([`PingppClient::create_allocation_complete`], which Ping++ then requires).
    pub allocation: bool,
    /// A JSON object stored with the order.
    pub metadata: Option<Value>,
}

/// Paying an order (`POST /v1/orders/{id}/pay`): a charge of what is still unpaid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPayRequest {
    /// `balance` (the buyer's e-wallet) or one of YeePay's channels.
    pub channel: String,
    /// Fen: what is left to pay of the order.
    pub charge_amount: u64,
    /// The channel's parameters (for `balance`, the page returned to), a JSON object.
    pub extra: Option<Value>,
    /// The charge's own order number, when the order's is used up at the channel.
    pub charge_order_no: Option<String>,
    /// Unix seconds after which the charge can no longer be paid.
    pub time_expire: Option<i64>,
}

/// A refund of a paid order (`POST /v1/orders/{id}/refunds`), keyed by `order_no`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRefundRequest {
    /// 1 to 64 letters, digits and `_`, unique per refund.
    pub order_no: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// The order's paid charge.
    pub charge: String,
    /// 1 to 255 characters (Ping++ requires one).
    pub description: String,
}

/// One user's part of an allocation (or of an allocation refund).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationShare {
    /// The Ping++ user (a person's e-wallet or a business user).
    pub user: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// At most 255 characters; sent only when set.
    pub description: Option<String>,
}

/// Allocating part of an allocation order's takings (`POST /v1/allocations`), keyed by
/// `order_no`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationRequest {
    /// The order's Ping++ id.
    pub order: String,
    /// 1 to 64 letters, digits and `_`, unique per allocation.
    pub order_no: String,
    /// 1 to [`MAX_ALLOCATION_SHARES`].
    pub recipients: Vec<AllocationShare>,
}

/// Taking back part of a succeeded allocation (`POST /v1/allocation_refunds`), keyed by
/// `order_no`: the money goes back to the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationRefundRequest {
    /// The order's Ping++ id.
    pub order: String,
    /// 1 to 64 letters, digits and `_`, unique per allocation refund.
    pub order_no: String,
    /// The allocation taken back from, sent as `extra[allocation]`.
    pub allocation: String,
    /// 1 to [`MAX_ALLOCATION_SHARES`].
    pub senders: Vec<AllocationShare>,
}

/// Ending an allocation order's allocation (`POST /v1/allocation_completes`): whatever it
/// still holds goes to the sub-merchant. Keyed by `order_no`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationCompleteRequest {
    /// The order's Ping++ id.
    pub order: String,
    /// 1 to 64 letters, digits and `_`, unique per completion.
    pub order_no: String,
    /// At most 255 characters.
    pub description: Option<String>,
}

fn invalid<T>(message: impl Into<String>) -> Result<T, PingppError> {
    Err(PingppError::InvalidInput(message.into()))
}

/// Ids and order numbers alike: 1 to 64 letters, digits and `_` (ids go into paths, where
/// anything else would need encoding). Named, never quoted.
pub(super) fn check_token(name: &str, value: &str) -> Result<(), PingppError> {
    if value.is_empty() || value.len() > 64 || !value.chars().all(is_id_char) {
        return invalid(format!("{name} must be 1 to 64 letters, digits and _"));
    }
    Ok(())
}

fn check_amount(name: &str, amount: u64) -> Result<(), PingppError> {
    if amount == 0 {
        return invalid(format!("{name} must be at least 1 fen"));
    }
    Ok(())
}

/// Counted in characters, as Ping++ counts them.
fn check_length(name: &str, value: &str, min: usize, max: usize) -> Result<(), PingppError> {
    let n = value.chars().count();
    if n < min || n > max {
        return invalid(format!("{name} must be {min} to {max} characters"));
    }
    Ok(())
}

fn check_description(description: Option<&str>) -> Result<(), PingppError> {
    description.map_or(Ok(()), |d| check_length("description", d, 0, 255))
}

fn check_object(name: &str, value: Option<&Value>) -> Result<(), PingppError> {
    if value.is_some_and(|v| !v.is_object()) {
        return invalid(format!("{name} must be a JSON object"));
    }
    Ok(())
}

fn check_time(name: &str, time: Option<i64>) -> Result<(), PingppError> {
    if time.is_some_and(|t| t <= 0) {
        return invalid(format!("{name} must be a Unix time"));
    }
    Ok(())
}

pub(super) fn validate_order(req: &OrderRequest) -> Result<(), PingppError> {
    check_token("merchant_order_no", &req.merchant_order_no)?;
    check_amount("amount", req.amount)?;
    if req.client_ip.parse::<IpAddr>().is_err() {
        return invalid("client_ip must be an IPv4 or IPv6 address");
    }
    check_length("subject", &req.subject, 1, 32)?;
    check_length("body", &req.body, 1, 128)?;
    check_token("uid", &req.uid)?;
    check_token("receipt_app", &req.receipt_app)?;
    check_time("time_expire", req.time_expire)?;
    check_description(req.description.as_deref())?;
    check_object("metadata", req.metadata.as_ref())
}

/// The body of `POST /v1/orders`: for app `app_id`, in CNY; the optional fields only when set.
pub(super) fn order_body(req: &OrderRequest, app_id: &str) -> Value {
    let mut body = json!({
        "app": app_id,
        "merchant_order_no": req.merchant_order_no,
        "amount": req.amount,
        "currency": "cny",
        "client_ip": req.client_ip,
        "subject": req.subject,
        "body": req.body,
        "uid": req.uid,
        "receipt_app": req.receipt_app,
        "allocation": req.allocation,
    });
    if let Some(time_expire) = req.time_expire {
        body["time_expire"] = json!(time_expire);
    }
    if let Some(description) = &req.description {
        body["description"] = json!(description);
    }
    if let Some(metadata) = &req.metadata {
        body["metadata"] = metadata.clone();
    }
    body
}

pub(super) fn validate_pay(req: &OrderPayRequest) -> Result<(), PingppError> {
    check_token("channel", &req.channel)?;
    check_amount("charge_amount", req.charge_amount)?;
    check_object("extra", req.extra.as_ref())?;
    if let Some(order_no) = &req.charge_order_no {
        check_token("charge_order_no", order_no)?;
    }
    check_time("time_expire", req.time_expire)
}

/// The body of `POST /v1/orders/{id}/pay`; the optional fields only when set.
pub(super) fn pay_body(req: &OrderPayRequest) -> Value {
    let mut body = json!({ "charge_amount": req.charge_amount, "channel": req.channel });
    if let Some(extra) = &req.extra {
        body["extra"] = extra.clone();
    }
    if let Some(order_no) = &req.charge_order_no {
        body["charge_order_no"] = json!(order_no);
    }
    if let Some(time_expire) = req.time_expire {
        body["time_expire"] = json!(time_expire);
    }
    body
}

pub(super) fn validate_order_refund(req: &OrderRefundRequest) -> Result<(), PingppError> {
    check_token("order_no", &req.order_no)?;
    check_amount("amount", req.amount)?;
    check_token("charge", &req.charge)?;
    check_length("description", &req.description, 1, 255)
}

/// The body of `POST /v1/orders/{id}/refunds`.
pub(super) fn order_refund_body(req: &OrderRefundRequest) -> Value {
    json!({
        "order_no": req.order_no,
        "amount": req.amount,
        "charge": req.charge,
        "description": req.description,
    })
}

/// `name` (recipients or senders): 1 to [`MAX_ALLOCATION_SHARES`] shares, each a user id, an
/// amount and a description that fits.
fn check_shares(name: &str, shares: &[AllocationShare]) -> Result<(), PingppError> {
    if shares.is_empty() || shares.len() > MAX_ALLOCATION_SHARES {
        return invalid(format!(
            "{name} must name 1 to {MAX_ALLOCATION_SHARES} users"
        ));
    }
    for share in shares {
        check_token(&format!("{name}[user]"), &share.user)?;
        check_amount(&format!("{name}[amount]"), share.amount)?;
        if let Some(d) = &share.description {
            check_length(&format!("{name}[description]"), d, 0, 255)?;
        }
    }
    Ok(())
}

/// The shares as sent: a description only when set, as in Ping++'s examples.
fn shares_body(shares: &[AllocationShare]) -> Value {
    let shares: Vec<Value> = shares
        .iter()
        .map(|s| {
            let mut share = json!({ "user": s.user, "amount": s.amount });
            if let Some(description) = &s.description {
                share["description"] = json!(description);
            }
            share
        })
        .collect();
    Value::Array(shares)
}

pub(super) fn validate_allocation(req: &AllocationRequest) -> Result<(), PingppError> {
    check_token("order", &req.order)?;
    check_token("order_no", &req.order_no)?;
    check_shares("recipients", &req.recipients)
}

/// The body of `POST /v1/allocations`.
pub(super) fn allocation_body(req: &AllocationRequest, app_id: &str) -> Value {
    json!({
        "app": app_id,
        "order": req.order,
        "order_no": req.order_no,
        "recipients": shares_body(&req.recipients),
    })
}

pub(super) fn validate_allocation_refund(req: &AllocationRefundRequest) -> Result<(), PingppError> {
    check_token("order", &req.order)?;
    check_token("order_no", &req.order_no)?;
    check_token("extra[allocation]", &req.allocation)?;
    check_shares("senders", &req.senders)
}

/// The body of `POST /v1/allocation_refunds`: the allocation taken back from in `extra`.
pub(super) fn allocation_refund_body(req: &AllocationRefundRequest, app_id: &str) -> Value {
    json!({
        "app": app_id,
        "order": req.order,
        "order_no": req.order_no,
        "senders": shares_body(&req.senders),
        "extra": { "allocation": req.allocation },
    })
}

pub(super) fn validate_allocation_complete(
    req: &AllocationCompleteRequest,
) -> Result<(), PingppError> {
    check_token("order", &req.order)?;
    check_token("order_no", &req.order_no)?;
    check_description(req.description.as_deref())
}

/// The body of `POST /v1/allocation_completes`; `description` only when set.
pub(super) fn allocation_complete_body(req: &AllocationCompleteRequest, app_id: &str) -> Value {
    let mut body = json!({ "app": app_id, "order_no": req.order_no, "order": req.order });
    if let Some(description) = &req.description {
        body["description"] = json!(description);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_as_in_ping_plus_plus_examples() {
        let share = |user: &str, description: Option<&str>| AllocationShare {
            user: user.into(),
            amount: 1,
            description: description.map(Into::into),
        };
        let allocation = AllocationRequest {
            order: "2012209203889561603".into(),
            order_no: "912111663682407".into(),
            recipients: vec![share("WHDR", None), share("cus_1", Some("佣金"))],
        };
        assert_eq!(
            allocation_body(&allocation, "app_1"),
            json!({
                "app": "app_1", "order": "2012209203889561603", "order_no": "912111663682407",
                "recipients": [
                    {"user": "WHDR", "amount": 1},
                    {"user": "cus_1", "amount": 1, "description": "佣金"},
                ],
            })
        );
        let refund = AllocationRefundRequest {
            order: "2012209203889561603".into(),
            order_no: "912111663683020".into(),
            allocation: "371220920423436564480003".into(),
            senders: vec![share("WHDR", None)],
        };
        assert_eq!(
            allocation_refund_body(&refund, "app_1"),
            json!({
                "app": "app_1", "order": "2012209203889561603", "order_no": "912111663683020",
                "senders": [{"user": "WHDR", "amount": 1}],
                "extra": {"allocation": "371220920423436564480003"},
            })
        );
        let pay = OrderPayRequest {
            channel: "balance".into(),
            charge_amount: 1,
            extra: Some(json!({"return_url": "https://www.pingxx.com"})),
            charge_order_no: None,
            time_expire: None,
        };
        assert_eq!(
            pay_body(&pay),
            json!({"charge_amount": 1, "channel": "balance", "extra": {"return_url": "https://www.pingxx.com"}})
        );
    }

    #[test]
    fn limits_count_characters_and_quote_nothing() {
        let order = OrderRequest {
            merchant_order_no: "912111663674639".into(),
            amount: 1,
            client_ip: "2001:db8::1".into(),
            subject: "旺".repeat(32),
            body: "旺".repeat(128),
            uid: "cus_003".into(),
            receipt_app: "app_aTyD009mv5mTj1yD".into(),
            time_expire: None,
            description: Some("d".repeat(255)),
            allocation: true,
            metadata: None,
        };
        assert!(validate_order(&order).is_ok());
        let mut long = order.clone();
        long.subject = "旺仔牛奶旺仔牛奶旺仔牛奶旺仔牛奶旺仔牛奶旺仔牛奶旺仔牛奶旺仔牛奶旺".into();
        let error = validate_order(&long).unwrap_err().to_string();
        assert!(!error.contains("旺"), "{error}");
    }
}
