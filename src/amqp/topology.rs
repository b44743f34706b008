//! Exchanges and queues, declared at every start (declaring is idempotent).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

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

fn quorum_queue() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

pub async fn declare(channel: &Channel, names: &Names, delivery_limit: u32) -> lapin::Result<()> {
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            names.dead_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            names.dead_queue.as_str().into(),
            queue_options,
            quorum_queue(),
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
    // The broker's own backstop against a poison message: after `delivery_limit` deliveries it
    // dead-letters the message (the worker normally does so first, with the reason).
    let work_queue = || {
        let mut args = quorum_queue();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(names.dead_exchange.as_str().into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(delivery_limit.into()),
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
    channel
        .queue_declare(
            names.commands_queue.as_str().into(),
            queue_options,
            work_queue(),
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
        .queue_declare(
            names.webhooks_queue.as_str().into(),
            queue_options,
            work_queue(),
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
    Ok(())
}
