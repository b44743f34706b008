//! Verified Ping++ events off the webhooks queue, and the sweeper that puts parked ones back
//! on it when they are due.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tracing::{error, info, warn, Instrument};

use super::delivery::{ack, dead_letter_only, fail, requeue, with_retries};
use super::Context;
use crate::amqp;
use crate::amqp::publisher::json_properties;
use crate::db;
use crate::engine::EventOutcome;
use crate::error::EngineError;
use crate::metrics;

/// How often the worker looks for parked events that are due.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Most parked events put back in one sweep.
const SWEEP_LIMIT: i64 = 100;

/// Puts parked Ping++ events back on the webhooks queue when they are due, and keeps
/// `pluspay_pingpp_events_waiting` current. Runs for one broker session.
pub(super) async fn put_back_due_events_periodically(context: Arc<Context>) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = put_back_due_events(&context).await {
            warn!(error = %e, "could not put parked Ping++ events back on the queue");
        }
        if context.engine.policy.custody == crate::domain::custody::Custody::Pingpp {
            if let Err(e) = ask_for_reward_settlements(&context).await {
                warn!(error = %e, "could not ask for the settlement of paid rewards");
            }
        } else if let Err(e) = ask_for_refund_pulls(&context).await {
            warn!(error = %e, "could not ask about refunds waiting for Ping++");
        }
    }
}

/// The longest wait between two asks about one refund.
const REFUND_PULL_MAX_SECS: i64 = 86_400;

/// Refunds of recharges still pending `worker.refund_pull_secs` after they were made (and then
/// at doubling waits) are asked about, in case their webhook does not come: a
/// `recharge.retrieve` of the refund's order, as its owner, with id `refund-<id>-pull-<n>`
/// (asking twice for one pull is a replay). It completes the refund through the same path as
/// the webhook; whichever comes first moves the money.
pub(super) async fn ask_for_refund_pulls(context: &Context) -> anyhow::Result<()> {
    let mut client = context.engine.pool.get().await.map_err(EngineError::from)?;
    let tx = client.transaction().await.map_err(EngineError::from)?;
    let due = db::refunds::due_pulls(&tx, SWEEP_LIMIT).await?;
    if due.is_empty() {
        return Ok(());
    }
    let first = context.engine.refund_pull.as_secs().max(1) as i64;
    for refund in &due {
        let command = serde_json::json!({
            "id": format!("refund-{}-pull-{}", refund.id, refund.pulls),
            "type": "recharge.retrieve",
            "user_id": refund.user_id,
            "data": {"order": refund.order_id},
        });
        context
            .publisher
            .publish(
                &context.names.commands_exchange,
                "recharge.retrieve",
                command.to_string().as_bytes(),
                json_properties(),
                true,
            )
            .await?;
        let shift = refund.pulls.clamp(0, 20) as u32;
        let next = first.saturating_mul(1 << shift).min(REFUND_PULL_MAX_SECS);
        db::refunds::pulled(&tx, refund.id, next.max(first)).await?;
    }
    tx.commit().await.map_err(EngineError::from)?;
    info!(
        refunds = due.len(),
        "refunds waiting for Ping++ asked about"
    );
    Ok(())
}

/// How soon a reward is looked at again after a command was asked for (its mark may not be
/// there yet), and while something of it is under way at Ping++ (pulled then).
const REWARD_LOOK_AGAIN_SECS: f64 = 2.0;
const REWARD_PULL_EVERY_SECS: f64 = 300.0;

/// A paid reward's next step, as a command of the platform's own (`user_id` =
/// `wallet.platform_user_id`; ids `reward-<order>-<step>-<attempt>`, so asking twice is a
/// replay): the platform's commission by allocation, then the completion that settles the rest
/// on the creator; an allocation or completion whose webhook has not come is pulled.
pub(super) async fn ask_for_reward_settlements(context: &Context) -> anyhow::Result<()> {
    use crate::domain::allocation::{next_reward_step, reward_command_id, Kind, RewardStep};
    let mut client = context.engine.pool.get().await.map_err(EngineError::from)?;
    let tx = client.transaction().await.map_err(EngineError::from)?;
    let due = db::purchases::rewards_to_settle(&tx, SWEEP_LIMIT).await?;
    if due.is_empty() {
        return Ok(());
    }
    let platform = context.engine.policy.platform_user_id;
    for reward in &due {
        let order = reward.order_id;
        let step = next_reward_step(reward.commission, &reward.attempts);
        let (command, look_again) = match &step {
            RewardStep::Commission(n) => (
                Some(serde_json::json!({
                    "id": reward_command_id(order, "commission", *n),
                    "type": "allocation.create",
                    "user_id": platform,
                    "data": {"order": order, "recipients": [{
                        "user": platform, "amount": reward.commission, "description": "平台佣金",
                    }]},
                })),
                Some(REWARD_LOOK_AGAIN_SECS),
            ),
            RewardStep::Complete(n) => (
                Some(serde_json::json!({
                    "id": reward_command_id(order, "complete", *n),
                    "type": "allocation.complete",
                    "user_id": platform,
                    "data": {"order": order},
                })),
                Some(REWARD_LOOK_AGAIN_SECS),
            ),
            RewardStep::Poll { kind, pingpp_id } => {
                // One pull per period: the id names it, so the same period's are replays.
                let period = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
                    / REWARD_PULL_EVERY_SECS as i64;
                let what = if *kind == Kind::Complete {
                    "complete"
                } else {
                    "commission"
                };
                (
                    Some(serde_json::json!({
                        "id": format!("reward-{order}-pull-{what}-{period}"),
                        "type": "allocation.get",
                        "user_id": platform,
                        "data": {"allocation": pingpp_id},
                    })),
                    Some(REWARD_PULL_EVERY_SECS),
                )
            }
            RewardStep::Wait => (None, Some(REWARD_LOOK_AGAIN_SECS)),
            RewardStep::Done => {
                if reward
                    .attempts
                    .iter()
                    .all(|a| a.step != "complete" || a.row.is_none())
                {
                    error!(
                        order,
                        "a reward's settlement failed every attempt: its money waits in allocations_pending for a person"
                    );
                }
                (None, None)
            }
        };
        if let Some(command) = command {
            let kind = command["type"].as_str().unwrap_or_default().to_owned();
            context
                .publisher
                .publish(
                    &context.names.commands_exchange,
                    &kind,
                    command.to_string().as_bytes(),
                    json_properties(),
                    true,
                )
                .await?;
        }
        db::purchases::set_settle_due(&tx, order, look_again).await?;
    }
    tx.commit().await.map_err(EngineError::from)?;
    Ok(())
}

