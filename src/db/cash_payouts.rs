//! `cash_payouts`: a cash request's payouts through Ping++ withdrawals, at most one active per
//! cash record, with the exact withdrawal request and what Ping++ last said of it, so a crash
//! or a repeated approval continues the recorded withdrawal instead of making a second one.

use deadpool_postgres::Transaction;

use crate::error::EngineError;

/// A payout as recorded; the JSON columns as text, for the engine to read.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: i64,
    pub request: String,
    pub withdrawal: Option<String>,
    /// When the payout began (unix s).
    pub begun_at: i64,
}

/// The active payout of a cash record.
pub async fn active(tx: &Transaction<'_>, cash_id: i64) -> Result<Option<Recorded>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, request::text AS request, withdrawal::text AS withdrawal,
                    extract(epoch FROM created_at)::bigint AS begun_at
                 FROM cash_payouts WHERE cash_id = $1 AND active",
            )
            .await?,
            &[&cash_id],
        )
        .await?;
    Ok(row.map(|row| Recorded {
        id: row.get("id"),
        request: row.get("request"),
        withdrawal: row.get("withdrawal"),
        begun_at: row.get("begun_at"),
    }))
}

/// Whether this command id began a payout with other content.
pub async fn taken_by_other_content(
    tx: &Transaction<'_>,
    command_id: &str,
    fingerprint: &[u8],
) -> Result<bool, EngineError> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT 1 FROM cash_payouts WHERE command_id = $1 AND fingerprint <> $2",
            )
            .await?,
            &[&command_id, &fingerprint],
        )
        .await?
        .is_some())
}

/// The id the next payout gets (its `order_no` is made from it before it is inserted).
pub async fn next_id(tx: &Transaction<'_>) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT nextval(pg_get_serial_sequence('cash_payouts', 'id'))")
                .await?,
            &[],
        )
        .await?
        .get(0))
}

/// A payout to record before Ping++ is asked.
pub struct NewPayout<'a> {
    pub id: i64,
    pub cash_id: i64,
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub operator: i64,
    pub remark: &'a str,
    pub order_no: &'a str,
    /// The withdrawal request, as JSON.
    pub request: &'a str,
}

pub async fn insert(tx: &Transaction<'_>, new: &NewPayout<'_>) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO cash_payouts (id, cash_id, command_id, fingerprint, operator, remark,
                 order_no, request)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)",
        )
        .await?,
        &[
            &new.id,
            &new.cash_id,
            &new.command_id,
            &new.fingerprint,
            &new.operator,
            &new.remark,
            &new.order_no,
            &new.request,
        ],
    )
    .await?;
    Ok(())
}

/// Records what Ping++ says of the payout's withdrawal. `None` when the payout has another
/// withdrawal; else whether the payout is still active.
pub async fn record_withdrawal(
    tx: &Transaction<'_>,
    payout_id: i64,
    withdrawal_id: &str,
    status: &str,
    withdrawal: &str,
) -> Result<Option<bool>, EngineError> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached(
                "UPDATE cash_payouts SET withdrawal_id = $2, status = $3,
                     withdrawal = $4::text::json, updated_at = now()
                 WHERE id = $1 AND (withdrawal_id IS NULL OR withdrawal_id = $2)
                 RETURNING active",
            )
            .await?,
            &[&payout_id, &withdrawal_id, &status, &withdrawal],
        )
        .await?
        .map(|row| row.get("active")))
}

/// The payout is given up: the cash record may get another one.
pub async fn deactivate(tx: &Transaction<'_>, payout_id: i64) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE cash_payouts SET active = false, updated_at = now() WHERE id = $1",
        )
        .await?,
        &[&payout_id],
    )
    .await?;
    Ok(())
}

/// The cash record a withdrawal belongs to, by its id or `order_no`, and whether its id was
/// recorded yet.
pub async fn cash_of_withdrawal(
    tx: &Transaction<'_>,
    withdrawal_id: &str,
    order_no: &str,
) -> Result<Option<(i64, bool)>, EngineError> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT cash_id, withdrawal_id IS NOT NULL AS recorded FROM cash_payouts
                 WHERE withdrawal_id = $1 OR order_no = $2
                 ORDER BY withdrawal_id = $1 DESC NULLS LAST LIMIT 1",
            )
            .await?,
            &[&withdrawal_id, &order_no],
        )
        .await?
        .map(|row| (row.get("cash_id"), row.get("recorded"))))
}

/// The payout of a cash record with this `order_no`, active or not.
#[derive(Debug, Clone)]
pub struct ByOrderNo {
    pub id: i64,
    pub request: String,
    pub withdrawal_id: Option<String>,
    pub active: bool,
}

pub async fn by_order_no(
    tx: &Transaction<'_>,
    cash_id: i64,
    order_no: &str,
) -> Result<Option<ByOrderNo>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, request::text AS request, withdrawal_id, active FROM cash_payouts
                 WHERE cash_id = $1 AND order_no = $2",
            )
            .await?,
            &[&cash_id, &order_no],
        )
        .await?;
    Ok(row.map(|row| ByOrderNo {
        id: row.get("id"),
        request: row.get("request"),
        withdrawal_id: row.get("withdrawal_id"),
        active: row.get("active"),
    }))
}

/// The payout a command began (an e-wallet `cash` begins one with its cash record), with its
/// cash record and the fingerprint it was begun with.
pub async fn of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<(i64, Vec<u8>, Recorded)>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, cash_id, fingerprint, request::text AS request,
                    withdrawal::text AS withdrawal,
                    extract(epoch FROM created_at)::bigint AS begun_at
                 FROM cash_payouts WHERE command_id = $1 ORDER BY id LIMIT 1",
            )
            .await?,
            &[&command_id],
        )
        .await?;
    Ok(row.map(|row| {
        (
            row.get("cash_id"),
            row.get("fingerprint"),
            Recorded {
                id: row.get("id"),
                request: row.get("request"),
                withdrawal: row.get("withdrawal"),
                begun_at: row.get("begun_at"),
            },
        )
    }))
}
