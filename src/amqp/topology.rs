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

/// Declares a quorum queue unless it exists. A queue's arguments are fixed when it is made,
/// and RabbitMQ refuses a declaration whose arguments differ, so a queue made by an earlier
/// version (without the replica arguments) is kept as it is rather than declared again.
/// The probe is passive and on its own channel: a missing queue closes that channel.
async fn declare_quorum_queue(
    connection: &Connection,
    name: &str,
    args: FieldTable,
) -> lapin::Result<()> {
    let probe = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match probe
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => {
            let _ = probe.close(200, "declared".into()).await;
            return Ok(());
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(name.into(), durable, args).await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(error) if error.get_id() == 404)
}

/// Declares every exchange, queue and binding of docs/CONTRACT.md §1 on channels of its own.
pub async fn declare(
    connection: &Connection,
    names: &Names,
    settings: &AmqpSettings,
) -> lapin::Result<()> {
    let group_size = settings.quorum_group_size;
    declare_quorum_queue(connection, &names.dead_queue, quorum_queue(group_size)).await?;
    // The broker's own backstop against a poison message: after `delivery_limit` deliveries it
    // dead-letters the message (the worker normally does so first, with the reason).
    let work_queue = || {
        let mut args = quorum_queue(group_size);
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
    };
    declare_quorum_queue(connection, &names.commands_queue, work_queue()).await?;
    declare_quorum_queue(connection, &names.webhooks_queue, work_queue()).await?;

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