pub(super) async fn put_back_due_events(context: &Context) -> anyhow::Result<()> {
    let mut client = context.engine.pool.get().await.map_err(EngineError::from)?;
    metrics::events_waiting(db::pingpp_events::waiting(&client).await?);
    let tx = client.transaction().await.map_err(EngineError::from)?;
    let due = db::pingpp_events::lock_due(&tx, SWEEP_LIMIT).await?;
    if due.is_empty() {
        return Ok(());
    }
    for event in &due {
        // As the listener enqueues it; the rows stay locked until every publish is confirmed.
        let properties = json_properties()
            .with_message_id(event.id.as_str().into())
            .with_type(event.kind.as_str().into());
        context
            .publisher
            .publish(
                &context.names.webhooks_exchange,
                amqp::topology::PINGPP_ROUTING_KEY,
                event.body.as_bytes(),
                properties,
                true,
            )
            .await?;
    }
    let ids: Vec<String> = due.into_iter().map(|e| e.id).collect();
    db::pingpp_events::put_back(&tx, &ids).await?;
    tx.commit().await.map_err(EngineError::from)?;
    info!(
        events = ids.len(),
        "parked Ping++ events put back on the queue"
    );
    Ok(())
}

/// A verified Ping++ event from the webhook listener.
pub(super) async fn handle_event(context: &Context, delivery: Delivery) {
    let Ok(_permit) = context.permits.clone().acquire_owned().await else {
        return;
    };
    let event = match crate::domain::event::decode(&delivery.data) {
        Ok(event) => event,
        Err(reason) => {
            warn!(%reason, "undecodable Ping++ event");
            dead_letter_only(context, &delivery, &reason).await;
            return;
        }
    };
    let span = tracing::info_span!("pingpp_event", id = %event.id, r#type = %event.kind);
    async {
        let raw = String::from_utf8_lossy(&delivery.data);
        let Some(outcome) = with_retries(context, || {
            crate::engine::apply_event(&context.engine, &event, &raw)
        })
        .await
        else {
            requeue(&delivery).await;
            return;
        };
        match outcome {
            Ok(EventOutcome::Done { publish, replayed }) => {
                if let Some((routing_key, body)) = publish {
                    let published = context
                        .publisher
                        .publish(
                            &context.names.events_exchange,
                            &routing_key,
                            body.as_bytes(),
                            json_properties(),
                            false,
                        )
                        .await;
                    if let Err(e) = published {
                        warn!(error = %e, "could not publish the event; leaving it for redelivery");
                        requeue(&delivery).await;
                        return;
                    }
                    info!(%routing_key, replayed, "event applied and published");
                } else {
                    info!(replayed, "event recorded");
                }
                metrics::event_handled(if replayed { "replayed" } else { "applied" });
                ack(&delivery).await;
            }
            Ok(EventOutcome::Refused(reason)) => {
                error!(%reason, "Ping++ event refused: nothing credited");
                metrics::event_handled("refused");
                dead_letter_only(context, &delivery, &reason).await;
            }
            Ok(EventOutcome::Waiting(reason)) => {
                info!(%reason, "Ping++ event parked until what it completes is recorded");
                metrics::event_handled("waiting");
                ack(&delivery).await;
            }
            Ok(EventOutcome::GaveUp(reason)) => {
                error!(%reason, "Ping++ event gave up waiting: nothing credited");
                metrics::event_handled("gave_up");
                if dead_letter_only(context, &delivery, &reason).await {
                    // Until this lands, a later sweep puts it back and it is given up again.
                    let marked = async {
                        let client = context.engine.pool.get().await?;
                        db::pingpp_events::mark_dead_lettered(&client, &event.id).await
                    };
                    if let Err(e) = marked.await {
                        warn!(error = %e, "could not mark a dead-lettered event");
                    }
                }
            }
            Err(e) => metrics::event_handled(fail(context, &delivery, &e).await),
        }
    }
    .instrument(span)
    .await;
}
