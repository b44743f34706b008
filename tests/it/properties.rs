//! Property tests of the pure domain (no database, no broker): the command decoder and its
//! fingerprint, every parser of a command's `data`, the Ping++ charge and event rules, and the
//! ledger, whose every accepted command must conserve money.
//!
//! Case counts are kept modest so that `cargo test --all-targets` stays quick; set
//! `PROPTEST_CASES` to run every property with more (`PROPTEST_CASES=20000 cargo test --release
//! --test it properties::`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};

use pluspay::domain::cash::{self, Decision, DecisionEffect};
use pluspay::domain::command::{decode, CommandType, Envelope, Malformed, MAX_MESSAGE_BYTES};
use pluspay::domain::event::{self, EventAction};
use pluspay::domain::ledger::{AccountRef, Journal, SystemAccount, Unit, WALLET_CEILING};
use pluspay::domain::outcome::{Code, Rejection};
use pluspay::domain::policy::{WalletPolicy, CHANNELS_NEEDING_SUCCESS_URL};
use pluspay::domain::query::{self, Action};
use pluspay::domain::recharge::{self, ChargeState, Completion, WaitingRecharge};
use pluspay::domain::transfer::{self, TransferKind};
use pluspay::domain::transform;

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

// ---------------------------------------------------------------------------------------------
// 2. The parsers of each command's data
// ---------------------------------------------------------------------------------------------

const CHANNELS: [&str; 7] = [
    "applepay_upacp",
    "alipay",
    "alipay_wap",
    "alipay_pc_direct",
    "alipay_qr",
    "wx",
    "wx_wap",
];
const CASH_TYPES: [&str; 3] = ["alipay", "wechat", "bank"];

/// Any settings `WalletPolicy::check` allows.
fn arb_policy() -> impl Strategy<Value = WalletPolicy> {
    (
        prop_oneof![
            Just(CHANNELS.to_vec()),
            prop::sample::subsequence(CHANNELS.to_vec(), 0..=CHANNELS.len()),
        ],
        1i64..=200,
        0i64..=2_000_000,
        prop_oneof![4 => 1i64..=1_000, 1 => 1i64..=pluspay::domain::policy::MAX_RATIO],
        prop_oneof![
            Just(CASH_TYPES.to_vec()),
            prop::sample::subsequence(CASH_TYPES.to_vec(), 0..=CASH_TYPES.len()),
        ],
        1i64..=500,
        1i64..=500,
    )
        .prop_map(
            |(channels, recharge_min, span, ratio, cash_types, cash_min, transform_min)| {
                let policy = WalletPolicy {
                    recharge_types: channels.into_iter().map(String::from).collect(),
                    recharge_min,
                    recharge_max: recharge_min + span,
                    ratio,
                    cash_types: cash_types.into_iter().map(String::from).collect(),
                    cash_min,
                    transform_min,
                    ..WalletPolicy::default()
                };
                policy.check().expect("a policy the settings allow");
                policy
            },
        )
}

/// Values made for one kind of field: right, or nearly.
type Made = fn() -> BoxedStrategy<Value>;

fn made_amount() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (1i64..=100_000).prop_map(Value::from),
        1 => (1i64..=2_000_000).prop_map(Value::from),
        1 => arb_number(),
    ]
    .boxed()
}

fn made_id() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (1i64..=10).prop_map(Value::from),
        1 => arb_number(),
    ]
    .boxed()
}

fn made_text() -> BoxedStrategy<Value> {
    arb_text().prop_map(Value::from).boxed()
}

fn one_of(words: &[&'static str]) -> BoxedStrategy<Value> {
    let near = ["wx_pub", "", " ", "ALIPAY", "alipay "];
    prop_oneof![
        4 => prop::sample::select(words.to_vec()).prop_map(Value::from),
        1 => prop::sample::select(near.to_vec()).prop_map(Value::from),
    ]
    .boxed()
}

fn made_channel() -> BoxedStrategy<Value> {
    one_of(&CHANNELS)
}

fn made_cash_type() -> BoxedStrategy<Value> {
    one_of(&CASH_TYPES)
}

fn made_extra() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => Just(json!({"success_url": "https://plus.io/r"})),
        1 => Just(json!({"success_url": "http://plus.io/r", "other": 1})),
        1 => Just(json!({})),
        1 => Just(json!([])),
        1 => Just(json!([1])),
        1 => Just(json!({"success_url": "plus.io/r"})),
        1 => Just(json!({"success_url": 5})),
        1 => arb_object().prop_map(Value::Object),
    ]
    .boxed()
}

fn made_ip() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => any::<[u8; 4]>().prop_map(|ip| Value::from(Ipv4Addr::from(ip).to_string())),
        1 => arb_text().prop_map(Value::from),
    ]
    .boxed()
}

fn made_action() -> BoxedStrategy<Value> {
    one_of(&["income", "expenses", "all", "Income"])
}

/// A command's `data` with each of `fields` present (or not) and some unknown fields besides.
fn arb_data(fields: &'static [(&'static str, Made)]) -> BoxedStrategy<Map<String, Value>> {
    let values: Vec<_> = fields
        .iter()
        .map(|&(_, made)| {
            prop_oneof![
                1 => Just(None),
                1 => Just(Some(Value::Null)),
                12 => made().prop_map(Some),
                2 => arb_json().prop_map(Some),
            ]
        })
        .collect();
    (values, arb_object())
        .prop_map(move |(values, mut data)| {
            for (&(field, _), value) in fields.iter().zip(values) {
                match value {
                    Some(value) => data.insert(field.to_owned(), value),
                    None => data.remove(field),
                };
            }
            data
        })
        .boxed()
}

/// A field read as an integer: `Missing` for absent or null, `Int` for one an i64 holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum IntRead {
    Missing,
    Value(i64),
    /// An integer beyond i64, positive or negative (a u64, or an integral float as large).
    Huge {
        positive: bool,
    },
    Other,
}

fn int(data: &Map<String, Value>, key: &str) -> IntRead {
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
    fn at_least(self, min: i64) -> Option<i64> {
        match self {
            IntRead::Value(v) if v >= min => Some(v),
            _ => None,
        }
    }
}

/// A field read as text: `Missing` for absent, null or blank.
#[derive(Debug, Clone, PartialEq)]
enum TextRead {
    Missing,
    Value(String),
    Other,
}

fn text(data: &Map<String, Value>, key: &str) -> TextRead {
    match data.get(key) {
        None | Some(Value::Null) => TextRead::Missing,
        Some(Value::String(s)) if s.trim().is_empty() => TextRead::Missing,
        Some(Value::String(s)) => TextRead::Value(s.clone()),
        Some(_) => TextRead::Other,
    }
}

fn short_text(t: &TextRead, max_chars: usize) -> Option<String> {
    match t {
        TextRead::Value(s) if s.chars().count() <= max_chars => Some(s.clone()),
        _ => None,
    }
}

