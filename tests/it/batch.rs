//! Group commit: several commands in one transaction, each decided on its own.

use crate::support::{transfer, TestEnv};
use pluspay::domain::command::decode;
use pluspay::domain::outcome::Status;
use serde_json::json;

fn envelope(value: serde_json::Value) -> pluspay::domain::command::Envelope {
    decode(value.to_string().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_once_and_decides_each_command_alone() {
    let mut env = TestEnv::new().await;
    env.fund(1, 300).await;
    env.fund(9, 1_000).await;
    let engine = pluspay::engine::Engine::from_settings(&env.settings).unwrap();
    let batch = [
        envelope(transfer("b-1", 1, 2, 100)),
        envelope(transfer("b-2", 1, 3, 150)),
        envelope(transfer("b-3", 1, 4, 100)), // 50 left: rejected, the others stand
        envelope(transfer("b-1", 1, 2, 100)), // a twin: answered as a redelivery
        envelope(transfer("b-2", 1, 3, 1)),   // same id, other content: a conflict
        envelope(
            json!({"id": "b-4", "type": "cash.approve", "user_id": 99, "data": {"cash": 77, "remark": "x"}}),
        ),
        envelope(json!({"id": "b-5", "type": "wallet.get", "user_id": 1})),
        envelope(json!({"id": "b-6", "type": "transform", "user_id": 9, "data": {"amount": 500}})),
    ];
    let results: Vec<_> = engine
        .apply_batch(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let body = |i: usize| serde_json::from_str::<serde_json::Value>(&results[i].body).unwrap();
    assert_eq!(results[0].status, Status::Succeeded);
    assert_eq!(results[1].status, Status::Succeeded);
    assert_eq!(body(2)["code"], "insufficient_balance");
    assert_eq!(
        (results[3].body.as_str(), results[3].replayed),
        (results[0].body.as_str(), true)
    );
    assert_eq!(body(4)["code"], "idempotency_conflict");
    assert_eq!(body(5)["code"], "unknown_cash");
    assert_eq!(body(6)["data"]["balance"], 50);
    assert_eq!(results[7].status, Status::Succeeded);
    assert_eq!(
        (
            env.balance(1).await,
            env.balance(2).await,
            env.balance(3).await
        ),
        (50, 100, 150)
    );
    // One transaction wrote every command row.
    assert_eq!(
        env.count("SELECT count(DISTINCT xmin::text) FROM commands")
            .await,
        1
    );
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 6);

    // The same batch again changes nothing and answers the same.
    let again: Vec<_> = engine
        .apply_batch(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (first, second) in results.iter().zip(&again) {
        assert_eq!(first.body, second.body);
    }
    assert_eq!(env.balance(1).await, 50);
    assert!(env.audit().await.ok);
}

fn apply(
    results: Vec<Result<pluspay::db::commands::Applied, pluspay::error::EngineError>>,
) -> Vec<serde_json::Value> {
    results
        .into_iter()
        .map(|r| serde_json::from_str(&r.unwrap().body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_in_one_batch_see_the_balances_their_predecessors_left() {
    let mut env = TestEnv::new().await;
    env.fund(1, 100).await;
    env.fund(5, 1_000).await;
    let engine = pluspay::engine::Engine::from_settings(&env.settings).unwrap();
    let mut batch = vec![
        envelope(transfer("c-1", 1, 2, 100)), // 2 had nothing: now 100
        envelope(transfer("c-2", 2, 3, 60)),  // only thanks to c-1
        envelope(transfer("c-3", 2, 3, 50)),  // 40 left: rejected
        envelope(transfer("c-4", 1, 3, 1)),   // 1 is empty: rejected
        envelope(
            json!({"id": "c-5", "type": "reward", "user_id": 3, "data": {"user": 4, "amount": 60, "body": "thanks"}}),
        ),
    ];
    // A hot wallet: many pay wallet 9 in the same batch.
    for i in 0..20 {
        batch.push(envelope(transfer(&format!("h-{i}"), 5, 9, 10 + i)));
    }
    let results = apply(engine.apply_batch(&batch).await);
    let statuses: Vec<_> = results[..5].iter().map(|r| r["status"].clone()).collect();
    assert_eq!(
        statuses,
        [
            "succeeded",
            "succeeded",
            "rejected",
            "rejected",
            "succeeded"
        ]
    );
    assert_eq!(results[2]["code"], "insufficient_balance");
    assert_eq!(results[3]["code"], "insufficient_balance");
    // Each result carries its own command's order (the sender's).
    for (result, envelope) in results.iter().zip(&batch) {
        if result["status"] == "succeeded" {
            let order = &result["data"]["order"];
            assert_eq!(order["owner_id"], envelope.user_id, "{result}");
            assert_eq!(order["amount"], envelope.data["amount"], "{result}");
            assert_eq!(
                order["target_id"],
                envelope.data["user"].to_string(),
                "{result}"
            );
            assert_eq!(order["type"], -1);
        }
    }
    assert_eq!(results[4]["data"]["order"]["body"], "thanks");
    // All in one transaction: the batch did not fall back to one by one.
    assert_eq!(
        env.count("SELECT count(DISTINCT xmin::text) FROM commands")
            .await,
        1
    );
    let hot_total: i64 = (0..20).map(|i| 10 + i).sum();
    assert_eq!(
        (
            env.balance(1).await,
            env.balance(2).await,
            env.balance(3).await,
            env.balance(4).await,
            env.balance(5).await,
            env.balance(9).await
        ),
        (0, 40, 0, 60, 1_000 - hot_total, hot_total)
    );
    // Totals move by every entry, not by the net of the batch: wallet 2 received 100, paid 60.
    assert_eq!(
        env.count("SELECT total_income * 1000 + total_expenses FROM wallets WHERE user_id = 2")
            .await,
        100_060
    );
    assert_eq!(
        env.count("SELECT total_income FROM wallets WHERE user_id = 9")
            .await,
        hot_total
    );
    // One journal, two entries and two orders per transfer that went through.
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE command_id IS NOT NULL")
            .await,
        23
    );
    assert_eq!(
        env.count("SELECT count(*) FROM ledger_entries e JOIN journal j ON j.id = e.journal_id WHERE j.command_id IS NOT NULL")
            .await,
        46
    );
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_orders o JOIN journal j ON j.id = o.journal_id WHERE j.command_id IS NOT NULL AND o.command_id IS NULL")
            .await,
        46
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_accounts_move_once_per_batch_and_stay_balanced() {
    let mut env = TestEnv::new().await;
    env.fund(1, 10_000).await;
    env.fund(2, 10_000).await;
    let engine = pluspay::engine::Engine::from_settings(&env.settings).unwrap();
    let cash = |id: &str, user: i64, value: i64| {
        envelope(json!({"id": id, "type": "cash", "user_id": user,
                        "data": {"value": value, "type": "alipay", "account": "a@b.c"}}))
    };
    let first = apply(
        engine
            .apply_batch(&[cash("s-1", 1, 1_000), cash("s-2", 2, 2_000)])
            .await,
    );
    assert!(
        first.iter().all(|r| r["status"] == "succeeded"),
        "{first:?}"
    );
    let cash_id = |r: &serde_json::Value| r["data"]["cash"]["id"].as_i64().unwrap();
    let batch = [
        envelope(
            json!({"id": "s-3", "type": "cash.approve", "user_id": 99, "data": {"cash": cash_id(&first[0]), "remark": "ok"}}),
        ),
        envelope(
            json!({"id": "s-4", "type": "cash.reject", "user_id": 99, "data": {"cash": cash_id(&first[1]), "remark": "no"}}),
        ),
        cash("s-5", 1, 500),
        envelope(json!({"id": "s-6", "type": "transform", "user_id": 2, "data": {"amount": 300}})),
        envelope(transfer("s-7", 2, 1, 700)),
    ];
    let results = apply(engine.apply_batch(&batch).await);
    assert!(
        results.iter().all(|r| r["status"] == "succeeded"),
        "{results:?}"
    );
    assert_eq!(env.system_balance("pending_payouts").await, 500);
    assert_eq!(env.system_balance("paid_out").await, 1_000);
    assert_eq!(env.system_balance("transform_revenue").await, 300);
    assert_eq!(
        (env.balance(1).await, env.balance(2).await),
        (10_000 - 1_000 - 500 + 700, 10_000 - 300 - 700)
    );
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_a_recharge_holds_is_a_conflict_and_leaves_no_trace() {
    let env = TestEnv::new().await;
    env.fund(1, 100).await;
    let engine = pluspay::engine::Engine::from_settings(&env.settings).unwrap();
    env.db.batch_execute(
        "INSERT INTO wallet_orders (owner_id, target_type, target_id, title, type, amount, state)
             VALUES (1, 'recharge_ping_p_p', 'x', '充值', 1, 100, 0);
         INSERT INTO recharges (command_id, fingerprint, user_id, order_id, order_no, charge_request)
             SELECT 'held', '\\x00', 1, id, 'ord0000001', '{}' FROM wallet_orders",
    )
    .await
    .unwrap();
    let results = apply(
        engine
            .apply_batch(&[
                envelope(transfer("held", 1, 2, 10)),
                envelope(transfer("free", 1, 2, 10)),
            ])
            .await,
    );
    assert_eq!(results[0]["code"], "idempotency_conflict");
    assert_eq!(results[1]["status"], "succeeded");
    assert_eq!(
        env.count("SELECT count(*) FROM commands WHERE id = 'held'")
            .await,
        0
    );
    assert_eq!(env.balance(2).await, 10);
}

/// Transfers and rewards among a few wallets, some of them doomed (too much, to oneself, an id
/// used twice): applied one by one in one database and in random batches in another, every
/// result and every balance must be the same. Transfers keep their order within a batch, so
/// nothing but the grouping differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_batches_answer_as_one_by_one_does() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("PP_BATCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut alone = TestEnv::new().await;
    let mut grouped = TestEnv::new().await;
    for env in [&alone, &grouped] {
        for user in 1..=4 {
            env.fund(user, 200).await;
        }
    }
    let mut commands = Vec::new();
    for n in 0..300 {
        let from = rng.random_range(1..=5);
        let to = rng.random_range(1..=5);
        let amount = rng.random_range(1..=120);
        // Now and then an id used before, with the same or other content.
        let id = if n > 0 && rng.random_ratio(1, 15) {
            format!("r-{}", rng.random_range(0..n))
        } else {
            format!("r-{n}")
        };
        commands.push(envelope(if rng.random_ratio(1, 4) {
            json!({"id": id, "type": "reward", "user_id": from,
                   "data": {"user": to, "amount": amount, "body": "thanks"}})
        } else {
            transfer(&id, from, to, amount)
        }));
    }
    let engine = pluspay::engine::Engine::from_settings(&alone.settings).unwrap();
    let mut expected = Vec::new();
    for command in &commands {
        expected.push(engine.apply(command).await.unwrap());
    }
    let engine = pluspay::engine::Engine::from_settings(&grouped.settings).unwrap();
    let mut got = Vec::new();
    let mut rest = commands.as_slice();
    while !rest.is_empty() {
        let size = rng.random_range(1..=rest.len().min(40));
        let (batch, after) = rest.split_at(size);
        got.extend(
            engine
                .apply_batch(batch)
                .await
                .into_iter()
                .map(Result::unwrap),
        );
        rest = after;
    }
    // Order ids and times differ between the two databases; the rest must not.
    let comparable = |applied: &pluspay::db::commands::Applied| {
        let mut body: serde_json::Value = serde_json::from_str(&applied.body).unwrap();
        if let Some(order) = body["data"]["order"].as_object_mut() {
            for key in ["id", "created_at", "updated_at"] {
                order.remove(key);
            }
        }
        (body, applied.status, applied.replayed)
    };
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(comparable(e), comparable(g), "command {i}, seed {seed}");
    }
    for user in 1..=5 {
        assert_eq!(
            alone.balance(user).await,
            grouped.balance(user).await,
            "user {user}, seed {seed}"
        );
    }
    assert!(alone.audit().await.ok);
    assert!(grouped.audit().await.ok, "seed {seed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_of_a_conflict_are_conflicts_not_replays() {
    let env = TestEnv::new().await;
    env.fund(1, 100).await;
    let engine = pluspay::engine::Engine::from_settings(&env.settings).unwrap();
    engine
        .apply(&envelope(transfer("t-x", 1, 2, 10)))
        .await
        .unwrap();
    let other = envelope(transfer("t-x", 1, 2, 20));
    let answers: Vec<_> = engine
        .apply_batch(&[other.clone(), other])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for answer in &answers {
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["code"], "idempotency_conflict");
        assert!(!answer.replayed, "a conflict is no replay");
    }
    assert_eq!(env.balance(2).await, 10);
}

/// Holds, claims and transforms are decided in memory with the transfers: each sees the
/// balances the batch's earlier commands left, a hold closed by one is closed for the next, a
/// share taken by one is gone for the next, and everything lands in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_claims_and_transforms_of_a_batch_see_what_the_batch_did_before_them() {
    let mut env = TestEnv::new().await;
    for user in 1..=4 {
        env.fund(user, 1_000).await;
    }
    let engine = pluspay::engine::Engine::from_settings(&env.settings).unwrap();
    let setup = apply(
        engine
            .apply_batch(&[
                envelope(json!({"id": "p-1", "type": "hold.create", "user_id": 1,
                                "data": {"amount": 400, "reason": "bounty", "expires_in": 3600}})),
                envelope(
                    json!({"id": "p-2", "type": "redpacket.create", "user_id": 4,
                                "data": {"total": 300, "count": 2, "mode": "equal",
                                         "expires_in": 3600}}),
                ),
            ])
            .await,
    );
    assert!(
        setup.iter().all(|r| r["status"] == "succeeded"),
        "{setup:?}"
    );
    let hold = setup[0]["data"]["hold"]["id"].as_i64().unwrap();
    let packet = setup[1]["data"]["redpacket"]["id"].as_i64().unwrap();
    let batch = [
        // User 1 has 600 spendable: the transfer leaves 100, so the hold of 200 can't be made.
        envelope(transfer("q-1", 1, 2, 500)),
        envelope(json!({"id": "q-2", "type": "hold.create", "user_id": 1,
                        "data": {"amount": 200, "reason": "post", "expires_in": 3600}})),
        // The first capture pays 150 to user 3 and gives 250 back; the second finds it closed,
        // and so does the release.
        envelope(json!({"id": "q-3", "type": "hold.capture", "user_id": 1,
                        "data": {"hold": hold, "user": 3, "amount": 150}})),
        envelope(json!({"id": "q-4", "type": "hold.capture", "user_id": 1,
                        "data": {"hold": hold, "user": 2, "amount": 400}})),
        envelope(json!({"id": "q-5", "type": "hold.release", "user_id": 1,
                        "data": {"hold": hold}})),
        // Somebody else's hold is not found.
        envelope(json!({"id": "q-6", "type": "hold.release", "user_id": 2,
                        "data": {"hold": hold}})),
        // Two shares: users 2 and 3 take them, user 2's second claim and user 1's find none.
        envelope(json!({"id": "q-7", "type": "redpacket.claim", "user_id": 2,
                        "data": {"redpacket": packet}})),
        envelope(json!({"id": "q-8", "type": "redpacket.claim", "user_id": 2,
                        "data": {"redpacket": packet}})),
        envelope(json!({"id": "q-9", "type": "redpacket.claim", "user_id": 3,
                        "data": {"redpacket": packet}})),
        envelope(
            json!({"id": "q-10", "type": "redpacket.claim", "user_id": 1,
                        "data": {"redpacket": packet}}),
        ),
        // User 3 has 1000 + 150 + 150: a transform of 1200 takes what the capture and the claim
        // brought; a second one of 200 finds 100.
        envelope(json!({"id": "q-11", "type": "transform", "user_id": 3,
                        "data": {"amount": 1_200}})),
        envelope(json!({"id": "q-12", "type": "transform", "user_id": 3,
                        "data": {"amount": 200}})),
    ];
    let results = apply(engine.apply_batch(&batch).await);
    let codes: Vec<&str> = results
        .iter()
        .map(|r| r["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "insufficient_balance",
            "ok",
            "hold_closed",
            "hold_closed",
            "hold_not_found",
            "ok",
            "already_claimed",
            "ok",
            "redpacket_empty",
            "ok",
            "insufficient_balance",
        ],
        "{results:?}"
    );
    assert_eq!(results[2]["data"]["hold"]["status"], "captured");
    assert_eq!(results[2]["data"]["hold"]["released"], 250);
    assert_eq!(results[2]["data"]["order"]["amount"], 150);
    assert_eq!(results[6]["data"]["share"]["number"], 1);
    assert_eq!(results[8]["data"]["share"]["number"], 2);
    assert!(results[10]["data"]["points"].as_i64().unwrap() > 0);
    assert_eq!(
        (
            env.balance(1).await,
            env.balance(2).await,
            env.balance(3).await,
            env.balance(4).await
        ),
        (
            1_000 - 400 - 500 + 250,
            1_000 + 500 + 150,
            1_000 + 150 + 150 - 1_200,
            700
        )
    );
    // One transaction wrote every command of the batch.
    assert_eq!(
        env.count("SELECT count(DISTINCT xmin::text) FROM commands WHERE id LIKE 'q-%'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM holds WHERE status = 'held'")
            .await,
        0
    );
    assert!(env.audit().await.ok);
}
