//! Reading the fields of a command's `data`, telling apart "missing", "not what it should be"
//! and "too big to hold", so each gets its own message and code.

use serde_json::{Map, Value};

use super::outcome::{Code, FieldErrors, Rejection};

/// The wallet API's message for data that cannot be taken as sent.
pub const MSG_BAD_DATA: &str = "发送的数据错误";

/// PostgreSQL's text types cannot hold U+0000 (SQLSTATE 22021): a command whose `data` has it
/// anywhere (a value, or a key, at any depth) is refused before the database is asked, each
/// offending top-level field named (`data` for a key). Checked once for every command type.
pub fn unstorable_text(data: &Map<String, Value>) -> Option<Rejection> {
    let mut errors = FieldErrors::default();
    for (key, value) in data {
        if key.contains('\0') {
            errors.add(Code::InvalidText, "data", MSG_BAD_DATA);
        } else if holds_nul(value) {
            errors.add(Code::InvalidText, key, MSG_BAD_DATA);
        }
    }
    errors.finish(|| ()).err()
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

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

/// The messages of an amount field: when it is missing, and when it is below 1 fen. Anything
/// else wrong with it is [`MSG_BAD_DATA`].
pub struct AmountMessages {
    pub required: &'static str,
    pub too_small: &'static str,
}

/// A required amount of at least 1 fen; 0 after an error, which `errors` then holds.
pub fn amount(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    name: &str,
    messages: &AmountMessages,
) -> i64 {
    match int_field(data, name) {
        IntField::Missing => {
            errors.add(Code::AmountRequired, name, messages.required);
            0
        }
        IntField::NotInteger => {
            errors.add(Code::InvalidAmount, name, MSG_BAD_DATA);
            0
        }
        IntField::Overflow => {
            errors.add(Code::AmountOverflow, name, MSG_BAD_DATA);
            0
        }
        IntField::Value(v) if v < 1 => {
            errors.add(Code::AmountTooSmall, name, messages.too_small);
            0
        }
        IntField::Value(v) => v,
    }
}

/// A required positive id (of a hold, a red packet, a user); 0 after an error.
pub fn id(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    name: &str,
    codes: (Code, Code),
    required: &str,
) -> i64 {
    let (missing, invalid) = codes;
    match int_field(data, name) {
        IntField::Missing => {
            errors.add(missing, name, required);
            0
        }
        IntField::Value(v) if v > 0 => v,
        _ => {
            errors.add(invalid, name, MSG_BAD_DATA);
            0
        }
    }
}

/// A required text of at most `max_chars` characters; empty after an error.
pub fn text(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    name: &str,
    codes: (Code, Code),
    required: &str,
    max_chars: usize,
) -> String {
    let (missing, invalid) = codes;
    match text_field(data, name) {
        TextField::Missing => {
            errors.add(missing, name, required);
            String::new()
        }
        TextField::Value(text) if text.chars().count() <= max_chars => text,
        _ => {
            errors.add(invalid, name, MSG_BAD_DATA);
            String::new()
        }
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
    fn nul_characters_anywhere_are_refused_by_field() {
        assert_eq!(unstorable_text(&data(json!({"body": "ok", "n": 1}))), None);
        let refused = unstorable_text(&data(
            json!({"body": "a\u{0}b", "extra": {"k": ["x\u{0}"]}}),
        ))
        .unwrap();
        assert_eq!(refused.code, Code::InvalidText);
        assert_eq!(
            refused.errors.keys().collect::<Vec<_>>(),
            vec!["body", "extra"]
        );
        assert_eq!(refused.messages()[0], MSG_BAD_DATA);
        let key = unstorable_text(&data(json!({"a\u{0}": 1}))).unwrap();
        assert_eq!(key.errors.keys().collect::<Vec<_>>(), vec!["data"]);
        let nested_key = unstorable_text(&data(json!({"meta": {"\u{0}": 1}}))).unwrap();
        assert_eq!(nested_key.errors.keys().collect::<Vec<_>>(), vec!["meta"]);
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
