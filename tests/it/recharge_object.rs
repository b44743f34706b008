//! `recharge` through Ping++ recharge objects (`pingpp.recharge_mode = "recharge_object"`)
//! against real PostgreSQL and RabbitMQ and the fake Ping++: creation, the limits checked before
//! any call, and completion by events with the user fee and balance bonus in their own accounts.

use pluspay::config::RechargeMode;
use serde_json::{json, Value};

fn recharge(id: &str, user: i64, amount: i64, terms: Value) -> Value {
    let mut data = json!({ "type": "wx", "amount": amount, "client_ip": "10.1.2.3" });
    for (k, v) in terms.as_object().unwrap() {
        data[k] = v.clone();
    }
    json!({ "id": id, "type": "recharge", "user_id": user, "data": data })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recharge_with_a_fee_credits_the_rest_once_under_redelivered_events() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.pingpp.recharge_mode = RechargeMode::RechargeObject
    })
    .await;
    let result = client
        .call(recharge(
            "ro-1",
            1,
            1000,
            json!({"user_fee": 100, "description": "充值说明", "metadata": {"from": "app"}}),
        ))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let order = &result["data"]["order"];
    let object = &result["data"]["pingpp_recharge"];
    let charge = &result["data"]["pingpp_order"];
    // The order is what the wallet gets; the charge is what the payer pays.
    assert_eq!(
        (order["amount"].clone(), order["state"].clone()),
        (json!(900), json!(0))
    );
    assert_eq!(order["target_id"], charge["id"]);
    assert_eq!(object["object"], "recharge");
    assert!(
        object["id"].as_str().unwrap().starts_with("220"),
        "{object}"
    );
    assert_eq!(object["user"], "user_1");
    assert_eq!(object["user_fee"], 100);
    assert_eq!(object["description"], "充值说明");
    assert_eq!(object["metadata"]["from"], "app");
    assert_eq!(object["metadata"]["order_id"], order["id"]);
    assert_eq!(object["charge"]["id"], charge["id"]);
    assert_eq!(charge["amount"], 1000);
    assert_eq!(
        charge["order_no"],
        format!("a{:019}", order["id"].as_i64().unwrap())
    );
    assert!(charge["credential"]["wx"].is_object(), "{charge}");
    assert_eq!(fake.recharges().len(), 1);
    let path = format!("/v1/apps/{}/recharges", crate::support::fake_pingpp::APP_ID);
    assert_eq!(fake.request_log(), vec![("POST".to_owned(), path)]);

    let paid = fake.pay_recharge(object["id"].as_str().unwrap());
    let (body, _) = fake.signed_event("recharge.succeeded", paid);
    for _ in 0..5 {
        client.enqueue_pingpp_event(&body).await;
    }
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'credited'",
        1,
    )
    .await;
    env.wait_for_count("SELECT count(*) FROM wallet_orders WHERE state = 1", 1)
        .await;
    // The charge's own event, and a retrieve, change nothing more.
    let (charge_event, _) = fake.signed_event(
        "charge.succeeded",
        fake.charge(charge["id"].as_str().unwrap()).unwrap(),
    );
    client.enqueue_pingpp_event(&charge_event).await;
    env.wait_for_count("SELECT count(*) FROM pingpp_events", 2)
        .await;
    let retrieved = client
        .call(
            json!({"id": "rt", "type": "recharge.retrieve", "user_id": 1,
                     "data": {"order": order["id"]}}),
        )
        .await;
    assert_eq!(retrieved["data"]["order"]["state"], 1, "{retrieved}");
    assert_eq!(env.balance(1).await, 900);
    assert_eq!(env.system_balance("pingpp_clearing").await, -1000);
    assert_eq!(env.system_balance("recharge_fees").await, 100);
    assert_eq!(env.system_balance("recharge_bonuses").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'recharge'")
            .await,
        1
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recharge_with_a_bonus_credits_it_from_the_bonus_account() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.pingpp.recharge_mode = RechargeMode::RechargeObject
    })
    .await;
    let result = client
        .call(recharge(
            "ro-b",
            2,
            1000,
            json!({"balance_bonus": {"amount": 50}}),
        ))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["data"]["order"]["amount"], 1050);
    let object = &result["data"]["pingpp_recharge"];
    assert_eq!(object["balance_bonus"], json!({"amount": 50}));
    assert_eq!(result["data"]["pingpp_order"]["amount"], 1000);
    // Completed by the charge's event this time.
    fake.pay_recharge(object["id"].as_str().unwrap());
    let charge_id = result["data"]["pingpp_order"]["id"].as_str().unwrap();
    let (body, _) = fake.signed_event("charge.succeeded", fake.charge(charge_id).unwrap());
    for _ in 0..5 {
        client.enqueue_pingpp_event(&body).await;
    }
    env.wait_for_count("SELECT count(*) FROM wallet_orders WHERE state = 1", 1)
        .await;
    env.wait_for_count("SELECT count(*) FROM pingpp_events", 1)
        .await;
    assert_eq!(env.balance(2).await, 1050);
    assert_eq!(env.system_balance("pingpp_clearing").await, -1000);
    assert_eq!(env.system_balance("recharge_bonuses").await, -50);
    assert_eq!(env.system_balance("recharge_fees").await, 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_is_a_field_error_before_any_call() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.pingpp.recharge_mode = RechargeMode::RechargeObject
    })
    .await;
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let cases = [
        (
            json!({"user_fee": 10, "balance_bonus": 5}),
            "fee_and_bonus",
            "balance_bonus",
        ),
        (json!({"user_fee": 1000}), "invalid_user_fee", "user_fee"),
        (json!({"user_fee": -1}), "invalid_user_fee", "user_fee"),
        (
            json!({"balance_bonus": {"amount": "x"}}),
            "invalid_balance_bonus",
            "balance_bonus",
        ),
        (
            json!({"description": "x".repeat(256)}),
            "invalid_description",
            "description",
        ),
        (json!({"metadata": "x"}), "invalid_metadata", "metadata"),
        (
            json!({"time_expire": 5}),
            "invalid_time_expire",
            "time_expire",
        ),
    ];
    for (i, (terms, code, field)) in cases.iter().enumerate() {
        let result = client
            .call(recharge(&format!("bad-{i}"), 3, 1000, terms.clone()))
            .await;
        assert_eq!(result["status"], "rejected", "{result}");
        assert_eq!(result["code"], *code, "{terms}: {result}");
        assert!(result["errors"][*field].is_array(), "{terms}: {result}");
    }
    let ok = client
        .call(recharge(
            "good",
            3,
            1000,
            json!({"time_expire": in_an_hour}),
        ))
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["data"]["pingpp_order"]["time_expire"], in_an_hour);
    assert_eq!(fake.requests(), 1);
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_and_lost_answers_make_one_recharge_object() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.pingpp.recharge_mode = RechargeMode::RechargeObject
    })
    .await;
    // Ping++ makes the recharge but its answer is lost, then an outage: retried, same order_no.
    fake.lose_next_answers(1);
    fake.fail_next(1, 503);
    let command = recharge("ro-r", 4, 700, json!({"user_fee": 7}));
    for _ in 0..3 {
        client.command(&command).await;
    }
    client.wait_results(3).await;
    let results = &client.received["ro-r"];
    assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    assert_eq!(results[0]["status"], "succeeded", "{}", results[0]);
    assert_eq!(fake.recharges().len(), 1);
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(
        results[0]["data"]["pingpp_recharge"]["id"],
        fake.recharges()[0]["id"]
    );
    // Ping++ refuses: the waiting order fails, the refusal is the result.
    fake.error_next(1, 400, "invalid_request_error", "user 不存在");
    let refused = client.call(recharge("ro-x", 4, 700, json!({}))).await;
    assert_eq!(refused["code"], "payment_provider_error", "{refused}");
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_orders WHERE state = -1")
            .await,
        1
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recharge_object_whose_repeated_create_is_refused_goes_on_with_the_one_made() {
    let (_env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.pingpp.recharge_mode = RechargeMode::RechargeObject
    })
    .await;
    // The create takes effect but its answer is lost; the repeat is refused as a used
    // order_no, and the recharge object is found in Ping++'s list instead.
    fake.refuse_reused_order_no();
    fake.lose_next_answers_on("POST", "/recharges", 1);
    let result = client
        .call(recharge("ro-lost", 7, 800, json!({"user_fee": 50})))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.recharges().len(), 1);
    assert_eq!(
        result["data"]["pingpp_recharge"]["id"],
        fake.recharges()[0]["id"]
    );
    assert_eq!(result["data"]["order"]["amount"], 750);
    assert!(fake
        .request_log()
        .iter()
        .any(|(m, p)| m == "GET" && p.contains("/recharges?")));
}
