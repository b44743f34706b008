//! Operator commands are applied only when the broker proved their publisher is an operator:
//! the message's `user_id` (which RabbitMQ checks against the connection's user) names one of
//! `security.operator_users`. Against the shared RabbitMQ, with a broker user of the test's own.

use crate::support::{
    approve_as, cash_status, pluspay, rabbitmqctl, spawn_pluspay, BrokerUser, TestEnv,
};
use pluspay::amqp::publisher::json_properties;
use pluspay::amqp::Publisher;
use serde_json::json;

/// A broker user of this test that may do anything, as the shared test broker's own user.
async fn add_ops_user() -> BrokerUser {
    let ops = BrokerUser::add("ops").await;
    let allowed = rabbitmqctl(&["set_permissions", "-p", "/", &ops.name, ".*", ".*", ".*"]).await;
    assert!(allowed.status.success(), "{allowed:?}");
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_broker_proven_operator_decides_a_cash_request() {
    let ops = add_ops_user().await;
    let mut env = TestEnv::new().await;
    env.settings.security.operator_users = vec![ops.name.clone()];
    env.fund(1, 1_000).await;
    let _worker = env.start_worker();
    let mut client = env.client().await;
    let cash = client
        .call(json!({"id": "op-cash", "type": "cash", "user_id": 1,
                     "data": {"value": 300, "type": "alipay", "account": "u1@example.com"}}))
        .await;
    assert_eq!(cash["status"], "succeeded", "{cash}");
    let cash_id = cash["data"]["cash"]["id"].as_i64().unwrap();
    let approve = json!({"id": "op-approve", "type": "cash.approve", "user_id": 10_000,
                         "data": {"cash": cash_id, "remark": "ok"}});

    // The upstream user (`guest`, proven but not an operator), then no user_id at all.
    let as_upstream = client.call(approve.clone()).await;
    let without_user = client
        .call_with(approve.clone(), client.reply_properties("op-approve"))
        .await;
    for refused in [&as_upstream, &without_user] {
        assert_eq!(refused["status"], "rejected", "{refused}");
        assert_eq!(refused["code"], "forbidden", "{refused}");
        assert_eq!(refused["id"], "op-approve");
    }
    assert_eq!(cash_status(&env, cash_id).await, 0, "still waiting");
    assert_eq!(
        env.count("SELECT count(*) FROM commands WHERE id = 'op-approve'")
            .await,
        0,
        "a forbidden command leaves its id free"
    );
    // Upstream commands need no proof: a transfer without user_id goes through.
    let transfer = client
        .call_with(
            json!({"id": "op-transfer", "type": "transfer", "user_id": 1,
                   "data": {"user": 2, "amount": 100}}),
            client.reply_properties("op-transfer"),
        )
        .await;
    assert_eq!(transfer["status"], "succeeded", "{transfer}");

    // Claiming to be the operator on the upstream user's connection: the broker refuses it.
    let forger = Publisher::open(client.connection.clone()).await.unwrap();
    let forged = forger
        .publish(
            &client.names.commands_exchange,
            "cash.approve",
            approve.to_string().as_bytes(),
            json_properties().with_user_id(ops.name.as_str().into()),
            true,
        )
        .await;
    assert!(forged.is_err(), "the broker took a forged user_id");

    // The operator's own `pluspay send` (which sets user_id), with the id that was refused.
    let approve = json!({"cash": cash_id, "remark": "ok"});
    let approved = approve_as(&env, ops.url(&env), "op-approve", &approve).await;
    assert_eq!(approved["status"], "succeeded", "{approved}");
    assert_eq!(cash_status(&env, cash_id).await, 1, "approved");
}

#[tokio::test]
async fn the_worker_starts_only_when_it_knows_its_operators() {
    let env = TestEnv::new().await;
    let mut vars = env.process_env();
    vars.retain(|(key, _)| *key != "PLUSPAY_SECURITY_OPERATOR_USERS");
    vars.push(("PLUSPAY_SECURITY_OPERATOR_USERS", "[]".into()));
    let refused = pluspay(&["worker"], &vars).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("security.operator_users") && stderr.contains("allow_any_operator"),
        "{stderr}"
    );

    // Allowing every publisher explicitly starts it, with a warning.
    vars.push(("PLUSPAY_SECURITY_ALLOW_ANY_OPERATOR", "true".into()));
    let mut child = spawn_pluspay(&["worker"], &vars);
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let warned = tokio::time::timeout(crate::support::WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("security.allow_any_operator") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(warned, "no warning about allow_any_operator");
    assert!(child.try_wait().unwrap().is_none(), "the worker runs");
    child.start_kill().unwrap();
}
