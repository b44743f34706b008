//! The Ping++ webhook listener (docs/CONTRACT.md §2): verifies each delivery's signature over the
//! raw body, publishes the body unchanged to `<namespace>.webhooks` and answers 2xx only once
//! the broker has confirmed it.
//!
//! - [`run`] binds `webhook.listen` and serves until the token is cancelled.
//! - [`serve`] serves on a listener the caller bound (tests bind `127.0.0.1:0` and read the port).
//!
//! Routes: `POST /webhooks/pingpp` and `POST /api/v2/plus-pay/webhooks`; `GET /healthz` (the
//! process answers) and `GET /readyz` (broker connection up and the database answers).
//! Shutdown: stop accepting, let requests in hand finish within `worker.shutdown_timeout_secs`,
//! then drop what is left (Ping++ delivers those again), then close the broker connection.

mod broker;
mod handler;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::amqp::Names;
use crate::config::{PingppSettings, Settings};
use crate::pingpp::PingppPublicKey;

pub use handler::{Outcome, WEBHOOK_PATHS};

/// Loads the key, binds `webhook.listen` and serves until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_readiness(settings, shutdown, || {}).await
}

/// As `run`, calling `on_ready` once the port is bound (systemd's READY=1).
pub async fn run_with_readiness(
    settings: Settings,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(),
) -> anyhow::Result<()> {
    // Checked before binding, so a misconfigured listener never takes the port.
    let key = load_public_key(&settings.pingpp)?;
    let listener = TcpListener::bind(settings.webhook.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "webhook.listen: cannot bind {}: {e}",
                settings.webhook.listen
            )
        })?;
    on_ready();
    serve_with_key(listener, settings, key, shutdown).await
}

/// Serves on `listener` (its address wins over `webhook.listen`) until `shutdown` is cancelled.
/// Fails at once, before accepting anything, when `pingpp.public_key` is unset or unusable.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let key = load_public_key(&settings.pingpp)?;
    serve_with_key(listener, settings, key, shutdown).await
}

/// Reads `pingpp.public_key`; every error names the setting.
pub fn load_public_key(settings: &PingppSettings) -> anyhow::Result<PingppPublicKey> {
    let path = settings.public_key.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "pingpp.public_key (PLUSPAY_PINGPP_PUBLIC_KEY) is not set: the webhook listener \
             needs Ping++'s public key to verify deliveries"
        )
    })?;
    let pem = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("pingpp.public_key: cannot read {}: {e}", path.display()))?;
    PingppPublicKey::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("pingpp.public_key {}: {e}", path.display()))
}

async fn serve_with_key(
    listener: TcpListener,
    settings: Settings,
    key: PingppPublicKey,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The connection outlives the HTTP side's drain, so requests in hand can still publish.
    let broker_stop = CancellationToken::new();
    let (broker, broker_task) = broker::start(&settings, broker_stop.clone())?;
    // Only `/readyz` uses the database: a small pool, quick to give up.
    let mut db_settings = settings.database.clone();
    db_settings.pool_size = 2;
    db_settings.pool_timeout_ms = db_settings.pool_timeout_ms.min(2_000);
    let db = crate::db::pool(&db_settings)?;
    let read_timeout = Duration::from_millis(settings.webhook.read_timeout_ms);
    info!(
        address = %listener.local_addr()?,
        ?key,
        paths = ?WEBHOOK_PATHS,
        "webhook listener: accepting"
    );
    let state = Arc::new(handler::State {
        key,
        names: Names::new(&settings.amqp.namespace),
        max_body_bytes: settings.webhook.max_body_bytes,
        read_timeout,
        broker,
        db,
    });

    let mut http = http1::Builder::new();
    // A client that trickles its headers loses its connection after the read timeout.
    http.timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let graceful = GracefulShutdown::new();
    // After the drain timeout, connections still open are dropped.
    let abandon = CancellationToken::new();
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!(error = %e, "webhook listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move { handler::handle(&state, request).await }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let abandon = abandon.clone();
        // One task per connection: a slow client holds up nobody else.
        connections.spawn(async move {
            tokio::select! {
                served = connection => if let Err(e) = served {
                    debug!(error = %e, "webhook connection ended with an error");
                },
                _ = abandon.cancelled() => {}
            }
        });
    }
    drop(listener);
    info!("webhook listener: stopped accepting; finishing requests in hand");
    if tokio::time::timeout(settings.shutdown_timeout(), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("webhook listener: shutdown timeout; dropping requests in hand (Ping++ redelivers)");
        abandon.cancel();
    }
    connections.close();
    connections.wait().await;
    broker_stop.cancel();
    let _ = broker_task.await;
    info!("webhook listener: stopped");
    Ok(())
}
