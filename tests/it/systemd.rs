//! The systemd units, checked by systemd-analyze when it is installed, and the daemon's side
//! of `Type=notify`: READY=1 once it consumes, STOPPING=1 and exit 0 on SIGTERM.

use std::path::Path;
use std::process::Command;

use crate::support::{TestEnv, WAIT};
use tokio::net::UnixDatagram;

const UNITS: [&str; 2] = ["pluspay-worker.service", "pluspay-webhooks.service"];

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
