//! The worker: takes commands off the queue, applies each exactly once, publishes its result,
//! and only then acknowledges it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::amqp::publisher::{header_int, json_properties, with_header};
use crate::amqp::{self, Names, PublishError, Publisher};
use crate::config::Settings;
use crate::db::{self, commands::Applied};
use crate::domain::command::{decode, CommandType, Envelope, Malformed};
use crate::domain::outcome::{Code, CommandResult, Status};
use crate::engine::{Engine, EventOutcome};
use crate::error::EngineError;
use crate::metrics;

/// The header that carries why a message was dead-lettered (docs/CONTRACT.md §1).
pub const ERROR_HEADER: &str = "x-pluspay-error";

/// What every delivery handler needs.
struct Context {
    engine: Engine,
    publisher: Publisher,
    names: Names,
    delivery_limit: u32,
    /// Transaction slots: single commands, batches and Ping++ events.
    permits: Arc<Semaphore>,
    /// Slots for the commands that wait on Ping++, apart so they never hold up the others.
    pingpp_permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Runs until `shutdown` is cancelled, rebuilding the broker connection whenever it is lost.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_readiness(settings, shutdown, || {}).await
}

/// As `run`, calling `on_ready` once the first session consumes (systemd's READY=1).
pub async fn run_with_readiness(
    settings: Settings,
    shutdown: CancellationToken,
    on_ready: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    let mut on_ready = Some(on_ready);
    let engine = Engine::from_settings(&settings)?;
    if settings.metrics.ledger_check_secs > 0 {
        tokio::spawn(check_ledger_periodically(
            engine.pool.clone(),
            Duration::from_secs(settings.metrics.ledger_check_secs),
            shutdown.clone(),
        ));
    }
    let mut delays = amqp::reconnect_delays();
    loop {
        let mut consumed = false;
        let outcome = session(&settings, &engine, &shutdown, &mut || {
            consumed = true;
            if let Some(on_ready) = on_ready.take() {
                on_ready();
            }
        })
        .await;
        if consumed {
            // A session that worked starts the backoff over.
            delays = amqp::reconnect_delays();
        }
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                metrics::broker_reconnect("worker");
                warn!(error = %e, ?delay, "broker session ended; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Keeps `pluspay_ledger_ok` current, so an alert fires without anyone running the audit.
async fn check_ledger_periodically(
    pool: deadpool_postgres::Pool,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let report = match pool.get().await {
            Ok(mut client) => db::audit::run(&mut client).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match report {
            Ok(report) => {
                if !report.ok {
                    error!(report = %serde_json::to_string(&report).unwrap_or_default(),
                           "the ledger check failed");
                }
                metrics::ledger_checked(&report);
            }
            Err(e) => warn!(error = %e, "could not run the ledger check"),
        }
    }
}

/// One connection's life: consume until shutdown (Ok) or until the broker goes away (Err).
/// `consuming` is called once it got as far as consuming.
async fn session(
    settings: &Settings,
    engine: &Engine,
    shutdown: &CancellationToken,
    consuming: &mut (dyn FnMut() + Send),
) -> anyhow::Result<()> {
    let connection = amqp::connect(&settings.amqp.url, "pluspay-worker").await?;
    let names = Names::new(&settings.amqp.namespace);
    let channel = connection.create_channel().await?;
    amqp::topology::declare(&channel, &names, settings.amqp.delivery_limit).await?;
    channel
        .basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
        .await?;
    let publisher = Publisher::open(&connection).await?;
    let mut consumer = channel
        .basic_consume(
            names.commands_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut events = channel
        .basic_consume(
            names.webhooks_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    consuming();
    info!(queue = %names.commands_queue, events = %names.webhooks_queue,
          prefetch = settings.amqp.prefetch, "consuming commands and Ping++ events");
    let context = Arc::new(Context {
        engine: engine.clone(),
        publisher,
        names,
        delivery_limit: settings.amqp.delivery_limit,
        permits: Arc::new(Semaphore::new(settings.worker.concurrency)),
        pingpp_permits: Arc::new(Semaphore::new(settings.worker.pingpp_concurrency)),
        shutdown: shutdown.clone(),
    });
    // Parked Ping++ events go back on the queue when due, on this session's publisher.
    let sweeper = tokio::spawn(put_back_due_events_periodically(context.clone()));
    let mut tasks = JoinSet::new();
    // Commands that can share a transaction wait here until a transaction slot is free and no
    // more are ready right now, or until the batch is full (group commit). A command never
    // waits while a slot is free.
    let batch_size = settings.worker.batch_size.max(1);
    let mut batch: Vec<(Envelope, Delivery)> = Vec::new();
    let outcome = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => match decode(&delivery.data) {
                    Ok(envelope) if batch_size > 1 && !context.engine.waits_on_pingpp(envelope.kind) => {
                        batch.push((envelope, delivery));
                        if batch.len() >= batch_size {
                            let context = context.clone();
                            let full = std::mem::take(&mut batch);
                            tasks.spawn(async move { handle_batch(&context, full).await });
                        }
                    }
                    decoded => {
                        let context = context.clone();
                        tasks.spawn(async move { handle(&context, delivery, decoded).await });
                    }
                },
                Some(Err(e)) => break Err(anyhow::anyhow!("consumer failed: {e}")),
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
            },
            next = events.next() => match next {
                Some(Ok(delivery)) => {
                    let context = context.clone();
                    tasks.spawn(async move { handle_event(&context, delivery).await });
                }
                Some(Err(e)) => break Err(anyhow::anyhow!("event consumer failed: {e}")),
                None => break Err(anyhow::anyhow!("the broker cancelled the event consumer")),
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    error!(error = %e, "a command handler panicked");
                }
            }
            // While every transaction slot is busy the batch keeps growing: that is the group
            // commit. A free slot takes whatever has arrived.
            _ = std::future::ready(()), if !batch.is_empty() && context.permits.available_permits() > 0 => {
                let context = context.clone();
                let ready = std::mem::take(&mut batch);
                tasks.spawn(async move { handle_batch(&context, ready).await });
            }
        }
    };
    // Not started: left unacknowledged, so the broker redelivers them.
    drop(batch);
    if outcome.is_err() {
        // The broker went away: nothing in hand can be acknowledged any more, and the broker
        // redelivers all of it. Waiting for those handlers would only delay the reconnect (a
        // nack racing the connection's loss has been seen never to return, holding the drain
        // below for the whole shutdown timeout), so they end here, as in a crash.
        if !tasks.is_empty() {
            warn!(
                left = tasks.len(),
                "abandoning commands in hand, they will be redelivered"
            );
        }
        tasks.abort_all();
    } else {
        // Stop taking messages, then finish those in hand within the shutdown bound; whatever
        // is still unacknowledged after that is redelivered by the broker.
        for tag in [consumer.tag(), events.tag()] {
            let _ = channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await;
        }
        let drained = tokio::time::timeout(settings.shutdown_timeout(), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = tasks.len(),
                "shutdown timeout: abandoning commands in hand, they will be redelivered"
            );
            tasks.abort_all();
        }
    }
    sweeper.abort();
    let _ = connection.close(200, "bye".into()).await;
    outcome
}

