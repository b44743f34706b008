//! Hash chains per account and what is built on them: `pluspay verify` (full and incremental)
//! catches an entry changed, removed or moved; the daily root is recorded once, published as
//! `ledger.root`, and `wallet.proof` answers a path that an independent implementation (Python's
//! hashlib) checks against it.

use pluspay::engine::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{apply_checked, next_event, pluspay, transfer, TestEnv};

/// `pluspay verify [--incremental]`: its exit code and report.
async fn verify(env: &TestEnv, incremental: bool) -> (Option<i32>, Value) {
    let args: &[&str] = if incremental {
        &["verify", "--incremental"]
    } else {
        &["verify"]
    };
    let out = pluspay(args, &env.process_env()).await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

/// The failed checks of a report, each with its first bad version and account.
fn failed(report: &Value) -> Vec<(String, i64, i64)> {
    let mut failed = Vec::new();
    for check in report["checks"].as_array().unwrap() {
        if check["ok"] == true {
            continue;
        }
        for example in check["examples"].as_array().unwrap() {
            failed.push((
                check["name"].as_str().unwrap().to_owned(),
                example["account_id"].as_i64().unwrap(),
                example["first_bad_version"].as_i64().unwrap(),
            ));
        }
    }
    failed
}

/// Wallets 1 and 2 funded, then transfers between them: wallet 1 has versions 1 (funding), 2
/// to 5; two of the transfers are in one batch, which chains two entries of each wallet in one
/// statement.
async fn ledger() -> (TestEnv, Engine, i64) {
    let env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    env.fund(2, 1_000).await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    for (id, from, to, amount) in [("c-1", 1, 2, 10), ("c-2", 2, 1, 3)] {
        let result = apply_checked(&engine, &transfer(id, from, to, amount)).await;
        assert_eq!(result["status"], "succeeded", "{result}");
    }
    let batch: Vec<_> = [("c-3", 1, 2, 7), ("c-4", 1, 2, 5)]
        .iter()
        .map(|(id, from, to, amount)| crate::support::envelope(&transfer(id, *from, *to, *amount)))
        .collect();
    for applied in engine.apply_batch(&batch).await {
        let applied = applied.unwrap();
        assert!(applied.body.contains("succeeded"), "{}", applied.body);
    }
    let wallet: i64 = env
        .db
        .query_one(
            "SELECT id FROM accounts WHERE kind = 'wallet' AND user_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (env, engine, wallet)
}

/// The chain of `account` recomputed here from the documented encoding (docs/CONTRACT.md §5),
/// against the stored hashes and the account's head.
async fn assert_chain_as_documented(env: &TestEnv, account: i64) {
    let rows = env
        .db
        .query(
            "SELECT version, amount, balance_after, journal_id, hash FROM ledger_entries
             WHERE account_id = $1 ORDER BY version",
            &[&account],
        )
        .await
        .unwrap();
    let mut prev = "0".repeat(64);
    for row in &rows {
        let (version, amount, balance, journal): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let text = format!("{prev}|{account}|{version}|{amount}|{balance}|{journal}");
        let expected = hex::encode(Sha256::digest(text.as_bytes()));
        assert_eq!(
            hex::encode(row.get::<_, Vec<u8>>(4)),
            expected,
            "version {version}"
        );
        prev = expected;
    }
    let head: Vec<u8> = env
        .db
        .query_one("SELECT head_hash FROM accounts WHERE id = $1", &[&account])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hex::encode(head), prev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_ledger_verifies_in_full_and_incrementally() {
    let (env, engine, wallet) = ledger().await;
    assert_eq!(
        env.count(&format!(
            "SELECT max(version) FROM ledger_entries WHERE account_id = {wallet}"
        ))
        .await,
        5
    );
    assert_chain_as_documented(&env, wallet).await;
    // Hashed as they were inserted: no entry was updated after, which the audit's trigger
    // would have noted as suspect.
    assert_eq!(env.count("SELECT count(*) FROM audit_suspects").await, 0);

    let (code, report) = verify(&env, false).await;
    assert_eq!(
        (code, report["scope"].as_str()),
        (Some(0), Some("full")),
        "{report}"
    );
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "chains_unbroken",
            "versions_contiguous",
            "balances_follow_entries",
            "heads_match_last_entries"
        ]
    );
    // The first incremental run is the full one, and starts the point.
    let (code, report) = verify(&env, true).await;
    assert_eq!(
        (code, report["scope"].as_str()),
        (Some(0), Some("full")),
        "{report}"
    );
    let result = apply_checked(&engine, &transfer("c-5", 2, 1, 1)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let (code, report) = verify(&env, true).await;
    assert_eq!(
        (code, report["scope"].as_str()),
        (Some(0), Some("incremental")),
        "{report}"
    );
    // It went on from each wallet's last verified entry: both are verified up to their heads.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM chain_accounts c JOIN accounts a ON a.id = c.account_id
             WHERE c.version = a.entry_count AND c.hash = a.head_hash AND NOT c.broken
               AND a.kind = 'wallet'"
        )
        .await,
        2
    );
    assert_chain_as_documented(&env, wallet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_amount_is_caught() {
    let (env, _engine, wallet) = ledger().await;
    // Version 3 (+3) made +4, its balance after and every one after it moved to match: the
    // balances add up, only the chain shows it.
    env.db
        .batch_execute(&format!(
            "UPDATE ledger_entries SET amount = amount + 1 WHERE account_id = {wallet} AND version = 3;
             UPDATE ledger_entries SET balance_after = balance_after + 1
                 WHERE account_id = {wallet} AND version >= 3;
             UPDATE accounts SET balance = balance + 1, total_income = total_income + 1
                 WHERE id = {wallet};"
        ))
        .await
        .unwrap();
    let (code, report) = verify(&env, false).await;
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(failed(&report), [("chains_unbroken".into(), wallet, 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_entry_is_caught() {
    let (env, _engine, wallet) = ledger().await;
    env.db
        .batch_execute(&format!(
            "DELETE FROM ledger_entries WHERE account_id = {wallet} AND version = 2"
        ))
        .await
        .unwrap();
    let (code, report) = verify(&env, false).await;
    assert_eq!(code, Some(1), "{report}");
    let failed = failed(&report);
    assert!(
        failed.contains(&("chains_unbroken".into(), wallet, 3)),
        "{report}"
    );
    assert!(
        failed.contains(&("versions_contiguous".into(), wallet, 2)),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordered_pair_is_caught() {
    let (env, _engine, wallet) = ledger().await;
    // Versions 2 (-10) and 3 (+3) swapped, their balances after rewritten to the new order:
    // numbered and summed right, chained wrong.
    env.db
        .batch_execute(&format!(
            "UPDATE ledger_entries SET version = 100 WHERE account_id = {wallet} AND version = 2;
             UPDATE ledger_entries SET version = 2, balance_after = 1003
                 WHERE account_id = {wallet} AND version = 3;
             UPDATE ledger_entries SET version = 3, balance_after = 993
                 WHERE account_id = {wallet} AND version = 100;"
        ))
        .await
        .unwrap();
    let (code, report) = verify(&env, false).await;
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(failed(&report), [("chains_unbroken".into(), wallet, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_verification_catches_a_tampered_new_entry_until_repaired() {
    let (env, engine, wallet) = ledger().await;
    assert_eq!(verify(&env, true).await.0, Some(0));
    let result = apply_checked(&engine, &transfer("c-5", 1, 2, 4)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let tamper = |by: i64| {
        format!(
            "UPDATE ledger_entries SET amount = amount + {by}, balance_after = balance_after + {by}
             WHERE account_id = {wallet} AND version = 6;
             UPDATE accounts SET balance = balance + {by}, total_income = total_income + {by}
             WHERE id = {wallet};"
        )
    };
    env.db.batch_execute(&tamper(2)).await.unwrap();
    let (code, report) = verify(&env, true).await;
    assert_eq!(report["scope"], "incremental");
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(failed(&report), [("chains_unbroken".into(), wallet, 6)]);
    // Nothing new since: the broken wallet is checked again all the same.
    let (code, report) = verify(&env, true).await;
    assert_eq!(
        (code, report["scope"].as_str()),
        (Some(1), Some("incremental"))
    );
    env.db.batch_execute(&tamper(-2)).await.unwrap();
    let (code, report) = verify(&env, true).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(verify(&env, false).await.0, Some(0));
}

/// Checks a `wallet.proof` answer with Python's hashlib alone, from the documented encoding
/// (docs/CONTRACT.md §5, "Daily roots"): exit 0 if its path leads from the head to the root.
const CHECK_PROOF_PY: &str = r#"
import hashlib, json, sys
proof = json.load(sys.stdin)
h = proof["head"]
leaf = f"leaf|{h['user']}|{h['kind']}|{h['version']}|{h['balance']}|{h['hash']}"
node = hashlib.sha256(leaf.encode()).digest()
for step in proof["path"]:
    sibling = bytes.fromhex(step["hash"])
    pair = sibling + node if step["side"] == "left" else node + sibling
    node = hashlib.sha256(b"\x01" + pair).digest()
sys.exit(0 if node.hex() == proof["root"] else 1)
"#;

async fn python_accepts(proof: &Value) -> bool {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", CHECK_PROOF_PY])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(proof.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let status = child.wait().await.unwrap();
    assert!(matches!(status.code(), Some(0 | 1)), "{status:?}");
    status.success()
}

fn proof(id: &str, user: i64, data: Value) -> Value {
    json!({"id": id, "type": "wallet.proof", "user_id": user, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_root_is_recorded_once_and_proves_each_wallet() {
    let (env, engine, wallet) = ledger().await;
    for user in 3..=7 {
        env.fund(user, 100 + user).await;
    }
    let yesterday: String = env
        .db
        .query_one("SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::text", &[])
        .await
        .unwrap()
        .get(0);
    let client = env.client().await;
    let mut roots = client
        .watch(&client.names.events_exchange, "ledger.root")
        .await;
    let _worker = env.start_worker();

    let vars = env.process_env();
    let recorded = pluspay(&["root", "--day", &yesterday], &vars).await;
    assert!(recorded.status.success(), "{recorded:?}");
    let recorded: Value = serde_json::from_slice(&recorded.stdout).unwrap();
    // Wallets 1 to 7 have entries (the funding account is a system one).
    assert_eq!(recorded["leaves"], 7, "{recorded}");
    let event = next_event(&mut roots).await;
    assert_eq!(
        event,
        json!({
            "type": "ledger.root",
            "event_id": format!("ledger.root.{yesterday}"),
            "data": { "day": yesterday, "root": recorded["root"], "leaves": 7 },
        })
    );
    let again = pluspay(&["root", "--day", &yesterday], &vars).await;
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert_eq!(
        env.count("SELECT count(*) FROM ledger_roots").await,
        1,
        "one root a day"
    );
    let today = pluspay(&["root", "--day", "2999-01-01"], &vars).await;
    assert_eq!(
        today.status.code(),
        Some(2),
        "a day not ended yet: {today:?}"
    );

    // Moved after the root: the proof is of the head as the root covers it.
    let moved = apply_checked(&engine, &transfer("after-root", 1, 2, 1)).await;
    assert_eq!(moved["status"], "succeeded", "{moved}");
    for user in 1..=7 {
        let answer = apply_checked(
            &engine,
            &proof(&format!("p-{user}"), user, json!({"day": yesterday})),
        )
        .await;
        assert_eq!(answer["status"], "succeeded", "{answer}");
        let data = &answer["data"];
        assert_eq!(data["root"], recorded["root"]);
        assert_eq!(data["head"]["user"], user);
        assert!(python_accepts(data).await, "user {user}: {data}");
        if user == 1 {
            assert_eq!(data["head"]["version"], 5, "{data}");
            assert_eq!(data["head"]["balance"], 1_000 - 10 + 3 - 7 - 5);
            let head: Vec<u8> = env
                .db
                .query_one(
                    "SELECT hash FROM ledger_entries WHERE account_id = $1 AND version = 5",
                    &[&wallet],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(data["head"]["hash"], hex::encode(head));
        }
        let mut changed = data.clone();
        changed["head"]["balance"] = json!(data["head"]["balance"].as_i64().unwrap() + 1);
        assert!(
            !python_accepts(&changed).await,
            "a changed balance must not verify"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_proof_refusals_are_named() {
    let (env, engine, _wallet) = ledger().await;
    let yesterday: String = env
        .db
        .query_one("SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::text", &[])
        .await
        .unwrap()
        .get(0);
    let code = |answer: &Value| answer["code"].as_str().unwrap_or("").to_owned();
    for (i, (data, expected)) in [
        (json!({}), "day_required"),
        (json!({"day": "2026-02-30"}), "invalid_day"),
        (json!({"day": 20261201}), "invalid_day"),
        (json!({"day": yesterday}), "root_not_found"),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = apply_checked(&engine, &proof(&format!("r-{i}"), 1, data)).await;
        assert_eq!(answer["status"], "rejected", "{answer}");
        assert_eq!(code(&answer), expected, "{answer}");
    }
    let pool = pluspay::db::pool(&env.settings.database).unwrap();
    let mut client = pool.get().await.unwrap();
    assert!(pluspay::db::chains::record_root(&mut client, &yesterday)
        .await
        .unwrap()
        .is_some());
    // User 9 has no wallet entry: no leaf.
    let answer = apply_checked(&engine, &proof("r-9", 9, json!({"day": yesterday}))).await;
    assert_eq!(code(&answer), "wallet_not_in_root", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_record_yesterdays_root_by_themselves_once() {
    let (mut env, _engine, _wallet) = ledger().await;
    env.settings.worker.ledger_root_secs = 1;
    let _one = env.start_worker();
    let _two = env.start_worker();
    env.wait_for_count(
        "SELECT count(*) FROM ledger_roots
         WHERE day = (now() AT TIME ZONE 'UTC')::date - 1 AND leaves = 2",
        1,
    )
    .await;
    // Two leaves and the root above them; the day's key lets only one worker record it.
    assert_eq!(env.count("SELECT count(*) FROM ledger_root_nodes").await, 3);
    assert_eq!(env.count("SELECT count(*) FROM ledger_roots").await, 1);
}
