//! The listener's own RabbitMQ connection: one confirm-mode publisher, kept up by a background
//! task that reconnects with exponential backoff. Requests never wait for a connection: while
//! there is none they are answered 503 at once, and Ping++ delivers again later.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Connection, ConnectionStatus, Event};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::amqp::{self, Brokers, Names, Publisher, BROKER_TIMEOUT};
use crate::config::Settings;

/// How often the link re-checks its connection and channel besides reacting to lapin's events,
/// which do not cover a channel the broker closed on its own.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A usable connection: the publisher and the state of the connection it lives on.
#[derive(Clone)]
pub struct Link {
    pub publisher: Publisher,
    connection: ConnectionStatus,
}

impl Link {
    /// Connection and channel are open (a blocked connection is still open).
    fn alive(&self) -> bool {
        self.connection.connected() && self.publisher.channel().status().connected()
    }

    /// The broker has paused publishing (a resource alarm); a publish would only wait.
    pub fn blocked(&self) -> bool {
        self.connection.blocked()
    }
}

/// What request handlers see of the link.
#[derive(Clone)]
pub struct BrokerHandle {
    current: watch::Receiver<Option<Link>>,
    suspect: Arc<Notify>,
}

/// Why there is no link to publish on right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    Down,
    Blocked,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::Down => "down",
            Unavailable::Blocked => "blocked",
        }
    }
}

impl BrokerHandle {
    /// The publisher, if the connection is up and not blocked; never waits.
    pub fn publisher(&self) -> Result<Publisher, Unavailable> {
        match &*self.current.borrow() {
            Some(link) if !link.alive() => Err(Unavailable::Down),
            Some(link) if link.blocked() => Err(Unavailable::Blocked),
            Some(link) => Ok(link.publisher.clone()),
            None => Err(Unavailable::Down),
        }
    }

    /// A publish failed at the broker: have the link check itself now rather than at its next
    /// tick, so that following requests get 503 at once instead of failing one by one.
    pub fn report_failure(&self) {
        self.suspect.notify_one();
    }
}

/// Starts the task that keeps the link up until `stop` is cancelled; the task closes the
/// connection on its way out.
pub fn start(
    settings: &Settings,
    stop: CancellationToken,
) -> anyhow::Result<(BrokerHandle, tokio::task::JoinHandle<()>)> {
    let brokers = Brokers::from_settings(&settings.amqp, "webhooks")?;
    let (tx, rx) = watch::channel(None);
    let suspect = Arc::new(Notify::new());
    let task = tokio::spawn(maintain(
        settings.clone(),
        brokers,
        tx,
        suspect.clone(),
        stop,
    ));
    Ok((
        BrokerHandle {
            current: rx,
            suspect,
        },
        task,
    ))
}

async fn maintain(
    settings: Settings,
    mut brokers: Brokers,
    current: watch::Sender<Option<Link>>,
    suspect: Arc<Notify>,
    stop: CancellationToken,
) {
    let names = Names::new(&settings.amqp.namespace);
    let mut delays = crate::amqp::reconnect_delays();
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connect(&settings, &mut brokers, &names) => connected,
        };
        let (connection, link) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                warn!(error = %e, ?delay, "webhook listener: no broker connection; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        delays = crate::amqp::reconnect_delays();
        info!(exchange = %names.webhooks_exchange, "webhook listener: connected to the broker");
        current.send_replace(Some(link.clone()));
        let stopping = watch_link(&connection, &link, &suspect, &stop).await;
        current.send_replace(None);
        // Also when only the channel died: do not leave a half-open connection behind.
        let _ = tokio::time::timeout(BROKER_TIMEOUT, connection.close(200, "bye".into())).await;
        if stopping {
            return;
        }
        crate::metrics::broker_reconnect("webhooks");
        warn!("webhook listener: lost the broker connection; reconnecting");
    }
}

/// Waits until the link breaks (false) or `stop` is cancelled (true).
async fn watch_link(
    connection: &Connection,
    link: &Link,
    suspect: &Notify,
    stop: &CancellationToken,
) -> bool {
    let mut events = connection.events_listener();
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return true,
            event = events.next() => match event {
                Some(Event::Error(e)) => {
                    warn!(error = %e, "webhook listener: broker connection error");
                    return false;
                }
                Some(Event::ConnectionBlocked(reason)) => {
                    warn!(%reason, "webhook listener: the broker blocked publishing");
                }
                Some(Event::ConnectionUnblocked) => {
                    info!("webhook listener: the broker unblocked publishing");
                }
                Some(_) => {}
                None => return false,
            },
            _ = suspect.notified() => {}
            _ = tick.tick() => {}
        }
        if !link.alive() {
            return false;
        }
    }
}

/// Connects, declares its part of the topology and opens the confirm channel, all bounded in
/// time.
async fn connect(
    settings: &Settings,
    brokers: &mut Brokers,
    names: &Names,
) -> anyhow::Result<(Arc<Connection>, Link)> {
    let connection = Arc::new(brokers.connect("pluspay-webhooks").await?);
    let ready = tokio::time::timeout(BROKER_TIMEOUT, async {
        amqp::topology::declare_webhooks(&connection, names, &settings.amqp).await?;
        let publisher = Publisher::open(connection.clone()).await?;
        Ok::<_, lapin::Error>(publisher)
    })
    .await;
    let publisher = match ready {
        Ok(Ok(publisher)) => publisher,
        failed => {
            let _ = tokio::time::timeout(BROKER_TIMEOUT, connection.close(200, "bye".into())).await;
            return Err(match failed {
                Ok(Err(e)) => anyhow::anyhow!("cannot declare the topology: {e}"),
                _ => anyhow::anyhow!("timed out declaring the topology"),
            });
        }
    };
    let link = Link {
        publisher,
        connection: connection.status().clone(),
    };
    Ok((connection, link))
}
