//! End to end: a recharge, then the fake Ping++ delivers its signed `charge.succeeded` to a
//! running listener, and the worker credits the wallet once.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{TestEnv, WAIT};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_recharge_is_credited_once_through_the_listener() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    let key_file = std::env::temp_dir().join(format!("pingpp-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, fake.public_key_pem()).unwrap();
    env.settings.pingpp.public_key = Some(key_file);
    let _worker = env.start_worker();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/v2/plus-pay/webhooks",
        listener.local_addr().unwrap()
    );
    let stop_listener = CancellationToken::new();
    tokio::spawn(pluspay::webhook::serve(
        listener,
        env.settings.clone(),
        stop_listener.clone(),
    ));
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

    let published = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut events))
        .await
        .expect("recharge.succeeded in time")
        .unwrap()
        .unwrap();
    let published: serde_json::Value = serde_json::from_slice(&published.data).unwrap();
    support::schemas::check(support::schemas::Schema::Event, &published);
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
