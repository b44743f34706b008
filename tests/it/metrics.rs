//! The Prometheus endpoint of a running `pluspay worker`, scraped after real traffic.

use std::time::Duration;

use crate::support::{transfer, TestEnv, WAIT};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of the sample whose line starts with `series` (name and labels as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_worker_did() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    env.fund(1, 1_000).await;
    let port = free_port();
    let mut process_env = env.process_env();
    // A cluster of two of which one is down: the worker connects to the one that answers and
    // says which.
    let live_node = pluspay::amqp::node_label(&env.settings.amqp.url);
    let dead_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    process_env.push((
        "PLUSPAY_AMQP_URLS",
        format!("[{dead_url},{}]", env.settings.amqp.url),
    ));
    let pingpp = &env.settings.pingpp;
    process_env.extend([
        ("PLUSPAY_METRICS_LISTEN", format!("127.0.0.1:{port}")),
        ("PLUSPAY_METRICS_LEDGER_CHECK_SECS", "1".to_owned()),
        ("PLUSPAY_PINGPP_API_BASE", pingpp.api_base.clone()),
        ("PLUSPAY_PINGPP_APP_ID", pingpp.app_id.clone()),
        ("PLUSPAY_PINGPP_SECRET_KEY", pingpp.secret_key.clone()),
        (
            "PLUSPAY_PINGPP_PRIVATE_KEY",
            pingpp.private_key.as_ref().unwrap().display().to_string(),
        ),
    ]);
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"))
        .arg("worker")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(process_env.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");

    let mut client = env.client().await;
    assert_eq!(
        client.call(transfer("m-1", 1, 2, 100)).await["status"],
        "succeeded"
    );
    assert_eq!(
        client.call(transfer("m-2", 1, 2, 100)).await["status"],
        "succeeded"
    );
    assert_eq!(
        client.call(transfer("m-1", 1, 2, 100)).await["status"],
        "succeeded"
    );
    assert_eq!(
        client.call(transfer("m-3", 1, 2, 5_000)).await["status"],
        "rejected"
    );
    let recharge = client
        .call(json!({"id": "m-r", "type": "recharge", "user_id": 3, "data": {"type": "wx", "amount": 10}}))
        .await;
    assert_eq!(recharge["status"], "succeeded", "{recharge}");
    assert_eq!(fake.charges().len(), 1);
    // Types read off the wire never become labels: 50 made-up types are one `unknown` series.
    for i in 0..50 {
        let body =
            json!({"id": format!("junk-{i}"), "type": format!("junk.type.{i}"), "user_id": 1});
        client.raw(body.to_string().as_bytes(), None).await;
    }
    assert_eq!(client.dead_letters(50).await.len(), 50);

    let url = format!("http://127.0.0.1:{port}/metrics");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = match http.get(&url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // The ledger check runs every second; wait for its first report.
        // Each message is counted just after it is dead-lettered.
        let malformed = sample(
            &text,
            "pluspay_commands_total{type=\"unknown\",outcome=\"malformed\"}",
        );
        if sample(&text, "pluspay_ledger_ok").is_some()
            && sample(&text, "pluspay_oldest_read_result_age_seconds").is_some()
            && malformed == Some(50.0)
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ledger check in {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let commands = |kind: &str, outcome: &str| {
        sample(
            &text,
            &format!("pluspay_commands_total{{type=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(commands("transfer", "succeeded"), Some(2.0), "{text}");
    assert_eq!(commands("transfer", "replayed"), Some(1.0), "{text}");
    assert_eq!(commands("transfer", "rejected"), Some(1.0), "{text}");
    assert_eq!(commands("recharge", "succeeded"), Some(1.0), "{text}");
    assert_eq!(commands("unknown", "malformed"), Some(50.0), "{text}");
    assert!(!text.contains("junk"), "{text}");
    assert_eq!(
        sample(
            &text,
            "pluspay_command_duration_seconds_count{type=\"transfer\"}"
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pluspay_pingpp_requests_total{endpoint=\"create_charge\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "pluspay_ledger_ok"), Some(1.0), "{text}");
    let took = sample(&text, "pluspay_ledger_check_seconds{scope=\"incremental\"}")
        .or_else(|| sample(&text, "pluspay_ledger_check_seconds{scope=\"full\"}"));
    assert!(took.is_some_and(|s| s > 0.0), "{text}");
    // The removal of old reads made its first pass at start-up.
    assert_eq!(
        sample(&text, "pluspay_oldest_read_result_age_seconds"),
        Some(0.0),
        "no read has been answered: {text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("pluspay_broker_connected{{role=\"worker\",node=\"{live_node}\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    let database: tokio_postgres::Config = env.settings.database.url.parse().unwrap();
    assert_eq!(
        sample(
            &text,
            &format!(
                "pluspay_database_server{{server=\"127.0.0.1:{}\"}}",
                database.get_ports()[0]
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        matches!(
            sample(&text, "pluspay_database_primary_changes_total"),
            None | Some(0.0)
        ),
        "{text}"
    );
    assert_eq!(
        sample(&text, "pluspay_messages_in_flight"),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE pluspay_command_duration_seconds histogram"),
        "{text}"
    );
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
}
