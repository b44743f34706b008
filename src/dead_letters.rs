//! Dead letters for operators: list and show them without consuming them, replay one, or
//! discard one with a durable record (docs/OPERATIONS.md, "The dead-letter queue").
//!
//! AMQP cannot peek: a message is read by taking it (`basic.get`) unacknowledged, and given
//! back with a requeueing `nack` (or by closing the channel). While one channel holds a message
//! the broker gives it to no other, which is what keeps two operators from replaying the same
//! dead letter: the second one does not find it. The dead queue is a quorum queue without a
//! delivery limit, so giving a message back never drops it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::amqp::publisher::{header_int, header_str};
use crate::amqp::topology::{reply_code, PINGPP_ROUTING_KEY};
use crate::amqp::{Brokers, Names, Publisher, BROKER_TIMEOUT};
use crate::config::Settings;
use crate::domain::command::CommandType;
use crate::worker::ERROR_HEADER;

/// The stable id the worker gives a message when it dead-letters it (a new UUID).
pub const DEAD_ID_HEADER: &str = "x-pluspay-dead-id";
/// When the worker dead-lettered it, unix milliseconds.
pub const DEAD_AT_HEADER: &str = "x-pluspay-dead-at";
/// Dead letters looked through, at most, for the one an id names.
pub const MAX_SCAN: usize = 10_000;
/// The exchange the worker received it from, set when it dead-letters a message.
pub const DEAD_FROM_HEADER: &str = "x-pluspay-dead-from";
/// Who replayed a message, on the replayed copy.
pub const REPLAYED_BY_HEADER: &str = "x-pluspay-replayed-by";

/// The longest discard note kept, in characters (the table's check says the same).
pub const NOTE_MAX: usize = 1000;
/// The longest operator name kept, in characters.
pub const OPERATOR_MAX: usize = 200;

/// Headers that would make the worker take a replayed message as one already tried or
/// already dead: the broker's delivery count and dead-lettering history, and ours.
const NOT_REPLAYED: [&str; 6] = [
    "x-delivery-count",
    "x-death",
    ERROR_HEADER,
    DEAD_ID_HEADER,
    DEAD_AT_HEADER,
    DEAD_FROM_HEADER,
];
/// The broker's other dead-lettering headers (`x-first-death-queue`, `x-last-death-reason`...).
const NOT_REPLAYED_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The key to address it by: header `x-pluspay-dead-id`, or for a message dead-lettered
    /// without one the first 16 hex digits of sha256(body, 0, reason).
    pub id: String,
    /// Header `x-pluspay-error`.
    pub reason: Option<String>,
    /// The body's `"type"` when it is JSON with a string one, else the routing key.
    pub kind: Option<String>,
    /// The body's `"id"` when it is JSON with a string one.
    pub command_id: Option<String>,
    /// Header `x-pluspay-dead-at`, else the broker's `x-death` time, else the AMQP timestamp.
    #[serde(serialize_with = "serialize_time")]
    pub dead_since: Option<SystemTime>,
    /// The body as text, personal data masked ([`crate::redact::mask_body`]).
    pub body_masked: String,
    /// The routing key it was published with (the command type, or `pingpp` for an event).
    pub routing_key: String,
    /// The AMQP `user_id` it was published with: the broker user that sent it.
    pub published_by: Option<String>,
}

/// Unix milliseconds, the one form every JSON reader takes without a date parser.
fn serialize_time<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(since) => serializer.serialize_u64(since.as_millis() as u64),
        None => serializer.serialize_none(),
    }
}

impl DeadLetter {
    /// Whether it is an operator's command (by its body's type or its routing key). Such a
    /// command is never replayed: the copy would be published as the replaying operator's
    /// broker user, whoever sent the original. It is decided anew instead.
    pub fn is_operator_command(&self) -> bool {
        [self.kind.as_deref(), Some(self.routing_key.as_str())]
            .into_iter()
            .flatten()
            .filter_map(CommandType::parse)
            .any(CommandType::operator_only)
    }

