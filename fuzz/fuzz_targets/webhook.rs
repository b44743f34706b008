//! A webhook as the listener receives it: the signature checked against the test keys of
//! tests/fixtures, then the body read as a Ping++ event and each object it carries read as the
//! worker reads it. An input is `signature \n body`, or, with no newline, a body alone checked
//! with the signature of the fixture event. The fuzzer cannot forge a signature, so the event
//! is read whether or not it verified: the listener parses only verified bodies, the reading
//! itself must hold for any body.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use pluspay::domain::event::{decode, EventAction};
use pluspay::domain::{account, allocation, cash, deposit, merchant, purchase, recharge, refund};
use pluspay::pingpp::PingppPublicKey;

const NOW: i64 = 1_700_000_000;
const FIXTURE_SIGNATURE: &str =
    include_str!("../../tests/fixtures/pingpp-webhook/event-charge-succeeded.sig");

fn keys() -> &'static [PingppPublicKey] {
    static KEYS: OnceLock<Vec<PingppPublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            include_str!("../../tests/fixtures/pingpp-webhook/pingpp_rsa_public_key.pem"),
            include_str!("../../tests/fixtures/pingpp-webhook/pingpp_rsa_public_key_2.pem"),
            include_str!("../../tests/fixtures/pingpp-webhook/pingpp_rsa_public_key_3.pem"),
        ]
        .iter()
        .map(|pem| PingppPublicKey::from_pem(pem).expect("a fixture key"))
        .collect()
    })
}

fuzz_target!(|input: &[u8]| {
    let (signature, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (
            String::from_utf8_lossy(&input[..at]).into_owned(),
            &input[at + 1..],
        ),
        None => (FIXTURE_SIGNATURE.trim().to_owned(), input),
    };
    for key in keys() {
        let _ = key.verify(body, &signature);
    }

    let Ok(event) = decode(body) else {
        return;
    };
    assert!(!event.id.is_empty() && !event.kind.is_empty());
    // What the worker keeps of the raw event: its personal data masked.
    if let Ok(mut raw) = serde_json::from_slice::<Value>(body) {
        account::mask_personal(&mut raw);
    }
    let _ = event.charge_id();
    let _ = event.order_no();
    match event.action() {
        EventAction::CompleteCharge(charge) => {
            let _ = recharge::charge_facts(&charge, NOW);
        }
        EventAction::CompleteWithdrawal(withdrawal) => {
            let _ = cash::withdrawal_facts(&withdrawal);
        }
        EventAction::CompleteDeposit(object) => {
            let _ = deposit::facts(&object, NOW);
        }
        EventAction::DecideApplication(object) => {
            if let Some(status) = object.get("status").and_then(Value::as_str) {
                let _ = account::ApplicationStatus::from_pingpp(status);
            }
        }
        EventAction::DecideMerchantApplication(object) => {
            if let Some(status) = object.get("status").and_then(Value::as_str) {
                let _ = merchant::ApplicationStatus::from_pingpp(status);
            }
        }
        EventAction::CompleteOrder(object) => {
            let _ = purchase::order_facts(&object);
        }
        EventAction::CompleteRefund(object) => {
            let _ = purchase::refund_facts(&object);
        }
        EventAction::CompleteRechargeRefund(object) => {
            if let Ok(facts) = refund::facts(&object) {
                if let Some(mark) = &facts.refund_no {
                    let _ = refund::id_of_refund_no(mark);
                }
            }
        }
        EventAction::CompleteAllocation(object) => {
            let _ = allocation::facts(&object);
        }
        EventAction::Record => {}
    }
});
