//! What happens without a command: closing what has expired (holds, red packets), and
//! publishing the outbox's events once the transaction that wrote them has committed.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::Context;
use crate::amqp::publisher::json_properties;
use crate::db::outbox;
use crate::engine::Expiring;
use crate::error::EngineError;
use crate::metrics;

/// How often the worker looks for expired holds and waiting events: a hold closes within about
/// this long after its expiry.
const EVERY: Duration = Duration::from_secs(1);
/// Most events published per transaction.
const PUBLISH_AT_ONCE: i64 = 100;

/// Runs for one broker session: the events go out on its publisher.
pub(super) async fn expire_and_publish_periodically(context: Arc<Context>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for what in [Expiring::Holds, Expiring::Redpackets] {
            loop {
                match context.engine.expire_due(what).await {
                    Ok(0) => break,
                    Ok(closed) => metrics::expired(closed),
                    Err(e) => {
                        warn!(error = %e, ?what, "could not close what expired");
                        break;
                    }
                }
            }
        }
        loop {
            match publish_waiting(&context).await {
                Ok(published) => {
                    metrics::outbox_published(published);
                    if published < PUBLISH_AT_ONCE as usize {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not publish the outbox's events");
                    break;
                }
            }
        }
    }
}

/// Publishes the oldest waiting events with confirms, then removes them. A crash in between
/// publishes them again: consumers tell the copies apart by `event_id`.
async fn publish_waiting(context: &Context) -> anyhow::Result<usize> {
    let mut client = context.engine.pool.get().await.map_err(EngineError::from)?;
    let tx = client.transaction().await.map_err(EngineError::from)?;
    let waiting = outbox::take(&tx, PUBLISH_AT_ONCE).await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    for event in &waiting {
        context
            .publisher
            .publish(
                &context.names.events_exchange,
                &event.routing_key,
                event.body.as_bytes(),
                json_properties().with_message_id(format!("outbox-{}", event.id).into()),
                false,
            )
            .await?;
    }
    let ids: Vec<i64> = waiting.iter().map(|e| e.id).collect();
    outbox::remove(&tx, &ids).await?;
    tx.commit().await.map_err(EngineError::from)?;
    Ok(ids.len())
}
