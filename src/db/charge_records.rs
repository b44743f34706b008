//! Reading the older wallet API's charge records (凭据), which the `charge_records` view derives
//! from the wallet orders and what each belongs to (migrations/0008_charge_records.sql).

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::query::Page;
use crate::error::EngineError;

/// The user's charge records, newest first. Not a cached prepared statement, for the reason
/// `orders::list` gives.
pub async fn list(tx: &Transaction<'_>, user: i64, page: &Page) -> Result<Value, EngineError> {
    let action = page.action.map(|a| a.charge_action());
    Ok(tx
        .query_one(
            "SELECT coalesce(json_agg(charge_record_json(c) ORDER BY c.id DESC), '[]'::json)
             FROM (SELECT * FROM charge_records
                   WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2)
                     AND ($3::smallint IS NULL OR action = $3)
                   ORDER BY id DESC LIMIT $4) c",
            &[&user, &page.after, &action, &page.limit],
        )
        .await?
        .get(0))
}

/// One of the user's charge records; `None` for another user's or an unknown one.
pub async fn get(
    tx: &Transaction<'_>,
    user: i64,
    charge_id: i64,
) -> Result<Option<Value>, EngineError> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT charge_record_json(c) FROM charge_records c
                 WHERE id = $1 AND user_id = $2",
            )
            .await?,
            &[&charge_id, &user],
        )
        .await?
        .map(|r| r.get(0)))
}
