//! Holds end to end, against real PostgreSQL and RabbitMQ: made, captured (all or part),
//! released, expired by the sweeper exactly once, and a random sequence against a model.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{next_event, transfer, TestEnv};

fn create(id: &str, user: i64, amount: i64, expires_in: i64) -> Value {
    json!({"id": id, "type": "hold.create", "user_id": user,
           "data": {"amount": amount, "reason": "悬赏: 如何评价", "expires_in": expires_in}})
}

fn capture(id: &str, user: i64, hold: i64, to: i64, amount: i64) -> Value {
    json!({"id": id, "type": "hold.capture", "user_id": user,
           "data": {"hold": hold, "user": to, "amount": amount}})
}

fn release(id: &str, user: i64, hold: i64) -> Value {
    json!({"id": id, "type": "hold.release", "user_id": user, "data": {"hold": hold}})
}

fn hold_id(result: &Value) -> i64 {
    result["data"]["hold"]["id"].as_i64().expect("a hold id")
}

async fn wallet(client: &mut crate::support::BrokerClient, id: &str, user: i64) -> Value {
    let result = client
        .call(json!({"id": id, "type": "wallet.get", "user_id": user}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    result["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounty_is_held_then_paid_in_part_and_the_rest_comes_back() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;

    let made = client.call(create("h-1", 1, 300, 3_600)).await;
    assert_eq!(made["status"], "succeeded", "{made}");
    assert_eq!(made["message"], json!(["冻结成功"]));
    let hold = &made["data"]["hold"];
    assert_eq!(hold["status"], "held");
    assert_eq!(
        (&hold["amount"], &hold["captured"], &hold["released"]),
        (&json!(300), &json!(0), &json!(0))
    );
    assert_eq!(made["data"]["order"]["target_type"], "hold");
    assert_eq!(made["data"]["order"]["type"], -1);
    let info = wallet(&mut client, "w-1", 1).await;
    assert_eq!(
        (&info["balance"], &info["held"]),
        (&json!(700), &json!(300))
    );

    // Nobody but the owner can capture it; nor more than it holds; nor to oneself.
    let stranger = client.call(capture("c-0", 2, hold_id(&made), 3, 10)).await;
    assert_eq!(stranger["code"], "hold_not_found", "{stranger}");
    let too_much = client.call(capture("c-1", 1, hold_id(&made), 2, 301)).await;
    assert_eq!(too_much["code"], "amount_too_large", "{too_much}");
    assert_eq!(
        too_much["errors"]["amount"],
        json!(["支付金额超出冻结金额"])
    );
    let to_self = client.call(capture("c-2", 1, hold_id(&made), 1, 10)).await;
    assert_eq!(to_self["code"], "self_transfer", "{to_self}");

    let paid = client.call(capture("c-3", 1, hold_id(&made), 2, 120)).await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["message"], json!(["支付成功"]));
    let closed = &paid["data"]["hold"];
    assert_eq!(closed["status"], "captured");
    assert_eq!(
        (
            &closed["captured"],
            &closed["released"],
            &closed["receiver"]
        ),
        (&json!(120), &json!(180), &json!(2))
    );
    assert_eq!(paid["data"]["order"]["owner_id"], 2);
    assert_eq!(paid["data"]["order"]["target_type"], "hold_capture");
    assert_eq!(paid["data"]["order"]["amount"], 120);
    assert_eq!((env.balance(1).await, env.balance(2).await), (880, 120));
    let info = wallet(&mut client, "w-2", 1).await;
    assert_eq!((&info["balance"], &info["held"]), (&json!(880), &json!(0)));
    let back = env
        .count("SELECT count(*) FROM wallet_orders WHERE owner_id = 1 AND target_type = 'hold_release' AND amount = 180 AND type = 1")
        .await;
    assert_eq!(back, 1);

    // Closed for good: a second capture, a release. A replay answers the same.
    let again = client.call(capture("c-4", 1, hold_id(&made), 2, 1)).await;
    assert_eq!(again["code"], "hold_closed", "{again}");
    let late_release = client.call(release("r-1", 1, hold_id(&made))).await;
    assert_eq!(late_release["code"], "hold_closed");
    let replay = client.call(capture("c-3", 1, hold_id(&made), 2, 120)).await;
    assert_eq!(replay, paid);
    assert_eq!(env.balance(2).await, 120);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_gives_everything_back_and_bad_holds_are_refused() {
    let mut env = TestEnv::new().await;
    env.fund(1, 500).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;

    let short = client.call(create("h-poor", 1, 501, 60)).await;
    assert_eq!(short["code"], "insufficient_balance");
    assert_eq!(short["errors"]["amount"], json!(["冻结金额超出账户余额"]));
    let bad = client
        .call(json!({"id": "h-bad", "type": "hold.create", "user_id": 1,
                     "data": {"amount": "5", "expires_in": 0}}))
        .await;
    assert_eq!(bad["status"], "rejected");
    assert_eq!(bad["code"], "invalid_amount");
    assert_eq!(bad["errors"]["reason"], json!(["请填写冻结原因"]));
    assert_eq!(
        bad["errors"]["expires_in"],
        json!(["冻结期限必须在1秒到366天之间"])
    );
    let nothing = client.call(release("r-none", 1, 999)).await;
    assert_eq!(nothing["code"], "hold_not_found");

    let made = client.call(create("h-2", 1, 500, 60)).await;
    assert_eq!(made["status"], "succeeded", "{made}");
    assert_eq!(env.balance(1).await, 0);
    let spend = client.call(transfer("t-broke", 1, 2, 1)).await;
    assert_eq!(
        spend["code"], "insufficient_balance",
        "held money is not spendable"
    );
    let released = client.call(release("r-2", 1, hold_id(&made))).await;
    assert_eq!(released["status"], "succeeded", "{released}");
    assert_eq!(released["message"], json!(["解冻成功"]));
    assert_eq!(released["data"]["hold"]["status"], "released");
    assert_eq!(released["data"]["hold"]["released"], 500);
    assert_eq!(released["data"]["order"]["target_type"], "hold_release");
    assert_eq!(env.balance(1).await, 500);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_answer_custody_mode_with_the_money_at_pingpp() {
    let mut env = TestEnv::new().await;
    env.settings.wallet.custody = pluspay::domain::custody::Custody::Pingpp;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    for command in [
        create("h-p", 1, 1, 60),
        capture("c-p", 1, 1, 2, 1),
        release("r-p", 1, 1),
    ] {
        let result = client.call(command).await;
        assert_eq!(result["code"], "custody_mode", "{result}");
    }
}

/// Holds that expire while two workers (two sweepers) run: each comes back once, with its
/// event, and a capture after the expiry is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_holds_come_back_exactly_once_with_an_event() {
    let mut env = TestEnv::new().await;
    env.fund(1, 10_000).await;
    let client_events = env.client().await;
    let mut events = client_events
        .watch(&env.names.events_exchange, "hold.expired")
        .await;
    let _first = env.start_worker();
    let _second = env.start_worker();
    let mut client = env.client().await;
    const HOLDS: i64 = 20;
    let mut ids = Vec::new();
    for i in 0..HOLDS {
        let made = client.call(create(&format!("h-e{i}"), 1, 100, 1)).await;
        assert_eq!(made["status"], "succeeded", "{made}");
        ids.push(hold_id(&made));
    }
    let mut seen = HashMap::new();
    while seen.len() < HOLDS as usize {
        let event = next_event(&mut events).await;
        assert_eq!(event["type"], "hold.expired");
        assert_eq!(event["user_id"], 1);
        assert_eq!(event["data"]["hold"]["status"], "expired");
        assert_eq!(event["data"]["order"]["target_type"], "hold_release");
        *seen
            .entry(event["event_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    for id in &ids {
        assert!(seen.contains_key(&format!("hold.expired.{id}")), "{seen:?}");
    }
    assert_eq!(env.balance(1).await, 10_000);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'hold.expire'")
            .await,
        HOLDS
    );
    // Each row goes once the broker confirmed its event, in a commit that may follow the event.
    env.wait_for_count("SELECT count(*) FROM outbox", 0).await;
    let late = client.call(capture("c-late", 1, ids[0], 2, 1)).await;
    assert_eq!(late["code"], "hold_closed", "{late}");
    // Nothing more comes: every hold was given back once.
    let more = tokio::time::timeout(Duration::from_millis(1_500), events.next()).await;
    assert!(more.is_err(), "an extra event: {more:?}");
    assert!(env.audit().await.ok);
}

/// A hold past its expiry but not yet swept still cannot be captured; an open one the sweeper
/// sees at the same moment as its capture ends one way only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_racing_the_expiry_end_one_way_only() {
    let mut env = TestEnv::new().await;
    env.fund(1, 100_000).await;
    env.settings.worker.batch_size = 16;
    let _worker = env.start_worker();
    let _second = env.start_worker();
    let mut client = env.client().await;
    const HOLDS: i64 = 40;
    let mut ids = Vec::new();
    for i in 0..HOLDS {
        let made = client.call(create(&format!("h-r{i}"), 1, 1_000, 1)).await;
        assert_eq!(made["status"], "succeeded", "{made}");
        ids.push(hold_id(&made));
    }
    // Captures spread over the second in which the holds expire.
    for (i, id) in ids.iter().enumerate() {
        client
            .command(&capture(&format!("c-r{i}"), 1, *id, 2, 600))
            .await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The creates answered first.
    client.wait_results(2 * HOLDS as usize).await;
    let mut captured = 0;
    for i in 0..HOLDS {
        let result = client.received[&format!("c-r{i}")][0].clone();
        match result["status"].as_str() {
            Some("succeeded") => captured += 1,
            _ => assert_eq!(result["code"], "hold_closed", "{result}"),
        }
    }
    env.wait_for_count("SELECT count(*) FROM holds WHERE status = 'held'", 0)
        .await;
    assert_eq!(
        env.count("SELECT count(*) FROM holds WHERE status = 'captured'")
            .await,
        captured
    );
    assert_eq!(
        env.count("SELECT count(*) FROM holds WHERE status = 'expired'")
            .await,
        HOLDS - captured
    );
    assert_eq!(env.balance(2).await, 600 * captured);
    assert_eq!(env.balance(1).await, 100_000 - 600 * captured);
    assert!(env.audit().await.ok);
}

/// What the model expects of one user's wallet and holds.
#[derive(Debug, Default, Clone)]
struct ModelHold {
    owner: i64,
    amount: i64,
    open: bool,
}

/// A random sequence of holds, captures, releases and transfers among a few users, through the
/// worker with group commit, against a model of balances and holds; then every balance, held
/// figure and hold status must be the model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_hold_sequences_agree_with_a_model() {
    let mut env = TestEnv::new().await;
    env.settings.worker.batch_size = 16;
    const USERS: i64 = 4;
    let mut balances: BTreeMap<i64, i64> = BTreeMap::new();
    for user in 1..=USERS {
        env.fund(user, 1_000).await;
        balances.insert(user, 1_000);
    }
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let mut rng = StdRng::seed_from_u64(0x5eed_401d);
    let mut holds: BTreeMap<i64, ModelHold> = BTreeMap::new();
    for step in 0..300 {
        let user = rng.random_range(1..=USERS);
        let other = (user % USERS) + 1;
        let id = format!("s-{step}");
        let open_of_user: Vec<i64> = holds
            .iter()
            .filter(|(_, h)| h.open && h.owner == user)
            .map(|(&id, _)| id)
            .collect();
        match rng.random_range(0..4) {
            0 => {
                let amount = rng.random_range(1..=600);
                let result = client.call(create(&id, user, amount, 3_600)).await;
                if amount <= balances[&user] {
                    assert_eq!(result["status"], "succeeded", "{result}");
                    *balances.get_mut(&user).unwrap() -= amount;
                    holds.insert(
                        hold_id(&result),
                        ModelHold {
                            owner: user,
                            amount,
                            open: true,
                        },
                    );
                } else {
                    assert_eq!(result["code"], "insufficient_balance", "{result}");
                }
            }
            1 if !open_of_user.is_empty() => {
                let hold = open_of_user[rng.random_range(0..open_of_user.len())];
                let held = holds[&hold].amount;
                let amount = rng.random_range(1..=held + 50);
                let result = client.call(capture(&id, user, hold, other, amount)).await;
                if amount <= held {
                    assert_eq!(result["status"], "succeeded", "{result}");
                    *balances.get_mut(&other).unwrap() += amount;
                    *balances.get_mut(&user).unwrap() += held - amount;
                    holds.get_mut(&hold).unwrap().open = false;
                } else {
                    assert_eq!(result["code"], "amount_too_large", "{result}");
                }
            }
            2 if !holds.is_empty() => {
                let ids: Vec<i64> = holds.keys().copied().collect();
                let hold = ids[rng.random_range(0..ids.len())];
                let result = client.call(release(&id, user, hold)).await;
                let model = holds.get_mut(&hold).unwrap();
                if model.owner != user {
                    assert_eq!(result["code"], "hold_not_found", "{result}");
                } else if !model.open {
                    assert_eq!(result["code"], "hold_closed", "{result}");
                } else {
                    assert_eq!(result["status"], "succeeded", "{result}");
                    *balances.get_mut(&user).unwrap() += model.amount;
                    model.open = false;
                }
            }
            _ => {
                let amount = rng.random_range(1..=300);
                let result = client.call(transfer(&id, user, other, amount)).await;
                if amount <= balances[&user] {
                    assert_eq!(result["status"], "succeeded", "{result}");
                    *balances.get_mut(&user).unwrap() -= amount;
                    *balances.get_mut(&other).unwrap() += amount;
                } else {
                    assert_eq!(result["code"], "insufficient_balance", "{result}");
                }
            }
        }
    }
    for user in 1..=USERS {
        let info = wallet(&mut client, &format!("end-{user}"), user).await;
        let held: i64 = holds
            .values()
            .filter(|h| h.open && h.owner == user)
            .map(|h| h.amount)
            .sum();
        assert_eq!(info["balance"], balances[&user], "user {user}");
        assert_eq!(info["held"], held, "user {user}");
    }
    let open = env
        .count("SELECT count(*) FROM holds WHERE status = 'held'")
        .await;
    assert_eq!(open, holds.values().filter(|h| h.open).count() as i64);
    assert!(env.audit().await.ok);
}
