//! The command decoder and its fingerprint.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

use pluspay::domain::command::{decode, CommandType, Envelope, Malformed, MAX_MESSAGE_BYTES};

use super::config;
use super::strategies::{
    arb_json, arb_key, arb_mutation, arb_number, arb_object, arb_style, render, PLAIN, WORDS,
};

/// A value as written in a message: JSON, or raw text that may not be JSON at all.
#[derive(Debug, Clone)]
enum Piece {
    Json(Value),
    Raw(&'static str),
}

const RAW: &[&str] = &[
    "1e400",
    "-1e400",
    "01",
    "1.",
    "-",
    "NaN",
    "Infinity",
    "+1",
    "0x10",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"a\\\"b\"",
    "\"transfer\\u0000\"",
    "123456789012345678901234567890",
    "-0",
    "1E2",
    "1.0",
    "tru",
    "\"",
    "{",
    "]",
    "",
    "[]",
    "{}",
    "null",
];

fn piece(valid: BoxedStrategy<Value>) -> BoxedStrategy<Piece> {
    prop_oneof![
        12 => valid.prop_map(Piece::Json),
        2 => arb_json().prop_map(Piece::Json),
        1 => prop::sample::select(RAW).prop_map(Piece::Raw),
    ]
    .boxed()
}

fn arb_id_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[A-Za-z0-9._:-]{1,128}".prop_map(Value::String),
        1 => "[A-Za-z0-9._:-]{127,140}".prop_map(Value::String),
        1 => Just(Value::String(String::new())),
        1 => "[A-Za-z0-9 /é转\\x00\\n]{1,10}".prop_map(Value::String),
    ]
    .boxed()
}

fn arb_type_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::sample::select(CommandType::ALL.to_vec()).prop_map(|t| Value::from(t.as_str())),
        1 => prop::sample::select(WORDS).prop_map(Value::from),
    ]
    .boxed()
}

fn arb_user_id_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (1i64..1_000).prop_map(Value::from),
        2 => arb_number(),
    ]
    .boxed()
}

fn arb_data_value() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => arb_object().prop_map(Value::Object),
        1 => Just(Value::Null),
    ]
    .boxed()
}

/// Messages close to commands: each field present or not, right or of any shape, in any order,
/// with unknown fields besides, sometimes cut or with a byte changed.
fn arb_near_command() -> impl Strategy<Value = Vec<u8>> {
    let field = |key: &'static str, valid: BoxedStrategy<Value>| {
        prop_oneof![
            1 => Just(None),
            12 => piece(valid).prop_map(move |p| Some((key.to_owned(), p))),
        ]
    };
    let fields = (
        field("id", arb_id_value()),
        field("type", arb_type_value()),
        field("user_id", arb_user_id_value()),
        field("data", arb_data_value()),
        prop::collection::vec((arb_key(), piece(arb_json())), 0..3),
    )
        .prop_map(|(id, kind, user, data, extra)| {
            [id, kind, user, data]
                .into_iter()
                .flatten()
                .chain(extra)
                .collect::<Vec<_>>()
        })
        .prop_shuffle();
    (fields, arb_mutation()).prop_map(|(fields, mutation)| {
        let mut text = String::from("{");
        for (i, (key, piece)) in fields.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&Value::from(key.as_str()).to_string());
            text.push(':');
            match piece {
                Piece::Json(v) => text.push_str(&v.to_string()),
                Piece::Raw(raw) => text.push_str(raw),
            }
        }
        text.push('}');
        mutation.apply(text.into_bytes())
    })
}

/// `data` nested `depth` objects deep: serde_json stops at 128 levels, without overflowing the
/// stack.
fn nested_command(depth: usize) -> Vec<u8> {
    let mut data = String::from("1");
    for _ in 0..depth {
        data = format!("{{\"a\":{data}}}");
    }
    format!(r#"{{"id":"deep","type":"transfer","user_id":1,"data":{{"x":{data}}}}}"#).into_bytes()
}

fn arb_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => arb_near_command(),
        2 => prop::collection::vec(any::<u8>(), 0..200),
        2 => arb_json().prop_map(|v| v.to_string().into_bytes()),
        1 => (0usize..200).prop_map(nested_command),
    ]
}

