//! The broker users of docs/OPERATIONS.md ("Broker users"), made with scripts/broker-users.sh
//! on the test broker: what each may not do is refused by RabbitMQ, and the whole flow works
//! with nothing more (a worker, a webhook listener, an upstream and an operator, each its own
//! user).

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};
use pluspay::amqp::publisher::{header_str, json_properties};
use pluspay::amqp::topology::reply_code;
use pluspay::worker::ERROR_HEADER;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::{
    approve_as, cash_status, no_ack_consumer, temporary_queue, BrokerClient, BrokerUser, TestEnv,
    WAIT,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker-users.sh");
const ACCESS_REFUSED: Option<u16> = Some(403);

/// Gives `user` the permissions of `role` on `namespace`, as the script prints them.
async fn grant(role: &str, user: &BrokerUser, namespace: &str) {
    let services = std::env::var("PP_SERVICES_SCRIPT").expect("PP_SERVICES_SCRIPT");
    let dir = std::env::var("PP_SERVICES_DIR").expect("PP_SERVICES_DIR");
    let out = tokio::process::Command::new("bash")
        .args([SCRIPT, "apply", role, &user.name, namespace])
        .env("RABBITMQCTL", format!("bash {services} rabbitmqctl {dir}"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The reply code a broker refusal closed the channel with; `None` if the call succeeded.
async fn refusal<T>(call: impl Future<Output = lapin::Result<T>>) -> Option<u16> {
    match tokio::time::timeout(WAIT, call).await.expect("an answer") {
        Ok(_) => None,
        Err(e) => Some(reply_code(&e).unwrap_or_else(|| panic!("not a refusal: {e}"))),
    }
}

/// Publishes with confirms on a channel of its own: `None` once the broker took it.
async fn publish(connection: &Connection, exchange: &str, routing_key: &str) -> Option<u16> {
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed = async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                b"{}",
                json_properties(),
            )
            .await?
            .await
    };
    refusal(confirmed).await
}

async fn consume(connection: &Connection, queue: &str) -> Option<u16> {
    let channel = connection.create_channel().await.unwrap();
    refusal(channel.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
}

/// Binds `queue` to `exchange` for every routing key.
async fn bind(connection: &Connection, queue: &str, exchange: &str) -> Option<u16> {
    let channel = connection.create_channel().await.unwrap();
    refusal(channel.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
}

/// Binds a new server-named queue of this connection to `exchange`.
async fn bind_own_queue(connection: &Connection, exchange: &str) -> Option<u16> {
    let channel = connection.create_channel().await.unwrap();
    let (queue, _consumer) = temporary_queue(&channel).await;
    bind(connection, &queue, exchange).await
}

/// Waits until `exchange` exists (a passive declaration: allowed to anyone).
async fn wait_for_exchange(connection: &Connection, exchange: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let channel = connection.create_channel().await.unwrap();
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let looked = channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await;
        match looked {
            Ok(()) => return,
            Err(e) if reply_code(&e) == Some(404) => {}
            Err(e) => panic!("looking for {exchange}: {e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no {exchange}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_json(consumer: &mut lapin::Consumer) -> Value {
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap();
    serde_json::from_slice(&delivery.data).unwrap()
}

#[test]
fn the_documented_commands_are_the_scripts() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md"))
        .unwrap();
    for (role, user) in [
        ("upstream", "api-1"),
        ("operator", "ops-alice"),
        ("worker", "pluspay-worker"),
        ("webhooks", "pluspay-webhooks"),
    ] {
        let out = std::process::Command::new("bash")
            .args([SCRIPT, "print", role, user])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let command = String::from_utf8(out.stdout).unwrap();
        assert!(
            doc.contains(command.trim()),
            "docs/OPERATIONS.md lacks the {role} command: {command}"
        );
    }
    // A name whose own queues would cover pluspay's is refused.
    for user in ["pluspay", "amq", "a.b"] {
        let out = std::process::Command::new("bash")
            .args([SCRIPT, "print", "upstream", user])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{user}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_broker_user_can_do_its_part_and_nothing_else() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    let namespace = env.settings.amqp.namespace.clone();
    let names = env.names.clone();
    let upstream = BrokerUser::add("api").await;
    let ops = BrokerUser::add("ops").await;
    let worker_user = BrokerUser::add("worker").await;
    let hooks_user = BrokerUser::add("hooks").await;
    grant("upstream", &upstream, &namespace).await;
    grant("operator", &ops, &namespace).await;
    grant("worker", &worker_user, &namespace).await;
    grant("webhooks", &hooks_user, &namespace).await;

    // The worker and the listener, each as its own user; nothing else declares the topology.
    let admin_settings = env.settings.clone();
    env.settings.security.operator_users = vec![ops.name.clone()];
    env.settings.amqp.url = worker_user.url(&env);
    let _worker = env.start_worker();
    let key_file = std::env::temp_dir().join(format!("pingpp-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, fake.public_key_pem()).unwrap();
    let mut listener_settings = env.settings.clone();
    listener_settings.amqp.url = hooks_user.url(&env);
    listener_settings.pingpp.public_key = Some(key_file);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook_url = format!("http://{}/webhooks/pingpp", tcp.local_addr().unwrap());
    let stop_listener = CancellationToken::new();
    tokio::spawn(pluspay::webhook::serve(
        tcp,
        listener_settings,
        stop_listener.clone(),
    ));

    let mut client = BrokerClient::connect_as(&env.settings, &upstream.url(&env)).await;
    let connection = client.connection.clone();
    // The events exchange is the worker's last declaration.
    wait_for_exchange(&connection, &names.events_exchange).await;

    // What upstream may not do.
    assert_eq!(
        consume(&connection, &names.commands_queue).await,
        ACCESS_REFUSED,
        "consume the commands"
    );
    assert_eq!(
        bind_own_queue(&connection, &names.commands_exchange).await,
        ACCESS_REFUSED,
        "read others' commands"
    );
    for exchange in [
        &names.results_exchange,
        &names.events_exchange,
        &names.webhooks_exchange,
    ] {
        assert_eq!(
            publish(&connection, exchange, "pingpp").await,
            ACCESS_REFUSED,
            "publish to {exchange}"
        );
    }
    // Nor through the default exchange, straight into a queue.
    assert_eq!(
        publish(&connection, "", &names.webhooks_queue).await,
        ACCESS_REFUSED,
        "publish to the webhooks queue"
    );
    assert_eq!(
        consume(&connection, &names.dead_queue).await,
        ACCESS_REFUSED,
        "consume the dead letters"
    );
    assert_eq!(
        bind_own_queue(&connection, &names.dead_exchange).await,
        ACCESS_REFUSED,
        "read the dead letters"
    );
    let channel = connection.create_channel().await.unwrap();
    assert_eq!(
        refusal(channel.queue_delete(
            names.commands_queue.as_str().into(),
            QueueDeleteOptions::default()
        ))
        .await,
        ACCESS_REFUSED,
        "delete the commands queue"
    );
    // The listener may not publish commands, nor the results upstream trusts.
    let hooks = pluspay::amqp::connect(&hooks_user.url(&env), "test-hooks")
        .await
        .unwrap();
    assert_eq!(
        publish(&hooks, &names.commands_exchange, "transfer").await,
        ACCESS_REFUSED,
        "the listener publishes a command"
    );
    assert_eq!(
        publish(&hooks, &names.results_exchange, "transfer.succeeded").await,
        ACCESS_REFUSED,
        "the listener publishes a result"
    );
    let _ = hooks.close(200, "bye".into()).await;

    // What upstream may do: a durable queue of its own name, bound to the results.
    let own_queue = format!("{}.results", upstream.name);
    let channel = connection.create_channel().await.unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(own_queue.as_str().into(), durable, quorum)
        .await
        .expect("declare a queue of its own");
    assert_eq!(
        bind(&connection, &own_queue, &names.results_exchange).await,
        None
    );
    let mut results = no_ack_consumer(&channel, &own_queue).await;
    let mut events = client.watch(&names.events_exchange, "recharge.#").await;

    // A recharge through the worker, paid through the listener.
    let recharge = client
        .call(
            json!({"id": "lp-recharge", "type": "recharge", "user_id": 7,
                     "data": {"type": "alipay", "amount": 1_000}}),
        )
        .await;
    assert_eq!(recharge["status"], "succeeded", "{recharge}");
    assert_eq!(next_json(&mut results).await["id"], "lp-recharge");
    let charge = recharge["data"]["pingpp_order"]["id"].as_str().unwrap();
    let (body, signature) = fake.signed_event("charge.succeeded", fake.pay(charge));
    let delivered = fake.send_webhook(&webhook_url, &body, &signature).await;
    assert_eq!(delivered.as_u16(), 200, "the listener enqueued the event");
    let credited = crate::support::next_event(&mut events).await;
    assert_eq!(credited["type"], "recharge.succeeded", "{credited}");
    assert_eq!(env.balance(7).await, 1_000);

    // A cash request, approved by the operator and not by upstream.
    let cash = client
        .call(json!({"id": "lp-cash", "type": "cash", "user_id": 7,
                     "data": {"value": 300, "type": "alipay", "account": "u7@example.com"}}))
        .await;
    assert_eq!(cash["status"], "succeeded", "{cash}");
    let cash_id = cash["data"]["cash"]["id"].as_i64().unwrap();
    let approve = json!({"cash": cash_id, "remark": "ok"});
    let refused = client
        .call(
            json!({"id": "lp-approve", "type": "cash.approve", "user_id": 10_000,
                     "data": approve}),
        )
        .await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert_eq!(cash_status(&env, cash_id).await, 0, "still waiting");
    let approved = approve_as(&env, ops.url(&env), "lp-approve", &approve).await;
    assert_eq!(approved["status"], "succeeded", "{approved}");
    assert_eq!(cash_status(&env, cash_id).await, 1, "approved");

    // Upstream's write on the commands exchange covers the queue of the same name, so it may
    // bind that queue to the results: a result routed back in is dead-lettered, unanswered
    // (answering it would route another result back, for ever).
    assert_eq!(
        bind(&connection, &names.commands_queue, &names.results_exchange).await,
        None
    );
    let wallet = client
        .call(json!({"id": "lp-wallet", "type": "wallet.get", "user_id": 7}))
        .await;
    assert_eq!(wallet["status"], "succeeded", "{wallet}");
    // The test broker's own user reads the dead letters.
    let admin = BrokerClient::connect(&admin_settings).await;
    let dead = admin.dead_letters(1).await;
    let copy: Value = serde_json::from_slice(&dead[0].data).unwrap();
    assert_eq!(copy["id"], "lp-wallet", "{copy}");
    assert_eq!(copy["status"], "succeeded", "the result itself: {copy}");
    let reason = header_str(dead[0].properties.headers(), ERROR_HEADER).unwrap_or_default();
    assert!(reason.contains(&names.results_exchange), "{reason}");
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_unbind(
            names.commands_queue.as_str().into(),
            names.results_exchange.as_str().into(),
            "#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_delete(own_queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete its own queue");
    stop_listener.cancel();
    assert!(env.audit().await.ok);
}
