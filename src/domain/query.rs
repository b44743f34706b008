//! The read commands' parameters: `orders.list`, `orders.get`, `cashes.list`, `charges.list`,
//! `charges.get`, `wallet.changes`, `wallet.proof`, and the order a `recharge.retrieve` names.

use serde_json::{Map, Value};

use super::history::is_date;
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{int_field, text_field, IntField, TextField};

pub const DEFAULT_LIMIT: i64 = 15;
pub const MAX_LIMIT: i64 = 100;

pub const MSG_BAD_DATA: &str = "发送的数据错误";
pub const MSG_ORDER_REQUIRED: &str = "请选择订单";
pub const MSG_UNKNOWN_ORDER: &str = "订单不存在";
pub const MSG_SINCE_REQUIRED: &str = "请填写起始版本";
pub const MSG_DAY_REQUIRED: &str = "请填写日期";
pub const MSG_ROOT_NOT_FOUND: &str = "该日期的账本根尚未记录";
pub const MSG_WALLET_NOT_IN_ROOT: &str = "该日期的账本根不含此钱包";

/// `wallet.changes` answers this many changes unless `limit` says otherwise.
pub const DEFAULT_CHANGES_LIMIT: i64 = 20;

/// `action` of `orders.list` and `charges.list`: which side of the wallet.
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

    /// The charge records' `action` it selects (1 增加, 2 减少).
    pub fn charge_action(self) -> i16 {
        match self {
            Action::Income => 1,
            Action::Expenses => 2,
        }
    }
}

/// How a list spells its `action` filter, if it has one: the newer wallet API's words
/// (`income`, `expenses`), or the older one's numbers (0 支出, 1 收入).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionFilter {
    None,
    Words,
    Numbers,
}

/// A page, newest first: at most `limit` rows with an id below `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub after: Option<i64>,
    pub action: Option<Action>,
}

fn page(data: &Map<String, Value>, filter: ActionFilter) -> Result<Page, Rejection> {
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
    let action = match filter {
        ActionFilter::None => Ok(None),
        ActionFilter::Words => match text_field(data, "action") {
            TextField::Missing => Ok(None),
            TextField::Value(a) if a == "income" => Ok(Some(Action::Income)),
            TextField::Value(a) if a == "expenses" => Ok(Some(Action::Expenses)),
            _ => Err(()),
        },
        ActionFilter::Numbers => match int_field(data, "action") {
            IntField::Missing => Ok(None),
            IntField::Value(0) => Ok(Some(Action::Expenses)),
            IntField::Value(1) => Ok(Some(Action::Income)),
            _ => Err(()),
        },
    }
    .unwrap_or_else(|()| {
        errors.add(Code::InvalidAction, "action", MSG_BAD_DATA);
        None
    });
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
    page(data, ActionFilter::Words)
}

pub fn cashes_page(data: &Map<String, Value>) -> Result<Page, Rejection> {
    page(data, ActionFilter::None)
}

/// `charges.list`: `action` as the older wallet API numbers it, 0 expense, 1 income.
pub fn charges_page(data: &Map<String, Value>) -> Result<Page, Rejection> {
    page(data, ActionFilter::Numbers)
}

/// `wallet.changes`: the changes of the wallet after version `since`, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesPage {
    pub since: i64,
    pub limit: i64,
    pub unit: ChangesUnit,
}

/// Whose versions `wallet.changes` pages through: the wallet's (`fen`, the default) or the
/// points account's (`point`), the two accounts `wallet.changed` is published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangesUnit {
    #[default]
    Fen,
    Point,
}

impl ChangesUnit {
    /// The kind of the user's account with this unit (migrations/0001, 0016).
    pub fn account_kind(self) -> &'static str {
        match self {
            ChangesUnit::Fen => "wallet",
            ChangesUnit::Point => "points",
        }
    }
}

