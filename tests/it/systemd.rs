//! The systemd units, checked by systemd-analyze when it is installed, and the daemon's side
//! of `Type=notify`: READY=1 once it consumes, STOPPING=1 and exit 0 on SIGTERM.

use std::path::Path;
use std::process::Command;

use crate::support::{pluspay_command, TestEnv, WAIT};
use tokio::net::UnixDatagram;

const UNITS: [&str; 3] = [
    "pluspay-worker.service",
    "pluspay-webhooks.service",
    "pluspay-console.service",
];

fn systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The units with ExecStart pointing at the binary under test, so `verify` can check it.
fn units_in_temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pluspay-units-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path())
            .unwrap()
            .replace("/usr/local/bin/pluspay", env!("CARGO_BIN_EXE_pluspay"));
        std::fs::write(dir.join(entry.file_name()), text).unwrap();
    }
    dir
}

#[test]
fn units_verify_and_are_exposed_at_most_2_0() {
    if !systemd_analyze() {
        eprintln!("systemd-analyze is not installed: skipping the unit checks");
        return;
    }
    let dir = units_in_temp_dir();
    let mut files: Vec<_> = UNITS.iter().map(|u| dir.join(u)).collect();
    files.push(dir.join("pluspay.target"));
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    for unit in UNITS {
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.join(unit))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&security.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in {text}"));
        assert!(exposure <= 2.0, "{unit}: exposure {exposure}\n{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A unit's `[Service]` values of `key`, comments left out.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(unit);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// A unit's credentials (`LoadCredential=` names) and the `*_FILE` settings pointing at them
/// (`Environment=PLUSPAY_..._FILE=%d/name`), as (name, variable) pairs; every credential is
/// read by one setting and every such setting reads a credential.
fn credentials(unit: &str) -> Vec<(String, String)> {
    let mut loaded: Vec<String> = unit_values(unit, "LoadCredential")
        .iter()
        .map(|value| {
            let (name, path) = value.split_once(':').unwrap();
            assert_eq!(path, format!("/etc/pluspay/credentials/{name}"), "{unit}");
            name.to_owned()
        })
        .collect();
    let mut read: Vec<(String, String)> = unit_values(unit, "Environment")
        .iter()
        .filter_map(|value| {
            let (variable, path) = value.split_once('=').unwrap();
            let name = path.strip_prefix("%d/")?;
            assert!(variable.ends_with("_FILE"), "{unit}: {value}");
            Some((name.to_owned(), variable.to_owned()))
        })
        .collect();
    loaded.sort();
    read.sort();
    let names: Vec<String> = read.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(
        loaded, names,
        "{unit}: LoadCredential= and the %d/ settings differ"
    );
    for (name, variable) in &read {
        // database_url is read by PLUSPAY_DATABASE_URL_FILE, and so on.
        assert_eq!(
            variable,
            &format!("PLUSPAY_{}_FILE", name.to_ascii_uppercase()),
            "{unit}"
        );
    }
    read
}

#[test]
fn the_units_read_their_secrets_from_the_credentials_they_load() {
    let names = |unit| -> Vec<String> { credentials(unit).into_iter().map(|(n, _)| n).collect() };
    assert_eq!(
        names("pluspay-worker.service"),
        ["amqp_urls", "database_url", "pingpp_secret_key"]
    );
    // The listener uses the database (for /readyz) and the broker, never Ping++'s API.
    assert_eq!(
        names("pluspay-webhooks.service"),
        ["amqp_urls", "database_url"]
    );
    assert_eq!(
        names("pluspay-console.service"),
        ["amqp_urls", "database_url"]
    );
    for unit in UNITS {
        // No secret in the unit itself, and the environment file only optional.
        for value in unit_values(unit, "Environment") {
            assert!(value.contains("_FILE=%d/"), "{unit}: Environment={value}");
        }
        assert_eq!(
            unit_values(unit, "EnvironmentFile"),
            ["-/etc/pluspay/pluspay.env"]
        );
    }
}

/// The worker as its unit starts it: each credential a file in `$CREDENTIALS_DIRECTORY`
/// (`%d`), read through the `*_FILE` settings the unit sets, and no secret in the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_on_the_credentials_of_its_unit() {
    let env = TestEnv::new().await;
    env.fund(1, 500).await;
    let directory = std::env::temp_dir().join(format!("pp-credentials-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let mut vars: Vec<(String, String)> = env
        .process_env()
        .into_iter()
        .filter(|(key, _)| !matches!(*key, "PLUSPAY_DATABASE_URL" | "PLUSPAY_AMQP_URL"))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    vars.push((
        "CREDENTIALS_DIRECTORY".into(),
        directory.display().to_string(),
    ));
    for (name, variable) in credentials("pluspay-worker.service") {
        let content = match name.as_str() {
            "database_url" => env.settings.database.url.clone(),
            "amqp_urls" => env.settings.amqp.url.clone(),
            "pingpp_secret_key" => "sk_test_credential42".to_owned(),
            other => panic!("a credential this test does not know: {other}"),
        };
        std::fs::write(directory.join(&name), format!("{content}\n")).unwrap();
        vars.push((variable, format!("{}/{name}", directory.display())));
    }
    let socket_path = std::env::temp_dir().join(format!("pp-notify-{}", uuid::Uuid::new_v4()));
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let borrowed: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let worker = pluspay_command(&["worker"], &borrowed)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 512];
    let ready = async {
        loop {
            let n = socket.recv(&mut buffer).await.unwrap();
            if String::from_utf8_lossy(&buffer[..n]).contains("READY=1") {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, ready).await.expect("READY=1");
    // Its database and broker both answer: a transfer is applied.
    let send_vars: Vec<(&str, String)> = vars
        .iter()
        .filter(|(k, _)| k.starts_with("PLUSPAY_"))
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let sent = crate::support::pluspay(
        &[
            "send",
            "transfer",
            "--user",
            "1",
            "--data",
            r#"{"user":2,"amount":100}"#,
        ],
        &send_vars,
    )
    .await;
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(env.balance(2).await, 100);
    assert_eq!(send_sigterm(worker.id().unwrap() as i32), 0);
    let output = tokio::time::timeout(WAIT, worker.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !log.contains("sk_test_credential42") && !log.contains(":guest@"),
        "{log}"
    );
    let _ = std::fs::remove_file(socket_path);
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_notifies_readiness_and_stopping() {
    let env = TestEnv::new().await;
    let socket_path = std::env::temp_dir().join(format!("pp-notify-{}", uuid::Uuid::new_v4()));
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"))
        .arg("worker")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.process_env().iter().map(|(k, v)| (*k, v.as_str())))
        .env("PLUSPAY_METRICS_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    let receive = async {
        loop {
            let n = socket.recv(&mut buffer).await.unwrap();
            seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            let all = seen.concat();
            if all.contains("READY=1") && all.contains("WATCHDOG=1") {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, receive)
        .await
        .expect("READY=1 and a watchdog ping");
    let pid = worker.id().unwrap() as i32;
    // SIGTERM, as systemd stops a unit.
    assert_eq!(send_sigterm(pid), 0);
    let stopping = async {
        loop {
            let n = socket.recv(&mut buffer).await.unwrap();
            if String::from_utf8_lossy(&buffer[..n]).contains("STOPPING=1") {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("STOPPING=1");
    let status = tokio::time::timeout(WAIT, worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_file(socket_path);
}

fn send_sigterm(pid: i32) -> i32 {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_or(-1, |s| s.code().unwrap_or(-1))
}
