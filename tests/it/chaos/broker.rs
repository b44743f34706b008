//! The test's broker clients: a publisher that outlives the broker, watch queues, counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use pluspay::amqp::{self, Publisher};

use super::{BROKER_CALL, PUBLISH_DEADLINE};

/// A confirming publisher that survives the broker going away: it reconnects (to the next
/// node of a cluster) and publishes again until the broker confirms. A confirm lost with the
/// connection means the message may arrive twice, which the system must absorb like any
/// duplicate.
pub(super) struct RobustPublisher {
    urls: Vec<String>,
    next: usize,
    name: String,
    link: Option<(Arc<Connection>, Publisher)>,
    pub(super) connects: usize,
    pub(super) retries: usize,
}

impl RobustPublisher {
    /// Connects to `urls[first]` first, then to the next one whenever a connection fails.
    pub(super) fn new(urls: &[String], first: usize, name: String) -> Self {
        RobustPublisher {
            urls: urls.to_vec(),
            next: first % urls.len(),
            name,
            link: None,
            connects: 0,
            retries: 0,
        }
    }

    pub(super) async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        let mut last_error = String::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: nothing confirmed for {PUBLISH_DEADLINE:?}: {last_error}",
                self.name
            );
            if self.link.is_none() {
                let url = &self.urls[self.next];
                match amqp::connect(url, &self.name).await.map(Arc::new) {
                    Ok(connection) => match Publisher::open(connection.clone()).await {
                        Ok(publisher) => {
                            self.connects += 1;
                            self.link = Some((connection, publisher));
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            self.next = (self.next + 1) % self.urls.len();
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    },
                    Err(e) => {
                        last_error = e.to_string();
                        self.next = (self.next + 1) % self.urls.len();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let (_, publisher) = self.link.as_ref().unwrap();
            match publisher
                .publish(exchange, routing_key, body, properties.clone(), true)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    last_error = e.to_string();
                    self.retries += 1;
                    // The next connection goes to the next node.
                    self.next = (self.next + 1) % self.urls.len();
                    if let Some((connection, _)) = self.link.take() {
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                connection.close(200, "reconnecting".into()),
                            )
                            .await;
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    // On every node of a cluster, so that results survive the loss of one.
    args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(3));
    args
}

pub(super) async fn declare_watch(channel: &lapin::Channel, queue: &str, exchange: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum(),
        )
        .await
        .expect("declare a watch queue");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind a watch queue");
}

/// Ready messages in a queue, asked of the first node that answers, or None while none can
/// say.
pub(super) async fn ready_count(urls: &[String], queue: &str) -> Option<u32> {
    for url in urls {
        // Every call is bounded: lapin can hang on a connection the broker is dropping, and a
        // count that never comes would stall the test after the last result.
        let count = tokio::time::timeout(BROKER_CALL * 3, count_ready(url, queue))
            .await
            .ok()
            .flatten();
        if count.is_some() {
            return count;
        }
    }
    None
}

async fn count_ready(url: &str, queue: &str) -> Option<u32> {
    let connection = tokio::time::timeout(BROKER_CALL, amqp::connect(url, "chaos-count"))
        .await
        .ok()?
        .ok()?;
    let count = async {
        let channel = connection.create_channel().await.ok()?;
        let queue = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        Some(queue.message_count())
    }
    .await;
    let _ = tokio::time::timeout(BROKER_CALL, connection.close(200, "bye".into())).await;
    count
}