/// `since` is required (a consumer always knows the last version it saw, 0 for none): a
/// missing one would otherwise read as "from the beginning", which a consumer that lost its
/// place should ask for by name. `limit` is read as the lists read it.
pub fn changes_page(data: &Map<String, Value>) -> Result<ChangesPage, Rejection> {
    let mut errors = FieldErrors::default();
    let since = match int_field(data, "since") {
        IntField::Missing => {
            errors.add(Code::SinceRequired, "since", MSG_SINCE_REQUIRED);
            0
        }
        IntField::Value(v) if v >= 0 => v,
        _ => {
            errors.add(Code::InvalidSince, "since", MSG_BAD_DATA);
            0
        }
    };
    let limit = match int_field(data, "limit") {
        IntField::Missing => DEFAULT_CHANGES_LIMIT,
        IntField::Value(v) if v >= 1 => v.min(MAX_LIMIT),
        IntField::Overflow if is_positive(data.get("limit")) => MAX_LIMIT,
        _ => {
            errors.add(Code::InvalidLimit, "limit", MSG_BAD_DATA);
            DEFAULT_CHANGES_LIMIT
        }
    };
    let unit = match data.get("unit") {
        None | Some(Value::Null) => ChangesUnit::Fen,
        Some(Value::String(unit)) if unit == "fen" => ChangesUnit::Fen,
        Some(Value::String(unit)) if unit == "point" => ChangesUnit::Point,
        Some(_) => {
            errors.add(Code::InvalidUnit, "unit", MSG_BAD_DATA);
            ChangesUnit::Fen
        }
    };
    errors.finish(|| ChangesPage { since, limit, unit })
}

/// `wallet.proof`'s `day`: a calendar date `YYYY-MM-DD` (UTC), returned as written.
pub fn proof_day(data: &Map<String, Value>) -> Result<String, Rejection> {
    match data.get("day") {
        None | Some(Value::Null) => {
            Err(Rejection::field(Code::DayRequired, "day", MSG_DAY_REQUIRED))
        }
        Some(Value::String(day)) if is_date(day.as_bytes()) => Ok(day.clone()),
        Some(_) => Err(Rejection::field(Code::InvalidDay, "day", MSG_BAD_DATA)),
    }
}

pub fn root_not_found() -> Rejection {
    Rejection::field(Code::RootNotFound, "day", MSG_ROOT_NOT_FOUND)
}

pub fn wallet_not_in_root() -> Rejection {
    Rejection::field(Code::WalletNotInRoot, "day", MSG_WALLET_NOT_IN_ROOT)
}

/// The `order` field: a positive order id.
pub fn order_id(data: &Map<String, Value>) -> Result<i64, Rejection> {
    positive_id(data, "order")
}

/// The `charge` field of `charges.get`: a charge record's id, which is its order's id, so it
/// is read and refused as an order id is.
pub fn charge_id(data: &Map<String, Value>) -> Result<i64, Rejection> {
    positive_id(data, "charge")
}

fn positive_id(data: &Map<String, Value>, field: &str) -> Result<i64, Rejection> {
    match int_field(data, field) {
        IntField::Missing => Err(Rejection::field(
            Code::OrderRequired,
            field,
            MSG_ORDER_REQUIRED,
        )),
        IntField::Value(v) if v > 0 => Ok(v),
        _ => Err(Rejection::field(Code::InvalidOrder, field, MSG_BAD_DATA)),
    }
}

/// An order that does not exist or is not the caller's: the same answer, so ids can't be probed.
pub fn unknown_order() -> Rejection {
    Rejection::field(Code::UnknownOrder, "order", MSG_UNKNOWN_ORDER)
}

