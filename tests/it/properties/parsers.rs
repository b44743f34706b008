//! The parsers of each command's data, and the decisions at the edges of balances.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use pluspay::domain::cash::{self, CashStatus, Decision, DecisionEffect};
use pluspay::domain::ledger::{AccountRef, Journal, SystemAccount, WALLET_CEILING};
use pluspay::domain::outcome::{Code, Rejection};
use pluspay::domain::policy::{WalletPolicy, CHANNELS_NEEDING_SUCCESS_URL};
use pluspay::domain::query::{self, Action};
use pluspay::domain::recharge;
use pluspay::domain::transfer::{self, TransferKind};
use pluspay::domain::transform;

use super::config;
use super::expect::{int, short_text, text, IntRead, TextRead};
use super::strategies::{
    arb_json, arb_number, arb_object, arb_policy, arb_text, CASH_TYPES, CHANNELS,
};

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
                    (order.amount, order.direction, order.state.code()),
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
        status in prop::sample::select(vec![
            CashStatus::Waiting,
            CashStatus::Approved,
            CashStatus::Rejected,
        ]),
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
            } else if status == CashStatus::Waiting {
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
