//! The worker: takes commands off the queue, applies each exactly once, publishes its result,
//! and only then acknowledges it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::amqp::{self, Brokers, Names, Publisher, BROKER_TIMEOUT};
use crate::config::Settings;
use crate::domain::command::{decode, Envelope};
use crate::domain::operators::Operators;
use crate::engine::Engine;
use crate::metrics;

mod commands;
mod delivery;
mod events;
mod ledger_check;
mod ledger_roots;
mod outbox;
mod retention;
mod wallet_changed;

use commands::{forbid, handle, handle_batch, misrouted, published_as_command, published_by};
use events::{handle_event, put_back_due_events_periodically};
use ledger_check::{check_ledger_periodically, LedgerCheck};

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
    /// Who may send operator commands.
    operators: Operators,
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
    let operators = settings.security.operators()?;
    if settings.security.allow_any_operator {
        warn!(
            "security.allow_any_operator: every publisher may send operator commands \
             (cash.approve, cash.reject, cash.retrieve, wallet.freeze, wallet.unfreeze, limits.set); name the operators in \
             security.operator_users instead"
        );
    }
    let engine = Engine::from_settings(&settings)?;
    for (scope, secs) in [
        (LedgerCheck::Incremental, settings.metrics.ledger_check_secs),
        (LedgerCheck::Full, settings.metrics.ledger_full_check_secs),
    ] {
        if secs > 0 {
            tokio::spawn(check_ledger_periodically(
                engine.pool.clone(),
                scope,
                Duration::from_secs(secs),
                shutdown.clone(),
            ));
        }
    }
    if settings.worker.ledger_root_secs > 0 {
        tokio::spawn(ledger_roots::record_roots_periodically(
            engine.pool.clone(),
            Duration::from_secs(settings.worker.ledger_root_secs),
            shutdown.clone(),
        ));
    }
    if settings.worker.read_retention_secs > 0 {
        tokio::spawn(retention::remove_expired_reads(
            engine.pool.clone(),
            Duration::from_secs(settings.worker.read_retention_secs),
            shutdown.clone(),
        ));
    }
    let mut delays = amqp::reconnect_delays();
    let mut brokers = Brokers::from_settings(&settings.amqp, "worker")?;
    loop {
        let mut consumed = false;
        let outcome = session(
            &settings,
            &engine,
            &operators,
            &mut brokers,
            &shutdown,
            &mut || {
                consumed = true;
                if let Some(on_ready) = on_ready.take() {
                    on_ready();
                }
            },
        )
        .await;
        if consumed {
            // A session that worked starts the backoff over.
            delays = amqp::reconnect_delays();
        }
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if e.is::<CustodyMismatch>() => return Err(e),
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                metrics::broker_reconnect("worker");
                warn!(error = %e, ?delay, "session ended (broker or database); reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The database keeps the records of the other custody: no session can help.
#[derive(Debug, thiserror::Error)]
#[error(
    "this database keeps the records of wallet.custody = \"{kept}\", but the setting says \
     \"{configured}\": a database's custody never changes"
)]
struct CustodyMismatch {
    kept: &'static str,
    configured: &'static str,
}

/// Pins the configured custody for the database, or refuses a database kept for the other.
async fn pin_custody(engine: &Engine) -> anyhow::Result<()> {
    let configured = engine.policy.custody;
    let kept = crate::db::custody::pin(&engine.pool, configured).await?;
    if kept != configured {
        return Err(CustodyMismatch {
            kept: kept.as_str(),
            configured: configured.as_str(),
        }
        .into());
    }
    Ok(())
}

/// One connection's life: consume until shutdown (Ok) or until the broker goes away (Err).
/// `consuming` is called once it got as far as consuming.
async fn session(
    settings: &Settings,
    engine: &Engine,
    operators: &Operators,
    brokers: &mut Brokers,
    shutdown: &CancellationToken,
    consuming: &mut (dyn FnMut() + Send),
) -> anyhow::Result<()> {
    // Before anything is consumed: commands must not be applied under the wrong custody. (A
    // database that does not answer ends the session here, before any broker is tried.)
    pin_custody(engine).await?;
    let names = Names::new(&settings.amqp.namespace);
    let setup = async {
        let connection = Arc::new(brokers.connect("pluspay-worker").await?);
        // Bounded: a node that accepts the connection but cannot declare or consume (no quorum
        // for a queue) must not hold the worker; the next session tries another node.
        let consumers = tokio::time::timeout(BROKER_TIMEOUT, async {
            amqp::topology::declare(&connection, &names, &settings.amqp).await?;
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
                .await?;
            let publisher = Publisher::open(connection.clone()).await?;
            let mut consumers = Vec::new();
            for queue in [&names.commands_queue, &names.webhooks_queue] {
                consumers.push(
                    channel
                        .basic_consume(
                            queue.as_str().into(),
                            "".into(),
                            BasicConsumeOptions::default(),
                            FieldTable::default(),
                        )
                        .await?,
                );
            }
            Ok::<_, lapin::Error>((channel, publisher, consumers))
        })
        .await;
        match consumers {
            Ok(Ok(consumers)) => Ok((connection, consumers)),
            Ok(Err(e)) => Err(anyhow::anyhow!("cannot set up consuming: {e}")),
            Err(_) => Err(anyhow::anyhow!("timed out setting up consuming")),
        }
    };
    let (connection, (channel, publisher, mut consumers)) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        ready = setup => ready?,
    };
    let mut events = consumers.pop().expect("the events consumer");
    let mut consumer = consumers.pop().expect("the commands consumer");
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
        operators: operators.clone(),
        shutdown: shutdown.clone(),
    });
    // Parked Ping++ events go back on the queue when due, on this session's publisher.
    let sweeper = tokio::spawn(put_back_due_events_periodically(context.clone()));
    let expiry = tokio::spawn(outbox::expire_and_publish_periodically(context.clone()));
    let mut versions = tokio::spawn(if settings.worker.wallet_changed {
        futures_util::future::Either::Left(wallet_changed::publish_periodically(context.clone()))
    } else {
        futures_util::future::Either::Right(std::future::ready(()))
    });
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
                Some(Ok(delivery)) if !published_as_command(&context, &delivery) => {
                    let context = context.clone();
                    tasks.spawn(async move { misrouted(&context, delivery).await });
                }
                Some(Ok(delivery)) => match decode(&delivery.data) {
                    Ok(envelope) if !context.operators.may_send(envelope.kind, envelope.user_id, published_by(&delivery)) => {
                        let context = context.clone();
                        tasks.spawn(async move { forbid(&context, delivery, envelope).await });
                    }
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
    expiry.abort();
    // At shutdown the publisher of wallet.changed ends after its round (moving the cursor over
    // what it published); when the broker went away it ends here, as in a crash, and what it
    // had published goes out again next time.
    if outcome.is_ok() {
        if tokio::time::timeout(settings.shutdown_timeout(), &mut versions)
            .await
            .is_err()
        {
            versions.abort();
        }
    } else {
        versions.abort();
    }
    let _ = connection.close(200, "bye".into()).await;
    outcome
}
