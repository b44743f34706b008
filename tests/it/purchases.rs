//! Purchases with the money at Ping++, through real PostgreSQL and RabbitMQ and the fake Ping++:
//! a buyer pays a creator's sub-merchant from the e-wallet or a channel, exactly once whatever
//! the webhook redeliveries and pulls, and refunds move back exactly their amount once, never
//! more than was paid; the ledger mirrors the e-wallets and the sub-merchant at the end.

use crate::custody::{code, command, custody_mode, deposit, open_account, succeeded};
use crate::support::fake_pingpp::FakePingpp;
use crate::support::{next_event, BrokerClient, TestEnv, WorkerHandle};
use serde_json::{json, Value};

const RETURN_URL: &str = "https://example.com/back";

async fn start() -> (TestEnv, FakePingpp, BrokerClient, WorkerHandle) {
    crate::support::with_fake_pingpp_and_worker(custody_mode).await
}

/// A creator whose micro sub-merchant is open.
async fn creator(env: &TestEnv, client: &mut BrokerClient, fake: &FakePingpp, user: i64) {
    let made = client
        .call(command(
            &format!("mc-{user}"),
            "merchant.create",
            user,
            json!({"display_name": "创作者小店"}),
        ))
        .await;
    succeeded(&made);
    let application = json!({
        "kind": "micro",
        "business_license": {"sign_name": "李四", "short_name": "李四的店"},
        "merchant_address": {"province": "四川省", "city": "成都市", "district": "高新区", "address": "一号"},
        "legal_person_id_card": {"type": "id_card", "number": "110101199003074514", "copy": "http://m/1",
                                 "national": "http://m/2", "name": "李四", "mobile": "13912345678"},
        "settle_account": {"account": "6214850213609784", "type": "b2c", "bank_code": "CMBCHINA"}
    });
    let applied = client
        .call(command(
            &format!("ma-{user}"),
            "merchant.apply",
            user,
            application,
        ))
        .await;
    let id = succeeded(&applied)["application"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (event, _) = fake.signed_event(
        "micro_application.succeeded",
        fake.complete_merchant_application(&id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        &format!("SELECT count(*) FROM merchant_applications WHERE user_id = {user} AND status = 'completed'"),
        1,
    )
    .await;
    // Its payouts' bank account.
    let bound = client
        .call(command(
            &format!("ms-{user}"),
            "merchant.settle_account",
            user,
            json!({"recipient": {"account": "6214850213609784", "type": "b2c"}}),
        ))
        .await;
    succeeded(&bound);
}

/// A buyer with an open e-wallet holding `amount`.
async fn buyer(
    env: &TestEnv,
    client: &mut BrokerClient,
    fake: &FakePingpp,
    user: i64,
    amount: i64,
) {
    open_account(client, fake, user).await;
    let made = client
        .call(deposit(&format!("dep-{user}"), user, amount))
        .await;
    let id = succeeded(&made)["deposit"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (event, _) = fake.signed_event("deposit.succeeded", fake.pay_deposit(&id));
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        &format!("SELECT count(*) FROM accounts WHERE kind = 'wallet' AND user_id = {user} AND balance = {amount}"),
        1,
    )
    .await;
}

fn purchase(id: &str, buyer: i64, seller: i64, amount: i64) -> Value {
    command(
        id,
        "order.create",
        buyer,
        json!({
        "seller": seller, "amount": amount, "subject": "付费文章", "body": "一篇付费文章",
        "client_ip": "127.0.0.1"}),
    )
}

async fn merchant_balance(env: &TestEnv, user: i64) -> i64 {
    env.db
        .query_opt(
            "SELECT balance FROM accounts WHERE kind = 'merchant' AND user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .map_or(0, |row| row.get(0))
}

fn at_pingpp(fake: &FakePingpp, user: &str) -> i64 {
    fake.user(user).unwrap()["available_balance"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_paid_once_and_refunds_move_back_exactly_their_amount() {
    let (mut env, fake, mut client, _worker) = start().await;
    creator(&env, &mut client, &fake, 20).await;
    buyer(&env, &mut client, &fake, 21, 1000).await;
    let mut orders_events = client.watch(&client.names.events_exchange, "order.#").await;
    let mut refund_events = client
        .watch(&client.names.events_exchange, "refund.#")
        .await;

    // Nobody can sell who is not an open sub-merchant.
    assert_eq!(
        code(&client.call(purchase("p0", 21, 22, 100)).await),
        "not_a_merchant"
    );

    let made = client.call(purchase("p1", 21, 20, 300)).await;
    let data = succeeded(&made).clone();
    let order_id = data["order"]["id"].as_i64().unwrap();
    assert_eq!(data["order"]["state"], 0);
    assert_eq!(data["pingpp_order"]["status"], "created");
    assert_eq!(
        client.call(purchase("p1", 21, 20, 300)).await["data"],
        made["data"]
    );
    assert_eq!(fake.orders().len(), 1);
    let pingpp_id = data["pingpp_order"]["id"].as_str().unwrap().to_owned();

    let pay = command(
        "pay1",
        "order.pay",
        21,
        json!({"order": order_id, "channel": "balance",
        "extra": {"return_url": RETURN_URL}}),
    );
    let paying = client.call(pay).await;
    assert!(
        succeeded(&paying)["pingpp_order"]["charge_essentials"].is_object(),
        "{paying}"
    );
    assert_eq!(
        env.balance(21).await,
        1000,
        "nothing moves before Ping++ says paid"
    );

    // Paid: the webhook twice and a pull race; paid once.
    let (event, _) = fake.signed_event("order.succeeded", fake.pay_order(&pingpp_id));
    client.enqueue_pingpp_event(&event).await;
    client.enqueue_pingpp_event(&event).await;
    let pulled = client
        .call(command("g1", "order.get", 21, json!({"order": order_id})))
        .await;
    assert_eq!(succeeded(&pulled)["order"]["state"], 1);
    // One row per event id (the second delivery is a replay): the creator's application, the
    // buyer's application and deposit, the order.
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome <> 'waiting'",
        4,
    )
    .await;
    assert_eq!(env.balance(21).await, 700);
    assert_eq!(merchant_balance(&env, 20).await, 300);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'order'")
            .await,
        1
    );
    let seller_orders = env
        .count("SELECT count(*) FROM wallet_orders WHERE owner_id = 20 AND type = 1 AND state = 1")
        .await;
    assert_eq!(seller_orders, 1);
    if env
        .count("SELECT count(*) FROM pingpp_events WHERE routing_key = 'order.succeeded'")
        .await
        == 1
    {
        assert_eq!(
            next_event(&mut orders_events).await["type"],
            "order.succeeded"
        );
    }

    // Refunds come out of the seller's sub-merchant: the seller asks, not the buyer.
    let by_buyer = command(
        "r0",
        "order.refund",
        21,
        json!({"order": order_id, "amount": 1, "description": "我要退款"}),
    );
    assert_eq!(code(&client.call(by_buyer).await), "unknown_order");
    // Never more than what is left, the second of two for the last fen refused.
    let refund = |id: &str, amount: i64| {
        command(
            id,
            "order.refund",
            20,
            json!({"order": order_id, "amount": amount, "description": "不想要了"}),
        )
    };
    let first = client.call(refund("r1", 100)).await;
    let first_id = succeeded(&first)["refund"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        code(&client.call(refund("r2", 201)).await),
        "refund_too_large"
    );
    let second = client.call(refund("r3", 200)).await;
    let second_id = succeeded(&second)["refund"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        code(&client.call(refund("r4", 1)).await),
        "refund_too_large"
    );
    assert_eq!(client.call(refund("r1", 100)).await["data"], first["data"]);
    assert_eq!(fake.order_refunds().len(), 2);

    // The first succeeds (moved back once, though told twice); the second fails (nothing).
    let (event, _) = fake.signed_event(
        "refund.succeeded",
        fake.succeed_order_refund(&pingpp_id, &first_id),
    );
    client.enqueue_pingpp_event(&event).await;
    client.enqueue_pingpp_event(&event).await;
    let (event, _) = fake.signed_event(
        "refund.failed",
        fake.fail_order_refund(&pingpp_id, &second_id, "渠道退款失败"),
    );
    client.enqueue_pingpp_event(&event).await;
    // The replayed delivery publishes its event again, the same event.
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut refund_events).await);
    }
    let refunded: Vec<&Value> = seen
        .iter()
        .filter(|e| e["type"] == "refund.succeeded")
        .collect();
    assert_eq!(refunded.len(), 2, "{seen:?}");
    assert_eq!(refunded[0]["event_id"], refunded[1]["event_id"]);
    let failed = seen.iter().find(|e| e["type"] == "refund.failed").unwrap();
    assert_eq!(failed["data"]["refund"]["status"], "failed");
    env.wait_for_count(
        "SELECT count(*) FROM order_refunds WHERE status <> 'pending'",
        2,
    )
    .await;
    assert_eq!(env.balance(21).await, 800);
    assert_eq!(merchant_balance(&env, 20).await, 200);
    // What the failed refund held is free again, whatever Ping++'s order says now.
    let fresh = client
        .call(command("g2", "order.get", 21, json!({"order": order_id})))
        .await;
    succeeded(&fresh);
    let again = client.call(refund("r5", 200)).await;
    succeeded(&again);
    let listed = client
        .call(command(
            "l1",
            "order.refunds",
            20,
            json!({"order": order_id}),
        ))
        .await;
    assert_eq!(succeeded(&listed)["refunds"].as_array().unwrap().len(), 3);

    // The ledger mirrors Ping++: the buyer's e-wallet and the sub-merchant's money.
    assert_eq!(at_pingpp(&fake, "user_21"), env.balance(21).await);
    assert_eq!(at_pingpp(&fake, "biz_20"), merchant_balance(&env, 20).await);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_payment_reaches_the_seller_without_touching_the_e_wallet() {
    let (mut env, fake, mut client, _worker) = start().await;
    creator(&env, &mut client, &fake, 30).await;
    buyer(&env, &mut client, &fake, 31, 50).await;
    let made = client.call(purchase("c1", 31, 30, 400)).await;
    let data = succeeded(&made).clone();
    let order_id = data["order"]["id"].as_i64().unwrap();
    let pingpp_id = data["pingpp_order"]["id"].as_str().unwrap().to_owned();
    let pay = command(
        "cpay",
        "order.pay",
        31,
        json!({"order": order_id, "channel": "yeepay_wx_pub"}),
    );
    succeeded(&client.call(pay).await);
    fake.pay_order(&pingpp_id);
    let pulled = client
        .call(command("cg", "order.get", 31, json!({"order": order_id})))
        .await;
    assert_eq!(succeeded(&pulled)["order"]["state"], 1);
    assert_eq!(env.balance(31).await, 50);
    assert_eq!(merchant_balance(&env, 30).await, 400);
    assert_eq!(env.system_balance("ewallet_outside").await, -450);
    // Refunded to the channel: the money leaves for outside again.
    let refunded = client
        .call(command(
            "cr",
            "order.refund",
            30,
            json!({"order": order_id, "amount": 150, "description": "部分退款"}),
        ))
        .await;
    let refund_id = succeeded(&refunded)["refund"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.succeed_order_refund(&pingpp_id, &refund_id);
    let listed = client
        .call(command(
            "cl",
            "order.refunds",
            31,
            json!({"order": order_id}),
        ))
        .await;
    assert_eq!(succeeded(&listed)["refunds"][0]["status"], "succeeded");
    assert_eq!(env.balance(31).await, 50);
    assert_eq!(merchant_balance(&env, 30).await, 250);
    assert_eq!(at_pingpp(&fake, "biz_30"), 250);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_checked_before_any_call() {
    let (_env, fake, mut client, _worker) = start().await;
    let before = fake.requests();
    let bad = client
        .call(command(
            "b1",
            "order.create",
            40,
            json!({"seller": 40, "amount": 0, "subject": "", "client_ip": "x",
            "allocation": "yes"}),
        ))
        .await;
    assert_eq!(code(&bad), "invalid_user");
    for field in [
        "seller",
        "amount",
        "subject",
        "body",
        "client_ip",
        "allocation",
    ] {
        assert!(bad["errors"].get(field).is_some(), "{field}: {bad}");
    }
    let pay = command(
        "b2",
        "order.pay",
        40,
        json!({"order": 1, "channel": "balance"}),
    );
    assert_eq!(code(&client.call(pay).await), "invalid_extra");
    let unknown = command("b3", "order.get", 40, json!({"order": 999}));
    assert_eq!(code(&client.call(unknown).await), "unknown_order");
    assert_eq!(fake.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_before_its_deposit_was_recorded_waits_for_it() {
    let (env, fake, mut client, _worker) = start().await;
    creator(&env, &mut client, &fake, 50).await;
    open_account(&mut client, &fake, 51).await;
    // The deposit is paid at Ping++; its webhook comes late.
    let made = client.call(deposit("late-dep", 51, 500)).await;
    let deposit_id = succeeded(&made)["deposit"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid_deposit = fake.pay_deposit(&deposit_id);
    let made = client.call(purchase("late-order", 51, 50, 500)).await;
    let data = succeeded(&made).clone();
    let order_id = data["order"]["id"].as_i64().unwrap();
    let pingpp_id = data["pingpp_order"]["id"].as_str().unwrap().to_owned();
    let pay = command(
        "late-pay",
        "order.pay",
        51,
        json!({"order": order_id, "channel": "balance", "extra": {"return_url": RETURN_URL}}),
    );
    succeeded(&client.call(pay).await);
    let (event, _) = fake.signed_event("order.succeeded", fake.pay_order(&pingpp_id));
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome = 'waiting'",
        1,
    )
    .await;
    assert_eq!(env.balance(51).await, 0);
    assert_eq!(merchant_balance(&env, 50).await, 0);
    // The deposit's webhook: the mirror catches up, and the parked order completes.
    let (event, _) = fake.signed_event("deposit.succeeded", paid_deposit);
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        &format!("SELECT count(*) FROM wallet_orders WHERE id = {order_id} AND state = 1"),
        1,
    )
    .await;
    assert_eq!(env.balance(51).await, 0);
    assert_eq!(merchant_balance(&env, 50).await, 500);
    assert_eq!(at_pingpp(&fake, "user_51"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_order_is_paid_half_refunded_split_given_back_and_completed() {
    let (mut env, fake, mut client, _worker) = start().await;
    creator(&env, &mut client, &fake, 60).await;
    open_account(&mut client, &fake, 61).await; // the platform's account, taking a commission
    open_account(&mut client, &fake, 62).await; // the buyer, paying by channel
    let mut allocation_events = client
        .watch(&client.names.events_exchange, "allocation.#")
        .await;
    let split = command(
        "s1",
        "order.create",
        62,
        json!({"seller": 60, "amount": 1000, "subject": "付费课程", "body": "一门课",
               "client_ip": "10.0.0.1", "allocation": true}),
    );
    let made = client.call(split).await;
    let data = succeeded(&made).clone();
    let order_id = data["order"]["id"].as_i64().unwrap();
    let pingpp_id = data["pingpp_order"]["id"].as_str().unwrap().to_owned();
    // Not paid yet: nothing to split.
    let early = command(
        "a0",
        "allocation.create",
        60,
        json!({"order": order_id, "recipients": [{"user": 61, "amount": 1}]}),
    );
    assert_eq!(code(&client.call(early).await), "order_not_paid");
    let pay = command(
        "s-pay",
        "order.pay",
        62,
        json!({"order": order_id, "channel": "yeepay_alipay_qr"}),
    );
    succeeded(&client.call(pay).await);
    let (event, _) = fake.signed_event("order.succeeded", fake.pay_order(&pingpp_id));
    client.enqueue_pingpp_event(&event).await;
    client.enqueue_pingpp_event(&event).await;
    let pulled = client
        .call(command(
            "s-get",
            "order.get",
            62,
            json!({"order": order_id}),
        ))
        .await;
    assert_eq!(succeeded(&pulled)["order"]["state"], 1);
    env.wait_for_count("SELECT count(*) FROM journal WHERE kind = 'order'", 1)
        .await;
    assert_eq!(env.system_balance("allocations_pending").await, 1000);
    assert_eq!(
        merchant_balance(&env, 60).await,
        0,
        "a split order waits for its split"
    );

    // Half refunded: out of what Ping++ holds for the order, back to the channel.
    let refunded = client
        .call(command(
            "s-ref",
            "order.refund",
            60,
            json!({"order": order_id, "amount": 500, "description": "退一半"}),
        ))
        .await;
    let refund_id = succeeded(&refunded)["refund"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (event, _) = fake.signed_event(
        "refund.succeeded",
        fake.succeed_order_refund(&pingpp_id, &refund_id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM order_refunds WHERE status = 'succeeded'",
        1,
    )
    .await;
    assert_eq!(env.system_balance("allocations_pending").await, 500);

    // The platform's 20% of the rest, never more than what is held.
    let share = |id: &str, amount: i64| {
        command(
            id,
            "allocation.create",
            60,
            json!({"order": order_id, "recipients": [{"user": 61, "amount": amount, "description": "平台佣金"}]}),
        )
    };
    assert_eq!(
        code(&client.call(share("a1", 501)).await),
        "allocation_too_large"
    );
    let allocated = client.call(share("a2", 100)).await;
    let allocation_id = succeeded(&allocated)["allocation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        client.call(share("a2", 100)).await["data"],
        allocated["data"]
    );
    // Ping++ settles what it holds when it completes: not while a share is under way.
    let early_complete = command("c0", "allocation.complete", 60, json!({"order": order_id}));
    assert_eq!(
        code(&client.call(early_complete).await),
        "allocation_in_progress"
    );
    // Nor can a refund take what is given out.
    let too_much = command(
        "s-ref2",
        "order.refund",
        60,
        json!({"order": order_id, "amount": 401, "description": "再退"}),
    );
    assert_eq!(code(&client.call(too_much).await), "refund_too_large");
    // Given: the webhook twice and a pull racing; once.
    let (event, _) = fake.signed_event(
        "allocation.succeeded",
        fake.succeed_allocation(&allocation_id),
    );
    client.enqueue_pingpp_event(&event).await;
    client.enqueue_pingpp_event(&event).await;
    let got = client
        .call(command(
            "a-get",
            "allocation.get",
            60,
            json!({"allocation": allocation_id}),
        ))
        .await;
    assert_eq!(succeeded(&got)["allocation"]["status"], "succeed");
    assert_eq!(
        next_event(&mut allocation_events).await["type"],
        "allocation.succeeded"
    );
    env.wait_for_count("SELECT count(*) FROM journal WHERE kind = 'allocation'", 1)
        .await;
    assert_eq!(env.balance(61).await, 100);
    assert_eq!(env.system_balance("allocations_pending").await, 400);

    // Part of it given back.
    let back = |id: &str, amount: i64| {
        command(
            id,
            "allocation.refund",
            60,
            json!({"allocation": allocation_id, "senders": [{"user": 61, "amount": amount}]}),
        )
    };
    assert_eq!(
        code(&client.call(back("b1", 101)).await),
        "allocation_too_large"
    );
    let given_back = client.call(back("b2", 40)).await;
    let back_id = succeeded(&given_back)["allocation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (event, _) = fake.signed_event(
        "allocation.succeeded",
        fake.succeed_allocation_refund(&back_id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM journal WHERE kind = 'allocation.refund'",
        1,
    )
    .await;
    assert_eq!(env.balance(61).await, 60);
    assert_eq!(env.system_balance("allocations_pending").await, 440);

    // Completed: the rest goes to the creator, and nothing more can be split.
    let completed = client
        .call(command(
            "c1",
            "allocation.complete",
            60,
            json!({"order": order_id}),
        ))
        .await;
    let complete_id = succeeded(&completed)["allocation_complete"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        code(&client.call(share("a3", 1)).await),
        "allocation_completed"
    );
    let (event, _) = fake.signed_event(
        "allocation_complete.succeeded",
        fake.complete_allocation_complete(&complete_id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM journal WHERE kind = 'allocation.complete'",
        1,
    )
    .await;
    assert_eq!(merchant_balance(&env, 60).await, 440);
    assert_eq!(env.system_balance("allocations_pending").await, 0);

    // The ledger mirrors Ping++ at the end.
    assert_eq!(fake.held(&pingpp_id), 0);
    assert_eq!(at_pingpp(&fake, "biz_60"), 440);
    assert_eq!(at_pingpp(&fake, "user_61"), env.balance(61).await);
    assert_eq!(at_pingpp(&fake, "user_62"), env.balance(62).await);
    let audit = env.audit().await;
    assert!(audit.ok, "{}", serde_json::to_string(&audit).unwrap());
    let cli = crate::support::pluspay(&["audit"], &env.process_env()).await;
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reward_from_the_e_wallet_leaves_the_platform_its_commission_and_the_creator_the_rest() {
    let (mut env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|settings| {
            custody_mode(settings);
            settings.wallet.reward_commission_percent = 20;
            settings.wallet.platform_user_id = 71;
        })
        .await;
    creator(&env, &mut client, &fake, 70).await;
    open_account(&mut client, &fake, 71).await; // the platform
    buyer(&env, &mut client, &fake, 72, 1000).await; // the fan

    let tip = |id: &str, to: i64| {
        command(
            id,
            "reward",
            72,
            json!({"user": to, "amount": 500, "body": "好文章", "return_url": RETURN_URL}),
        )
    };
    // Only a creator who is an open sub-merchant can be tipped.
    assert_eq!(code(&client.call(tip("t0", 73)).await), "not_a_merchant");
    let tipped = client.call(tip("t1", 70)).await;
    let data = succeeded(&tipped).clone();
    assert_eq!(data["order"]["target_type"], "pingpp_order");
    assert!(
        data["pingpp_order"]["charge_essentials"]["credential"].is_object(),
        "the e-wallet's payment link: {tipped}"
    );
    assert_eq!(client.call(tip("t1", 70)).await["data"], tipped["data"]);
    let pingpp_id = data["pingpp_order"]["id"].as_str().unwrap().to_owned();

    // The split of a tip is the platform's: the creator can neither complete it first (cutting
    // the commission out) nor refund it.
    let order_id = data["order"]["id"].as_i64().unwrap();
    let by_creator = command("cc", "allocation.complete", 70, json!({"order": order_id}));
    assert_eq!(code(&client.call(by_creator).await), "reward_order");
    // Paid from the e-wallet: the worker asks for the commission by itself.
    let (event, _) = fake.signed_event("order.succeeded", fake.pay_order(&pingpp_id));
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM allocations WHERE kind = 'allocation' AND amount = 100 AND pingpp_id IS NOT NULL",
        1,
    )
    .await;
    let commission = fake
        .allocations()
        .into_iter()
        .find(|a| a["type"] == "allocation")
        .unwrap();
    let (event, _) = fake.signed_event(
        "allocation.succeeded",
        fake.succeed_allocation(commission["id"].as_str().unwrap()),
    );
    client.enqueue_pingpp_event(&event).await;
    // Then for the completion.
    env.wait_for_count(
        "SELECT count(*) FROM allocations WHERE kind = 'allocation_complete' AND pingpp_id IS NOT NULL",
        1,
    )
    .await;
    let complete = fake.allocation_completes()[0].clone();
    let (event, _) = fake.signed_event(
        "allocation_complete.succeeded",
        fake.complete_allocation_complete(complete["id"].as_str().unwrap()),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM journal WHERE kind = 'allocation.complete'",
        1,
    )
    .await;
    assert_eq!(env.balance(72).await, 500);
    assert_eq!(env.balance(71).await, 100);
    assert_eq!(merchant_balance(&env, 70).await, 400);
    assert_eq!(env.system_balance("allocations_pending").await, 0);
    assert_eq!(
        fake.allocations().len(),
        1,
        "asked once, however often the worker looked"
    );
    let after = command("cc2", "allocation.complete", 70, json!({"order": order_id}));
    assert_eq!(code(&client.call(after).await), "reward_order");
    let refund = command(
        "cr2",
        "order.refund",
        70,
        json!({"order": order_id, "amount": 1, "description": "退"}),
    );
    assert_eq!(code(&client.call(refund).await), "reward_order");
    assert_eq!(at_pingpp(&fake, "biz_70"), 400);
    assert_eq!(at_pingpp(&fake, "user_71"), 100);
    assert_eq!(at_pingpp(&fake, "user_72"), 500);
    let audit = env.audit().await;
    assert!(audit.ok, "{}", serde_json::to_string(&audit).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refunds_racing_for_the_last_fen_are_never_both_taken() {
    let (env, fake, mut client, _worker) = start().await;
    creator(&env, &mut client, &fake, 80).await;
    buyer(&env, &mut client, &fake, 81, 100).await;
    let made = client.call(purchase("race", 81, 80, 100)).await;
    let data = succeeded(&made).clone();
    let order_id = data["order"]["id"].as_i64().unwrap();
    let pingpp_id = data["pingpp_order"]["id"].as_str().unwrap().to_owned();
    let pay = command(
        "race-pay",
        "order.pay",
        81,
        json!({"order": order_id, "channel": "balance", "extra": {"return_url": RETURN_URL}}),
    );
    succeeded(&client.call(pay).await);
    fake.pay_order(&pingpp_id);
    let pulled = client
        .call(command(
            "race-get",
            "order.get",
            81,
            json!({"order": order_id}),
        ))
        .await;
    assert_eq!(succeeded(&pulled)["order"]["state"], 1);
    // Both at once, for 60 of the 100: one may have it, not both.
    let refund = |id: &str| {
        command(
            id,
            "order.refund",
            80,
            json!({"order": order_id, "amount": 60, "description": "退款"}),
        )
    };
    client.command(&refund("race-1")).await;
    client.command(&refund("race-2")).await;
    env.wait_for_count(
        "SELECT count(*) FROM commands WHERE id IN ('race-1', 'race-2') AND result IS NOT NULL",
        2,
    )
    .await;
    let statuses: Vec<String> = env
        .db
        .query(
            "SELECT status FROM commands WHERE id IN ('race-1', 'race-2') ORDER BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(statuses, ["rejected", "succeeded"]);
    assert_eq!(fake.order_refunds().len(), 1);
}
