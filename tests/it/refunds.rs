//! `recharge.refund` (the money with the platform) against real PostgreSQL and RabbitMQ and the
//! fake Ping++: the money leaves the wallet when the refund is asked for, reaches
//! `pingpp_clearing` when Ping++ reports it succeeded and comes back when it failed, each once
//! whatever the races, replays and lost answers.

use crate::support::fake_pingpp::FakePingpp;
use crate::support::{next_event, BrokerClient, TestEnv, WAIT};
use serde_json::{json, Value};

const DESCRIPTION: &str = "用户申请退款";

/// A recharge of `amount` for `user`, paid and credited; (order id, charge id).
async fn paid_recharge(
    client: &mut BrokerClient,
    fake: &FakePingpp,
    id: &str,
    user: i64,
    amount: i64,
) -> (i64, String) {
    let made = client
        .call(json!({"id": id, "type": "recharge", "user_id": user,
                     "data": {"type": "wx", "amount": amount}}))
        .await;
    assert_eq!(made["status"], "succeeded", "{made}");
    let order = made["data"]["order"]["id"].as_i64().unwrap();
    let charge = made["data"]["pingpp_order"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.pay(&charge);
    let paid = client
        .call(retrieve(&format!("{id}-paid"), user, order))
        .await;
    assert_eq!(paid["data"]["order"]["state"], 1, "{paid}");
    (order, charge)
}

fn refund(id: &str, user: i64, order: i64, amount: i64) -> Value {
    json!({"id": id, "type": "recharge.refund", "user_id": user,
           "data": {"order": order, "amount": amount, "description": DESCRIPTION}})
}

fn retrieve(id: &str, user: i64, order: i64) -> Value {
    json!({"id": id, "type": "recharge.retrieve", "user_id": user, "data": {"order": order}})
}

async fn order_state(env: &TestEnv, order: i64) -> i16 {
    env.db
        .query_one("SELECT state FROM wallet_orders WHERE id = $1", &[&order])
        .await
        .unwrap()
        .get(0)
}

async fn journals(env: &TestEnv, kind: &str) -> i64 {
    env.db
        .query_one("SELECT count(*) FROM journal WHERE kind = $1", &[&kind])
        .await
        .unwrap()
        .get(0)
}

/// The refund in a succeeded result.
fn refund_of(result: &Value) -> &Value {
    assert_eq!(result["status"], "succeeded", "{result}");
    &result["data"]["refund"]
}

/// Puts Ping++'s event about `refund` on the webhooks queue, as the listener does.
async fn webhook(client: &BrokerClient, fake: &FakePingpp, kind: &str, refund: Value) {
    let (body, _signature) = fake.signed_event(kind, refund);
    client.enqueue_pingpp_event(&body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_money_leaves_at_the_request_and_reaches_clearing_when_ping_plus_plus_refunded() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let mut events = client
        .watch(&client.names.events_exchange, "refund.*")
        .await;
    let (order, charge) = paid_recharge(&mut client, &fake, "rc", 1, 500).await;
    assert_eq!(env.system_balance("pingpp_clearing").await, -500);

    let asked = client.call(refund("rf", 1, order, 300)).await;
    assert_eq!(asked["message"], json!(["退款申请已提交"]));
    let made = refund_of(&asked);
    assert_eq!(made["object"], "refund");
    assert_eq!(made["status"], "pending");
    assert_eq!(
        (made["order"].clone(), made["amount"].clone()),
        (json!(order), json!(300))
    );
    assert_eq!(made["charge"], charge.as_str());
    assert_eq!(made["description"], DESCRIPTION);
    assert_eq!(made["time_succeed"], Value::Null);
    let refund_id = made["id"].as_str().unwrap().to_owned();
    assert!(refund_id.starts_with("re_"), "{made}");
    let refund_order = made["refund_order"].as_i64().unwrap();
    // Out of the wallet at once, waiting in pending_refunds; the refund's own order waits.
    assert_eq!(env.balance(1).await, 200);
    assert_eq!(env.system_balance("pending_refunds").await, 300);
    assert_eq!(env.system_balance("pingpp_clearing").await, -500);
    assert_eq!(order_state(&env, refund_order).await, 0);
    let shown = client
        .call(json!({"id": "og", "type": "orders.get", "user_id": 1, "data": {"order": refund_order}}))
        .await;
    let shown = &shown["data"];
    assert_eq!(shown["target_type"], "recharge_refund");
    assert_eq!(shown["target_id"], order.to_string());
    assert_eq!(
        (shown["type"].clone(), shown["amount"].clone()),
        (json!(-1), json!(300))
    );
    assert_eq!(shown["body"], DESCRIPTION);
    let at_pingpp = fake.charge_refunds();
    assert_eq!(at_pingpp.len(), 1);
    assert_eq!(at_pingpp[0]["amount"], 300);
    assert!(at_pingpp[0]["metadata"]["refund_no"]
        .as_str()
        .unwrap()
        .starts_with('f'));
    assert!(env.audit().await.ok);

    // Ping++ refunded the payer: the webhook moves the money on to clearing, once.
    let succeeded = fake.succeed_charge_refund(&refund_id);
    for _ in 0..3 {
        webhook(&client, &fake, "refund.succeeded", succeeded.clone()).await;
    }
    let published = next_event(&mut events).await;
    assert_eq!(published["type"], "refund.succeeded");
    assert_eq!(published["user_id"], 1);
    assert_eq!(published["data"]["order"]["id"], refund_order);
    assert_eq!(published["data"]["order"]["state"], 1);
    assert_eq!(published["data"]["refund"]["status"], "succeeded");
    assert!(published["data"]["refund"]["time_succeed"].is_i64());
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome <> 'waiting'",
        3,
    )
    .await;
    assert_eq!(env.balance(1).await, 200);
    assert_eq!(env.system_balance("pending_refunds").await, 0);
    assert_eq!(env.system_balance("pingpp_clearing").await, -200);
    assert_eq!(order_state(&env, refund_order).await, 1);
    assert_eq!(order_state(&env, order).await, 1, "the recharge stays paid");
    assert_eq!(journals(&env, "recharge.refund").await, 1);
    assert_eq!(journals(&env, "recharge.refund_succeeded").await, 1);
    // The pull of its order now answers the settled refund, asking Ping++ nothing.
    let before = fake.requests();
    let pulled = client.call(retrieve("rt", 1, refund_order)).await;
    assert_eq!(pulled["data"]["order"]["state"], 1, "{pulled}");
    assert_eq!(pulled["data"]["refund"]["status"], "succeeded");
    assert_eq!(fake.requests(), before);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refund_puts_the_money_back_in_the_wallet() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let mut events = client
        .watch(&client.names.events_exchange, "refund.*")
        .await;
    let (order, _) = paid_recharge(&mut client, &fake, "rc", 2, 400).await;

    // Ping++ documents only refund.succeeded; its refund may say failed.
    let first = client.call(refund("rf-1", 2, order, 400)).await;
    let first = refund_of(&first).clone();
    assert_eq!(env.balance(2).await, 0);
    let failed = fake.fail_charge_refund(
        first["id"].as_str().unwrap(),
        "refund_failed",
        "银行卡已注销",
    );
    webhook(&client, &fake, "refund.succeeded", failed).await;
    let published = next_event(&mut events).await;
    assert_eq!(published["type"], "refund.failed");
    assert_eq!(published["data"]["reason"], "银行卡已注销");
    assert_eq!(published["data"]["order"]["state"], -1);
    assert_eq!(published["data"]["refund"]["status"], "failed");
    assert_eq!(published["data"]["refund"]["failure_msg"], "银行卡已注销");
    assert_eq!(env.balance(2).await, 400);
    assert_eq!(env.system_balance("pending_refunds").await, 0);
    assert_eq!(env.system_balance("pingpp_clearing").await, -400);
    assert!(env.audit().await.ok);

    // A failed refund takes nothing of the charge: the whole of it can be asked for again, and
    // a refund.failed event is taken too.
    let second = client.call(refund("rf-2", 2, order, 400)).await;
    let second = refund_of(&second).clone();
    assert_eq!(env.system_balance("pending_refunds").await, 400);
    let failed = fake.fail_charge_refund(
        second["id"].as_str().unwrap(),
        "refund_failed",
        "渠道退款失败",
    );
    webhook(&client, &fake, "refund.failed", failed).await;
    let published = next_event(&mut events).await;
    assert_eq!(published["type"], "refund.failed");
    assert_eq!(
        published["data"]["refund"]["refund_order"],
        second["refund_order"]
    );
    assert_eq!(env.balance(2).await, 400);
    assert_eq!(
        order_state(&env, second["refund_order"].as_i64().unwrap()).await,
        -1
    );
    assert_eq!(journals(&env, "recharge.refund_returned").await, 2);
    assert_eq!(env.system_balance("pending_refunds").await, 0);
    assert!(env.audit().await.ok);
}

fn rejection(result: &Value) -> (&str, &Value) {
    assert_eq!(result["status"], "rejected", "{result}");
    (result["code"].as_str().unwrap(), &result["errors"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_beyond_the_charge_or_the_wallet_or_badly_asked_are_rejected() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let (order, _) = paid_recharge(&mut client, &fake, "rc", 3, 500).await;
    let (other_users, _) = paid_recharge(&mut client, &fake, "rc-other", 4, 100).await;
    let unpaid = client
        .call(json!({"id": "rc-unpaid", "type": "recharge", "user_id": 3,
                     "data": {"type": "wx", "amount": 100}}))
        .await["data"]["order"]["id"]
        .as_i64()
        .unwrap();

    let result = client.call(refund("big", 3, order, 501)).await;
    let (code, errors) = rejection(&result);
    assert_eq!(code, "refund_too_large");
    assert_eq!(errors["amount"], json!(["退款金额超出可退金额"]));
    refund_of(&client.call(refund("part", 3, order, 300)).await);
    // What is pending counts: 200 are left of the charge.
    let result = client.call(refund("more", 3, order, 201)).await;
    assert_eq!(rejection(&result).0, "refund_too_large");
    // And never more than the wallet holds now.
    let spent = client.call(crate::support::transfer("t", 3, 9, 150)).await;
    assert_eq!(spent["status"], "succeeded", "{spent}");
    let result = client.call(refund("poor", 3, order, 100)).await;
    let (code, errors) = rejection(&result);
    assert_eq!(code, "insufficient_balance");
    assert_eq!(errors["amount"], json!(["账户余额不足"]));

    let transfer_order = spent["data"]["order"]["id"].as_i64().unwrap();
    let cases = [
        (
            json!({"amount": 1, "description": "d"}),
            "order_required",
            "order",
        ),
        (
            json!({"order": "x", "amount": 1, "description": "d"}),
            "invalid_order",
            "order",
        ),
        (
            json!({"order": order, "description": "d"}),
            "amount_required",
            "amount",
        ),
        (
            json!({"order": order, "amount": 0, "description": "d"}),
            "invalid_amount",
            "amount",
        ),
        (
            json!({"order": order, "amount": "5", "description": "d"}),
            "invalid_amount",
            "amount",
        ),
        (
            json!({"order": order, "amount": 1}),
            "invalid_description",
            "description",
        ),
        (
            json!({"order": order, "amount": 1, "description": "x".repeat(256)}),
            "invalid_description",
            "description",
        ),
        (
            json!({"order": 999_999, "amount": 1, "description": "d"}),
            "unknown_order",
            "order",
        ),
        (
            json!({"order": other_users, "amount": 1, "description": "d"}),
            "unknown_order",
            "order",
        ),
        (
            json!({"order": transfer_order, "amount": 1, "description": "d"}),
            "not_recharge",
            "order",
        ),
        (
            json!({"order": unpaid, "amount": 1, "description": "d"}),
            "order_not_paid",
            "order",
        ),
    ];
    for (i, (data, code, field)) in cases.into_iter().enumerate() {
        let result = client
            .call(json!({"id": format!("bad-{i}"), "type": "recharge.refund", "user_id": 3, "data": data}))
            .await;
        let (got, errors) = rejection(&result);
        assert_eq!(got, code, "{data}: {result}");
        assert!(errors[field].is_array(), "{data}: {result}");
    }
    assert_eq!(fake.charge_refunds().len(), 1, "no rejection asked Ping++");
    assert_eq!(env.system_balance("pending_refunds").await, 300);

    // Ping++ refusing the refund: the money comes back and the command is rejected.
    fake.error_next_on(
        "POST",
        "/refunds",
        1,
        400,
        "invalid_request_error",
        "该渠道不支持退款",
    );
    let result = client.call(refund("refused", 3, order, 50)).await;
    let (code, errors) = rejection(&result);
    assert_eq!(code, "payment_provider_error");
    assert!(
        errors["pingpp"][0]
            .as_str()
            .unwrap()
            .contains("该渠道不支持退款"),
        "{result}"
    );
    assert_eq!(env.balance(3).await, 50);
    assert_eq!(env.system_balance("pending_refunds").await, 300);
    let refused_order: i64 = env
        .db
        .query_one(
            "SELECT order_id FROM recharge_refunds WHERE command_id = 'refused'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(order_state(&env, refused_order).await, -1);
    assert_eq!(journals(&env, "recharge.refund_returned").await, 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_answers_the_same_and_a_lost_answer_refunds_once() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let (order, _) = paid_recharge(&mut client, &fake, "rc", 5, 900).await;

    let first = client.call(refund("rf", 5, order, 100)).await;
    refund_of(&first);
    let again = client.call(refund("rf", 5, order, 100)).await;
    assert_eq!(again, first, "a replay answers the same");
    let other = client.call(refund("rf", 5, order, 101)).await;
    assert_eq!(rejection(&other).0, "idempotency_conflict");
    assert_eq!(fake.charge_refunds().len(), 1);
    assert_eq!(env.system_balance("pending_refunds").await, 100);

    // Ping++ made the refund but its answer was lost: found in the charge's list, not made again.
    fake.lose_next_answers_on("POST", "/refunds", 1);
    let lost = client.call(refund("lost", 5, order, 200)).await;
    let lost = refund_of(&lost).clone();
    assert_eq!(fake.charge_refunds().len(), 2);
    assert_eq!(lost["id"], fake.charge_refunds()[1]["id"]);

    // A 5xx before Ping++ did anything: nothing in the list, so it is sent again, once, after
    // the earlier create can no longer turn up.
    fake.fail_next_on("POST", "/refunds", 1, 500);
    let retried = client.call(refund("retried", 5, order, 300)).await;
    refund_of(&retried);
    assert_eq!(fake.charge_refunds().len(), 3);
    let posts = fake
        .request_log()
        .iter()
        .filter(|(method, path)| method == "POST" && path.ends_with("/refunds"))
        .count();
    assert_eq!(posts, 4, "one create each, and the one 5xx sent again");
    assert_eq!(env.balance(5).await, 300);
    assert_eq!(env.system_balance("pending_refunds").await, 600);
    assert_eq!(journals(&env, "recharge.refund").await, 3);

    // Ping++ deciding a refund in its answer completes it at once.
    fake.decide_charge_refunds_at_once(Some("succeeded"));
    let at_once = client.call(refund("at-once", 5, order, 300)).await;
    assert_eq!(refund_of(&at_once)["status"], "succeeded");
    assert_eq!(env.balance(5).await, 0);
    assert_eq!(env.system_balance("pending_refunds").await, 600);
    assert_eq!(env.system_balance("pingpp_clearing").await, -600);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_racing_for_the_same_fen_one_wins() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let _second_worker = env.start_worker();
    // The charge: five refunds of 300 for a charge of 500.
    let (order, _) = paid_recharge(&mut client, &fake, "rc", 6, 500).await;
    for i in 0..5 {
        client
            .command(&refund(&format!("race-{i}"), 6, order, 300))
            .await;
    }
    client.wait_results(7).await;
    let outcomes: Vec<&str> = (0..5)
        .map(|i| {
            let result = &client.received[&format!("race-{i}")][0];
            match result["status"].as_str().unwrap() {
                "succeeded" => "won",
                _ => result["code"].as_str().unwrap(),
            }
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "won").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == "refund_too_large")
            .count(),
        4,
        "{outcomes:?}"
    );
    assert_eq!(env.balance(6).await, 200);

    // The wallet: two recharges, two refunds of 300 each, 300 in the wallet.
    let (a, _) = paid_recharge(&mut client, &fake, "rc-a", 7, 300).await;
    let (b, _) = paid_recharge(&mut client, &fake, "rc-b", 7, 300).await;
    let spent = client.call(crate::support::transfer("t", 7, 8, 300)).await;
    assert_eq!(spent["status"], "succeeded");
    client.command(&refund("wallet-a", 7, a, 300)).await;
    client.command(&refund("wallet-b", 7, b, 300)).await;
    client.wait_results(7 + 2 * 2 + 1 + 2).await;
    let codes: Vec<Value> = ["wallet-a", "wallet-b"]
        .iter()
        .map(|id| {
            let result = &client.received[*id][0];
            result.get("code").cloned().unwrap_or(json!("won"))
        })
        .collect();
    assert!(
        codes.contains(&json!("won")) && codes.contains(&json!("insufficient_balance")),
        "{codes:?}"
    );
    assert_eq!(env.balance(7).await, 0);
    assert_eq!(env.system_balance("pending_refunds").await, 600);
    assert_eq!(fake.charge_refunds().len(), 2);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_and_pulls_racing_complete_the_refund_once() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let (order, _) = paid_recharge(&mut client, &fake, "rc", 10, 700).await;
    let made = client.call(refund("rf", 10, order, 700)).await;
    let made = refund_of(&made).clone();
    let refund_order = made["refund_order"].as_i64().unwrap();
    let succeeded = fake.succeed_charge_refund(made["id"].as_str().unwrap());
    let (body, _) = fake.signed_event("refund.succeeded", succeeded);
    for i in 0..5 {
        client.enqueue_pingpp_event(&body).await;
        client
            .command(&retrieve(&format!("pull-{i}"), 10, refund_order))
            .await;
    }
    client.wait_results(2 + 1 + 5).await;
    for i in 0..5 {
        let pulled = &client.received[&format!("pull-{i}")][0];
        assert_eq!(pulled["status"], "succeeded", "{pulled}");
        // Each saw it pending or settled, never anything else.
        let state = pulled["data"]["order"]["state"].as_i64().unwrap();
        assert!(state == 0 || state == 1, "{pulled}");
    }
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome <> 'waiting'",
        1,
    )
    .await;
    env.wait_for_count(
        "SELECT count(*) FROM recharge_refunds WHERE status = 'succeeded'",
        1,
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.webhooks_queue_depth().await != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(journals(&env, "recharge.refund_succeeded").await, 1);
    assert_eq!(env.system_balance("pending_refunds").await, 0);
    assert_eq!(env.system_balance("pingpp_clearing").await, 0);
    assert_eq!(env.balance(10).await, 0);
    assert_eq!(order_state(&env, refund_order).await, 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_asks_about_a_refund_whose_webhook_does_not_come() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|s| s.worker.refund_pull_secs = 1).await;
    let (order, _) = paid_recharge(&mut client, &fake, "rc", 11, 250).await;
    let made = client.call(refund("rf", 11, order, 250)).await;
    let made = refund_of(&made).clone();
    fake.fail_charge_refund(made["id"].as_str().unwrap(), "refund_failed", "退款超时");
    env.wait_for_count(
        "SELECT count(*) FROM recharge_refunds WHERE status = 'failed'",
        1,
    )
    .await;
    assert_eq!(env.balance(11).await, 250);
    assert_eq!(env.system_balance("pending_refunds").await, 0);
    let pull: String = env
        .db
        .query_one(
            "SELECT c.id FROM commands c JOIN journal j ON j.command_id = c.id
             WHERE j.kind = 'recharge.refund_returned'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        pull.starts_with("refund-") && pull.contains("-pull-"),
        "{pull}"
    );
    assert!(env.audit().await.ok);
}

/// A frozen wallet sends nothing, a refund neither: nothing leaves it, nothing is asked of
/// Ping++; once unfrozen the same refund goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_wallet_refunds_nothing() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let (order, _charge) = paid_recharge(&mut client, &fake, "rc-f", 14, 500).await;
    let freeze = |id: &str, kind: &str| json!({"id": id, "type": kind, "user_id": 900, "data": {"user": 14, "reason": "风控"}});
    assert_eq!(
        client.call(freeze("fz-1", "wallet.freeze")).await["status"],
        "succeeded"
    );
    let asked_before = fake.requests();
    let frozen = client.call(refund("rf-f", 14, order, 100)).await;
    let (code, errors) = rejection(&frozen);
    assert_eq!(code, "wallet_frozen");
    assert_eq!(errors["user_id"], json!(["钱包已被冻结，无法支出"]));
    assert_eq!(fake.requests(), asked_before, "Ping++ was not asked");
    assert_eq!(env.balance(14).await, 500);
    assert_eq!(journals(&env, "recharge.refund").await, 0);
    assert_eq!(
        client.call(freeze("fz-2", "wallet.unfreeze")).await["status"],
        "succeeded"
    );
    let thawed = client.call(refund("rf-g", 14, order, 100)).await;
    assert_eq!(refund_of(&thawed)["amount"], 100);
    assert_eq!(env.balance(14).await, 400);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_money_at_ping_plus_plus_there_is_no_recharge_refund() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(crate::custody::custody_mode).await;
    let result = client.call(refund("rf", 12, 1, 100)).await;
    let (code, errors) = rejection(&result);
    assert_eq!(code, "custody_mode");
    assert_eq!(errors["type"], json!(["当前钱包模式不支持该操作"]));
    assert_eq!(fake.requests(), 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_a_charge_refund_once_signed_and_finds_it_by_its_mark() {
    use crate::support::fake_pingpp::{generate_test_keys, APP_ID, SECRET_KEY};
    use pluspay::pingpp::{
        ChargeRefundRequest, ChargeRequest, ClientConfig, MerchantKey, PingppClient, PingppError,
    };
    let (private_pem, public_pem) = generate_test_keys();
    let fake = FakePingpp::start(Some(&public_pem)).await;
    let mut config = ClientConfig::new(APP_ID, SECRET_KEY);
    config.api_base = fake.url();
    config.merchant_key = Some(MerchantKey::from_pem(&private_pem).unwrap());
    config.max_retries = 2;
    let client = PingppClient::new(config).unwrap().with_retry_delays(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(5),
    );
    let charge = client
        .create_charge(&ChargeRequest {
            order_no: "a0000000000000000001".into(),
            channel: "wx".into(),
            amount: 500,
            client_ip: "127.0.0.1".into(),
            subject: "充值".into(),
            body: "余额充值".into(),
            extra: None,
            time_expire: None,
            metadata: None,
            description: None,
        })
        .await
        .unwrap();
    let charge = charge["id"].as_str().unwrap().to_owned();
    let ask = |amount: u64, n: u32| ChargeRefundRequest {
        amount,
        description: DESCRIPTION.into(),
        refund_no: format!("f{n:019}"),
    };

    // Unpaid: refused, and Ping++ certainly did nothing.
    let refused = client
        .create_charge_refund(&charge, &ask(300, 1))
        .await
        .unwrap_err();
    assert!(!refused.may_have_acted);
    assert!(
        matches!(refused.error, PingppError::Api { status: 400, .. }),
        "{:?}",
        refused.error
    );
    fake.pay(&charge);
    let made = client
        .create_charge_refund(&charge, &ask(300, 1))
        .await
        .unwrap();
    assert_eq!(made["status"], "pending");
    assert_eq!(made["metadata"]["refund_no"], "f0000000000000000001");
    // A 5xx is not sent again: Ping++ may have acted.
    fake.fail_next_on("POST", "/refunds", 1, 503);
    let unknown = client
        .create_charge_refund(&charge, &ask(100, 2))
        .await
        .unwrap_err();
    assert!(unknown.may_have_acted);
    assert_eq!(fake.charge_refunds().len(), 1);
    // Rate limited is: it was turned away before anything happened.
    fake.fail_next_on("POST", "/refunds", 1, 429);
    let second = client
        .create_charge_refund(&charge, &ask(100, 2))
        .await
        .unwrap();
    assert_eq!(fake.charge_refunds().len(), 2);
    // More than the charge has left (pending refunds count): refused.
    let too_much = client
        .create_charge_refund(&charge, &ask(101, 3))
        .await
        .unwrap_err();
    assert!(!too_much.may_have_acted);
    assert!(matches!(
        too_much.error,
        PingppError::Api { status: 400, .. }
    ));

    let found = client
        .find_charge_refund(&charge, "f0000000000000000002")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found["id"], second["id"]);
    assert!(client
        .find_charge_refund(&charge, "f0000000000000000003")
        .await
        .unwrap()
        .is_none());
    let made_id = made["id"].as_str().unwrap();
    fake.succeed_charge_refund(made_id);
    let now = client
        .retrieve_charge_refund(&charge, made_id)
        .await
        .unwrap();
    assert_eq!(now["status"], "succeeded");
    let elsewhere = client
        .retrieve_charge_refund("ch_other000000000000000000", made_id)
        .await;
    assert!(matches!(
        elsewhere,
        Err(PingppError::Api { status: 404, .. })
    ));
    assert_eq!(fake.charge(&charge).unwrap()["amount_refunded"], 300);
}
