//! The accounts' hash chains (migrations/0021_hash_chains.sql): `pluspay verify` recomputes
//! them, and the daily Merkle roots over their heads (`ledger_roots`, `wallet.proof`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::{Client, Row, Transaction};

use crate::db::audit::{self, Check, Report};
use crate::domain::merkle::{self, Hash, Head};
use crate::error::EngineError;

/// The checks of `pluspay verify`, in the order reported.
const CHECKS: [&str; 4] = [
    // Each entry's hash is the hash of its figures and of the entry before it
    // (`ledger_entry_hash`): an entry changed, removed or moved breaks it from there.
    "chains_unbroken",
    // An account's versions are 1, 2, ... its entry_count, none missing.
    "versions_contiguous",
    // Each entry's balance_after is the running sum of the account's entries, the last one its
    // balance.
    "balances_follow_entries",
    // The account's head_hash is its last entry's hash (what the daily root covers).
    "heads_match_last_entries",
];

/// Per account checked: where its chain, versions and balances first go wrong (NULL: they
/// don't), whether its head disagrees, and its last entry checked. `x` is the entries to
/// check in version order with `prev` (the hash before each, NULL for none), `n` (the version
/// it should have) and `running` (the balance it should have after it); `scope` the accounts
/// to check with the version each starts after; `at_head` (over `s`, the scope's row, and `p`,
/// its entries checked) whether the last entry checked is the account's last one, whose hash
/// and balance the account row must then show.
fn per_account(x: &str, scope: &str, at_head: &str) -> String {
    format!(
        "WITH x AS ({x}), per AS (
            SELECT account_id,
                   min(version) FILTER (WHERE hash IS DISTINCT FROM ledger_entry_hash(
                       prev, account_id, version, amount, balance_after, journal_id)) AS bad_hash,
                   min(n) FILTER (WHERE version <> n) AS bad_version,
                   min(version) FILTER (WHERE balance_after <> running) AS bad_balance,
                   max(n) AS last_n,
                   (array_agg(version ORDER BY version DESC))[1] AS last_version,
                   (array_agg(hash ORDER BY version DESC))[1] AS last_hash,
                   (array_agg(balance_after ORDER BY version DESC))[1] AS last_balance
            FROM x GROUP BY account_id
         ), checked AS (
            SELECT a.id AS account_id, a.kind, a.user_id, a.entry_count, a.balance, a.head_hash,
                   {at_head} AS at_head, s.start_version, p.bad_hash, p.bad_version, p.bad_balance,
                   coalesce(p.last_n, s.start_version) AS last_n, p.last_version, p.last_hash,
                   p.last_balance
            FROM ({scope}) s JOIN accounts a ON a.id = s.account_id
            LEFT JOIN per p ON p.account_id = s.account_id
         )
         SELECT account_id, kind, user_id, bad_hash,
                CASE WHEN bad_version IS NOT NULL THEN bad_version
                     WHEN at_head AND last_n <> entry_count THEN least(last_n, entry_count) + 1
                END AS bad_version,
                CASE WHEN bad_balance IS NOT NULL THEN bad_balance
                     WHEN at_head AND last_n = entry_count AND last_n > start_version
                          AND last_balance <> balance THEN last_version
                     WHEN at_head AND entry_count = 0 AND balance <> 0 THEN 0
                END AS bad_balance,
                at_head AND (last_n <> entry_count OR (last_n > start_version
                             AND head_hash IS DISTINCT FROM last_hash)
                             OR (entry_count = 0 AND head_hash IS NOT NULL)) AS bad_head,
                last_version, last_balance, last_hash, entry_count
         FROM checked"
    )
}

/// Every versioned entry of every user's account, and every user's account.
fn full_sql() -> String {
    let x = "SELECT e.account_id, e.version, e.journal_id, e.amount, e.balance_after, e.hash,
                    lag(e.hash) OVER w AS prev, row_number() OVER w AS n,
                    sum(e.amount) OVER w AS running
             FROM ledger_entries e WHERE e.version IS NOT NULL
             WINDOW w AS (PARTITION BY e.account_id ORDER BY e.version
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)";
    let scope = "SELECT id AS account_id, 0::bigint AS start_version
                 FROM accounts WHERE kind <> 'system'";
    format!(
        "SELECT * FROM ({}) r
         WHERE bad_hash IS NOT NULL OR bad_version IS NOT NULL OR bad_balance IS NOT NULL
            OR bad_head",
        per_account(x, scope, "true")
    )
}

