//! docs/prometheus-rules.yml as operators load it: promtool accepts it and passes its unit tests
//! (docs/prometheus-rules.test.yml), and a real Prometheus scraping a real worker fires the
//! ledger alert once the ledger is broken, and not before.
//! Both need Debian's `prometheus` package (scripts/test.sh installs it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{pluspay_command, TestEnv, WAIT};

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/prometheus-rules.yml");
const LEDGER_ALERT: &str = "PluspayLedgerCheckFailed";
const POLL: Duration = Duration::from_millis(200);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory of this test's, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("pp-alerts-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("create the test's directory");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The end of a log file, for a failure's message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    format!("--- {}:\n{}", path.display(), lines[from..].join("\n"))
}

/// Runs `promtool ARGS` from the crate root; it must succeed.
fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run promtool (Debian's prometheus package; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "docs/prometheus-rules.yml"]);
    promtool(&["test", "rules", "docs/prometheus-rules.test.yml"]);
}

/// Prometheus's HTTP API: `data` of a successful answer to GET `path`, None while it does not
/// answer (starting) or answers an error.
async fn api(http: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    let response = http.get(format!("{base}{path}")).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

/// The alerts Prometheus holds (pending or firing) named `name`.
async fn alerts(http: &reqwest::Client, base: &str, name: &str) -> Vec<Value> {
    let data = api(http, base, "/api/v1/alerts").await.unwrap_or_default();
    data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == name)
        .cloned()
        .collect()
}

/// The alerting rule named `name`, as /api/v1/rules shows it (state, health, lastEvaluation).
async fn rule(http: &reqwest::Client, base: &str, name: &str) -> Option<Value> {
    let data = api(http, base, "/api/v1/rules?type=alert").await?;
    data["groups"]
        .as_array()?
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_alert_fires_when_the_ledger_breaks() {
    let env = TestEnv::new().await;
    env.fund(1, 1_000).await;
    let dir = TempDir::new();
    let logs = || {
        format!(
            "{}\n{}",
            tail(&dir.join("worker.log")),
            tail(&dir.join("prometheus.log"))
        )
    };

    let metrics = format!("127.0.0.1:{}", free_port());
    let mut vars = env.process_env();
    vars.retain(|(key, _)| *key != "PLUSPAY_METRICS_LISTEN");
    vars.extend([
        ("PLUSPAY_METRICS_LISTEN", metrics.clone()),
        ("PLUSPAY_METRICS_LEDGER_CHECK_SECS", "1".to_owned()),
    ]);
    let _worker = pluspay_command(&["worker"], &vars)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("worker.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");

    // Everything each second, so that a broken ledger shows within seconds. The rules are the
    // real file, not a copy. A free port: a packaged Prometheus may hold its 9090.
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES:?}
scrape_configs:
  - job_name: pluspay
    static_configs:
      - targets: [{metrics:?}]
"
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus (Debian's prometheus package; scripts/test.sh installs it)");
    let base = format!("http://{listen}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let deadline = started + WAIT;

    // Prometheus has scraped the worker and holds its first ledger check, a passing one...
    loop {
        let targets = api(&http, &base, "/api/v1/targets?state=active").await;
        let up = targets.is_some_and(|t| {
            t["activeTargets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t["health"] == "up"))
        });
        let ok = api(&http, &base, "/api/v1/query?query=pluspay_ledger_ok")
            .await
            .is_some_and(|d| d["result"].as_array().is_some_and(|r| !r.is_empty()));
        if up && ok {
            break;
        }
        if let Some(status) = prometheus.try_wait().unwrap() {
            panic!("prometheus exited ({status})\n{}", logs());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not scrape the worker's ledger check\n{}",
            logs()
        );
        tokio::time::sleep(POLL).await;
    }
    let query = api(&http, &base, "/api/v1/query?query=pluspay_ledger_ok")
        .await
        .unwrap();
    assert_eq!(query["result"][0]["value"][1], "1", "{query}");
    // ...and has evaluated the rule since: an evaluation after the one current now saw it.
    let seen = rule(&http, &base, LEDGER_ALERT)
        .await
        .expect("the rules file holds the ledger alert");
    let evaluated = loop {
        let now = rule(&http, &base, LEDGER_ALERT).await.unwrap();
        if now["lastEvaluation"] != seen["lastEvaluation"] {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rule was not evaluated again: {now}\n{}",
            logs()
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(evaluated["health"], "ok", "{evaluated}");
    assert_eq!(evaluated["state"], "inactive", "{evaluated}");
    assert_eq!(
        alerts(&http, &base, LEDGER_ALERT).await,
        Vec::<Value>::new()
    );

    // A balance moved without an entry: the worker's next check fails.
    env.db
        .execute(
            "UPDATE accounts SET balance = balance + 1 WHERE kind = 'wallet' AND user_id = 1",
            &[],
        )
        .await
        .unwrap();
    let broken = tokio::time::Instant::now();
    let (alert, violations) = loop {
        let alert = alerts(&http, &base, LEDGER_ALERT)
            .await
            .into_iter()
            .find(|a| a["state"] == "firing");
        // One alert per failing check, from the rule after it in the same group.
        let violations = alerts(&http, &base, "PluspayLedgerViolations")
            .await
            .into_iter()
            .find(|a| a["state"] == "firing" && a["labels"]["check"] == "balance_equals_entries");
        if let (Some(alert), Some(violations)) = (alert, violations) {
            break (alert, violations);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{LEDGER_ALERT} is not firing: {:?}\n{}",
            rule(&http, &base, LEDGER_ALERT).await,
            logs()
        );
        tokio::time::sleep(POLL).await;
    };
    eprintln!(
        "{LEDGER_ALERT} firing {:.1} s after the ledger broke ({:.1} s after Prometheus started)",
        broken.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert_eq!(alert["labels"]["instance"], metrics.as_str(), "{alert}");
    assert_eq!(violations["labels"]["severity"], "critical", "{violations}");

    prometheus.kill().await.unwrap();
}
