//! Events written in the transaction that makes them true, for the worker to publish after the
//! commit (migrations/0016_holds.sql, src/worker/outbox.rs).

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::error::EngineError;

/// An event waiting to be published.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub routing_key: String,
    pub body: String,
}

pub async fn enqueue(
    tx: &Transaction<'_>,
    routing_key: &str,
    body: &Value,
) -> Result<(), EngineError> {
    enqueue_many(tx, &[(routing_key, body.clone())]).await
}

/// Events `(routing key, body)` to publish after the commit, in the order given.
pub async fn enqueue_many(
    tx: &Transaction<'_>,
    events: &[(&str, Value)],
) -> Result<(), EngineError> {
    if events.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = events.iter().map(|e| e.0).collect();
    let bodies: Vec<String> = events.iter().map(|e| e.1.to_string()).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO outbox (routing_key, body)
             SELECT k, b FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS e(k, b, n)
             ORDER BY n",
        )
        .await?,
        &[&keys, &bodies],
    )
    .await?;
    Ok(())
}

/// The oldest waiting events, locked so that another worker publishing at the same time takes
/// others.
pub async fn take(tx: &Transaction<'_>, limit: i64) -> Result<Vec<Pending>, EngineError> {
    Ok(tx
        .query(
            &tx.prepare_cached(
                "SELECT id, routing_key, body FROM outbox ORDER BY id LIMIT $1
                 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| Pending {
            id: r.get(0),
            routing_key: r.get(1),
            body: r.get(2),
        })
        .collect())
}

/// Removes events the broker confirmed.
pub async fn remove(tx: &Transaction<'_>, ids: &[i64]) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("DELETE FROM outbox WHERE id = ANY($1)")
            .await?,
        &[&ids],
    )
    .await?;
    Ok(())
}
