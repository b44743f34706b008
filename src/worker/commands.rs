//! Commands off the commands queue: one alone, or a batch in one transaction; each answered,
//! then acknowledged.

use std::time::Instant;

use lapin::message::Delivery;
use tracing::{warn, Instrument};

use super::delivery::{
    ack, dead_letter, dead_letter_only, fail, publish_result, requeue, with_retries,
};
use super::Context;
use crate::db::commands::Applied;
use crate::domain::command::{CommandType, Envelope, Malformed};
use crate::domain::outcome::Status;
use crate::metrics;

/// One command delivery, decoded once by the consumer loop.
/// The AMQP `user_id` of a message: its publisher's broker user, as the broker checked it.
pub(super) fn published_by(delivery: &Delivery) -> Option<&str> {
    delivery
        .properties
        .user_id()
        .as_ref()
        .map(|user| user.as_str())
}

/// An operator command from a publisher that is not an operator: answered `forbidden` and
/// acknowledged, with nothing applied and nothing stored (the id stays free for the operator's
/// own command).
pub(super) async fn forbid(context: &Context, delivery: Delivery, envelope: Envelope) {
    let _in_flight = metrics::InFlight::start();
    warn!(
        id = %envelope.id,
        r#type = envelope.kind.as_str(),
        publisher = published_by(&delivery).unwrap_or("(no user_id)"),
        "an operator command from a publisher that is not an operator: forbidden"
    );
    let answer = crate::db::commands::unstored(&envelope, crate::domain::outcome::forbidden());
    if publish_result(context, &delivery, &answer).await.is_ok() {
        ack(&delivery).await;
    }
    metrics::command_handled(Some(envelope.kind), "forbidden");
}

/// Whether a delivery off the commands queue was published to the commands exchange or, as
/// replays and tests do, straight to the queue. Anything else came through a binding someone
/// added (an upstream may bind the commands queue: its write permission on the exchange covers
/// the queue of the same name), e.g. from the results exchange.
pub(super) fn published_as_command(context: &Context, delivery: &Delivery) -> bool {
    let exchange = delivery.exchange.as_str();
    exchange.is_empty() || exchange == context.names.commands_exchange
}

/// A message routed into the commands queue from another exchange: dead-lettered, unanswered.
/// Answering would publish a result that such a binding (from the results exchange) brings
/// back as a command again, for ever.
pub(super) async fn misrouted(context: &Context, delivery: Delivery) {
    let _in_flight = metrics::InFlight::start();
    let reason = format!(
        "routed to the commands queue from exchange {:?}; commands are published to {:?}",
        delivery.exchange.as_str(),
        context.names.commands_exchange
    );
    warn!(%reason, "a message that was not published as a command");
    dead_letter_only(context, &delivery, &reason).await;
    metrics::command_handled(None, "misrouted");
}

pub(super) async fn handle(
    context: &Context,
    delivery: Delivery,
    decoded: Result<Envelope, Malformed>,
) {
    let permits = match &decoded {
        Ok(envelope) if context.engine.waits_on_pingpp(envelope.kind) => &context.pingpp_permits,
        _ => &context.permits,
    };
    let Ok(_permit) = permits.clone().acquire_owned().await else {
        return;
    };
    let _in_flight = metrics::InFlight::start();
    let started = Instant::now();
    match decoded {
        Err(malformed) => {
            warn!(reason = %malformed.reason, "malformed message");
            dead_letter(context, &delivery, &malformed).await;
            metrics::command_handled(
                malformed.kind.as_deref().and_then(CommandType::parse),
                "malformed",
            );
        }
        Ok(envelope) => {
            let span =
                tracing::info_span!("command", id = %envelope.id, r#type = envelope.kind.as_str());
            let outcome = process(context, &delivery, &envelope)
                .instrument(span)
                .await;
            metrics::command_handled(Some(envelope.kind), outcome);
            metrics::command_duration(envelope.kind, started.elapsed());
        }
    }
}

/// Returns the outcome for the metrics.
pub(super) async fn process(
    context: &Context,
    delivery: &Delivery,
    envelope: &Envelope,
) -> &'static str {
    let Some(applied) = with_retries(context, || context.engine.apply(envelope)).await else {
        // Shutting down mid-retry: leave the command to the broker, it is redelivered.
        requeue(delivery).await;
        return "requeued";
    };
    match applied {
        Ok(applied) => answer(context, delivery, &applied).await,
        Err(e) => fail(context, delivery, &e).await,
    }
}

/// The command is applied: publish its result, then acknowledge it.
pub(super) async fn answer(
    context: &Context,
    delivery: &Delivery,
    applied: &Applied,
) -> &'static str {
    if publish_result(context, delivery, applied).await.is_err() {
        return "requeued";
    }
    ack(delivery).await;
    match (applied.replayed, applied.status) {
        (true, _) => "replayed",
        (false, Status::Succeeded) => "succeeded",
        (false, Status::Rejected) => "rejected",
    }
}

/// Commands applied in one transaction; their results are then published and confirmed
/// together (the confirms pipeline on one channel) and each is acknowledged after its own.
pub(super) async fn handle_batch(context: &Context, batch: Vec<(Envelope, Delivery)>) {
    let Ok(_permit) = context.permits.clone().acquire_owned().await else {
        return;
    };
    let _in_flight: Vec<_> = batch.iter().map(|_| metrics::InFlight::start()).collect();
    let started = Instant::now();
    let envelopes: Vec<Envelope> = batch.iter().map(|(envelope, _)| envelope.clone()).collect();
    let results = context.engine.apply_batch(&envelopes).await;
    let settled = batch
        .iter()
        .zip(results)
        .map(|((envelope, delivery), result)| {
            let span =
                tracing::info_span!("command", id = %envelope.id, r#type = envelope.kind.as_str());
            async move {
                let outcome = match result {
                    Ok(applied) => answer(context, delivery, &applied).await,
                    // Retried alone, with backoff, like any single command.
                    Err(e) if e.is_transient() => process(context, delivery, envelope).await,
                    Err(e) => fail(context, delivery, &e).await,
                };
                metrics::command_handled(Some(envelope.kind), outcome);
                metrics::command_duration(envelope.kind, started.elapsed());
            }
            .instrument(span)
        });
    futures_util::future::join_all(settled).await;
}
