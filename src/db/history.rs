//! A user's accounts at a time and a wallet's statement (domain::history says what "at" means).
//!
//! Both find the last entry posted before a time by walking the account's versions down from
//! the newest (the `(account_id, version)` index), so they cost in proportion to what was
//! posted after that time, not to the whole history.

use deadpool_postgres::Transaction;
use serde_json::{json, Value};

use crate::domain::history::{Period, UtcTime, MAX_STATEMENT_ENTRIES};
use crate::error::EngineError;

/// The version and balance of account `$1` after the last entry posted before `$2` (text in
/// UTC), as a lateral subquery; no row before its first entry.
macro_rules! last_before {
    ($account:literal, $time:literal) => {
        concat!(
            "SELECT x.version, x.balance_after FROM ledger_entries x
             JOIN journal j ON j.id = x.journal_id
             WHERE x.account_id = ",
            $account,
            " AND j.created_at < (",
            $time,
            "::text::timestamp AT TIME ZONE 'UTC')
             ORDER BY x.version DESC LIMIT 1"
        )
    };
}

/// `wallet.get` with `at`: the wallet's balance and version, the points and the held money
/// as they stood at `at`.
pub async fn wallet_at(
    tx: &Transaction<'_>,
    user: i64,
    at: &UtcTime,
) -> Result<Value, EngineError> {
    let rows = tx
        .query(
            &tx.prepare_cached(concat!(
                "SELECT a.kind, e.version, e.balance_after FROM accounts a
                 CROSS JOIN LATERAL (",
                last_before!("a.id", "$2"),
                ") e
                 WHERE a.user_id = $1 AND a.kind IN ('wallet', 'points', 'held')"
            ))
            .await?,
            &[&user, &at.as_str()],
        )
        .await?;
    let (mut balance, mut version, mut points, mut held) = (0i64, 0i64, 0i64, 0i64);
    for row in rows {
        let figure: i64 = row.get("balance_after");
        match row.get::<_, &str>("kind") {
            "wallet" => (balance, version) = (figure, row.get("version")),
            "points" => points = figure,
            _ => held = figure,
        }
    }
    Ok(json!({
        "at": at.as_str(),
        "balance": balance,
        "held": held,
        "points": points,
        "version": version,
    }))
}

/// `wallet.statement`: the wallet's balance at the period's start, its entries in the
/// period, in version order, each with the user's wallet order of its journal in the wallet
/// API's shape (null for a journal without one), and its balance at the end. `None` when the
/// period holds more than `MAX_STATEMENT_ENTRIES` entries.
pub async fn statement(
    tx: &Transaction<'_>,
    user: i64,
    period: &Period,
) -> Result<Option<Value>, EngineError> {
    let bounds = tx
        .query_opt(
            &tx.prepare_cached(concat!(
                "SELECT a.id, coalesce(o.version, 0) AS opening_version,
                        coalesce(o.balance_after, 0) AS opening,
                        coalesce(c.version, 0) AS closing_version,
                        coalesce(c.balance_after, 0) AS closing
                 FROM accounts a
                 LEFT JOIN LATERAL (",
                last_before!("a.id", "$2"),
                ") o ON true
                 LEFT JOIN LATERAL (",
                last_before!("a.id", "$3"),
                ") c ON true
                 WHERE a.kind = 'wallet' AND a.user_id = $1"
            ))
            .await?,
            &[&user, &period.from.as_str(), &period.to.as_str()],
        )
        .await?;
    let Some(bounds) = bounds else {
        return Ok(Some(json!({"opening": 0, "entries": [], "closing": 0})));
    };
    let (first, last): (i64, i64) = (bounds.get("opening_version"), bounds.get("closing_version"));
    if last - first > MAX_STATEMENT_ENTRIES {
        return Ok(None);
    }
    let account: i64 = bounds.get("id");
    let entries: Value = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT coalesce(json_agg(json_build_object(
                     'version', e.version, 'balance', e.balance_after, 'amount', e.amount,
                     'journal', e.journal_id,
                     'time', to_char(j.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                     'order', (SELECT order_json(o) FROM wallet_orders o
                               WHERE o.journal_id = e.journal_id AND o.owner_id = $4
                               ORDER BY o.id LIMIT 1))
                     ORDER BY e.version), '[]'::json)
                 FROM ledger_entries e JOIN journal j ON j.id = e.journal_id
                 WHERE e.account_id = $1 AND e.version > $2 AND e.version <= $3",
            )
            .await?,
            &[&account, &first, &last, &user],
        )
        .await?
        .get(0);
    Ok(Some(json!({
        "opening": bounds.get::<_, i64>("opening"),
        "entries": entries,
        "closing": bounds.get::<_, i64>("closing"),
    })))
}
