//! Frozen wallets and daily limits end to end, against real PostgreSQL and RabbitMQ: checked
//! in the transaction that moves the money, so that concurrent commands cannot pass together.

use serde_json::{json, Value};

use crate::support::{transfer, TestEnv};
use pluspay::domain::limits::DailyLimit;

fn freeze(id: &str, user: i64, frozen: bool) -> Value {
    let kind = if frozen {
        "wallet.freeze"
    } else {
        "wallet.unfreeze"
    };
    json!({"id": id, "type": kind, "user_id": 900, "data": {"user": user, "reason": "风控审查"}})
}

fn set_limits(id: &str, user: i64, data: Value) -> Value {
    let mut data = data;
    data["user"] = json!(user);
    json!({"id": id, "type": "limits.set", "user_id": 900, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_wallet_sends_nothing_and_still_receives() {
    let mut env = TestEnv::new().await;
    env.fund(1, 10_000).await;
    env.fund(2, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;

    let frozen = client.call(freeze("f-1", 1, true)).await;
    assert_eq!(frozen["status"], "succeeded", "{frozen}");
    assert_eq!(frozen["message"], json!(["钱包已冻结"]));
    let wallet = &frozen["data"]["wallet"];
    assert_eq!(
        (
            &wallet["user_id"],
            &wallet["frozen"],
            &wallet["reason"],
            &wallet["operator_id"]
        ),
        (&json!(1), &json!(true), &json!("风控审查"), &json!(900))
    );

    let hold = client
        .call(json!({"id": "h-0", "type": "hold.create", "user_id": 2,
                     "data": {"amount": 100, "reason": "悬赏", "expires_in": 600}}))
        .await;
    assert_eq!(hold["status"], "succeeded");
    let sends = [
        transfer("t-1", 1, 2, 10),
        json!({"id": "r-1", "type": "reward", "user_id": 1, "data": {"user": 2, "amount": 10}}),
        json!({"id": "c-1", "type": "cash", "user_id": 1,
               "data": {"value": 100, "type": "alipay", "account": "a@example.com"}}),
        json!({"id": "x-1", "type": "transform", "user_id": 1, "data": {"amount": 100}}),
        json!({"id": "h-1", "type": "hold.create", "user_id": 1,
               "data": {"amount": 100, "reason": "悬赏", "expires_in": 600}}),
        json!({"id": "p-1", "type": "redpacket.create", "user_id": 1,
               "data": {"total": 100, "count": 2, "mode": "equal", "expires_in": 600}}),
    ];
    for command in sends {
        let result = client.call(command).await;
        assert_eq!(result["code"], "wallet_frozen", "{result}");
        assert_eq!(
            result["errors"]["user_id"],
            json!(["钱包已被冻结，无法支出"])
        );
    }
    // Receiving still works: a transfer, and a capture of somebody else's hold.
    let incoming = client.call(transfer("t-in", 2, 1, 50)).await;
    assert_eq!(incoming["status"], "succeeded", "{incoming}");
    let captured = client
        .call(json!({"id": "cap-in", "type": "hold.capture", "user_id": 2,
                     "data": {"hold": hold["data"]["hold"]["id"], "user": 1, "amount": 100}}))
        .await;
    assert_eq!(captured["status"], "succeeded", "{captured}");
    assert_eq!(env.balance(1).await, 10_150);

    let thawed = client.call(freeze("f-2", 1, false)).await;
    assert_eq!(thawed["message"], json!(["钱包已解冻"]));
    assert_eq!(thawed["data"]["wallet"]["frozen"], false);
    let after = client.call(transfer("t-2", 1, 2, 10)).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_freezes WHERE user_id = 1")
            .await,
        2
    );
    assert!(env.audit().await.ok);
}

/// Transfers racing a freeze: each is applied before it (and succeeds) or after (and is
/// refused); none after the freeze's answer succeeds; money is conserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_racing_transfers_stops_every_later_one() {
    let mut env = TestEnv::new().await;
    env.settings.worker.batch_size = 16;
    env.fund(1, 100_000).await;
    let _worker = env.start_worker();
    let _second = env.start_worker();
    let mut client = env.client().await;
    const BEFORE: usize = 60;
    for i in 0..BEFORE {
        client
            .command(&transfer(&format!("t-{i}"), 1, 2, 100))
            .await;
        if i == BEFORE / 2 {
            client.command(&freeze("f-race", 1, true)).await;
        }
    }
    client.wait_results(BEFORE + 1).await;
    assert_eq!(client.received["f-race"][0]["status"], "succeeded");
    for i in 0..10 {
        let late = client.call(transfer(&format!("late-{i}"), 1, 2, 100)).await;
        assert_eq!(late["code"], "wallet_frozen", "{late}");
    }
    let mut succeeded = 0;
    for i in 0..BEFORE {
        let result = &client.received[&format!("t-{i}")][0];
        match result["status"].as_str() {
            Some("succeeded") => succeeded += 1,
            _ => assert_eq!(result["code"], "wallet_frozen", "{result}"),
        }
    }
    assert!(succeeded >= 1, "the first transfer came before the freeze");
    assert_eq!(env.balance(1).await, 100_000 - 100 * succeeded);
    assert_eq!(env.balance(2).await, 100 * succeeded);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_limits_count_and_sum_a_day_even_under_concurrency() {
    let mut env = TestEnv::new().await;
    env.settings.worker.batch_size = 16;
    env.settings.wallet.daily_limits.insert(
        "transfer".into(),
        DailyLimit {
            daily_count: Some(5),
            daily_amount: None,
        },
    );
    env.settings.wallet.daily_limits.insert(
        "cash".into(),
        DailyLimit {
            daily_count: None,
            daily_amount: Some(500),
        },
    );
    env.fund(1, 100_000).await;
    let _worker = env.start_worker();
    let _second = env.start_worker();
    let mut client = env.client().await;
    const SENT: usize = 40;
    for i in 0..SENT {
        client.command(&transfer(&format!("t-{i}"), 1, 2, 10)).await;
    }
    client.wait_results(SENT).await;
    let mut passed = 0;
    for i in 0..SENT {
        let result = &client.received[&format!("t-{i}")][0];
        if result["status"] == "succeeded" {
            passed += 1;
        } else {
            assert_eq!(result["code"], "limit_exceeded", "{result}");
            assert_eq!(result["errors"]["amount"], json!(["今日转账次数已达上限"]));
        }
    }
    assert_eq!(passed, 5, "exactly the daily count went through");
    assert_eq!(env.balance(2).await, 50);
    // Another user, another count; another type, its own limit: the sum of the day.
    let other = client.call(transfer("o-1", 2, 3, 10)).await;
    assert_eq!(other["status"], "succeeded");
    let cash = |id: &str, value: i64| {
        json!({"id": id, "type": "cash", "user_id": 1,
               "data": {"value": value, "type": "alipay", "account": "a@example.com"}})
    };
    assert_eq!(client.call(cash("c-1", 300)).await["status"], "succeeded");
    let over = client.call(cash("c-2", 201)).await;
    assert_eq!(over["code"], "limit_exceeded", "{over}");
    assert_eq!(over["errors"]["amount"], json!(["今日提现金额超出限额"]));
    assert_eq!(client.call(cash("c-3", 200)).await["status"], "succeeded");
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_gives_one_user_their_own_limit_counting_the_day_so_far() {
    let mut env = TestEnv::new().await;
    env.fund(1, 10_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    // Three transfers while no limit applies: nothing is counted, the orders are.
    for i in 0..3 {
        let result = client.call(transfer(&format!("t-{i}"), 1, 2, 100)).await;
        assert_eq!(result["status"], "succeeded");
    }
    let set = client
        .call(set_limits(
            "l-1",
            1,
            json!({"type": "transfer", "daily_count": 4, "daily_amount": 1_000}),
        ))
        .await;
    assert_eq!(set["status"], "succeeded", "{set}");
    assert_eq!(set["message"], json!(["限额设置成功"]));
    assert_eq!(
        set["data"]["limits"],
        json!({"user_id": 1, "type": "transfer", "daily_count": 4, "daily_amount": 1_000, "source": "user"})
    );
    let fourth = client.call(transfer("t-3", 1, 2, 100)).await;
    assert_eq!(fourth["status"], "succeeded", "{fourth}");
    let fifth = client.call(transfer("t-4", 1, 2, 100)).await;
    assert_eq!(fifth["code"], "limit_exceeded", "{fifth}");
    // Only this user: another sends freely.
    env.fund(5, 1_000).await;
    for i in 0..6 {
        let free = client.call(transfer(&format!("u5-{i}"), 5, 2, 1)).await;
        assert_eq!(free["status"], "succeeded");
    }
    // The user's limit removed: none applies any more.
    let removed = client
        .call(set_limits("l-2", 1, json!({"type": "transfer"})))
        .await;
    assert_eq!(removed["data"]["limits"]["source"], "none", "{removed}");
    assert_eq!(
        client.call(transfer("t-5", 1, 2, 100)).await["status"],
        "succeeded"
    );
    let bad = client
        .call(set_limits(
            "l-3",
            1,
            json!({"type": "wallet.get", "daily_count": -1}),
        ))
        .await;
    assert_eq!(bad["code"], "invalid_limit_type", "{bad}");
    assert_eq!(
        bad["errors"]["daily_count"],
        json!(["限额必须是不小于0的整数"])
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_answer_custody_mode_with_the_money_at_pingpp() {
    let mut env = TestEnv::new().await;
    env.settings.wallet.custody = pluspay::domain::custody::Custody::Pingpp;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    for command in [
        freeze("f-p", 1, true),
        freeze("u-p", 1, false),
        set_limits("l-p", 1, json!({"type": "transfer", "daily_count": 1})),
    ] {
        let result = client.call(command).await;
        assert_eq!(result["code"], "custody_mode", "{result}");
    }
}
