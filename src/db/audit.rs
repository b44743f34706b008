//! The ledger's invariants (docs/CONTRACT.md §3), checked by `pluspay audit`.

use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Transaction};

use crate::error::EngineError;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// How many rows break the invariant.
    pub violations: i64,
    /// A few of them, to start the investigation.
    pub examples: Vec<Value>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// `full` (every row) or `incremental` (what changed since the last verified point).
    pub scope: &'static str,
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// Each query returns one JSON value per violation.
const CHECKS: &[(&str, &str)] = &[
    (
        "balance_equals_entries",
        "SELECT json_build_object('account_id', a.id, 'kind', a.kind, 'user_id', a.user_id,
                'name', a.name, 'balance', a.balance, 'entries', coalesce(e.sum, 0),
                'entry_count', a.entry_count, 'entries_counted', coalesce(e.n, 0))
         FROM accounts a
         LEFT JOIN (SELECT account_id, sum(amount) AS sum, count(*) AS n FROM ledger_entries
                    GROUP BY account_id) e
                ON e.account_id = a.id
         WHERE a.balance <> coalesce(e.sum, 0) OR a.entry_count <> coalesce(e.n, 0)",
    ),
    (
        "totals_match_balance",
        "SELECT json_build_object('account_id', id, 'balance', balance,
                'total_income', total_income, 'total_expenses', total_expenses)
         FROM accounts WHERE balance <> total_income - total_expenses",
    ),
    (
        "no_negative_balance",
        "SELECT json_build_object('account_id', id, 'kind', kind, 'user_id', user_id, 'balance', balance)
         FROM accounts WHERE balance < 0 AND NOT may_go_negative",
    ),
    (
        "entries_sum_to_zero",
        "SELECT json_build_object('unit', a.unit, 'sum', sum(e.amount))
         FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
         GROUP BY a.unit HAVING sum(e.amount) <> 0",
    ),
    (
        "each_journal_balances",
        "SELECT json_build_object('journal_id', e.journal_id, 'unit', a.unit, 'sum', sum(e.amount))
         FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
         GROUP BY e.journal_id, a.unit HAVING sum(e.amount) <> 0",
    ),
    (
        // Every entry of a user's account is a version of it, and no entry of a system
        // account is (migrations/0020_wallet_versions.sql): one without would be a change a
        // consumer following the versions never hears of.
        "entries_are_versioned",
        "SELECT json_build_object('journal_id', e.journal_id, 'account_id', e.account_id,
                'kind', a.kind, 'user_id', a.user_id, 'version', e.version)
         FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
         WHERE (a.kind = 'system') = (e.version IS NOT NULL)",
    ),
    (
        // A user's account's versions are 1 to its entry_count in journal order, each with
        // the running sum of its entries as the balance after it, the last one the account's
        // balance: what `wallet.changes` answers is the history, with nothing left out.
        "versions_follow_entries",
        "SELECT json_build_object('account_id', account_id, 'kind', kind, 'user_id', user_id,
                'journal_id', journal_id, 'version', version, 'expected_version', n,
                'balance_after', balance_after, 'expected_balance_after', running,
                'entry_count', entry_count, 'balance', balance)
         FROM (SELECT e.account_id, e.journal_id, e.version, e.balance_after, a.kind,
                      a.user_id, a.entry_count, a.balance,
                      row_number() OVER w AS n, sum(e.amount) OVER w AS running,
                      count(*) OVER (PARTITION BY e.account_id) AS entries
               FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
               WHERE a.kind <> 'system'
               WINDOW w AS (PARTITION BY e.account_id ORDER BY e.journal_id
                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) x
         WHERE version IS DISTINCT FROM n OR balance_after IS DISTINCT FROM running
            OR (n = entries AND (version IS DISTINCT FROM entry_count
                                 OR balance_after IS DISTINCT FROM balance))",
    ),
    (
        "every_command_has_a_result",
        "SELECT json_build_object('command_id', id) FROM commands WHERE result IS NULL",
    ),
    (
        // Kept by the audit rather than by foreign keys (migrations/0013_lean_ledger.sql).
        "records_name_stored_commands",
        "SELECT json_build_object('journal_id', j.id, 'command_id', j.command_id)
         FROM journal j WHERE j.command_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.id = j.command_id)
         UNION ALL
         SELECT json_build_object('order_id', o.id, 'command_id', o.command_id)
         FROM wallet_orders o WHERE o.command_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.id = o.command_id)
         UNION ALL
         SELECT json_build_object('cash_id', h.id, 'decision_command_id', h.decision_command_id)
         FROM cashes h WHERE h.decision_command_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.id = h.decision_command_id)",
    ),
    (
        "succeeded_orders_have_entries",
        "SELECT json_build_object('order_id', o.id, 'owner_id', o.owner_id, 'amount', o.amount)
         FROM wallet_orders o
         WHERE o.state = 1 AND NOT EXISTS (
             SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
             WHERE e.journal_id = o.journal_id AND a.kind IN ('wallet', 'merchant')
               AND a.user_id = o.owner_id AND e.amount = o.type * o.amount)",
    ),
    (
        // Money leaves a wallet for pending_payouts (with the money at Ping++,
        // ewallet_withdrawals) with its cash request and leaves it when the request's order is
        // final (approved by hand, paid out by a Ping++ withdrawal, rejected or returned), so
        // the two hold exactly the open requests.
        "pending_payouts_match_open_cashes",
        "SELECT json_build_object('balance', a.sum, 'open_cashes', coalesce(o.sum, 0))
         FROM (SELECT sum(balance) AS sum FROM accounts
               WHERE name IN ('pending_payouts', 'ewallet_withdrawals')) a,
              (SELECT sum(c.value) AS sum FROM cashes c
               JOIN wallet_orders w ON w.id = c.order_id WHERE w.state = 0) o
         WHERE a.sum <> coalesce(o.sum, 0)",
    ),
    (
        // A split order's payment waits in allocations_pending until allocations give it out
        // or the completion settles it; refunds take from it first.
        "allocations_pending_match_split_orders",
        "SELECT json_build_object('balance', a.balance, 'split_orders', coalesce(s.sum, 0))
         FROM accounts a,
              (SELECT sum(o.amount
                          - coalesce((SELECT sum(r.from_held) FROM order_refunds r
                                      WHERE r.order_id = p.order_id AND r.status = 'succeeded'), 0)
                          - coalesce((SELECT sum(CASE l.kind WHEN 'allocation_refund' THEN -l.amount
                                                             ELSE l.amount END)
                                      FROM allocations l
                                      WHERE l.order_id = p.order_id AND l.status = 'succeeded'), 0))
                          AS sum
               FROM pingpp_orders p JOIN wallet_orders o ON o.id = p.order_id
               WHERE p.allocation AND o.state = 1) s
         WHERE a.name = 'allocations_pending' AND a.balance <> coalesce(s.sum, 0)",
    ),
    (
        // A user's held account holds exactly their open holds.
        "held_matches_open_holds",
        "SELECT json_build_object('user_id', coalesce(a.user_id, h.user_id),
                'held', coalesce(a.balance, 0), 'open_holds', coalesce(h.sum, 0))
         FROM (SELECT user_id, balance FROM accounts WHERE kind = 'held') a
         FULL JOIN (SELECT user_id, sum(amount) AS sum FROM holds WHERE status = 'held'
                    GROUP BY user_id) h ON h.user_id = a.user_id
         WHERE coalesce(a.balance, 0) <> coalesce(h.sum, 0)",
    ),
    (
        // Money leaves a wallet for pending_refunds when a refund of a recharge is recorded
        // and leaves it when the refund ends (to pingpp_clearing, or back), so it holds
        // exactly the pending refunds.
        "pending_refunds_match_open_refunds",
        "SELECT json_build_object('balance', a.balance, 'pending_refunds', coalesce(r.sum, 0))
         FROM accounts a,
              (SELECT sum(amount) AS sum FROM recharge_refunds WHERE status = 'pending') r
         WHERE a.name = 'pending_refunds' AND a.balance <> coalesce(r.sum, 0)",
    ),
    (
        // A sender's packets account holds exactly the unclaimed shares of their open red
        // packets (finished ones have none left, expired ones gave theirs back).
        "packets_match_open_redpackets",
        "SELECT json_build_object('user_id', coalesce(a.user_id, o.user_id),
                'packets', coalesce(a.balance, 0), 'unclaimed_shares', coalesce(o.sum, 0))
         FROM (SELECT user_id, balance FROM accounts WHERE kind = 'packets') a
         FULL JOIN (SELECT p.user_id, sum(s.amount) AS sum
                    FROM redpackets p
                    JOIN redpacket_shares s ON s.redpacket_id = p.id AND s.claimer IS NULL
                    WHERE p.status = 'open' GROUP BY p.user_id) o ON o.user_id = a.user_id
         WHERE coalesce(a.balance, 0) <> coalesce(o.sum, 0)",
    ),
    (
        // A red packet's shares are `count` rows summing to its total, and the claimed ones
        // are the first `claimed`, summing to `claimed_amount`.
        "redpackets_match_their_shares",
        "SELECT json_build_object('redpacket_id', p.id, 'total', p.total, 'count', p.count,
                'claimed', p.claimed, 'claimed_amount', p.claimed_amount,
                'shares', coalesce(s.n, 0), 'shares_sum', coalesce(s.sum, 0),
                'claimed_shares', coalesce(s.claimed, 0),
                'claimed_sum', coalesce(s.claimed_sum, 0), 'last_claimed', s.last_claimed)
         FROM redpackets p
         LEFT JOIN (SELECT redpacket_id, count(*) AS n, sum(amount) AS sum,
                           count(claimer) AS claimed,
                           sum(amount) FILTER (WHERE claimer IS NOT NULL) AS claimed_sum,
                           max(number) FILTER (WHERE claimer IS NOT NULL) AS last_claimed
                    FROM redpacket_shares GROUP BY redpacket_id) s ON s.redpacket_id = p.id
         WHERE coalesce(s.n, 0) <> p.count OR coalesce(s.sum, 0) <> p.total
            OR coalesce(s.claimed, 0) <> p.claimed
            OR coalesce(s.claimed_sum, 0) <> p.claimed_amount
            OR coalesce(s.last_claimed, 0) <> p.claimed",
    ),
];