    pub fn of(delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers();
        let reason = header_str(headers, ERROR_HEADER).map(str::to_owned);
        let body: Option<serde_json::Value> = serde_json::from_slice(&delivery.data).ok();
        let field = |name: &str| {
            body.as_ref()
                .and_then(|b| b.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let routing_key = delivery.routing_key.to_string();
        let id = match header_str(headers, DEAD_ID_HEADER) {
            Some(id) => id.to_owned(),
            None => hashed_id(&delivery.data, reason.as_deref()),
        };
        DeadLetter {
            id,
            kind: field("type").or_else(|| Some(routing_key.clone()).filter(|k| !k.is_empty())),
            command_id: field("id"),
            reason,
            dead_since: dead_since(&delivery.properties),
            body_masked: crate::redact::mask_body(&delivery.data),
            routing_key,
            published_by: delivery
                .properties
                .user_id()
                .as_ref()
                .map(|u| u.to_string()),
        }
    }
}

/// The id of a message dead-lettered before the worker gave ids: the same on every reading.
/// Two dead letters with the same body and reason share it; each operation takes the first.
fn hashed_id(body: &[u8], reason: Option<&str>) -> String {
    let mut hash = Sha256::new();
    hash.update(body);
    hash.update([0]);
    hash.update(reason.unwrap_or("").as_bytes());
    hex::encode(&hash.finalize()[..8])
}

fn dead_since(properties: &BasicProperties) -> Option<SystemTime> {
    let headers = properties.headers();
    if let Some(ms) = header_int(headers, DEAD_AT_HEADER).and_then(|ms| u64::try_from(ms).ok()) {
        return Some(UNIX_EPOCH + Duration::from_millis(ms));
    }
    // The broker's own dead-lettering (the work queues' delivery limit) records the time in
    // the newest `x-death` entry, in seconds.
    let broker_death = headers
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
        .and_then(|deaths| match deaths {
            AMQPValue::FieldArray(deaths) => deaths.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|death| match death {
            AMQPValue::FieldTable(death) => match death.inner().get("time") {
                Some(AMQPValue::Timestamp(seconds)) => Some(*seconds),
                _ => None,
            },
            _ => None,
        });
    broker_death
        .or(*properties.timestamp())
        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
}

/// A connection with one channel that holds what it took off the dead queue until it gives it
/// back.
struct Reader {
    connection: Arc<Connection>,
    channel: Channel,
    names: Names,
    /// The broker user this connection logged in as.
    user: Option<String>,
    /// Taken and not yet settled, in order.
    held: Vec<Delivery>,
}

impl Reader {
    async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let mut brokers = Brokers::from_settings(&settings.amqp, "dead")?;
        let connection = Arc::new(brokers.connect("pluspay-dead").await?);
        let channel = connection.create_channel().await?;
        Ok(Reader {
            connection,
            channel,
            names: Names::new(&settings.amqp.namespace),
            user: brokers.user().map(str::to_owned),
            held: Vec::new(),
        })
    }

    /// Takes the next dead letter, unacknowledged; `None` when none is left (or there is no
    /// dead queue yet: nothing was ever dead-lettered).
    async fn take(&mut self) -> anyhow::Result<Option<&Delivery>> {
        let get = self.channel.basic_get(
            self.names.dead_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        );
        match tokio::time::timeout(BROKER_TIMEOUT, get).await {
            Err(_) => anyhow::bail!("timed out reading {}", self.names.dead_queue),
            Ok(Err(e)) if reply_code(&e) == Some(404) => Ok(None),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(message))) => {
                self.held.push(message.delivery);
                Ok(self.held.last())
            }
        }
    }

    /// Takes dead letters until the one with `id`, which it removes from those held; at most
    /// `MAX_SCAN` of them, so that a wrong id does not take a whole large queue into memory.
    async fn find(&mut self, id: &str) -> anyhow::Result<Option<Delivery>> {
        while self.held.len() < MAX_SCAN {
            let Some(delivery) = self.take().await? else {
                return Ok(None);
            };
            if DeadLetter::of(delivery).id == id {
                return Ok(self.held.pop());
            }
        }
        anyhow::bail!(
            "no dead letter {id} among the first {MAX_SCAN}: discard or replay those first, or \
             use RabbitMQ's tools for a queue this long"
        )
    }

