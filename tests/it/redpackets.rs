//! Red packets end to end, against real PostgreSQL and RabbitMQ: making, claiming and showing
//! them in both modes, every refusal, replays, the expiry giving the rest back once whoever
//! sweeps, a thousand claims racing for a hundred shares, the custody that has no red packets,
//! and a random sequence of commands against an in-memory model.

use std::collections::{BTreeMap, HashMap, HashSet};

use pluspay::domain::command::Envelope;
use pluspay::domain::custody::Custody;
use pluspay::engine::Engine;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{apply_checked, envelope, next_event, schemas, BrokerClient, TestEnv};

fn create(id: &str, user: i64, data: Value) -> Value {
    json!({ "id": id, "type": "redpacket.create", "user_id": user, "data": data })
}

fn claim(id: &str, user: i64, packet: i64) -> Value {
    json!({ "id": id, "type": "redpacket.claim", "user_id": user, "data": { "redpacket": packet } })
}

fn get(id: &str, user: i64, packet: i64) -> Value {
    json!({ "id": id, "type": "redpacket.get", "user_id": user, "data": { "redpacket": packet } })
}

async fn packets_balance(env: &TestEnv, user: i64) -> i64 {
    env.db
        .query_opt(
            "SELECT balance FROM accounts WHERE kind = 'packets' AND user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .map_or(0, |r| r.get(0))
}

/// A packet's shares in claim order, as stored.
async fn shares_of(env: &TestEnv, packet: i64) -> Vec<i64> {
    env.db
        .query(
            "SELECT amount FROM redpacket_shares WHERE redpacket_id = $1 ORDER BY number",
            &[&packet],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Makes a packet's expiry come now, as if its time had passed.
async fn expire_now(env: &TestEnv, packet: i64) {
    env.db
        .execute(
            "UPDATE redpackets SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&packet],
        )
        .await
        .unwrap();
}

fn assert_rejected(result: &Value, code: &str, field: &str, message: &str) {
    assert_eq!(result["status"], "rejected", "{result}");
    assert_eq!(result["code"], code, "{result}");
    assert_eq!(result["errors"][field], json!([message]), "{result}");
}

fn id_of(result: &Value) -> i64 {
    assert_eq!(result["status"], "succeeded", "{result}");
    result["data"]["redpacket"]["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_and_random_packets_are_made_claimed_and_shown() {
    let mut env = TestEnv::new().await;
    env.fund(1, 10_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;

    let made = client
        .call(create(
            "rp-1",
            1,
            json!({"total": 100, "count": 3, "mode": "equal", "expires_in": 3600}),
        ))
        .await;
    assert_eq!(made["status"], "succeeded", "{made}");
    assert_eq!(made["message"], json!(["红包发送成功"]));
    let packet = &made["data"]["redpacket"];
    let id = id_of(&made);
    for (field, value) in [
        ("user_id", json!(1)),
        ("total", json!(100)),
        ("count", json!(3)),
        ("mode", json!("equal")),
        ("users", Value::Null),
        ("claimed", json!(0)),
        ("claimed_amount", json!(0)),
        ("remaining", json!(100)),
        ("refunded", json!(0)),
        ("status", json!("open")),
    ] {
        assert_eq!(packet[field], value, "{field}: {packet}");
    }
    let order = &made["data"]["order"];
    assert_eq!(
        (
            &order["owner_id"],
            &order["target_type"],
            &order["target_id"]
        ),
        (&json!(1), &json!("redpacket"), &json!(id.to_string()))
    );
    assert_eq!(
        (&order["type"], &order["amount"]),
        (&json!(-1), &json!(100))
    );
    assert_eq!(order["title"], "发红包");
    assert_eq!(
        (env.balance(1).await, packets_balance(&env, 1).await),
        (9_900, 100)
    );
    // The remainder's fen go to the first shares.
    assert_eq!(shares_of(&env, id).await, vec![34, 33, 33]);

    for (n, (user, amount)) in [(2, 34), (3, 33), (4, 33)].into_iter().enumerate() {
        let claimed = client.call(claim(&format!("c-{user}"), user, id)).await;
        assert_eq!(claimed["status"], "succeeded", "{claimed}");
        assert_eq!(claimed["message"], json!(["红包领取成功"]));
        let share = &claimed["data"]["share"];
        assert_eq!(
            (
                &share["redpacket"],
                &share["number"],
                &share["user_id"],
                &share["amount"]
            ),
            (&json!(id), &json!(n + 1), &json!(user), &json!(amount))
        );
        let order = &claimed["data"]["order"];
        assert_eq!(
            (
                &order["owner_id"],
                &order["target_type"],
                &order["type"],
                &order["amount"]
            ),
            (
                &json!(user),
                &json!("redpacket_claim"),
                &json!(1),
                &json!(amount)
            )
        );
        assert_eq!(order["target_id"], id.to_string());
        assert_eq!(env.balance(user).await, amount);
        assert_eq!(
            packets_balance(&env, 1).await,
            100 - [0, 34, 67][n] - amount
        );
    }
    let empty = client.call(claim("c-5", 5, id)).await;
    assert_rejected(&empty, "redpacket_empty", "redpacket", "红包已被领完");
    assert_eq!(env.balance(5).await, 0);

    // Anyone may see a packet that anyone may claim; a read answers without a message.
    for viewer in [1, 5] {
        let shown = client.call(get(&format!("g-{viewer}"), viewer, id)).await;
        assert_eq!(shown["status"], "succeeded", "{shown}");
        assert_eq!(shown["message"], json!([]));
        let packet = &shown["data"]["redpacket"];
        assert_eq!(
            (
                &packet["status"],
                &packet["claimed"],
                &packet["claimed_amount"],
                &packet["remaining"]
            ),
            (&json!("finished"), &json!(3), &json!(100), &json!(0))
        );
        let claims: Vec<(i64, i64)> = shown["data"]["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["user_id"].as_i64().unwrap(),
                    c["amount"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(claims, vec![(2, 34), (3, 33), (4, 33)]);
    }

    // Random, for ten named users.
    let users: Vec<i64> = (10..20).collect();
    let made = client
        .call(create(
            "rp-2",
            1,
            json!({"total": 1_000, "count": 10, "mode": "random", "expires_in": 60,
                   "users": users}),
        ))
        .await;
    let random = id_of(&made);
    assert_eq!(made["data"]["redpacket"]["users"], json!(users));
    let shares = shares_of(&env, random).await;
    assert_eq!((shares.len(), shares.iter().sum::<i64>()), (10, 1_000));
    assert!(shares.iter().all(|&s| s >= 1), "{shares:?}");
    let outsider = client.call(claim("c-20", 20, random)).await;
    assert_rejected(&outsider, "not_allowed", "redpacket", "你不能领取该红包");
    let unseen = client.call(get("g-20", 20, random)).await;
    assert_rejected(&unseen, "not_allowed", "redpacket", "你无权查看该红包");
    for (user, &share) in users.iter().zip(&shares) {
        let claimed = client
            .call(claim(&format!("r-{user}"), *user, random))
            .await;
        assert_eq!(claimed["data"]["share"]["amount"], share, "{claimed}");
        assert_eq!(env.balance(*user).await, share);
    }
    let shown = client.call(get("g-15", 15, random)).await;
    assert_eq!(shown["data"]["redpacket"]["status"], "finished", "{shown}");
    assert_eq!(shown["data"]["claims"].as_array().unwrap().len(), 10);
    assert_eq!(
        (env.balance(1).await, packets_balance(&env, 1).await),
        (8_900, 0)
    );
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_and_words_and_moves_no_money() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let valid = json!({"total": 100, "count": 2, "mode": "equal", "expires_in": 60});
    let with = |changes: Value| {
        let mut data = valid.as_object().unwrap().clone();
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                data.remove(key);
            } else {
                data.insert(key.clone(), value.clone());
            }
        }
        Value::Object(data)
    };
    let cases = [
        (
            json!({"total": null}),
            "amount_required",
            "total",
            "请输入红包金额",
        ),
        (
            json!({"total": 0}),
            "amount_too_small",
            "total",
            "红包金额不能小于0.01元",
        ),
        (
            json!({"total": "100"}),
            "invalid_amount",
            "total",
            "发送的数据错误",
        ),
        (
            json!({"total": 1, "count": 2}),
            "amount_too_small",
            "total",
            "单个红包金额不能小于0.01元",
        ),
        (
            json!({"total": 1_001}),
            "insufficient_balance",
            "total",
            "红包金额超出账户余额",
        ),
        (
            json!({"count": null}),
            "count_required",
            "count",
            "请输入红包个数",
        ),
        (
            json!({"count": 1_001}),
            "invalid_count",
            "count",
            "红包个数必须在1到1000之间",
        ),
        (
            json!({"count": "2"}),
            "invalid_count",
            "count",
            "发送的数据错误",
        ),
        (
            json!({"mode": null}),
            "mode_required",
            "mode",
            "请选择红包类型",
        ),
        (
            json!({"mode": "lucky"}),
            "invalid_mode",
            "mode",
            "你选择的红包类型不支持",
        ),
        (
            json!({"expires_in": null}),
            "expires_in_required",
            "expires_in",
            "请设置红包有效期",
        ),
        (
            json!({"expires_in": 604_801}),
            "invalid_expires_in",
            "expires_in",
            "红包有效期必须在1秒到7天之间",
        ),
        (
            json!({"users": {"2": true}}),
            "invalid_users",
            "users",
            "发送的数据错误",
        ),
        (
            json!({"users": [2, -3]}),
            "invalid_users",
            "users",
            "发送的数据错误",
        ),
        (
            json!({"users": []}),
            "invalid_users",
            "users",
            "请选择可以领取红包的用户",
        ),
        (
            json!({"users": [2, 2]}),
            "invalid_users",
            "users",
            "可以领取红包的用户不能重复",
        ),
        (
            json!({"users": [1, 2]}),
            "invalid_users",
            "users",
            "不能把自己设为领取红包的用户",
        ),
        (
            json!({"users": [2]}),
            "invalid_users",
            "users",
            "可以领取红包的用户不能少于红包个数",
        ),
        (
            json!({"users": (2..=1_002).collect::<Vec<i64>>()}),
            "invalid_users",
            "users",
            "可以领取红包的用户不能超过1000个",
        ),
    ];
    for (n, (changes, code, field, message)) in cases.iter().enumerate() {
        let refused = client
            .call(create(&format!("bad-{n}"), 1, with(changes.clone())))
            .await;
        assert_rejected(&refused, code, field, message);
    }
    let id_cases = [
        (json!({}), "redpacket_required", "请选择红包"),
        (
            json!({"redpacket": 0}),
            "invalid_redpacket",
            "发送的数据错误",
        ),
        (
            json!({"redpacket": "1"}),
            "invalid_redpacket",
            "发送的数据错误",
        ),
        (
            json!({"redpacket": 999}),
            "redpacket_not_found",
            "红包不存在",
        ),
    ];
    for (n, (data, code, message)) in id_cases.iter().enumerate() {
        for kind in ["redpacket.claim", "redpacket.get"] {
            let command = json!({"id": format!("{kind}-{n}"), "type": kind, "user_id": 2,
                                 "data": data});
            assert_rejected(&client.call(command).await, code, "redpacket", message);
        }
    }
    assert_eq!(env.balance(1).await, 1_000);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind <> 'test_funding'")
            .await,
        0
    );
    assert_eq!(env.count("SELECT count(*) FROM redpackets").await, 0);

    // What the packet's state refuses, in the rules' order.
    let packet = id_of(
        &client
            .call(create("ok", 1, with(json!({"users": [2, 3]}))))
            .await,
    );
    let own = client.call(claim("own", 1, packet)).await;
    assert_rejected(&own, "not_allowed", "redpacket", "不能领取自己发的红包");
    let first = client.call(claim("first", 2, packet)).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let again = client.call(claim("again", 2, packet)).await;
    assert_rejected(&again, "already_claimed", "redpacket", "你已领取过该红包");
    expire_now(&env, packet).await;
    let late = client.call(claim("late", 3, packet)).await;
    assert_rejected(&late, "redpacket_expired", "redpacket", "红包已过期");
    // The worker's sweeper gives the rest back.
    env.wait_for_count(
        &format!("SELECT count(*) FROM redpackets WHERE id = {packet} AND status = 'expired'"),
        1,
    )
    .await;
    let after = client.call(claim("after", 3, packet)).await;
    assert_rejected(&after, "redpacket_expired", "redpacket", "红包已过期");
    assert_eq!(
        (
            env.balance(1).await,
            env.balance(2).await,
            env.balance(3).await
        ),
        (950, 50, 0)
    );
    assert_eq!(packets_balance(&env, 1).await, 0);
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_applies_once() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let command = create(
        "dup",
        1,
        json!({"total": 300, "count": 3, "mode": "random", "expires_in": 60}),
    );
    for _ in 0..3 {
        client.command(&command).await;
    }
    client.wait_results(3).await;
    let results = client.received["dup"].clone();
    assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    let packet = id_of(&results[0]);
    assert_eq!(env.count("SELECT count(*) FROM redpackets").await, 1);
    assert_eq!(env.balance(1).await, 700);
    let conflict = client
        .call(create(
            "dup",
            1,
            json!({"total": 301, "count": 3, "mode": "random", "expires_in": 60}),
        ))
        .await;
    assert_eq!(conflict["code"], "idempotency_conflict", "{conflict}");

    let claimed = client.call(claim("dup-claim", 2, packet)).await;
    assert_eq!(client.call(claim("dup-claim", 2, packet)).await, claimed);
    assert_eq!(client.call(command.clone()).await, results[0]);
    let shown = client.call(get("dup-get", 2, packet)).await;
    assert_eq!(client.call(get("dup-get", 2, packet)).await, shown);
    assert_eq!(
        env.count("SELECT count(*) FROM redpacket_shares WHERE claimer IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        env.balance(2).await,
        claimed["data"]["share"]["amount"].as_i64().unwrap()
    );
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

/// Runs the expiry until nothing is left to close; how many closed.
async fn sweep(engine: &Engine) -> usize {
    let mut closed = 0;
    loop {
        match engine
            .expire_due(pluspay::engine::Expiring::Redpackets)
            .await
            .expect("the expiry")
        {
            0 => return closed,
            n => closed += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rest_goes_back_once_at_expiry_whoever_sweeps() {
    const SENDERS: i64 = 4;
    const PACKETS: usize = 40;
    let mut env = TestEnv::new().await;
    for sender in 1..=SENDERS {
        env.fund(sender, 100_000).await;
    }
    let worker = env.start_worker();
    let mut client = env.client().await;
    let mut packets = Vec::new();
    for n in 0..PACKETS {
        let sender = n as i64 % SENDERS + 1;
        let made = client
            .call(create(
                &format!("p-{n}"),
                sender,
                json!({"total": 1_000 + n, "count": 5, "mode": "random", "expires_in": 3600}),
            ))
            .await;
        let packet = id_of(&made);
        // Some shares claimed first: what goes back is the rest, whatever it is.
        let mut claimed = 0;
        for c in 0..(n % 3) as i64 {
            let result = client
                .call(claim(&format!("c-{n}-{c}"), 100 + c, packet))
                .await;
            claimed += result["data"]["share"]["amount"].as_i64().unwrap();
        }
        packets.push((packet, sender, 1_000 + n as i64 - claimed));
    }
    worker.stop().await;
    let expected_balance = |sender: i64, swept: &[(i64, i64, i64)]| {
        let made: i64 = (0..PACKETS as i64)
            .filter(|n| n % SENDERS + 1 == sender)
            .map(|n| 1_000 + n)
            .sum();
        let back: i64 = swept
            .iter()
            .filter(|(_, s, _)| *s == sender)
            .map(|(_, _, rest)| rest)
            .sum();
        100_000 - made + back
    };

    // Two sweepers at once over thirty due packets: each gives back once.
    let (first, rest) = packets.split_at(30);
    for (packet, _, _) in first {
        expire_now(&env, *packet).await;
    }
    let engine = Engine::from_settings(&env.settings).unwrap();
    let (a, b) = tokio::join!(sweep(&engine), sweep(&engine));
    assert_eq!(a + b, 30, "{a} + {b}");
    assert_eq!(sweep(&engine).await, 0);
    for sender in 1..=SENDERS {
        assert_eq!(env.balance(sender).await, expected_balance(sender, first));
    }
    assert_eq!(env.count("SELECT count(*) FROM outbox").await, 30);

    // Two workers: they publish the thirty events waiting and expire the other ten once.
    let mut events = client
        .watch(&env.names.events_exchange, "redpacket.expired")
        .await;
    for (packet, _, _) in rest {
        expire_now(&env, *packet).await;
    }
    let one = env.start_worker();
    let two = env.start_worker();
    let mut seen = HashMap::new();
    while seen.len() < PACKETS {
        let event = next_event(&mut events).await;
        assert_eq!(event["type"], "redpacket.expired");
        let packet = event["data"]["redpacket"]["id"].as_i64().unwrap();
        assert_eq!(event["event_id"], format!("redpacket.expired.{packet}"));
        assert!(seen.insert(packet, event).is_none(), "{packet} twice");
    }
    for (packet, sender, rest) in &packets {
        let event = &seen[packet];
        assert_eq!(event["user_id"], *sender);
        let redpacket = &event["data"]["redpacket"];
        assert_eq!(
            (
                &redpacket["status"],
                &redpacket["refunded"],
                &redpacket["remaining"]
            ),
            (&json!("expired"), &json!(rest), &json!(0))
        );
        let order = &event["data"]["order"];
        assert_eq!(
            (
                &order["owner_id"],
                &order["target_type"],
                &order["type"],
                &order["amount"]
            ),
            (
                &json!(sender),
                &json!("redpacket_refund"),
                &json!(1),
                &json!(rest)
            )
        );
    }
    env.wait_for_count("SELECT count(*) FROM outbox", 0).await;
    one.stop().await;
    two.stop().await;

    // After a restart nothing is left to give back, and nothing was given twice.
    let _again = env.start_worker();
    assert_eq!(sweep(&engine).await, 0);
    for sender in 1..=SENDERS {
        assert_eq!(
            env.balance(sender).await,
            expected_balance(sender, &packets)
        );
        assert_eq!(packets_balance(&env, sender).await, 0);
    }
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_orders WHERE target_type = 'redpacket_refund'")
            .await,
        PACKETS as i64
    );
    let claimed = client.call(claim("too-late", 200, packets[0].0)).await;
    assert_eq!(claimed["code"], "redpacket_expired", "{claimed}");
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_claims_race_for_a_hundred_shares() {
    const PUBLISHERS: usize = 16;
    let mut env = TestEnv::new().await;
    env.fund(1, 100_000).await;
    env.fund(2, 100_000).await;
    env.settings.worker.batch_size = 16;
    let _one = env.start_worker();
    let _two = env.start_worker();
    let mut client = env.client().await;
    let big = id_of(
        &client
            .call(create(
                "big",
                1,
                json!({"total": 10_000, "count": 100, "mode": "random", "expires_in": 3600}),
            ))
            .await,
    );
    let small = id_of(
        &client
            .call(create(
                "small",
                2,
                json!({"total": 5_000, "count": 50, "mode": "equal", "expires_in": 3600}),
            ))
            .await,
    );

    // 800 users claim the big packet, 200 of them twice (two ids, on two publishers): a
    // thousand claims for a hundred shares. Beside them, claims on the other packet, the two
    // senders claiming each other's, so that batches cross packets and senders' wallets.
    let mut claims: Vec<(String, i64, i64)> = Vec::new();
    for user in 100..900 {
        claims.push((format!("big-{user}"), user, big));
    }
    for user in 100..300 {
        claims.push((format!("big-{user}-again"), user, big));
    }
    for user in 500..800 {
        claims.push((format!("small-{user}"), user, small));
    }
    claims.push(("cross-2".into(), 2, big));
    claims.push(("cross-1".into(), 1, small));
    let seed: u64 = rand::random();
    println!("seed {seed}");
    claims.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let settings = env.settings.clone();
        let mine: Vec<(String, i64, i64)> =
            claims.iter().skip(p).step_by(PUBLISHERS).cloned().collect();
        publishers.push(tokio::spawn(async move {
            let mut client = BrokerClient::connect(&settings).await;
            for (id, user, packet) in &mine {
                client.command(&claim(id, *user, *packet)).await;
            }
            client.wait_results(mine.len()).await;
            (mine, client.received)
        }));
    }
    let mut won: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new(); // packet -> (user, amount)
    let mut by_user: HashMap<i64, Vec<Value>> = HashMap::new();
    for publisher in publishers {
        let (mine, received) = publisher.await.unwrap();
        for (id, user, packet) in mine {
            let results = &received[&id];
            assert_eq!(results.len(), 1, "{id}: {results:?}");
            let result = results[0].clone();
            match result["status"].as_str().unwrap() {
                "succeeded" => {
                    let share = &result["data"]["share"];
                    assert_eq!(
                        (&share["user_id"], &share["redpacket"]),
                        (&json!(user), &json!(packet))
                    );
                    won.entry(packet)
                        .or_default()
                        .push((user, share["amount"].as_i64().unwrap()));
                }
                "rejected" => {
                    let code = result["code"].as_str().unwrap();
                    assert!(
                        ["redpacket_empty", "already_claimed"].contains(&code),
                        "{result}"
                    );
                }
                other => panic!("status {other}"),
            }
            if packet == big {
                by_user.entry(user).or_default().push(result);
            }
        }
    }
    for (packet, count, total) in [(big, 100, 10_000), (small, 50, 5_000)] {
        let winners = &won[&packet];
        assert_eq!(winners.len(), count, "packet {packet}");
        let users: HashSet<i64> = winners.iter().map(|(u, _)| *u).collect();
        assert_eq!(users.len(), count, "a user twice in packet {packet}");
        assert_eq!(winners.iter().map(|(_, a)| a).sum::<i64>(), total);
        let mut amounts: Vec<i64> = winners.iter().map(|(_, a)| *a).collect();
        amounts.sort_unstable();
        let mut stored = shares_of(&env, packet).await;
        stored.sort_unstable();
        assert_eq!(amounts, stored, "the shares handed out are the stored ones");
        assert_eq!(
            env.count(&format!(
                "SELECT count(*) FROM redpackets WHERE id = {packet} AND status = 'finished'"
            ))
            .await,
            1
        );
    }
    // A user who claimed twice got one share at most, and was told so the second time.
    for results in by_user.values().filter(|r| r.len() == 2) {
        let codes: Vec<&str> = results
            .iter()
            .map(|r| r["code"].as_str().unwrap_or("succeeded"))
            .collect();
        assert!(
            matches!(
                codes.as_slice(),
                ["succeeded", "already_claimed"]
                    | ["already_claimed", "succeeded"]
                    | ["redpacket_empty", "redpacket_empty"]
            ),
            "{codes:?}"
        );
    }
    let mut expected: HashMap<i64, i64> = HashMap::from([(1, 90_000), (2, 95_000)]);
    for (user, amount) in won.values().flatten() {
        *expected.entry(*user).or_default() += amount;
    }
    for user in [1, 2].into_iter().chain(100..900) {
        assert_eq!(
            env.balance(user).await,
            expected.get(&user).copied().unwrap_or(0),
            "user {user}"
        );
    }
    assert_eq!(
        packets_balance(&env, 1).await + packets_balance(&env, 2).await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM commands").await,
        2 + claims.len() as i64
    );
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossed_claims_in_concurrent_batches_never_deadlock() {
    const ROUNDS: i64 = 25;
    let mut env = TestEnv::new().await;
    env.fund(1, 100_000).await;
    env.fund(2, 100_000).await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    let mut made = Vec::new();
    for (id, sender) in [("x-1", 1), ("x-2", 2)] {
        let data = json!({"total": 10_000, "count": 1_000, "mode": "equal", "expires_in": 3600});
        made.push(id_of(
            &apply_checked(&engine, &create(id, sender, data)).await,
        ));
    }
    let (p1, p2) = (made[0], made[1]);
    // Each round, two batches claim both packets in opposite orders, and each packet's sender
    // claims the other's: without the senders' wallets locked up front in one order, the two
    // would wait for each other's packet.
    for round in 0..ROUNDS {
        let user = |k: i64| 1_000 + 4 * round + k;
        let mut a = vec![
            envelope(&claim(&format!("a1-{round}"), user(0), p1)),
            envelope(&claim(&format!("a2-{round}"), user(1), p2)),
        ];
        let mut b = vec![
            envelope(&claim(&format!("b1-{round}"), user(2), p2)),
            envelope(&claim(&format!("b2-{round}"), user(3), p1)),
        ];
        if round == 0 {
            a.push(envelope(&claim("a-sender", 2, p1)));
            b.push(envelope(&claim("b-sender", 1, p2)));
        }
        let (ra, rb) = tokio::join!(engine.apply_batch(&a), engine.apply_batch(&b));
        for applied in ra.into_iter().chain(rb) {
            let applied = applied.unwrap();
            assert_eq!(
                applied.status,
                pluspay::domain::outcome::Status::Succeeded,
                "{}",
                applied.body
            );
        }
    }
    // A batch that failed (a deadlock) would have been applied again one command at a time,
    // each in a transaction of its own.
    assert_eq!(
        env.count("SELECT count(DISTINCT xmin::text) FROM commands WHERE type = 'redpacket.claim'")
            .await,
        2 * ROUNDS
    );
    assert_eq!(
        env.count("SELECT count(*) FROM redpacket_shares WHERE claimer IS NOT NULL")
            .await,
        4 * ROUNDS + 2
    );
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_money_at_ping_plus_plus_there_are_no_red_packets() {
    let (mut env, _fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|s| s.wallet.custody = Custody::Pingpp).await;
    env.fund(1, 1_000).await;
    let commands = [
        create(
            "p-create",
            1,
            json!({"total": 100, "count": 1, "mode": "equal", "expires_in": 60}),
        ),
        claim("p-claim", 2, 1),
        get("p-get", 1, 1),
    ];
    for command in commands {
        let refused = client.call(command).await;
        assert_rejected(&refused, "custody_mode", "type", "当前钱包模式不支持该操作");
    }
    assert_eq!(env.balance(1).await, 1_000);
    assert_eq!(env.count("SELECT count(*) FROM redpackets").await, 0);
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_sees_packets_that_disagree_with_their_shares() {
    let env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    let data = json!({"total": 300, "count": 3, "mode": "random", "expires_in": 3600});
    let packet = id_of(&apply_checked(&engine, &create("a-1", 1, data)).await);
    assert_eq!(
        apply_checked(&engine, &claim("a-2", 2, packet)).await["status"],
        "succeeded"
    );
    let vars = env.process_env();
    let sound = crate::support::pluspay(&["audit"], &vars).await;
    assert!(sound.status.success(), "{sound:?}");
    let report: Value = serde_json::from_slice(&sound.stdout).unwrap();
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"packets_match_open_redpackets"),
        "{names:?}"
    );
    assert!(
        names.contains(&"redpackets_match_their_shares"),
        "{names:?}"
    );

    // A share marked claimed with no money moved: the packets account holds more than the
    // unclaimed shares, and the packet's count disagrees with its shares.
    env.db
        .execute(
            "UPDATE redpacket_shares SET claimer = 3, claimed_at = now(), journal_id = 0
             WHERE redpacket_id = $1 AND number = 3",
            &[&packet],
        )
        .await
        .unwrap();
    let broken = crate::support::pluspay(&["audit"], &vars).await;
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let report: Value = serde_json::from_slice(&broken.stdout).unwrap();
    let failing: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failing,
        vec![
            "packets_match_open_redpackets",
            "redpackets_match_their_shares"
        ],
        "{report}"
    );
}

// ------------------------------------------------------------ a random sequence and a model

/// A red packet as the model knows it.
#[derive(Debug, Clone)]
struct ModelPacket {
    id: i64,
    sender: i64,
    total: i64,
    shares: Vec<i64>,
    users: Option<Vec<i64>>,
    claims: Vec<(i64, i64)>,
    expired: bool,
}

impl ModelPacket {
    fn unclaimed(&self) -> i64 {
        if self.expired {
            0
        } else {
            self.shares[self.claims.len()..].iter().sum()
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    wallets: BTreeMap<i64, i64>,
    packets: Vec<ModelPacket>,
    results: HashMap<String, Value>,
}

impl Model {
    fn packet(&self, id: i64) -> Option<&ModelPacket> {
        self.packets.iter().find(|p| p.id == id)
    }

    /// The code a claim gets, or `None` when it gets the next share.
    fn claim_refusal(&self, user: i64, id: i64) -> Option<&'static str> {
        let Some(p) = self.packet(id) else {
            return Some("redpacket_not_found");
        };
        if user == p.sender || p.users.as_ref().is_some_and(|u| !u.contains(&user)) {
            return Some("not_allowed");
        }
        if p.claims.iter().any(|(u, _)| *u == user) {
            return Some("already_claimed");
        }
        if p.claims.len() == p.shares.len() {
            return Some("redpacket_empty");
        }
        if p.expired {
            return Some("redpacket_expired");
        }
        None
    }

    fn packets_account(&self, sender: i64) -> i64 {
        self.packets
            .iter()
            .filter(|p| p.sender == sender)
            .map(ModelPacket::unclaimed)
            .sum()
    }
}

const MODEL_USERS: i64 = 6;

/// A random command of the sequence (or `None` for "let a packet expire").
fn random_command(rng: &mut rand::rngs::StdRng, n: usize, model: &Model) -> Option<Value> {
    let user = rng.random_range(1..=MODEL_USERS);
    let known = |rng: &mut rand::rngs::StdRng| -> i64 {
        match model.packets.len() {
            0 => 1,
            len if rng.random_ratio(1, 10) => model.packets[len - 1].id + 1,
            len => model.packets[rng.random_range(0..len)].id,
        }
    };
    match rng.random_range(0..20) {
        0..=4 => {
            let count = rng.random_range(1..=6);
            let total = if rng.random_ratio(1, 10) {
                rng.random_range(1..=count)
            } else {
                rng.random_range(count..=2_500)
            };
            let mode = if rng.random_bool(0.5) {
                "equal"
            } else {
                "random"
            };
            let mut data = json!({"total": total, "count": count, "mode": mode,
                                  "expires_in": 3600});
            if rng.random_bool(0.4) {
                let users: Vec<i64> = (1..=MODEL_USERS).filter(|_| rng.random_bool(0.7)).collect();
                data["users"] = json!(users);
            }
            Some(create(&format!("m-{n}"), user, data))
        }
        5..=13 => Some(claim(&format!("m-{n}"), user, known(rng))),
        14..=15 => Some(get(&format!("m-{n}"), user, known(rng))),
        16..=17 if !model.results.is_empty() => {
            // A replay of an earlier command, answered as it was.
            let mut ids: Vec<&String> = model.results.keys().collect();
            ids.sort();
            let id = ids[rng.random_range(0..ids.len())];
            Some(model.results[id]["command"].clone())
        }
        _ => None,
    }
}

/// What the model expects of `command`; checks the engine's `result` against it and applies it.
async fn expect(env: &TestEnv, model: &mut Model, command: &Value, result: &Value) {
    let id = command["id"].as_str().unwrap().to_owned();
    if let Some(earlier) = model.results.get(&id) {
        assert_eq!(result, &earlier["result"], "a replay of {id}");
        return;
    }
    let user = command["user_id"].as_i64().unwrap();
    let data = &command["data"];
    let code = result["code"].as_str();
    match command["type"].as_str().unwrap() {
        "redpacket.create" => {
            let total = data["total"].as_i64().unwrap();
            let count = data["count"].as_i64().unwrap();
            let users: Option<Vec<i64>> = data
                .get("users")
                .map(|u| serde_json::from_value(u.clone()).unwrap());
            let expected = if total < count {
                Some("amount_too_small")
            } else if users
                .as_ref()
                .is_some_and(|u| u.is_empty() || u.contains(&user) || (u.len() as i64) < count)
            {
                Some("invalid_users")
            } else if total > model.wallets[&user] {
                Some("insufficient_balance")
            } else {
                None
            };
            assert_eq!(code, expected, "{command} → {result}");
            if expected.is_none() {
                let packet = result["data"]["redpacket"]["id"].as_i64().unwrap();
                let shares = shares_of(env, packet).await;
                assert_eq!(shares.len() as i64, count);
                assert_eq!(shares.iter().sum::<i64>(), total);
                assert!(shares.iter().all(|&s| s >= 1), "{shares:?}");
                if data["mode"] == "equal" {
                    assert!(shares
                        .iter()
                        .all(|&s| s == total / count || s == total / count + 1));
                    assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
                }
                *model.wallets.get_mut(&user).unwrap() -= total;
                model.packets.push(ModelPacket {
                    id: packet,
                    sender: user,
                    total,
                    shares,
                    users,
                    claims: Vec::new(),
                    expired: false,
                });
            }
        }
        "redpacket.claim" => {
            let packet = data["redpacket"].as_i64().unwrap();
            let expected = model.claim_refusal(user, packet);
            assert_eq!(code, expected, "{command} → {result}");
            if expected.is_none() {
                let p = model.packets.iter_mut().find(|p| p.id == packet).unwrap();
                let amount = p.shares[p.claims.len()];
                assert_eq!(result["data"]["share"]["amount"], amount, "{result}");
                assert_eq!(result["data"]["share"]["number"], p.claims.len() + 1);
                p.claims.push((user, amount));
                *model.wallets.get_mut(&user).unwrap() += amount;
            }
        }
        "redpacket.get" => {
            let packet = data["redpacket"].as_i64().unwrap();
            match model.packet(packet) {
                None => assert_eq!(code, Some("redpacket_not_found")),
                Some(p)
                    if user != p.sender && p.users.as_ref().is_some_and(|u| !u.contains(&user)) =>
                {
                    assert_eq!(code, Some("not_allowed"))
                }
                Some(p) => {
                    assert_eq!(code, None, "{result}");
                    let shown = &result["data"]["redpacket"];
                    let status = if p.claims.len() == p.shares.len() {
                        "finished"
                    } else if p.expired {
                        "expired"
                    } else {
                        "open"
                    };
                    assert_eq!(shown["status"], status, "{result}");
                    assert_eq!(shown["remaining"], p.unclaimed(), "{result}");
                    let claimed: i64 = p.claims.iter().map(|(_, a)| a).sum();
                    assert_eq!(shown["claimed_amount"], claimed);
                    let refunded = if p.expired { p.total - claimed } else { 0 };
                    assert_eq!(shown["refunded"], refunded);
                    let claims: Vec<(i64, i64)> = result["data"]["claims"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| {
                            (
                                c["user_id"].as_i64().unwrap(),
                                c["amount"].as_i64().unwrap(),
                            )
                        })
                        .collect();
                    assert_eq!(claims, p.claims);
                }
            }
        }
        other => panic!("{other}"),
    }
    model
        .results
        .insert(id, json!({"command": command, "result": result}));
}

async fn compare_balances(env: &TestEnv, model: &Model) {
    for user in 1..=MODEL_USERS {
        assert_eq!(
            env.balance(user).await,
            model.wallets[&user],
            "wallet {user}"
        );
        assert_eq!(
            packets_balance(env, user).await,
            model.packets_account(user),
            "packets of {user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_sequence_matches_the_model() {
    const STEPS: usize = 300;
    let mut env = TestEnv::new().await;
    let mut model = Model::default();
    for user in 1..=MODEL_USERS {
        env.fund(user, 5_000).await;
        model.wallets.insert(user, 5_000);
    }
    let engine = Engine::from_settings(&env.settings).unwrap();
    let seed: u64 = std::env::var("PP_REDPACKET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (PP_REDPACKET_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut n = 0;
    while n < STEPS {
        n += 1;
        // Now and then a batch of up to four commands in one transaction.
        let mut commands = Vec::new();
        let size = if rng.random_ratio(1, 4) {
            rng.random_range(2..=4)
        } else {
            1
        };
        while commands.len() < size {
            match random_command(&mut rng, n * 10 + commands.len(), &model) {
                Some(command) => commands.push(command),
                None => break,
            }
        }
        if commands.is_empty() {
            // Let an open packet expire: the sweeper gives back exactly its unclaimed shares.
            let open: Vec<usize> = (0..model.packets.len())
                .filter(|&i| {
                    let p = &model.packets[i];
                    !p.expired && p.claims.len() < p.shares.len()
                })
                .collect();
            let Some(&i) = open.get(rng.random_range(0..open.len().max(1))) else {
                continue;
            };
            expire_now(&env, model.packets[i].id).await;
            assert_eq!(sweep(&engine).await, 1);
            let p = &mut model.packets[i];
            let back = p.unclaimed();
            p.expired = true;
            *model.wallets.get_mut(&p.sender).unwrap() += back;
        } else {
            let envelopes: Vec<Envelope> = commands.iter().map(envelope).collect();
            let applied = engine.apply_batch(&envelopes).await;
            // A batch decides its claims first, with its transfers and holds, then the others
            // one by one, each kind in the order given (src/engine/batch.rs).
            let mut decided: Vec<(&Value, _)> = commands.iter().zip(applied).collect();
            decided.sort_by_key(|(command, _)| command["type"] != "redpacket.claim");
            for (command, applied) in decided {
                let result: Value = serde_json::from_str(&applied.unwrap().body).unwrap();
                schemas::check(schemas::Schema::Result, &result);
                expect(&env, &mut model, command, &result).await;
            }
        }
        compare_balances(&env, &model).await;
    }
    let total: i64 = env
        .count("SELECT sum(balance)::bigint FROM accounts WHERE kind IN ('wallet', 'packets')")
        .await;
    assert_eq!(total, MODEL_USERS * 5_000, "no fen made or lost");
    assert!(
        model.packets.iter().any(|p| p.expired)
            && model.packets.iter().any(|p| !p.claims.is_empty()),
        "the sequence should expire and claim packets: {:?}",
        model.packets
    );
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}