/// Checks of records against accounts that read every such account: run by the full check
/// only (`pluspay audit`, `metrics.ledger_full_check_secs`), not by the periodic incremental
/// one, whose cost must follow the new journals.
const FULL_ONLY_CHECKS: &[&str] = &[
    // Reads and sorts every entry of every user's account; the incremental check sees at
    // least that each new entry has a version (`entries_are_versioned`).
    "versions_follow_entries",
    "held_matches_open_holds",
    "packets_match_open_redpackets",
    "redpackets_match_their_shares",
];

const EXAMPLES: usize = 5;

/// Keeps the report as the last check of its scope, for the operator console.
pub async fn record(
    client: &Client,
    report: &Report,
    took: std::time::Duration,
) -> Result<(), tokio_postgres::Error> {
    let json = serde_json::to_value(report).expect("a report serializes");
    client
        .execute(
            "INSERT INTO ledger_checks (scope, checked_at, ok, millis, report)
             VALUES ($1, now(), $2, $3, $4)
             ON CONFLICT (scope) DO UPDATE SET checked_at = now(), ok = $2, millis = $3,
                 report = $4",
            &[
                &report.scope,
                &report.ok,
                &(took.as_secs_f64() * 1e3),
                &json,
            ],
        )
        .await?;
    Ok(())
}