    /// Gives back everything held and closes the connection. Closing alone would give them
    /// back too; the nacks make it explicit and immediate.
    async fn close(self) {
        for delivery in &self.held {
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
        let _ =
            tokio::time::timeout(BROKER_TIMEOUT, self.connection.close(200, "bye".into())).await;
    }
}

/// Up to `limit` dead letters, oldest first, none consumed.
pub async fn list(settings: &Settings, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let mut reader = Reader::open(settings).await?;
    let mut out = Vec::new();
    let taken = async {
        while out.len() < limit {
            match reader.take().await? {
                Some(delivery) => out.push(DeadLetter::of(delivery)),
                None => break,
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    reader.close().await;
    taken.map(|()| out)
}

/// The dead letter with `id`, not consumed.
pub async fn show(settings: &Settings, id: &str) -> anyhow::Result<Option<DeadLetter>> {
    let mut reader = Reader::open(settings).await?;
    let found = reader.find(id).await;
    let shown = found.map(|found| {
        found.map(|delivery| {
            let shown = DeadLetter::of(&delivery);
            reader.held.push(delivery);
            shown
        })
    });
    reader.close().await;
    shown
}

/// Where a replayed message goes: the exchange and routing key it was first published with,
/// as far as they can be known; `waits` when a result will answer it.
struct Target {
    exchange: String,
    routing_key: String,
    waits: bool,
}

fn target(names: &Names, delivery: &Delivery, letter: &DeadLetter) -> Target {
    if delivery.routing_key.as_str() == PINGPP_ROUTING_KEY
        && came_from_the_listener(names, delivery)
    {
        return Target {
            exchange: names.webhooks_exchange.clone(),
            routing_key: PINGPP_ROUTING_KEY.into(),
            waits: false,
        };
    }
    let command_type = [letter.kind.as_deref(), Some(delivery.routing_key.as_str())]
        .into_iter()
        .flatten()
        .find_map(CommandType::parse);
    match command_type {
        Some(kind) => Target {
            exchange: names.commands_exchange.clone(),
            routing_key: kind.as_str().into(),
            waits: true,
        },
        // No exchange binding routes an unknown type: straight into the commands queue, as
        // garbage got there, to be answered `malformed` and dead-lettered again.
        None => Target {
            exchange: String::new(),
            routing_key: names.commands_queue.clone(),
            waits: true,
        },
    }
}

/// Whether the worker dead-lettered it from the webhooks exchange, which only the listener
/// publishes to. A message the broker dead-lettered itself (it has `x-death`) keeps whatever
/// headers its publisher set, so those are not believed. An event that did not come that way
/// (an upstream's message with routing key `pingpp`) is never put on the webhooks exchange.
fn came_from_the_listener(names: &Names, delivery: &Delivery) -> bool {
    let headers = delivery.properties.headers();
    let dead_lettered_by_the_broker = headers
        .as_ref()
        .is_some_and(|h| h.inner().contains_key("x-death"));
    !dead_lettered_by_the_broker
        && header_str(headers, DEAD_FROM_HEADER) == Some(names.webhooks_exchange.as_str())
}

/// Why `replay` refused a dead letter: an operator's command, which it never replays.
#[derive(Debug, thiserror::Error)]
#[error(
    "dead letter {id} is an operator's command ({kind}): it is not replayed, since the copy \
     would be published as your broker user; decide it anew (pluspay send) or discard it"
)]
pub struct OperatorCommandNotReplayed {
    pub id: String,
    pub kind: String,
}

/// The properties of a replayed copy: the original ones without the headers of
/// `NOT_REPLAYED`, published as this connection's broker user (the broker refuses any other
/// `user_id`), answering to `reply_to`.
fn replay_properties(
    original: &BasicProperties,
    user: Option<&str>,
    operator: &str,
    reply_to: &str,
    correlation_id: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(original) = original.headers() {
        for (key, value) in original.inner() {
            let key_str = key.as_str();
            if !NOT_REPLAYED.contains(&key_str)
                && !NOT_REPLAYED_PREFIXES.iter().any(|p| key_str.starts_with(p))
            {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    headers.insert(
        REPLAYED_BY_HEADER.into(),
        AMQPValue::LongString(operator.into()),
    );
    let mut properties = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_reply_to(reply_to.into())
        .with_correlation_id(correlation_id.into());
    if let Some(content_type) = original.content_type() {
        properties = properties.with_content_type(content_type.clone());
    }
    if let Some(message_id) = original.message_id() {
        properties = properties.with_message_id(message_id.clone());
    }
    if let Some(timestamp) = original.timestamp() {
        properties = properties.with_timestamp(*timestamp);
    }
    if let Some(user) = user {
        properties = properties.with_user_id(user.into());
    }
    properties
}

fn check_operator(operator: &str) -> anyhow::Result<()> {
    let length = operator.trim().chars().count();
    if length == 0 || length > OPERATOR_MAX {
        anyhow::bail!("the operator's name must be 1 to {OPERATOR_MAX} characters");
    }
    Ok(())
}

/// Republishes the message to the commands exchange as the replaying broker user, waits for its
/// result (like `pluspay send`) up to `timeout`, removes it from the dead letters, and returns
/// the result's JSON text. A Ping++ event goes back to the webhooks exchange instead, and no
/// result answers it: the text returned then says where it went.
pub async fn replay(
    settings: &Settings,
    id: &str,
    operator: &str,
    timeout: Duration,
) -> anyhow::Result<Option<String>> {
    check_operator(operator)?;
    let mut reader = Reader::open(settings).await?;
    let delivery = match reader.find(id).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => {
            reader.close().await;
            return Ok(None);
        }
        Err(e) => {
            reader.close().await;
            return Err(e);
        }
    };
    let replayed = replay_found(&reader, &delivery, operator, timeout).await;
    if replayed.is_err() && !matches!(replayed, Err(ReplayError::NoResult(_))) {
        // Not republished: the dead letter stays where it was.
        reader.held.push(delivery);
    }
    reader.close().await;
    match replayed {
        Ok(result) => Ok(Some(result)),
        Err(ReplayError::NoResult(e) | ReplayError::NotPublished(e)) => Err(e),
    }
}

enum ReplayError {
    /// Nothing was republished, the dead letter is kept.
    NotPublished(anyhow::Error),
    /// Republished and removed from the dead letters, but no result came.
    NoResult(anyhow::Error),
}

async fn replay_found(
    reader: &Reader,
    delivery: &Delivery,
    operator: &str,
    timeout: Duration,
) -> Result<String, ReplayError> {
    let letter = DeadLetter::of(delivery);
    let not_published = ReplayError::NotPublished;
    if letter.is_operator_command() {
        return Err(not_published(
            OperatorCommandNotReplayed {
                kind: letter.kind.clone().unwrap_or(letter.routing_key.clone()),
                id: letter.id,
            }
            .into(),
        ));
    }
    let target = target(&reader.names, delivery, &letter);
    // The reply queue exists before the copy is published, so the result cannot come first.
    let channel = reader
        .connection
        .create_channel()
        .await
        .map_err(|e| not_published(e.into()))?;
    let (reply_queue, mut replies) = crate::amqp::reply_queue(&channel)
        .await
        .map_err(|e| not_published(e.into()))?;
    // The original correlation id, so that an upstream matching results by it still can.
    let correlation_id = delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.to_string())
        .or_else(|| letter.command_id.clone())
        .unwrap_or_else(|| format!("replay-{}", uuid::Uuid::new_v4()));
    let properties = replay_properties(
        &delivery.properties,
        reader.user.as_deref(),
        operator,
        reply_queue.as_str(),
        &correlation_id,
    );
    let publisher = Publisher::open(reader.connection.clone())
        .await
        .map_err(|e| not_published(e.into()))?;
    publisher
        .publish(
            &target.exchange,
            &target.routing_key,
            &delivery.data,
            properties,
            true,
        )
        .await
        .map_err(|e| {
            not_published(anyhow::anyhow!(
                "republishing dead letter {}: {e}",
                letter.id
            ))
        })?;
    // Confirmed: the copy is safe, the dead letter can go. Should this ack be lost with the
    // connection, the dead letter comes back and a second replay is answered from the command
    // log.
    let acked = delivery.ack(BasicAckOptions::default()).await;
    crate::metrics::dead_letter_handled("replay");
    tracing::info!(
        dead_id = %letter.id,
        kind = letter.kind.as_deref().unwrap_or(""),
        operator,
        exchange = %target.exchange,
        acked = ?acked,
        "dead letter replayed"
    );
    if !target.waits {
        return Ok(serde_json::json!({
            "replayed": letter.id,
            "exchange": target.exchange,
            "routing_key": target.routing_key,
            "result": null,
        })
        .to_string());
    }
    let answer = crate::amqp::result_for(&mut replies, &correlation_id);
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) => Err(ReplayError::NoResult(e.context(format!(
            "dead letter {} was republished and is in the commands queue, no longer in the \
             dead letters, but its result did not arrive",
            letter.id
        )))),
        Err(_) => Err(ReplayError::NoResult(anyhow::anyhow!(
            "no result within {timeout:?} for dead letter {}: it was republished and waits in \
             the commands queue (no longer in the dead letters); is a worker running?",
            letter.id
        ))),
    }
}

/// Removes it, recording who discarded it, when, why (`note`, required, non-empty, at most
/// `NOTE_MAX` characters) and what (type, reason, masked body) durably in PostgreSQL: the
/// record is committed before the message is acknowledged.
pub async fn discard(
    settings: &Settings,
    id: &str,
    operator: &str,
    note: &str,
) -> anyhow::Result<bool> {
    check_operator(operator)?;
    let note_length = note.trim().chars().count();
    if note_length == 0 || note_length > NOTE_MAX {
        anyhow::bail!("the note must be 1 to {NOTE_MAX} characters");
    }
    // Connected first: a database that is down leaves every dead letter untouched.
    let client = crate::db::connect(&settings.database.url).await?;
    let mut reader = Reader::open(settings).await?;
    let delivery = match reader.find(id).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => {
            reader.close().await;
            return Ok(false);
        }
        Err(e) => {
            reader.close().await;
            return Err(e);
        }
    };
    let letter = DeadLetter::of(&delivery);
    let recorded = crate::db::dead_letters::record(
        &client,
        &crate::db::dead_letters::Discard {
            dead_id: &letter.id,
            operator: operator.trim(),
            note: note.trim(),
            kind: letter.kind.as_deref(),
            command_id: letter.command_id.as_deref(),
            reason: letter.reason.as_deref(),
            body_masked: &letter.body_masked,
            dead_since: letter.dead_since,
        },
    )
    .await;
    match recorded {
        Ok(record) => {
            let acked = delivery.ack(BasicAckOptions::default()).await;
            crate::metrics::dead_letter_handled("discard");
            tracing::info!(dead_id = %letter.id, record, operator, acked = ?acked, "dead letter discarded");
            reader.close().await;
            Ok(true)
        }
        Err(e) => {
            reader.held.push(delivery);
            reader.close().await;
            Err(anyhow::anyhow!(
                "could not record the discard; dead letter {id} is kept: {e}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_copies_drop_the_dead_headers_and_carry_the_operator() {
        let mut headers = FieldTable::default();
        for name in [
            "x-delivery-count",
            ERROR_HEADER,
            DEAD_ID_HEADER,
            DEAD_AT_HEADER,
            "x-first-death-queue",
            "x-last-death-reason",
            "x-death",
            "x-trace",
        ] {
            headers.insert(name.into(), AMQPValue::LongString("v".into()));
        }
        let original = BasicProperties::default()
            .with_headers(headers)
            .with_user_id("upstream".into())
            .with_content_type("application/json".into())
            .with_reply_to("their-queue".into());
        let copy = replay_properties(&original, Some("ops"), "alice", "mine", "c1");
        let kept: Vec<String> = copy
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(kept, ["x-pluspay-replayed-by", "x-trace"]);
        assert_eq!(copy.user_id().as_ref().unwrap().as_str(), "ops");
        assert_eq!(copy.reply_to().as_ref().unwrap().as_str(), "mine");
        assert_eq!(copy.correlation_id().as_ref().unwrap().as_str(), "c1");
        assert_eq!(
            copy.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(copy.delivery_mode(), &Some(2));
    }

    #[test]
    fn old_dead_letters_get_a_stable_id_from_body_and_reason() {
        let a = hashed_id(b"{}", Some("bad"));
        assert_eq!(a, hashed_id(b"{}", Some("bad")));
        assert_eq!(a.len(), 16);
        assert_ne!(a, hashed_id(b"{}", Some("worse")));
        assert_ne!(a, hashed_id(b"{}", None));
    }
}
