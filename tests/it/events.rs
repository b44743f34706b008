//! Verified Ping++ events applied by the worker: each takes effect once, charge events complete
//! their recharge through the same path as `recharge.retrieve`, and suspicious ones credit
//! nothing. The events are put on the webhooks queue directly, as the listener does.

use std::time::Duration;

use crate::support::{BrokerClient, WAIT};
use pluspay::worker::ERROR_HEADER;
use serde_json::json;

/// A recharge of `amount` for `user`; returns (order id, charge id).
async fn recharge(client: &mut BrokerClient, id: &str, user: i64, amount: i64) -> (i64, String) {
    let result = client
        .call(json!({"id": id, "type": "recharge", "user_id": user, "data": {"type": "wx", "amount": amount}}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    (
        result["data"]["order"]["id"].as_i64().unwrap(),
        result["data"]["pingpp_order"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_succeeded_event_credits_once_however_often_it_arrives() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let mut events = client
        .watch(&client.names.events_exchange, "recharge.*")
        .await;
    let (order, charge) = recharge(&mut client, "rc-1", 1, 800).await;
    let (body, _signature) = fake.signed_event("charge.succeeded", fake.pay(&charge));
    for _ in 0..10 {
        client.enqueue_pingpp_event(&body).await;
    }
    let published = crate::support::next_event(&mut events).await;
    assert_eq!(published["type"], "recharge.succeeded");
    assert_eq!(published["user_id"], 1);
    assert_eq!(published["data"]["order"]["id"], order);
    assert_eq!(published["data"]["order"]["state"], 1);
    env.wait_for_count("SELECT count(*) FROM pingpp_events", 1)
        .await;
    assert_eq!(env.balance(1).await, 800);

    // A retrieve after the webhook changes nothing more.
    let retrieved = client
        .call(json!({"id": "rt", "type": "recharge.retrieve", "user_id": 1, "data": {"order": order}}))
        .await;
    assert_eq!(retrieved["data"]["order"]["state"], 1);
    // Let every duplicate be consumed: the queue drains to empty.
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.webhooks_queue_depth().await != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.balance(1).await, 800);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'recharge'")
            .await,
        1
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspicious_events_credit_nothing_and_are_dead_lettered_with_the_reason() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let (order, charge) = recharge(&mut client, "rc-2", 2, 500).await;
    let paid = fake.pay(&charge);

    let mut bigger = paid.clone();
    bigger["amount"] = json!(5_000);
    let mut dollars = paid.clone();
    dollars["currency"] = json!("usd");
    let mut unknown = paid.clone();
    unknown["id"] = json!("ch_unknown000000000000000");
    unknown["order_no"] = json!("a0000000000009999999");
    let mut live = paid.clone();
    live["livemode"] = json!(true);
    for object in [bigger, dollars, unknown, live] {
        client
            .enqueue_pingpp_event(&fake.signed_event("charge.succeeded", object).0)
            .await;
    }
    client.enqueue_pingpp_event("not json at all").await;
    let dead = client.dead_letters(5).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| {
            pluspay::amqp::publisher::header_str(d.properties.headers(), ERROR_HEADER)
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("amount 5000")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("usd")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("no recharge order")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("livemode")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert_eq!(env.balance(2).await, 0);
    let state: i16 = env
        .db
        .query_one("SELECT state FROM wallet_orders WHERE id = $1", &[&order])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, 0);
    assert_eq!(env.count("SELECT count(*) FROM pingpp_events").await, 0);

    // The genuine event still completes it.
    client
        .enqueue_pingpp_event(&fake.signed_event("charge.succeeded", paid).0)
        .await;
    env.wait_for_count("SELECT count(*) FROM wallet_orders WHERE state = 1", 1)
        .await;
    assert_eq!(env.balance(2).await, 500);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_charges_fail_the_order_and_other_events_are_recorded() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let mut events = client
        .watch(&client.names.events_exchange, "recharge.failed")
        .await;
    let (order, charge) = recharge(&mut client, "rc-3", 3, 300).await;
    let failed = fake.fail_charge(&charge, "channel_declined", "支付失败");
    client
        .enqueue_pingpp_event(&fake.signed_event("charge.failed", failed).0)
        .await;
    let published = crate::support::next_event(&mut events).await;
    assert_eq!(published["type"], "recharge.failed");
    assert_eq!(published["data"]["order"]["id"], order);
    assert_eq!(published["data"]["order"]["state"], -1);

    for kind in [
        "refund.succeeded",
        "summary.daily.available",
        "something.new",
    ] {
        client
            .enqueue_pingpp_event(&fake.signed_event(kind, json!({"object": "whatever"})).0)
            .await;
    }
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'recorded'",
        3,
    )
    .await;
    assert_eq!(env.balance(3).await, 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_racing_retrieves_credits_once() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let (order, charge) = recharge(&mut client, "rc-4", 4, 400).await;
    let (body, _) = fake.signed_event("charge.succeeded", fake.pay(&charge));
    for i in 0..5 {
        client.enqueue_pingpp_event(&body).await;
        client
            .command(&json!({"id": format!("rt-{i}"), "type": "recharge.retrieve", "user_id": 4, "data": {"order": order}}))
            .await;
    }
    client.wait_results(6).await;
    env.wait_for_count("SELECT count(*) FROM pingpp_events", 1)
        .await;
    assert_eq!(env.balance(4).await, 400);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'recharge'")
            .await,
        1
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_confirmed_after_the_order_failed_is_credited_as_late() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let mut events = client
        .watch(&client.names.events_exchange, "recharge.*")
        .await;
    let retrieve = |id: &str, order: i64| json!({"id": id, "type": "recharge.retrieve", "user_id": 5, "data": {"order": order}});
    // Expired by the clock, marked failed by a retrieve; then the payer pays at the deadline
    // and Ping++ signs charge.succeeded.
    let (order, charge) = recharge(&mut client, "rc-late", 5, 700).await;
    fake.expire(&charge);
    let failed = client.call(retrieve("rt-late-1", order)).await;
    assert_eq!(failed["data"]["order"]["state"], -1, "{failed}");
    let (body, _) = fake.signed_event("charge.succeeded", fake.pay(&charge));
    client.enqueue_pingpp_event(&body).await;
    let published = crate::support::next_event(&mut events).await;
    assert_eq!(published["type"], "recharge.succeeded", "{published}");
    assert_eq!(published["data"]["late_payment"], true, "{published}");
    assert_eq!(published["data"]["order"]["state"], 1);
    assert_eq!(env.balance(5).await, 700);
    assert_eq!(
        env.count("SELECT count(*) FROM pingpp_events WHERE outcome = 'credited_late'")
            .await,
        1
    );
    // Delivered again: credited once.
    client.enqueue_pingpp_event(&body).await;
    let replayed = crate::support::next_event(&mut events).await;
    assert_eq!(replayed, published);
    assert_eq!(env.balance(5).await, 700);

    // A retrieve of a failed order asks Ping++ again and finds the late payment too.
    let (order, charge) = recharge(&mut client, "rc-late-2", 5, 300).await;
    fake.fail_charge(&charge, "channel_timeout", "渠道超时");
    let failed = client.call(retrieve("rt-late-2", order)).await;
    assert_eq!(failed["data"]["order"]["state"], -1, "{failed}");
    fake.pay(&charge);
    let paid = client.call(retrieve("rt-late-3", order)).await;
    assert_eq!(paid["data"]["order"]["state"], 1, "{paid}");
    assert_eq!(env.balance(5).await, 1_000);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'recharge'")
            .await,
        2
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_fields_have_the_wrong_type_is_refused_at_once() {
    let (env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let (_, charge) = recharge(&mut client, "rc-types", 6, 700).await;
    let paid = fake.pay(&charge);
    for amount in [json!(700.0), json!("700")] {
        let mut odd = paid.clone();
        odd["amount"] = amount;
        client
            .enqueue_pingpp_event(&fake.signed_event("charge.succeeded", odd).0)
            .await;
    }
    let dead = client.dead_letters(2).await;
    for delivery in &dead {
        let reason =
            pluspay::amqp::publisher::header_str(delivery.properties.headers(), ERROR_HEADER)
                .unwrap();
        assert!(reason.contains("unreadable Ping++ charge"), "{reason}");
        // Refused at its first delivery, not after the delivery limit.
        assert!(!reason.contains("failed"), "{reason}");
    }
    assert_eq!(env.balance(6).await, 0);
    assert_eq!(env.count("SELECT count(*) FROM pingpp_events").await, 0);
}

/// The recharge order the fake's charge belongs to, from its order_no.
/// Sends a recharge whose charge Ping++ makes while every answer to the create is lost, so the
/// command keeps trying with its charge unrecorded; then the payer pays it. Returns the paid
/// charge.
async fn paid_but_unrecorded(
    fake: &crate::support::fake_pingpp::FakePingpp,
    client: &BrokerClient,
    id: &str,
    user: i64,
    amount: i64,
) -> serde_json::Value {
    fake.lose_next_answers_on("POST", "/v1/charges", 100_000);
    client
        .command(&json!({"id": id, "type": "recharge", "user_id": user,
                         "data": {"type": "wx", "amount": amount}}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.charges().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no charge made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.pay(fake.charges()[0]["id"].as_str().unwrap())
}

fn order_of(charge: &serde_json::Value) -> i64 {
    charge["order_no"].as_str().unwrap()[1..].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_for_their_recharge_hold_no_slot_and_apply_once_it_is_recorded() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.worker.concurrency = 2;
        s.worker.batch_size = 1;
    })
    .await;
    env.fund(20, 1_000).await;
    // The recharge keeps trying, its charge unrecorded, while the payer pays and Ping++ sends
    // charge.succeeded.
    let charge = paid_but_unrecorded(&fake, &client, "rc-wait", 21, 600).await;
    // More events than there are transaction slots, each its own delivery.
    for _ in 0..6 {
        let (body, _) = fake.signed_event("charge.succeeded", charge.clone());
        client.enqueue_pingpp_event(&body).await;
    }
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'waiting'",
        6,
    )
    .await;
    // Other commands are answered while the events wait.
    let transfer = client
        .call(crate::support::transfer("t-wait", 20, 22, 100))
        .await;
    assert_eq!(transfer["status"], "succeeded", "{transfer}");
    let wallet = client
        .call(json!({"id": "w-wait", "type": "wallet.get", "user_id": 20}))
        .await;
    assert_eq!(wallet["data"]["balance"], 900, "{wallet}");
    assert_eq!(
        env.count("SELECT count(*) FROM recharges WHERE charge_id IS NULL")
            .await,
        1,
        "the recharge is still unrecorded"
    );
    // Ping++ answers again: the recharge records its charge and the parked events apply,
    // crediting once.
    fake.heal();
    client.wait_results(3).await;
    assert_eq!(client.received["rc-wait"][0]["status"], "succeeded");
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome IN ('credited', 'unchanged')",
        6,
    )
    .await;
    assert_eq!(env.balance(21).await, 600);
    assert_eq!(
        env.count("SELECT count(*) FROM pingpp_events WHERE outcome = 'credited'")
            .await,
        1
    );
    let state: i16 = env
        .db
        .query_one(
            "SELECT state FROM wallet_orders WHERE id = $1",
            &[&order_of(&charge)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_charge_is_never_recorded_is_dead_lettered_after_the_wait() {
    let (env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.worker.event_wait_secs = 1;
    })
    .await;
    env.fund(30, 500).await;
    let charge = paid_but_unrecorded(&fake, &client, "rc-never", 31, 300).await;
    let (body, _) = fake.signed_event("charge.succeeded", charge);
    client.enqueue_pingpp_event(&body).await;
    let dead = client.dead_letters(1).await;
    let reason =
        pluspay::amqp::publisher::header_str(dead[0].properties.headers(), ERROR_HEADER).unwrap();
    assert!(
        reason.contains("has not recorded its charge yet"),
        "{reason}"
    );
    assert!(reason.contains("waited"), "{reason}");
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'dead_lettered'",
        1,
    )
    .await;
    // The worker is not stuck: commands still get answers.
    let transfer = client
        .call(crate::support::transfer("t-never", 30, 32, 100))
        .await;
    assert_eq!(transfer["status"], "succeeded", "{transfer}");
    assert_eq!(env.balance(31).await, 0);
}
