//! Whether what Ping++ answered (with a 2xx) is what was asked for: an object of the expected
//! type, with an id (the one asked for, when there was one) and the fields we go on to read.
//! Anything else is a [`PingppError::Protocol`], never taken for a success.

use serde_json::Value;

use super::merchant_requests::MerchantKind;
use crate::pingpp::error::PingppError;

/// A 2xx answer that should be a withdrawal (with `expected_id`, when we asked for one).
pub(super) fn check_withdrawal(
    withdrawal: Value,
    expected_id: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(withdrawal, "withdrawal", "a withdrawal", expected_id, |w| {
        w.get("status").and_then(Value::as_str).is_some()
    })
}

/// A 2xx answer that should be a recharge object carrying its charge.
pub(super) fn check_recharge(
    recharge: Value,
    expected_id: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        recharge,
        "recharge",
        "a recharge with its charge",
        expected_id,
        |r| r.get("charge").is_some_and(is_charge),
    )
}

/// A 2xx answer that should be the Ping++ user `expected_id`.
pub(super) fn check_user(user: Value, expected_id: &str) -> Result<Value, PingppError> {
    check_object(user, "user", "a user", Some(expected_id), |_| true)
}

/// A 2xx answer that should be a personal account application with a status (and
/// `expected_order_no`, when we made it).
pub(super) fn check_cus_application(
    application: Value,
    expected_id: Option<&str>,
    expected_order_no: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        application,
        "cus_application",
        "a cus_application with a status and the order_no sent",
        expected_id,
        |a| {
            a.get("status").and_then(Value::as_str).is_some()
                && expected_order_no
                    .is_none_or(|o| a.get("order_no").and_then(Value::as_str) == Some(o))
        },
    )
}

/// A 2xx answer that should be a deposit with a status (with the order_no and amount sent,
/// when we made it).
pub(super) fn check_deposit(
    deposit: Value,
    expected_id: Option<&str>,
    expected: Option<(&str, u64)>,
) -> Result<Value, PingppError> {
    check_object(
        deposit,
        "deposit",
        "a deposit with a status and the order_no and amount sent",
        expected_id,
        |d| {
            d.get("status").and_then(Value::as_str).is_some()
                && expected.is_none_or(|(order_no, amount)| {
                    d.get("order_no").and_then(Value::as_str) == Some(order_no)
                        && d.get("amount").and_then(Value::as_u64) == Some(amount)
                })
        },
    )
}

/// A 2xx answer that should be a sub_app (with `expected_id`, when we asked for one) tied to
/// `expected_user`, when we made it. Ping++ may give the user expanded (an object) or as its id.
pub(super) fn check_sub_app(
    sub_app: Value,
    expected_id: Option<&str>,
    expected_user: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        sub_app,
        "sub_app",
        "a sub_app of the user sent",
        expected_id,
        |s| {
            let user = match s.get("user") {
                Some(Value::String(id)) => Some(id.as_str()),
                Some(user) => user.get("id").and_then(Value::as_str),
                None => None,
            };
            user.is_some() && expected_user.is_none_or(|e| user == Some(e))
        },
    )
}

/// A 2xx answer that should be a merchant application of `kind` with a status (and
/// `expected_order_no`, when we made it).
pub(super) fn check_merchant_application(
    application: Value,
    kind: MerchantKind,
    expected_id: Option<&str>,
    expected_order_no: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        application,
        kind.object(),
        &format!("a {} with a status and the order_no sent", kind.object()),
        expected_id,
        |a| {
            a.get("status").and_then(Value::as_str).is_some()
                && expected_order_no
                    .is_none_or(|o| a.get("order_no").and_then(Value::as_str) == Some(o))
        },
    )
}

/// A 2xx answer that should be a settle account with its (masked) recipient.
pub(super) fn check_settle_account(account: Value) -> Result<Value, PingppError> {
    check_object(
        account,
        "settle_account",
        "a settle_account with a recipient",
        None,
        |a| a.get("recipient").is_some_and(Value::is_object),
    )
}

/// `field` of `value` is the string `expected`, when there is one to compare with.
fn has(value: &Value, field: &str, expected: Option<&str>) -> bool {
    expected.is_none_or(|e| value.get(field).and_then(Value::as_str) == Some(e))
}

fn has_status(value: &Value) -> bool {
    value.get("status").and_then(Value::as_str).is_some()
}

/// A 2xx answer that should be an order with a status (with `expected_merchant_order_no`,
/// when we made it).
pub(super) fn check_order(
    order: Value,
    expected_id: Option<&str>,
    expected_merchant_order_no: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        order,
        "order",
        "an order with a status and the merchant_order_no sent",
        expected_id,
        |o| has_status(o) && has(o, "merchant_order_no", expected_merchant_order_no),
    )
}

/// A 2xx answer that should be a refund of an order with a status (of `expected_order`, and
/// with `expected_order_no` when we made it).
pub(super) fn check_order_refund(
    refund: Value,
    expected_id: Option<&str>,
    expected_order: &str,
    expected_order_no: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        refund,
        "order_refund",
        "an order_refund of the order with a status and the order_no sent",
        expected_id,
        |r| {
            has_status(r)
                && has(r, "order", Some(expected_order))
                && has(r, "order_no", expected_order_no)
        },
    )
}

