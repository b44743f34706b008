//! The incremental ledger check against the full one: it catches what was changed behind the
//! ledger's back before its last point, it is never fooled by postings still in flight, and
//! concurrent checks share one point.

use pluspay::db::audit::{self, Report};

use crate::support::{failing, transfer, TestEnv};

/// Runs the incremental check, expecting it to be one (not the full check in its place).
async fn incremental(env: &mut TestEnv) -> Report {
    let report = audit::run_incremental(&mut env.db).await.unwrap();
    assert_eq!(report.scope, "incremental");
    report
}

async fn with_transfers(env: &mut TestEnv) {
    env.fund(1, 1_000).await;
    env.fund(2, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    for (i, (from, to)) in [(1, 2), (2, 1), (1, 2)].into_iter().enumerate() {
        let result = client.call(transfer(&format!("t-{i}"), from, to, 10)).await;
        assert_eq!(result["status"], "succeeded", "{result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_entry_changed_is_caught_until_it_is_repaired() {
    let mut env = TestEnv::new().await;
    with_transfers(&mut env).await;
    assert!(env.audit().await.ok);
    // The point is now past every journal: the entry below is one the check has verified.
    let entry = env
        .db
        .query_one(
            "SELECT journal_id, account_id FROM ledger_entries WHERE amount = 10
             ORDER BY journal_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (journal, account): (i64, i64) = (entry.get(0), entry.get(1));
    let change = |by: i64| {
        format!(
            "UPDATE ledger_entries SET amount = amount + {by}
             WHERE journal_id = {journal} AND account_id = {account}"
        )
    };
    env.db.batch_execute(&change(7)).await.unwrap();
    let report = incremental(&mut env).await;
    assert_eq!(
        failing(&report),
        [
            "balance_equals_entries",
            "entries_sum_to_zero",
            "each_journal_balances",
            "succeeded_orders_have_entries"
        ],
        "{}",
        serde_json::to_string(&report).unwrap()
    );
    // Reported again by the next check (and by the full one: `env.audit` compares them).
    assert!(!env.audit().await.ok);
    assert!(!incremental(&mut env).await.ok);

    env.db.batch_execute(&change(-7)).await.unwrap();
    assert!(incremental(&mut env).await.ok);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_moved_without_an_entry_is_caught() {
    let mut env = TestEnv::new().await;
    with_transfers(&mut env).await;
    env.fund(3, 50).await;
    assert!(env.audit().await.ok);
    // Wallet 3 has not moved since the last check: only the trigger can point at it.
    env.db
        .execute(
            "UPDATE accounts SET balance = balance + 5, total_income = total_income + 5
             WHERE kind = 'wallet' AND user_id = 3",
            &[],
        )
        .await
        .unwrap();
    let report = incremental(&mut env).await;
    assert_eq!(failing(&report), ["balance_equals_entries"]);
    let example = &report.checks[0].examples[0];
    assert_eq!(example["user_id"], 3, "{example}");
    assert_eq!(example["balance"], 55, "{example}");
    assert_eq!(example["entries"], 50, "{example}");
    assert!(!env.audit().await.ok);

    // Moving the count with it, as a posting does, does not hide it either.
    env.db
        .execute(
            "UPDATE accounts SET balance = balance - 5, total_income = total_income - 5
             WHERE kind = 'wallet' AND user_id = 3",
            &[],
        )
        .await
        .unwrap();
    env.db
        .execute(
            "UPDATE accounts SET balance = balance + 5, total_income = total_income + 5,
                    entry_count = entry_count + 1
             WHERE kind = 'wallet' AND user_id = 1",
            &[],
        )
        .await
        .unwrap();
    // Wallet 1 is no suspect: the trigger let it pass. But the count says an entry is missing
    // only when wallet 1 next moves, so move it.
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let result = client.call(transfer("after", 1, 2, 1)).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let report = incremental(&mut env).await;
    assert_eq!(failing(&report), ["balance_equals_entries"]);
    assert_eq!(report.checks[0].examples[0]["user_id"], 1);
    assert!(!env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_added_to_a_verified_journal_is_caught() {
    let mut env = TestEnv::new().await;
    with_transfers(&mut env).await;
    assert!(env.audit().await.ok);
    env.db
        .batch_execute(
            "INSERT INTO ledger_entries (journal_id, account_id, amount)
             SELECT min(journal_id), (SELECT id FROM accounts WHERE name = 'paid_out'), 3
             FROM ledger_entries;",
        )
        .await
        .unwrap();
    let report = incremental(&mut env).await;
    assert!(
        failing(&report).contains(&"each_journal_balances"),
        "{}",
        serde_json::to_string(&report).unwrap()
    );
    assert!(failing(&report).contains(&"balance_equals_entries"));
    assert!(!env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_money_command_removed_makes_the_next_check_a_full_one() {
    let mut env = TestEnv::new().await;
    with_transfers(&mut env).await;
    assert!(env.audit().await.ok);
    env.db
        .batch_execute("DELETE FROM commands WHERE id = 't-0'")
        .await
        .unwrap();
    let report = audit::run_incremental(&mut env.db).await.unwrap();
    assert_eq!(report.scope, "full");
    assert_eq!(failing(&report), ["records_name_stored_commands"]);
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "records_name_stored_commands")
        .unwrap();
    // Its journal; its orders name it through the journal.
    assert_eq!(check.violations, 1);
    assert!(!env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_table_makes_the_next_check_a_full_one() {
    let mut env = TestEnv::new().await;
    with_transfers(&mut env).await;
    assert!(env.audit().await.ok);
    env.db
        .batch_execute("TRUNCATE wallet_orders, ledger_entries CASCADE")
        .await
        .unwrap();
    let report = audit::run_incremental(&mut env.db).await.unwrap();
    assert_eq!(report.scope, "full");
    assert!(failing(&report).contains(&"balance_equals_entries"));
    // And so is every one after it, until the ledger is sound again.
    let again = audit::run_incremental(&mut env.db).await.unwrap();
    assert_eq!((again.scope, again.ok), ("full", false));
}

/// Checks run while transfers commit, from two connections at once: none reports a posting
/// half-seen or counts one twice, and the last agrees with the full check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_during_traffic_see_every_posting_once() {
    const WALLETS: i64 = 10;
    const TRANSFERS: usize = 600;
    let mut env = TestEnv::new().await;
    for user in 1..=WALLETS {
        env.fund(user, 100_000).await;
    }
    env.settings.worker.batch_size = 8;
    let _worker = env.start_worker();
    let checkers: Vec<_> = (0..2)
        .map(|_| {
            let url = env.settings.database.url.clone();
            tokio::spawn(async move {
                let mut db = pluspay::db::connect(&url).await.unwrap();
                let mut reports = Vec::new();
                loop {
                    let report = audit::run_incremental(&mut db).await.unwrap();
                    let ok = report.ok;
                    reports.push(report);
                    assert!(ok, "{}", serde_json::to_string(&reports).unwrap());
                    let total: i64 = db
                        .query_one("SELECT count(*) FROM commands", &[])
                        .await
                        .unwrap()
                        .get(0);
                    if total as usize >= TRANSFERS {
                        return reports.len();
                    }
                }
            })
        })
        .collect();
    let mut client = env.client().await;
    for i in 0..TRANSFERS {
        let from = i as i64 % WALLETS + 1;
        client
            .command(&transfer(&format!("c-{i}"), from, from % WALLETS + 1, 3))
            .await;
    }
    client.wait_results(TRANSFERS).await;
    for checker in checkers {
        let checks = checker.await.unwrap();
        assert!(checks >= 2, "only {checks} checks ran during the traffic");
    }
    let report = env.audit().await;
    assert!(report.ok);
    let verified: i64 = env
        .db
        .query_one("SELECT sum(entry_count)::bigint FROM audit_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        verified,
        env.count("SELECT count(*) FROM ledger_entries").await
    );
}
