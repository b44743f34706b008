//! Ping++ events that arrived before what they complete was recorded: parked in
//! `pingpp_events` (outcome `waiting`) off the queue, and put back on it when due, so waiting
//! never holds a worker's transaction slot.

use std::time::Duration;

use deadpool_postgres::Transaction;

use super::DbError;

/// The first wait; each further one doubles, up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// An event as parked: how often it was tried and how long since it first arrived.
#[derive(Debug, Clone, Copy)]
pub struct Parked {
    pub attempts: i32,
    pub waited: Duration,
}

/// Parks an event inserted (or taken up again) by this transaction until its next try.
pub async fn park(tx: &Transaction<'_>, id: &str, reason: &str) -> Result<Parked, DbError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE pingpp_events SET outcome = 'waiting', attempts = attempts + 1,
                     waiting_reason = $2,
                     retry_at = now() + least($3::float8 * power(2, attempts), $4::float8)
                                        * interval '1 second'
                 WHERE id = $1
                 RETURNING attempts, extract(epoch FROM now() - received_at)::float8",
            )
            .await?,
            &[
                &id,
                &reason,
                &FIRST_RETRY_DELAY.as_secs_f64(),
                &MAX_RETRY_DELAY.as_secs_f64(),
            ],
        )
        .await?;
    Ok(Parked {
        attempts: row.get(0),
        waited: Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0)),
    })
}

/// A parked event due for another try, with the body the listener enqueued.
#[derive(Debug, Clone)]
pub struct DueEvent {
    pub id: String,
    pub kind: String,
    pub body: String,
}

/// Locks up to `limit` due events for this transaction (others' sweeps skip them).
pub async fn lock_due(tx: &Transaction<'_>, limit: i64) -> Result<Vec<DueEvent>, DbError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT id, type, body::text FROM pingpp_events
                 WHERE outcome = 'waiting' AND retry_at <= now()
                 ORDER BY retry_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| DueEvent {
            id: row.get("id"),
            kind: row.get("type"),
            body: row.get("body"),
        })
        .collect())
}

/// These events are back on the queue: no further sweep puts them back until they wait again.
pub async fn put_back(tx: &Transaction<'_>, ids: &[String]) -> Result<(), DbError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE pingpp_events SET retry_at = NULL WHERE id = ANY($1) AND outcome = 'waiting'",
        )
        .await?,
        &[&ids],
    )
    .await?;
    Ok(())
}

/// How many events wait right now.
pub async fn waiting(client: &deadpool_postgres::Client) -> Result<i64, DbError> {
    let row = client
        .query_one(
            &client
                .prepare_cached("SELECT count(*) FROM pingpp_events WHERE outcome = 'waiting'")
                .await?,
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// An event that waited too long is in the dead letters now: it waits no more (a replay from
/// there takes it up again).
pub async fn mark_dead_lettered(
    client: &deadpool_postgres::Client,
    id: &str,
) -> Result<(), DbError> {
    client
        .execute(
            &client
                .prepare_cached(
                    "UPDATE pingpp_events SET outcome = 'dead_lettered', retry_at = NULL
                     WHERE id = $1 AND outcome = 'waiting'",
                )
                .await?,
            &[&id],
        )
        .await?;
    Ok(())
}
