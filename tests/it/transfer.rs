//! `transfer` and `reward` end to end, against real PostgreSQL and RabbitMQ.

use crate::support::{transfer, TestEnv};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_money_and_writes_both_orders() {
    let env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;

    let result = client.call(transfer("t-1", 1, 2, 100)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["id"], "t-1");
    assert_eq!(result["type"], "transfer");
    assert_eq!(result["user_id"], 1);
    assert_eq!(result["message"], json!(["转账成功"]));
    let order = &result["data"]["order"];
    assert_eq!(order["owner_id"], 1);
    assert_eq!(order["target_type"], "user");
    assert_eq!(order["target_id"], "2");
    assert_eq!(order["title"], "转账");
    assert_eq!(order["type"], -1);
    assert_eq!(order["amount"], 100);
    assert_eq!(order["state"], 1);
    let created_at = order["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2018-01-02 02:26:33".len(),
        "{created_at}"
    );

    assert_eq!(env.balance(1).await, 900);
    assert_eq!(env.balance(2).await, 100);
    let receiver_order = env
        .db
        .query_one(
            "SELECT target_type, target_id, type, amount, state, title FROM wallet_orders WHERE owner_id = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(receiver_order.get::<_, &str>(0), "user");
    assert_eq!(receiver_order.get::<_, &str>(1), "1");
    assert_eq!(receiver_order.get::<_, i16>(2), 1);
    assert_eq!(receiver_order.get::<_, i64>(3), 100);
    assert_eq!(receiver_order.get::<_, i16>(4), 1);
    assert_eq!(receiver_order.get::<_, &str>(5), "转账");
    let totals = env
        .db
        .query_one(
            "SELECT total_income, total_expenses FROM wallets WHERE user_id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (totals.get::<_, i64>(0), totals.get::<_, i64>(1)),
        (1_000, 100)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reward_is_a_transfer_with_its_own_target_type_and_body() {
    let env = TestEnv::new().await;
    env.fund(5, 500).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let result = client
        .call(json!({"id": "r-1", "type": "reward", "user_id": 5, "data": {"user": 6, "amount": 50, "body": "好文"}}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["data"]["order"]["target_type"], "reward");
    assert_eq!(result["data"]["order"]["body"], "好文");
    assert_eq!((env.balance(5).await, env.balance(6).await), (450, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_use_the_wallet_api_words_and_touch_no_money() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let cases: Vec<(Value, &str, &str, &str)> = vec![
        (
            json!({"user": 2}),
            "amount_required",
            "amount",
            "请输入转账金额",
        ),
        (
            json!({"user": 2, "amount": "100"}),
            "invalid_amount",
            "amount",
            "发送的数据错误",
        ),
        (
            json!({"user": 2, "amount": 1.5}),
            "invalid_amount",
            "amount",
            "发送的数据错误",
        ),
        (
            json!({"user": 2, "amount": 0}),
            "amount_too_small",
            "amount",
            "转账金额不能小于0.01元",
        ),
        (
            json!({"user": 2, "amount": -100}),
            "amount_too_small",
            "amount",
            "转账金额不能小于0.01元",
        ),
        (
            json!({"user": 2, "amount": 1_001}),
            "insufficient_balance",
            "amount",
            "转账金额超出账户余额",
        ),
        (
            json!({"user": 2, "amount": 18446744073709551615u64}),
            "amount_overflow",
            "amount",
            "发送的数据错误",
        ),
        (
            json!({"user": 2, "amount": 1e30}),
            "amount_overflow",
            "amount",
            "发送的数据错误",
        ),
        (
            json!({"amount": 100}),
            "user_required",
            "user",
            "请填写转账用户",
        ),
        (
            json!({"user": 0, "amount": 100}),
            "invalid_user",
            "user",
            "发送的数据错误",
        ),
        (
            json!({"user": "2", "amount": 100}),
            "invalid_user",
            "user",
            "发送的数据错误",
        ),
        (
            json!({"user": 1, "amount": 100}),
            "self_transfer",
            "user",
            "不能转账给自己",
        ),
    ];
    for (i, (data, code, field, message)) in cases.iter().enumerate() {
        let id = format!("bad-{i}");
        let result = client
            .call(json!({"id": id, "type": "transfer", "user_id": 1, "data": data}))
            .await;
        assert_eq!(result["status"], "rejected", "{data}: {result}");
        assert_eq!(result["code"], *code, "{data}: {result}");
        assert_eq!(
            result["errors"][field],
            json!([message]),
            "{data}: {result}"
        );
        assert!(
            result["message"]
                .as_array()
                .unwrap()
                .contains(&json!(message)),
            "{result}"
        );
        assert!(result.get("data").is_none(), "{result}");
    }
    assert_eq!(env.balance(1).await, 1_000);
    assert_eq!(env.balance(2).await, 0);
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind <> 'test_funding'")
            .await,
        0
    );
    // Every rejection is stored as the id's one result.
    assert_eq!(
        env.count("SELECT count(*) FROM commands WHERE status = 'rejected'")
            .await,
        cases.len() as i64
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_five_times_applies_once_with_five_identical_results() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let command = transfer("dup-1", 1, 2, 300);
    for _ in 0..5 {
        client.command(&command).await;
    }
    client.wait_results(5).await;
    let results = client.received["dup-1"].clone();
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    assert_eq!(results[0]["status"], "succeeded");
    assert_eq!((env.balance(1).await, env.balance(2).await), (700, 300));
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 2);

    // The same id with other content: refused, nothing changes, the stored result stays.
    let conflict = client.call(transfer("dup-1", 1, 2, 301)).await;
    assert_eq!(conflict["status"], "rejected");
    assert_eq!(conflict["code"], "idempotency_conflict");
    assert_eq!((env.balance(1).await, env.balance(2).await), (700, 300));
    let again = client.call(command.clone()).await;
    assert_eq!(again, results[0]);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dead_lettered_and_the_next_command_still_runs() {
    let env = TestEnv::new().await;
    env.fund(1, 100).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let huge = format!(
        r#"{{"id":"huge","type":"transfer","user_id":1,"data":{{"pad":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    let garbage: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
        (b"not json at all".to_vec(), Some("g-1"), "not JSON"),
        (
            br#"{"type":"transfer","user_id":1,"data":{"user":2,"amount":1}}"#.to_vec(),
            None,
            "id is missing",
        ),
        (huge.into_bytes(), None, "exceeds the limit"),
        (
            br#"{"id":"g-4","type":"teleport","user_id":1}"#.to_vec(),
            Some("g-4"),
            "unknown command type",
        ),
        (vec![0xff, 0xfe, 0x00], None, "not JSON"),
    ];
    for (body, correlation_id, _) in &garbage {
        client.raw(body, *correlation_id).await;
    }
    // The worker is still alive: a good command after the garbage is applied.
    let result = client.call(transfer("after-garbage", 1, 2, 10)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(env.balance(2).await, 10);

    // Those that asked for a reply got a `malformed` rejection.
    for id in ["g-1", "g-4"] {
        let reply = &client.received[id][0];
        assert_eq!(reply["status"], "rejected", "{reply}");
        assert_eq!(reply["code"], "malformed", "{reply}");
    }
    assert_eq!(client.received["g-4"][0]["id"], "g-4");

    let dead = client.dead_letters(garbage.len()).await;
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|d| {
            pluspay::amqp::publisher::header_str(
                d.properties.headers(),
                pluspay::worker::ERROR_HEADER,
            )
            .expect("a dead letter carries its reason")
            .to_owned()
        })
        .collect();
    for (_, _, reason) in &garbage {
        let at = reasons
            .iter()
            .position(|r| r.contains(reason))
            .unwrap_or_else(|| panic!("no dead letter says {reason:?}: {reasons:?}"));
        reasons.remove(at);
    }
    // Nothing malformed reached the command log.
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_gracefully_leaves_nothing_half_done() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let worker = env.start_worker();
    let mut client = env.client().await;
    assert_eq!(
        client.call(transfer("s-1", 1, 2, 1)).await["status"],
        "succeeded"
    );
    worker.stop().await;
    // Commands published while no worker runs wait in the durable queue.
    for i in 0..20 {
        client
            .command(&transfer(&format!("s-wait-{i}"), 1, 2, 1))
            .await;
    }
    let _worker = env.start_worker();
    client.wait_results(21).await;
    assert_eq!(env.balance(2).await, 21);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_the_ledger_cannot_store_is_a_field_error_with_an_answer() {
    let env = TestEnv::new().await;
    env.fund(7, 500).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let commands = [
        (
            json!({"id": "nul-1", "type": "reward", "user_id": 7, "data": {"user": 8, "amount": 50, "body": "a\u{0}b"}}),
            "body",
        ),
        (
            json!({"id": "nul-2", "type": "cash", "user_id": 7, "data": {"value": 100, "type": "alipay", "account": "a\u{0}@b.cn"}}),
            "account",
        ),
        (
            json!({"id": "nul-3", "type": "cash.approve", "user_id": 1, "data": {"cash": 1, "remark": "ok\u{0}"}}),
            "remark",
        ),
        (
            json!({"id": "nul-4", "type": "transfer", "user_id": 7, "data": {"user": 8, "amount": 5, "x\u{0}": 1}}),
            "data",
        ),
    ];
    for (command, field) in commands {
        let result = client.call(command.clone()).await;
        assert_eq!(result["status"], "rejected", "{result}");
        assert_eq!(result["code"], "invalid_text", "{result}");
        assert_eq!(
            result["errors"][field],
            json!(["发送的数据错误"]),
            "{result}"
        );
        // Stored like any result: the same command again gets the same answer.
        assert_eq!(client.call(command).await, result);
    }
    // Sent together, so a batch meets them: the good ones still apply.
    for i in 0..8 {
        let body = if i % 2 == 0 { "ok" } else { "\u{0}" };
        client
            .command(
                &json!({"id": format!("nul-b{i}"), "type": "reward", "user_id": 7,
                             "data": {"user": 8, "amount": 10, "body": body}}),
            )
            .await;
    }
    client.wait_results(16).await;
    for i in 0..8 {
        let status = &client.received[&format!("nul-b{i}")][0]["status"];
        assert_eq!(status, if i % 2 == 0 { "succeeded" } else { "rejected" });
    }
    assert_eq!((env.balance(7).await, env.balance(8).await), (460, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_totals_near_their_end_refuse_a_transfer_instead_of_failing() {
    let mut env = TestEnv::new().await;
    env.fund(11, 500).await;
    env.fund(12, 1).await;
    env.fund(13, 500).await;
    // A long history: the receiver's income and the third sender's expenses are near the
    // ceiling, while their balances are small (both totals move, so income - expenses is
    // still the balance, as the audit checks).
    let near = pluspay::domain::ledger::WALLET_CEILING - 60;
    for user in [12_i64, 13] {
        env.db
            .execute(
                "UPDATE accounts SET total_income = total_income + $1,
                        total_expenses = total_expenses + $1
                 WHERE kind = 'wallet' AND user_id = $2",
                &[&near, &user],
            )
            .await
            .unwrap();
    }
    let _worker = env.start_worker();
    let mut client = env.client().await;
    for (id, from, to) in [("ovf-1", 11, 12), ("ovf-2", 13, 11)] {
        let result = client.call(transfer(id, from, to, 100)).await;
        assert_eq!(result["status"], "rejected", "{result}");
        assert_eq!(result["code"], "amount_overflow", "{result}");
        assert_eq!(result["errors"]["amount"], json!(["发送的数据错误"]));
    }
    assert_eq!(
        (
            env.balance(11).await,
            env.balance(12).await,
            env.balance(13).await
        ),
        (500, 1, 500)
    );
    // Under the ceiling it goes through.
    let result = client.call(transfer("ovf-3", 11, 12, 50)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert!(env.audit().await.ok);
}
