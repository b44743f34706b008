//! The PHP client of clients/php (php-amqplib, as the upstream Laravel application uses it)
//! against the real worker, broker and database: the steps of clients/php/tests/scenario.php
//! run as PHP processes, each printing the answer it got (the result as the engine published it,
//! or the exception's fields); this side checks the outcomes, the money, and every result
//! against docs/schemas. Needs `php` (php-cli) and Debian's php-amqplib: scripts/test.sh
//! installs them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::schemas::{self, Schema};
use crate::support::TestEnv;

const CLIENT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/php");

/// A broker that refuses connections, listed first: the client goes on to the next one.
const DEAD_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// Runs `php ARGS` in clients/php with `vars`; its exit status and stdout.
pub(crate) async fn run_php(
    args: &[&str],
    vars: &[(&str, String)],
) -> (std::process::ExitStatus, String) {
    let output = tokio::process::Command::new("php")
        .args(args)
        .current_dir(CLIENT_DIR)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run php (scripts/test.sh installs php-cli and php-amqplib)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty(), "php wrote to stderr: {stderr}");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// One step of scenario.php against this test's namespace; what it printed. A result in it
/// must match the contract's schema.
pub(crate) async fn step(env: &TestEnv, name: &str, vars: &[(&str, String)]) -> Value {
    let all = scenario_env(env, vars);
    let (status, stdout) = run_php(&["tests/scenario.php", name], &all).await;
    let answer: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("scenario.php {name} printed no JSON ({e}): {stdout}"));
    assert!(status.success(), "scenario.php {name}: {answer}");
    if let Some(result) = answer.get("result") {
        schemas::check(Schema::Result, result);
    }
    answer
}

/// `vars` and the brokers (a dead one first) and namespace of this test.
fn scenario_env<'a>(env: &TestEnv, vars: &[(&'a str, String)]) -> Vec<(&'a str, String)> {
    let mut all = vec![
        (
            "PP_AMQP_URLS",
            format!("{DEAD_BROKER},{}", env.settings.amqp.url),
        ),
        ("PP_NAMESPACE", env.settings.amqp.namespace.clone()),
    ];
    all.extend(vars.iter().cloned());
    all
}

pub(crate) fn transfer_vars(
    user: i64,
    to: i64,
    amount: i64,
    key: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("PP_USER", user.to_string()),
        ("PP_TO", to.to_string()),
        ("PP_AMOUNT", amount.to_string()),
    ];
    if let Some(key) = key {
        vars.push(("PP_KEY", key.to_owned()));
    }
    vars
}