/// A rejection names a code among `codes`, exactly the `bad` fields, and a message for each.
fn check_rejection(
    rejection: &Rejection,
    codes: &[Code],
    bad: &BTreeSet<&str>,
) -> Result<(), TestCaseError> {
    prop_assert!(
        codes.contains(&rejection.code),
        "unexpected code {:?}",
        rejection.code
    );
    prop_assert!(!rejection.code.as_str().is_empty());
    let fields: BTreeSet<&str> = rejection.errors.keys().map(String::as_str).collect();
    prop_assert_eq!(&fields, bad);
    for messages in rejection.errors.values() {
        prop_assert!(!messages.is_empty());
        prop_assert!(messages.iter().all(|m| !m.trim().is_empty()));
    }
    prop_assert!(!rejection.messages().is_empty());
    Ok(())
}

fn bad_fields<'a>(checks: &[(&'a str, bool)]) -> BTreeSet<&'a str> {
    checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(field, _)| *field)
        .collect()
}

const TRANSFER_FIELDS: &[(&str, Made)] = &[
    ("amount", made_amount),
    ("user", made_id),
    ("body", made_text),
];
const CASH_FIELDS: &[(&str, Made)] = &[
    ("value", made_amount),
    ("type", made_cash_type),
    ("account", made_text),
];
const DECISION_FIELDS: &[(&str, Made)] = &[("cash", made_id), ("remark", made_text)];
const TRANSFORM_FIELDS: &[(&str, Made)] = &[("amount", made_amount)];
const RECHARGE_FIELDS: &[(&str, Made)] = &[
    ("type", made_channel),
    ("amount", made_amount),
    ("extra", made_extra),
    ("client_ip", made_ip),
];
const PAGE_FIELDS: &[(&str, Made)] = &[
    ("limit", arb_number),
    ("after", made_id),
    ("action", made_action),
];
const ORDER_FIELDS: &[(&str, Made)] = &[("order", made_id)];

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn transfer_parse(
        reward in any::<bool>(),
        from in 1i64..=10,
        data in arb_data(TRANSFER_FIELDS),
    ) {
        let kind = if reward { TransferKind::Reward } else { TransferKind::Transfer };
        let amount = int(&data, "amount").at_least(1);
        let user = int(&data, "user").at_least(1);
        let body = text(&data, "body");
        let body_ok = !reward || body == TextRead::Missing || short_text(&body, 255).is_some();
        let bad = bad_fields(&[
            ("amount", amount.is_some()),
            ("user", user.is_some_and(|u| u != from)),
            ("body", body_ok),
        ]);
        match transfer::parse(kind, from, &data) {
            Ok(request) => {
                prop_assert!(bad.is_empty(), "accepted with bad {:?}", bad);
                prop_assert_eq!(request.kind, kind);
                prop_assert_eq!(request.from, from);
                prop_assert_eq!(Some(request.amount), amount);
                prop_assert!(request.amount >= 1);
                prop_assert_eq!(Some(request.to), user);
                prop_assert_ne!(request.to, from);
                let expected_body = if reward { short_text(&body, 255) } else { None };
                prop_assert_eq!(request.body, expected_body);
            }
            Err(rejection) => check_rejection(
                &rejection,
                &[
                    Code::AmountRequired,
                    Code::InvalidAmount,
                    Code::AmountOverflow,
                    Code::AmountTooSmall,
                    Code::UserRequired,
                    Code::InvalidUser,
                    Code::SelfTransfer,
                    Code::InvalidBody,
                ],
                &bad,
            )?,
        }
    }

    #[test]
    fn cash_parse_request(
        user in 1i64..=10,
        data in arb_data(CASH_FIELDS),
        policy in arb_policy(),
    ) {
        let value = int(&data, "value").at_least(policy.cash_min.max(1));
        let kind = match text(&data, "type") {
            TextRead::Value(t) if policy.cash_types.contains(&t) => Some(t),
            _ => None,
        };
        let account = short_text(&text(&data, "account"), 255);
        let bad = bad_fields(&[
            ("value", value.is_some()),
            ("type", kind.is_some()),
            ("account", account.is_some()),
        ]);
        match cash::parse_request(user, &data, &policy) {
            Ok(request) => {
                prop_assert!(bad.is_empty(), "accepted with bad {:?}", bad);
                prop_assert_eq!(request.user, user);
                prop_assert_eq!(Some(request.value), value);
                prop_assert!(request.value >= 1 && request.value >= policy.cash_min);
                prop_assert_eq!(Some(request.kind), kind);
                prop_assert_eq!(Some(request.account), account);
            }
            Err(rejection) => check_rejection(
                &rejection,
                &[
                    Code::AmountRequired,
                    Code::InvalidAmount,
                    Code::AmountOverflow,
                    Code::AmountTooSmall,
                    Code::CashTypeRequired,
                    Code::UnsupportedCashType,
                    Code::AccountRequired,
                    Code::InvalidAccount,
                ],
                &bad,
            )?,
        }
    }

    #[test]
    fn cash_parse_decision(approve in any::<bool>(), data in arb_data(DECISION_FIELDS)) {
        let decision = if approve { Decision::Approve } else { Decision::Reject };
        let cash_id = int(&data, "cash").at_least(1);
        let remark = short_text(&text(&data, "remark"), 255);
        let bad = bad_fields(&[("cash", cash_id.is_some()), ("remark", remark.is_some())]);
        match cash::parse_decision(decision, &data) {
            Ok(request) => {
                prop_assert!(bad.is_empty(), "accepted with bad {:?}", bad);
                prop_assert_eq!(request.decision, decision);
                prop_assert_eq!(Some(request.cash_id), cash_id);
                prop_assert_eq!(Some(request.remark), remark);
            }
            Err(rejection) => check_rejection(
                &rejection,
                &[
                    Code::CashRequired,
                    Code::InvalidCash,
                    Code::RemarkRequired,
                    Code::InvalidRemark,
                ],
                &bad,
            )?,
        }
    }

    #[test]
    fn transform_parse(
        user in 1i64..=10,
        data in arb_data(TRANSFORM_FIELDS),
        policy in arb_policy(),
    ) {
        let accepted = int(&data, "amount")
            .at_least(policy.transform_min)
            .and_then(|a| a.checked_mul(policy.ratio).map(|p| (a, p)));
        match transform::parse(user, &data, &policy) {
            Ok(request) => {
                prop_assert_eq!(Some((request.amount, request.points)), accepted);
                prop_assert_eq!(request.user, user);
                prop_assert!(request.amount >= policy.transform_min && request.amount >= 1);
                prop_assert!(request.points >= request.amount);
            }
            Err(rejection) => {
                prop_assert!(accepted.is_none(), "refused {:?}", accepted);
                check_rejection(
                    &rejection,
                    &[
                        Code::AmountRequired,
                        Code::InvalidAmount,
                        Code::AmountOverflow,
                        Code::AmountTooSmall,
                    ],
                    &BTreeSet::from(["amount"]),
                )?
            }
        }
    }

    #[test]
    fn recharge_parse(
        user in 1i64..=10,
        data in arb_data(RECHARGE_FIELDS),
        policy in arb_policy(),
    ) {
        let channel = match text(&data, "type") {
            TextRead::Value(c) if policy.recharge_types.contains(&c) => Some(c),
            _ => None,
        };
        let amount = match int(&data, "amount") {
            IntRead::Value(a) if a >= policy.recharge_min && a <= policy.recharge_max => Some(a),
            _ => None,
        };
        let extra = match data.get("extra") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(extra)) => Ok(Some(extra.clone())),
            Some(Value::Array(a)) if a.is_empty() => Ok(None),
            Some(_) => Err(()),
        };
        let needs_url = channel
            .as_deref()
            .is_some_and(|c| CHANNELS_NEEDING_SUCCESS_URL.contains(&c));
        let has_url = matches!(
            extra.as_ref().ok().and_then(Option::as_ref).and_then(|e| e.get("success_url")),
            Some(Value::String(u)) if u.starts_with("http://") || u.starts_with("https://")
        );
        let client_ip = match text(&data, "client_ip") {
            TextRead::Missing => Some(recharge::DEFAULT_CLIENT_IP.to_owned()),
            TextRead::Value(ip) if ip.parse::<Ipv4Addr>().is_ok() => Some(ip),
            _ => None,
        };
        let bad = bad_fields(&[
            ("type", channel.is_some()),
            ("amount", amount.is_some()),
            ("extra", extra.is_ok()),
            ("extra.success_url", !needs_url || has_url),
            ("client_ip", client_ip.is_some()),
        ]);
        match recharge::parse(user, &data, &policy) {
            Ok(request) => {
                prop_assert!(bad.is_empty(), "accepted with bad {:?}", bad);
                prop_assert_eq!(request.user, user);
                prop_assert_eq!(Some(&request.channel), channel.as_ref());
                prop_assert_eq!(Some(request.amount), amount);
                prop_assert!(request.amount >= 1);
                prop_assert_eq!(Ok(request.extra.clone()), extra);
                prop_assert_eq!(Some(&request.client_ip), client_ip.as_ref());
                prop_assert!(request.client_ip.parse::<Ipv4Addr>().is_ok());
                let order = recharge::order(&request);
                prop_assert_eq!(
                    (order.amount, order.direction, order.state),
                    (request.amount, 1, 0)
                );
            }
            Err(rejection) => check_rejection(
                &rejection,
                &[
                    Code::ChannelRequired,
                    Code::UnsupportedChannel,
                    Code::AmountRequired,
                    Code::InvalidAmount,
                    Code::AmountTooSmall,
                    Code::AmountTooLarge,
                    Code::InvalidExtra,
                    Code::InvalidClientIp,
                ],
                &bad,
            )?,
        }
    }

    #[test]
    fn query_pages(orders in any::<bool>(), data in arb_data(PAGE_FIELDS)) {
        let limit = match int(&data, "limit") {
            IntRead::Missing => Some(query::DEFAULT_LIMIT),
            IntRead::Value(v) if v >= 1 => Some(v.min(query::MAX_LIMIT)),
            IntRead::Huge { positive: true } => Some(query::MAX_LIMIT),
            _ => None,
        };
        let after = match int(&data, "after") {
            IntRead::Missing => Some(None),
            IntRead::Value(v) if v >= 1 => Some(Some(v)),
            _ => None,
        };
        let action = match (orders, text(&data, "action")) {
            (false, _) | (true, TextRead::Missing) => Some(None),
            (true, TextRead::Value(a)) if a == "income" => Some(Some(Action::Income)),
            (true, TextRead::Value(a)) if a == "expenses" => Some(Some(Action::Expenses)),
            _ => None,
        };
        let bad = bad_fields(&[
            ("limit", limit.is_some()),
            ("after", after.is_some()),
            ("action", action.is_some()),
        ]);
        let page = if orders { query::orders_page(&data) } else { query::cashes_page(&data) };
        match page {
            Ok(page) => {
                prop_assert!(bad.is_empty(), "accepted with bad {:?}", bad);
                prop_assert!((1..=query::MAX_LIMIT).contains(&page.limit));
                prop_assert_eq!(Some(page.limit), limit);
                prop_assert_eq!(Some(page.after), after);
                prop_assert_eq!(Some(page.action), action);
            }
            Err(rejection) => check_rejection(
                &rejection,
                &[Code::InvalidLimit, Code::InvalidAfter, Code::InvalidAction],
                &bad,
            )?,
        }
    }

    #[test]
    fn query_order_id(data in arb_data(ORDER_FIELDS)) {
        let order = int(&data, "order").at_least(1);
        match query::order_id(&data) {
            Ok(id) => prop_assert_eq!(Some(id), order),
            Err(rejection) => check_rejection(
                &rejection,
                &[Code::OrderRequired, Code::InvalidOrder],
                &bad_fields(&[("order", order.is_some())]),
            )?,
        }
    }

    /// Each parser, given any object at all (not one shaped for it), answers.
    #[test]
    fn parsers_never_panic_on_any_object(
        data in arb_object(),
        user in any::<i64>(),
        policy in arb_policy(),
    ) {
        for kind in [TransferKind::Transfer, TransferKind::Reward] {
            let _ = transfer::parse(kind, user, &data);
        }
        let _ = cash::parse_request(user, &data, &policy);
        for decision in [Decision::Approve, Decision::Reject] {
            let _ = cash::parse_decision(decision, &data);
        }
        let _ = transform::parse(user, &data, &policy);
        let _ = recharge::parse(user, &data, &policy);
        let _ = query::orders_page(&data);
        let _ = query::cashes_page(&data);
        let _ = query::order_id(&data);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// The decisions, at any balances an account can hold: a journal only when the money is
    /// there and nothing overflows, and then exactly the movement asked for.
    #[test]
    fn decisions_at_the_edges(
        amount in prop_oneof![1i64..=1_000, 1i64..=i64::MAX],
        ratio in prop_oneof![1i64..=1_000, 1i64..=i64::MAX],
        from_balance in prop_oneof![0i64..=2_000, 0i64..=i64::MAX],
        to_balance in prop_oneof![0i64..=2_000, 0i64..=i64::MAX],
        // Sometimes the amount is within a few fen of the sender's balance, or the receiver's
        // balance within a few fen of the ceiling by it.
        near_enough in prop::option::weighted(0.3, -2i64..=2),
        near_overflow in prop::option::weighted(0.2, -2i64..=2),
        status in prop_oneof![4 => 0i16..=2, 1 => any::<i16>()],
    ) {
        let amount = near_enough.map_or(amount, |d| from_balance.saturating_add(d).max(1));
        let to_balance = near_overflow.map_or(to_balance, |d| {
            (i128::from(WALLET_CEILING) - i128::from(amount) + i128::from(d))
                .clamp(0, i128::from(i64::MAX)) as i64
        });
        let request = transfer::TransferRequest {
            kind: TransferKind::Transfer,
            from: 1,
            to: 2,
            amount,
            body: None,
        };
        // Balances and running totals stay within the ceiling; these wallets have no history,
        // so the sender's expenses and the receiver's income become the amount.
        let within = |v: Option<i64>| v.is_some_and(|v| v <= WALLET_CEILING);
        let ok = amount <= from_balance
            && amount <= WALLET_CEILING
            && within(to_balance.checked_add(amount));
        match transfer::decide(&request, from_balance, to_balance) {
            Ok(journal) => {
                prop_assert!(ok);
                prop_assert_eq!(
                    journal,
                    Journal::transfer(AccountRef::Wallet(1), AccountRef::Wallet(2), amount).unwrap()
                );
            }
            Err(rejection) => {
                prop_assert!(!ok);
                let code = if amount > from_balance {
                    Code::InsufficientBalance
                } else {
                    Code::AmountOverflow
                };
                prop_assert_eq!(rejection.code, code);
            }
        }

        let cash_request = cash::CashRequest {
            user: 1,
            value: amount,
            kind: "alipay".into(),
            account: "a".into(),
        };
        match cash::decide_request(&cash_request, from_balance) {
            Ok(journal) => {
                prop_assert!(amount <= from_balance && amount <= WALLET_CEILING);
                prop_assert_eq!(journal, Journal::transfer(
                    AccountRef::Wallet(1),
                    AccountRef::System(SystemAccount::PendingPayouts),
                    amount,
                ).unwrap());
            }
            Err(rejection) => {
                prop_assert!(amount > from_balance || amount > WALLET_CEILING);
                let code = if amount > from_balance {
                    Code::InsufficientBalance
                } else {
                    Code::AmountOverflow
                };
                prop_assert_eq!(rejection.code, code);
            }
        }

        let policy = WalletPolicy { ratio, transform_min: 1, ..WalletPolicy::default() };
        let data = json!({"amount": amount});
        match transform::parse(1, data.as_object().unwrap(), &policy) {
            Ok(request) => {
                let points = amount.checked_mul(ratio);
                prop_assert_eq!(Some(request.points), points);
                let ok = amount <= from_balance
                    && amount <= WALLET_CEILING
                    && within(to_balance.checked_add(request.points));
                match transform::decide(&request, from_balance, to_balance) {
                    Ok(journal) => {
                        prop_assert!(ok);
                        prop_assert_eq!(journal, Journal::new(&[
                            (AccountRef::Wallet(1), -amount),
                            (AccountRef::System(SystemAccount::TransformRevenue), amount),
                            (AccountRef::System(SystemAccount::PointsIssued), -request.points),
                            (AccountRef::Points(1), request.points),
                        ]).unwrap());
                    }
                    Err(_) => prop_assert!(!ok),
                }
            }
            Err(rejection) => {
                prop_assert!(amount.checked_mul(ratio).is_none());
                prop_assert_eq!(rejection.code, Code::AmountOverflow);
            }
        }

        for decision in [Decision::Approve, Decision::Reject] {
            let effect = cash::decide(decision, status, 1, amount);
            if status == decision.status() {
                prop_assert_eq!(effect, Ok(DecisionEffect::AlreadyDone));
            } else if status == cash::WAITING {
                let to = match decision {
                    Decision::Approve => AccountRef::System(SystemAccount::PaidOut),
                    Decision::Reject => AccountRef::Wallet(1),
                };
                let journal = Journal::transfer(
                    AccountRef::System(SystemAccount::PendingPayouts), to, amount,
                ).unwrap();
                prop_assert_eq!(effect, Ok(DecisionEffect::Apply(journal)));
            } else {
                prop_assert_eq!(effect.unwrap_err().code, Code::CashAlreadyDecided);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The ledger: any sequence of accepted commands conserves money
// ---------------------------------------------------------------------------------------------

const USERS: i64 = 3;

/// An amount for an operation: a share of the balance it draws on (so that both enough and not
/// enough happen often), a fixed amount, or any JSON at all.
#[derive(Debug, Clone)]
enum Amount {
    Share(u8),
    /// The balance give or take a few fen: the edge of enough.
    Near(i64),
    Fixed(i64),
    Odd(Value),
}

impl Amount {
    fn value(&self, balance: i64) -> Value {
        match self {
            Amount::Share(percent) => {
                Value::from((i128::from(balance) * i128::from(*percent) / 100) as i64)
            }
            Amount::Near(delta) => Value::from(balance.saturating_add(*delta)),
            Amount::Fixed(amount) => Value::from(*amount),
            Amount::Odd(value) => value.clone(),
        }
    }
}

fn arb_amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        6 => (0u8..=120).prop_map(Amount::Share),
        2 => (-2i64..=2).prop_map(Amount::Near),
        3 => prop_oneof![-2i64..=1_000, 1i64..=2_000_000].prop_map(Amount::Fixed),
        1 => arb_number().prop_map(Amount::Odd),
    ]
}

/// What a charge says when the order is completed (by `recharge.retrieve` or a webhook).
#[derive(Debug, Clone)]
enum ChargeNews {
    Paid,
    Pending,
    Failed,
    Expired,
    /// Paid, but not the charge of this order as it was created.
    Forged(Forgery),
}

#[derive(Debug, Clone)]
enum Forgery {
    Id,
    OrderNo,
    Amount(i64),
    Currency,
    Livemode,
}

fn arb_news() -> impl Strategy<Value = ChargeNews> {
    prop_oneof![
        4 => Just(ChargeNews::Paid),
        2 => Just(ChargeNews::Pending),
        1 => Just(ChargeNews::Failed),
        1 => Just(ChargeNews::Expired),
        2 => prop_oneof![
            Just(Forgery::Id),
            Just(Forgery::OrderNo),
            prop_oneof![Just(1i64), Just(-1), any::<i64>()].prop_map(Forgery::Amount),
            Just(Forgery::Currency),
            Just(Forgery::Livemode),
        ]
        .prop_map(ChargeNews::Forged),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        reward: bool,
        from: i64,
        to: i64,
        amount: Amount,
        body: Option<String>,
    },
    Cash {
        user: i64,
        value: Amount,
        method: &'static str,
        account: String,
    },
    /// `cash` picks an earlier cash request; `None` names one that does not exist.
    Decide {
        approve: bool,
        cash: Option<Index>,
        remark: String,
    },
    Transform {
        user: i64,
        amount: Amount,
    },
    Recharge {
        user: i64,
        amount: Amount,
        channel: &'static str,
        success_url: bool,
        livemode: bool,
        news: ChargeNews,
    },
    /// Completes an earlier recharge order again, as a later retrieve or webhook does.
    Complete {
        order: Index,
        news: ChargeNews,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    let user = || 1i64..=USERS;
    let remark = prop_oneof![
        4 => Just("ok".to_owned()),
        1 => Just(String::new()),
        1 => arb_text(),
    ];
    let method = prop::sample::select(vec!["alipay", "wechat", "alipay", "wechat", "bank", ""]);
    let account = prop_oneof![4 => Just("a@b.c".to_owned()), 1 => arb_text()];
    prop_oneof![
        4 => (any::<bool>(), user(), 0..=USERS + 1, arb_amount(), prop::option::of(arb_text()))
            .prop_map(|(reward, from, to, amount, body)| Op::Transfer {
                reward, from, to, amount, body,
            }),
        2 => (user(), arb_amount(), method, account)
            .prop_map(|(user, value, method, account)| Op::Cash { user, value, method, account }),
        2 => (any::<bool>(), prop::option::weighted(0.9, any::<Index>()), remark)
            .prop_map(|(approve, cash, remark)| Op::Decide { approve, cash, remark }),
        2 => (user(), arb_amount()).prop_map(|(user, amount)| Op::Transform { user, amount }),
        3 => (
            user(),
            prop_oneof![4 => (1i64..=100_000).prop_map(Amount::Fixed), 1 => arb_amount()],
            prop::sample::select(vec!["alipay", "wx", "alipay_wap", "wx_pub"]),
            prop::bool::weighted(0.8),
            any::<bool>(),
            arb_news(),
        )
            .prop_map(|(user, amount, channel, success_url, livemode, news)| Op::Recharge {
                user, amount, channel, success_url, livemode, news,
            }),
        2 => (any::<Index>(), arb_news()).prop_map(|(order, news)| Op::Complete { order, news }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct CashRecord {
    owner: i64,
    value: i64,
    status: i16,
}

#[derive(Debug, Clone, PartialEq)]
struct RechargeOrder {
    waiting: WaitingRecharge,
    /// As the order's state: 0 waiting, 1 credited, -1 failed.
    state: i16,
}

/// The ledger in memory, changed only by the journals the rules make, and what the tests
/// remember to check it against.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    policy: WalletPolicy,
    now: i64,
    balances: BTreeMap<AccountRef, i64>,
    cashes: Vec<CashRecord>,
    orders: Vec<RechargeOrder>,
    transformed_fen: i64,
    issued_points: i64,
}

const CLEARING: AccountRef = AccountRef::System(SystemAccount::PingppClearing);
const PENDING: AccountRef = AccountRef::System(SystemAccount::PendingPayouts);
const PAID_OUT: AccountRef = AccountRef::System(SystemAccount::PaidOut);
const REVENUE: AccountRef = AccountRef::System(SystemAccount::TransformRevenue);
const ISSUED: AccountRef = AccountRef::System(SystemAccount::PointsIssued);

fn journal(movements: &[(AccountRef, i64)]) -> Journal {
    Journal::new(movements).expect("the expected movements balance")
}

impl Model {
    fn new(policy: WalletPolicy) -> Self {
        Model {
            policy,
            now: 1_700_000_000,
            balances: BTreeMap::new(),
            cashes: Vec::new(),
            orders: Vec::new(),
            transformed_fen: 0,
            issued_points: 0,
        }
    }

    fn balance(&self, account: AccountRef) -> i64 {
        self.balances.get(&account).copied().unwrap_or(0)
    }

    /// Applies an accepted journal, after checking that it balances.
    fn post(&mut self, journal: &Journal) -> Result<(), TestCaseError> {
        let mut sums: BTreeMap<Unit, i128> = BTreeMap::new();
        for (account, amount) in journal.entries() {
            prop_assert_ne!(amount, 0);
            *sums.entry(account.unit()).or_default() += i128::from(amount);
        }
        prop_assert!(!sums.is_empty());
        prop_assert!(sums.values().all(|&s| s == 0), "unbalanced {:?}", journal);
        for (account, amount) in journal.entries() {
            let balance = self.balances.entry(account).or_default();
            *balance = balance
                .checked_add(amount)
                .ok_or_else(|| TestCaseError::fail(format!("{account:?} overflows")))?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mut totals: BTreeMap<Unit, i128> = BTreeMap::new();
        for (&account, &balance) in &self.balances {
            *totals.entry(account.unit()).or_default() += i128::from(balance);
            let may_go_negative = matches!(account, CLEARING | ISSUED);
            prop_assert!(
                may_go_negative || balance >= 0,
                "{:?} went negative: {}",
                account,
                balance
            );
        }
        prop_assert!(
            totals.values().all(|&t| t == 0),
            "money was made or lost: {:?}",
            totals
        );
        // The system accounts hold exactly what the records say they do.
        let sum = |status: i16| -> i64 {
            self.cashes
                .iter()
                .filter(|c| c.status == status)
                .map(|c| c.value)
                .sum()
        };
        prop_assert_eq!(self.balance(PENDING), sum(cash::WAITING));
        prop_assert_eq!(self.balance(PAID_OUT), sum(cash::APPROVED));
        let credited: i64 = self
            .orders
            .iter()
            .filter(|o| o.state == 1)
            .map(|o| o.waiting.amount)
            .sum();
        prop_assert_eq!(self.balance(CLEARING), -credited);
        prop_assert_eq!(self.balance(REVENUE), self.transformed_fen);
        prop_assert_eq!(self.balance(ISSUED), -self.issued_points);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.clone();
        let changed = match op {
            Op::Transfer {
                reward,
                from,
                to,
                amount,
                body,
            } => self.transfer(*reward, *from, *to, amount, body.as_deref())?,
            Op::Cash {
                user,
                value,
                method,
                account,
            } => self.cash(*user, value, method, account)?,
            Op::Decide {
                approve,
                cash,
                remark,
            } => self.decide(*approve, cash.as_ref(), remark)?,
            Op::Transform { user, amount } => self.transform(*user, amount)?,
            Op::Recharge {
                user,
                amount,
                channel,
                success_url,
                livemode,
                news,
            } => self.recharge(*user, amount, channel, *success_url, *livemode, news)?,
            Op::Complete { order, news } => {
                if self.orders.is_empty() {
                    false
                } else {
                    let i = order.index(self.orders.len());
                    self.complete(i, news)?
                }
            }
        };
        if !changed {
            prop_assert_eq!(&*self, &before, "a refused operation changed something");
        }
        self.now += 60;
        self.check()
    }

    fn transfer(
        &mut self,
        reward: bool,
        from: i64,
        to: i64,
        amount: &Amount,
        body: Option<&str>,
    ) -> Result<bool, TestCaseError> {
        let kind = if reward {
            TransferKind::Reward
        } else {
            TransferKind::Transfer
        };
        let balance = self.balance(AccountRef::Wallet(from));
        let mut data = json!({"user": to, "amount": amount.value(balance)});
        if let Some(body) = body {
            data["body"] = Value::from(body);
        }
        let data = data.as_object().unwrap();
        let body_ok =
            !reward || body.is_none_or(|b| b.trim().is_empty() || b.chars().count() <= 255);
        let expected = int(data, "amount")
            .at_least(1)
            .filter(|&a| a <= balance && to > 0 && to != from && body_ok);
        let outcome = transfer::parse(kind, from, data).and_then(|request| {
            transfer::decide(
                &request,
                self.balance(AccountRef::Wallet(request.from)),
                self.balance(AccountRef::Wallet(request.to)),
            )
        });
        match (outcome, expected) {
            (Ok(j), Some(a)) => {
                let wanted =
                    journal(&[(AccountRef::Wallet(from), -a), (AccountRef::Wallet(to), a)]);
                prop_assert_eq!(&j, &wanted);
                self.post(&j)?;
                Ok(true)
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                Ok(false)
            }
            (outcome, expected) => Err(TestCaseError::fail(format!(
                "transfer {data:?} from {from} with {balance}: {outcome:?}, expected {expected:?}"
            ))),
        }
    }

    fn cash(
        &mut self,
        user: i64,
        value: &Amount,
        method: &str,
        account: &str,
    ) -> Result<bool, TestCaseError> {
        let wallet = AccountRef::Wallet(user);
        let balance = self.balance(wallet);
        let data = json!({"value": value.value(balance), "type": method, "account": account});
        let data = data.as_object().unwrap();
        let account_ok = !account.trim().is_empty() && account.chars().count() <= 255;
        let expected = int(data, "value")
            .at_least(self.policy.cash_min)
            .filter(|&v| {
                v <= balance && self.policy.cash_types.iter().any(|t| t == method) && account_ok
            });
        let outcome = cash::parse_request(user, data, &self.policy)
            .and_then(|request| cash::decide_request(&request, balance).map(|j| (request, j)));
        match (outcome, expected) {
            (Ok((request, j)), Some(v)) => {
                prop_assert_eq!(&j, &journal(&[(wallet, -v), (PENDING, v)]));
                self.post(&j)?;
                self.cashes.push(CashRecord {
                    owner: request.user,
                    value: request.value,
                    status: cash::WAITING,
                });
                Ok(true)
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                Ok(false)
            }
            (outcome, expected) => Err(TestCaseError::fail(format!(
                "cash {data:?} with {balance}: {outcome:?}, expected {expected:?}"
            ))),
        }
    }

    fn decide(
        &mut self,
        approve: bool,
        pick: Option<&Index>,
        remark: &str,
    ) -> Result<bool, TestCaseError> {
        let decision = if approve {
            Decision::Approve
        } else {
            Decision::Reject
        };
        // Cash ids are 1-based positions; an unknown one is past the end.
        let index = pick
            .filter(|_| !self.cashes.is_empty())
            .map(|i| i.index(self.cashes.len()));
        let cash_id = index.map_or(self.cashes.len() as i64 + 1, |i| i as i64 + 1);
        let data = json!({"cash": cash_id, "remark": remark});
        let request = match cash::parse_decision(decision, data.as_object().unwrap()) {
            Ok(request) => request,
            Err(rejection) => {
                let remark_ok = !remark.trim().is_empty() && remark.chars().count() <= 255;
                prop_assert!(!remark_ok, "refused {:?}: {:?}", data, rejection);
                return Ok(false);
            }
        };
        prop_assert_eq!(request.cash_id, cash_id);
        // The engine answers unknown_cash for an id it does not find; the rules are not asked.
        let Some(index) = index else {
            return Ok(false);
        };
        let record = self.cashes[index].clone();
        let effect = cash::decide(decision, record.status, record.owner, record.value);
        match effect {
            Ok(DecisionEffect::Apply(j)) => {
                prop_assert_eq!(record.status, cash::WAITING);
                let to = match decision {
                    Decision::Approve => PAID_OUT,
                    Decision::Reject => AccountRef::Wallet(record.owner),
                };
                prop_assert_eq!(
                    &j,
                    &journal(&[(PENDING, -record.value), (to, record.value)])
                );
                self.post(&j)?;
                self.cashes[index].status = decision.status();
                // Deciding it again the same way does nothing more; the other way is refused.
                let other = match decision {
                    Decision::Approve => Decision::Reject,
                    Decision::Reject => Decision::Approve,
                };
                let status = decision.status();
                prop_assert_eq!(
                    cash::decide(decision, status, record.owner, record.value),
                    Ok(DecisionEffect::AlreadyDone)
                );
                prop_assert_eq!(
                    cash::decide(other, status, record.owner, record.value)
                        .unwrap_err()
                        .code,
                    Code::CashAlreadyDecided
                );
                Ok(true)
            }
            Ok(DecisionEffect::AlreadyDone) => {
                prop_assert_eq!(record.status, decision.status());
                Ok(false)
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.code, Code::CashAlreadyDecided);
                prop_assert!(record.status != cash::WAITING && record.status != decision.status());
                Ok(false)
            }
        }
    }

    fn transform(&mut self, user: i64, amount: &Amount) -> Result<bool, TestCaseError> {
        let wallet = AccountRef::Wallet(user);
        let points = AccountRef::Points(user);
        let balance = self.balance(wallet);
        let points_balance = self.balance(points);
        let data = json!({"amount": amount.value(balance)});
        let data = data.as_object().unwrap();
        let expected = int(data, "amount")
            .at_least(self.policy.transform_min)
            .filter(|&a| a <= balance)
            .and_then(|a| a.checked_mul(self.policy.ratio).map(|p| (a, p)))
            .filter(|&(_, p)| points_balance.checked_add(p).is_some());
        let outcome = transform::parse(user, data, &self.policy)
            .and_then(|request| transform::decide(&request, balance, points_balance));
        match (outcome, expected) {
            (Ok(j), Some((a, p))) => {
                let wanted = journal(&[(wallet, -a), (REVENUE, a), (ISSUED, -p), (points, p)]);
                prop_assert_eq!(&j, &wanted);
                self.post(&j)?;
                self.transformed_fen += a;
                self.issued_points += p;
                Ok(true)
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                Ok(false)
            }
            (outcome, expected) => Err(TestCaseError::fail(format!(
                "transform {data:?} with {balance}: {outcome:?}, expected {expected:?}"
            ))),
        }
    }

    fn recharge(
        &mut self,
        user: i64,
        amount: &Amount,
        channel: &str,
        success_url: bool,
        livemode: bool,
        news: &ChargeNews,
    ) -> Result<bool, TestCaseError> {
        let mut data = json!({"type": channel, "amount": amount.value(self.policy.recharge_max)});
        if success_url {
            data["extra"] = json!({"success_url": "https://plus.io/paid"});
        }
        let data = data.as_object().unwrap();
        let expected = int(data, "amount")
            .at_least(self.policy.recharge_min)
            .filter(|&a| {
                a <= self.policy.recharge_max
                    && self.policy.recharge_types.iter().any(|t| t == channel)
                    && (success_url || !CHANNELS_NEEDING_SUCCESS_URL.contains(&channel))
            });
        let request = match (recharge::parse(user, data, &self.policy), expected) {
            (Ok(request), Some(a)) => {
                prop_assert_eq!(request.amount, a);
                request
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                return Ok(false);
            }
            (outcome, expected) => {
                return Err(TestCaseError::fail(format!(
                    "recharge {data:?}: {outcome:?}, expected {expected:?}"
                )))
            }
        };
        // The engine stores a waiting order, then the charge Ping++ made for it.
        let order_id = self.orders.len() as i64 + 1;
        self.orders.push(RechargeOrder {
            waiting: WaitingRecharge {
                order_id,
                owner: request.user,
                amount: request.amount,
                charge_id: format!("ch_{order_id:020}"),
                livemode,
                user_fee: 0,
                bonus: 0,
            },
            state: 0,
        });
        self.complete(self.orders.len() - 1, news)?;
        // A new waiting order is a change even when no money moved.
        Ok(true)
    }

    fn complete(&mut self, index: usize, news: &ChargeNews) -> Result<bool, TestCaseError> {
        let order = self.orders[index].clone();
        let waiting = &order.waiting;
        let mut charge = json!({
            "id": waiting.charge_id,
            "object": "charge",
            "order_no": recharge::order_no(waiting.order_id),
            "amount": waiting.amount,
            "currency": "cny",
            "livemode": waiting.livemode,
            "paid": false,
            "failure_code": null,
            "failure_msg": null,
            "time_expire": self.now + 7_200,
        });
        match news {
            ChargeNews::Paid => charge["paid"] = json!(true),
            ChargeNews::Pending => {}
            ChargeNews::Failed => {
                charge["failure_code"] = json!("card_declined");
                charge["failure_msg"] = json!("declined");
            }
            ChargeNews::Expired => charge["time_expire"] = json!(self.now - 1),
            ChargeNews::Forged(forgery) => {
                charge["paid"] = json!(true);
                match forgery {
                    Forgery::Id => charge["id"] = json!("ch_forged"),
                    Forgery::OrderNo => {
                        charge["order_no"] = json!(recharge::order_no(waiting.order_id + 1))
                    }
                    Forgery::Amount(delta) => {
                        let other = waiting.amount.wrapping_add(*delta);
                        charge["amount"] = json!(if other == waiting.amount {
                            other + 1
                        } else {
                            other
                        });
                    }
                    Forgery::Currency => charge["currency"] = json!("usd"),
                    Forgery::Livemode => charge["livemode"] = json!(!waiting.livemode),
                }
            }
        }
        let facts = recharge::charge_facts(&charge, self.now)
            .map_err(|e| TestCaseError::fail(format!("a whole charge is readable: {e}")))?;
        let completion = match recharge::complete(waiting, &facts) {
            Ok(completion) => completion,
            Err(mismatch) => {
                prop_assert!(matches!(news, ChargeNews::Forged(_)), "{}", mismatch);
                return Ok(false);
            }
        };
        prop_assert!(
            !matches!(news, ChargeNews::Forged(_)),
            "forged charge {:?} taken",
            news
        );
        // The engine locks the order and leaves a credited one alone; a failed one that was
        // paid after all is credited (a late payment).
        match (order.state, news) {
            (0, _) | (-1, ChargeNews::Paid) => {}
            _ => return Ok(false),
        }
        match (completion, news) {
            (Completion::Credit(j), ChargeNews::Paid) => {
                prop_assert_eq!(
                    &j,
                    &journal(&[
                        (CLEARING, -waiting.amount),
                        (AccountRef::Wallet(waiting.owner), waiting.amount)
                    ])
                );
                self.post(&j)?;
                self.orders[index].state = 1;
                Ok(true)
            }
            (Completion::Fail { .. }, ChargeNews::Failed | ChargeNews::Expired) => {
                self.orders[index].state = -1;
                Ok(true)
            }
            (Completion::Wait, ChargeNews::Pending) => Ok(false),
            (completion, news) => Err(TestCaseError::fail(format!(
                "charge news {news:?} completed as {completion:?}"
            ))),
        }
    }
}

/// Settings for the ledger runs: any the settings allow, with a ratio a real wallet might use
/// (points are issued from one account, so an absurd ratio overflows it, not the rules).
fn arb_ledger_policy() -> impl Strategy<Value = WalletPolicy> {
    (arb_policy(), 1i64..=10_000, prop::bool::weighted(0.8)).prop_map(
        |(mut policy, ratio, open)| {
            policy.ratio = ratio;
            if open {
                // Mostly open channels and payout methods, so that money flows.
                policy.recharge_types = vec!["alipay".into(), "wx".into(), "alipay_wap".into()];
                policy.cash_types = vec!["alipay".into(), "wechat".into()];
                policy.recharge_max = policy.recharge_max.max(100_000);
            }
            policy
        },
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// Any sequence of commands, each decided by the rules against the balances of the moment:
    /// every journal balances per unit, no wallet, points or payout account goes below zero,
    /// the fen and the points of all accounts sum to zero after every step, refused commands
    /// change nothing, and cash decisions follow their state machine.
    #[test]
    fn ledger_conserves_money(
        policy in arb_ledger_policy(),
        funding in prop::collection::vec(
            prop::option::weighted(0.8, 1i64..=100_000),
            USERS as usize,
        ),
        ops in prop::collection::vec(arb_op(), 1..80),
    ) {
        let mut model = Model::new(policy);
        // Most users first recharge (through the rules, like any recharge), so that money flows.
        let recharges = (1..).zip(funding).filter_map(|(user, amount)| {
            amount.map(|amount| Op::Recharge {
                user,
                amount: Amount::Fixed(amount),
                channel: "alipay",
                success_url: false,
                livemode: false,
                news: ChargeNews::Paid,
            })
        });
        for op in recharges.chain(ops) {
            model.step(&op)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Ping++ charges and events
// ---------------------------------------------------------------------------------------------

fn arb_waiting() -> impl Strategy<Value = WaitingRecharge> {
    (
        prop_oneof![1i64..=1_000, 1i64..=i64::MAX],
        1i64..=1_000,
        prop_oneof![1i64..=1_000_000, 1i64..=i64::MAX],
        "ch_[a-zA-Z0-9]{1,24}",
        any::<bool>(),
    )
        .prop_map(
            |(order_id, owner, amount, charge_id, livemode)| WaitingRecharge {
                order_id,
                owner,
                amount,
                charge_id,
                livemode,
                user_fee: 0,
                bonus: 0,
            },
        )
}

/// A field of a charge: right for the order, wrong, missing, or of another shape.
fn charge_field(right: Value, wrong: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        12 => Just(Some(right)),
        2 => wrong.prop_map(Some),
        1 => Just(None),
        1 => arb_json().prop_map(Some),
    ]
    .boxed()
}

/// A charge object close to the one of `waiting`, and the time it is read at.
fn arb_charge_for(waiting: &WaitingRecharge) -> impl Strategy<Value = (Value, i64)> {
    let now = 1_700_000_000i64;
    let fields = vec![
        (
            "id",
            charge_field(
                Value::from(waiting.charge_id.clone()),
                "ch_[a-z0-9]{1,8}".prop_map(Value::from).boxed(),
            ),
        ),
        (
            "object",
            charge_field(json!("charge"), Just(json!("refund")).boxed()),
        ),
        (
            "order_no",
            charge_field(
                Value::from(recharge::order_no(waiting.order_id)),
                prop_oneof![
                    any::<i64>().prop_map(|id| Value::from(recharge::order_no(id))),
                    Just(Value::from(
                        recharge::order_no(waiting.order_id).to_uppercase()
                    )),
                    Just(Value::from(waiting.order_id.to_string())),
                ]
                .boxed(),
            ),
        ),
        (
            "amount",
            charge_field(
                Value::from(waiting.amount),
                prop_oneof![
                    Just(Value::from(waiting.amount as f64)),
                    Just(Value::from(waiting.amount.to_string())),
                    any::<i64>().prop_map(Value::from),
                    Just(Value::from(waiting.amount.wrapping_add(1))),
                ]
                .boxed(),
            ),
        ),
        (
            "currency",
            charge_field(
                json!("cny"),
                prop::sample::select(vec![json!("CNY"), json!("usd"), json!("cny ")]).boxed(),
            ),
        ),
        (
            "livemode",
            charge_field(
                Value::from(waiting.livemode),
                prop_oneof![
                    Just(Value::from(!waiting.livemode)),
                    Just(json!("true")),
                    Just(json!(1))
                ]
                .boxed(),
            ),
        ),
        (
            "paid",
            charge_field(
                json!(true),
                prop_oneof![Just(json!(false)), Just(json!("true")), Just(json!(1))].boxed(),
            ),
        ),
        (
            "failure_code",
            charge_field(
                Value::Null,
                prop::sample::select(vec![json!("card_declined"), json!("")]).boxed(),
            ),
        ),
        (
            "failure_msg",
            charge_field(Value::Null, arb_text().prop_map(Value::from).boxed()),
        ),
        (
            "time_expire",
            charge_field(
                json!(now + 7_200),
                prop_oneof![
                    Just(json!(now)),
                    Just(json!(now - 1)),
                    Just(json!(now + 1)),
                    any::<i64>().prop_map(Value::from)
                ]
                .boxed(),
            ),
        ),
    ];
    let (names, strategies): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
    (strategies, arb_object()).prop_map(move |(values, extra)| {
        let mut charge = extra;
        for (name, value) in names.iter().zip(values) {
            match value {
                Some(value) => charge.insert((*name).to_owned(), value),
                None => charge.remove(*name),
            };
        }
        (Value::Object(charge), now)
    })
}

/// What the order completes as, by reading the charge as the rules promise to: a credit only
/// when `paid` is true and the charge is this order's (id, order_no, amount, currency cny,
/// livemode; a charge that does not say livemode is a test-mode charge).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expected {
    Refused,
    Credit,
    Fail,
    Wait,
}

fn expected_completion(waiting: &WaitingRecharge, charge: &Value, now: i64) -> Expected {
    let text = |name: &str| charge.get(name).and_then(Value::as_str);
    let is_this_order = text("id") == Some(waiting.charge_id.as_str())
        && text("order_no") == Some(recharge::order_no(waiting.order_id).as_str())
        && charge.get("amount").and_then(Value::as_i64) == Some(waiting.amount)
        && text("currency") == Some("cny")
        && charge
            .get("livemode")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            == waiting.livemode;
    if !is_this_order {
        Expected::Refused
    } else if charge.get("paid") == Some(&Value::Bool(true)) {
        Expected::Credit
    } else if text("failure_code").is_some()
        || charge
            .get("time_expire")
            .and_then(Value::as_i64)
            .is_some_and(|t| t <= now)
    {
        Expected::Fail
    } else {
        Expected::Wait
    }
}

fn arb_event() -> impl Strategy<Value = Vec<u8>> {
    let object = prop_oneof![
        3 => arb_waiting().prop_flat_map(|w| arb_charge_for(&w)).prop_map(|(c, _)| c),
        1 => arb_json(),
    ];
    let kinds = vec![
        "charge.succeeded",
        "charge.failed",
        "refund.succeeded",
        "summary.daily.available",
        "",
    ];
    (
        prop_oneof![
            4 => "evt_[a-zA-Z0-9]{1,24}".prop_map(Value::from),
            1 => "[a-z]{120,136}".prop_map(Value::from),
            1 => arb_json(),
        ],
        prop_oneof![4 => Just(json!("event")), 1 => arb_json()],
        prop_oneof![
            4 => prop::sample::select(kinds).prop_map(Value::from),
            1 => arb_json(),
        ],
        prop_oneof![Just(json!(true)), Just(json!(false)), arb_json()],
        prop_oneof![4 => object.prop_map(|o| json!({"object": o})), 1 => arb_json()],
        arb_style(),
        arb_mutation(),
    )
        .prop_map(|(id, object, kind, livemode, data, style, mutation)| {
            let event = json!({
                "id": id, "object": object, "type": kind, "livemode": livemode, "data": data,
            });
            mutation.apply(render(&event, style).into_bytes())
        })
}

proptest! {
    #![proptest_config(config(1000))]

    /// Any JSON at all as a charge: reading it answers, never panics.
    #[test]
    fn charge_facts_never_panic(charge in arb_json(), now in any::<i64>()) {
        if let Ok(facts) = recharge::charge_facts(&charge, now) {
            prop_assert_eq!(Some(facts.amount), charge.get("amount").and_then(Value::as_i64));
            prop_assert_eq!(
                facts.state == ChargeState::Paid,
                charge.get("paid") == Some(&Value::Bool(true))
            );
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// A charge completes an order only as the order allows: credit once paid and only for the
    /// order's own charge, and then exactly the order's amount from the clearing account.
    #[test]
    fn charge_completes_only_its_own_order(
        (waiting, (charge, now)) in arb_waiting()
            .prop_flat_map(|w| (Just(w.clone()), arb_charge_for(&w))),
    ) {
        let expected = expected_completion(&waiting, &charge, now);
        let got = match recharge::charge_facts(&charge, now) {
            Err(reason) => {
                prop_assert!(!reason.is_empty());
                None
            }
            Ok(facts) => Some(recharge::complete(&waiting, &facts)),
        };
        match (got, expected) {
            (None | Some(Err(_)), Expected::Refused) => {}
            (Some(Ok(Completion::Credit(j))), Expected::Credit) => {
                prop_assert_eq!(j, journal(&[
                    (CLEARING, -waiting.amount),
                    (AccountRef::Wallet(waiting.owner), waiting.amount),
                ]));
            }
            (Some(Ok(Completion::Fail { reason })), Expected::Fail) => {
                prop_assert!(!reason.is_empty())
            }
            (Some(Ok(Completion::Wait)), Expected::Wait) => {}
            (got, expected) => {
                prop_assert!(false, "{:?} for {} (expected {:?})", got, charge, expected)
            }
        }
    }

    /// Any event body: decoding answers; an accepted event is what the body says, and only a
    /// charge event carrying a charge asks for a completion.
    #[test]
    fn event_decode(body in prop_oneof![
        4 => arb_event(),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]) {
        let Ok(event) = event::decode(&body) else {
            return Ok(());
        };
        let source: Value = serde_json::from_slice(&body).expect("an accepted event is JSON");
        prop_assert_eq!(source.get("object"), Some(&json!("event")));
        for (field, value) in [("id", &event.id), ("type", &event.kind)] {
            prop_assert!(!value.is_empty() && value.len() <= 128);
            prop_assert_eq!(source.get(field), Some(&Value::from(value.as_str())));
        }
        prop_assert_eq!(event.livemode, source.get("livemode") == Some(&Value::Bool(true)));
        let object = source.pointer("/data/object").cloned().unwrap_or(Value::Null);
        prop_assert_eq!(&event.object, &object);
        let is_a = |v: &Value, kind: &str| v.get("object") == Some(&json!(kind));
        // A charge event's charge is its object; a recharge event's, its recharge's charge.
        let is_recharge = is_a(&object, "recharge");
        let charge = if is_recharge {
            object.get("charge").filter(|c| is_a(c, "charge")).cloned()
        } else {
            Some(object.clone()).filter(|c| is_a(c, "charge"))
        };
        let is_withdrawal = is_a(&object, "withdrawal");
        let settles = is_withdrawal
            && matches!(
                event.kind.as_str(),
                "withdrawal.succeeded" | "withdrawal.failed" | "withdrawal.canceled"
            );
        let completes = match event.kind.as_str() {
            _ if is_withdrawal => false,
            "charge.succeeded" | "charge.failed" => !is_recharge && charge.is_some(),
            "recharge.succeeded" => is_recharge && charge.is_some(),
            _ => false,
        };
        match event.action() {
            EventAction::CompleteCharge(got) => {
                prop_assert!(completes);
                prop_assert_eq!(Some(got), charge.clone());
            }
            EventAction::CompleteWithdrawal(got) => {
                prop_assert!(settles);
                prop_assert_eq!(&got, &object);
            }
            EventAction::Record => prop_assert!(!completes && !settles),
        }
        let field = |name: &str| charge.as_ref().and_then(|c| c.get(name)).and_then(Value::as_str);
        prop_assert_eq!(event.charge_id(), field("id"));
        prop_assert_eq!(event.order_no(), field("order_no"));
    }
}
