//! The machine-readable contract (docs/asyncapi.yaml, docs/schemas) against the code. Real
//! results and events are checked against the schemas in every integration test (see
//! tests/it/support); this file checks the documents themselves.

use crate::support::schemas::{check, Schema};
use pluspay::domain::command::CommandType;
use serde_json::json;

const ASYNCAPI: &str = include_str!("../../docs/asyncapi.yaml");

#[test]
fn asyncapi_names_every_command_type_and_only_existing_schemas() {
    for kind in CommandType::ALL {
        assert!(
            ASYNCAPI.contains(kind.as_str()),
            "{} missing",
            kind.as_str()
        );
    }
    let mut refs = 0;
    for line in ASYNCAPI.lines() {
        if let Some(rest) = line.split("$ref: './").nth(1) {
            let file = rest.trim_end_matches('\'');
            let path = format!("{}/docs/{file}", env!("CARGO_MANIFEST_DIR"));
            assert!(std::path::Path::new(&path).exists(), "{path}");
            refs += 1;
        }
    }
    assert_eq!(refs, 4);
    for name in [
        "pluspay.commands",
        "pluspay.results",
        "pluspay.events",
        "pluspay.dead",
        "pluspay.webhooks",
        "x-pluspay-error",
    ] {
        assert!(ASYNCAPI.contains(name), "{name}");
    }
}

#[test]
fn the_contracts_examples_match_and_broken_messages_do_not() {
    check(
        Schema::Command,
        &json!({"id": "9f0c2c1e-upstream-key", "type": "transfer", "user_id": 1, "data": {"user": 2, "amount": 100}}),
    );
    check(
        Schema::Result,
        &json!({"id": "b7", "type": "cash", "user_id": 1, "status": "rejected", "code": "insufficient_balance",
                "message": ["提现金额超出账户余额"], "errors": {"value": ["提现金额超出账户余额"]}}),
    );
    let broken = [
        (
            Schema::Command,
            json!({"id": "has space", "type": "transfer", "user_id": 1}),
        ),
        (
            Schema::Command,
            json!({"id": "x", "type": "mint", "user_id": 1}),
        ),
        (
            Schema::Result,
            json!({"id": "x", "type": "cash", "user_id": 1, "status": "rejected", "message": []}),
        ),
        (
            Schema::Result,
            json!({"id": "x", "type": "transfer", "user_id": 1, "status": "succeeded", "message": [],
                                "data": {"order": {"id": 1, "state": 2}}}),
        ),
    ];
    for (schema, message) in broken {
        let refused = std::panic::catch_unwind(|| check(schema, &message)).is_err();
        assert!(refused, "{message} should not match {schema:?}");
    }
}

#[test]
fn the_real_ping_plus_plus_fixtures_match_the_queued_event_schema() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pingpp-webhook");
    for name in [
        "event-charge-succeeded.json",
        "event-charge-succeeded-wx-pub.json",
        "event-account-summary.json",
    ] {
        let body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{name}")).unwrap())
                .unwrap();
        check(Schema::PingppEvent, &body);
    }
}

#[test]
fn the_dashboard_only_uses_metrics_the_code_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana-dashboard.json")).unwrap();
    let exported = [
        pluspay::metrics::COMMANDS,
        pluspay::metrics::COMMAND_SECONDS,
        pluspay::metrics::EVENTS,
        pluspay::metrics::DB_RETRIES,
        pluspay::metrics::BROKER_RECONNECTS,
        pluspay::metrics::IN_FLIGHT,
        pluspay::metrics::WEBHOOKS,
        pluspay::metrics::PINGPP_REQUESTS,
        pluspay::metrics::PINGPP_SECONDS,
        pluspay::metrics::LEDGER_OK,
        pluspay::metrics::LEDGER_VIOLATIONS,
    ];
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let used: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("pluspay_"))
                .collect();
            assert!(!used.is_empty(), "{expr}");
            for name in used {
                let base = name.trim_end_matches("_bucket");
                assert!(exported.contains(&base), "{name} is not exported");
            }
        }
        panels += 1;
    }
    assert!(panels >= 8);
}
