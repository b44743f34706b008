//! Reading wallet orders in the wallet API's shape.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::query::Page;
use crate::error::EngineError;

/// The user's orders, newest first. Not a cached prepared statement: its optional filters
/// (`$2 IS NULL OR ...`) need a plan made for the actual values, or the index goes unused.
pub async fn list(tx: &Transaction<'_>, user: i64, page: &Page) -> Result<Value, EngineError> {
    let direction = page.action.map(|a| a.direction());
    Ok(tx
        .query_one(
            "SELECT coalesce(json_agg(order_json(o) ORDER BY o.id DESC), '[]'::json)
             FROM (SELECT * FROM wallet_orders
                   WHERE owner_id = $1 AND ($2::bigint IS NULL OR id < $2)
                     AND ($3::smallint IS NULL OR type = $3)
                   ORDER BY id DESC LIMIT $4) o",
            &[&user, &page.after, &direction, &page.limit],
        )
        .await?
        .get(0))
}

/// One of the user's orders; `None` for another user's.
pub async fn get(
    tx: &Transaction<'_>,
    user: i64,
    order_id: i64,
) -> Result<Option<Value>, EngineError> {
    Ok(tx
        .query_opt(
            "SELECT order_json(o) FROM wallet_orders o WHERE id = $1 AND owner_id = $2",
            &[&order_id, &user],
        )
        .await?
        .map(|r| r.get(0)))
}

/// A recharge order's charge exists: its target becomes the charge, and the command that
/// made it is noted.
pub async fn attach_charge(
    tx: &Transaction<'_>,
    order_id: i64,
    charge_id: &str,
    command_id: &str,
) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE wallet_orders SET target_id = $2, command_id = $3, updated_at = now()
                 WHERE id = $1 RETURNING order_json(wallet_orders)",
            )
            .await?,
            &[&order_id, &charge_id, &command_id],
        )
        .await?
        .get(0))
}

/// The order succeeded (state 1) with this journal.
pub async fn mark_succeeded(
    tx: &Transaction<'_>,
    order_id: i64,
    journal_id: i64,
) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE wallet_orders SET state = 1, journal_id = $2, updated_at = now()
                 WHERE id = $1 RETURNING order_json(wallet_orders)",
            )
            .await?,
            &[&order_id, &journal_id],
        )
        .await?
        .get(0))
}

/// The order failed (state -1); `command_id`, when given, is noted as the command that ended it.
pub async fn mark_failed(
    tx: &Transaction<'_>,
    order_id: i64,
    command_id: Option<&str>,
) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE wallet_orders SET state = -1, updated_at = now(),
                     command_id = coalesce($2, command_id)
                 WHERE id = $1 RETURNING order_json(wallet_orders)",
            )
            .await?,
            &[&order_id, &command_id],
        )
        .await?
        .get(0))
}

/// Names the command an order was made for, once that command's row exists (an order made
/// between a command's transactions is inserted before it).
pub async fn set_command(
    tx: &Transaction<'_>,
    order_id: i64,
    command_id: &str,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("UPDATE wallet_orders SET command_id = $2 WHERE id = $1")
            .await?,
        &[&order_id, &command_id],
    )
    .await?;
    Ok(())
}
