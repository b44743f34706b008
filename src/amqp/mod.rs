//! RabbitMQ: connecting, the topology of docs/CONTRACT.md §1, and confirmed publishing.

pub mod publisher;
pub mod topology;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

pub use publisher::{PublishError, Publisher};
pub use topology::Names;

/// Broker calls are bounded: lapin has been seen to hang in `connect` and in `basic_publish`
/// while the broker shuts down.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// The waits between attempts to reach the broker again, for the worker and the webhook
/// listener alike: short at first (a broker restart takes seconds), at most 5 s. Start a new
/// sequence once a connection worked.
pub fn reconnect_delays() -> impl Iterator<Item = Duration> + Send {
    backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times(),
    )
}

pub async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(BROKER_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "cannot connect to RabbitMQ at {}: {e}",
            crate::config::redact_url(url)
        )),
        Err(_) => Err(anyhow::anyhow!(
            "timed out connecting to RabbitMQ at {}",
            crate::config::redact_url(url)
        )),
    }
}
