//! `charges.list` and `charges.get`, the older wallet API's charge records (凭据) derived from
//! the wallet orders, end to end against real PostgreSQL and RabbitMQ and the fake Ping++.

use crate::support::{BrokerClient, TestEnv};
use pluspay::config::PayoutMode;
use serde_json::{json, Value};

async fn call(client: &mut BrokerClient, id: &str, kind: &str, user: i64, data: Value) -> Value {
    client
        .call(json!({ "id": id, "type": kind, "user_id": user, "data": data }))
        .await
}

/// A succeeded command's `data`.
async fn data(client: &mut BrokerClient, id: &str, kind: &str, user: i64, args: Value) -> Value {
    let result = call(client, id, kind, user, args).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    result["data"].clone()
}

fn assert_rejected(result: &Value, code: &str, field: &str, message: &str) {
    assert_eq!(result["status"], "rejected", "{result}");
    assert_eq!(result["code"], code, "{result}");
    assert_eq!(result["errors"][field], json!([message]), "{result}");
}

/// The fields that tell what a record is for, in the order the seed lists them.
fn what(record: &Value) -> Value {
    json!([
        record["channel"],
        record["account"],
        record["charge_id"],
        record["action"],
        record["status"],
        record["transaction_no"],
    ])
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_is_a_charge_record_with_its_channel_account_and_ping_plus_plus_ids() {
    let (env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    env.fund(1, 1_000).await;

    let recharge = data(
        &mut client,
        "rc",
        "recharge",
        1,
        json!({"type": "alipay", "amount": 500, "client_ip": "10.1.2.3"}),
    )
    .await;
    let recharge_order = recharge["order"]["id"].as_i64().unwrap();
    let charge_id = recharge["pingpp_order"]["id"].as_str().unwrap().to_owned();
    let transfer = data(
        &mut client,
        "tr",
        "transfer",
        1,
        json!({"user": 2, "amount": 100}),
    )
    .await;
    let reward = data(
        &mut client,
        "rw",
        "reward",
        1,
        json!({"user": 3, "amount": 50}),
    )
    .await;
    let cash = data(
        &mut client,
        "cs",
        "cash",
        1,
        json!({"value": 200, "type": "alipay", "account": "a@b.cn"}),
    )
    .await;
    let transform = data(&mut client, "tf", "transform", 1, json!({"amount": 100})).await;

    let list = data(&mut client, "l-1", "charges.list", 1, json!({})).await;
    let records = list.as_array().unwrap();
    assert_eq!(records.len(), 5, "{list}");
    let [tf, cs, rw, tr, rc] = [0, 1, 2, 3, 4].map(|i| &records[i]);
    assert_eq!(
        ids(&list),
        [
            &transform["order"],
            &cash["order"],
            &reward["order"],
            &transfer["order"],
            &recharge["order"]
        ]
        .map(|o| o["id"].as_i64().unwrap())
    );
    assert_eq!(
        what(rc),
        json!(["alipay", null, charge_id, 1, 0, null]),
        "{rc}"
    );
    assert_eq!(what(tr), json!(["user", "2", null, 2, 1, null]), "{tr}");
    assert_eq!(what(rw), json!(["user", "3", null, 2, 1, null]), "{rw}");
    assert_eq!(
        what(cs),
        json!(["alipay", "a@b.cn", null, 2, 0, null]),
        "{cs}"
    );
    assert_eq!(
        what(tf),
        json!(["transform", null, null, 2, 1, null]),
        "{tf}"
    );
    // The rest is the order's, in the seed's shape.
    let order = &recharge["order"];
    assert_eq!(
        (&rc["user_id"], &rc["amount"], &rc["currency"]),
        (&json!(1), &json!(500), &json!("cny"))
    );
    assert_eq!(
        (&rc["subject"], &rc["body"]),
        (&order["title"], &order["body"])
    );
    assert_eq!(rc["created_at"], order["created_at"]);
    assert_eq!(rc["deleted_at"], Value::Null);
    assert_eq!(
        rc.as_object().unwrap().len(),
        15,
        "the seed's fields exactly: {rc}"
    );
    // The receiver sees the transfer as income from its sender.
    let received = data(&mut client, "l-2", "charges.list", 2, json!({})).await;
    assert_eq!(
        what(&received[0]),
        json!(["user", "1", null, 1, 1, null]),
        "{received}"
    );

    // Paid through the webhook: succeeded, with the payment's transaction_no.
    let paid = fake.pay(&charge_id);
    let (event, _) = fake.signed_event("charge.succeeded", paid.clone());
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'credited'",
        1,
    )
    .await;
    let got = data(
        &mut client,
        "g-1",
        "charges.get",
        1,
        json!({ "charge": recharge_order }),
    )
    .await;
    assert_eq!(
        what(&got),
        json!(["alipay", null, charge_id, 1, 1, paid["transaction_no"]]),
        "{got}"
    );
    assert!(got["transaction_no"].is_string(), "{got}");

    // A recharge that Ping++ refused to pay, learnt by recharge.retrieve: failed (2).
    let refused = data(
        &mut client,
        "rc-2",
        "recharge",
        1,
        json!({"type": "wx", "amount": 300, "client_ip": "10.1.2.3"}),
    )
    .await;
    fake.fail_charge(
        refused["pingpp_order"]["id"].as_str().unwrap(),
        "card_declined",
        "declined",
    );
    data(
        &mut client,
        "rt-2",
        "recharge.retrieve",
        1,
        json!({"order": refused["order"]["id"]}),
    )
    .await;
    let failed = data(
        &mut client,
        "g-2",
        "charges.get",
        1,
        json!({"charge": refused["order"]["id"]}),
    )
    .await;
    assert_eq!(
        what(&failed),
        json!(["wx", null, refused["pingpp_order"]["id"], 1, 2, null]),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_list_pages_newest_first_and_filters_by_action() {
    let env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    env.fund(2, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    // Expenses of 11..=15 fen and income of 21..=23 fen for user 1, interleaved.
    for i in 1..=5 {
        data(
            &mut client,
            &format!("out-{i}"),
            "transfer",
            1,
            json!({"user": 2, "amount": 10 + i}),
        )
        .await;
        if i <= 3 {
            data(
                &mut client,
                &format!("in-{i}"),
                "transfer",
                2,
                json!({"user": 1, "amount": 20 + i}),
            )
            .await;
        }
    }

    let all = data(&mut client, "all", "charges.list", 1, json!({})).await;
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 8);
    assert!(all_ids.windows(2).all(|w| w[0] > w[1]), "{all_ids:?}");
    let first = data(&mut client, "p-1", "charges.list", 1, json!({"limit": 3})).await;
    assert_eq!(ids(&first), all_ids[..3]);
    let next = data(
        &mut client,
        "p-2",
        "charges.list",
        1,
        json!({"limit": 3, "after": all_ids[2]}),
    )
    .await;
    assert_eq!(ids(&next), all_ids[3..6]);
    let last = data(
        &mut client,
        "p-3",
        "charges.list",
        1,
        json!({"after": all_ids[5], "limit": 1000}),
    )
    .await;
    assert_eq!(ids(&last), all_ids[6..]);
    let none = data(
        &mut client,
        "p-4",
        "charges.list",
        1,
        json!({"after": all_ids[7]}),
    )
    .await;
    assert_eq!(none, json!([]));

    let expenses = data(&mut client, "a-0", "charges.list", 1, json!({"action": 0})).await;
    let amounts = |list: &Value| -> Vec<i64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| r["amount"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(amounts(&expenses), [15, 14, 13, 12, 11]);
    assert!(expenses
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"] == 2));
    let income = data(
        &mut client,
        "a-1",
        "charges.list",
        1,
        json!({"action": 1, "limit": 2}),
    )
    .await;
    assert_eq!(amounts(&income), [23, 22]);
    assert!(income.as_array().unwrap().iter().all(|r| r["action"] == 1));
    let income_after = data(
        &mut client,
        "a-2",
        "charges.list",
        1,
        json!({"action": 1, "after": income[1]["id"]}),
    )
    .await;
    assert_eq!(amounts(&income_after), [21]);
    // Another user's records never show.
    let theirs = data(&mut client, "u-3", "charges.list", 3, json!({})).await;
    assert_eq!(theirs, json!([]));

    for (id, args, code, field) in [
        ("b-1", json!({"limit": 0}), "invalid_limit", "limit"),
        ("b-2", json!({"after": "x"}), "invalid_after", "after"),
        ("b-3", json!({"action": 2}), "invalid_action", "action"),
        (
            "b-4",
            json!({"action": "income"}),
            "invalid_action",
            "action",
        ),
        ("b-5", json!({"action": "1"}), "invalid_action", "action"),
    ] {
        let result = call(&mut client, id, "charges.list", 1, args).await;
        assert_rejected(&result, code, field, "发送的数据错误");
    }
    let several = call(
        &mut client,
        "b-6",
        "charges.list",
        1,
        json!({"limit": -1, "action": -1}),
    )
    .await;
    assert_rejected(&several, "invalid_limit", "limit", "发送的数据错误");
    assert_eq!(several["errors"]["action"], json!(["发送的数据错误"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_get_answers_only_the_owners_record() {
    let env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    data(
        &mut client,
        "tr",
        "transfer",
        1,
        json!({"user": 2, "amount": 100}),
    )
    .await;
    let list = data(&mut client, "l", "charges.list", 1, json!({})).await;
    let own = list[0]["id"].clone();

    let got = data(&mut client, "g-1", "charges.get", 1, json!({"charge": own})).await;
    assert_eq!(got, list[0]);
    // The receiver's record of the same transfer is another order, so another record.
    let others = call(&mut client, "g-2", "charges.get", 2, json!({"charge": own})).await;
    assert_rejected(&others, "unknown_order", "charge", "订单不存在");
    let unknown = call(
        &mut client,
        "g-3",
        "charges.get",
        1,
        json!({"charge": 1_000_000}),
    )
    .await;
    assert_rejected(&unknown, "unknown_order", "charge", "订单不存在");
    let missing = call(&mut client, "g-4", "charges.get", 1, json!({})).await;
    assert_rejected(&missing, "order_required", "charge", "请选择订单");
    let bad = call(&mut client, "g-5", "charges.get", 1, json!({"charge": "x"})).await;
    assert_rejected(&bad, "invalid_order", "charge", "发送的数据错误");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cash_paid_out_through_a_withdrawal_has_its_id_as_charge_id() {
    let (env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.pingpp.payout = PayoutMode::Withdrawals;
        s.pingpp.withdrawal_return_url = "https://example.com/wallet/cash".into();
    })
    .await;
    env.fund(1, 1_000).await;
    let cash = data(
        &mut client,
        "c",
        "cash",
        1,
        json!({"value": 300, "type": "alipay", "account": "u@example.com"}),
    )
    .await;
    let order = cash["order"]["id"].clone();
    let cash_id = cash["cash"]["id"].clone();
    let approved = data(
        &mut client,
        "a",
        "cash.approve",
        99,
        json!({"cash": cash_id, "remark": "同意"}),
    )
    .await;
    let withdrawal = approved["pingpp_withdrawal"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Approved, payout pending: the order still waits.
    let pending = data(
        &mut client,
        "g-1",
        "charges.get",
        1,
        json!({"charge": order}),
    )
    .await;
    assert_eq!(
        what(&pending),
        json!(["alipay", "u@example.com", withdrawal, 2, 0, null]),
        "{pending}"
    );
    fake.succeed_withdrawal(&withdrawal);
    data(
        &mut client,
        "r",
        "cash.retrieve",
        99,
        json!({"cash": cash_id}),
    )
    .await;
    let paid = data(
        &mut client,
        "g-2",
        "charges.get",
        1,
        json!({"charge": order}),
    )
    .await;
    assert_eq!(
        what(&paid),
        json!(["alipay", "u@example.com", withdrawal, 2, 1, null]),
        "{paid}"
    );
}
