//! Versioned wallets: every entry of a user's account is its next version with the balance
//! after it, whatever wrote it (one command, a batch, holds, red packets, transforms), and
//! `wallet.changes` answers the versions a consumer missed. The migration numbers the history
//! that was there before it, and the audit catches a version or a balance after it changed.

use pluspay::db::audit;
use pluspay::engine::Engine;
use serde_json::{json, Value};

use crate::support::{
    apply_checked, empty_database, envelope, failing, schemas, transfer, TestEnv,
};

fn changes(id: &str, user: i64, data: Value) -> Value {
    json!({"id": id, "type": "wallet.changes", "user_id": user, "data": data})
}

fn wallet_get(id: &str, user: i64) -> Value {
    json!({"id": id, "type": "wallet.get", "user_id": user})
}

/// Each change's version and the balance after it.
fn versions_and_balances(changes: &[Value]) -> Vec<(i64, i64)> {
    let field = |c: &Value, name: &str| c[name].as_i64().unwrap();
    changes
        .iter()
        .map(|c| (field(c, "version"), field(c, "balance")))
        .collect()
}

/// Each change's version, the balance after it and the amount it moved.
fn versions_balances_amounts(changes: &[Value]) -> Vec<(i64, i64, i64)> {
    let field = |c: &Value, name: &str| c[name].as_i64().unwrap();
    changes
        .iter()
        .map(|c| (field(c, "version"), field(c, "balance"), field(c, "amount")))
        .collect()
}

/// The wallet's changes after `since`, as `wallet.changes` answers them.
async fn changes_of(engine: &Engine, id: &str, user: i64, since: i64, limit: i64) -> Vec<Value> {
    let result = apply_checked(
        engine,
        &changes(id, user, json!({"since": since, "limit": limit})),
    )
    .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    result["data"]["changes"].as_array().unwrap().clone()
}

