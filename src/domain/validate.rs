//! Reading the fields of a command's `data`, telling apart "missing", "not what it should be"
//! and "too big to hold", so each gets its own message and code.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntField {
    Missing,
    /// Present but not an integer (a string, a float, a boolean...).
    NotInteger,
    /// An integer outside what an i64 holds.
    Overflow,
    Value(i64),
}

/// `null` counts as missing, as Laravel's `required` rule treats it.
pub fn int_field(data: &Map<String, Value>, name: &str) -> IntField {
    match data.get(name) {
        None | Some(Value::Null) => IntField::Missing,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => IntField::Value(v),
            None if n.is_u64() => IntField::Overflow,
            // Floats: an integral float beyond i64 (1e30) is an overflow, any other float is not
            // an integer.
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() >= 9.2e18 => IntField::Overflow,
                _ => IntField::NotInteger,
            },
        },
        Some(_) => IntField::NotInteger,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextField {
    Missing,
    NotText,
    Value(String),
}

/// Empty or blank text counts as missing, as Laravel's `required` rule treats it.
pub fn text_field(data: &Map<String, Value>, name: &str) -> TextField {
    match data.get(name) {
        None | Some(Value::Null) => TextField::Missing,
        Some(Value::String(s)) if s.trim().is_empty() => TextField::Missing,
        Some(Value::String(s)) => TextField::Value(s.clone()),
        Some(_) => TextField::NotText,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn integers() {
        let d = data(
            json!({"a": 5, "b": "5", "c": 1.5, "d": 18446744073709551615u64, "e": null, "f": 1e30, "g": -3, "h": true}),
        );
        assert_eq!(int_field(&d, "a"), IntField::Value(5));
        assert_eq!(int_field(&d, "b"), IntField::NotInteger);
        assert_eq!(int_field(&d, "c"), IntField::NotInteger);
        assert_eq!(int_field(&d, "d"), IntField::Overflow);
        assert_eq!(int_field(&d, "e"), IntField::Missing);
        assert_eq!(int_field(&d, "f"), IntField::Overflow);
        assert_eq!(int_field(&d, "g"), IntField::Value(-3));
        assert_eq!(int_field(&d, "h"), IntField::NotInteger);
        assert_eq!(int_field(&d, "zz"), IntField::Missing);
    }

    #[test]
    fn text() {
        let d = data(json!({"a": "x", "b": "  ", "c": 3}));
        assert_eq!(text_field(&d, "a"), TextField::Value("x".into()));
        assert_eq!(text_field(&d, "b"), TextField::Missing);
        assert_eq!(text_field(&d, "c"), TextField::NotText);
        assert_eq!(text_field(&d, "d"), TextField::Missing);
    }
}
