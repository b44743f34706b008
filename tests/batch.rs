//! Group commit: several commands in one transaction, each decided on its own.

mod support;

use pluspay::domain::command::decode;
use pluspay::domain::outcome::Status;
use serde_json::json;
use support::{transfer, TestEnv};

fn envelope(value: serde_json::Value) -> pluspay::domain::command::Envelope {
    decode(value.to_string().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_once_and_decides_each_command_alone() {
    let mut env = TestEnv::new().await;
    env.fund(1, 300).await;
    env.fund(9, 1_000).await;
    let engine = pluspay::worker::engine(&env.settings).unwrap();
    let batch = [
        envelope(transfer("b-1", 1, 2, 100)),
        envelope(transfer("b-2", 1, 3, 150)),
        envelope(transfer("b-3", 1, 4, 100)), // 50 left: rejected, the others stand
        envelope(transfer("b-1", 1, 2, 100)), // a twin: answered as a redelivery
        envelope(transfer("b-2", 1, 3, 1)),   // same id, other content: a conflict
        envelope(
            json!({"id": "b-4", "type": "cash.approve", "user_id": 99, "data": {"cash": 77, "remark": "x"}}),
        ),
        envelope(json!({"id": "b-5", "type": "wallet.get", "user_id": 1})),
        envelope(json!({"id": "b-6", "type": "transform", "user_id": 9, "data": {"amount": 500}})),
    ];
    let results: Vec<_> = engine
        .apply_batch(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let body = |i: usize| serde_json::from_str::<serde_json::Value>(&results[i].body).unwrap();
    assert_eq!(results[0].status, Status::Succeeded);
    assert_eq!(results[1].status, Status::Succeeded);
    assert_eq!(body(2)["code"], "insufficient_balance");
    assert_eq!(
        (results[3].body.as_str(), results[3].replayed),
        (results[0].body.as_str(), true)
    );
    assert_eq!(body(4)["code"], "idempotency_conflict");
    assert_eq!(body(5)["code"], "unknown_cash");
    assert_eq!(body(6)["data"]["balance"], 50);
    assert_eq!(results[7].status, Status::Succeeded);
    assert_eq!(
        (
            env.balance(1).await,
            env.balance(2).await,
            env.balance(3).await
        ),
        (50, 100, 150)
    );
    // One transaction wrote every command row.
    assert_eq!(
        env.count("SELECT count(DISTINCT xmin::text) FROM commands")
            .await,
        1
    );
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 6);

    // The same batch again changes nothing and answers the same.
    let again: Vec<_> = engine
        .apply_batch(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (first, second) in results.iter().zip(&again) {
        assert_eq!(first.body, second.body);
    }
    assert_eq!(env.balance(1).await, 50);
    assert!(env.audit().await.ok);
}
