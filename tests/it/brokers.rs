//! The broker side of running on a cluster, against the shared RabbitMQ: queues made before
//! their replica placement arguments existed, several broker URLs, and a publishing channel
//! the broker closed.

use std::sync::Arc;
use std::time::Duration;

use crate::support::TestEnv;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use pluspay::amqp::{self, publisher::json_properties, Brokers, Names, Publisher};
use pluspay::config::AmqpSettings;

/// The commands queue as earlier versions declared it: quorum, dead-lettering, a delivery
/// limit, but no replica placement.
async fn declare_old_commands_queue(env: &TestEnv, delivery_limit: i64) {
    let connection = amqp::connect(&env.settings.amqp.url, "test-old-queue")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    for (key, value) in [
        ("x-queue-type", AMQPValue::LongString("quorum".into())),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString(env.names.dead_exchange.as_str().into()),
        ),
        ("x-delivery-limit", AMQPValue::LongLongInt(delivery_limit)),
        (
            "x-dead-letter-strategy",
            AMQPValue::LongString("at-least-once".into()),
        ),
        ("x-overflow", AMQPValue::LongString("reject-publish".into())),
    ] {
        args.insert(key.into(), value);
    }
    channel
        .queue_declare(
            env.names.commands_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    connection.close(200, "bye".into()).await.unwrap();
}

async fn declare(env: &TestEnv) -> lapin::Result<()> {
    let connection = amqp::connect(&env.settings.amqp.url, "test-declare")
        .await
        .unwrap();
    let declared = amqp::topology::declare(&connection, &env.names, &env.settings.amqp).await;
    let _ = connection.close(200, "bye".into()).await;
    declared
}

#[tokio::test]
async fn a_queue_made_without_replica_placement_is_kept_and_other_differences_still_fail() {
    let env = TestEnv::new().await;
    declare_old_commands_queue(&env, env.settings.amqp.delivery_limit.into()).await;
    declare(&env)
        .await
        .expect("an old queue with the same limits is declared again");

    // A queue whose delivery limit differs from the setting is refused, as before.
    let other = TestEnv::new().await;
    declare_old_commands_queue(&other, 5).await;
    let refused = declare(&other).await.unwrap_err().to_string();
    assert!(refused.contains("x-delivery-limit"), "{refused}");

    // A new namespace gets the placement arguments; declaring again is harmless.
    let fresh = TestEnv::new().await;
    declare(&fresh).await.unwrap();
    declare(&fresh).await.unwrap();
}

#[tokio::test]
async fn brokers_skip_a_node_that_does_not_answer_in_either_order() {
    let env = TestEnv::new().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dead = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    let live = env.settings.amqp.url.clone();
    for urls in [vec![dead.clone(), live.clone()], vec![live.clone(), dead]] {
        // The start is random: several tries meet both orders.
        for _ in 0..4 {
            let mut brokers = Brokers::new(urls.clone(), "test");
            let connection = brokers.connect("test-brokers").await.unwrap();
            assert!(connection.status().connected());
            connection.close(200, "bye".into()).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_channel_the_broker_closed_is_replaced() {
    let env = TestEnv::new().await;
    let settings: AmqpSettings = env.settings.amqp.clone();
    let names = Names::new(&settings.namespace);
    let connection = Arc::new(amqp::connect(&settings.url, "test-replace").await.unwrap());
    amqp::topology::declare(&connection, &names, &settings)
        .await
        .unwrap();
    let publisher = Publisher::open(connection.clone()).await.unwrap();
    let first = publisher.channel().id();
    // Publishing to an exchange that does not exist makes the broker close the channel.
    let refused = publisher
        .publish("no.such.exchange", "x", b"{}", json_properties(), false)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(!publisher.channel().status().connected() || publisher.channel().id() != first);
    // A channel replaced at once would only fail again: it lives a second before the next
    // replacement.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    publisher
        .publish(
            &names.results_exchange,
            "transfer.succeeded",
            b"{}",
            json_properties(),
            false,
        )
        .await
        .expect("published on a new channel");
    assert_ne!(publisher.channel().id(), first);
    assert!(publisher.channel().status().connected());
    assert!(connection.status().connected(), "the connection was kept");
}
