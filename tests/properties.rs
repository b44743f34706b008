//! Property tests of the pure domain (no database, no broker): the command decoder and its
//! fingerprint.
//!
//! Case counts are kept modest so that `cargo test --all-targets` stays quick; set
//! `PROPTEST_CASES` to run every property with more (`PROPTEST_CASES=20000 cargo test --release
//! --test properties`).

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};

use pluspay::domain::command::{decode, CommandType, Envelope, Malformed, MAX_MESSAGE_BYTES};

/// `default` cases, unless `PROPTEST_CASES` says otherwise.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // A failure's seed goes to tests/properties.proptest-regressions (commit it with the
        // fix: it is replayed first on every run).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators of JSON
// ---------------------------------------------------------------------------------------------

/// Words the rules look for, near misses of them, and awkward text.
const WORDS: &[&str] = &[
    "",
    " ",
    "\t\n",
    "\u{3000}",
    "alipay",
    "wechat",
    "bank",
    "wx",
    "wx_pub",
    "wx_wap",
    "alipay_wap",
    "alipay_pc_direct",
    "alipay_qr",
    "applepay_upacp",
    "income",
    "expenses",
    "all",
    "Income",
    "event",
    "charge",
    "refund",
    "charge.succeeded",
    "charge.failed",
    "summary.daily.available",
    "transfer",
    "reward",
    "cash",
    "cash.approve",
    "recharge.retrieve",
    "orders.list",
    "wallet.get",
    "Transfer",
    "transfer ",
    "wallet",
    "cny",
    "CNY",
    "usd",
    "127.0.0.1",
    "10.0.0.9",
    "256.0.0.1",
    "::1",
    "1.2.3",
    " 1.2.3.4",
    "https://plus.io/r",
    "http://x",
    "ftp://x",
    "https:/x",
    "1",
    "-1",
    "0",
    "100",
    "1e30",
    "true",
    "null",
    "{}",
    "é",
    "转账",
    "赞",
    "\u{0}",
    "\u{feff}",
    "\u{2028}",
    "😀",
    "a\u{301}",
    "ch_1",
    "a0000000000000000001",
    "evt_1",
];

/// The names of every field some rule reads.
const FIELDS: &[&str] = &[
    "id",
    "type",
    "user_id",
    "data",
    "amount",
    "user",
    "body",
    "value",
    "account",
    "cash",
    "remark",
    "extra",
    "success_url",
    "client_ip",
    "limit",
    "after",
    "action",
    "order",
    "object",
    "livemode",
    "paid",
    "currency",
    "order_no",
    "failure_code",
    "time_expire",
];

fn arb_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        3 => "[a-zA-Z0-9._:-]{0,16}",
        2 => any::<String>(),
        // Around MAX_ID_LEN, and around the 255-character limits (in characters, not bytes).
        1 => "[a-z]{120,136}",
        1 => "[a-z转账]{250,260}",
    ]
    .boxed()
}

fn edge_numbers() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(99),
        json!(100),
        json!(101),
        json!(128),
        json!(1_000_000),
        json!(1_000_001),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(i64::MAX as u64 + 1),
        json!(0.5),
        json!(1.0),
        json!(-0.0),
        json!(100.0),
        json!(1.5),
        json!(9.2e18),
        json!(9.3e18),
        json!(-9.3e18),
        json!(1e30),
        json!(-1e30),
        json!(1e300),
        json!(-1e300),
        json!(f64::MIN_POSITIVE),
    ]
}

fn arb_number() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (-3i64..2_000).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        2 => prop::sample::select(edge_numbers()),
    ]
    .boxed()
}

fn arb_key() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => arb_text(),
    ]
    .boxed()
}

/// Any JSON value: scalars of every kind, and arrays and objects up to four levels deep.
fn arb_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

fn arb_object() -> BoxedStrategy<Map<String, Value>> {
    prop::collection::vec((arb_key(), arb_json()), 0..6)
        .prop_map(|kv| kv.into_iter().collect())
        .boxed()
}

/// How to write a JSON value out: the key order of every object, whitespace, and string escapes.
/// Every style writes the same value; only the bytes differ.
#[derive(Debug, Clone, Copy)]
struct Style {
    rotate: usize,
    reverse: bool,
    pretty: bool,
    escape: bool,
}

const PLAIN: Style = Style {
    rotate: 0,
    reverse: false,
    pretty: false,
    escape: false,
};

fn arb_style() -> impl Strategy<Value = Style> {
    (0usize..8, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(rotate, reverse, pretty, escape)| Style {
            rotate,
            reverse,
            pretty,
            escape,
        },
    )
}

fn render(value: &Value, style: Style) -> String {
    let mut out = String::new();
    render_into(value, style, &mut out);
    out
}

fn render_into(value: &Value, style: Style, out: &mut String) {
    let ws = if style.pretty { " \n\t\r " } else { "" };
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            if style.reverse {
                entries.reverse();
            }
            if !entries.is_empty() {
                let by = style.rotate % entries.len();
                entries.rotate_left(by);
            }
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                render_str(key, style, out);
                out.push_str(ws);
                out.push(':');
                out.push_str(ws);
                render_into(value, style, out);
            }
            out.push_str(ws);
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                render_into(item, style, out);
            }
            out.push_str(ws);
            out.push(']');
        }
        Value::String(s) => render_str(s, style, out),
        other => out.push_str(&other.to_string()),
    }
}

fn render_str(s: &str, style: Style, out: &mut String) {
    if !style.escape {
        out.push_str(&Value::from(s).to_string());
        return;
    }
    // Every character but letters and digits as a \u escape (UTF-16, surrogate pairs and all).
    out.push('"');
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                write!(out, "\\u{unit:04X}").unwrap();
            }
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// 1. The command decoder
// ---------------------------------------------------------------------------------------------

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

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(Index),
    Insert(Index, u8),
    Replace(Index, u8),
}

impl Mutation {
    fn apply(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        match self {
            Mutation::None => {}
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Mutation::Replace(i, b) => {
                if !bytes.is_empty() {
                    let i = i.index(bytes.len());
                    bytes[i] = *b;
                }
            }
        }
        bytes
    }
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        9 => Just(Mutation::None),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
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

    /// The size limit is exact: a command padded up to it decodes, one byte more does not.
    #[test]
    fn decode_size_limit_is_exact(command in arb_command(), over in -3i64..=3) {
        let text = render(&Value::Object(command), PLAIN);
        let target = (MAX_MESSAGE_BYTES as i64 + over) as usize;
        let mut body = text.into_bytes();
        if body.len() > target {
            return Ok(());
        }
        body.resize(target, b' ');
        prop_assert_eq!(decode(&body).is_ok(), body.len() <= MAX_MESSAGE_BYTES);
    }
}
