//! The read commands' parameters: `orders.list`, `orders.get`, `cashes.list`, and the order a
//! `recharge.retrieve` names.

use serde_json::{Map, Value};

use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{int_field, text_field, IntField, TextField};

pub const DEFAULT_LIMIT: i64 = 15;
pub const MAX_LIMIT: i64 = 100;

pub const MSG_BAD_DATA: &str = "发送的数据错误";
pub const MSG_ORDER_REQUIRED: &str = "请选择订单";
pub const MSG_UNKNOWN_ORDER: &str = "订单不存在";

/// `action` of `orders.list`: which side of the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Income,
    Expenses,
}

impl Action {
    /// The orders' `type` it selects.
    pub fn direction(self) -> i16 {
        match self {
            Action::Income => 1,
            Action::Expenses => -1,
        }
    }
}

/// A page, newest first: at most `limit` rows with an id below `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub after: Option<i64>,
    pub action: Option<Action>,
}

fn page(data: &Map<String, Value>, with_action: bool) -> Result<Page, Rejection> {
    let mut errors = FieldErrors::default();
    let limit = match int_field(data, "limit") {
        IntField::Missing => DEFAULT_LIMIT,
        IntField::Value(v) if v >= 1 => v.min(MAX_LIMIT),
        // Too large for an i64 is clamped like any large limit; too negative is as invalid as -1.
        IntField::Overflow if is_positive(data.get("limit")) => MAX_LIMIT,
        _ => {
            errors.add(Code::InvalidLimit, "limit", MSG_BAD_DATA);
            DEFAULT_LIMIT
        }
    };
    let after = match int_field(data, "after") {
        IntField::Missing => None,
        IntField::Value(v) if v >= 1 => Some(v),
        _ => {
            errors.add(Code::InvalidAfter, "after", MSG_BAD_DATA);
            None
        }
    };
    let action = match (with_action, text_field(data, "action")) {
        (false, _) | (true, TextField::Missing) => None,
        (true, TextField::Value(a)) if a == "income" => Some(Action::Income),
        (true, TextField::Value(a)) if a == "expenses" => Some(Action::Expenses),
        (true, _) => {
            errors.add(Code::InvalidAction, "action", MSG_BAD_DATA);
            None
        }
    };
    errors.finish(|| Page {
        limit,
        after,
        action,
    })
}

/// Whether a number is above zero: which way one too large for an i64 overflows.
fn is_positive(value: Option<&Value>) -> bool {
    value.and_then(Value::as_f64).is_some_and(|f| f > 0.0)
}

pub fn orders_page(data: &Map<String, Value>) -> Result<Page, Rejection> {
    page(data, true)
}

pub fn cashes_page(data: &Map<String, Value>) -> Result<Page, Rejection> {
    page(data, false)
}

/// The `order` field: a positive order id.
pub fn order_id(data: &Map<String, Value>) -> Result<i64, Rejection> {
    match int_field(data, "order") {
        IntField::Missing => Err(Rejection::field(
            Code::OrderRequired,
            "order",
            MSG_ORDER_REQUIRED,
        )),
        IntField::Value(v) if v > 0 => Ok(v),
        _ => Err(Rejection::field(Code::InvalidOrder, "order", MSG_BAD_DATA)),
    }
}

/// An order that does not exist or is not the caller's: the same answer, so ids can't be probed.
pub fn unknown_order() -> Rejection {
    Rejection::field(Code::UnknownOrder, "order", MSG_UNKNOWN_ORDER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<Page, Rejection> {
        orders_page(v.as_object().unwrap())
    }

    #[test]
    fn pages() {
        assert_eq!(
            p(json!({})).unwrap(),
            Page {
                limit: 15,
                after: None,
                action: None
            }
        );
        let q = p(json!({"limit": 500, "after": 9, "action": "expenses"})).unwrap();
        assert_eq!(
            (q.limit, q.after, q.action),
            (100, Some(9), Some(Action::Expenses))
        );
        assert_eq!(p(json!({"limit": 0})).unwrap_err().code, Code::InvalidLimit);
        assert_eq!(p(json!({"limit": 1e30})).unwrap().limit, 100);
        assert_eq!(p(json!({"limit": u64::MAX})).unwrap().limit, 100);
        for negative in [json!(-1e30), json!(-9.3e18)] {
            assert_eq!(
                p(json!({ "limit": negative })).unwrap_err().code,
                Code::InvalidLimit
            );
        }
        assert_eq!(
            p(json!({"after": "x"})).unwrap_err().code,
            Code::InvalidAfter
        );
        assert_eq!(
            p(json!({"action": "all"})).unwrap_err().code,
            Code::InvalidAction
        );
        let c = cashes_page(json!({"action": "all"}).as_object().unwrap()).unwrap();
        assert_eq!(c.action, None);
    }

    #[test]
    fn order_ids() {
        let id = |v: Value| order_id(v.as_object().unwrap());
        assert_eq!(id(json!({"order": 4})).unwrap(), 4);
        assert_eq!(id(json!({})).unwrap_err().code, Code::OrderRequired);
        assert_eq!(
            id(json!({"order": 0})).unwrap_err().code,
            Code::InvalidOrder
        );
    }
}
