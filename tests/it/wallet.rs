//! `cash` and its review, `transform`, and the read commands, end to end against real
//! PostgreSQL and RabbitMQ.

use crate::support::{BrokerClient, TestEnv};
use serde_json::{json, Value};

fn command(id: &str, kind: &str, user: i64, data: Value) -> Value {
    json!({ "id": id, "type": kind, "user_id": user, "data": data })
}

fn cash(id: &str, user: i64, value: i64) -> Value {
    command(
        id,
        "cash",
        user,
        json!({"value": value, "type": "alipay", "account": "a@b.cn"}),
    )
}

async fn call(client: &mut BrokerClient, id: &str, kind: &str, user: i64, data: Value) -> Value {
    client.call(command(id, kind, user, data)).await
}

fn assert_rejected(result: &Value, code: &str, field: &str, message: &str) {
    assert_eq!(result["status"], "rejected", "{result}");
    assert_eq!(result["code"], code, "{result}");
    assert!(
        result["errors"][field]
            .as_array()
            .is_some_and(|m| m.contains(&json!(message))),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cash_request_holds_the_money_until_it_is_approved() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;

    let result = client.call(cash("c-1", 1, 300)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["message"], json!(["申请提现成功"]));
    let record = &result["data"]["cash"];
    assert_eq!(
        (
            record["value"].clone(),
            record["type"].clone(),
            record["account"].clone()
        ),
        (json!(300), json!("alipay"), json!("a@b.cn"))
    );
    assert_eq!(
        (record["status"].clone(), record["remark"].clone()),
        (json!(0), Value::Null)
    );
    let order = &result["data"]["order"];
    assert_eq!(order["target_type"], "widthdraw");
    assert_eq!(order["title"], "提现");
    assert_eq!(
        (order["type"].clone(), order["state"].clone()),
        (json!(-1), json!(0))
    );
    assert_eq!(env.balance(1).await, 700);
    assert_eq!(env.system_balance("pending_payouts").await, 300);
    let cash_id = record["id"].as_i64().unwrap();

    // The operator needs a remark.
    let no_remark = call(
        &mut client,
        "a-0",
        "cash.approve",
        99,
        json!({"cash": cash_id}),
    )
    .await;
    assert_rejected(&no_remark, "remark_required", "remark", "请输入备注信息");
    let approved = call(
        &mut client,
        "a-1",
        "cash.approve",
        99,
        json!({"cash": cash_id, "remark": "已打款"}),
    )
    .await;
    assert_eq!(approved["status"], "succeeded", "{approved}");
    assert_eq!(approved["data"]["cash"]["status"], 1);
    assert_eq!(approved["data"]["cash"]["remark"], "已打款");
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    assert_eq!(env.system_balance("paid_out").await, 300);
    assert_eq!(env.balance(1).await, 700);
    let state: i16 = env
        .db
        .query_one(
            "SELECT state FROM wallet_orders WHERE id = $1",
            &[&order["id"].as_i64().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, 1);

    // The same decision again (another command) changes nothing; the other one is refused.
    let again = call(
        &mut client,
        "a-2",
        "cash.approve",
        99,
        json!({"cash": cash_id, "remark": "再次"}),
    )
    .await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["data"]["cash"]["remark"], "已打款");
    let reject = call(
        &mut client,
        "r-1",
        "cash.reject",
        99,
        json!({"cash": cash_id, "remark": "晚了"}),
    )
    .await;
    assert_rejected(
        &reject,
        "cash_already_decided",
        "cash",
        "该提现申请已被处理",
    );
    assert_eq!(env.system_balance("paid_out").await, 300);
    assert_eq!(env.balance(1).await, 700);

    let unknown = call(
        &mut client,
        "a-3",
        "cash.approve",
        99,
        json!({"cash": 999_999, "remark": "x"}),
    )
    .await;
    assert_rejected(&unknown, "unknown_cash", "cash", "提现记录不存在");
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_cash_request_returns_the_money() {
    let mut env = TestEnv::new().await;
    env.fund(2, 500).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let result = client.call(cash("c-2", 2, 500)).await;
    let cash_id = result["data"]["cash"]["id"].as_i64().unwrap();
    let order_id = result["data"]["order"]["id"].as_i64().unwrap();
    assert_eq!(env.balance(2).await, 0);

    let rejected = call(
        &mut client,
        "r-2",
        "cash.reject",
        99,
        json!({"cash": cash_id, "remark": "账户有误"}),
    )
    .await;
    assert_eq!(rejected["status"], "succeeded", "{rejected}");
    assert_eq!(rejected["data"]["cash"]["status"], 2);
    assert_eq!(env.balance(2).await, 500);
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    let state: i16 = env
        .db
        .query_one(
            "SELECT state FROM wallet_orders WHERE id = $1",
            &[&order_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, -1);
    // Rejecting twice returns nothing more.
    let twice = call(
        &mut client,
        "r-3",
        "cash.reject",
        99,
        json!({"cash": cash_id, "remark": "x"}),
    )
    .await;
    assert_eq!(twice["status"], "succeeded");
    assert_eq!(env.balance(2).await, 500);
    let approve = call(
        &mut client,
        "a-4",
        "cash.approve",
        99,
        json!({"cash": cash_id, "remark": "x"}),
    )
    .await;
    assert_rejected(
        &approve,
        "cash_already_decided",
        "cash",
        "该提现申请已被处理",
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cash_rejections_use_the_wallet_api_words_and_touch_no_money() {
    let mut env = TestEnv::new().await;
    env.fund(3, 150).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let cases = [
        (
            json!({"type": "alipay", "account": "x"}),
            "amount_required",
            "value",
            "请输入提现金额",
        ),
        (
            json!({"value": "100", "type": "alipay", "account": "x"}),
            "invalid_amount",
            "value",
            "发送的数据错误",
        ),
        (
            json!({"value": 99, "type": "alipay", "account": "x"}),
            "amount_too_small",
            "value",
            "输入的提现金额不合法",
        ),
        (
            json!({"value": 151, "type": "alipay", "account": "x"}),
            "insufficient_balance",
            "value",
            "提现金额超出账户余额",
        ),
        (
            json!({"value": 100, "account": "x"}),
            "cash_type_required",
            "type",
            "请选择提现方式",
        ),
        (
            json!({"value": 100, "type": "bank", "account": "x"}),
            "unsupported_cash_type",
            "type",
            "你选择的提现方式不支持",
        ),
        (
            json!({"value": 100, "type": "wechat"}),
            "account_required",
            "account",
            "请输入你的提现账户",
        ),
    ];
    for (i, (data, code, field, message)) in cases.into_iter().enumerate() {
        let result = call(&mut client, &format!("bad-{i}"), "cash", 3, data).await;
        assert_rejected(&result, code, field, message);
    }
    assert_eq!(env.balance(3).await, 150);
    assert_eq!(env.count("SELECT count(*) FROM cashes").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_applies_once_however_often_it_arrives() {
    let mut env = TestEnv::new().await;
    env.fund(4, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let commands = [
        cash("once-cash", 4, 200),
        command("once-transform", "transform", 4, json!({"amount": 300})),
    ];
    for command in &commands {
        for _ in 0..3 {
            client.command(command).await;
        }
    }
    client.wait_results(6).await;
    for command in &commands {
        let results = &client.received[command["id"].as_str().unwrap()];
        assert_eq!(results.len(), 3);
        assert!(
            results
                .iter()
                .all(|r| r == &results[0] && r["status"] == "succeeded"),
            "{results:?}"
        );
    }
    let cash_id = client.received["once-cash"][0]["data"]["cash"]["id"]
        .as_i64()
        .unwrap();
    let decision = command(
        "once-approve",
        "cash.approve",
        9,
        json!({"cash": cash_id, "remark": "ok"}),
    );
    for _ in 0..3 {
        client.command(&decision).await;
    }
    client.wait_results(9).await;
    assert_eq!(env.balance(4).await, 500);
    assert_eq!(env.system_balance("paid_out").await, 200);
    assert_eq!(env.count("SELECT count(*) FROM cashes").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM journal").await, 4); // funding + 3
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_turns_fen_into_points_at_the_ratio() {
    let mut env = TestEnv::new().await;
    env.settings.wallet.ratio = 200;
    env.fund(5, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;

    let result = call(&mut client, "tf-1", "transform", 5, json!({"amount": 150})).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["message"], json!(["操作成功"]));
    let order = &result["data"]["order"];
    assert_eq!(order["target_type"], "transform");
    assert_eq!(order["title"], "积分转换");
    assert_eq!(order["body"], "充值30000积分");
    assert_eq!(
        (order["type"].clone(), order["state"].clone()),
        (json!(-1), json!(1))
    );
    assert_eq!(env.balance(5).await, 850);
    let points: i64 = env
        .db
        .query_one(
            "SELECT balance FROM accounts WHERE kind = 'points' AND user_id = 5",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(points, 30_000);
    assert_eq!(env.system_balance("transform_revenue").await, 150);
    assert_eq!(env.system_balance("points_issued").await, -30_000);

    let missing = call(&mut client, "tf-2", "transform", 5, json!({})).await;
    assert_rejected(
        &missing,
        "amount_required",
        "amount",
        "请选择需要转换的余额",
    );
    let small = call(&mut client, "tf-3", "transform", 5, json!({"amount": 99})).await;
    assert_rejected(&small, "amount_too_small", "amount", "余额参数不合法");
    let much = call(&mut client, "tf-4", "transform", 5, json!({"amount": 851})).await;
    assert_rejected(&much, "insufficient_balance", "amount", "账户余额不足");
    assert_eq!(env.balance(5).await, 850);
    assert!(env.audit().await.ok);

    let wallet = call(&mut client, "w-1", "wallet.get", 5, json!({})).await;
    assert_eq!(wallet["status"], "succeeded", "{wallet}");
    let data = &wallet["data"];
    assert_eq!(
        (data["balance"].clone(), data["points"].clone()),
        (json!(850), json!(30_000))
    );
    assert_eq!(
        (data["total_income"].clone(), data["total_expenses"].clone()),
        (json!(1_000), json!(150))
    );
    assert_eq!(data["ratio"], 200);
    assert_eq!(data["cash"], json!(["alipay", "wechat"]));
    assert_eq!(data["case_min_amount"], 100);
    assert_eq!(data["labels"], json!([550, 2000, 9900]));
    assert_eq!(data["recharge_type"].as_array().unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_cashes_are_listed_newest_first_in_pages() {
    let env = TestEnv::new().await;
    env.fund(6, 10_000).await;
    env.fund(7, 10_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    for i in 0..5 {
        let r = client
            .call(crate::support::transfer(&format!("out-{i}"), 6, 7, 10 + i))
            .await;
        assert_eq!(r["status"], "succeeded");
        let r = client
            .call(crate::support::transfer(&format!("in-{i}"), 7, 6, 1))
            .await;
        assert_eq!(r["status"], "succeeded");
    }
    for i in 0..3 {
        assert_eq!(
            client.call(cash(&format!("cash-{i}"), 6, 100 + i)).await["status"],
            "succeeded"
        );
    }

    let all = call(&mut client, "l-1", "orders.list", 6, json!({})).await;
    let orders = all["data"].as_array().unwrap();
    assert_eq!(orders.len(), 13);
    assert!(orders
        .windows(2)
        .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()));
    assert!(orders.iter().all(|o| o["owner_id"] == 6));

    let page = call(&mut client, "l-2", "orders.list", 6, json!({"limit": 4})).await;
    let first = page["data"].as_array().unwrap();
    assert_eq!(first.len(), 4);
    let after = first[3]["id"].clone();
    let next = call(
        &mut client,
        "l-3",
        "orders.list",
        6,
        json!({"limit": 4, "after": after}),
    )
    .await;
    let second = next["data"].as_array().unwrap();
    assert_eq!(second[0]["id"], orders[4]["id"]);

    let income = call(
        &mut client,
        "l-4",
        "orders.list",
        6,
        json!({"action": "income"}),
    )
    .await;
    assert_eq!(income["data"].as_array().unwrap().len(), 5);
    assert!(income["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["type"] == 1));
    let expenses = call(
        &mut client,
        "l-5",
        "orders.list",
        6,
        json!({"action": "expenses", "limit": 1000}),
    )
    .await;
    assert_eq!(expenses["data"].as_array().unwrap().len(), 8);
    let bad = call(
        &mut client,
        "l-6",
        "orders.list",
        6,
        json!({"action": "both"}),
    )
    .await;
    assert_rejected(&bad, "invalid_action", "action", "发送的数据错误");

    let cashes = call(&mut client, "c-l", "cashes.list", 6, json!({"limit": 2})).await;
    let cashes = cashes["data"].as_array().unwrap();
    assert_eq!(cashes.len(), 2);
    assert_eq!(cashes[0]["value"], 102);
    assert_eq!(
        cashes[0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        [
            "account",
            "created_at",
            "id",
            "remark",
            "status",
            "type",
            "value"
        ]
    );
    assert_eq!(
        call(&mut client, "c-l2", "cashes.list", 7, json!({})).await["data"],
        json!([])
    );

    let own = orders[0]["id"].clone();
    let got = call(&mut client, "g-1", "orders.get", 6, json!({"order": own})).await;
    assert_eq!(got["data"], orders[0]);
    let others = call(&mut client, "g-2", "orders.get", 7, json!({"order": own})).await;
    assert_rejected(&others, "unknown_order", "order", "订单不存在");
}
