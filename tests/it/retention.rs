//! The command log keeps the results of reads only for `worker.read_retention_secs`: money
//! commands keep theirs, a read redelivered after its removal is answered afresh, and removal
//! never waits on a row a command holds.

use std::time::Duration;

use pluspay::db::commands::remove_expired_reads;
use serde_json::json;

use crate::support::{transfer, TestEnv};

const DAY: Duration = Duration::from_secs(86_400);

fn wallet_get(id: &str, user: i64) -> serde_json::Value {
    json!({ "id": id, "type": "wallet.get", "user_id": user })
}

async fn age_every_command(env: &TestEnv) {
    env.db
        .execute(
            "UPDATE commands SET created_at = now() - interval '2 days'",
            &[],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_reads_are_removed_and_answered_afresh_money_commands_replayed() {
    let mut env = TestEnv::new().await;
    env.fund(1, 100).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let read = client.call(wallet_get("read-1", 1)).await;
    assert_eq!(read["data"]["balance"], 100, "{read}");
    let paid = client.call(transfer("pay-1", 1, 2, 30)).await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    // Within the retention both replay.
    assert_eq!(client.call(wallet_get("read-1", 1)).await, read);

    age_every_command(&env).await;
    assert_eq!(remove_expired_reads(&env.db, DAY, 1_000).await.unwrap(), 1);
    assert_eq!(remove_expired_reads(&env.db, DAY, 1_000).await.unwrap(), 0);
    assert_eq!(
        env.count("SELECT count(*) FROM commands WHERE id = 'read-1'")
            .await,
        0
    );
    let again = client.call(wallet_get("read-1", 1)).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["data"]["balance"], 70, "answered afresh: {again}");
    assert_eq!(client.call(transfer("pay-1", 1, 2, 30)).await, paid);
    assert_eq!(env.balance(1).await, 70);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_goes_in_batches_and_skips_rows_in_use() {
    let env = TestEnv::new().await;
    env.db
        .batch_execute(
            "INSERT INTO commands (id, type, fingerprint, status, result, created_at)
             SELECT 'old-' || g, 'orders.list', '\\x00', 'succeeded', '{}',
                    now() - interval '2 days'
             FROM generate_series(1, 2500) AS g;
             INSERT INTO commands (id, type, fingerprint, status, result)
             VALUES ('recent', 'orders.list', '\\x00', 'succeeded', '{}');",
        )
        .await
        .unwrap();
    // A command holds one old row (a redelivery being claimed, say): removal passes it by.
    let mut holder = pluspay::db::connect(&env.settings.database.url)
        .await
        .unwrap();
    let held = holder.transaction().await.unwrap();
    held.execute("SELECT 1 FROM commands WHERE id = 'old-7' FOR UPDATE", &[])
        .await
        .unwrap();
    let mut removed = Vec::new();
    loop {
        let batch = tokio::time::timeout(
            Duration::from_secs(10),
            remove_expired_reads(&env.db, DAY, 1_000),
        )
        .await
        .expect("removal never waits on a locked row")
        .unwrap();
        removed.push(batch);
        if batch == 0 {
            break;
        }
    }
    assert_eq!(removed, [1_000, 1_000, 499, 0]);
    held.rollback().await.unwrap();
    assert_eq!(remove_expired_reads(&env.db, DAY, 1_000).await.unwrap(), 1);
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_removes_old_reads_in_the_background() {
    let mut env = TestEnv::new().await;
    env.fund(1, 100).await;
    {
        let _worker = env.start_worker();
        let mut client = env.client().await;
        client.call(wallet_get("read-bg", 1)).await;
        client.call(transfer("pay-bg", 1, 2, 5)).await;
    }
    age_every_command(&env).await;
    env.settings.worker.read_retention_secs = DAY.as_secs();
    let _worker = env.start_worker();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env
        .count("SELECT count(*) FROM commands WHERE id = 'read-bg'")
        .await
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read's result was not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        env.count("SELECT count(*) FROM commands WHERE id = 'pay-bg'")
            .await,
        1
    );
}