/// The contract's id, written out again rather than calling `valid_id`.
fn contract_id(id: &str) -> bool {
    let len = id.chars().count();
    (1..=128).contains(&len)
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

fn check_accepted(body: &[u8], envelope: &Envelope) -> Result<(), TestCaseError> {
    prop_assert!(contract_id(&envelope.id), "id {:?}", envelope.id);
    prop_assert!(CommandType::ALL.contains(&envelope.kind));
    prop_assert!(envelope.user_id > 0);
    // What was accepted is what the message says.
    let source: Value = serde_json::from_slice(body).expect("an accepted message is JSON");
    let object = source
        .as_object()
        .expect("an accepted message is an object");
    prop_assert_eq!(object.get("id"), Some(&Value::from(envelope.id.as_str())));
    prop_assert_eq!(
        object.get("type"),
        Some(&Value::from(envelope.kind.as_str()))
    );
    prop_assert_eq!(
        object.get("user_id").and_then(Value::as_i64),
        Some(envelope.user_id)
    );
    match object.get("data") {
        None | Some(Value::Null) => prop_assert!(envelope.data.is_empty()),
        Some(Value::Object(data)) => prop_assert_eq!(data, &envelope.data),
        Some(other) => prop_assert!(false, "accepted data {other}"),
    }
    // The same message decodes the same, with the same fingerprint.
    let again = decode(body).expect("the same message decodes again");
    prop_assert_eq!(&again, envelope);
    prop_assert_eq!(again.fingerprint(), envelope.fingerprint());
    Ok(())
}

fn check_refused(body: &[u8], malformed: &Malformed) -> Result<(), TestCaseError> {
    prop_assert!(!malformed.reason.is_empty());
    // What is kept for correlation is safe to echo: a contract id, a short type.
    if let Some(id) = &malformed.id {
        prop_assert!(contract_id(id), "kept id {:?}", id);
    }
    if let Some(kind) = &malformed.kind {
        prop_assert!(kind.len() <= 128);
    }
    if malformed.id.is_some() || malformed.kind.is_some() {
        let source: Value = serde_json::from_slice(body).expect("what was kept came from JSON");
        if let Some(id) = &malformed.id {
            prop_assert_eq!(source.get("id"), Some(&Value::from(id.as_str())));
        }
        if let Some(kind) = &malformed.kind {
            prop_assert_eq!(source.get("type"), Some(&Value::from(kind.as_str())));
        }
    }
    Ok(())
}

/// A valid command, as a value with every top-level field right.
fn arb_command() -> impl Strategy<Value = Map<String, Value>> {
    (
        "[A-Za-z0-9._:-]{1,128}",
        prop::sample::select(CommandType::ALL.to_vec()),
        prop_oneof![1i64..1_000, 1i64..=i64::MAX],
        arb_object(),
    )
        .prop_map(|(id, kind, user_id, data)| {
            let mut command = Map::new();
            command.insert("id".into(), Value::from(id));
            command.insert("type".into(), Value::from(kind.as_str()));
            command.insert("user_id".into(), Value::from(user_id));
            command.insert("data".into(), Value::Object(data));
            command
        })
}

/// A change to a command's content (`type`, `user_id` or `data`), which its fingerprint must
/// tell.
#[derive(Debug, Clone)]
enum Change {
    Kind(Index),
    UserId(i64),
    AddKey(String, Value),
    RemoveKey(Index),
    ReplaceValue(Index, Value),
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<Index>().prop_map(Change::Kind),
        prop_oneof![Just(-1i64), Just(1), 1..=i64::MAX].prop_map(Change::UserId),
        (arb_key(), arb_json()).prop_map(|(k, v)| Change::AddKey(k, v)),
        any::<Index>().prop_map(Change::RemoveKey),
        (any::<Index>(), arb_json()).prop_map(|(i, v)| Change::ReplaceValue(i, v)),
    ]
}