/// Every user's account numbered 1.. in journal order with its running sum, its last version
/// its entry count and its last balance its balance; no system account's entry versioned.
/// Counted here independently of the audit, which is run too.
async fn assert_versioned(env: &mut TestEnv) {
    let wrong = env
        .count(
            "SELECT count(*) FROM (
                 SELECT e.version, e.balance_after, a.kind,
                        row_number() OVER w AS n, sum(e.amount) OVER w AS running
                 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                 WINDOW w AS (PARTITION BY e.account_id ORDER BY e.journal_id)) x
             WHERE CASE WHEN kind = 'system' THEN version IS NOT NULL OR balance_after IS NOT NULL
                        ELSE version IS DISTINCT FROM n OR balance_after IS DISTINCT FROM running
                   END",
        )
        .await;
    assert_eq!(wrong, 0, "entries with a wrong version or balance after");
    let last_wrong = env
        .count(
            "SELECT count(*) FROM accounts a
             LEFT JOIN LATERAL (SELECT version, balance_after FROM ledger_entries
                                WHERE account_id = a.id ORDER BY version DESC LIMIT 1) l ON true
             WHERE a.kind <> 'system'
               AND (coalesce(l.version, 0) <> a.entry_count
                    OR coalesce(l.balance_after, 0) <> a.balance)",
        )
        .await;
    assert_eq!(
        last_wrong, 0,
        "accounts whose last version is not their count"
    );
    let report = env.audit().await;
    assert!(report.ok, "{}", serde_json::to_string(&report).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_give_each_wallet_its_next_version_and_changes_answer_them() {
    let mut env = TestEnv::new().await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    let before = apply_checked(&engine, &wallet_get("g-0", 1)).await;
    assert_eq!(before["data"]["version"], 0);
    env.fund(1, 1_000).await;
    let mut orders = Vec::new();
    for (i, amount) in [100, 250, 50].into_iter().enumerate() {
        let result = apply_checked(&engine, &transfer(&format!("t-{i}"), 1, 2, amount)).await;
        assert_eq!(result["status"], "succeeded", "{result}");
        orders.push(result["data"]["order"]["id"].as_i64().unwrap());
    }
    // A rejection is no version.
    let refused = apply_checked(&engine, &transfer("t-big", 1, 2, 10_000)).await;
    assert_eq!(refused["code"], "insufficient_balance");

    let info = apply_checked(&engine, &wallet_get("g-1", 1)).await;
    assert_eq!(
        (&info["data"]["version"], &info["data"]["balance"]),
        (&json!(4), &json!(600))
    );
    let got = changes_of(&engine, "c-1", 1, 0, 20).await;
    let summary = versions_balances_amounts(&got);
    assert_eq!(
        summary,
        [
            (1, 1_000, 1_000),
            (2, 900, -100),
            (3, 650, -250),
            (4, 600, -50)
        ]
    );
    // The funding has no order; each transfer's is the sender's expense order.
    assert_eq!(got[0]["order"], Value::Null);
    let got_orders: Vec<i64> = got[1..]
        .iter()
        .map(|c| c["order"].as_i64().unwrap())
        .collect();
    assert_eq!(got_orders, orders);
    for change in &got {
        assert_eq!(
            (&change["user"], &change["unit"]),
            (&json!(1), &json!("fen"))
        );
    }
    // The receiver's versions, with its income orders of the same journals.
    let theirs = changes_of(&engine, "c-2", 2, 0, 20).await;
    assert_eq!(theirs.len(), 3);
    assert_eq!(
        theirs
            .iter()
            .map(|c| c["balance"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [100, 350, 400]
    );
    for (mine, their) in got[1..].iter().zip(&theirs) {
        assert_eq!(mine["journal"], their["journal"]);
        assert_ne!(mine["order"], their["order"]);
        let owner = env
            .count(&format!(
                "SELECT owner_id FROM wallet_orders WHERE id = {}",
                their["order"]
            ))
            .await;
        assert_eq!(owner, 2);
    }
    assert_versioned(&mut env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_numbers_each_wallets_entries_in_the_order_its_commands_are_decided() {
    let mut env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    env.fund(2, 500).await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    let batch = [
        envelope(&transfer("b-1", 1, 2, 100)),
        envelope(&transfer("b-2", 2, 1, 300)),
        envelope(&transfer("b-3", 1, 3, 5_000)), // refused: no version
        envelope(&transfer("b-4", 1, 2, 200)),
        envelope(&json!({"id": "b-5", "type": "hold.create", "user_id": 1,
                         "data": {"amount": 150, "reason": "悬赏", "expires_in": 3_600}})),
        envelope(&json!({"id": "b-6", "type": "transform", "user_id": 2, "data": {"amount": 100}})),
        envelope(
            &json!({"id": "b-7", "type": "redpacket.create", "user_id": 2,
                         "data": {"total": 60, "count": 3, "mode": "equal", "expires_in": 600}}),
        ),
        envelope(&wallet_get("b-8", 1)),
    ];
    let results: Vec<Value> = engine
        .apply_batch(&batch)
        .await
        .into_iter()
        .map(|r| serde_json::from_str(&r.unwrap().body).unwrap())
        .collect();
    for (i, result) in results.iter().enumerate() {
        schemas::check(schemas::Schema::Result, result);
        let expected = if i == 2 { "rejected" } else { "succeeded" };
        assert_eq!(result["status"], expected, "{result}");
    }
    // One transaction wrote them all.
    assert_eq!(
        env.count("SELECT count(DISTINCT xmin::text) FROM ledger_entries WHERE version > 1")
            .await,
        1
    );
    // Each money command's result names the version of the entry it wrote to its actor's
    // wallet: user 1's transfers (2, 4) and hold (5), user 2's transfer (3), transform (5)
    // and red packet (6), whatever the batch decided between them.
    let versions: Vec<Value> = results
        .iter()
        .map(|r| r["data"]["version"].clone())
        .collect();
    assert_eq!(
        versions[..7],
        [
            json!(2),
            json!(3),
            Value::Null,
            json!(4),
            json!(5),
            json!(5),
            json!(6)
        ]
    );
    // Wallet 1: funded (1), sent 100 (2), got 300 (3), sent 200 (4), held 150 (5), in the
    // order the batch decided them; its wallet.get, decided after them, saw them all.
    assert_eq!(results[7]["data"]["version"], 5);
    let mine = changes_of(&engine, "c-1", 1, 0, 100).await;
    let summary = versions_and_balances(&mine);
    assert_eq!(
        summary,
        [(1, 1_000), (2, 900), (3, 1_200), (4, 1_000), (5, 850)]
    );
    let journals: Vec<i64> = mine
        .iter()
        .map(|c| c["journal"].as_i64().unwrap())
        .collect();
    assert!(journals.windows(2).all(|w| w[0] < w[1]), "{journals:?}");
    let theirs = changes_of(&engine, "c-2", 2, 0, 100).await;
    let summary = versions_and_balances(&theirs);
    assert_eq!(
        summary,
        [(1, 500), (2, 600), (3, 300), (4, 500), (5, 400), (6, 340)]
    );
    for (_, result) in results[..7].iter().enumerate().filter(|(i, _)| *i != 2) {
        let actor = if result["user_id"] == 1 {
            &mine
        } else {
            &theirs
        };
        assert_version_is_the_entrys(result, actor);
    }
    let version = apply_checked(&engine, &wallet_get("g-2", 2)).await;
    assert_eq!(version["data"]["version"], 6);
    // The held, points and packets accounts are versioned too.
    let others: Vec<(String, i64, i64)> = env
        .db
        .query(
            "SELECT a.kind, e.version, e.balance_after FROM ledger_entries e
             JOIN accounts a ON a.id = e.account_id
             WHERE a.kind IN ('held', 'points', 'packets') ORDER BY a.kind",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        others,
        [
            ("held".to_owned(), 1, 150),
            ("packets".to_owned(), 1, 60),
            ("points".to_owned(), 1, 100)
        ]
    );
    assert_versioned(&mut env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_claims_and_transforms_through_the_worker_keep_every_account_numbered() {
    let mut env = TestEnv::new().await;
    env.fund(1, 2_000).await;
    env.fund(2, 300).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let held = client
        .call(json!({"id": "h-1", "type": "hold.create", "user_id": 1,
                     "data": {"amount": 500, "reason": "悬赏", "expires_in": 3_600}}))
        .await;
    assert_eq!(held["status"], "succeeded", "{held}");
    let hold = held["data"]["hold"]["id"].as_i64().unwrap();
    let captured = client
        .call(json!({"id": "h-2", "type": "hold.capture", "user_id": 1,
                     "data": {"hold": hold, "user": 2, "amount": 200}}))
        .await;
    assert_eq!(captured["status"], "succeeded", "{captured}");
    let packet = client
        .call(
            json!({"id": "r-1", "type": "redpacket.create", "user_id": 1,
                     "data": {"total": 90, "count": 3, "mode": "equal", "expires_in": 600}}),
        )
        .await;
    assert_eq!(packet["status"], "succeeded", "{packet}");
    let created = packet.clone();
    let packet = packet["data"]["redpacket"]["id"].as_i64().unwrap();
    let claimed = client
        .call(json!({"id": "r-2", "type": "redpacket.claim", "user_id": 2,
                     "data": {"redpacket": packet}}))
        .await;
    assert_eq!(claimed["status"], "succeeded", "{claimed}");
    let mut transformed_versions = Vec::new();
    for (id, user) in [("x-1", 1), ("x-2", 2)] {
        let transformed = client
            .call(json!({"id": id, "type": "transform", "user_id": user, "data": {"amount": 100}}))
            .await;
        assert_eq!(transformed["status"], "succeeded", "{transformed}");
        transformed_versions.push(transformed["data"]["version"].as_i64().unwrap());
    }
    let got = client.call(changes("c-1", 2, json!({"since": 1}))).await;
    assert_eq!(got["status"], "succeeded", "{got}");
    let summary = versions_balances_amounts(got["data"]["changes"].as_array().unwrap());
    // The capture's 200, a share of 30, a transform of 100.
    assert_eq!(summary, [(2, 500, 200), (3, 530, 30), (4, 430, -100)]);
    assert_eq!(
        got["data"]["changes"][0]["order"],
        captured["data"]["order"]["id"]
    );
    assert_eq!(
        got["data"]["changes"][1]["order"],
        claimed["data"]["order"]["id"]
    );
    // Each result names its actor's wallet version after it: wallet 1 funded (1), held (2),
    // the rest of the capture back (3), the red packet (4), the transform (5); wallet 2 the
    // claim (3), the transform (4).
    assert_eq!(held["data"]["version"], 2, "{held}");
    assert_eq!(captured["data"]["version"], 3, "{captured}");
    assert_eq!(created["data"]["version"], 4, "{created}");
    assert_eq!(claimed["data"]["version"], 3, "{claimed}");
    assert_eq!(transformed_versions, [5, 4]);
    // Wallet 1: funded, held, the rest of the hold back, the red packet, the transform.
    let info = client.call(wallet_get("g-1", 1)).await;
    assert_eq!(info["data"]["version"], 5, "{info}");
    assert_eq!(info["data"]["balance"], 2_000 - 200 - 90 - 100);
    assert_versioned(&mut env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_page_by_version_and_refuse_what_is_not_one() {
    let mut env = TestEnv::new().await;
    env.fund(1, 10_000).await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    for i in 0..29 {
        let result = apply_checked(&engine, &transfer(&format!("t-{i}"), 1, 2, 1 + i)).await;
        assert_eq!(result["status"], "succeeded", "{result}");
    }
    // 30 versions: pages of 7 from 0, each starting after the last one seen.
    let mut seen = Vec::new();
    let mut since = 0;
    loop {
        let page = changes_of(&engine, &format!("p-{since}"), 1, since, 7).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        since = page.last().unwrap()["version"].as_i64().unwrap();
        seen.extend(page);
    }
    assert_eq!(
        seen.iter()
            .map(|c| c["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    // A consumer that saw 7 after 5 fetches 6.
    let missed = changes_of(&engine, "m-1", 1, 5, 1).await;
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0], seen[5]);
    // 20 unless given; at most 100.
    let default = apply_checked(&engine, &changes("d-1", 1, json!({"since": 0}))).await;
    assert_eq!(default["data"]["changes"].as_array().unwrap().len(), 20);
    let many = changes_of(&engine, "d-2", 1, 0, 1_000).await;
    assert_eq!(many.len(), 30);
    // A wallet that never moved, and a version past the last: nothing.
    assert!(changes_of(&engine, "e-1", 7, 0, 20).await.is_empty());
    assert!(changes_of(&engine, "e-2", 1, 30, 20).await.is_empty());

    for (i, (data, code, field)) in [
        (json!({}), "since_required", "since"),
        (json!({"since": null}), "since_required", "since"),
        (json!({"since": -1}), "invalid_since", "since"),
        (json!({"since": "3"}), "invalid_since", "since"),
        (json!({"since": 1.5}), "invalid_since", "since"),
        (json!({"since": 0, "limit": 0}), "invalid_limit", "limit"),
        (json!({"since": 0, "limit": "5"}), "invalid_limit", "limit"),
        (json!({"since": 0, "unit": "yuan"}), "invalid_unit", "unit"),
        (json!({"since": 0, "unit": 1}), "invalid_unit", "unit"),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = apply_checked(&engine, &changes(&format!("v-{i}"), 1, data.clone())).await;
        assert_eq!(refused["status"], "rejected", "{data}: {refused}");
        assert_eq!(refused["code"], code, "{data}: {refused}");
        assert!(refused["errors"][field].is_array(), "{data}: {refused}");
    }
    let missing = apply_checked(&engine, &changes("v-m", 1, json!({}))).await;
    assert_eq!(missing["errors"]["since"], json!(["请填写起始版本"]));
    let bad = apply_checked(&engine, &changes("v-b", 1, json!({"since": -4}))).await;
    assert_eq!(bad["errors"]["since"], json!(["发送的数据错误"]));
    assert_versioned(&mut env).await;
}

/// The result's `version` is that of the actor's change with the result's own order.
fn assert_version_is_the_entrys(result: &Value, actor_changes: &[Value]) {
    let order = &result["data"]["order"]["id"];
    let change = actor_changes
        .iter()
        .find(|c| &c["order"] == order)
        .unwrap_or_else(|| panic!("no change with order {order}: {result}"));
    assert_eq!(result["data"]["version"], change["version"], "{result}");
}

async fn three_transfers(env: &mut TestEnv) -> Engine {
    env.fund(1, 1_000).await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    for i in 0..3 {
        let result = apply_checked(&engine, &transfer(&format!("t-{i}"), 1, 2, 10)).await;
        assert_eq!(result["status"], "succeeded", "{result}");
    }
    assert!(env.audit().await.ok);
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_catches_a_version_changed() {
    let mut env = TestEnv::new().await;
    three_transfers(&mut env).await;
    let wallet = "(SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 1)";
    // Two versions swapped: each unique, but out of journal order.
    env.db
        .batch_execute(&format!(
            "UPDATE ledger_entries SET version = 100 WHERE account_id = {wallet} AND version = 2;
             UPDATE ledger_entries SET version = 2 WHERE account_id = {wallet} AND version = 3;
             UPDATE ledger_entries SET version = 3 WHERE account_id = {wallet} AND version = 100;"
        ))
        .await
        .unwrap();
    let report = audit::run(&mut env.db).await.unwrap();
    assert_eq!(failing(&report), ["versions_follow_entries"]);
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "versions_follow_entries")
        .unwrap();
    assert_eq!(check.violations, 2, "{:?}", check.examples);
    assert_eq!(check.examples[0]["user_id"], 1);
    assert!(!env.audit().await.ok);
    // Put back, and a gap instead: the last version is no longer the entry count.
    env.db
        .batch_execute(&format!(
            "UPDATE ledger_entries SET version = 100 WHERE account_id = {wallet} AND version = 2;
             UPDATE ledger_entries SET version = 2 WHERE account_id = {wallet} AND version = 3;
             UPDATE ledger_entries SET version = 3 WHERE account_id = {wallet} AND version = 100;"
        ))
        .await
        .unwrap();
    assert!(env.audit().await.ok);
    env.db
        .batch_execute(&format!(
            "UPDATE ledger_entries SET version = 9 WHERE account_id = {wallet} AND version = 4"
        ))
        .await
        .unwrap();
    let report = audit::run(&mut env.db).await.unwrap();
    assert_eq!(failing(&report), ["versions_follow_entries"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_catches_a_balance_after_changed() {
    let mut env = TestEnv::new().await;
    three_transfers(&mut env).await;
    env.db
        .batch_execute(
            "UPDATE ledger_entries SET balance_after = balance_after + 1
             WHERE account_id = (SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 2)
               AND version = 2",
        )
        .await
        .unwrap();
    let report = audit::run(&mut env.db).await.unwrap();
    assert_eq!(failing(&report), ["versions_follow_entries"]);
    let example = &report
        .checks
        .iter()
        .find(|c| c.name == "versions_follow_entries")
        .unwrap()
        .examples[0];
    assert_eq!(
        (
            &example["user_id"],
            &example["balance_after"],
            &example["expected_balance_after"]
        ),
        (&json!(2), &json!(21), &json!(20)),
        "{example}"
    );
    // The last one, which is also compared with the account's balance.
    env.db
        .batch_execute(
            "UPDATE ledger_entries SET balance_after = balance_after - 1
             WHERE account_id = (SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 2)
               AND version = 2;
             UPDATE ledger_entries SET balance_after = 0
             WHERE account_id = (SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 1)
               AND version = 4",
        )
        .await
        .unwrap();
    let report = audit::run(&mut env.db).await.unwrap();
    assert_eq!(failing(&report), ["versions_follow_entries"]);
    assert!(!env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_its_version_is_caught_by_the_incremental_check_too() {
    let mut env = TestEnv::new().await;
    let engine = three_transfers(&mut env).await;
    // A new entry written the old way, without a version: the next incremental check sees it.
    env.db
        .batch_execute("INSERT INTO accounts (kind, user_id, unit) VALUES ('wallet', 3, 'fen')")
        .await
        .unwrap();
    env.db
        .batch_execute(
            "WITH j AS (INSERT INTO journal (kind) VALUES ('test_funding') RETURNING id),
                  moves AS (SELECT id AS account_id, 5::bigint AS amount FROM accounts
                                WHERE kind = 'wallet' AND user_id = 3
                            UNION ALL
                            SELECT id, -5 FROM accounts WHERE name = 'test_funding'),
                  entries AS (INSERT INTO ledger_entries (journal_id, account_id, amount)
                              SELECT j.id, m.account_id, m.amount FROM j, moves m)
             UPDATE accounts a SET balance = balance + m.amount,
                    total_income = total_income + greatest(m.amount, 0),
                    total_expenses = total_expenses + greatest(-m.amount, 0),
                    entry_count = entry_count + 1
               FROM moves m WHERE a.id = m.account_id",
        )
        .await
        .unwrap();
    let report = audit::run_incremental(&mut env.db).await.unwrap();
    assert_eq!(report.scope, "incremental");
    assert_eq!(failing(&report), ["entries_are_versioned"]);
    let full = audit::run(&mut env.db).await.unwrap();
    assert_eq!(
        failing(&full),
        ["entries_are_versioned", "versions_follow_entries"]
    );
    // And `wallet.changes` does not answer it: a consumer would never hear of it, which is
    // why the audit looks.
    assert!(changes_of(&engine, "c-1", 3, 0, 20).await.is_empty());
    // An old entry's version removed: its account and journal are suspects at the next check.
    env.db
        .batch_execute(
            "UPDATE ledger_entries SET version = 1, balance_after = 5,
                    hash = ledger_entry_hash(NULL, account_id, 1, amount, 5, journal_id)
             WHERE account_id = (SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 3)",
        )
        .await
        .unwrap();
    assert!(env.audit().await.ok);
    env.db
        .batch_execute(
            "UPDATE ledger_entries SET version = NULL, balance_after = NULL, hash = NULL
             WHERE account_id = (SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 2)
               AND version = 1",
        )
        .await
        .unwrap();
    let report = audit::run_incremental(&mut env.db).await.unwrap();
    assert_eq!(report.scope, "incremental");
    assert_eq!(failing(&report), ["entries_are_versioned"]);
    // The database refuses half a version.
    let half = env
        .db
        .batch_execute(
            "UPDATE ledger_entries SET version = 1
             WHERE account_id = (SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 2)
               AND version IS NULL",
        )
        .await
        .unwrap_err();
    assert!(
        format!("{half:?}").contains("ledger_entries_version_with_balance"),
        "{half:?}"
    );
}

/// An entry as the migration test sees it: its account (kind and user, or name), amount,
/// version and balance after it.
type Numbered = (String, i64, Option<i64>, Option<i64>);

async fn numbered(db: &tokio_postgres::Client) -> Vec<Numbered> {
    db.query(
        "SELECT coalesce(a.kind || ':' || a.user_id, a.name), e.amount, e.version,
                e.balance_after
         FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
         ORDER BY coalesce(a.kind || ':' || a.user_id, a.name), e.journal_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The migration on a ledger written before it: every user's account numbered in journal
/// order with its running sums, system accounts left alone, nothing noted for the incremental
/// check, which goes on from its point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_numbers_the_history_before_it() {
    let url = empty_database().await;
    let mut db = pluspay::db::connect(&url).await.unwrap();
    let (before, versions) = pluspay::db::migrate::MIGRATIONS.split_at(
        pluspay::db::migrate::MIGRATIONS
            .iter()
            .position(|m| m.name == "0020_wallet_versions.sql")
            .unwrap(),
    );
    for migration in before {
        let tx = db.transaction().await.unwrap();
        tx.batch_execute(migration.sql).await.unwrap();
        tx.commit().await.unwrap();
    }
    // History the old way: wallets funded, transfers between them, a transform into points,
    // interleaved so that each account's journals are not one run.
    db.batch_execute(
        "INSERT INTO accounts (kind, name, unit, may_go_negative)
             VALUES ('system', 'test_funding', 'fen', true);
         INSERT INTO accounts (kind, user_id, unit)
             VALUES ('wallet', 1, 'fen'), ('wallet', 2, 'fen'), ('points', 1, 'point');
         CREATE TEMP TABLE moves (n int, kind text, user_id bigint, name text, amount bigint);
         INSERT INTO moves VALUES
             (1, 'wallet', 1, NULL, 1000), (1, 'system', NULL, 'test_funding', -1000),
             (2, 'wallet', 2, NULL, 500), (2, 'system', NULL, 'test_funding', -500),
             (3, 'wallet', 1, NULL, -300), (3, 'wallet', 2, NULL, 300),
             (4, 'wallet', 2, NULL, -50), (4, 'wallet', 1, NULL, 50),
             (5, 'wallet', 1, NULL, -100), (5, 'system', NULL, 'transform_revenue', 100),
             (5, 'system', NULL, 'points_issued', -100), (5, 'points', 1, NULL, 100),
             (6, 'wallet', 1, NULL, -1), (6, 'wallet', 2, NULL, 1);
         INSERT INTO journal (kind) SELECT 'old' FROM generate_series(1, 6);
         INSERT INTO ledger_entries (journal_id, account_id, amount)
             SELECT j.id, a.id, m.amount FROM moves m
             JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM journal) j ON j.n = m.n
             JOIN accounts a ON (a.kind = m.kind AND a.user_id = m.user_id) OR a.name = m.name;
         UPDATE accounts a SET balance = e.sum, total_income = e.income,
                total_expenses = e.expenses, entry_count = e.n
           FROM (SELECT account_id, sum(amount) AS sum, sum(greatest(amount, 0)) AS income,
                        sum(greatest(-amount, 0)) AS expenses, count(*) AS n
                 FROM ledger_entries GROUP BY account_id) e
          WHERE a.id = e.account_id;",
    )
    .await
    .unwrap();
    // The incremental check had a point before the migration, as its last check left it
    // (audit::establish; the check of this version reads the new columns).
    db.batch_execute(
        "INSERT INTO audit_point (journal_id) SELECT max(id) FROM journal;
         INSERT INTO audit_accounts (account_id, balance, entry_count)
             SELECT account_id, sum(amount), count(*) FROM ledger_entries GROUP BY account_id;",
    )
    .await
    .unwrap();
    assert_eq!(
        db.query_one("SELECT count(*) FROM audit_suspects", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );

    let tx = db.transaction().await.unwrap();
    tx.batch_execute(versions[0].sql).await.unwrap();
    tx.commit().await.unwrap();

    let rows = numbered(&db).await;
    let row = |account: &str, amount: i64, version: Option<i64>, after: Option<i64>| {
        (account.to_owned(), amount, version, after)
    };
    assert_eq!(
        rows,
        [
            row("points:1", 100, Some(1), Some(100)),
            row("points_issued", -100, None, None),
            row("test_funding", -1000, None, None),
            row("test_funding", -500, None, None),
            row("transform_revenue", 100, None, None),
            row("wallet:1", 1000, Some(1), Some(1000)),
            row("wallet:1", -300, Some(2), Some(700)),
            row("wallet:1", 50, Some(3), Some(750)),
            row("wallet:1", -100, Some(4), Some(650)),
            row("wallet:1", -1, Some(5), Some(649)),
            row("wallet:2", 500, Some(1), Some(500)),
            row("wallet:2", 300, Some(2), Some(800)),
            row("wallet:2", -50, Some(3), Some(750)),
            row("wallet:2", 1, Some(4), Some(751)),
        ]
    );
    // Nothing for the incremental check to look at again, and its triggers are back on.
    assert_eq!(
        db.query_one("SELECT count(*) FROM audit_suspects", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    let enabled: Vec<String> = db
        .query(
            "SELECT tgname FROM pg_trigger
             WHERE tgrelid = 'ledger_entries'::regclass AND NOT tgisinternal
               AND tgenabled = 'O' ORDER BY tgname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        enabled,
        [
            "audit_entries_truncated",
            "audit_entry_added",
            "audit_entry_changed"
        ]
    );
    let next = audit::run_incremental(&mut db).await.unwrap();
    assert_eq!(next.scope, "incremental");
    assert!(next.ok, "{}", serde_json::to_string(&next).unwrap());
    let full = audit::run(&mut db).await.unwrap();
    assert!(full.ok, "{}", serde_json::to_string(&full).unwrap());

    // The backfill's numbering again, on what is now there: it changes nothing.
    let statement = versions[0].sql;
    let update = &statement[statement.find("UPDATE ledger_entries").unwrap()..];
    let update = &update[..update.find(';').unwrap()];
    let changed = db.execute(update, &[]).await.unwrap();
    assert_eq!(changed, 10);
    let after = numbered(&db).await;
    assert_eq!(after, rows);
}

/// The `wallet.changed` events off `consumer` until `distinct` different ones arrived: each
/// `(event_id, body)` in arrival order (copies included), the body checked against the event
/// schema.
async fn wallet_changed_events(
    consumer: &mut lapin::Consumer,
    distinct: usize,
) -> Vec<(String, Vec<u8>)> {
    use futures_util::StreamExt;
    let mut got = Vec::new();
    let mut ids = std::collections::HashSet::new();
    while ids.len() < distinct {
        let delivery = tokio::time::timeout(crate::support::WAIT, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {distinct} wallet.changed in time", ids.len()))
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_slice(&delivery.data).unwrap();
        schemas::check(schemas::Schema::Event, &event);
        assert_eq!(event["type"], "wallet.changed", "{event}");
        let id = event["event_id"].as_str().unwrap().to_owned();
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string());
        assert_eq!(message_id.as_deref(), Some(id.as_str()));
        ids.insert(id.clone());
        got.push((id, delivery.data));
    }
    got
}

/// Every user's wallet and points account: (user, unit, entry count).
async fn accounts_with_events(env: &TestEnv) -> Vec<(i64, String, i64)> {
    env.db
        .query(
            "SELECT user_id, unit, entry_count FROM accounts
             WHERE kind IN ('wallet', 'points') AND entry_count > 0 ORDER BY user_id, unit",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_of_wallets_and_points_is_published_once_in_order_as_changes_answer_it() {
    let mut env = TestEnv::new().await;
    let client = env.client().await;
    let mut consumer = client
        .watch(&env.names.events_exchange, "wallet.changed")
        .await;
    env.fund(1, 5_000).await;
    let worker = env.start_worker();
    let engine = Engine::from_settings(&env.settings).unwrap();
    for i in 0..4 {
        let sent = apply_checked(&engine, &transfer(&format!("t-{i}"), 1, 2, 100 + i)).await;
        assert_eq!(sent["status"], "succeeded", "{sent}");
        let rewarded = apply_checked(
            &engine,
            &json!({"id": format!("r-{i}"), "type": "reward", "user_id": 2,
                    "data": {"user": 3, "amount": 10}}),
        )
        .await;
        assert_eq!(rewarded["status"], "succeeded", "{rewarded}");
    }
    for (id, user, amount) in [("x-1", 1, 300), ("x-2", 2, 100), ("x-3", 1, 200)] {
        let transformed = apply_checked(
            &engine,
            &json!({"id": id, "type": "transform", "user_id": user, "data": {"amount": amount}}),
        )
        .await;
        assert_eq!(transformed["status"], "succeeded", "{transformed}");
    }
    let accounts = accounts_with_events(&env).await;
    // Wallets of 1, 2, 3 and points of 1 and 2.
    assert_eq!(accounts.len(), 5, "{accounts:?}");
    let total: i64 = accounts.iter().map(|a| a.2).sum();
    let events = wallet_changed_events(&mut consumer, total as usize).await;
    // Nothing went wrong: each once.
    assert_eq!(events.len(), total as usize);
    for (user, unit, count) in &accounts {
        let prefix = format!("wallet.changed.{user}.{unit}.");
        let mine: Vec<Value> = events
            .iter()
            .filter(|(id, _)| id.starts_with(&prefix))
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect();
        let versions: Vec<i64> = mine
            .iter()
            .map(|e| e["data"]["version"].as_i64().unwrap())
            .collect();
        assert_eq!(versions, (1..=*count).collect::<Vec<_>>(), "{user} {unit}");
        for event in &mine {
            assert_eq!(event["user_id"], *user);
            assert_eq!(
                event["event_id"],
                format!("{prefix}{}", event["data"]["version"])
            );
        }
        // The same as wallet.changes answers, item for item.
        let answered = apply_checked(
            &engine,
            &json!({"id": format!("c-{user}-{unit}"), "type": "wallet.changes", "user_id": user,
                    "data": {"since": 0, "limit": 100, "unit": unit}}),
        )
        .await;
        let data: Vec<Value> = mine.iter().map(|e| e["data"].clone()).collect();
        assert_eq!(
            answered["data"]["changes"].as_array().unwrap(),
            &data,
            "{user} {unit}"
        );
    }
    // A points change names the transform's order, as the wallet's change of it does.
    let points_of_1: Vec<Value> = events
        .iter()
        .filter(|(id, _)| id.starts_with("wallet.changed.1.point."))
        .map(|(_, body)| serde_json::from_slice(body).unwrap())
        .collect();
    assert_eq!(points_of_1.len(), 2);
    assert!(points_of_1.iter().all(|e| e["data"]["order"].is_i64()));
    worker.stop().await;
    assert_versioned(&mut env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_left_behind_publishes_the_same_bytes_again_then_goes_on() {
    let env = TestEnv::new().await;
    let client = env.client().await;
    let mut consumer = client
        .watch(&env.names.events_exchange, "wallet.changed")
        .await;
    env.fund(1, 1_000).await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    for i in 0..5 {
        let sent = apply_checked(&engine, &transfer(&format!("t-{i}"), 1, 2, 10)).await;
        assert_eq!(sent["status"], "succeeded", "{sent}");
    }
    // Funded plus five transfers, each on two wallets.
    let worker = env.start_worker();
    let first = wallet_changed_events(&mut consumer, 11).await;
    worker.stop().await;
    assert_eq!(first.len(), 11);
    // As after a crash between publishing and moving the cursor.
    env.db
        .execute("UPDATE wallet_changed_cursor SET journal_id = 0", &[])
        .await
        .unwrap();
    let worker = env.start_worker();
    let again = wallet_changed_events(&mut consumer, 11).await;
    assert_eq!(again, first, "the copies differ from the first ones");
    // And then the next versions, where the others stopped.
    let sent = apply_checked(&engine, &transfer("t-next", 2, 1, 7)).await;
    assert_eq!(sent["status"], "succeeded", "{sent}");
    let next = wallet_changed_events(&mut consumer, 2).await;
    let ids: Vec<&str> = next.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["wallet.changed.1.fen.7", "wallet.changed.2.fen.6"]);
    worker.stop().await;
}

/// Turned off, the worker publishes no `wallet.changed` and leaves the cursor where it is;
/// turned on again, the versions made meanwhile go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wallet_changed_off_nothing_goes_out_and_turned_on_the_missed_versions_do() {
    use futures_util::StreamExt;
    let mut env = TestEnv::new().await;
    env.settings.worker.wallet_changed = false;
    let mut client = env.client().await;
    let mut consumer = client
        .watch(&env.names.events_exchange, "wallet.changed")
        .await;
    env.fund(1, 1_000).await;
    let worker = env.start_worker();
    let sent = client.call(transfer("off-1", 1, 2, 100)).await;
    assert_eq!(sent["status"], "succeeded", "{sent}");
    // A publisher that ran would have gone round about ten times by now.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        env.count("SELECT journal_id FROM wallet_changed_cursor")
            .await,
        0
    );
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(200), consumer.next()).await;
    assert!(nothing.is_err(), "a wallet.changed went out while off");
    worker.stop().await;

    env.settings.worker.wallet_changed = true;
    let worker = env.start_worker();
    // User 1: the funding and the transfer; user 2: the transfer.
    let events = wallet_changed_events(&mut consumer, 3).await;
    let mut ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "wallet.changed.1.fen.1",
            "wallet.changed.1.fen.2",
            "wallet.changed.2.fen.1"
        ]
    );
    worker.stop().await;
}
