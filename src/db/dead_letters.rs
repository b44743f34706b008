//! The record of discarded dead letters (migrations/0015_dead_letter_discards.sql).

use std::time::SystemTime;

use tokio_postgres::Client;

/// What is kept of a discarded dead letter.
pub struct Discard<'a> {
    pub dead_id: &'a str,
    pub operator: &'a str,
    pub note: &'a str,
    pub kind: Option<&'a str>,
    pub command_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub body_masked: &'a str,
    pub dead_since: Option<SystemTime>,
}

/// Records a discard, committed when this returns (one statement, autocommit); its row id.
pub async fn record(client: &Client, discard: &Discard<'_>) -> Result<i64, tokio_postgres::Error> {
    let dead_since_ms = discard.dead_since.and_then(|t| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as f64)
    });
    Ok(client
        .query_one(
            "INSERT INTO dead_letter_discards
                 (dead_id, operator, note, kind, command_id, reason, body_masked, dead_since)
             VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::float8 / 1000))
             RETURNING id",
            &[
                &discard.dead_id,
                &discard.operator,
                &discard.note,
                &discard.kind,
                &discard.command_id,
                &discard.reason,
                &discard.body_masked,
                &dead_since_ms,
            ],
        )
        .await?
        .get(0))
}