proptest! {
    #![proptest_config(config(1000))]

    /// Whatever the bytes, decoding answers; what it accepts keeps the contract, and what it
    /// refuses keeps only what is safe to echo.
    #[test]
    fn decode_never_panics_and_keeps_the_contract(body in arb_message()) {
        match decode(&body) {
            Ok(envelope) => check_accepted(&body, &envelope)?,
            Err(malformed) => check_refused(&body, &malformed)?,
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// The fingerprint is of the content in a canonical form: the same command written with its
    /// keys in any order, other whitespace or other string escapes has the same fingerprint, and
    /// so has the same command under another id (the id is what it is looked up by).
    #[test]
    fn fingerprint_survives_reserialization(
        command in arb_command(),
        style in arb_style(),
        other_id in "[A-Za-z0-9._:-]{1,128}",
    ) {
        let rewritten_text = render(&Value::Object(command.clone()), style);
        // (Room for a longer id; written plainly, it is no longer than rewritten.)
        prop_assume!(rewritten_text.len() + 1024 <= MAX_MESSAGE_BYTES);
        let plain = decode(render(&Value::Object(command.clone()), PLAIN).as_bytes())
            .expect("a valid command decodes");
        let rewritten = decode(rewritten_text.as_bytes()).expect("rewritten, it still decodes");
        prop_assert_eq!(&rewritten, &plain);
        prop_assert_eq!(rewritten.fingerprint(), plain.fingerprint());

        let mut renamed = command.clone();
        renamed.insert("id".into(), Value::from(other_id));
        let renamed = decode(render(&Value::Object(renamed), style).as_bytes()).unwrap();
        prop_assert_eq!(renamed.fingerprint(), plain.fingerprint());

        // An empty data is the same as none, or null.
        if plain.data.is_empty() {
            for data in [None, Some(Value::Null)] {
                let mut same = command.clone();
                same.remove("data");
                if let Some(data) = data {
                    same.insert("data".into(), data);
                }
                let same = decode(render(&Value::Object(same), style).as_bytes()).unwrap();
                prop_assert_eq!(same.fingerprint(), plain.fingerprint());
            }
        }
    }

    /// A command with other content (type, user, data) has another fingerprint.
    #[test]
    fn fingerprint_tells_other_content(command in arb_command(), change in arb_change()) {
        // Without the server's key a command carrying personal data is fingerprinted without
        // its data. The key is process-wide and set by the first worker to start; every test's
        // is the same, so setting it here first makes the outcome independent of test order.
        pluspay::domain::command::set_fingerprint_key(crate::custody::FINGERPRINT_KEY.as_bytes());
        let text = render(&Value::Object(command), PLAIN);
        prop_assume!(text.len() <= MAX_MESSAGE_BYTES);
        let original = decode(text.as_bytes()).unwrap();
        let mut changed = original.clone();
        match change {
            Change::Kind(i) => changed.kind = CommandType::ALL[i.index(CommandType::ALL.len())],
            Change::UserId(delta) => {
                changed.user_id = changed.user_id.checked_add(delta).filter(|&u| u > 0).unwrap_or(1)
            }
            Change::AddKey(key, value) => {
                changed.data.insert(key, value);
            }
            Change::RemoveKey(i) => {
                if !changed.data.is_empty() {
                    let key = changed.data.keys().nth(i.index(changed.data.len())).unwrap().clone();
                    changed.data.remove(&key);
                }
            }
            Change::ReplaceValue(i, value) => {
                if !changed.data.is_empty() {
                    let key = changed.data.keys().nth(i.index(changed.data.len())).unwrap().clone();
                    changed.data.insert(key, value);
                }
            }
        }
        let same_content = changed.kind == original.kind
            && changed.user_id == original.user_id
            && render(&Value::Object(changed.data.clone()), PLAIN)
                == render(&Value::Object(original.data.clone()), PLAIN);
        prop_assert_eq!(changed.fingerprint() == original.fingerprint(), same_content);
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// The size limit is exact: a command padded up to its type's limit decodes, one byte more
    /// does not.
    #[test]
    fn decode_size_limit_is_exact(command in arb_command(), over in -3i64..=3) {
        let limit = command
            .get("type")
            .and_then(Value::as_str)
            .and_then(CommandType::parse)
            .map_or(MAX_MESSAGE_BYTES, CommandType::max_message_bytes);
        let text = render(&Value::Object(command), PLAIN);
        let target = (limit as i64 + over) as usize;
        let mut body = text.into_bytes();
        if body.len() > target {
            return Ok(());
        }
        body.resize(target, b' ');
        prop_assert_eq!(decode(&body).is_ok(), body.len() <= limit);
    }
}