/// How often the worker looks for parked events that are due.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Most parked events put back in one sweep.
const SWEEP_LIMIT: i64 = 100;

/// Puts parked Ping++ events back on the webhooks queue when they are due, and keeps
/// `pluspay_pingpp_events_waiting` current. Runs for one broker session.
async fn put_back_due_events_periodically(context: Arc<Context>) {
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
    }
}

async fn put_back_due_events(context: &Context) -> anyhow::Result<()> {
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

/// One command delivery, decoded once by the consumer loop.
async fn handle(context: &Context, delivery: Delivery, decoded: Result<Envelope, Malformed>) {
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
async fn process(context: &Context, delivery: &Delivery, envelope: &Envelope) -> &'static str {
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
async fn answer(context: &Context, delivery: &Delivery, applied: &Applied) -> &'static str {
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
async fn handle_batch(context: &Context, batch: Vec<(Envelope, Delivery)>) {
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

/// Not the message's fault and not transient (a bug, a broken schema): never a rejection. It
/// is tried again, and after the delivery limit goes to the dead letters with the reason.
async fn fail(context: &Context, delivery: &Delivery, e: &EngineError) -> &'static str {
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
async fn with_retries<T, F, Fut>(context: &Context, attempt: F) -> Option<Result<T, EngineError>>
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

/// A verified Ping++ event from the webhook listener.
async fn handle_event(context: &Context, delivery: Delivery) {
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

/// Publishes the result on the results exchange and, when asked, to the command's `reply_to`.
async fn publish_result(
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
async fn dead_letter(context: &Context, delivery: &Delivery, malformed: &Malformed) {
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

/// Publishes the message to the dead letters with its reason and acknowledges it; `false` if
/// it is left for redelivery instead.
async fn dead_letter_only(context: &Context, delivery: &Delivery, reason: &str) -> bool {
    let properties: BasicProperties = with_header(
        delivery.properties.clone().with_delivery_mode(2),
        ERROR_HEADER,
        reason,
    );
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
async fn ack(delivery: &Delivery) {
    report_unsettled("ack", delivery.ack(BasicAckOptions::default()).await);
}

/// Gives a delivery back to the broker, to be delivered again (try again later).
async fn requeue(delivery: &Delivery) {
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
fn report_unsettled(what: &'static str, settled: Result<bool, lapin::Error>) {
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
