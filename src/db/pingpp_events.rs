//! `pingpp_events`: each verified Ping++ event once, with what it did and what it published.
//! Events that arrived before what they complete was recorded are parked here (outcome
//! `waiting`) off the queue, and put back on it when due, so waiting never holds a worker's
//! transaction slot.

use std::time::Duration;

use deadpool_postgres::Transaction;

use crate::error::EngineError;

/// Records the event as in progress, or takes up again one that was parked or dead-lettered
/// after waiting. `false`: the event was applied before; see [`published`].
pub async fn begin(
    tx: &Transaction<'_>,
    id: &str,
    kind: &str,
    livemode: bool,
    raw: &str,
) -> Result<bool, EngineError> {
    let inserted = tx
        .execute(
            &tx.prepare_cached(
                "INSERT INTO pingpp_events (id, type, livemode, body, outcome)
                 VALUES ($1, $2, $3, $4::text::json, 'pending')
                 ON CONFLICT (id) DO UPDATE SET outcome = 'pending'
                 WHERE pingpp_events.outcome IN ('waiting', 'dead_lettered')",
            )
            .await?,
            &[&id, &kind, &livemode, &raw],
        )
        .await?;
    Ok(inserted > 0)
}

/// What an event applied before published (routing key and body), if anything.
pub async fn published(
    tx: &Transaction<'_>,
    id: &str,
) -> Result<Option<(String, String)>, EngineError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT routing_key, published::text AS published FROM pingpp_events
                 WHERE id = $1",
            )
            .await?,
            &[&id],
        )
        .await?;
    Ok(
        match (
            row.get::<_, Option<String>>("routing_key"),
            row.get::<_, Option<String>>("published"),
        ) {
            (Some(key), Some(body)) => Some((key, body)),
            _ => None,
        },
    )
}

/// What the event did (`credited`, `failed`, `unchanged`, `recorded`, ...), the order it
/// completed, and the message published because of it, to publish again on redelivery.
pub async fn set_outcome(
    tx: &Transaction<'_>,
    id: &str,
    outcome: &str,
    order_id: Option<i64>,
    publish: Option<&(String, String)>,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE pingpp_events SET outcome = $2, order_id = $3, routing_key = $4,
                 published = $5::text::json
             WHERE id = $1",
        )
        .await?,
        &[
            &id,
            &outcome,
            &order_id,
            &publish.map(|(key, _)| key.as_str()),
            &publish.map(|(_, body)| body.as_str()),
        ],
    )
    .await?;
    Ok(())
}

/// The cash record a withdrawal event settled.
pub async fn set_cash(tx: &Transaction<'_>, id: &str, cash_id: i64) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("UPDATE pingpp_events SET cash_id = $2 WHERE id = $1")
            .await?,
        &[&id, &cash_id],
    )
    .await?;
    Ok(())
}

/// Marks the journal an event caused with the event's id.
pub async fn link_journal(
    tx: &Transaction<'_>,
    event_id: &str,
    journal_id: i64,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("UPDATE journal SET event_id = $1 WHERE id = $2")
            .await?,
        &[&event_id, &journal_id],
    )
    .await?;
    Ok(())
}

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
pub async fn park(tx: &Transaction<'_>, id: &str, reason: &str) -> Result<Parked, EngineError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE pingpp_events SET outcome = 'waiting', attempts = attempts + 1,
                     waiting_reason = $2,
                     retry_at = now() + least($3::float8 * power(2, attempts), $4::float8)
                                        * interval '1 second'
                 WHERE id = $1
                 RETURNING attempts,
                     extract(epoch FROM now() - received_at)::float8 AS waited_secs",
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
        attempts: row.get("attempts"),
        waited: Duration::from_secs_f64(row.get::<_, f64>("waited_secs").max(0.0)),
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
pub async fn lock_due(tx: &Transaction<'_>, limit: i64) -> Result<Vec<DueEvent>, EngineError> {
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
pub async fn put_back(tx: &Transaction<'_>, ids: &[String]) -> Result<(), EngineError> {
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
pub async fn waiting(client: &deadpool_postgres::Client) -> Result<i64, EngineError> {
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
) -> Result<(), EngineError> {
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
