//! Exchanges and queues, declared at every start (declaring is idempotent).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

use crate::config::AmqpSettings;

use crate::domain::command::CommandType;

/// The names of docs/CONTRACT.md §1 under a configurable namespace (default `pluspay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub commands_exchange: String,
    pub commands_queue: String,
    pub results_exchange: String,
    pub events_exchange: String,
    pub dead_exchange: String,
    pub dead_queue: String,
    /// Verified Ping++ webhook events, published by the listener and applied by the worker.
    pub webhooks_exchange: String,
    pub webhooks_queue: String,
}

/// The routing key of Ping++ events on the webhooks exchange.
pub const PINGPP_ROUTING_KEY: &str = "pingpp";

impl Names {
    pub fn new(namespace: &str) -> Self {
        Names {
            commands_exchange: format!("{namespace}.commands"),
            commands_queue: format!("{namespace}.commands"),
            results_exchange: format!("{namespace}.results"),
            events_exchange: format!("{namespace}.events"),
            dead_exchange: format!("{namespace}.dead"),
            dead_queue: format!("{namespace}.dead"),
            webhooks_exchange: format!("{namespace}.webhooks"),
            webhooks_queue: format!("{namespace}.webhooks"),
        }
    }
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// A quorum queue's arguments: its replicas on `group_size` nodes, its leader on the node
/// with the fewest leaders (not the declaring one), so that queues spread over a cluster.
fn quorum_queue(group_size: u16) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-quorum-initial-group-size".into(),
        AMQPValue::LongInt(group_size.into()),
    );
    args.insert(
        "x-queue-leader-locator".into(),
        AMQPValue::LongString("balanced".into()),
    );
    args
}

/// The arguments that place a quorum queue's replicas and leader.
const PLACEMENT: [&str; 2] = ["x-quorum-initial-group-size", "x-queue-leader-locator"];

/// Declares a quorum queue. RabbitMQ fixes a queue's arguments when it is made and refuses a
/// declaration whose arguments differ (406), so a queue made before the placement arguments
/// existed is declared again without them and kept as it is; any other difference (another
/// delivery limit, a classic queue) still fails. Each attempt has its own channel: a refusal
/// closes it.
async fn declare_quorum_queue(
    connection: &Connection,
    name: &str,
    args: FieldTable,
) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let first = connection.create_channel().await?;
    match first
        .queue_declare(name.into(), options, args.clone())
        .await
    {
        Ok(_) => {
            let _ = first.close(200, "declared".into()).await;
            return Ok(());
        }
        Err(e) if is_precondition_failed(&e) => {}
        Err(e) => return Err(e),
    }
    let mut without_placement = FieldTable::default();
    for (key, value) in args.inner() {
        if !PLACEMENT.contains(&key.as_str()) {
            without_placement.insert(key.clone(), value.clone());
        }
    }
    let second = connection.create_channel().await?;
    match second
        .queue_declare(name.into(), options, without_placement)
        .await
    {
        Ok(_) => {
            let _ = second.close(200, "declared".into()).await;
            tracing::info!(
                queue = name,
                "the queue was made without replica placement arguments; kept as it is"
            );
            Ok(())
        }
        // Without them it still differs: this refusal names the argument that does.
        Err(e) => Err(e),
    }
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    reply_code(e) == Some(406)
}

/// The AMQP reply code the broker closed the channel or connection with, if it did.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(error) => Some(error.get_id()),
        _ => None,
    }
}

/// The arguments of a queue the worker consumes: the broker's own backstop against a poison
/// message, which after `delivery_limit` deliveries dead-letters it (the worker normally does
/// so first, with the reason).
fn work_queue(names: &Names, settings: &AmqpSettings) -> FieldTable {
    let mut args = quorum_queue(settings.quorum_group_size);
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(names.dead_exchange.as_str().into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(settings.delivery_limit.into()),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    args
}

/// Declares every exchange, queue and binding of docs/CONTRACT.md §1 on channels of its own.
pub async fn declare(
    connection: &Connection,
    names: &Names,
    settings: &AmqpSettings,
) -> lapin::Result<()> {
    declare_webhooks(connection, names, settings).await?;
    declare_quorum_queue(
        connection,
        &names.commands_queue,
        work_queue(names, settings),
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            names.commands_exchange.as_str().into(),
            ExchangeKind::Direct,
            durable(),
            FieldTable::default(),
        )
        .await?;
    for kind in CommandType::ALL {
        channel
            .queue_bind(
                names.commands_queue.as_str().into(),
                names.commands_exchange.as_str().into(),
                kind.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    for exchange in [&names.results_exchange, &names.events_exchange] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                durable(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Declares what the webhook listener uses, and nothing of the commands: the webhooks and
/// dead-letter exchanges and queues. Its broker user then needs no permission on the commands,
/// results and events names (docs/OPERATIONS.md, "Broker users").
pub async fn declare_webhooks(
    connection: &Connection,
    names: &Names,
    settings: &AmqpSettings,
) -> lapin::Result<()> {
    declare_quorum_queue(
        connection,
        &names.dead_queue,
        quorum_queue(settings.quorum_group_size),
    )
    .await?;
    declare_quorum_queue(
        connection,
        &names.webhooks_queue,
        work_queue(names, settings),
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            names.dead_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            names.dead_queue.as_str().into(),
            names.dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.webhooks_exchange.as_str().into(),
            ExchangeKind::Direct,
            durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            names.webhooks_queue.as_str().into(),
            names.webhooks_exchange.as_str().into(),
            PINGPP_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Whether the commands exchange and queue exist. A passive declaration needs no permission,
/// so a client whose broker user may not declare the topology can look first.
pub async fn commands_exist(connection: &Connection, names: &Names) -> lapin::Result<bool> {
    let channel = connection.create_channel().await?;
    let passive = async {
        channel
            .exchange_declare(
                names.commands_exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                names.commands_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>(())
    };
    match passive.await {
        Ok(()) => {
            let _ = channel.close(200, "looked".into()).await;
            Ok(true)
        }
        // NOT_FOUND closes the channel, not the connection.
        Err(e) if reply_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}