/// Runs every check over every row in one repeatable-read snapshot, so concurrent traffic
/// can't produce a false alarm between two queries.
pub async fn run(client: &mut Client) -> Result<Report, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let checks = full_checks(&tx).await?;
    tx.commit().await?;
    Ok(Report::of("full", checks))
}

/// Makes the next incremental check the full one (and, failing, the one after it, and so on).
const NOTE_FULL_CHECK: &str = "INSERT INTO audit_suspects (everything) VALUES (true)";

/// The full check for the worker's periodic task: a failure is also noted, so that the
/// incremental checks after it are full ones and keep reporting it until it is repaired (the
/// full check sees what the incremental one can't).
pub async fn run_and_note(client: &mut Client) -> Result<Report, EngineError> {
    let report = run(client).await?;
    if !report.ok {
        client.execute(NOTE_FULL_CHECK, &[]).await?;
    }
    Ok(report)
}

async fn full_checks(tx: &Transaction<'_>) -> Result<Vec<Check>, tokio_postgres::Error> {
    let mut checks = Vec::new();
    for (name, sql) in CHECKS {
        let rows = tx.query(*sql, &[]).await?;
        checks.push(Check::of(name, &rows, 0));
    }
    Ok(checks)
}

impl Check {
    /// One row per violation, the JSON showing it in column `example`.
    fn of<'r>(
        name: &'static str,
        rows: impl IntoIterator<Item = &'r tokio_postgres::Row>,
        example: usize,
    ) -> Check {
        let mut violations = 0;
        let mut examples = Vec::new();
        for row in rows {
            violations += 1;
            if examples.len() < EXAMPLES {
                examples.push(row.get(example));
            }
        }
        Check {
            name,
            ok: violations == 0,
            violations,
            examples,
        }
    }
}