/// A test's database and namespace with the topology declared (as a worker declares it), so
/// that the PHP client, which declares nothing, finds the commands exchange.
async fn env_with_topology() -> TestEnv {
    let env = TestEnv::new().await;
    drop(env.client().await);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_transfer_once_per_key_and_a_conflict_for_other_content() {
    let mut env = env_with_topology().await;
    env.fund(1, 1_000).await;
    env.fund(2, 500).await;
    let _worker = env.start_worker();

    let first = step(&env, "transfer", &transfer_vars(1, 2, 300, Some("php-t1"))).await;
    assert_eq!(first["outcome"], "succeeded", "{first}");
    assert_eq!(first["class"], "PlusPay\\Result");
    let result = &first["result"];
    assert_eq!(
        (&result["id"], &result["type"], &result["user_id"]),
        (&json!("php-t1"), &json!("transfer"), &json!(1))
    );
    assert_eq!(result["message"], json!(["转账成功"]));
    assert_eq!(result["data"]["order"]["amount"], 300);
    assert_eq!(first["data"], result["data"], "Result::$data");
    assert_eq!((env.balance(1).await, env.balance(2).await), (700, 800));

    // The same key again: the same result, no second effect.
    let again = step(&env, "transfer", &transfer_vars(1, 2, 300, Some("php-t1"))).await;
    assert_eq!(again["result"], first["result"]);
    assert_eq!((env.balance(1).await, env.balance(2).await), (700, 800));

    // The same key with other content: IdempotencyConflict, nothing changes.
    let conflict = step(&env, "transfer", &transfer_vars(1, 2, 301, Some("php-t1"))).await;
    assert_eq!(conflict["outcome"], "rejected", "{conflict}");
    assert_eq!(
        conflict["exception"],
        "PlusPay\\Exception\\IdempotencyConflict"
    );
    assert_eq!(conflict["code"], "idempotency_conflict");
    assert_eq!(conflict["command_id"], "php-t1");
    assert_eq!(conflict["message"], conflict["result"]["message"]);
    assert_eq!((env.balance(1).await, env.balance(2).await), (700, 800));

    // Without a key the client makes one (a UUID), and each call is a new transfer.
    let generated = step(&env, "transfer", &transfer_vars(2, 1, 50, None)).await;
    assert_eq!(generated["outcome"], "succeeded", "{generated}");
    let id = generated["result"]["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!((env.balance(1).await, env.balance(2).await), (750, 750));

    // A read: wallet.get.
    let wallet = step(&env, "wallet", &[("PP_USER", "2".into())]).await;
    assert_eq!(wallet["outcome"], "succeeded", "{wallet}");
    assert_eq!(wallet["result"]["data"]["balance"], 750);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_rejections_carry_the_code_and_field_errors() {
    let mut env = env_with_topology().await;
    env.fund(1, 100).await;
    let _worker = env.start_worker();

    let poor = step(&env, "transfer", &transfer_vars(1, 2, 101, Some("php-r1"))).await;
    assert_eq!(poor["outcome"], "rejected", "{poor}");
    assert_eq!(poor["exception"], "PlusPay\\Exception\\CommandRejected");
    assert_eq!(poor["code"], "insufficient_balance");
    assert_eq!(poor["message"], json!(["转账金额超出账户余额"]));
    assert_eq!(poor["errors"], json!({"amount": ["转账金额超出账户余额"]}));
    assert_eq!(poor["result"]["status"], "rejected");

    // A transfer without its user, through the client's generic send().
    let vars = [
        ("PP_TYPE", "transfer".to_owned()),
        ("PP_USER", "1".to_owned()),
        ("PP_DATA", r#"{"amount":10}"#.to_owned()),
        ("PP_KEY", "php-r2".to_owned()),
    ];
    let no_user = step(&env, "send", &vars).await;
    assert_eq!(no_user["outcome"], "rejected", "{no_user}");
    assert_eq!(no_user["code"], "user_required");
    assert_eq!(no_user["errors"], json!({"user": ["请填写转账用户"]}));
    assert_eq!(no_user["result"]["errors"], no_user["errors"]);

    // A type the commands exchange does not route (no such command): the broker returns the
    // mandatory message, and the client says so rather than waiting for nothing.
    let vars = [
        ("PP_TYPE", "wallet.rewind".to_owned()),
        ("PP_USER", "1".to_owned()),
        ("PP_DATA", r#"{"amount":10}"#.to_owned()),
    ];
    let (status, stdout) =
        run_php(&["tests/scenario.php", "send"], &scenario_env(&env, &vars)).await;
    assert!(!status.success(), "{stdout}");
    let unroutable: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(unroutable["exception"], "PlusPay\\Exception\\PublishFailed");
    let message = unroutable["message"].as_str().unwrap();
    assert!(message.contains("(unroutable)"), "{message}");

    assert_eq!((env.balance(1).await, env.balance(2).await), (100, 0));
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_timeout_without_a_worker_then_the_same_key_completes_once() {
    let mut env = env_with_topology().await;
    env.fund(1, 1_000).await;
    // A worker ran and stopped: the commands queue is there, nobody consumes it.
    env.start_worker().stop().await;

    let started = Instant::now();
    let mut vars = transfer_vars(1, 2, 400, Some("php-late"));
    vars.push(("PP_TIMEOUT", "2".into()));
    let late = step(&env, "transfer", &vars).await;
    let waited = started.elapsed();
    assert_eq!(late["outcome"], "timeout", "{late}");
    assert_eq!(late["exception"], "PlusPay\\Exception\\Timeout");
    assert_eq!(late["command_id"], "php-late");
    let message = late["message"].as_str().unwrap();
    assert!(
        message.contains("safe to send again with the same idempotency key"),
        "{message}"
    );
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert_eq!((env.balance(1).await, env.balance(2).await), (1_000, 0));

    // The worker is back: the same command with the same key completes, applied once (the
    // copy that waited in the queue and this one are one command).
    let _worker = env.start_worker();
    let done = step(
        &env,
        "transfer",
        &transfer_vars(1, 2, 400, Some("php-late")),
    )
    .await;
    assert_eq!(done["outcome"], "succeeded", "{done}");
    assert_eq!(done["result"]["id"], "php-late");
    env.wait_for_count(
        "SELECT count(*) FROM commands WHERE id = 'php-late' AND status = 'succeeded'",
        1,
    )
    .await;
    // Both copies handled: the queue is empty.
    let client = env.client().await;
    let channel = client.connection.create_channel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::support::ready_messages(&channel, &client.names.commands_queue).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the first copy stays in the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((env.balance(1).await, env.balance(2).await), (600, 400));
    assert_eq!(
        env.count("SELECT count(*) FROM wallet_orders WHERE target_type = 'user'")
            .await,
        2,
        "one transfer: the sender's order and the receiver's"
    );
    assert!(env.audit().await.ok);
}

/// The client's pieces without a broker (clients/php/tests/unit.php): the mapping of results
/// to Result and the exceptions, the command's encoding, broker URLs, the config, and a method
/// for every command type of docs/schemas/command.schema.json.
#[tokio::test]
async fn php_unit_checks() {
    let (status, stdout) = run_php(&["tests/unit.php"], &[]).await;
    assert!(status.success(), "{stdout}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
}

/// No broker answers: ConnectionFailed; a namespace without its exchange: PublishFailed.
#[tokio::test]
async fn php_no_broker_or_no_exchange_is_an_error() {
    let vars = [
        ("PP_AMQP_URLS", format!("{DEAD_BROKER},{DEAD_BROKER}")),
        ("PP_NAMESPACE", "pluspay".to_owned()),
        ("PP_USER", "1".to_owned()),
        ("PP_TO", "2".to_owned()),
        ("PP_AMOUNT", "1".to_owned()),
    ];
    let (status, stdout) = run_php(&["tests/scenario.php", "transfer"], &vars).await;
    assert!(!status.success());
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["exception"], "PlusPay\\Exception\\ConnectionFailed");
    let message = answer["message"].as_str().unwrap();
    assert!(!message.contains("guest:guest"), "no password: {message}");

    // The broker is there, the namespace's exchange is not: the broker refuses the message.
    let mut vars = vars.to_vec();
    vars[0].1 = std::env::var("PP_TEST_AMQP_URL").expect("PP_TEST_AMQP_URL");
    vars[1].1 = format!("nowhere_{}", uuid::Uuid::new_v4().simple());
    let (status, stdout) = run_php(&["tests/scenario.php", "transfer"], &vars).await;
    assert!(!status.success());
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["exception"], "PlusPay\\Exception\\PublishFailed");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("(refused)") && message.contains("NOT_FOUND"),
        "{message}"
    );
}
