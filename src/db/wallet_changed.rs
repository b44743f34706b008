//! `wallet.changed`: the ledger's entries of users' wallets and points accounts, read in
//! journal order beyond the published cursor (migrations/0022_wallet_changed.sql), for the
//! worker to publish (src/worker/wallet_changed.rs).

use tokio_postgres::Transaction;

use super::ledger::change_json;
use crate::error::EngineError;

/// One version of a user's wallet or points account, as `wallet.changes` answers it.
#[derive(Debug, Clone)]
pub struct Change {
    pub journal_id: i64,
    pub account_id: i64,
    pub user: i64,
    pub unit: String,
    pub version: i64,
    /// `{user, unit, version, balance, amount, journal, order}` as JSON text, put into the
    /// event as it is: the publisher neither parses nor writes it again.
    pub data: String,
}

/// Locks the cursor for this transaction and reads it; `None` while another publisher holds
/// it (that one publishes this range; two at a time could interleave an account's versions).
pub async fn lock_cursor(tx: &Transaction<'_>) -> Result<Option<i64>, EngineError> {
    Ok(tx
        .query_opt(
            "SELECT journal_id FROM wallet_changed_cursor FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Where a chunk of at most `journals` journals after `after` ends, at most `upto`.
pub async fn chunk_end(
    tx: &Transaction<'_>,
    after: i64,
    upto: i64,
    journals: i64,
) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            "SELECT coalesce((SELECT id FROM journal WHERE id > $1::bigint AND id <= $2::bigint
                              ORDER BY id OFFSET $3::bigint - 1 LIMIT 1), $2::bigint)",
            &[&after, &upto, &journals],
        )
        .await?
        .get(0))
}

/// Every entry of a user's wallet or points account in the journals after `after` up to
/// `through`, in (journal, account) order: per account, version order.
pub async fn changes(
    tx: &Transaction<'_>,
    after: i64,
    through: i64,
) -> Result<Vec<Change>, EngineError> {
    let rows = tx
        .query(
            concat!(
                "SELECT e.journal_id, e.account_id, a.user_id, a.unit, e.version, (",
                change_json!(),
                ")::text AS data
                 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                 WHERE e.journal_id > $1 AND e.journal_id <= $2
                   AND a.kind IN ('wallet', 'points')
                 ORDER BY e.journal_id, e.account_id"
            ),
            &[&after, &through],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Change {
                journal_id: r.get(0),
                account_id: r.get(1),
                user: r.get::<_, Option<i64>>(2).ok_or_else(|| {
                    EngineError::Broken("a user's account without its user".into())
                })?,
                unit: r.get(3),
                version: r.get::<_, Option<i64>>(4).ok_or_else(|| {
                    EngineError::Broken("an entry of a user's account without a version".into())
                })?,
                data: r.get(5),
            })
        })
        .collect()
}

/// Moves the cursor: every entry up to `journal_id` is published.
pub async fn advance(tx: &Transaction<'_>, journal_id: i64) -> Result<(), EngineError> {
    tx.execute(
        "UPDATE wallet_changed_cursor SET journal_id = $1, updated_at = now()",
        &[&journal_id],
    )
    .await?;
    Ok(())
}

/// How far the cursor is behind: the journals handed out beyond it (an upper bound: ids of
/// rolled-back transactions count too), and the age in seconds of the oldest journal waiting
/// (0 when none).
pub async fn lag(client: &tokio_postgres::Client) -> Result<(i64, f64), EngineError> {
    let row = client
        .query_one(
            "SELECT greatest(coalesce(pg_sequence_last_value(
                        pg_get_serial_sequence('journal', 'id')::regclass), 0) - c.journal_id, 0),
                    coalesce((SELECT extract(epoch FROM now() - j.created_at)::float8
                              FROM journal j WHERE j.id > c.journal_id ORDER BY j.id LIMIT 1), 0)
             FROM wallet_changed_cursor c",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
