//! Publishing `wallet.changed`: one event per version of a user's wallet or points account,
//! read from the ledger itself after the commit (migrations/0022_wallet_changed.sql), so
//! posting writes nothing more for it.
//!
//! Journal ids are handed out in transaction order only loosely: a journal below one already
//! committed may still commit. A round therefore reads only up to a settle point
//! (`db::audit::settled_snapshot`), below which every journal is committed or gone, publishes
//! the entries beyond the cursor in (journal, account) order with confirms, and only then moves
//! the cursor, in the transaction that holds its row locked: one publisher at a time, so an
//! account's versions go out in order. A crash in between publishes the same entries again,
//! with the same `event_id` and the same bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::Context;
use crate::amqp::publisher::json_properties;
use crate::db::{audit, wallet_changed};
use crate::error::EngineError;
use crate::metrics;

/// How long the publisher waits when it has caught up: about how late an event can be.
const IDLE: Duration = Duration::from_millis(100);
/// Journals per round. Each moves a few users' accounts (a transfer two, a batch's journals one
/// command each), so a round publishes some hundreds of events, awaiting their confirms
/// together, and holds the cursor's row for about that long.
const JOURNALS_AT_ONCE: i64 = 500;
/// The longest wait after failures in a row (the database or the broker refusing), doubling from
/// `IDLE`; a round that works starts over.
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// What a round did.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Published up to the settle point (or there was nothing): wait a little.
    CaughtUp,
    /// Published a full chunk: there is more right away.
    More,
    /// Another worker holds the cursor.
    Busy,
}

/// Runs for one broker session (the events go out on its publisher) until shutdown, which it
/// honours between rounds.
pub(super) async fn publish_periodically(context: Arc<Context>) {
    let mut backoff = IDLE;
    loop {
        let pause = match publish_round(&context).await {
            Ok(Round::More) => {
                backoff = IDLE;
                Duration::ZERO
            }
            Ok(Round::CaughtUp | Round::Busy) => {
                backoff = IDLE;
                IDLE
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "could not publish wallet.changed events");
                let pause = backoff;
                backoff = (backoff * 2).min(MOST_BACKOFF);
                pause
            }
        };
        record_lag(&context).await;
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn record_lag(context: &Context) {
    let Ok(client) = context.engine.pool.get().await else {
        return;
    };
    match wallet_changed::lag(&client).await {
        Ok((journals, seconds)) => metrics::wallet_changed_lag(journals, seconds),
        Err(e) => warn!(error = %e, "could not read how far wallet.changed is behind"),
    }
}

async fn publish_round(context: &Context) -> anyhow::Result<Round> {
    let mut client = context.engine.pool.get().await.map_err(EngineError::from)?;
    let (upto, tx) = audit::settled_snapshot(&mut client).await?;
    // The first statement: the snapshot, then the lock. A cursor moved by another publisher
    // after the snapshot is a serialization failure: that one is publishing.
    let cursor = match wallet_changed::lock_cursor(&tx).await {
        Ok(Some(cursor)) => cursor,
        Ok(None) => return Ok(Round::Busy),
        Err(e) if audit::moved_by_another(&e) => return Ok(Round::Busy),
        Err(e) => return Err(e.into()),
    };
    if cursor >= upto {
        return Ok(Round::CaughtUp);
    }
    let through = wallet_changed::chunk_end(&tx, cursor, upto, JOURNALS_AT_ONCE).await?;
    let changes = wallet_changed::changes(&tx, cursor, through).await?;
    in_version_order(&changes)?;
    let messages: Vec<(&str, Vec<u8>, lapin::BasicProperties)> = changes
        .iter()
        .map(|change| {
            let event_id = event_id(change);
            (
                "wallet.changed",
                body(change, &event_id).into_bytes(),
                json_properties().with_message_id(event_id.into()),
            )
        })
        .collect();
    if !messages.is_empty() {
        context
            .publisher
            .publish_all(&context.names.events_exchange, &messages)
            .await?;
    }
    wallet_changed::advance(&tx, through).await?;
    tx.commit().await.map_err(EngineError::from)?;
    metrics::wallet_changed_published(messages.len());
    Ok(if through < upto {
        Round::More
    } else {
        Round::CaughtUp
    })
}

/// The event's JSON, written around the change's JSON text as the database gave it (two
/// entries per transfer: parsing and writing each again was most of the publisher's work).
/// The event id is built of digits, dots and the unit's letters, so it needs no escaping.
fn body(change: &wallet_changed::Change, event_id: &str) -> String {
    format!(
        r#"{{"type":"wallet.changed","event_id":"{event_id}","user_id":{},"data":{}}}"#,
        change.user, change.data
    )
}

/// The same on every copy of the event.
fn event_id(change: &wallet_changed::Change) -> String {
    format!(
        "wallet.changed.{}.{}.{}",
        change.user, change.unit, change.version
    )
}

/// A round holds every entry of its journals, and a posting locks an account before it takes
/// journal ids, so each account's versions in it follow each other by one in journal order.
/// Anything else would publish versions out of order: nothing goes out then.
fn in_version_order(changes: &[wallet_changed::Change]) -> Result<(), EngineError> {
    let mut last: HashMap<i64, i64> = HashMap::new();
    for change in changes {
        if let Some(before) = last.insert(change.account_id, change.version) {
            if change.version != before + 1 {
                return Err(EngineError::Broken(format!(
                    "account {} has version {} after {} (journal {}): not publishing \
                     wallet.changed out of order",
                    change.account_id, change.version, before, change.journal_id
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(journal_id: i64, account_id: i64, version: i64) -> wallet_changed::Change {
        wallet_changed::Change {
            journal_id,
            account_id,
            user: account_id,
            unit: "fen".into(),
            version,
            data: r#"{"version":1}"#.into(),
        }
    }

    #[test]
    fn versions_must_follow_each_other_per_account() {
        assert!(in_version_order(&[change(1, 1, 4), change(1, 2, 1), change(2, 1, 5)]).is_ok());
        assert!(in_version_order(&[change(1, 1, 4), change(2, 1, 6)]).is_err());
        assert!(in_version_order(&[change(1, 1, 4), change(2, 1, 4)]).is_err());
    }

    #[test]
    fn the_body_is_the_event_around_the_changes_json() {
        let c = change(9, 3, 12);
        let body: serde_json::Value = serde_json::from_str(&body(&c, &event_id(&c))).unwrap();
        assert_eq!(
            body,
            json!({"type": "wallet.changed", "event_id": "wallet.changed.3.fen.12",
                   "user_id": 3, "data": {"version": 1}})
        );
    }

    #[test]
    fn event_ids_name_the_account_and_version() {
        let mut c = change(9, 3, 12);
        c.unit = "point".into();
        assert_eq!(event_id(&c), "wallet.changed.3.point.12");
    }
}
