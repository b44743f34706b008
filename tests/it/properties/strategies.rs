//! Generators the sections share: JSON values and how they are written, mutations, policies.

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};

use pluspay::domain::policy::WalletPolicy;

/// Words the rules look for, near misses of them, and awkward text.
pub(super) const WORDS: &[&str] = &[
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

pub(super) fn arb_text() -> BoxedStrategy<String> {
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

pub(super) fn arb_number() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (-3i64..2_000).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        2 => prop::sample::select(edge_numbers()),
    ]
    .boxed()
}

pub(super) fn arb_key() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => arb_text(),
    ]
    .boxed()
}

/// Any JSON value: scalars of every kind, and arrays and objects up to four levels deep.
pub(super) fn arb_json() -> BoxedStrategy<Value> {
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

pub(super) fn arb_object() -> BoxedStrategy<Map<String, Value>> {
    prop::collection::vec((arb_key(), arb_json()), 0..6)
        .prop_map(|kv| kv.into_iter().collect())
        .boxed()
}

/// How to write a JSON value out: the key order of every object, whitespace, and string escapes.
/// Every style writes the same value; only the bytes differ.
#[derive(Debug, Clone, Copy)]
pub(super) struct Style {
    rotate: usize,
    reverse: bool,
    pretty: bool,
    escape: bool,
}

pub(super) const PLAIN: Style = Style {
    rotate: 0,
    reverse: false,
    pretty: false,
    escape: false,
};

pub(super) fn arb_style() -> impl Strategy<Value = Style> {
    (0usize..8, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(rotate, reverse, pretty, escape)| Style {
            rotate,
            reverse,
            pretty,
            escape,
        },
    )
}

pub(super) fn render(value: &Value, style: Style) -> String {
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

/// A change to a message's bytes: none, a cut, or one byte inserted or replaced.
#[derive(Debug, Clone)]
pub(super) enum Mutation {
    None,
    Truncate(Index),
    Insert(Index, u8),
    Replace(Index, u8),
}

impl Mutation {
    pub(super) fn apply(&self, mut bytes: Vec<u8>) -> Vec<u8> {
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

pub(super) fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        9 => Just(Mutation::None),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
}

pub(super) const CHANNELS: [&str; 7] = [
    "applepay_upacp",
    "alipay",
    "alipay_wap",
    "alipay_pc_direct",
    "alipay_qr",
    "wx",
    "wx_wap",
];
pub(super) const CASH_TYPES: [&str; 3] = ["alipay", "wechat", "bank"];

/// Any settings `WalletPolicy::check` allows.
pub(super) fn arb_policy() -> impl Strategy<Value = WalletPolicy> {
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
