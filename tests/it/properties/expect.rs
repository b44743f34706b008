//! The properties' own reading of a command's data, and the journals they expect.

use serde_json::{Map, Value};

use pluspay::domain::ledger::{AccountRef, Journal, SystemAccount};

/// A field read as an integer: `Missing` for absent or null, `Int` for one an i64 holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum IntRead {
    Missing,
    Value(i64),
    /// An integer beyond i64, positive or negative (a u64, or an integral float as large).
    Huge {
        positive: bool,
    },
    Other,
}

pub(super) fn int(data: &Map<String, Value>, key: &str) -> IntRead {
    match data.get(key) {
        None | Some(Value::Null) => IntRead::Missing,
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(v), _, _) => IntRead::Value(v),
            (None, Some(_), _) => IntRead::Huge { positive: true },
            (None, None, Some(f)) if f.fract() == 0.0 && f.abs() >= 9.2e18 => {
                IntRead::Huge { positive: f > 0.0 }
            }
            _ => IntRead::Other,
        },
        Some(_) => IntRead::Other,
    }
}

impl IntRead {
    pub(super) fn at_least(self, min: i64) -> Option<i64> {
        match self {
            IntRead::Value(v) if v >= min => Some(v),
            _ => None,
        }
    }
}

/// A field read as text: `Missing` for absent, null or blank.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TextRead {
    Missing,
    Value(String),
    Other,
}

pub(super) fn text(data: &Map<String, Value>, key: &str) -> TextRead {
    match data.get(key) {
        None | Some(Value::Null) => TextRead::Missing,
        Some(Value::String(s)) if s.trim().is_empty() => TextRead::Missing,
        Some(Value::String(s)) => TextRead::Value(s.clone()),
        Some(_) => TextRead::Other,
    }
}

pub(super) fn short_text(t: &TextRead, max_chars: usize) -> Option<String> {
    match t {
        TextRead::Value(s) if s.chars().count() <= max_chars => Some(s.clone()),
        _ => None,
    }
}

/// The system accounts the expected journals move money through.
pub(super) const CLEARING: AccountRef = AccountRef::System(SystemAccount::PingppClearing);
pub(super) const PENDING: AccountRef = AccountRef::System(SystemAccount::PendingPayouts);
pub(super) const PAID_OUT: AccountRef = AccountRef::System(SystemAccount::PaidOut);
pub(super) const REVENUE: AccountRef = AccountRef::System(SystemAccount::TransformRevenue);
pub(super) const ISSUED: AccountRef = AccountRef::System(SystemAccount::PointsIssued);

pub(super) fn journal(movements: &[(AccountRef, i64)]) -> Journal {
    Journal::new(movements).expect("the expected movements balance")
}