/// The entries after each account's last verified one (`chain_accounts`) up to journal $2,
/// of the accounts moved by a journal after $1 up to $2 and of those found broken before.
fn incremental_sql() -> String {
    let moved = "SELECT DISTINCT account_id FROM ledger_entries
                 WHERE journal_id > $1 AND journal_id <= $2 AND version IS NOT NULL
                 UNION
                 SELECT account_id FROM chain_accounts WHERE broken";
    let x = format!(
        "SELECT e.account_id, e.version, e.journal_id, e.amount, e.balance_after, e.hash,
                CASE WHEN row_number() OVER w = 1 THEN c.hash ELSE lag(e.hash) OVER w END AS prev,
                coalesce(c.version, 0) + row_number() OVER w AS n,
                coalesce(c.balance_after, 0) + sum(e.amount) OVER w AS running
         FROM ({moved}) m JOIN ledger_entries e ON e.account_id = m.account_id
         LEFT JOIN chain_accounts c ON c.account_id = m.account_id
         WHERE e.version > coalesce(c.version, 0) AND e.journal_id <= $2
         WINDOW w AS (PARTITION BY e.account_id ORDER BY e.version
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    );
    let scope = format!(
        "SELECT m.account_id, coalesce(c.version, 0) AS start_version
         FROM ({moved}) m LEFT JOIN chain_accounts c ON c.account_id = m.account_id"
    );
    // Nothing after the last entry checked: entries of journals after $2 (perhaps still in
    // flight when the point was settled) are the next run's, with the head check.
    let at_head = "NOT EXISTS (SELECT 1 FROM ledger_entries l
                               WHERE l.account_id = s.account_id
                                 AND l.version > coalesce(p.last_version, s.start_version))";
    per_account(&x, &scope, at_head)
}

/// One row of `per_account`: the failures it shows, and whether it has any.
fn failures(row: &Row) -> Vec<(&'static str, Option<i64>)> {
    let mut found = Vec::new();
    for (name, column) in [
        ("chains_unbroken", "bad_hash"),
        ("versions_contiguous", "bad_version"),
        ("balances_follow_entries", "bad_balance"),
    ] {
        if let Some(version) = row.get::<_, Option<i64>>(column) {
            found.push((name, Some(version)));
        }
    }
    if row.get::<_, Option<bool>>("bad_head").unwrap_or(false) {
        found.push(("heads_match_last_entries", Some(row.get("entry_count"))));
    }
    found
}

