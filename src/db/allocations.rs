//! Split purchases' allocations, allocation refunds and completions (`allocations`), and the
//! figures of what Ping++ still holds for a split order.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::allocation::{Kind, Share, Status};
use crate::error::EngineError;

#[derive(Debug, Clone)]
pub struct Allocation {
    pub id: i64,
    pub order_id: i64,
    pub fingerprint: Vec<u8>,
    pub kind: Kind,
    pub order_no: String,
    pub parent_id: Option<i64>,
    pub shares: Vec<Share>,
    pub amount: i64,
    pub request: Value,
    pub pingpp_id: Option<String>,
    pub object: Option<Value>,
    pub status: Status,
    /// The command that made it has its result.
    pub concluded: bool,
}

const COLUMNS: &str = "a.id, a.order_id, a.fingerprint, a.kind, a.order_no, a.parent_id,
    a.shares, a.amount, a.request, a.pingpp_id, a.object, a.status,
    c.result IS NOT NULL AS concluded
    FROM allocations a LEFT JOIN commands c ON c.id = a.command_id";

fn allocation(row: &tokio_postgres::Row) -> Result<Allocation, EngineError> {
    let kind: &str = row.get("kind");
    let status: &str = row.get("status");
    let shares: Value = row.get("shares");
    Ok(Allocation {
        id: row.get("id"),
        order_id: row.get("order_id"),
        fingerprint: row.get("fingerprint"),
        kind: Kind::parse(kind)
            .ok_or_else(|| EngineError::Broken(format!("an allocation of kind {kind}")))?,
        order_no: row.get("order_no"),
        parent_id: row.get("parent_id"),
        shares: serde_json::from_value(shares)
            .map_err(|e| EngineError::Broken(format!("an allocation's shares: {e}")))?,
        amount: row.get("amount"),
        request: row.get("request"),
        pingpp_id: row.get("pingpp_id"),
        object: row.get("object"),
        status: Status::parse(status)
            .ok_or_else(|| EngineError::Broken(format!("an allocation with status {status}")))?,
        concluded: row.get::<_, Option<bool>>("concluded").unwrap_or(false),
    })
}

pub async fn of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<Allocation>, EngineError> {
    let sql = format!("SELECT {COLUMNS} WHERE a.command_id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&command_id])
        .await?;
    row.as_ref().map(allocation).transpose()
}

/// The allocation Ping++ knows by its id or `order_no`, locked.
pub async fn lock_at_pingpp(
    tx: &Transaction<'_>,
    pingpp_id: &str,
    order_no: &str,
) -> Result<Option<Allocation>, EngineError> {
    let sql = format!(
        "SELECT {COLUMNS} WHERE a.pingpp_id = $1 OR a.order_no = $2 LIMIT 1 FOR UPDATE OF a"
    );
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&pingpp_id, &order_no])
        .await?;
    row.as_ref().map(allocation).transpose()
}

pub async fn of_order(tx: &Transaction<'_>, order_id: i64) -> Result<Vec<Allocation>, EngineError> {
    let sql = format!("SELECT {COLUMNS} WHERE a.order_id = $1 ORDER BY a.id");
    let rows = tx
        .query(&tx.prepare_cached(&sql).await?, &[&order_id])
        .await?;
    rows.iter().map(allocation).collect()
}

pub async fn next_id(tx: &Transaction<'_>) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT nextval(pg_get_serial_sequence('allocations', 'id'))")
                .await?,
            &[],
        )
        .await?
        .get(0))
}

pub struct NewAllocation<'a> {
    pub id: i64,
    pub order_id: i64,
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub kind: Kind,
    pub order_no: &'a str,
    pub parent_id: Option<i64>,
    pub shares: &'a [Share],
    pub request: &'a Value,
}

pub async fn insert(tx: &Transaction<'_>, new: &NewAllocation<'_>) -> Result<(), EngineError> {
    let shares = serde_json::to_value(new.shares).expect("shares serialize");
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO allocations (id, order_id, command_id, fingerprint, kind, order_no,
                 parent_id, shares, amount, request)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?,
        &[
            &new.id,
            &new.order_id,
            &new.command_id,
            &new.fingerprint,
            &new.kind.as_str(),
            &new.order_no,
            &new.parent_id,
            &shares,
            &Share::total(new.shares),
            new.request,
        ],
    )
    .await?;
    Ok(())
}

/// Records what Ping++ says of it (`None`: Ping++ refused to make it); a completion's amount
/// is set when it succeeds.
pub async fn record(
    tx: &Transaction<'_>,
    id: i64,
    status: Status,
    object: Option<(&str, &Value)>,
    amount: Option<i64>,
) -> Result<(), EngineError> {
    let (pingpp_id, object) = match object {
        Some((id, object)) => (Some(id), Some(object)),
        None => (None, None),
    };
    tx.execute(
        &tx.prepare_cached(
            "UPDATE allocations SET status = $2, pingpp_id = coalesce($3, pingpp_id),
                 object = coalesce($4, object), amount = coalesce($5, amount),
                 updated_at = now()
             WHERE id = $1",
        )
        .await?,
        &[&id, &status.as_str(), &pingpp_id, &object, &amount],
    )
    .await?;
    Ok(())
}

/// What succeeded refunds of the order took from what Ping++ held for it.
pub async fn refunds_from_held(tx: &Transaction<'_>, order_id: i64) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT coalesce(sum(from_held), 0)::bigint FROM order_refunds
                 WHERE order_id = $1 AND status = 'succeeded'",
            )
            .await?,
            &[&order_id],
        )
        .await?
        .get(0))
}

pub async fn set_refund_from_held(
    tx: &Transaction<'_>,
    refund_id: i64,
    from_held: i64,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("UPDATE order_refunds SET from_held = $2 WHERE id = $1")
            .await?,
        &[&refund_id, &from_held],
    )
    .await?;
    Ok(())
}
