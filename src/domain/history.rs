//! A wallet's history at a time: `wallet.get` with `at`, and `wallet.statement`.
//!
//! An entry's time is when it was posted, under its account's lock, so an account's entries
//! are in time order as they are in version order. "At T" means after every entry posted
//! before T: the balance at T is the balance after the last of them, and a statement from A
//! to B lists the entries posted at A or later and before B, between the balance at A and the
//! balance at B. Consecutive statements therefore meet without overlap or gap.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{text_field, TextField, MSG_BAD_DATA};

pub const MSG_TIME_REQUIRED: &str = "请填写时间";
pub const MSG_BAD_RANGE: &str = "结束时间须晚于开始时间";
pub const MSG_TOO_LONG: &str = "该时间段内的记录过多，请缩小时间范围";

/// Entries one statement lists at most: its result is stored under its id like every
/// command's, so it has to stay small. A longer period is asked for in parts.
pub const MAX_STATEMENT_ENTRIES: i64 = 1_000;

/// A time as the wallet API writes it, `YYYY-MM-DD HH:MM:SS`, in UTC. Checked here, so the
/// database is never handed one it would refuse (which would fail the batch's transaction).
/// Its text has a fixed width, so its order as text is its order in time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcTime(String);

impl UtcTime {
    pub fn parse(text: &str) -> Option<UtcTime> {
        let b = text.as_bytes();
        if b.len() != 19 || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (hour, minute, second) = (number(b, 11, 13)?, number(b, 14, 16)?, number(b, 17, 19)?);
        let valid = is_date(&b[..10]) && hour < 24 && minute < 60 && second < 60;
        valid.then(|| UtcTime(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A calendar date `YYYY-MM-DD` that exists (years 1 to 9999), in ASCII digits only: a
/// time's date, and `wallet.proof`'s day.
pub fn is_date(b: &[u8]) -> bool {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (number(b, 0, 4), number(b, 5, 7), number(b, 8, 10))
    else {
        return false;
    };
    year >= 1 && (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
}

/// The ASCII digits `b[from..to]` as a number; `None` if any is not a digit.
fn number(b: &[u8], from: usize, to: usize) -> Option<u32> {
    let digits = &b[from..to];
    digits
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// `wallet.get`'s `at`: `None` for the wallet as it is now.
pub fn wallet_at(data: &Map<String, Value>) -> Result<Option<UtcTime>, Rejection> {
    let mut errors = FieldErrors::default();
    let at = optional_time(&mut errors, data, "at");
    errors.finish(|| at)
}

/// `wallet.statement`'s period: from `from` (included) to `to` (not included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub from: UtcTime,
    pub to: UtcTime,
}

pub fn statement_period(data: &Map<String, Value>) -> Result<Period, Rejection> {
    let mut errors = FieldErrors::default();
    let mut required = |name: &str| match read_time(data, name) {
        Ok(Some(time)) => Some(time),
        Ok(None) => {
            errors.add(Code::TimeRequired, name, MSG_TIME_REQUIRED);
            None
        }
        Err(()) => {
            errors.add(Code::InvalidTime, name, MSG_BAD_DATA);
            None
        }
    };
    let from = required("from");
    let to = required("to");
    if let (Some(from), Some(to)) = (&from, &to) {
        if to.cmp(from) != Ordering::Greater {
            errors.add(Code::InvalidPeriod, "to", MSG_BAD_RANGE);
        }
    }
    errors.finish(|| Period {
        from: from.expect("no error, so `from` was read"),
        to: to.expect("no error, so `to` was read"),
    })
}

/// A statement whose period holds more than [`MAX_STATEMENT_ENTRIES`] entries.
pub fn statement_too_long() -> Rejection {
    Rejection::field(Code::StatementTooLong, "to", MSG_TOO_LONG)
}

fn optional_time(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    name: &str,
) -> Option<UtcTime> {
    read_time(data, name).unwrap_or_else(|()| {
        errors.add(Code::InvalidTime, name, MSG_BAD_DATA);
        None
    })
}

/// `Ok(None)` when the field is missing, `Err` when it is not such a time.
fn read_time(data: &Map<String, Value>, name: &str) -> Result<Option<UtcTime>, ()> {
    match text_field(data, name) {
        TextField::Missing => Ok(None),
        TextField::Value(text) => UtcTime::parse(&text).map(Some).ok_or(()),
        TextField::NotText => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_read_exactly_as_the_wallet_api_writes_them() {
        for good in [
            "2026-12-02 19:59:59",
            "2024-02-29 00:00:00",
            "2000-02-29 23:59:59",
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59",
        ] {
            assert_eq!(UtcTime::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "2026-12-02",
            "2026-12-02T19:59:59",
            "2026-12-02 19:59:59Z",
            "2026-12-02 19:59:5",
            "2026-13-01 00:00:00",
            "2026-00-01 00:00:00",
            "2026-04-31 00:00:00",
            "2025-02-29 00:00:00",
            "1900-02-29 00:00:00",
            "0000-01-01 00:00:00",
            "2026-12-02 24:00:00",
            "2026-12-02 23:60:00",
            "2026-12-02 23:59:60",
            "2026-12-0٢ 23:59:59",
            "+026-12-02 23:59:59",
            "2026-12-02 23:59:-1",
        ] {
            assert_eq!(UtcTime::parse(bad), None, "{bad:?}");
        }
        assert!(
            UtcTime::parse("2026-12-02 09:00:00").unwrap()
                < UtcTime::parse("2026-12-02 10:00:00").unwrap()
        );
    }

    #[test]
    fn wallet_get_takes_an_optional_time() {
        let at = |v: Value| wallet_at(v.as_object().unwrap());
        assert_eq!(at(json!({})).unwrap(), None);
        assert_eq!(at(json!({"at": null})).unwrap(), None);
        assert_eq!(
            at(json!({"at": "2026-12-01 00:00:00"}))
                .unwrap()
                .unwrap()
                .as_str(),
            "2026-12-01 00:00:00"
        );
        for bad in [json!("yesterday"), json!(1_764_547_200), json!(["x"])] {
            let refused = at(json!({ "at": bad })).unwrap_err();
            assert_eq!(refused.code, Code::InvalidTime, "{bad}");
            assert_eq!(refused.errors["at"], [MSG_BAD_DATA]);
        }
    }

    #[test]
    fn a_statement_needs_a_period_that_ends_after_it_starts() {
        let p = |v: Value| statement_period(v.as_object().unwrap());
        let period =
            p(json!({"from": "2026-12-01 00:00:00", "to": "2026-12-02 00:00:00"})).unwrap();
        assert_eq!(period.from.as_str(), "2026-12-01 00:00:00");
        assert_eq!(period.to.as_str(), "2026-12-02 00:00:00");
        let missing = p(json!({})).unwrap_err();
        assert_eq!(missing.code, Code::TimeRequired);
        assert_eq!(missing.errors["from"], [MSG_TIME_REQUIRED]);
        assert_eq!(missing.errors["to"], [MSG_TIME_REQUIRED]);
        let bad = p(json!({"from": "2026-12-01", "to": "2026-12-02 00:00:00"})).unwrap_err();
        assert_eq!(bad.code, Code::InvalidTime);
        assert_eq!(bad.errors.keys().collect::<Vec<_>>(), ["from"]);
        for (from, to) in [
            ("2026-12-02 00:00:00", "2026-12-02 00:00:00"),
            ("2026-12-02 00:00:01", "2026-12-02 00:00:00"),
        ] {
            let refused = p(json!({"from": from, "to": to})).unwrap_err();
            assert_eq!(refused.code, Code::InvalidPeriod);
            assert_eq!(refused.errors["to"], [MSG_BAD_RANGE]);
        }
    }
}
