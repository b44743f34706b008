//! End to end: a recharge, then the fake Ping++ delivers its signed `charge.succeeded` (or, for
//! a recharge object, `recharge.succeeded`) to a running listener, and the worker credits the
//! wallet once.

use std::time::Duration;

use crate::support::fake_pingpp::FakePingpp;
use crate::support::{TestEnv, WAIT};
use pluspay::config::RechargeMode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Starts a webhook listener on a free port that verifies with the fake Ping++'s key; returns
/// its address and what stops it.
async fn listen_with_the_fakes_key(
    env: &mut TestEnv,
    fake: &FakePingpp,
) -> (std::net::SocketAddr, CancellationToken) {
    let key_file = std::env::temp_dir().join(format!("pingpp-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, fake.public_key_pem()).unwrap();
    env.settings.pingpp.public_key = Some(key_file);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(pluspay::webhook::serve(
        listener,
        env.settings.clone(),
        stop.clone(),
    ));
    (address, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_recharge_is_credited_once_through_the_listener() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    let _worker = env.start_worker();
    let (address, stop_listener) = listen_with_the_fakes_key(&mut env, &fake).await;
    let url = format!("http://{address}/api/v2/plus-pay/webhooks");
    let mut client = env.client().await;
    let mut events = client
        .watch(&client.names.events_exchange, "recharge.#")
        .await;

    let result = client
        .call(json!({"id": "rc", "type": "recharge", "user_id": 7, "data": {"type": "alipay", "amount": 1_234}}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let charge_id = result["data"]["pingpp_order"]["id"].as_str().unwrap();
    let (body, signature) = fake.signed_event("charge.succeeded", fake.pay(charge_id));

    // Ping++ delivers the same event 10 times at once.
    let deliveries = (0..10).map(|_| fake.send_webhook(&url, &body, &signature));
    let statuses = futures_util::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| s.as_u16() == 200), "{statuses:?}");

    let published = crate::support::next_event(&mut events).await;
    assert_eq!(published["type"], "recharge.succeeded");
    assert_eq!(published["data"]["order"]["state"], 1);
    assert_eq!(env.balance(7).await, 1_234);

    // Every delivery is consumed; the wallet still holds the amount once.
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.count("SELECT count(*) FROM pingpp_events").await != 1
        || client.webhooks_queue_depth().await != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries not drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.balance(7).await, 1_234);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'recharge'")
            .await,
        1
    );
    assert!(env.audit().await.ok);

    // A forged delivery (another key) is refused and changes nothing.
    let forged = fake
        .send_webhook(&url, &body.replace("1234", "9999"), &signature)
        .await;
    assert_eq!(forged.as_u16(), 401);
    stop_listener.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_recharge_succeeded_event_completes_a_recharge_object_order() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    env.settings.pingpp.recharge_mode = RechargeMode::RechargeObject;
    let _worker = env.start_worker();
    let (address, stop_listener) = listen_with_the_fakes_key(&mut env, &fake).await;
    let url = format!("http://{address}/webhooks/pingpp");
    let mut client = env.client().await;
    let mut events = client
        .watch(&client.names.events_exchange, "recharge.#")
        .await;

    let result = client
        .call(json!({"id": "ro", "type": "recharge", "user_id": 8,
                     "data": {"type": "alipay", "amount": 1_000, "user_fee": 10}}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let order_id = result["data"]["order"]["id"].as_i64().unwrap();
    let recharge_id = result["data"]["pingpp_recharge"]["id"].as_str().unwrap();
    let (body, signature) = fake.signed_event("recharge.succeeded", fake.pay_recharge(recharge_id));

    // A tampered copy is refused before anything is queued; the real one is taken, twice.
    let tampered = body.replace("\"amount\":1000", "\"amount\":9000");
    assert_ne!(tampered, body);
    let forged = fake.send_webhook(&url, &tampered, &signature).await;
    assert_eq!(forged.as_u16(), 401);
    for _ in 0..2 {
        assert_eq!(
            fake.send_webhook(&url, &body, &signature).await.as_u16(),
            200
        );
    }
    let published = crate::support::next_event(&mut events).await;
    assert_eq!(published["type"], "recharge.succeeded");
    assert_eq!(published["data"]["order"]["id"], order_id);
    assert_eq!(published["data"]["order"]["state"], 1);
    env.wait_for_count("SELECT count(*) FROM pingpp_events", 1)
        .await;
    env.wait_for_count(
        &format!("SELECT count(*) FROM wallet_orders WHERE id = {order_id} AND state = 1"),
        1,
    )
    .await;
    // The wallet gets the amount less the fee, once.
    assert_eq!(env.balance(8).await, 990);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'recharge'")
            .await,
        1
    );
    assert!(env.audit().await.ok);
    stop_listener.cancel();
}
