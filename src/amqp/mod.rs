//! RabbitMQ: connecting, the topology of docs/CONTRACT.md §1, and confirmed publishing.

pub mod publisher;
pub mod topology;

use std::time::Duration;

use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};

use crate::config::AmqpSettings;

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
    connect_with_tls(url, name, &OwnedTLSConfig::default()).await
}

/// Connects to `url`; an `amqps://` one with `tls`'s CA beside the system's roots, checking the
/// broker's certificate and host name.
pub async fn connect_with_tls(
    url: &str,
    name: &str,
    tls: &OwnedTLSConfig,
) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()?;
    let connecting = Connection::connect_with_config(url, properties, tls.clone(), runtime);
    match tokio::time::timeout(BROKER_TIMEOUT, connecting).await {
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

/// `amqp.ca_file` as lapin takes it: the PEM text of the CA (or CAs) that signed the brokers'
/// certificates, checked to hold at least one certificate.
pub fn tls_config(settings: &AmqpSettings) -> anyhow::Result<OwnedTLSConfig> {
    let Some(path) = &settings.ca_file else {
        return Ok(OwnedTLSConfig::default());
    };
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain: Some(crate::db::tls::read_certificates_pem(path)?),
    })
}

/// The brokers of `amqp.urls`, tried in turn. Each process starts at a node of its own
/// (picked at random: process ids are all 1 in containers), so that processes spread over a
/// cluster; after a connection is lost the next attempt starts at the following node, since
/// the lost one is likely down.
pub struct Brokers {
    urls: Vec<String>,
    tls: OwnedTLSConfig,
    next: usize,
    current: Option<String>,
    /// The user the last connection logged in as.
    user: Option<String>,
    role: &'static str,
}

impl Brokers {
    /// `urls` is never empty: settings give at least `amqp.url`.
    pub fn new(urls: Vec<String>, role: &'static str) -> Self {
        assert!(!urls.is_empty(), "at least one broker URL");
        let next = (uuid::Uuid::new_v4().as_u128() % urls.len() as u128) as usize;
        Brokers {
            urls,
            tls: OwnedTLSConfig::default(),
            next,
            current: None,
            user: None,
            role,
        }
    }

    /// The brokers of the settings, with their CA.
    pub fn from_settings(settings: &AmqpSettings, role: &'static str) -> anyhow::Result<Self> {
        let plain: Vec<String> = settings
            .broker_urls()
            .iter()
            .filter_map(|url| url.parse::<lapin::uri::AMQPUri>().ok())
            .filter(|uri| uri.scheme == lapin::uri::AMQPScheme::AMQP)
            .map(|uri| uri.authority.host)
            .filter(|host| crate::db::tls::is_remote(host))
            .collect();
        if !plain.is_empty() {
            tracing::warn!(
                role,
                hosts = %plain.join(","),
                "amqp:// sends the broker password and every command in plain text over the \
                 network: use amqps://"
            );
        }
        Ok(Brokers {
            tls: tls_config(settings)?,
            ..Brokers::new(settings.broker_urls(), role)
        })
    }

    /// Connects to the first broker that answers, starting where the last attempt left off.
    pub async fn connect(&mut self, name: &str) -> anyhow::Result<Connection> {
        // A new connection is asked for once the last one is gone.
        if let Some(lost) = &self.current {
            crate::metrics::broker_disconnected(self.role, lost);
        }
        let mut failures = Vec::new();
        for offset in 0..self.urls.len() {
            let index = (self.next + offset) % self.urls.len();
            match connect_with_tls(&self.urls[index], name, &self.tls).await {
                Ok(connection) => {
                    self.next = (index + 1) % self.urls.len();
                    let node = node_label(&self.urls[index]);
                    match &self.current {
                        Some(previous) if *previous != node => tracing::warn!(
                            role = self.role, %node, %previous, "moved to another broker node"
                        ),
                        _ => tracing::info!(role = self.role, %node, "connected to the broker"),
                    }
                    crate::metrics::broker_connected(self.role, &node, self.current.as_deref());
                    self.current = Some(node);
                    self.user = url_user(&self.urls[index]);
                    return Ok(connection);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        self.next = (self.next + 1) % self.urls.len();
        Err(anyhow::anyhow!(failures.join("; ")))
    }
}

impl Brokers {
    /// The broker user of the connection made last: what RabbitMQ accepts as a message's
    /// `user_id` on it.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// The broker user a URL logs in as: what RabbitMQ accepts as the `user_id` of the messages
/// published on its connection.
pub fn url_user(url: &str) -> Option<String> {
    url.parse::<lapin::uri::AMQPUri>()
        .ok()
        .map(|uri| uri.authority.userinfo.username)
}

/// `host:port` of a broker URL: how logs and metrics name a node (never the credentials).
pub fn node_label(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "unknown".into(),
    }
}

/// A private reply queue of `channel` (exclusive, server-named, gone with the connection) and
/// its consumer, made before a command is published so that its result cannot come first.
pub async fn reply_queue(
    channel: &lapin::Channel,
) -> lapin::Result<(lapin::types::ShortString, lapin::Consumer)> {
    use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let replies = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((queue.name().clone(), replies))
}

/// Waits on `replies` for the result whose correlation id is `correlation_id`, skipping any
/// other; its JSON text.
pub async fn result_for(
    replies: &mut lapin::Consumer,
    correlation_id: &str,
) -> anyhow::Result<String> {
    use futures_util::StreamExt;
    while let Some(reply) = replies.next().await {
        let reply = reply?;
        if reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str())
            == Some(correlation_id)
        {
            return Ok(String::from_utf8_lossy(&reply.data).into_owned());
        }
    }
    anyhow::bail!("the reply queue closed before the result arrived")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_without_credentials() {
        assert_eq!(
            node_label("amqp://guest:secret@10.0.0.7:5673/%2f"),
            "10.0.0.7:5673"
        );
        assert_eq!(node_label("amqps://u:p@mq.example/%2f"), "mq.example:5671");
        assert_eq!(node_label("nonsense"), "unknown");
    }

    #[tokio::test]
    async fn every_broker_is_tried_and_named_in_the_error() {
        // Two closed ports: both attempts fail at once, and the error names both nodes.
        let closed = |_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let ports: Vec<u16> = (0..2).map(closed).collect();
        let urls = ports
            .iter()
            .map(|p| format!("amqp://guest:secret@127.0.0.1:{p}/%2f"))
            .collect();
        let mut brokers = Brokers::new(urls, "test");
        let err = brokers.connect("test").await.unwrap_err().to_string();
        for port in ports {
            assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        }
        assert!(!err.contains("secret"), "{err}");
    }
}