/// A 2xx answer that should be a refund of `charge` with a status; when we made it, with our
/// mark in `metadata.refund_no`.
pub(super) fn check_charge_refund(
    refund: Value,
    expected_id: Option<&str>,
    charge: &str,
    expected_refund_no: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        refund,
        "refund",
        "a refund of the charge with a status and the refund_no sent",
        expected_id,
        |r| {
            has_status(r)
                && has(r, "charge", Some(charge))
                && expected_refund_no.is_none_or(|no| {
                    r.get("metadata")
                        .and_then(|m| m.get("refund_no"))
                        .and_then(Value::as_str)
                        == Some(no)
                })
        },
    )
}

/// A 2xx answer that should be a list of order refunds.
pub(super) fn check_order_refund_list(list: Value) -> Result<Value, PingppError> {
    let refunds = list.get("data").and_then(Value::as_array);
    let is_list = list.get("object").and_then(Value::as_str) == Some("list")
        && refunds.is_some_and(|data| {
            data.iter()
                .all(|r| r.get("object").and_then(Value::as_str) == Some("order_refund"))
        });
    if is_list {
        Ok(list)
    } else {
        Err(PingppError::Protocol(
            "expected a list of order_refunds".into(),
        ))
    }
}

/// A 2xx answer that should be an allocation object with a status; when we made it, of
/// `type` (`allocation` or `allocation_refund`, both are allocation objects) with the
/// order_no sent.
pub(super) fn check_allocation(
    allocation: Value,
    expected_id: Option<&str>,
    expected: Option<(&str, &str)>,
) -> Result<Value, PingppError> {
    let (kind, order_no) = expected.unzip();
    check_object(
        allocation,
        "allocation",
        "an allocation with a status, of the type and with the order_no sent",
        expected_id,
        |a| has_status(a) && has(a, "type", kind) && has(a, "order_no", order_no),
    )
}

/// A 2xx answer that should be an allocation_complete with a status (with
/// `expected_order_no`, when we made it).
pub(super) fn check_allocation_complete(
    complete: Value,
    expected_id: Option<&str>,
    expected_order_no: Option<&str>,
) -> Result<Value, PingppError> {
    check_object(
        complete,
        "allocation_complete",
        "an allocation_complete with a status and the order_no sent",
        expected_id,
        |c| has_status(c) && has(c, "order_no", expected_order_no),
    )
}

/// A 2xx answer that is not a Ping++ object but must carry the string `fields` (a card link,
/// an uploaded picture, a card's bank). The error names the fields, never the answer, which
/// may echo what was sent.
pub(super) fn check_strings(
    value: Value,
    what: &str,
    fields: &[&str],
) -> Result<Value, PingppError> {
    if fields
        .iter()
        .all(|f| value.get(f).and_then(Value::as_str).is_some())
    {
        Ok(value)
    } else {
        Err(PingppError::Protocol(format!(
            "expected {what} with the strings {}",
            fields.join(", ")
        )))
    }
}

/// A 2xx answer that should be a charge (with `expected_id`, when we asked for one).
pub(super) fn check_charge(charge: Value, expected_id: Option<&str>) -> Result<Value, PingppError> {
    check_object(charge, "charge", "a charge", expected_id, |_| true)
}

/// A charge object with an id (as a recharge object carries it).
fn is_charge(value: &Value) -> bool {
    value.get("object").and_then(Value::as_str) == Some("charge")
        && value
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty())
}

/// A 2xx answer that should be a Ping++ object of type `object` with a non-empty id (that id,
/// when we asked for one) and `complete`; `what` names it in the error.
fn check_object(
    value: Value,
    object: &str,
    what: &str,
    expected_id: Option<&str>,
    complete: impl Fn(&Value) -> bool,
) -> Result<Value, PingppError> {
    let id = value.get("id").and_then(Value::as_str);
    let is_object = value.get("object").and_then(Value::as_str) == Some(object);
    match id {
        Some(id)
            if is_object
                && !id.is_empty()
                && expected_id.is_none_or(|e| e == id)
                && complete(&value) =>
        {
            Ok(value)
        }
        _ => Err(PingppError::Protocol(format!(
            "expected {what}{}, got object {} with id {}",
            expected_id.map(|e| format!(" {e}")).unwrap_or_default(),
            value.get("object").unwrap_or(&Value::Null),
            value.get("id").unwrap_or(&Value::Null),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_charge_is_checked() {
        let ok = json!({"object": "charge", "id": "ch_1"});
        assert!(check_charge(ok.clone(), None).is_ok());
        assert!(check_charge(ok.clone(), Some("ch_1")).is_ok());
        for bad in [
            (ok.clone(), Some("ch_2")),
            (json!({"object": "refund", "id": "re_1"}), None),
            (json!({"object": "charge"}), None),
            (json!([]), None),
        ] {
            assert!(matches!(
                check_charge(bad.0, bad.1),
                Err(PingppError::Protocol(_))
            ));
        }
    }
}
