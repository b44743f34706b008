//! Cash payouts through Ping++ withdrawals (`pingpp.payout = "withdrawals"`) against real
//! PostgreSQL and RabbitMQ and the fake Ping++: approval creates and confirms a withdrawal, its
//! events settle the cash record once, a rejection cancels a withdrawal left created, Ping++
//! refusals leave nothing behind, and the manual flow is unchanged.

use crate::support::fake_pingpp::{FakePingpp, APP_ID};
use crate::support::{BrokerClient, TestEnv, WorkerHandle, WAIT};
use pluspay::config::{PayoutMode, Settings};
use serde_json::{json, Value};

const RETURN_URL: &str = "https://example.com/wallet/cash";

fn withdrawals_mode(s: &mut Settings) {
    s.pingpp.payout = PayoutMode::Withdrawals;
    s.pingpp.withdrawal_return_url = RETURN_URL.into();
}

async fn start() -> (TestEnv, FakePingpp, BrokerClient, WorkerHandle) {
    crate::support::with_fake_pingpp_and_worker(withdrawals_mode).await
}

fn withdrawals_path() -> String {
    format!("/v1/apps/{APP_ID}/withdrawals")
}

/// Has `user` ask for `value` fen; returns the cash record's id.
async fn request_cash(client: &mut BrokerClient, id: &str, user: i64, value: i64) -> i64 {
    let result = client
        .call(json!({"id": id, "type": "cash", "user_id": user,
                     "data": {"value": value, "type": "alipay", "account": "u@example.com"}}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    result["data"]["cash"]["id"].as_i64().unwrap()
}

fn approve(id: &str, cash: i64) -> Value {
    json!({"id": id, "type": "cash.approve", "user_id": 99, "data": {"cash": cash, "remark": "同意"}})
}

fn reject(id: &str, cash: i64, remark: &str) -> Value {
    json!({"id": id, "type": "cash.reject", "user_id": 99, "data": {"cash": cash, "remark": remark}})
}

fn retrieve(id: &str, cash: i64) -> Value {
    json!({"id": id, "type": "cash.retrieve", "user_id": 99, "data": {"cash": cash}})
}

async fn cash_row(env: &TestEnv, cash: i64) -> (i16, Option<String>, Option<String>, i16) {
    let row = env
        .db
        .query_one(
            "SELECT c.status, c.remark, c.withdrawal_status, o.state
             FROM cashes c JOIN wallet_orders o ON o.id = c.order_id WHERE c.id = $1",
            &[&cash],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

fn count_requests(fake: &FakePingpp, method: &str, path: &str) -> usize {
    fake.request_log()
        .iter()
        .filter(|(m, p)| m == method && p == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_confirms_a_withdrawal_and_its_success_settles_once() {
    let (mut env, fake, mut client, _worker) = start().await;
    env.fund(1, 1000).await;
    let cash = request_cash(&mut client, "c1", 1, 300).await;
    let mut events = client
        .watch(&client.names.events_exchange, "withdrawal.#")
        .await;

    let result = client.call(approve("a1", cash)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let withdrawal = &result["data"]["pingpp_withdrawal"];
    let id = withdrawal["id"].as_str().unwrap().to_owned();
    assert_eq!(withdrawal["status"], "processing", "{withdrawal}");
    assert!(withdrawal["operation_url"].is_string(), "{withdrawal}");
    let shown = &result["data"]["cash"];
    assert_eq!(
        (shown["status"].clone(), shown["remark"].clone()),
        (json!(1), json!("同意"))
    );
    assert_eq!(shown["pingpp_withdrawal_id"], json!(id));
    assert_eq!(shown["pingpp_withdrawal_status"], "processing");
    // What Ping++ got: the fields its API names, the user mapped by the template.
    let made = fake.withdrawals();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["user"], "user_1");
    assert_eq!(made[0]["channel"], "yeepay");
    assert_eq!(made[0]["amount"], 300);
    assert_eq!(made[0]["extra"]["return_url"], RETURN_URL);
    let order_no = made[0]["order_no"].as_str().unwrap();
    assert!(
        order_no.starts_with('w') && order_no.len() == 20,
        "{order_no}"
    );
    assert_eq!(
        fake.request_log(),
        vec![
            ("POST".to_owned(), withdrawals_path()),
            ("PUT".to_owned(), format!("{}/{id}", withdrawals_path())),
        ]
    );
    // Approved, but the money is still on its way: held, the order waiting.
    assert_eq!(env.balance(1).await, 700);
    assert_eq!(env.system_balance("pending_payouts").await, 300);
    assert_eq!(env.system_balance("paid_out").await, 0);
    assert_eq!(
        cash_row(&env, cash).await,
        (1, Some("同意".into()), Some("processing".into()), 0)
    );

    // Ping++ reports success, delivering the event three times and once more under a new id.
    let paid = fake.succeed_withdrawal(&id);
    let (body, _) = fake.signed_event("withdrawal.succeeded", paid.clone());
    for _ in 0..3 {
        client.enqueue_pingpp_event(&body).await;
    }
    let (again, _) = fake.signed_event("withdrawal.succeeded", paid);
    client.enqueue_pingpp_event(&again).await;
    env.wait_for_count("SELECT count(*) FROM pingpp_events", 2)
        .await;
    assert_eq!(
        env.count("SELECT count(*) FROM pingpp_events WHERE outcome = 'paid_out'")
            .await,
        1
    );
    let published = crate::support::next_event(&mut events).await;
    assert_eq!(published["type"], "withdrawal.succeeded");
    assert_eq!(published["user_id"], 1);
    assert_eq!(published["data"]["order"]["state"], 1);
    assert_eq!(
        published["data"]["cash"]["pingpp_withdrawal_status"],
        "succeeded"
    );
    assert_eq!(env.balance(1).await, 700);
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    assert_eq!(env.system_balance("paid_out").await, 300);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM journal WHERE kind = 'cash.payout' AND event_id IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        cash_row(&env, cash).await,
        (1, Some("同意".into()), Some("succeeded".into()), 1)
    );
    assert!(env.audit().await.ok);
    let audit = crate::support::pluspay(&["audit"], &env.process_env()).await;
    assert!(audit.status.success(), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_canceled_withdrawals_return_the_money_with_the_reason() {
    let (mut env, fake, mut client, _worker) = start().await;
    env.fund(2, 1000).await;
    let failing = request_cash(&mut client, "c2a", 2, 300).await;
    let canceled = request_cash(&mut client, "c2b", 2, 200).await;
    let mut events = client
        .watch(&client.names.events_exchange, "withdrawal.#")
        .await;
    let mut ids = Vec::new();
    for (command, cash) in [("a2a", failing), ("a2b", canceled)] {
        let result = client.call(approve(command, cash)).await;
        assert_eq!(result["status"], "succeeded", "{result}");
        ids.push(
            result["data"]["pingpp_withdrawal"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(env.balance(2).await, 500);

    let failed = fake.fail_withdrawal(&ids[0], "银行卡信息有误");
    let (failed_event, _) = fake.signed_event("withdrawal.failed", failed.clone());
    let (canceled_event, _) =
        fake.signed_event("withdrawal.canceled", fake.cancel_withdrawal(&ids[1]));
    for body in [&failed_event, &canceled_event, &failed_event] {
        client.enqueue_pingpp_event(body).await;
    }
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'returned'",
        2,
    )
    .await;
    assert_eq!(env.balance(2).await, 1000);
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    assert_eq!(env.system_balance("paid_out").await, 0);
    assert_eq!(
        cash_row(&env, failing).await,
        (2, Some("银行卡信息有误".into()), Some("failed".into()), -1)
    );
    assert_eq!(
        cash_row(&env, canceled).await,
        (2, Some("提现已取消".into()), Some("canceled".into()), -1)
    );
    // Three deliveries, three publications (a redelivered event publishes its message again),
    // two distinct events.
    let mut reasons = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let event = crate::support::next_event(&mut events).await;
        assert_eq!(event["type"], "withdrawal.failed");
        assert_eq!(event["data"]["order"]["state"], -1);
        reasons.insert(
            event["event_id"].as_str().unwrap().to_owned(),
            event["data"]["reason"].as_str().unwrap().to_owned(),
        );
    }
    let mut reasons: Vec<String> = reasons.into_values().collect();
    reasons.sort();
    assert_eq!(reasons, vec!["提现已取消", "银行卡信息有误"]);

    // A contradicting event for a settled withdrawal changes nothing.
    let mut contradiction = failed;
    contradiction["status"] = json!("succeeded");
    let (late, _) = fake.signed_event("withdrawal.succeeded", contradiction);
    client.enqueue_pingpp_event(&late).await;
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'unchanged'",
        1,
    )
    .await;
    assert_eq!(env.balance(2).await, 1000);
    assert_eq!(env.system_balance("paid_out").await, 0);
    // The user sees both requests rejected with the reason.
    let listed = client
        .call(json!({"id": "l2", "type": "cashes.list", "user_id": 2, "data": {}}))
        .await;
    let remarks: Vec<_> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["status"].clone(), c["remark"].clone()))
        .collect();
    assert_eq!(
        remarks,
        vec![
            (json!(2), json!("提现已取消")),
            (json!(2), json!("银行卡信息有误"))
        ]
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_cancels_the_withdrawal_a_crashed_approval_left_created() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        withdrawals_mode(s);
        // A command that fails for a reason not its own is dead-lettered at once: the approval
        // is gone after creating its withdrawal, as if its worker had crashed there.
        s.amqp.delivery_limit = 1;
    })
    .await;
    env.fund(3, 500).await;
    let cash = request_cash(&mut client, "c3", 3, 400).await;
    fake.garble_next_on("PUT", "/withdrawals/", 1);
    client.command(&approve("a3", cash)).await;
    let dead = client.dead_letters(1).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&dead[0].data).unwrap()["id"],
        "a3"
    );
    let made = fake.withdrawals();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["status"], "created");
    let id = made[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        cash_row(&env, cash).await,
        (0, None, Some("created".into()), 0)
    );

    let result = client.call(reject("r3", cash, "账户信息不符")).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["data"]["cash"]["status"], 2);
    assert_eq!(result["data"]["cash"]["remark"], "账户信息不符");
    assert_eq!(
        result["data"]["cash"]["pingpp_withdrawal_status"],
        "canceled"
    );
    assert_eq!(fake.withdrawal(&id).unwrap()["status"], "canceled");
    assert_eq!(
        fake.request_log().last().unwrap(),
        &("PUT".to_owned(), format!("{}/{id}", withdrawals_path()))
    );
    assert_eq!(env.balance(3).await, 500);
    assert_eq!(env.system_balance("pending_payouts").await, 0);

    // The approval sent again finds the cash rejected: no second withdrawal, no new call.
    let before = fake.requests();
    let again = client.call(approve("a3", cash)).await;
    assert_eq!(again["status"], "rejected", "{again}");
    assert_eq!(again["code"], "cash_already_decided");
    assert_eq!(fake.requests(), before);
    assert_eq!(fake.withdrawals().len(), 1);
    // Ping++'s own canceled event for it changes nothing more.
    let (body, _) = fake.signed_event("withdrawal.canceled", fake.withdrawal(&id).unwrap());
    client.enqueue_pingpp_event(&body).await;
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'unchanged'",
        1,
    )
    .await;
    assert_eq!(env.balance(3).await, 500);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrieve_racing_the_webhook_settles_once() {
    let (mut env, fake, mut client, _worker) = start().await;
    let events_client = env.client().await;
    env.fund(4, 3000).await;
    for round in 0..3 {
        let cash = request_cash(&mut client, &format!("c4-{round}"), 4, 500).await;
        let result = client.call(approve(&format!("a4-{round}"), cash)).await;
        assert_eq!(result["status"], "succeeded", "{result}");
        let id = result["data"]["pingpp_withdrawal"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (body, _) = fake.signed_event("withdrawal.succeeded", fake.succeed_withdrawal(&id));
        let (_, retrieved) = tokio::join!(
            events_client.enqueue_pingpp_event(&body),
            client.call(retrieve(&format!("rt4-{round}"), cash))
        );
        assert_eq!(retrieved["status"], "succeeded", "{retrieved}");
        assert_eq!(
            retrieved["data"]["pingpp_withdrawal"]["status"],
            "succeeded"
        );
        env.wait_for_count("SELECT count(*) FROM pingpp_events", round + 1)
            .await;
        assert_eq!(
            env.count("SELECT count(*) FROM journal WHERE kind = 'cash.payout'")
                .await,
            round + 1
        );
        assert_eq!(cash_row(&env, cash).await.3, 1);
        // Settled: another retrieve answers from the record without asking Ping++.
        let before = fake.requests();
        let again = client.call(retrieve(&format!("rt4b-{round}"), cash)).await;
        assert_eq!(
            again["data"]["cash"]["pingpp_withdrawal_status"],
            "succeeded"
        );
        assert_eq!(fake.requests(), before);
    }
    assert_eq!(env.balance(4).await, 1500);
    assert_eq!(env.system_balance("paid_out").await, 1500);
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_and_repeated_approvals_make_one_withdrawal() {
    let (mut env, fake, mut client, _worker) = start().await;
    env.fund(5, 1000).await;
    let cash = request_cash(&mut client, "c5", 5, 600).await;
    // The create takes effect but its answer is lost, and the confirm meets two 503s: the
    // client retries both, with the same order_no.
    fake.lose_next_answers_on("POST", "/withdrawals", 1);
    fake.fail_next_on("PUT", "/withdrawals/", 2, 503);
    let result = client.call(approve("a5", cash)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.withdrawals().len(), 1);
    let id = result["data"]["pingpp_withdrawal"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = format!("{}/{id}", withdrawals_path());
    assert_eq!(count_requests(&fake, "POST", &withdrawals_path()), 2);
    assert_eq!(count_requests(&fake, "PUT", &put), 3);
    // The same command again, and another approval of the same cash: no call at all.
    let before = fake.requests();
    let replayed = client.call(approve("a5", cash)).await;
    assert_eq!(replayed, result);
    let other = client.call(approve("a5-again", cash)).await;
    assert_eq!(other["status"], "succeeded", "{other}");
    assert_eq!(other["data"]["cash"]["status"], 1);
    assert_eq!(fake.requests(), before);

    // An approval whose confirm answer can't be read fails and is redelivered: it resumes with
    // the withdrawal it recorded instead of creating another.
    let second = request_cash(&mut client, "c5b", 5, 300).await;
    fake.garble_next_on("PUT", "/withdrawals/", 1);
    let posts_before = count_requests(&fake, "POST", &withdrawals_path());
    let result = client.call(approve("a5b", second)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["data"]["pingpp_withdrawal"]["status"], "processing");
    assert_eq!(fake.withdrawals().len(), 2);
    assert_eq!(
        count_requests(&fake, "POST", &withdrawals_path()),
        posts_before + 1
    );
    assert_eq!(env.balance(5).await, 100);
    assert_eq!(env.system_balance("pending_payouts").await, 900);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_plus_plus_refusals_reject_the_approval_and_change_nothing() {
    let (mut env, fake, mut client, _worker) = start().await;
    env.fund(6, 1000).await;
    let cash = request_cash(&mut client, "c6", 6, 500).await;

    fake.error_next_on(
        "POST",
        "/withdrawals",
        1,
        400,
        "invalid_request_error",
        "用户 user_6 未开户",
    );
    let refused = client.call(approve("a6", cash)).await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "payment_provider_error");
    assert!(
        refused["errors"]["pingpp"][0]
            .as_str()
            .unwrap()
            .contains("未开户"),
        "{refused}"
    );
    assert!(fake.withdrawals().is_empty());
    assert_eq!(cash_row(&env, cash).await, (0, None, None, 0));

    // Created, but the confirm is refused: the withdrawal is canceled, the cash still waits.
    fake.error_next_on(
        "PUT",
        "/withdrawals/",
        1,
        402,
        "channel_error",
        "渠道暂不可用",
    );
    let refused = client.call(approve("a6b", cash)).await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "payment_provider_error");
    let made = fake.withdrawals();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["status"], "canceled");
    assert_eq!(cash_row(&env, cash).await, (0, None, None, 0));
    assert_eq!(env.balance(6).await, 500);
    assert_eq!(env.system_balance("pending_payouts").await, 500);
    let listed = client
        .call(json!({"id": "l6", "type": "cashes.list", "user_id": 6, "data": {}}))
        .await;
    assert!(
        listed["data"][0].get("pingpp_withdrawal_id").is_none(),
        "{listed}"
    );

    // Ping++ is fine again: a new approval pays out with a new withdrawal and order_no.
    let result = client.call(approve("a6c", cash)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let made = fake.withdrawals();
    assert_eq!(made.len(), 2);
    assert_ne!(made[0]["order_no"], made[1]["order_no"]);
    assert_eq!(made[1]["status"], "processing");
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manual_flow_is_unchanged_and_calls_no_one() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    env.fund(7, 1000).await;
    let paid = request_cash(&mut client, "c7a", 7, 400).await;
    let refused = request_cash(&mut client, "c7b", 7, 200).await;
    let approved = client.call(approve("a7", paid)).await;
    assert_eq!(approved["status"], "succeeded", "{approved}");
    assert_eq!(approved["data"]["cash"]["status"], 1);
    assert!(approved["data"].get("pingpp_withdrawal").is_none());
    assert!(approved["data"]["cash"]
        .get("pingpp_withdrawal_id")
        .is_none());
    let rejected = client.call(reject("r7", refused, "账户不符")).await;
    assert_eq!(rejected["data"]["cash"]["status"], 2);
    assert_eq!(
        cash_row(&env, paid).await,
        (1, Some("同意".into()), None, 1)
    );
    assert_eq!(env.balance(7).await, 600);
    assert_eq!(env.system_balance("paid_out").await, 400);
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    // cash.retrieve answers from the record: nothing to ask Ping++.
    let retrieved = client.call(retrieve("rt7", paid)).await;
    assert_eq!(retrieved["status"], "succeeded", "{retrieved}");
    assert_eq!(retrieved["data"]["cash"]["status"], 1);
    let missing = client
        .call(json!({"id": "rt7b", "type": "cash.retrieve", "user_id": 7, "data": {}}))
        .await;
    assert_eq!(missing["code"], "cash_required");
    let unknown = client.call(retrieve("rt7c", 999_999)).await;
    assert_eq!(unknown["code"], "unknown_cash");
    assert_eq!(fake.requests(), 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_an_approval_in_progress_holds_is_a_conflict_for_other_commands() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        withdrawals_mode(s);
        s.pingpp.timeout_ms = 10_000;
    })
    .await;
    env.fund(1, 1000).await;
    let cash = request_cash(&mut client, "c-held", 1, 300).await;
    // The approval waits on Ping++'s create while a transfer with its id comes in.
    fake.delay_next(1, std::time::Duration::from_secs(3));
    client.command(&approve("held-id", cash)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the approval never reached Ping++"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let transfer = client
        .call(crate::support::transfer("held-id", 1, 2, 100))
        .await;
    assert_eq!(transfer["code"], "idempotency_conflict", "{transfer}");
    assert_eq!(env.balance(2).await, 0);
    client.wait_results(3).await;
    let approved = client.received["held-id"]
        .iter()
        .find(|r| r["type"] == "cash.approve")
        .cloned()
        .expect("the approval's result");
    assert_eq!(approved["status"], "succeeded", "{approved}");
    assert_eq!(fake.withdrawals().len(), 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_whose_repeated_create_is_refused_goes_on_with_the_withdrawal_made() {
    let (mut env, fake, mut client, _worker) = start().await;
    env.fund(8, 1000).await;
    let cash = request_cash(&mut client, "c8", 8, 400).await;
    // The create takes effect but its answer is lost; the repeat is refused as a used
    // order_no. The withdrawal is found in Ping++'s list and the approval goes on with it.
    fake.refuse_reused_order_no();
    fake.lose_next_answers_on("POST", "/withdrawals", 1);
    let result = client.call(approve("a8", cash)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(fake.withdrawals().len(), 1);
    assert_eq!(
        result["data"]["pingpp_withdrawal"]["id"],
        fake.withdrawals()[0]["id"]
    );
    assert_eq!(result["data"]["cash"]["status"], 1);
    let list = format!("{}?", withdrawals_path());
    let lookups = fake
        .request_log()
        .iter()
        .filter(|(m, p)| m == "GET" && p.starts_with(&list))
        .count();
    assert!(lookups >= 1, "{:?}", fake.request_log());
    assert_eq!(env.system_balance("pending_payouts").await, 400);
    assert!(env.audit().await.ok);
}
