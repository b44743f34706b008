//! Publishing with publisher confirms: a publish succeeds only once the broker has the message.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BROKER_TIMEOUT;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error while publishing: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}")]
    Unroutable(String),
    #[error("timed out waiting for the broker's confirm")]
    Timeout,
}

/// How long a publishing channel lives at least before a nack replaces it.
const MIN_CHANNEL_AGE: Duration = Duration::from_secs(1);

/// One confirm-mode channel, shared by every task of a process (lapin multiplexes confirms).
/// A channel whose messages the broker nacks (a quorum queue's leader died: seen to go on for
/// as long as that node stays down, while a new channel publishes at once) or that the broker
/// closed is replaced by a new one on the same connection, and the message is published once
/// more on it.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

struct Shared {
    connection: Arc<Connection>,
    /// The channel, and when it was opened.
    channel: Mutex<(Channel, Instant)>,
    /// One replacement at a time: the tasks that saw the same channel fail wait for it.
    replacing: tokio::sync::Mutex<()>,
}

/// A JSON message as docs/CONTRACT.md wants every message: persistent, `application/json`.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}

pub fn with_header(properties: BasicProperties, name: &str, value: &str) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(name.into(), AMQPValue::LongString(value.into()));
    properties.with_headers(headers)
}

async fn confirm_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

impl Publisher {
    pub async fn open(connection: Arc<Connection>) -> lapin::Result<Self> {
        let channel = confirm_channel(&connection).await?;
        Ok(Publisher {
            shared: Arc::new(Shared {
                connection,
                channel: Mutex::new((channel, Instant::now())),
                replacing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The channel publishes go to now.
    pub fn channel(&self) -> Channel {
        self.current().0
    }

    fn current(&self) -> (Channel, Instant) {
        self.shared
            .channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Publishes and waits for the confirm. `mandatory`: fail when nothing is bound to take
    /// the message (used where losing it silently would be wrong).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let channel = self.channel();
        let outcome = publish_on(
            &channel,
            exchange,
            routing_key,
            body,
            properties.clone(),
            mandatory,
        )
        .await;
        let channel_failed = matches!(outcome, Err(PublishError::Nacked))
            || (outcome.is_err()
                && !channel.status().connected()
                && self.shared.connection.status().connected());
        if !channel_failed {
            return outcome;
        }
        match self.replace(&channel).await {
            Ok(()) => {
                publish_on(
                    &self.channel(),
                    exchange,
                    routing_key,
                    body,
                    properties,
                    mandatory,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open a new publishing channel");
                outcome
            }
        }
    }

    /// Publishes `messages` (routing key, body, properties) in the order given on one channel,
    /// so the broker routes them in that order, and waits for all their confirms together.
    /// Not mandatory: a message no queue is bound for is dropped. Any failure fails them all
    /// (some may have gone out): the caller publishes them again, and consumers tell the
    /// copies apart by their ids. A channel the broker nacked or closed is replaced first.
    pub async fn publish_all(
        &self,
        exchange: &str,
        messages: &[(&str, Vec<u8>, BasicProperties)],
    ) -> Result<(), PublishError> {
        let channel = self.channel();
        let outcome = publish_all_on(&channel, exchange, messages).await;
        let channel_failed = matches!(outcome, Err(PublishError::Nacked))
            || (outcome.is_err()
                && !channel.status().connected()
                && self.shared.connection.status().connected());
        if channel_failed {
            if let Err(e) = self.replace(&channel).await {
                tracing::warn!(error = %e, "could not open a new publishing channel");
            }
        }
        outcome
    }

    /// Replaces `failed` with a new confirm channel, unless another task already did. A channel
    /// younger than `MIN_CHANNEL_AGE` is kept: its nacks are the queue's (a full queue
    /// refusing messages), not a dead leader's, and replacing it would only fail the confirms
    /// awaited on it.
    async fn replace(&self, failed: &Channel) -> lapin::Result<()> {
        let _one_at_a_time = self.shared.replacing.lock().await;
        let (current, opened) = self.current();
        if current.id() != failed.id() {
            return Ok(());
        }
        if opened.elapsed() < MIN_CHANNEL_AGE || !self.shared.connection.status().connected() {
            return Err(channel_error(
                std::io::ErrorKind::Other,
                "not replaced: too young, or the connection is gone",
            ));
        }
        let fresh = tokio::time::timeout(BROKER_TIMEOUT, confirm_channel(&self.shared.connection))
            .await
            .map_err(|_| {
                channel_error(std::io::ErrorKind::TimedOut, "timed out opening a channel")
            })??;
        tracing::warn!(
            old = failed.id(),
            new = fresh.id(),
            "the broker nacked or closed the publishing channel; publishing on a new one"
        );
        let (old, _) = std::mem::replace(
            &mut *self
                .shared
                .channel
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            (fresh, Instant::now()),
        );
        // Confirms still awaited on the old channel fail when it closes: their callers retry.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(BROKER_TIMEOUT, old.close(200, "replaced".into())).await;
        });
        Ok(())
    }
}

fn channel_error(kind: std::io::ErrorKind, message: &'static str) -> lapin::Error {
    lapin::ErrorKind::IOError(Arc::new(std::io::Error::new(kind, message))).into()
}

async fn publish_on(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<(), PublishError> {
    let confirm = async {
        let pending = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await?;
        Ok::<_, PublishError>(pending.await?)
    };
    match tokio::time::timeout(BROKER_TIMEOUT, confirm).await {
        Err(_) => Err(PublishError::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable(routing_key.to_owned())),
        Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
        Ok(Ok(Confirmation::NotRequested)) => {
            unreachable!("the channel is in confirm mode")
        }
    }
}

async fn publish_all_on(
    channel: &Channel,
    exchange: &str,
    messages: &[(&str, Vec<u8>, BasicProperties)],
) -> Result<(), PublishError> {
    let confirms = async {
        let mut pending = Vec::with_capacity(messages.len());
        for (routing_key, body, properties) in messages {
            pending.push(
                channel
                    .basic_publish(
                        exchange.into(),
                        (*routing_key).into(),
                        BasicPublishOptions::default(),
                        body,
                        properties.clone(),
                    )
                    .await?,
            );
        }
        for confirm in pending {
            match confirm.await? {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) => return Err(PublishError::Nacked),
                Confirmation::NotRequested => unreachable!("the channel is in confirm mode"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(BROKER_TIMEOUT, confirms)
        .await
        .unwrap_or(Err(PublishError::Timeout))
}

/// Reads a string header (RabbitMQ sends them as long strings).
pub fn header_str<'a>(headers: &'a Option<FieldTable>, name: &str) -> Option<&'a str> {
    match headers.as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Reads an integer header such as quorum queues' `x-delivery-count`.
pub fn header_int(headers: &Option<FieldTable>, name: &str) -> Option<i64> {
    match headers.as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some((*v).into()),
        AMQPValue::LongUInt(v) => Some((*v).into()),
        AMQPValue::ShortInt(v) => Some((*v).into()),
        AMQPValue::ShortUInt(v) => Some((*v).into()),
        AMQPValue::ShortShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortUInt(v) => Some((*v).into()),
        _ => None,
    }
}
