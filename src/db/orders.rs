//! Reading wallet orders in the wallet API's shape.

use deadpool_postgres::Transaction;
use serde_json::Value;

use super::DbError;
use crate::domain::query::Page;

/// The user's orders, newest first. Not a cached prepared statement: its optional filters
/// (`$2 IS NULL OR ...`) need a plan made for the actual values, or the index goes unused.
pub async fn list(tx: &Transaction<'_>, user: i64, page: &Page) -> Result<Value, DbError> {
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
pub async fn get(tx: &Transaction<'_>, user: i64, order_id: i64) -> Result<Option<Value>, DbError> {
    Ok(tx
        .query_opt(
            "SELECT order_json(o) FROM wallet_orders o WHERE id = $1 AND owner_id = $2",
            &[&order_id, &user],
        )
        .await?
        .map(|r| r.get(0)))
}
