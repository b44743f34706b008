//! The `pluspay` binary as operators use it: migrate, send, audit, and bad settings.

use crate::support::{empty_database, pluspay, rabbitmqctl, spawn_pluspay, TestEnv};
use serde_json::Value;

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test]
async fn migrate_applies_once_and_twice_is_harmless() {
    let url = empty_database().await;
    let env = [("PLUSPAY_DATABASE_URL", url.clone())];
    let first = pluspay(&["migrate"], &env).await;
    assert!(first.status.success(), "{first:?}");
    let every_migration: Vec<&str> = pluspay::db::migrate::MIGRATIONS
        .iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        stdout_json(&first)["applied"],
        serde_json::json!(every_migration)
    );
    let second = pluspay(&["migrate"], &env).await;
    assert!(second.status.success(), "{second:?}");
    assert_eq!(stdout_json(&second)["applied"], serde_json::json!([]));
    // Two instances migrating one database at once both succeed, and it is applied once.
    let url = empty_database().await;
    let env = [("PLUSPAY_DATABASE_URL", url.clone())];
    let (a, b) = tokio::join!(pluspay(&["migrate"], &env), pluspay(&["migrate"], &env));
    assert!(a.status.success() && b.status.success(), "{a:?} {b:?}");
    let applied: usize = [&a, &b]
        .iter()
        .map(|o| stdout_json(o)["applied"].as_array().unwrap().len())
        .sum();
    assert_eq!(applied, every_migration.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_the_result_and_exits_by_status() {
    let env = TestEnv::new().await;
    env.fund(1, 500).await;
    let _worker = env.start_worker();
    let vars = env.process_env();
    let sent = pluspay(
        &[
            "send",
            "transfer",
            "--user",
            "1",
            "--data",
            r#"{"user":2,"amount":100}"#,
        ],
        &vars,
    )
    .await;
    assert!(sent.status.success(), "{sent:?}");
    let result = stdout_json(&sent);
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["message"], serde_json::json!(["转账成功"]));
    assert_eq!(env.balance(2).await, 100);

    let refused = pluspay(
        &[
            "send",
            "transfer",
            "--user",
            "1",
            "--data",
            r#"{"user":2,"amount":100000}"#,
            "--id",
            "cli-2",
        ],
        &vars,
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let result = stdout_json(&refused);
    assert_eq!(
        (result["id"].as_str(), result["code"].as_str()),
        (Some("cli-2"), Some("insufficient_balance"))
    );

    let bad = pluspay(
        &["send", "transfer", "--user", "1", "--data", "{nope"],
        &vars,
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--data is not JSON"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn audit_passes_on_a_sound_ledger_and_fails_on_a_broken_one() {
    let env = TestEnv::new().await;
    env.fund(1, 500).await;
    let vars = env.process_env();
    let sound = pluspay(&["audit"], &vars).await;
    assert!(sound.status.success(), "{sound:?}");
    assert_eq!(stdout_json(&sound)["ok"], true);
    assert_eq!(
        stdout_json(&sound)["scope"],
        "full",
        "pluspay audit checks every row"
    );

    // Money invented outside the ledger: the balance no longer matches its entries.
    env.db
        .execute("UPDATE accounts SET balance = balance + 1, total_income = total_income + 1 WHERE user_id = 1", &[])
        .await
        .unwrap();
    let broken = pluspay(&["audit"], &vars).await;
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let report = stdout_json(&broken);
    assert_eq!(report["ok"], false);
    let failing: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // And the wallet's last version no longer shows its balance.
    assert_eq!(
        failing,
        ["balance_equals_entries", "versions_follow_entries"]
    );
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_and_is_named() {
    let bad = pluspay(&["audit"], &[("PLUSPAY_AMQP_PREFETCH", "many".into())]).await;
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(stderr.contains("amqp.prefetch"), "{stderr}");

    let missing = pluspay(&["--config", "/nonexistent/pluspay.toml", "audit"], &[]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/pluspay.toml"));

    let unknown = pluspay(
        &["audit"],
        &[("PLUSPAY_DATABSE_URL", "postgres://x@h/db".into())],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("databse_url"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_output() {
    let bad = pluspay(
        &["audit"],
        &[(
            "PLUSPAY_DATABASE_URL",
            "postgres://pluspay:hunter2@127.0.0.1:1/nowhere".into(),
        )],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
    assert!(all.contains("cannot connect to the database"), "{all}");
}

#[tokio::test]
async fn json_logs_carry_no_secrets_even_when_everything_fails() {
    use tokio::io::AsyncBufReadExt;
    let vars = [
        ("PLUSPAY_LOG_FORMAT", "json"),
        (
            "PLUSPAY_DATABASE_URL",
            "postgres://pluspay:dbsecret42@127.0.0.1:1/x",
        ),
        (
            "PLUSPAY_AMQP_URL",
            "amqp://pluspay:mqsecret42@127.0.0.1:1/%2f",
        ),
        ("PLUSPAY_PINGPP_APP_ID", "app_test"),
        ("PLUSPAY_PINGPP_SECRET_KEY", "sk_test_keysecret42"),
        ("PLUSPAY_METRICS_LISTEN", "127.0.0.1:0"),
        ("PLUSPAY_METRICS_LEDGER_CHECK_SECS", "1"),
    ]
    .map(|(key, value)| (key, value.to_owned()));
    let mut child = spawn_pluspay(&["worker"], &vars);
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (mut broker_failed, mut database_failed) = (false, false);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let parsed: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(parsed["level"].is_string(), "{line}");
            broker_failed |= line.contains("reconnecting");
            database_failed |= line.contains("ledger check");
            seen.push(line);
            if broker_failed && database_failed {
                break;
            }
        }
    };
    tokio::time::timeout(crate::support::WAIT, read)
        .await
        .expect("broker and database failures logged");
    child.start_kill().unwrap();
    let all = seen.join("\n");
    for secret in ["dbsecret42", "mqsecret42", "keysecret42"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[tokio::test]
async fn audit_of_a_missing_database_says_which_and_why() {
    let url = empty_database().await;
    let (base, _) = url.rsplit_once('/').unwrap();
    let missing = format!("{base}/pp_no_such_database");
    let output = pluspay(&["audit"], &[("PLUSPAY_DATABASE_URL", missing)]).await;
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pp_no_such_database"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}

/// The broker's process ids of the connections whose client calls itself `name`.
async fn connections_named(name: &str) -> Vec<String> {
    let out = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])
    .await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&format!("\"{name}\"")))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_publishes_again_when_its_broker_connection_goes() {
    let env = TestEnv::new().await;
    env.fund(1, 500).await;
    let mut vars = env.process_env();
    // A node that does not answer beside the live one: send connects to the live one.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    vars.push((
        "PLUSPAY_AMQP_URLS",
        format!(
            "[amqp://guest:guest@127.0.0.1:{closed}/%2f,{}]",
            env.settings.amqp.url
        ),
    ));
    let id = format!("cli-again-{}", uuid::Uuid::new_v4().simple());
    let args = [
        "send",
        "transfer",
        "--user",
        "1",
        "--data",
        r#"{"user":2,"amount":100}"#,
        "--id",
        &id,
        "--timeout",
        "60",
    ]
    .map(str::to_owned);
    let sent = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pluspay(&args, &vars).await
    });
    // No worker yet: the command waits in the queue while the broker drops send's connection.
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    let names = loop {
        let names = connections_named("pluspay-send").await;
        if !names.is_empty() {
            break names;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "send never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for name in names {
        let closed = rabbitmqctl(&["close_connection", &name, "test"]).await;
        assert!(
            closed.status.success(),
            "close_connection {name}: {closed:?}"
        );
    }
    let _worker = env.start_worker();
    let sent = sent.await.unwrap();
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(stdout_json(&sent)["id"], id.as_str());
    assert!(
        String::from_utf8_lossy(&sent.stderr).contains("trying again"),
        "{sent:?}"
    );
    // Published twice, applied once.
    assert_eq!(env.balance(2).await, 100);
}

/// A process whose database and broker URLs are only in files: `PLUSPAY_DATABASE_URL_FILE`,
/// `PLUSPAY_AMQP_URL_FILE`, never `PLUSPAY_DATABASE_URL` or `PLUSPAY_AMQP_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_and_send_read_their_urls_from_files() {
    let env = TestEnv::new().await;
    env.fund(1, 500).await;
    let dir = std::env::temp_dir().join(format!("pp-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let database_url = dir.join("database_url");
    let amqp_url = dir.join("amqp_url");
    // As an editor leaves them: a trailing newline.
    std::fs::write(&database_url, format!("{}\n", env.settings.database.url)).unwrap();
    std::fs::write(&amqp_url, format!("{}\n", env.settings.amqp.url)).unwrap();
    let mut vars: Vec<(&str, String)> = env
        .process_env()
        .into_iter()
        .filter(|(key, _)| !matches!(*key, "PLUSPAY_DATABASE_URL" | "PLUSPAY_AMQP_URL"))
        .collect();
    vars.push((
        "PLUSPAY_DATABASE_URL_FILE",
        database_url.display().to_string(),
    ));
    vars.push(("PLUSPAY_AMQP_URL_FILE", amqp_url.display().to_string()));

    let worker = spawn_pluspay(&["worker"], &vars);

    let sent = pluspay(
        &[
            "send",
            "transfer",
            "--user",
            "1",
            "--data",
            r#"{"user":2,"amount":100}"#,
            "--timeout",
            "60",
        ],
        &vars,
    )
    .await;
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(stdout_json(&sent)["status"], "succeeded");
    assert_eq!(env.balance(2).await, 100);
    let audit = pluspay(&["audit"], &vars).await;
    assert!(audit.status.success(), "{audit:?}");

    assert_eq!(
        std::process::Command::new("kill")
            .args(["-TERM", &worker.id().unwrap().to_string()])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    let output = tokio::time::timeout(crate::support::WAIT, worker.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // The URLs' password (the test broker's guest) is shown as *** and the files by path.
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains(&*database_url.to_string_lossy()), "{log}");
    assert!(!log.contains(":guest@"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}