/// A charge record that does not exist or is not the caller's: an unknown order's answer,
/// under the field that named it.
pub fn unknown_charge() -> Rejection {
    Rejection::field(Code::UnknownOrder, "charge", MSG_UNKNOWN_ORDER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<Page, Rejection> {
        orders_page(v.as_object().unwrap())
    }

    #[test]
    fn proof_days() {
        let day = |v: Value| proof_day(json!({ "day": v }).as_object().unwrap());
        assert_eq!(day(json!("2026-12-01")).unwrap(), "2026-12-01");
        assert_eq!(day(json!("2024-02-29")).unwrap(), "2024-02-29");
        for bad in [
            json!("2026-02-29"),
            json!("2026-13-01"),
            json!("2026-12-00"),
            json!("2026-1-01"),
            json!("2026-12-01T00:00:00"),
            json!("0000-01-01"),
            json!("+026-01-01"),
            json!("２０２６-01-01"),
            json!(20261201),
        ] {
            assert_eq!(
                day(bad.clone()).unwrap_err().code,
                Code::InvalidDay,
                "{bad}"
            );
        }
        let missing = proof_day(json!({}).as_object().unwrap()).unwrap_err();
        assert_eq!(missing.code, Code::DayRequired);
        assert_eq!(missing.errors["day"], [MSG_DAY_REQUIRED]);
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
    fn charge_pages_take_the_older_apis_numbered_action() {
        let c = |v: Value| charges_page(v.as_object().unwrap());
        assert_eq!(
            c(json!({})).unwrap(),
            Page {
                limit: 15,
                after: None,
                action: None
            }
        );
        let q = c(json!({"limit": 500, "after": 9, "action": 0})).unwrap();
        assert_eq!(
            (q.limit, q.after, q.action),
            (100, Some(9), Some(Action::Expenses))
        );
        assert_eq!(
            c(json!({"action": 1})).unwrap().action,
            Some(Action::Income)
        );
        assert_eq!(c(json!({"action": null})).unwrap().action, None);
        for bad in [
            json!(2),
            json!(-1),
            json!("1"),
            json!("income"),
            json!(1.5),
            json!(true),
        ] {
            let refused = c(json!({ "action": bad })).unwrap_err();
            assert_eq!(refused.code, Code::InvalidAction, "{bad}");
            assert_eq!(refused.errors["action"], [MSG_BAD_DATA]);
        }
        // The words of orders.list are not numbers, nor the other way round.
        assert_eq!(
            p(json!({"action": 1})).unwrap_err().code,
            Code::InvalidAction
        );
        let both = c(json!({"limit": 0, "after": -2, "action": 3})).unwrap_err();
        assert_eq!(
            both.errors.keys().collect::<Vec<_>>(),
            ["action", "after", "limit"]
        );
        assert_eq!(Action::Income.charge_action(), 1);
        assert_eq!(Action::Expenses.charge_action(), 2);
    }

    #[test]
    fn charge_ids_are_read_as_order_ids_under_their_own_field() {
        let id = |v: Value| charge_id(v.as_object().unwrap());
        assert_eq!(id(json!({"charge": 4})).unwrap(), 4);
        let missing = id(json!({"order": 4})).unwrap_err();
        assert_eq!(missing.code, Code::OrderRequired);
        assert_eq!(missing.errors["charge"], [MSG_ORDER_REQUIRED]);
        for bad in [json!(0), json!(-3), json!("4"), json!(u64::MAX)] {
            let refused = id(json!({ "charge": bad })).unwrap_err();
            assert_eq!(refused.code, Code::InvalidOrder, "{bad}");
            assert_eq!(refused.errors["charge"], [MSG_BAD_DATA]);
        }
        let unknown = unknown_charge();
        assert_eq!(unknown.code, unknown_order().code);
        assert_eq!(unknown.errors["charge"], [MSG_UNKNOWN_ORDER]);
    }

    #[test]
    fn changes_pages_need_a_version_to_start_after() {
        let c = |v: Value| changes_page(v.as_object().unwrap());
        assert_eq!(
            c(json!({"since": 0})).unwrap(),
            ChangesPage {
                since: 0,
                limit: 20,
                unit: ChangesUnit::Fen,
            }
        );
        assert_eq!(
            c(json!({"since": 7, "limit": 500})).unwrap(),
            ChangesPage {
                since: 7,
                limit: 100,
                unit: ChangesUnit::Fen,
            }
        );
        assert_eq!(
            c(json!({"since": 7, "unit": "point"})).unwrap().unit,
            ChangesUnit::Point
        );
        assert_eq!(
            c(json!({"since": 7, "unit": "fen"})).unwrap().unit,
            ChangesUnit::Fen
        );
        for bad in [
            json!("yuan"),
            json!("FEN"),
            json!(1),
            json!(["fen"]),
            json!(""),
        ] {
            let refused = c(json!({ "since": 7, "unit": bad })).unwrap_err();
            assert_eq!(refused.code, Code::InvalidUnit, "{bad}");
            assert_eq!(refused.errors["unit"], [MSG_BAD_DATA]);
        }
        assert_eq!(c(json!({"since": 7, "limit": 1e30})).unwrap().limit, 100);
        let missing = c(json!({})).unwrap_err();
        assert_eq!(missing.code, Code::SinceRequired);
        assert_eq!(missing.errors["since"], [MSG_SINCE_REQUIRED]);
        assert_eq!(
            c(json!({"since": null})).unwrap_err().code,
            Code::SinceRequired
        );
        for bad in [
            json!(-1),
            json!("5"),
            json!(1.5),
            json!(true),
            json!(u64::MAX),
        ] {
            let refused = c(json!({ "since": bad })).unwrap_err();
            assert_eq!(refused.code, Code::InvalidSince, "{bad}");
            assert_eq!(refused.errors["since"], [MSG_BAD_DATA]);
        }
        for bad in [json!(0), json!(-1), json!("5"), json!(2.5), json!(-1e30)] {
            let refused = c(json!({ "since": 1, "limit": bad })).unwrap_err();
            assert_eq!(refused.code, Code::InvalidLimit, "{bad}");
            assert_eq!(refused.errors["limit"], [MSG_BAD_DATA]);
        }
        let both = c(json!({"since": -1, "limit": 0})).unwrap_err();
        assert_eq!(both.errors.keys().collect::<Vec<_>>(), ["limit", "since"]);
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
