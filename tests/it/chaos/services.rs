//! The test's own PostgreSQL and RabbitMQ, and the `pluspay worker` processes it runs.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pluspay::config::Settings;

use super::{say, WORKER_SHUTDOWN_SECS};

/// This test's own PostgreSQL and RabbitMQ. Dropping it stops them (also on a panic, when the
/// directory is kept for the logs).
pub(crate) struct Services {
    script: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) db_url: String,
    pub(crate) amqp_url: String,
}

impl Services {
    pub(super) async fn start() -> Services {
        Self::start_with(&[]).await
    }

    /// Starts them with `services.sh start DIR OPTIONS...`.
    pub(crate) async fn start_with(options: &[&std::ffi::OsStr]) -> Services {
        let script = std::env::var_os("PP_SERVICES_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh"));
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("ppchaos-{}", &suffix[..10]));
        std::fs::create_dir_all(&dir).expect("make the services directory");
        let mut services = Services {
            script,
            dir,
            db_url: String::new(),
            amqp_url: String::new(),
        };
        services.run_with("start", options).await;
        services.db_url = services.env_value("PP_TEST_DATABASE_URL");
        services.amqp_url = services.env_value("PP_TEST_AMQP_URL");
        services
    }

    /// A variable of the services' DIR/env.
    pub(crate) fn env_value(&self, name: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(r#"source "$1/env" && printf '%s' "${!2}""#)
            .arg("bash")
            .arg(&self.dir)
            .arg(name)
            .output()
            .expect("read the services' env");
        let value = String::from_utf8(out.stdout).unwrap();
        assert!(
            !value.is_empty(),
            "{name} is not in {}/env",
            self.dir.display()
        );
        value
    }

    pub(super) async fn run(&self, action: &str) -> Duration {
        self.run_with(action, &[]).await
    }

    /// `services.sh ACTION DIR OPTIONS...`; how long it took.
    async fn run_with(&self, action: &str, options: &[&std::ffi::OsStr]) -> Duration {
        let started = Instant::now();
        let out = tokio::process::Command::new("bash")
            .arg(&self.script)
            .arg(action)
            .arg(&self.dir)
            .args(options)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run services.sh");
        assert!(
            out.status.success(),
            "services.sh {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    /// Runs rabbitmqctl against this test's node.
    pub(super) async fn rabbitmqctl(&self, args: &[&str]) {
        let out = tokio::process::Command::new("bash")
            .arg(&self.script)
            .arg("rabbitmqctl")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run services.sh rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(super) fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        take_down(&self.script, "stop", &self.dir);
    }
}

pub(super) struct Worker {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

/// `pluspay worker` (or `pluspay webhooks`) processes in numbered slots. In the chaos test,
/// worker slot 0 runs all along and slot 1 for part of the run.
pub(super) struct Workers {
    /// The `pluspay` subcommand the processes run.
    pub(super) subcommand: &'static str,
    pub(super) env: Vec<(&'static str, String)>,
    /// Settings of one slot's process only (a listener's port).
    pub(super) slot_env: Vec<Vec<(&'static str, String)>>,
    pub(super) logs: PathBuf,
    pub(super) slots: Vec<Option<Worker>>,
    pub(super) spawned: usize,
    pub(super) killed: usize,
    pub(super) all_logs: Vec<PathBuf>,
}

impl Workers {
    pub(super) fn new(
        subcommand: &'static str,
        env: Vec<(&'static str, String)>,
        logs: PathBuf,
        slots: usize,
    ) -> Self {
        Workers {
            subcommand,
            env,
            slot_env: vec![Vec::new(); slots],
            logs,
            slots: (0..slots).map(|_| None).collect(),
            spawned: 0,
            killed: 0,
            all_logs: Vec::new(),
        }
    }

    pub(super) fn spawn(&mut self, slot: usize) {
        assert!(
            self.slots[slot].is_none(),
            "{} {slot} is running",
            self.subcommand
        );
        let log = self
            .logs
            .join(format!("{}-{slot}-{}.log", self.subcommand, self.spawned));
        let file = std::fs::File::create(&log).expect("create a worker log");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"));
        command
            .arg(self.subcommand)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PLUSPAY_")) {
            command.env_remove(key);
        }
        command.env_remove("RUST_LOG").env("NO_COLOR", "1");
        command.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command.envs(self.slot_env[slot].iter().map(|(k, v)| (*k, v.as_str())));
        let child = command.spawn().expect("start pluspay worker");
        let pid = child.id().expect("a running worker has a pid");
        self.spawned += 1;
        self.all_logs.push(log.clone());
        self.slots[slot] = Some(Worker { child, pid, log });
    }

    /// SIGKILL, as the OOM killer or a power cut would.
    pub(super) async fn kill(&mut self, slot: usize) {
        let mut worker = self.slots[slot].take().expect("a running worker");
        if let Some(status) = worker.child.try_wait().unwrap() {
            panic!(
                "worker {slot} had exited by itself ({status}):\n{}",
                tail(&worker.log)
            );
        }
        worker.child.start_kill().expect("SIGKILL a worker");
        let status = worker.child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(9), "worker {slot}: {status}");
        self.killed += 1;
    }

    /// SIGTERM: it must finish what it holds and exit 0 within its shutdown timeout. (It is
    /// sent once the worker consumes: a process still starting up has no handler yet.)
    pub(super) async fn stop(&mut self, slot: usize) {
        let log = self.slots[slot]
            .as_ref()
            .expect("a running worker")
            .log
            .clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.subcommand == "worker" && consuming_count(&log) == 0 {
            self.check();
            assert!(
                Instant::now() < deadline,
                "worker {slot} never consumed:\n{}",
                tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut worker = self.slots[slot].take().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &worker.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "SIGTERM worker {slot}");
        let status = tokio::time::timeout(
            Duration::from_secs(WORKER_SHUTDOWN_SECS + 20),
            worker.child.wait(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "worker {slot} did not stop after SIGTERM:\n{}",
                tail(&worker.log)
            )
        })
        .unwrap();
        assert!(
            status.success(),
            "worker {slot} after SIGTERM: {status}\n{}",
            tail(&worker.log)
        );
    }

    /// Fails the test if a worker exited without being asked to.
    pub(super) fn check(&mut self) {
        for (slot, worker) in self.slots.iter_mut().enumerate() {
            if let Some(worker) = worker {
                if let Some(status) = worker.child.try_wait().unwrap() {
                    panic!(
                        "worker {slot} exited by itself ({status}):\n{}",
                        tail(&worker.log)
                    );
                }
            }
        }
    }

    pub(super) fn running(&self) -> Vec<(usize, PathBuf)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, w)| w.as_ref().map(|w| (slot, w.log.clone())))
            .collect()
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Where each running worker's log stands: how often it has said it started consuming.
pub(super) fn consuming_marks(workers: &Workers) -> Vec<(usize, PathBuf, usize)> {
    workers
        .running()
        .into_iter()
        .map(|(slot, log)| {
            let n = consuming_count(&log);
            (slot, log, n)
        })
        .collect()
}

/// Waits until every worker of `marks` has said again that it consumes, failing after `within`.
pub(super) async fn await_consuming(
    workers: &mut Workers,
    marks: Vec<(usize, PathBuf, usize)>,
    within: Duration,
    what: &str,
) {
    let deadline = Instant::now() + within;
    for (slot, log, n) in marks {
        while consuming_count(&log) <= n {
            workers.check();
            assert!(
                Instant::now() < deadline,
                "worker {slot} did not consume again {what}:\n{}",
                tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How often a worker's log says it (re)started consuming.
fn consuming_count(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("consuming commands and Ping++ events")
        .count()
}

/// The environment of a `pluspay` process of the test: its database, broker(s), namespace and
/// the fake Ping++.
pub(super) fn process_env(settings: &Settings) -> Vec<(&'static str, String)> {
    let pingpp = &settings.pingpp;
    let mut env = vec![
        ("PLUSPAY_DATABASE_URL", settings.database.url.clone()),
        ("PLUSPAY_AMQP_URL", settings.amqp.url.clone()),
        ("PLUSPAY_AMQP_NAMESPACE", settings.amqp.namespace.clone()),
        // Several processes at once: each its own metrics port.
        ("PLUSPAY_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
        ("PLUSPAY_PINGPP_API_BASE", pingpp.api_base.clone()),
        ("PLUSPAY_PINGPP_APP_ID", pingpp.app_id.clone()),
        ("PLUSPAY_PINGPP_SECRET_KEY", pingpp.secret_key.clone()),
        (
            "PLUSPAY_PINGPP_PRIVATE_KEY",
            pingpp
                .private_key
                .as_ref()
                .expect("the fake Ping++'s merchant key")
                .to_string_lossy()
                .into_owned(),
        ),
        ("PLUSPAY_PINGPP_TIMEOUT_MS", pingpp.timeout_ms.to_string()),
        ("PLUSPAY_PINGPP_MAX_RETRIES", pingpp.max_retries.to_string()),
        (
            "PLUSPAY_WORKER_SHUTDOWN_TIMEOUT_SECS",
            WORKER_SHUTDOWN_SECS.to_string(),
        ),
        ("PLUSPAY_LOG_FILTER", "info".into()),
        (
            "PLUSPAY_SECURITY_OPERATOR_USERS",
            format!("[{}]", settings.security.operator_users.join(",")),
        ),
    ];
    if !settings.amqp.urls.is_empty() {
        env.push((
            "PLUSPAY_AMQP_URLS",
            format!("[{}]", settings.amqp.urls.join(",")),
        ));
    }
    if let Some(key) = &pingpp.public_key {
        env.push((
            "PLUSPAY_PINGPP_PUBLIC_KEY",
            key.to_string_lossy().into_owned(),
        ));
    }
    env
}

/// Lets the duplicates still queued be consumed, then stops every process gracefully: nothing
/// may be left behind in the queues, not even unacknowledged.
pub(super) async fn drain_then_stop(
    urls: &[String],
    names: &pluspay::amqp::Names,
    processes: &mut [&mut Workers],
) {
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    for queue in [&names.commands_queue, &names.webhooks_queue] {
        loop {
            for p in processes.iter_mut() {
                p.check();
            }
            if super::broker::ready_count(urls, queue).await == Some(0) {
                break;
            }
            assert!(
                Instant::now() < drain_deadline,
                "{queue} does not drain: {:?} ready",
                super::broker::ready_count(urls, queue).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for p in processes.iter_mut() {
        for slot in 0..p.slots.len() {
            if p.slots[slot].is_some() {
                p.stop(slot).await;
            }
        }
    }
    for queue in [&names.commands_queue, &names.webhooks_queue] {
        assert_eq!(
            super::broker::ready_count(urls, queue).await,
            Some(0),
            "{queue} still holds messages after the workers stopped"
        );
    }
}

/// Lines of the logs that say a process panicked or met a failure it did not take for
/// transient.
pub(super) fn alarms(logs: &[PathBuf]) -> Vec<String> {
    logs.iter()
        .flat_map(|log| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("panicked") || l.contains("message failed"))
                .map(|l| format!("{}: {l}", log.display()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Takes the servers of `script` in `dir` down with `action` (`stop`, `down`) and removes
/// `dir`, unless the test failed or `PP_CHAOS_KEEP` is set: then it is kept for the logs.
pub(super) fn take_down(script: &Path, action: &str, dir: &Path) {
    let _ = std::process::Command::new("bash")
        .arg(script)
        .arg(action)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if std::thread::panicking() || std::env::var_os("PP_CHAOS_KEEP").is_some() {
        say(format!(
            "kept {} (server data and logs, process logs in logs/)",
            dir.display()
        ));
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}