impl Report {
    fn of(scope: &'static str, checks: Vec<Check>) -> Report {
        Report {
            scope,
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

// ---------------------------------------------------------------- the incremental check

/// How long the check waits for the transactions that hold journal ids it is about to cover,
/// and for concurrent checks. A posting lasts milliseconds; one open this long is stuck, and
/// the check tries again at its next period.
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The checks over every row that the incremental check runs on the rows changed since its
/// point instead; the others are cheap at any size and run in full every time.
const GLOBAL_CHECKS: &[&str] = &[
    "pending_payouts_match_open_cashes",
    "allocations_pending_match_split_orders",
    "pending_refunds_match_open_refunds",
];

/// The periodic check: verifies only what changed since the last verified point (in
/// `audit_point` and `audit_accounts`) and moves the point, so that its cost follows the new
/// journals, not the history. Runs the full check instead (scope `full`) when there is no
/// point yet, when the triggers saw a table truncated or a money command's stored result
/// changed, and after a full check failed. What fails is noted in `audit_suspects`, so the next
/// checks report it again until it is repaired.
///
/// Not covered between full checks: changes made with the triggers disabled (a superuser's
/// `session_replication_role = replica`, say), and an order's state changed without a new
/// journal.
pub async fn run_incremental(client: &mut Client) -> Result<Report, EngineError> {
    let started = Instant::now();
    loop {
        match incremental_attempt(client).await {
            Err(e) if moved_by_another(&e) && started.elapsed() < SETTLE_TIMEOUT => {
                // The other check has just moved the point: the next attempt is a short one.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

/// Checking now could miss what those transactions post; the next check catches up.
pub(crate) fn unsettled() -> EngineError {
    EngineError::Broken(format!(
        "transactions holding journal ids are still open after {} s; \
         the ledger is checked again next time",
        SETTLE_TIMEOUT.as_secs()
    ))
}

/// A row this transaction locks was changed after its snapshot: for the incremental check,
/// another check moved the point (start over from the new point); for the publisher of
/// `wallet.changed`, another publisher moved the cursor.
pub fn moved_by_another(e: &EngineError) -> bool {
    matches!(e, EngineError::Database { source, .. }
        if source.code() == Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE))
}

async fn incremental_attempt(client: &mut Client) -> Result<Report, EngineError> {
    let (upto, tx) = settled_snapshot(client).await?;
    // Waits for a concurrent check to end; the point has then moved since this snapshot, and
    // the lock fails with a serialization failure, which starts this check over.
    let point: Option<i64> = tx
        .query_opt("SELECT journal_id FROM audit_point FOR UPDATE", &[])
        .await?
        .map(|r| r.get(0));
    let suspects = tx
        .query(
            "SELECT id, account_id, journal_id, everything FROM audit_suspects",
            &[],
        )
        .await?;
    let suspect_ids: Vec<i64> = suspects.iter().map(|r| r.get("id")).collect();
    let everything = suspects.iter().any(|r| r.get::<_, bool>("everything"));
    // A concurrent check that settled a later point committed before this snapshot: everything
    // up to its point is settled here too.
    let upto = point.map_or(upto, |from| upto.max(from));
    let report = match point {
        Some(from) if !everything => {
            let accounts: Vec<i64> = suspects
                .iter()
                .filter_map(|r| r.get::<_, Option<i64>>("account_id"))
                .collect();
            let journals: Vec<i64> = suspects
                .iter()
                .filter_map(|r| r.get::<_, Option<i64>>("journal_id"))
                .collect();
            incremental_checks(&tx, from, upto, &accounts, &journals).await?
        }
        _ => establish(&tx, upto).await?,
    };
    tx.execute(
        "DELETE FROM audit_suspects WHERE id = ANY($1)",
        &[&suspect_ids],
    )
    .await?;
    if !report.ok && report.scope == "full" {
        // Until it is repaired, every check is the full one.
        tx.execute(NOTE_FULL_CHECK, &[]).await?;
    }
    tx.execute(
        "INSERT INTO audit_point (journal_id) VALUES ($1)
         ON CONFLICT (only_row) DO UPDATE
             SET journal_id = excluded.journal_id, verified_at = now()",
        &[&upto],
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// A repeatable-read transaction whose snapshot holds every journal up to the returned id that
/// will ever commit (and their entries, posted in the same statement): no journal at or below
/// it can commit later. What reads the ledger in journal order and must miss nothing (the
/// incremental check, the publisher of `wallet.changed`) reads up to that id in it. Waits for
/// the transactions that may hold such a journal, at most `SETTLE_TIMEOUT`.
pub async fn settled_snapshot(client: &mut Client) -> Result<(i64, Transaction<'_>), EngineError> {
    let started = Instant::now();
    let upto = loop {
        let (upto, waited_for) = settle_point(client).await?;
        // A transaction's commit is recorded before it leaves the list of running ones that
        // snapshots are made of: the ones waited for may still look running to a snapshot taken
        // now, which then would not see their journals. Once one snapshot sees them all, every
        // later one does, the transaction's below included.
        let all_seen: bool = client
            .query_one(
                "SELECT NOT EXISTS (
                     SELECT 1 FROM unnest($1::text[]) AS x
                     WHERE NOT pg_visible_in_snapshot(x::xid8, pg_current_snapshot()))",
                &[&waited_for],
            )
            .await?
            .get(0);
        if all_seen {
            break upto;
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            return Err(unsettled());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    Ok((upto, tx))
}

/// The highest journal id handed out so far, and the transactions that may hold one of them,
/// once none of those is running any more: all journals up to that id (and their entries,
/// posted in the same statement) are then committed or gone. A transaction holds a journal id
/// only after it has its own transaction id (`post_journals` makes sure), so those that may
/// hold one got theirs before this check takes one of its own. The snapshot after that lists
/// every one of them still running (a snapshot leaves out running transactions newer than the
/// newest finished one, hence the check's own, finished, transaction id).
pub(crate) async fn settle_point(client: &Client) -> Result<(i64, Vec<String>), EngineError> {
    let upto: i64 = client
        .query_one(
            "SELECT coalesce(pg_sequence_last_value(
                 pg_get_serial_sequence('journal', 'id')::regclass), 0)",
            &[],
        )
        .await?
        .get(0);
    let own: String = client
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await?
        .get(0);
    let running: Vec<String> = client
        .query_one(
            "SELECT coalesce(array_agg(x::text), '{}')
             FROM pg_snapshot_xip(pg_current_snapshot()) AS x WHERE x < $1::text::xid8",
            &[&own],
        )
        .await?
        .get(0);
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let still_running: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM unnest($1::text[]) AS x
                                WHERE pg_xact_status(x::xid8) = 'in progress')",
                &[&running],
            )
            .await?
            .get(0);
        if !still_running {
            return Ok((upto, running));
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            return Err(unsettled());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The first check, or one after a table was truncated: every row is checked, and the point
/// starts at `upto`.
async fn establish(tx: &Transaction<'_>, upto: i64) -> Result<Report, EngineError> {
    let checks = full_checks(tx).await?;
    tx.batch_execute("TRUNCATE audit_accounts").await?;
    tx.execute(
        "INSERT INTO audit_accounts (account_id, balance, entry_count)
         SELECT account_id, sum(amount), count(*) FROM ledger_entries
         WHERE journal_id <= $1 GROUP BY account_id",
        &[&upto],
    )
    .await?;
    Ok(Report::of("full", checks))
}

/// The incremental check in one statement (one round trip, one plan, no temporary tables):
/// `w` is each account moved since the point (by a journal after $1, up to $2 or committed
/// since) and each suspect ($3), with what its row must say: the verified figures plus the new
/// entries, or for a suspect all its entries counted again; `e` the entries of the journals
/// to check (after $1 up to $2, and the suspects $4). `saved` moves the verified figures to
/// $2. Each row returned is one violation: its check, what it shows, and the account or journal
/// to keep suspect. The checks have the names and meaning of CHECKS, on those rows.
const INCREMENTAL: &str = "
WITH moved AS (
    SELECT account_id, sum(amount)::bigint AS d_all, count(*) AS n_all,
           coalesce(sum(amount) FILTER (WHERE journal_id <= $2), 0)::bigint AS d_win,
           count(*) FILTER (WHERE journal_id <= $2) AS n_win
    FROM ledger_entries
    WHERE journal_id > $1 AND account_id <> ALL ($3::bigint[])
    GROUP BY account_id
), recounted AS (
    SELECT s.account_id, coalesce(sum(e.amount), 0)::bigint AS d_all, count(e.amount) AS n_all,
           coalesce(sum(e.amount) FILTER (WHERE e.journal_id <= $2), 0)::bigint AS d_win,
           count(e.amount) FILTER (WHERE e.journal_id <= $2) AS n_win
    FROM (SELECT DISTINCT unnest($3::bigint[]) AS account_id) s
    LEFT JOIN ledger_entries e ON e.account_id = s.account_id
    GROUP BY s.account_id
), w AS MATERIALIZED (
    SELECT a.id AS account_id, a.kind, a.user_id, a.name, a.unit, a.balance, a.entry_count,
           a.total_income, a.total_expenses, a.may_go_negative, false AS suspect,
           coalesce(v.balance, 0) + m.d_all AS expected_balance,
           coalesce(v.entry_count, 0) + m.n_all AS expected_count,
           coalesce(v.balance, 0) + m.d_win AS verified_balance,
           coalesce(v.entry_count, 0) + m.n_win AS verified_count, m.n_win
    FROM moved m JOIN accounts a ON a.id = m.account_id
    LEFT JOIN audit_accounts v ON v.account_id = m.account_id
    UNION ALL
    SELECT a.id, a.kind, a.user_id, a.name, a.unit, a.balance, a.entry_count,
           a.total_income, a.total_expenses, a.may_go_negative, true,
           r.d_all, r.n_all, r.d_win, r.n_win, r.n_win
    FROM recounted r JOIN accounts a ON a.id = r.account_id
), e AS MATERIALIZED (
    SELECT x.journal_id, x.account_id, x.amount, x.version, w.unit, w.kind, w.user_id
    FROM ledger_entries x JOIN w ON w.account_id = x.account_id
    WHERE x.journal_id > $1 AND x.journal_id <= $2
    UNION ALL
    SELECT x.journal_id, x.account_id, x.amount, x.version, a.unit, a.kind, a.user_id
    FROM ledger_entries x JOIN accounts a ON a.id = x.account_id
    WHERE x.journal_id = ANY ($4::bigint[]) AND NOT (x.journal_id > $1 AND x.journal_id <= $2)
), journals AS (
    SELECT j.id, j.command_id, c.id IS NOT NULL AS stored, c.result IS NOT NULL AS has_result
    FROM journal j LEFT JOIN commands c ON c.id = j.command_id
    WHERE ((j.id > $1 AND j.id <= $2) OR j.id = ANY ($4::bigint[])) AND j.command_id IS NOT NULL
), saved AS (
    INSERT INTO audit_accounts (account_id, balance, entry_count)
    SELECT account_id, verified_balance, verified_count FROM w WHERE n_win > 0 OR suspect
    ON CONFLICT (account_id) DO UPDATE
        SET balance = excluded.balance, entry_count = excluded.entry_count
)
SELECT 'balance_equals_entries' AS check_name,
       json_build_object('account_id', account_id, 'kind', kind, 'user_id', user_id,
           'name', name, 'balance', balance, 'entries', expected_balance,
           'entry_count', entry_count, 'entries_counted', expected_count) AS example,
       account_id, NULL::bigint AS journal_id
FROM w WHERE balance <> expected_balance OR entry_count <> expected_count
UNION ALL
SELECT 'totals_match_balance',
       json_build_object('account_id', account_id, 'balance', balance,
           'total_income', total_income, 'total_expenses', total_expenses),
       account_id, NULL
FROM w WHERE balance <> total_income - total_expenses
UNION ALL
SELECT 'no_negative_balance',
       json_build_object('account_id', account_id, 'kind', kind, 'user_id', user_id,
           'balance', balance),
       account_id, NULL
FROM w WHERE balance < 0 AND NOT may_go_negative
UNION ALL
SELECT 'entries_sum_to_zero', json_build_object('unit', unit, 'sum', sum(amount)), NULL, NULL
FROM e GROUP BY unit HAVING sum(amount) <> 0
UNION ALL
SELECT 'each_journal_balances',
       json_build_object('journal_id', journal_id, 'unit', unit, 'sum', sum(amount)),
       NULL, journal_id
FROM e GROUP BY journal_id, unit HAVING sum(amount) <> 0
UNION ALL
SELECT 'entries_are_versioned',
       json_build_object('journal_id', journal_id, 'account_id', account_id, 'kind', kind,
           'user_id', user_id, 'version', version),
       account_id, journal_id
FROM e WHERE (kind = 'system') = (version IS NOT NULL)
UNION ALL
SELECT 'every_command_has_a_result', json_build_object('command_id', command_id), NULL, id
FROM journals WHERE stored AND NOT has_result
UNION ALL
SELECT 'records_name_stored_commands',
       json_build_object('journal_id', id, 'command_id', command_id), NULL, id
FROM journals WHERE NOT stored
UNION ALL
SELECT 'records_name_stored_commands',
       json_build_object('order_id', o.id, 'command_id', o.command_id), NULL, o.journal_id
FROM wallet_orders o
WHERE ((o.journal_id > $1 AND o.journal_id <= $2) OR o.journal_id = ANY ($4::bigint[]))
  AND o.command_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.id = o.command_id)
UNION ALL
SELECT 'succeeded_orders_have_entries',
       json_build_object('order_id', o.id, 'owner_id', o.owner_id, 'amount', o.amount),
       NULL, o.journal_id
FROM wallet_orders o
WHERE ((o.journal_id > $1 AND o.journal_id <= $2) OR o.journal_id = ANY ($4::bigint[]))
  AND o.state = 1 AND NOT EXISTS (
      SELECT 1 FROM e
      WHERE e.journal_id = o.journal_id AND e.kind IN ('wallet', 'merchant')
        AND e.user_id = o.owner_id AND e.amount = o.type * o.amount)";

async fn incremental_checks(
    tx: &Transaction<'_>,
    from: i64,
    upto: i64,
    suspect_accounts: &[i64],
    suspect_journals: &[i64],
) -> Result<Report, EngineError> {
    let violations = tx
        .query(
            INCREMENTAL,
            &[&from, &upto, &suspect_accounts, &suspect_journals],
        )
        .await?;
    let mut checks = Vec::new();
    for (name, sql) in CHECKS {
        if FULL_ONLY_CHECKS.contains(name) {
            continue;
        }
        if GLOBAL_CHECKS.contains(name) {
            let rows = tx.query(*sql, &[]).await?;
            checks.push(Check::of(name, &rows, 0));
            continue;
        }
        let found = violations
            .iter()
            .filter(|r| r.get::<_, &str>("check_name") == *name);
        // The columns of INCREMENTAL: check_name, example, account_id, journal_id.
        checks.push(Check::of(name, found, 1));
    }
    let failed_accounts: Vec<i64> = violations
        .iter()
        .filter_map(|r| r.get::<_, Option<i64>>("account_id"))
        .collect();
    let failed_journals: Vec<i64> = violations
        .iter()
        .filter_map(|r| r.get::<_, Option<i64>>("journal_id"))
        .collect();
    if !failed_accounts.is_empty() || !failed_journals.is_empty() {
        tx.execute(
            "INSERT INTO audit_suspects (account_id) SELECT DISTINCT unnest($1::bigint[])",
            &[&failed_accounts],
        )
        .await?;
        tx.execute(
            "INSERT INTO audit_suspects (account_id, journal_id)
                 SELECT DISTINCT account_id, journal_id FROM ledger_entries
                 WHERE journal_id = ANY ($1::bigint[])",
            &[&failed_journals],
        )
        .await?;
    }
    Ok(Report::of("incremental", checks))
}
