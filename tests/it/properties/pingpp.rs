//! Ping++ charges and events: reading a charge, completing an order by it, decoding events.

use proptest::prelude::*;
use serde_json::{json, Value};

use pluspay::domain::event::{self, EventAction};
use pluspay::domain::ledger::AccountRef;
use pluspay::domain::recharge::{self, ChargeState, Completion, WaitingRecharge};

use super::config;
use super::expect::{journal, CLEARING};
use super::strategies::{arb_json, arb_mutation, arb_object, arb_style, arb_text, render};

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
            EventAction::CompleteDeposit(got) => {
                prop_assert!(event.kind.starts_with("deposit.") && is_a(&object, "deposit"));
                prop_assert_eq!(&got, &object);
            }
            EventAction::DecideApplication(got) => {
                prop_assert!(
                    event.kind.starts_with("cus_application.") && is_a(&object, "cus_application")
                );
                prop_assert_eq!(&got, &object);
            }
            EventAction::CompleteRechargeRefund(got) => {
                prop_assert!(
                    matches!(event.kind.as_str(), "refund.succeeded" | "refund.failed")
                        && is_a(&object, "refund")
                );
                prop_assert_eq!(&got, &object);
            }
            EventAction::DecideMerchantApplication(got)
            | EventAction::CompleteOrder(got)
            | EventAction::CompleteRefund(got)
            | EventAction::CompleteAllocation(got) => {
                prop_assert_eq!(&got, &object);
            }
            EventAction::Record => prop_assert!(!completes && !settles),
        }
        let field = |name: &str| charge.as_ref().and_then(|c| c.get(name)).and_then(Value::as_str);
        prop_assert_eq!(event.charge_id(), field("id"));
        prop_assert_eq!(event.order_no(), field("order_no"));
    }
}