fn report(scope: &'static str, rows: &[Row]) -> Report {
    let mut checks: Vec<Check> = CHECKS
        .iter()
        .map(|name| Check {
            name,
            ok: true,
            violations: 0,
            examples: Vec::new(),
        })
        .collect();
    for row in rows {
        for (name, version) in failures(row) {
            let check = checks
                .iter_mut()
                .find(|c| c.name == name)
                .expect("a named check");
            check.ok = false;
            check.violations += 1;
            if check.examples.len() < 5 {
                check.examples.push(json!({
                    "account_id": row.get::<_, i64>("account_id"),
                    "kind": row.get::<_, String>("kind"),
                    "user_id": row.get::<_, Option<i64>>("user_id"),
                    "first_bad_version": version,
                }));
            }
        }
    }
    Report {
        scope,
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// `pluspay verify`: every chain recomputed, in one repeatable-read snapshot.
pub async fn verify(client: &mut Client) -> Result<Report, EngineError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let rows = tx.query(&full_sql(), &[]).await?;
    tx.commit().await?;
    Ok(report("full", &rows))
}

/// `pluspay verify --incremental`: each moved account's chain from its last verified entry
/// (`chain_accounts`) to the journals settled now (`audit::settled_snapshot`), and the point
/// moved there, so a run costs what was posted since the last one. The first run (or one
/// after a crash emptied the unlogged tables) is the full verification (scope `full`), which
/// starts the point. An account found broken is checked again, from its last good entry, by
/// every run until it is repaired. Entries changed before the point are the full
/// verification's to find.
pub async fn verify_incremental(client: &mut Client) -> Result<Report, EngineError> {
    let started = Instant::now();
    loop {
        match incremental_attempt(client).await {
            Err(e) if audit::moved_by_another(&e) && started.elapsed() < audit::SETTLE_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

async fn incremental_attempt(client: &mut Client) -> Result<Report, EngineError> {
    let (upto, tx) = audit::settled_snapshot(client).await?;
    // A concurrent run that moved the point makes this lock fail (serialization), and this
    // run starts over from the new point.
    let point: Option<i64> = tx
        .query_opt("SELECT journal_id FROM chain_point FOR UPDATE", &[])
        .await?
        .map(|r| r.get(0));
    let report = match point {
        Some(from) => {
            let upto = upto.max(from);
            let rows = tx.query(&incremental_sql(), &[&from, &upto]).await?;
            save_incremental(&tx, &rows).await?;
            report("incremental", &rows)
        }
        None => {
            let rows = tx.query(&full_sql(), &[]).await?;
            establish(&tx, &rows).await?;
            report("full", &rows)
        }
    };
    tx.execute(
        "INSERT INTO chain_point (journal_id) VALUES ($1)
         ON CONFLICT (only_row) DO UPDATE
             SET journal_id = greatest(chain_point.journal_id, excluded.journal_id),
                 verified_at = now()",
        &[&upto],
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// After a full verification: every account that passed is verified up to its head (its row
/// says where that is, as the check found), every one that failed from its start.
async fn establish(tx: &Transaction<'_>, failed: &[Row]) -> Result<(), EngineError> {
    let broken: Vec<i64> = failed.iter().map(|r| r.get("account_id")).collect();
    tx.batch_execute("TRUNCATE chain_accounts").await?;
    tx.execute(
        "INSERT INTO chain_accounts (account_id, version, balance_after, hash, broken)
         SELECT id, CASE WHEN b THEN 0 ELSE entry_count END,
                CASE WHEN b THEN 0 ELSE balance END, CASE WHEN b THEN NULL ELSE head_hash END, b
         FROM (SELECT a.id, a.entry_count, a.balance, a.head_hash, a.id = ANY($1) AS b
               FROM accounts a WHERE a.kind <> 'system' AND a.entry_count > 0) s",
        &[&broken],
    )
    .await?;
    Ok(())
}

/// After an incremental run: each account checked without a failure is verified up to its
/// last entry checked; one with a failure keeps its last good point and is marked broken.
async fn save_incremental(tx: &Transaction<'_>, rows: &[Row]) -> Result<(), EngineError> {
    let (mut good, mut versions, mut balances, mut hashes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::<Vec<u8>>::new());
    let (mut bad, mut unchanged) = (Vec::new(), Vec::new());
    for row in rows {
        let account: i64 = row.get("account_id");
        if !failures(row).is_empty() {
            bad.push(account);
        } else if let Some(version) = row.get::<_, Option<i64>>("last_version") {
            good.push(account);
            versions.push(version);
            balances.push(row.get::<_, i64>("last_balance"));
            hashes.push(row.get("last_hash"));
        } else {
            // Broken before, nothing after its last good entry now: repaired.
            unchanged.push(account);
        }
    }
    tx.execute(
        "INSERT INTO chain_accounts (account_id, version, balance_after, hash)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[])
         ON CONFLICT (account_id) DO UPDATE SET version = excluded.version,
             balance_after = excluded.balance_after, hash = excluded.hash, broken = false",
        &[&good, &versions, &balances, &hashes],
    )
    .await?;
    tx.execute(
        "UPDATE chain_accounts SET broken = false WHERE account_id = ANY($1)",
        &[&unchanged],
    )
    .await?;
    tx.execute(
        "INSERT INTO chain_accounts (account_id, version, balance_after, hash, broken)
         SELECT unnest($1::bigint[]), 0, 0, NULL, true
         ON CONFLICT (account_id) DO UPDATE SET broken = true",
        &[&bad],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- the daily roots

/// A day's root, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRecorded {
    pub day: String,
    pub root: Hash,
    pub leaves: i64,
}

/// Nodes written per statement.
const NODES_PER_INSERT: usize = 10_000;

/// Records the root of `day` (`YYYY-MM-DD`, a day that ended) over every user account with an
/// entry, as the accounts stand in one repeatable-read snapshot, with every node of its tree
/// and the `ledger.root` event in the same transaction. Several workers at once: one takes the
/// advisory lock and records it, the others (and any later call) get `None`; the day's primary
/// key stands behind the lock.
pub async fn record_root(
    client: &mut deadpool_postgres::Client,
    day: &str,
) -> Result<Option<RootRecorded>, EngineError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let ours: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtext('ledger_roots'))",
            &[],
        )
        .await?
        .get(0);
    let recorded: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM ledger_roots WHERE day = $1::text::date)",
            &[&day],
        )
        .await?
        .get(0);
    if !ours || recorded {
        tx.rollback().await?;
        return Ok(None);
    }
    let accounts = tx
        .query(
            "SELECT id, user_id, kind, entry_count, balance, head_hash FROM accounts
             WHERE kind <> 'system' AND entry_count > 0 ORDER BY id",
            &[],
        )
        .await?;
    let mut leaves = Vec::with_capacity(accounts.len());
    for row in &accounts {
        let hash: Option<Vec<u8>> = row.get("head_hash");
        let hash: Hash = hash.and_then(|h| h.try_into().ok()).ok_or_else(|| {
            EngineError::Broken(format!(
                "account {} has entries but no head hash",
                row.get::<_, i64>("id")
            ))
        })?;
        leaves.push(merkle::leaf(&Head {
            user_id: row.get("user_id"),
            kind: row.get("kind"),
            version: row.get("entry_count"),
            balance: row.get("balance"),
            hash,
        }));
    }
    let levels = merkle::levels(leaves);
    let root = merkle::root(&levels);
    let count = accounts.len() as i64;
    let height = levels.len() as i32 - 1;
    let inserted = tx
        .execute(
            "INSERT INTO ledger_roots (day, root, leaves, height)
             VALUES ($1::text::date, $2, $3, $4) ON CONFLICT (day) DO NOTHING",
            &[&day, &root.as_slice(), &count, &height],
        )
        .await?;
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO ledger_root_nodes (day, level, position, hash, account_id, version)
             SELECT $1::text::date, $2, p, h, a, v
             FROM unnest($3::bigint[], $4::bytea[], $5::bigint[], $6::bigint[]) AS u(p, h, a, v)",
        )
        .await?;
    for (level, nodes) in levels.iter().enumerate() {
        let level = level as i16;
        for (chunk, nodes) in nodes.chunks(NODES_PER_INSERT).enumerate() {
            let first = chunk * NODES_PER_INSERT;
            let positions: Vec<i64> = (first..first + nodes.len()).map(|p| p as i64).collect();
            let hashes: Vec<&[u8]> = nodes.iter().map(|h| h.as_slice()).collect();
            let (accounts_of, versions): (Vec<Option<i64>>, Vec<Option<i64>>) = if level == 0 {
                accounts[first..first + nodes.len()]
                    .iter()
                    .map(|r| (Some(r.get("id")), Some(r.get("entry_count"))))
                    .unzip()
            } else {
                (vec![None; nodes.len()], vec![None; nodes.len()])
            };
            tx.execute(
                &insert,
                &[&day, &level, &positions, &hashes, &accounts_of, &versions],
            )
            .await?;
        }
    }
    let root_hex = hex::encode(root);
    crate::db::outbox::enqueue(
        &tx,
        "ledger.root",
        &json!({
            "type": "ledger.root",
            "event_id": format!("ledger.root.{day}"),
            "data": { "day": day, "root": root_hex, "leaves": count },
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(RootRecorded {
        day: day.to_owned(),
        root,
        leaves: count,
    }))
}

/// The last day that has ended (UTC), if its root is not recorded yet.
pub async fn day_to_record(
    client: &deadpool_postgres::Client,
) -> Result<Option<String>, EngineError> {
    Ok(client
        .query_opt(
            "SELECT d::text FROM (SELECT (now() AT TIME ZONE 'UTC')::date - 1 AS d) y
             WHERE NOT EXISTS (SELECT 1 FROM ledger_roots WHERE day = y.d)",
            &[],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Whether `day` (a valid `YYYY-MM-DD`) has ended, in UTC.
pub async fn day_ended(client: &deadpool_postgres::Client, day: &str) -> Result<bool, EngineError> {
    Ok(client
        .query_one(
            "SELECT $1::text::date < (now() AT TIME ZONE 'UTC')::date",
            &[&day],
        )
        .await?
        .get(0))
}

/// `wallet.proof`'s answer.
pub enum Proof {
    Found(Value),
    NoRoot,
    NotInRoot,
}

/// The path from the leaf of `user`'s wallet in `day`'s tree to its root: the root, what the
/// leaf covers (the wallet's entry of the version then), and the siblings, in three index
/// lookups.
pub async fn wallet_proof(
    tx: &deadpool_postgres::Transaction<'_>,
    user: i64,
    day: &str,
) -> Result<Proof, EngineError> {
    let Some(root) = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT root, leaves, height FROM ledger_roots WHERE day = $1::text::date",
            )
            .await?,
            &[&day],
        )
        .await?
    else {
        return Ok(Proof::NoRoot);
    };
    let Some(leaf) = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT n.position, n.version, a.user_id, a.kind, a.unit, e.balance_after, e.hash
                 FROM accounts a
                 JOIN ledger_root_nodes n ON n.account_id = a.id AND n.day = $1::text::date
                 JOIN ledger_entries e ON e.account_id = a.id AND e.version = n.version
                 WHERE a.kind = 'wallet' AND a.user_id = $2",
            )
            .await?,
            &[&day, &user],
        )
        .await?
    else {
        return Ok(Proof::NotInRoot);
    };
    let leaves: i64 = root.get("leaves");
    let height: i32 = root.get("height");
    let position: i64 = leaf.get("position");
    let siblings = merkle::sibling_positions(leaves as u64, height as u32, position as u64);
    let levels: Vec<i16> = siblings.iter().map(|s| s.0 as i16).collect();
    let positions: Vec<i64> = siblings.iter().map(|s| s.1 as i64).collect();
    let found = tx
        .query(
            &tx.prepare_cached(
                "SELECT n.level, n.hash FROM ledger_root_nodes n
                 JOIN unnest($2::smallint[], $3::bigint[]) AS s(l, p)
                   ON n.level = s.l AND n.position = s.p
                 WHERE n.day = $1::text::date ORDER BY n.level",
            )
            .await?,
            &[&day, &levels, &positions],
        )
        .await?;
    if found.len() != siblings.len() {
        return Err(EngineError::Broken(format!(
            "the tree of {day} lacks {} of its nodes",
            siblings.len() - found.len()
        )));
    }
    let path: Vec<Value> = siblings
        .iter()
        .zip(&found)
        .map(|((_, _, side), row)| {
            json!({
                "side": side.as_str(),
                "hash": hex::encode(row.get::<_, Vec<u8>>("hash")),
            })
        })
        .collect();
    let root_hash: Vec<u8> = root.get("root");
    let head_hash: Vec<u8> = leaf.get("hash");
    Ok(Proof::Found(json!({
        "root": hex::encode(root_hash),
        "head": {
            "user": leaf.get::<_, i64>("user_id"),
            "unit": leaf.get::<_, String>("unit"),
            "kind": leaf.get::<_, String>("kind"),
            "version": leaf.get::<_, i64>("version"),
            "balance": leaf.get::<_, i64>("balance_after"),
            "hash": hex::encode(head_hash),
        },
        "path": path,
    })))
}
