//! `recharge` and `recharge.retrieve` against real PostgreSQL and RabbitMQ and the fake Ping++.

use std::time::Duration;

use crate::support::TestEnv;
use serde_json::{json, Value};

fn recharge(id: &str, user: i64, channel: &str, amount: i64) -> Value {
    json!({ "id": id, "type": "recharge", "user_id": user,
            "data": { "type": channel, "amount": amount, "client_ip": "10.1.2.3" } })
}

fn retrieve(id: &str, user: i64, order: &Value) -> Value {
    json!({ "id": id, "type": "recharge.retrieve", "user_id": user, "data": { "order": order } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recharge_creates_a_waiting_order_and_a_signed_charge_then_retrieve_credits_once() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let result = client.call(recharge("rc-1", 1, "alipay", 500)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let order = &result["data"]["order"];
    let charge = &result["data"]["pingpp_order"];
    assert_eq!(order["target_type"], "recharge_ping_p_p");
    assert_eq!(
        (order["title"].clone(), order["body"].clone()),
        (json!("充值"), json!("余额充值"))
    );
    assert_eq!(
        (
            order["type"].clone(),
            order["state"].clone(),
            order["amount"].clone()
        ),
        (json!(1), json!(0), json!(500))
    );
    assert_eq!(order["target_id"], charge["id"]);
    assert_eq!(charge["object"], "charge");
    assert_eq!(
        charge["order_no"],
        format!("a{:019}", order["id"].as_i64().unwrap())
    );
    assert_eq!(
        (charge["amount"].clone(), charge["currency"].clone()),
        (json!(500), json!("cny"))
    );
    assert_eq!(charge["client_ip"], "10.1.2.3");
    assert!(charge["credential"]["alipay"].is_object(), "{charge}");
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(env.balance(1).await, 0);

    // Not paid yet: retrieving changes nothing.
    let waiting = client.call(retrieve("rt-0", 1, &order["id"])).await;
    assert_eq!(waiting["status"], "succeeded", "{waiting}");
    assert_eq!(waiting["data"]["order"]["state"], 0);

    fake.pay(charge["id"].as_str().unwrap());
    let paid = client.call(retrieve("rt-1", 1, &order["id"])).await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["data"]["order"]["state"], 1);
    assert_eq!(env.balance(1).await, 500);
    let again = client.call(retrieve("rt-2", 1, &order["id"])).await;
    assert_eq!(again["data"]["order"]["state"], 1);
    assert_eq!(env.balance(1).await, 500);
    assert_eq!(env.system_balance("pingpp_clearing").await, -500);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_retrieves_credit_once() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let result = client.call(recharge("rc-race", 2, "wx", 300)).await;
    let order = result["data"]["order"]["id"].clone();
    fake.pay(result["data"]["pingpp_order"]["id"].as_str().unwrap());
    for i in 0..10 {
        client
            .command(&retrieve(&format!("race-{i}"), 2, &order))
            .await;
    }
    client.wait_results(11).await;
    for i in 0..10 {
        let result = &client.received[&format!("race-{i}")][0];
        assert_eq!(result["data"]["order"]["state"], 1, "{result}");
    }
    assert_eq!(env.balance(2).await, 300);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'recharge'")
            .await,
        1
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_expired_charges_fail_their_orders() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let a = client.call(recharge("rc-f1", 3, "wx", 100)).await;
    let b = client.call(recharge("rc-f2", 3, "alipay", 200)).await;
    fake.fail_charge(
        a["data"]["pingpp_order"]["id"].as_str().unwrap(),
        "card_declined",
        "declined",
    );
    fake.expire(b["data"]["pingpp_order"]["id"].as_str().unwrap());
    for (id, r) in [("rt-f1", &a), ("rt-f2", &b)] {
        let result = client
            .call(retrieve(id, 3, &r["data"]["order"]["id"]))
            .await;
        assert_eq!(result["data"]["order"]["state"], -1, "{result}");
    }
    assert_eq!(env.balance(3).await, 0);
    // Still unpaid: a failed order stays failed.
    let again = client
        .call(retrieve("rt-f3", 3, &a["data"]["order"]["id"]))
        .await;
    assert_eq!(again["data"]["order"]["state"], -1);
    // Paid after all: the money reached Ping++, so it is credited as a late payment.
    fake.pay(a["data"]["pingpp_order"]["id"].as_str().unwrap());
    let late = client
        .call(retrieve("rt-f4", 3, &a["data"]["order"]["id"]))
        .await;
    assert_eq!(late["data"]["order"]["state"], 1);
    assert_eq!(env.balance(3).await, 100);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_only_the_callers_own_recharge_orders() {
    let (env, _fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    env.fund(4, 100).await;
    let r = client.call(recharge("rc-own", 4, "wx", 100)).await;
    let order = r["data"]["order"]["id"].clone();
    let other = client.call(retrieve("rt-o1", 5, &order)).await;
    assert_eq!(other["code"], "unknown_order", "{other}");
    let t = client.call(crate::support::transfer("t-o", 4, 5, 10)).await;
    let not_recharge = client
        .call(retrieve("rt-o2", 4, &t["data"]["order"]["id"]))
        .await;
    assert_eq!(not_recharge["code"], "not_recharge", "{not_recharge}");
    let missing = client
        .call(json!({"id": "rt-o3", "type": "recharge.retrieve", "user_id": 4, "data": {}}))
        .await;
    assert_eq!(missing["code"], "order_required", "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recharge_rejections_use_the_wallet_api_words_and_call_nobody() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let cases = [
        (
            json!({"amount": 100}),
            "channel_required",
            "type",
            "请选择充值方式",
        ),
        (
            json!({"type": "wx_pub", "amount": 100}),
            "unsupported_channel",
            "type",
            "选择的充值方式错误",
        ),
        (
            json!({"type": "wx"}),
            "amount_required",
            "amount",
            "请选择需要充值金额",
        ),
        (
            json!({"type": "wx", "amount": 0}),
            "amount_too_small",
            "amount",
            "充值金额不合法",
        ),
        (
            json!({"type": "wx", "amount": "9"}),
            "invalid_amount",
            "amount",
            "充值金额不合法",
        ),
        (
            json!({"type": "wx", "amount": 1_000_001}),
            "amount_too_large",
            "amount",
            "充值金额超出最大充值限制",
        ),
        (
            json!({"type": "alipay_wap", "amount": 100}),
            "invalid_extra",
            "extra.success_url",
            "参数错误",
        ),
        (
            json!({"type": "wx_wap", "amount": 100, "extra": {"success_url": 5}}),
            "invalid_extra",
            "extra.success_url",
            "参数错误",
        ),
    ];
    for (i, (data, code, field, message)) in cases.into_iter().enumerate() {
        let result = client
            .call(json!({"id": format!("bad-{i}"), "type": "recharge", "user_id": 6, "data": data}))
            .await;
        assert_eq!(result["status"], "rejected", "{result}");
        assert_eq!(result["code"], code, "{result}");
        assert_eq!(result["errors"][field], json!([message]), "{result}");
    }
    let ok = client
        .call(json!({"id": "good", "type": "recharge", "user_id": 6,
                     "data": {"type": "alipay_wap", "amount": 100, "extra": {"success_url": "https://plus.io/r"}}}))
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_recharge_five_times_makes_one_order_and_one_charge() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    let command = recharge("rc-5x", 7, "wx", 700);
    for _ in 0..5 {
        client.command(&command).await;
    }
    client.wait_results(5).await;
    let results = &client.received["rc-5x"];
    assert!(
        results
            .iter()
            .all(|r| r == &results[0] && r["status"] == "succeeded"),
        "{results:?}"
    );
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 1);
    let conflict = client.call(recharge("rc-5x", 7, "wx", 800)).await;
    assert_eq!(conflict["code"], "idempotency_conflict");
    assert_eq!(fake.charges().len(), 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_plus_plus_outages_are_waited_out_and_its_refusals_reject() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    // Down for longer than one command's HTTP retries: the command waits, then succeeds once.
    fake.fail_next(12, 503);
    let result = client.call(recharge("rc-down", 8, "wx", 100)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.charges().len(), 1);
    assert!(fake.requests() >= 13);

    // Slow answers time out and are retried with the same order_no: still one charge.
    fake.delay_next(2, Duration::from_secs(3));
    let slow = client.call(recharge("rc-slow", 8, "wx", 100)).await;
    assert_eq!(slow["status"], "succeeded", "{slow}");
    assert_eq!(fake.charges().len(), 2);

    // A Ping++ error body is a rejection, with its message; the waiting order fails.
    fake.error_next(1, 402, "channel_error", "渠道暂不可用");
    let refused = client.call(recharge("rc-refused", 8, "wx", 100)).await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "payment_provider_error");
    assert!(
        refused["message"].to_string().contains("渠道暂不可用"),
        "{refused}"
    );
    assert_eq!(fake.charges().len(), 2);
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_orders WHERE state = -1")
            .await,
        1
    );
    assert_eq!(env.balance(8).await, 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_answer_was_lost_is_found_again_not_made_twice() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    fake.lose_next_answers(2);
    let result = client.call(recharge("rc-lost", 9, "alipay", 900)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.charges().len(), 1, "one charge for three creates");
    assert_eq!(fake.requests(), 3);
    assert_eq!(
        result["data"]["pingpp_order"]["id"],
        fake.charges()[0]["id"]
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_between_the_order_and_the_charge_resumes_the_same_order() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    let worker = env.start_worker();
    let mut client = env.client().await;
    // Ping++ is down: step 1 commits the order, step 2 keeps failing.
    fake.fail_next(1_000, 503);
    client.command(&recharge("rc-crash", 10, "wx", 1_000)).await;
    let mut progress = 0;
    for _ in 0..600 {
        progress = env.count("SELECT count(*) FROM recharges").await;
        if progress == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(progress, 1, "the order was created");
    worker.stop().await;
    assert!(client.received.is_empty());

    // Ping++ is back; a new worker gets the redelivered command and resumes the same order.
    fake.heal();
    let _worker = env.start_worker();
    client.wait_results(1).await;
    let result = &client.received["rc-crash"][0];
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_ping_plus_plus_does_not_hold_up_transfers() {
    let (env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|settings| {
            // One slot each: were they shared, the transfer would wait for the recharge.
            settings.worker.concurrency = 1;
            settings.worker.pingpp_concurrency = 1;
            settings.pingpp.timeout_ms = 10_000;
        })
        .await;
    env.fund(1, 500).await;
    fake.delay_next(1, Duration::from_secs(4));
    client.command(&recharge("rc-slow-1", 7, "wx", 100)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recharge never reached Ping++"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let transfer = client
        .call(crate::support::transfer("tr-fast", 1, 2, 100))
        .await;
    assert_eq!(transfer["status"], "succeeded", "{transfer}");
    assert!(
        !client.received.contains_key("rc-slow-1"),
        "the transfer waited for the recharge"
    );
    client.wait_results(2).await;
    assert_eq!(client.received["rc-slow-1"][0]["status"], "succeeded");
    assert_eq!(fake.charges().len(), 1);
}

/// Waits until `done` holds of the fake's request log.
async fn until_requests(
    fake: &crate::support::fake_pingpp::FakePingpp,
    done: impl Fn(&[(String, String)]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while !done(&fake.request_log()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            fake.request_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn list_requests(log: &[(String, String)]) -> usize {
    log.iter()
        .filter(|(method, uri)| method == "GET" && uri.starts_with("/v1/charges?"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answered_too_late_and_then_refused_as_a_repeat_goes_on_with_its_charge() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    // The first create takes effect but answers after the client's timeout (1 s); the retry
    // with the same order_no is refused as a repeat.
    fake.refuse_reused_order_no();
    fake.answer_late_on("POST", "/v1/charges", 1, Duration::from_millis(2_500));
    let result = client.call(recharge("rc-late", 40, "wx", 900)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.charges().len(), 1, "one charge, never a second");
    let charge = &fake.charges()[0];
    assert_eq!(result["data"]["pingpp_order"]["id"], charge["id"]);
    assert_eq!(result["data"]["order"]["state"], 0);
    assert_eq!(result["data"]["order"]["target_id"], charge["id"]);
    let posts = fake
        .request_log()
        .iter()
        .filter(|(method, uri)| method == "POST" && uri == "/v1/charges")
        .count();
    assert!(
        posts >= 2,
        "the create was repeated: {:?}",
        fake.request_log()
    );
    // The payer pays that charge: the wallet is credited once.
    fake.pay(charge["id"].as_str().unwrap());
    let paid = client
        .call(retrieve("rt-late", 40, &result["data"]["order"]["id"]))
        .await;
    assert_eq!(paid["data"]["order"]["state"], 1, "{paid}");
    assert_eq!(env.balance(40).await, 900);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_between_creating_the_charge_and_recording_it_resumes_with_that_charge() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    let worker = env.start_worker();
    let mut client = env.client().await;
    // Every answer to the create is lost, so the charge exists but is never recorded...
    fake.lose_next_answers_on("POST", "/v1/charges", 100_000);
    client
        .command(&recharge("rc-crash", 41, "alipay", 700))
        .await;
    until_requests(&fake, |_| !fake.charges().is_empty()).await;
    // ...until this worker is gone. Its successor meets a Ping++ that refuses the used
    // order_no, and finds the charge instead.
    worker.stop().await;
    assert_eq!(
        env.count("SELECT count(*) FROM recharges WHERE charge_id IS NULL")
            .await,
        1
    );
    fake.heal();
    fake.refuse_reused_order_no();
    let _worker = env.start_worker();
    client.wait_results(1).await;
    let result = &client.received["rc-crash"][0];
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(
        result["data"]["pingpp_order"]["id"],
        fake.charges()[0]["id"]
    );
    assert!(list_requests(&fake.request_log()) >= 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_outcome_cannot_be_found_out_waits_and_is_never_rejected() {
    let (env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    fake.refuse_reused_order_no();
    fake.lose_next_answers_on("POST", "/v1/charges", 1);
    // Ping++'s charge list is down too: what the create did can't be known.
    fake.fail_next_on("GET", "/v1/charges?", 100_000, 503);
    client.command(&recharge("rc-unknown", 42, "wx", 500)).await;
    // It asks again and again, and meanwhile answers nothing and fails nothing.
    until_requests(&fake, |log| list_requests(log) >= 6).await;
    assert!(client.received.is_empty());
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_orders WHERE state = 0")
            .await,
        1
    );
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 0);
    fake.heal();
    client.wait_results(1).await;
    let result = &client.received["rc-unknown"][0];
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(
        result["data"]["pingpp_order"]["id"],
        fake.charges()[0]["id"]
    );
}
