//! What happens to a delivery: its result published, a failure retried or dead-lettered, the
//! delivery acknowledged or given back.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use tracing::{error, info, warn};

use super::Context;
use super::ERROR_HEADER;
use crate::amqp::publisher::{header_int, json_properties, with_header};
use crate::amqp::PublishError;
use crate::db::commands::Applied;
use crate::dead_letters::{DEAD_AT_HEADER, DEAD_FROM_HEADER, DEAD_ID_HEADER};
use crate::domain::command::Malformed;
use crate::domain::outcome::{Code, CommandResult, Status};
use crate::error::EngineError;
use crate::metrics;

/// Publishes the result on the results exchange and, when asked, to the command's `reply_to`.
pub(super) async fn publish_result(
    context: &Context,
    delivery: &Delivery,
    applied: &Applied,
) -> Result<(), PublishError> {
    let mut properties = json_properties();
    if let Some(correlation_id) = delivery.properties.correlation_id() {
        properties = properties.with_correlation_id(correlation_id.clone());
    }
    let published = async {
        context
            .publisher
            .publish(
                &context.names.results_exchange,
                &applied.routing_key,
                applied.body.as_bytes(),
                properties.clone(),
                false,
            )
            .await?;
        if let Some(reply_to) = delivery.properties.reply_to() {
            context
                .publisher
                .publish(
                    "",
                    reply_to.as_str(),
                    applied.body.as_bytes(),
                    properties,
                    false,
                )
                .await?;
        }
        Ok(())
    }
    .await;
    match &published {
        Ok(()) => info!(
            status = applied.status.as_str(),
            replayed = applied.replayed,
            "result published"
        ),
        Err(e) => {
            // The effect is committed; the redelivery will replay the stored result.
            warn!(error = %e, "could not publish the result; leaving the command for redelivery");
            requeue(delivery).await;
        }
    }
    published
}

/// Sends an undecodable message to the dead letters with its reason and, if it asked for a
/// reply, a `malformed` rejection; then acknowledges it.
pub(super) async fn dead_letter(context: &Context, delivery: &Delivery, malformed: &Malformed) {
    if let Some(reply_to) = delivery.properties.reply_to() {
        let result = CommandResult {
            id: malformed.id.clone(),
            kind: malformed.kind.clone(),
            user_id: None,
            status: Status::Rejected,
            code: Some(Code::Malformed),
            message: vec![malformed.reason.clone()],
            errors: None,
            data: None,
        };
        let mut properties = json_properties();
        if let Some(correlation_id) = delivery.properties.correlation_id() {
            properties = properties.with_correlation_id(correlation_id.clone());
        }
        let body = serde_json::to_vec(&result).expect("a result serializes");
        if let Err(e) = context
            .publisher
            .publish("", reply_to.as_str(), &body, properties, false)
            .await
        {
            warn!(error = %e, "could not reply to a malformed message; leaving it for redelivery");
            requeue(delivery).await;
            return;
        }
    }
    dead_letter_only(context, delivery, &malformed.reason).await;
}

/// Publishes the message to the dead letters with its reason, a new id and the time (what
/// operators address and sort it by: crate::dead_letters) and acknowledges it; `false` if it
/// is left for redelivery instead.
pub(super) async fn dead_letter_only(context: &Context, delivery: &Delivery, reason: &str) -> bool {
    let properties = with_header(
        with_header(
            delivery.properties.clone().with_delivery_mode(2),
            ERROR_HEADER,
            reason,
        ),
        DEAD_ID_HEADER,
        &uuid::Uuid::new_v4().to_string(),
    );
    let mut headers = properties.headers().clone().unwrap_or_default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    headers.insert(DEAD_AT_HEADER.into(), AMQPValue::LongLongInt(now_ms));
    // Where it came from: only what came through the webhooks exchange (the listener's) goes
    // back there when it is replayed.
    headers.insert(
        DEAD_FROM_HEADER.into(),
        AMQPValue::LongString(delivery.exchange.as_str().into()),
    );
    let properties: BasicProperties = properties.with_headers(headers);
    match context
        .publisher
        .publish(
            &context.names.dead_exchange,
            delivery.routing_key.as_str(),
            &delivery.data,
            properties,
            true,
        )
        .await
    {
        Ok(()) => {
            ack(delivery).await;
            true
        }
        Err(e) => {
            warn!(error = %e, "could not dead-letter a message; leaving it for redelivery");
            requeue(delivery).await;
            false
        }
    }
}

/// Acknowledges a delivery: it is done with.
pub(super) async fn ack(delivery: &Delivery) {
    report_unsettled("ack", delivery.ack(BasicAckOptions::default()).await);
}

/// Gives a delivery back to the broker, to be delivered again (try again later).
pub(super) async fn requeue(delivery: &Delivery) {
    let nacked = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
    report_unsettled("requeue", nacked);
}

/// lapin reports `false` when the channel was lost or recovered: the broker will redeliver,
/// and the command log makes that harmless.
pub(super) fn report_unsettled(what: &'static str, settled: Result<bool, lapin::Error>) {
    match settled {
        Ok(true) => {}
        Ok(false) => warn!(
            what,
            "delivery not settled (channel lost); the broker will redeliver it"
        ),
        Err(e) => {
            warn!(error = %e, what, "could not settle a delivery; the broker will redeliver it")
        }
    }
}

/// Not the message's fault and not transient (a bug, a broken schema): never a rejection. It
/// is tried again, and after the delivery limit goes to the dead letters with the reason.
pub(super) async fn fail(context: &Context, delivery: &Delivery, e: &EngineError) -> &'static str {
    let deliveries =
        header_int(&delivery.properties.headers().clone(), "x-delivery-count").unwrap_or(0) + 1;
    error!(error = %e, deliveries, "message failed");
    if deliveries >= i64::from(context.delivery_limit) {
        dead_letter_only(
            context,
            delivery,
            &format!("failed {deliveries} times: {e}"),
        )
        .await;
        "dead_lettered"
    } else {
        requeue(delivery).await;
        "retried"
    }
}

/// Retries transient failures until they pass or the worker stops (`None`: leave the message
/// to the broker).
pub(super) async fn with_retries<T, F, Fut>(
    context: &Context,
    attempt: F,
) -> Option<Result<T, EngineError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    let retried = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .without_max_times(),
        )
        .when(EngineError::is_transient)
        .notify(|e, delay| {
            metrics::retried();
            warn!(error = %e, ?delay, "transient error; retrying")
        });
    tokio::select! {
        outcome = retried => Some(outcome),
        _ = context.shutdown.cancelled() => None,
    }
}
