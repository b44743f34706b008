//! `deposits`: a deposit command's progress between its database transactions and its Ping++
//! call (the exact request, then the deposit Ping++ made), so a crash or a redelivery resumes
//! with the same `order_no` instead of making a second order or deposit.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::order::OrderState;
use crate::error::EngineError;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub fingerprint: Vec<u8>,
    pub order_id: i64,
    pub request: Value,
    pub deposit: Option<Value>,
    /// When the deposit began (unix s): no deposit of it at Ping++ can be older.
    pub begun_at: i64,
}

pub async fn find(tx: &Transaction<'_>, command_id: &str) -> Result<Option<Recorded>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT fingerprint, order_id, request, deposit,
                    extract(epoch FROM created_at)::bigint AS begun_at
                 FROM deposits WHERE command_id = $1",
            )
            .await?,
            &[&command_id],
        )
        .await?;
    Ok(row.map(|row| Recorded {
        fingerprint: row.get("fingerprint"),
        order_id: row.get("order_id"),
        request: row.get("request"),
        deposit: row.get("deposit"),
        begun_at: row.get("begun_at"),
    }))
}

pub struct NewDeposit<'a> {
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub user_id: i64,
    pub order_id: i64,
    pub order_no: &'a str,
    pub request: &'a Value,
}

pub async fn insert(tx: &Transaction<'_>, new: &NewDeposit<'_>) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO deposits (command_id, fingerprint, user_id, order_id, order_no, request)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?,
        &[
            &new.command_id,
            &new.fingerprint,
            &new.user_id,
            &new.order_id,
            &new.order_no,
            new.request,
        ],
    )
    .await?;
    Ok(())
}

/// Records the deposit Ping++ made (or what it says of it now).
pub async fn record_deposit(
    tx: &Transaction<'_>,
    order_id: i64,
    deposit_id: &str,
    status: &str,
    deposit: &Value,
) -> Result<(), EngineError> {
    let updated = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE deposits SET deposit_id = $2, status = $3, deposit = $4, updated_at = now()
                 WHERE order_id = $1 AND (deposit_id IS NULL OR deposit_id = $2)",
            )
            .await?,
            &[&order_id, &deposit_id, &status, deposit],
        )
        .await?;
    if updated != 1 {
        return Err(EngineError::Broken(format!(
            "order {order_id} has another deposit than {deposit_id}"
        )));
    }
    Ok(())
}

/// The deposit of a Ping++ deposit event, by its id or its `order_no`.
#[derive(Debug, Clone)]
pub struct ForEvent {
    pub order_id: i64,
    /// `None` while the recharge command has not recorded the deposit yet.
    pub deposit_id: Option<String>,
    /// The recharge command has its result: without the deposit recorded, it could not learn
    /// what Ping++ made, and the event completes the order instead.
    pub concluded: bool,
}

pub async fn for_event(
    tx: &Transaction<'_>,
    deposit_id: &str,
    order_no: &str,
) -> Result<Option<ForEvent>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT d.order_id, d.deposit_id, c.result IS NOT NULL AS concluded
                 FROM deposits d LEFT JOIN commands c ON c.id = d.command_id
                 WHERE d.deposit_id = $1 OR d.order_no = $2
                 ORDER BY d.deposit_id = $1 DESC NULLS LAST LIMIT 1",
            )
            .await?,
            &[&deposit_id, &order_no],
        )
        .await?;
    Ok(row.map(|row| ForEvent {
        order_id: row.get("order_id"),
        deposit_id: row.get("deposit_id"),
        concluded: row.get::<_, Option<bool>>("concluded").unwrap_or(false),
    }))
}

/// A deposit order locked for completing it.
#[derive(Debug, Clone)]
pub struct LockedDeposit {
    pub owner_id: i64,
    pub amount: i64,
    pub state: OrderState,
    pub order_no: String,
    /// The Ping++ user the deposit was asked for.
    pub pingpp_user: String,
    pub deposit_id: Option<String>,
    pub order: Value,
}

/// Locks the order row: racing completions (a retrieve and a webhook) then take turns.
pub async fn lock_for_completion(
    tx: &Transaction<'_>,
    order_id: i64,
) -> Result<Option<LockedDeposit>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT o.owner_id, o.amount, o.state, d.order_no, d.deposit_id,
                    d.request ->> 'user' AS pingpp_user, order_json(o) AS json
                 FROM wallet_orders o JOIN deposits d ON d.order_id = o.id
                 WHERE o.id = $1 FOR UPDATE OF o",
            )
            .await?,
            &[&order_id],
        )
        .await?;
    row.map(|row| {
        Ok(LockedDeposit {
            owner_id: row.get("owner_id"),
            amount: row.get("amount"),
            state: super::order_state(row.get("state"))?,
            order_no: row.get("order_no"),
            pingpp_user: row.get("pingpp_user"),
            deposit_id: row.get("deposit_id"),
            order: row.get("json"),
        })
    })
    .transpose()
}

/// The deposit of a wallet order, for `recharge.retrieve`: its id once made.
pub async fn of_order(
    tx: &Transaction<'_>,
    order_id: i64,
) -> Result<Option<Option<String>>, EngineError> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached("SELECT deposit_id FROM deposits WHERE order_id = $1")
                .await?,
            &[&order_id],
        )
        .await?
        .map(|row| row.get(0)))
}
