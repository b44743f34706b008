//! The chaos test: thousands of mixed commands from concurrent publishers, some sent
//! more than once, while worker processes are SIGKILLed and restarted, a second worker joins
//! for part of the run, RabbitMQ restarts once and PostgreSQL restarts once. Afterwards every
//! command has exactly one stored result and at least one published result, the balances are
//! what an independent model computed from the results says, `pluspay audit` passes, no wallet
//! is negative and the dead letters are exactly the messages the test meant to be bad.
//!
//! It restarts servers, so it starts its own PostgreSQL and RabbitMQ with scripts/services.sh
//! rather than using the shared ones. The workers are real `pluspay worker` processes; the fake
//! Ping++ runs in the test. Everything random comes from one seed, printed at the start and
//! taken from `PP_CHAOS_SEED` when set, so a failing run can be replayed (the interleaving of
//! processes is the machine's, but the commands, their duplicates, the bad messages and the
//! moments of the chaos are the seed's).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::fake_pingpp::FakePingpp;
use crate::support::TestEnv;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use pluspay::amqp::publisher::{header_str, json_properties};
use pluspay::amqp::topology::PINGPP_ROUTING_KEY;
use pluspay::amqp::{self, Names, Publisher};
use pluspay::worker::ERROR_HEADER;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Bound on one broker call of the test's own clients (lapin can hang on a dying connection).
const BROKER_CALL: Duration = Duration::from_secs(5);
/// Commands made up front (follow-ups come on top: cash decisions and recharge retrieves).
const BASE_COMMANDS: usize = 5_000;
/// Share of the base commands sent twice or more, in percent.
const DUPLICATED_PERCENT: usize = 11;
const USERS: i64 = 20;
const FUNDING: i64 = 6_000;
/// The operator who decides cash requests.
const OPERATOR: i64 = 10_000;
const PUBLISHERS: usize = 8;
const FOLLOW_UP_PUBLISHERS: usize = 3;
/// Base commands in flight at most (sent, no result seen yet). It keeps the publishers busy
/// for the whole run, so the chaos hits them too, not only the workers.
const WINDOW: usize = 300;
/// From the first command to the last result, at most.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(240);
/// How long one message may take to be confirmed, across reconnects.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(120);
const WORKER_SHUTDOWN_SECS: u64 = 10;
/// How soon a worker must consume again after the broker closed its connection while staying
/// up: its first reconnect attempt should come within a second, and the rest is connecting.
const RESUME_AFTER_DROP: Duration = Duration::from_secs(5);

/// Writes straight to stderr, past the test harness's capture: the seed and the summary show
/// in every run's log, not only in failing ones.
fn say(line: impl AsRef<str>) {
    let _ = writeln!(std::io::stderr(), "chaos: {}", line.as_ref());
}

// ---------------------------------------------------------------- the plan

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Transfer,
    Reward,
    Recharge,
    Cash,
    Transform,
    Read,
}

/// What happens after a recharge's result: the payer pays (or the channel fails), and the
/// signed event arrives, maybe more than once, maybe racing a `recharge.retrieve`.
#[derive(Clone, Debug)]
struct RechargePlan {
    pay: bool,
    event_copies: usize,
    /// Copies of a `recharge.retrieve` sent too, if any.
    retrieve_copies: Option<usize>,
    retrieve_first: bool,
}

/// The operator's decisions on a cash request: usually one, sometimes both racing.
#[derive(Clone, Debug)]
struct CashPlan {
    decisions: Vec<(&'static str, usize)>,
}

#[derive(Clone, Debug)]
struct Plan {
    id: String,
    kind: Kind,
    command: Value,
    recharge: Option<RechargePlan>,
    cash: Option<CashPlan>,
}

/// One message a publisher sends, in its order.
#[derive(Clone, Debug)]
enum Send {
    /// The first copy of base command `i`: takes a window permit.
    First(usize),
    /// Another copy of base command `i`.
    Copy(usize),
    /// Bad message `i`.
    Bad(usize),
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// Straight into the commands queue, where no exchange would route it.
    CommandsQueue,
    CommandsExchange(&'static str),
    Webhooks,
}

/// A message meant for the dead letters.
#[derive(Clone, Debug)]
struct Bad {
    id: String,
    target: Target,
    body: Vec<u8>,
    /// What the dead letter's reason must mention.
    reason: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chaos {
    KillMain,
    StartSecond,
    KillSecond,
    StopSecond,
    RestartRabbitmq,
    RestartPostgres,
    PingppHiccup,
}

struct Scenario {
    plans: Vec<Plan>,
    sends: Vec<Vec<Send>>,
    bad: Vec<Bad>,
    /// (base results seen, what to do then), in order.
    schedule: Vec<(usize, Chaos)>,
    duplicated: usize,
}

fn other_user(rng: &mut StdRng, user: i64) -> i64 {
    (user + rng.random_range(1..USERS) - 1) % USERS + 1
}

fn scenario(rng: &mut StdRng, fake: &FakePingpp) -> Scenario {
    let mut plans = Vec::with_capacity(BASE_COMMANDS);
    for i in 0..BASE_COMMANDS {
        let id = format!("c-{i}");
        let user = rng.random_range(1..=USERS);
        let roll = rng.random_range(0..100);
        let (kind, data) = match roll {
            0..34 => (
                Kind::Transfer,
                json!({ "user": other_user(rng, user), "amount": rng.random_range(1..=2_500) }),
            ),
            34..52 => (
                Kind::Reward,
                json!({ "user": other_user(rng, user), "amount": rng.random_range(1..=1_500),
                        "body": "打赏" }),
            ),
            52..68 => (
                Kind::Recharge,
                json!({ "type": if rng.random_bool(0.5) { "wx" } else { "alipay" },
                        "amount": rng.random_range(100..=4_000) }),
            ),
            68..84 => (
                Kind::Cash,
                json!({ "value": rng.random_range(100..=3_000),
                        "type": if rng.random_bool(0.5) { "alipay" } else { "wechat" },
                        "account": format!("u{user}@example.com") }),
            ),
            84..94 => (
                Kind::Transform,
                json!({ "amount": rng.random_range(100..=2_000) }),
            ),
            _ => (Kind::Read, json!({ "limit": 5 })),
        };
        let command_type = match kind {
            Kind::Transfer => "transfer",
            Kind::Reward => "reward",
            Kind::Recharge => "recharge",
            Kind::Cash => "cash",
            Kind::Transform => "transform",
            Kind::Read if roll % 2 == 0 => "wallet.get",
            Kind::Read => "orders.list",
        };
        let recharge = (kind == Kind::Recharge).then(|| RechargePlan {
            pay: rng.random_bool(0.85),
            event_copies: match rng.random_range(0..100) {
                0..65 => 1,
                65..90 => 2,
                _ => 3,
            },
            retrieve_copies: rng
                .random_bool(0.25)
                .then(|| if rng.random_bool(0.2) { 2 } else { 1 }),
            retrieve_first: rng.random_bool(0.5),
        });
        let cash = (kind == Kind::Cash).then(|| {
            let first = if rng.random_bool(0.5) {
                "cash.approve"
            } else {
                "cash.reject"
            };
            let copies = if rng.random_bool(0.15) { 2 } else { 1 };
            let mut decisions = vec![(first, copies)];
            if rng.random_bool(0.1) {
                let other = if first == "cash.approve" {
                    "cash.reject"
                } else {
                    "cash.approve"
                };
                decisions.push((other, 1));
            }
            CashPlan { decisions }
        });
        plans.push(Plan {
            command: json!({ "id": id, "type": command_type, "user_id": user, "data": data }),
            id,
            kind,
            recharge,
            cash,
        });
    }

    // Which base commands are sent again, and how much later (in that publisher's sends).
    let mut indices: Vec<usize> = (0..BASE_COMMANDS).collect();
    for i in (1..indices.len()).rev() {
        indices.swap(i, rng.random_range(0..=i));
    }
    let duplicated = BASE_COMMANDS * DUPLICATED_PERCENT / 100;
    let mut copies: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in &indices[..duplicated] {
        let n = if rng.random_bool(0.3) { 2 } else { 1 };
        let delays = (0..n)
            .map(|_| {
                if rng.random_bool(0.3) {
                    0
                } else {
                    rng.random_range(1..=150)
                }
            })
            .collect();
        copies.insert(i, delays);
    }

    let mut paid = fake_unknown_charge();
    paid["paid"] = json!(true);
    let (unknown_event, _) = fake.signed_event("charge.succeeded", paid);
    let bad = vec![
        Bad {
            id: "bad-0".into(),
            target: Target::CommandsQueue,
            body: b"not json at all (chaos bad-0)".to_vec(),
            reason: "not JSON",
        },
        Bad {
            id: "bad-1".into(),
            target: Target::CommandsExchange("transfer"),
            body: br#"{"type":"transfer","user_id":1,"data":{"user":2,"amount":1}}"#.to_vec(),
            reason: "id is missing",
        },
        Bad {
            id: "bad-2".into(),
            target: Target::CommandsQueue,
            body: br#"{"id":"chaos-bad-2","type":"no.such.type","user_id":1,"data":{}}"#.to_vec(),
            reason: "unknown command type",
        },
        Bad {
            id: "bad-3".into(),
            target: Target::Webhooks,
            body: b"{{{ not an event (chaos bad-3)".to_vec(),
            reason: "not JSON",
        },
        Bad {
            id: "bad-4".into(),
            target: Target::Webhooks,
            body: unknown_event.into_bytes(),
            reason: "no recharge order",
        },
    ];

    // Each publisher's sends: its base commands in order, the copies some sends later, and the
    // bad messages at random places.
    let mut keyed: Vec<Vec<(usize, Send)>> = vec![Vec::new(); PUBLISHERS];
    for i in 0..BASE_COMMANDS {
        let (p, k) = (i % PUBLISHERS, i / PUBLISHERS);
        keyed[p].push((k * 1_000, Send::First(i)));
        for (c, delay) in copies.get(&i).into_iter().flatten().enumerate() {
            keyed[p].push(((k + delay) * 1_000 + 1 + c, Send::Copy(i)));
        }
    }
    let per_publisher = BASE_COMMANDS / PUBLISHERS;
    for (b, _) in bad.iter().enumerate() {
        let p = rng.random_range(0..PUBLISHERS);
        let k = rng.random_range(per_publisher / 20..per_publisher * 9 / 10);
        keyed[p].push((k * 1_000 + 500, Send::Bad(b)));
    }
    let sends = keyed
        .into_iter()
        .map(|mut sends| {
            sends.sort_by_key(|(key, _)| *key);
            sends.into_iter().map(|(_, send)| send).collect()
        })
        .collect();

    // The chaos, at moments counted in base results seen.
    let at = |rng: &mut StdRng, from: f64, to: f64| {
        (BASE_COMMANDS as f64 * rng.random_range(from..to)) as usize
    };
    let mut schedule = Vec::new();
    for _ in 0..3 {
        schedule.push((at(rng, 0.05, 0.90), Chaos::KillMain));
    }
    let second_start = at(rng, 0.10, 0.25);
    let second_stop = at(rng, 0.60, 0.80);
    schedule.push((second_start, Chaos::StartSecond));
    schedule.push((
        rng.random_range(second_start + 100..second_stop - 100),
        Chaos::KillSecond,
    ));
    schedule.push((second_stop, Chaos::StopSecond));
    schedule.push((at(rng, 0.25, 0.50), Chaos::RestartRabbitmq));
    schedule.push((at(rng, 0.50, 0.75), Chaos::RestartPostgres));
    schedule.push((at(rng, 0.10, 0.90), Chaos::PingppHiccup));
    schedule.sort_by_key(|(n, _)| *n);

    Scenario {
        plans,
        sends,
        bad,
        schedule,
        duplicated,
    }
}

/// A charge no recharge order knows: its event must be refused and dead-lettered.
fn fake_unknown_charge() -> Value {
    json!({
        "id": "ch_chaosUnknown0000000000000", "object": "charge", "livemode": false,
        "paid": false, "app": crate::support::fake_pingpp::APP_ID, "channel": "wx",
        "order_no": "a0000000000099999999", "amount": 100, "currency": "cny",
        "time_paid": null, "time_expire": 4_102_444_800i64, "failure_code": null,
        "failure_msg": null,
    })
}

// ---------------------------------------------------------------- services and workers

/// This test's own PostgreSQL and RabbitMQ. Dropping it stops them (also on a panic, when the
/// directory is kept for the logs).
struct Services {
    script: PathBuf,
    dir: PathBuf,
    db_url: String,
    amqp_url: String,
}

impl Services {
    async fn start() -> Services {
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
        services.run("start").await;
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(r#"source "$1/env" && printf '%s\n%s\n' "$PP_TEST_DATABASE_URL" "$PP_TEST_AMQP_URL""#)
            .arg("bash")
            .arg(&services.dir)
            .output()
            .expect("read the services' env");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        services.db_url = lines.next().expect("PP_TEST_DATABASE_URL").to_owned();
        services.amqp_url = lines.next().expect("PP_TEST_AMQP_URL").to_owned();
        services
    }

    async fn run(&self, action: &str) -> Duration {
        let started = Instant::now();
        let out = tokio::process::Command::new("bash")
            .arg(&self.script)
            .arg(action)
            .arg(&self.dir)
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
    async fn rabbitmqctl(&self, args: &[&str]) {
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

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking() || std::env::var_os("PP_CHAOS_KEEP").is_some() {
            say(format!(
                "kept {} (service data and logs, worker logs in logs/)",
                self.dir.display()
            ));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Worker {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

/// `pluspay worker` processes: slot 0 runs all along, slot 1 for part of the run.
struct Workers {
    env: Vec<(&'static str, String)>,
    logs: PathBuf,
    slots: [Option<Worker>; 2],
    spawned: usize,
    killed: usize,
    all_logs: Vec<PathBuf>,
}

impl Workers {
    fn spawn(&mut self, slot: usize) {
        assert!(self.slots[slot].is_none(), "worker {slot} is running");
        let log = self
            .logs
            .join(format!("worker-{slot}-{}.log", self.spawned));
        let file = std::fs::File::create(&log).expect("create a worker log");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"));
        command
            .arg("worker")
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
        let child = command.spawn().expect("start pluspay worker");
        let pid = child.id().expect("a running worker has a pid");
        self.spawned += 1;
        self.all_logs.push(log.clone());
        self.slots[slot] = Some(Worker { child, pid, log });
    }

    /// SIGKILL, as the OOM killer or a power cut would.
    async fn kill(&mut self, slot: usize) {
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
    async fn stop(&mut self, slot: usize) {
        let log = self.slots[slot]
            .as_ref()
            .expect("a running worker")
            .log
            .clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        while consuming_count(&log) == 0 {
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
    fn check(&mut self) {
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

    fn running(&self) -> Vec<(usize, PathBuf)> {
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
fn consuming_marks(workers: &Workers) -> Vec<(usize, PathBuf, usize)> {
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
async fn await_consuming(
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

// ---------------------------------------------------------------- broker clients

/// A confirming publisher that survives the broker going away: it reconnects and publishes
/// again until the broker confirms. A confirm lost with the connection means the message may
/// arrive twice, which the system must absorb like any duplicate.
struct RobustPublisher {
    url: String,
    name: String,
    link: Option<(Connection, Publisher)>,
    connects: usize,
    retries: usize,
}

impl RobustPublisher {
    fn new(url: &str, name: String) -> Self {
        RobustPublisher {
            url: url.to_owned(),
            name,
            link: None,
            connects: 0,
            retries: 0,
        }
    }

    async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        let mut last_error = String::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: nothing confirmed for {PUBLISH_DEADLINE:?}: {last_error}",
                self.name
            );
            if self.link.is_none() {
                match amqp::connect(&self.url, &self.name).await {
                    Ok(connection) => match Publisher::open(&connection).await {
                        Ok(publisher) => {
                            self.connects += 1;
                            self.link = Some((connection, publisher));
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    },
                    Err(e) => {
                        last_error = e.to_string();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let (_, publisher) = self.link.as_ref().unwrap();
            match publisher
                .publish(exchange, routing_key, body, properties.clone(), true)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    last_error = e.to_string();
                    self.retries += 1;
                    if let Some((connection, _)) = self.link.take() {
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                connection.close(200, "reconnecting".into()),
                            )
                            .await;
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

async fn declare_watch(channel: &lapin::Channel, queue: &str, exchange: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum(),
        )
        .await
        .expect("declare a watch queue");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind a watch queue");
}

/// Ready messages in a queue, or None while the broker can't say.
async fn ready_count(url: &str, queue: &str) -> Option<u32> {
    let connection = amqp::connect(url, "chaos-count").await.ok()?;
    let count = async {
        let channel = connection.create_channel().await.ok()?;
        let queue = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        Some(queue.message_count())
    }
    .await;
    let _ = connection.close(200, "bye".into()).await;
    count
}

// ---------------------------------------------------------------- what the test sees

#[derive(Clone, Debug)]
enum Job {
    Cash {
        index: usize,
        cash: i64,
    },
    Recharge {
        index: usize,
        order: i64,
        charge: String,
    },
}

#[derive(Default)]
struct State {
    /// Every command id that must get a result, with the command.
    expected: HashMap<String, Value>,
    /// Every result published, by command id, in arrival order.
    results: HashMap<String, Vec<Value>>,
    base_seen: usize,
    /// Follow-up jobs queued and not yet sent.
    pending_jobs: usize,
    /// Recharge order → (base index, paid?), once its follow-up was sent.
    recharges: HashMap<i64, (usize, bool)>,
    /// Recharge order → the states seen for it on the events exchange and in retrieve results.
    order_states: HashMap<i64, Vec<i64>>,
    /// Cash id → base index of its request.
    cashes: HashMap<i64, usize>,
    /// Ids of the genuine events enqueued.
    event_ids: HashSet<String>,
    events: Vec<Value>,
    /// Messages published, all copies and retries included.
    publishes: usize,
    collector_connects: usize,
}

struct Board {
    state: Mutex<State>,
    window: Semaphore,
    plans: Vec<Plan>,
    jobs: mpsc::UnboundedSender<Job>,
}

fn base_index(id: &str) -> Option<usize> {
    id.strip_prefix("c-")?.parse().ok()
}

fn order_state(order: &Value) -> Option<(i64, i64)> {
    Some((order["id"].as_i64()?, order["state"].as_i64()?))
}

impl Board {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_result(&self, body: &[u8]) {
        let result: Value = serde_json::from_slice(body).expect("a result is JSON");
        let id = result["id"]
            .as_str()
            .expect("a result has an id")
            .to_owned();
        let mut state = self.state();
        if !state.results.contains_key(&id) {
            if let Some(index) = base_index(&id) {
                state.base_seen += 1;
                self.window.add_permits(1);
                if let Some(job) = self.job_for(index, &result) {
                    // Counted before the result is recorded, so that whoever sees the result
                    // also sees its follow-up as pending.
                    state.pending_jobs += 1;
                    self.jobs.send(job).expect("the follow-up queue is open");
                }
            }
            if id.ends_with("-r") && result["status"] == "succeeded" {
                if let Some((order, s)) = order_state(&result["data"]["order"]) {
                    state.order_states.entry(order).or_default().push(s);
                }
            }
        }
        state.results.entry(id).or_default().push(result);
    }

    fn job_for(&self, index: usize, result: &Value) -> Option<Job> {
        if result["status"] != "succeeded" {
            return None;
        }
        let data = &result["data"];
        match self.plans[index].kind {
            Kind::Cash => Some(Job::Cash {
                index,
                cash: data["cash"]["id"].as_i64().expect("a cash result's id"),
            }),
            Kind::Recharge => Some(Job::Recharge {
                index,
                order: data["order"]["id"].as_i64().expect("a recharge's order id"),
                charge: data["pingpp_order"]["id"]
                    .as_str()
                    .expect("a recharge's charge id")
                    .to_owned(),
            }),
            _ => None,
        }
    }

    fn on_event(&self, body: &[u8]) {
        let event: Value = serde_json::from_slice(body).expect("an event is JSON");
        let mut state = self.state();
        if let Some((order, s)) = order_state(&event["data"]["order"]) {
            state.order_states.entry(order).or_default().push(s);
        }
        state.events.push(event);
    }

    /// Registers a command id before it is first sent.
    fn expect(&self, command: &Value) {
        let id = command["id"].as_str().unwrap().to_owned();
        self.state().expected.insert(id, command.clone());
    }

    /// Everything sent has its result, every follow-up was sent, every recharge completed.
    fn complete(&self) -> bool {
        let state = self.state();
        state.pending_jobs == 0
            && state.base_seen == BASE_COMMANDS
            && state
                .expected
                .keys()
                .all(|id| state.results.contains_key(id))
            && state.recharges.keys().all(|order| {
                state
                    .order_states
                    .get(order)
                    .is_some_and(|s| s.iter().any(|&s| s != 0))
            })
    }

    /// A few command ids without a result and recharges not completed yet.
    fn stragglers(&self) -> (Vec<String>, Vec<i64>) {
        let state = self.state();
        let missing = state
            .expected
            .keys()
            .filter(|id| !state.results.contains_key(*id))
            .take(10)
            .cloned()
            .collect();
        let incomplete = state
            .recharges
            .keys()
            .filter(|order| {
                !state
                    .order_states
                    .get(order)
                    .is_some_and(|s| s.iter().any(|&s| s != 0))
            })
            .take(10)
            .copied()
            .collect();
        (missing, incomplete)
    }

    fn progress(&self) -> String {
        let state = self.state();
        let answered = state
            .expected
            .keys()
            .filter(|id| state.results.contains_key(*id))
            .count();
        format!(
            "{}/{BASE_COMMANDS} base results, {answered}/{} ids answered, {} follow-ups pending, \
             {} events out",
            state.base_seen,
            state.expected.len(),
            state.pending_jobs,
            state.events.len()
        )
    }
}

/// Consumes the results and events watch queues, reconnecting whenever the broker goes away.
/// Messages are acknowledged after they are recorded, so none is lost with a connection.
async fn collect(
    url: String,
    queues: (String, String),
    board: Arc<Board>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok(connection) = amqp::connect(&url, "chaos-collector").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        board.state().collector_connects += 1;
        let session = async {
            let setup = async {
                let channel = connection.create_channel().await?;
                channel.basic_qos(1_000, BasicQosOptions::default()).await?;
                let mut streams = Vec::new();
                for queue in [&queues.0, &queues.1] {
                    streams.push(
                        channel
                            .basic_consume(
                                queue.as_str().into(),
                                "".into(),
                                BasicConsumeOptions::default(),
                                FieldTable::default(),
                            )
                            .await?,
                    );
                }
                Ok::<_, lapin::Error>((channel, streams))
            };
            let (_channel, mut streams) = tokio::time::timeout(BROKER_CALL, setup)
                .await
                .map_err(|_| "setting up the consumers timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let mut events = streams.pop().unwrap();
            let mut results = streams.pop().unwrap();
            loop {
                let (delivery, is_result) = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    next = results.next() => (next, true),
                    next = events.next() => (next, false),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {
                        if connection.status().connected() {
                            continue;
                        }
                        return Err("the connection is gone".to_owned());
                    }
                };
                let delivery = delivery
                    .ok_or_else(|| "the consumer ended".to_owned())?
                    .map_err(|e| e.to_string())?;
                if is_result {
                    board.on_result(&delivery.data);
                } else {
                    board.on_event(&delivery.data);
                }
                // lapin has been seen never to answer an ack racing the connection's loss:
                // bounded, so the collector reconnects instead of waiting forever.
                tokio::time::timeout(BROKER_CALL, delivery.ack(BasicAckOptions::default()))
                    .await
                    .map_err(|_| "an ack timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
            }
        };
        let ended: Result<(), String> = session.await;
        let _ =
            tokio::time::timeout(Duration::from_secs(2), connection.close(200, "bye".into())).await;
        if ended.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn command_properties(id: &str) -> BasicProperties {
    json_properties().with_message_id(id.into())
}

async fn send_command(publisher: &mut RobustPublisher, names: &Names, command: &Value) {
    let kind = command["type"].as_str().unwrap();
    let id = command["id"].as_str().unwrap();
    publisher
        .publish(
            &names.commands_exchange,
            kind,
            command.to_string().as_bytes(),
            command_properties(id),
        )
        .await;
}

async fn send_copies(
    publisher: &mut RobustPublisher,
    names: &Names,
    command: &Value,
    copies: usize,
) -> usize {
    for _ in 0..copies {
        send_command(publisher, names, command).await;
    }
    copies
}

async fn publish_base(
    p: usize,
    sends: Vec<Send>,
    bad: Arc<Vec<Bad>>,
    board: Arc<Board>,
    url: String,
    names: Names,
) -> (usize, usize, usize) {
    let mut publisher = RobustPublisher::new(&url, format!("chaos-publisher-{p}"));
    let mut published = 0;
    for send in sends {
        match send {
            Send::First(i) => {
                board.window.acquire().await.unwrap().forget();
                let command = &board.plans[i].command;
                board.expect(command);
                send_command(&mut publisher, &names, command).await;
            }
            Send::Copy(i) => send_command(&mut publisher, &names, &board.plans[i].command).await,
            Send::Bad(b) => {
                let bad = &bad[b];
                let (exchange, key) = match bad.target {
                    Target::CommandsQueue => ("", names.commands_queue.as_str()),
                    Target::CommandsExchange(key) => (names.commands_exchange.as_str(), key),
                    Target::Webhooks => (names.webhooks_exchange.as_str(), PINGPP_ROUTING_KEY),
                };
                publisher
                    .publish(exchange, key, &bad.body, command_properties(&bad.id))
                    .await;
            }
        }
        published += 1;
    }
    board.state().publishes += published + publisher.retries;
    (published, publisher.connects, publisher.retries)
}

async fn follow_ups(
    n: usize,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    board: Arc<Board>,
    fake: Arc<FakePingpp>,
    url: String,
    names: Names,
    stop: CancellationToken,
) -> (usize, usize) {
    let mut publisher = RobustPublisher::new(&url, format!("chaos-follow-up-{n}"));
    let mut published = 0;
    loop {
        let job = tokio::select! {
            _ = stop.cancelled() => break,
            job = async { jobs.lock().await.recv().await } => match job {
                Some(job) => job,
                None => break,
            },
        };
        match job {
            Job::Cash { index, cash } => {
                board.state().cashes.insert(cash, index);
                let plan = board.plans[index].cash.clone().unwrap();
                for (d, (kind, copies)) in plan.decisions.iter().enumerate() {
                    let command = json!({
                        "id": format!("f-{index}-d{d}"), "type": kind, "user_id": OPERATOR,
                        "data": { "cash": cash, "remark": format!("chaos {kind}") },
                    });
                    board.expect(&command);
                    published += send_copies(&mut publisher, &names, &command, *copies).await;
                }
            }
            Job::Recharge {
                index,
                order,
                charge,
            } => {
                let plan = board.plans[index].recharge.clone().unwrap();
                let user = board.plans[index].command["user_id"].clone();
                let (kind, charge) = if plan.pay {
                    ("charge.succeeded", fake.pay(&charge))
                } else {
                    (
                        "charge.failed",
                        fake.fail_charge(&charge, "channel_declined", "支付失败"),
                    )
                };
                let (event, _signature) = fake.signed_event(kind, charge);
                let event_id: Value = serde_json::from_str::<Value>(&event).unwrap()["id"].clone();
                {
                    let mut state = board.state();
                    state.recharges.insert(order, (index, plan.pay));
                    state
                        .event_ids
                        .insert(event_id.as_str().unwrap().to_owned());
                }
                let retrieve = plan.retrieve_copies.map(|copies| {
                    let command = json!({
                        "id": format!("f-{index}-r"), "type": "recharge.retrieve",
                        "user_id": user, "data": { "order": order },
                    });
                    board.expect(&command);
                    (command, copies)
                });
                if plan.retrieve_first {
                    if let Some((command, copies)) = &retrieve {
                        published += send_copies(&mut publisher, &names, command, *copies).await;
                    }
                }
                for _ in 0..plan.event_copies {
                    publisher
                        .publish(
                            &names.webhooks_exchange,
                            PINGPP_ROUTING_KEY,
                            event.as_bytes(),
                            json_properties(),
                        )
                        .await;
                    published += 1;
                }
                if !plan.retrieve_first {
                    if let Some((command, copies)) = &retrieve {
                        published += send_copies(&mut publisher, &names, command, *copies).await;
                    }
                }
            }
        }
        board.state().pending_jobs -= 1;
    }
    board.state().publishes += published + publisher.retries;
    (published, publisher.retries)
}

// ---------------------------------------------------------------- the test

async fn db_counts(url: &str) -> Option<(i64, i64)> {
    let client = pluspay::db::connect(url).await.ok()?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM commands WHERE result IS NOT NULL),
                    (SELECT count(*) FROM pingpp_events)",
            &[],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let started = Instant::now();
    let seed: u64 = match std::env::var("PP_CHAOS_SEED") {
        Ok(seed) => seed.trim().parse().expect("PP_CHAOS_SEED is a u64"),
        Err(_) => rand::random(),
    };
    say(format!("seed {seed} (replay with PP_CHAOS_SEED={seed})"));
    let mut rng = StdRng::seed_from_u64(seed);

    let services = Services::start().await;
    std::fs::create_dir_all(services.logs()).unwrap();
    say(format!(
        "own services up in {:.1}s in {}",
        started.elapsed().as_secs_f64(),
        services.dir.display()
    ));
    let mut env = TestEnv::with_urls(&services.db_url, &services.amqp_url).await;
    let fake = Arc::new(env.with_fake_pingpp().await);
    let settings = env.settings.clone();
    let names = env.names.clone();
    let amqp_url = settings.amqp.url.clone();
    let db_url = settings.database.url.clone();
    let ratio = settings.wallet.ratio;
    for user in 1..=USERS {
        env.fund(user, FUNDING).await;
    }

    let scenario = scenario(&mut rng, &fake);
    let mut chaos_rng = StdRng::seed_from_u64(seed ^ 0x00C4_A05C_4A05);

    // The topology and the watch queues exist before anything is sent, so no result or event
    // is published while nothing would keep it.
    let results_queue = format!("{}.chaos.results", settings.amqp.namespace);
    let events_queue = format!("{}.chaos.events", settings.amqp.namespace);
    {
        let connection = amqp::connect(&amqp_url, "chaos-setup").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        amqp::topology::declare(&channel, &names, settings.amqp.delivery_limit)
            .await
            .unwrap();
        declare_watch(&channel, &results_queue, &names.results_exchange).await;
        declare_watch(&channel, &events_queue, &names.events_exchange).await;
        connection.close(200, "bye".into()).await.unwrap();
    }

    let pingpp = &settings.pingpp;
    let mut workers = Workers {
        env: vec![
            ("PLUSPAY_DATABASE_URL", db_url.clone()),
            ("PLUSPAY_AMQP_URL", amqp_url.clone()),
            ("PLUSPAY_AMQP_NAMESPACE", settings.amqp.namespace.clone()),
            // Two workers at once: each its own metrics port.
            ("PLUSPAY_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            ("PLUSPAY_PINGPP_API_BASE", pingpp.api_base.clone()),
            ("PLUSPAY_PINGPP_APP_ID", pingpp.app_id.clone()),
            ("PLUSPAY_PINGPP_SECRET_KEY", pingpp.secret_key.clone()),
            (
                "PLUSPAY_PINGPP_PRIVATE_KEY",
                pingpp
                    .private_key
                    .as_ref()
                    .unwrap()
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
        ],
        logs: services.logs(),
        slots: [None, None],
        spawned: 0,
        killed: 0,
        all_logs: Vec::new(),
    };
    workers.spawn(0);

    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let board = Arc::new(Board {
        state: Mutex::default(),
        window: Semaphore::new(WINDOW),
        plans: scenario.plans.clone(),
        jobs: jobs_tx,
    });
    let stop = CancellationToken::new();
    let collector = tokio::spawn(collect(
        amqp_url.clone(),
        (results_queue.clone(), events_queue.clone()),
        board.clone(),
        stop.clone(),
    ));
    let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
    let follow_up_tasks: Vec<_> = (0..FOLLOW_UP_PUBLISHERS)
        .map(|n| {
            tokio::spawn(follow_ups(
                n,
                jobs_rx.clone(),
                board.clone(),
                fake.clone(),
                amqp_url.clone(),
                names.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let bad = Arc::new(scenario.bad.clone());
    let traffic_started = Instant::now();
    let publishers: Vec<_> = scenario
        .sends
        .iter()
        .enumerate()
        .map(|(p, sends)| {
            tokio::spawn(publish_base(
                p,
                sends.clone(),
                bad.clone(),
                board.clone(),
                amqp_url.clone(),
                names.clone(),
            ))
        })
        .collect();

    // The chaos, then the wait for everything to be answered.
    let mut schedule = scenario.schedule.iter().peekable();
    let mut log: Vec<String> = Vec::new();
    let mut last_progress = Instant::now();
    loop {
        workers.check();
        let seen = board.state().base_seen;
        if let Some(&&(at, action)) = schedule.peek() {
            if seen >= at {
                schedule.next();
                let when = format!(
                    "{:>5.1}s at {seen:>4}",
                    traffic_started.elapsed().as_secs_f64()
                );
                match action {
                    Chaos::KillMain | Chaos::KillSecond => {
                        let slot = usize::from(action == Chaos::KillSecond);
                        workers.kill(slot).await;
                        let pause = chaos_rng.random_range(0..500);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        workers.spawn(slot);
                        log.push(format!(
                            "{when}: SIGKILL worker {slot}, restarted after {pause} ms"
                        ));
                    }
                    Chaos::StartSecond => {
                        workers.spawn(1);
                        log.push(format!("{when}: second worker started"));
                    }
                    Chaos::StopSecond => {
                        workers.stop(1).await;
                        log.push(format!("{when}: second worker stopped (SIGTERM, exit 0)"));
                    }
                    Chaos::RestartRabbitmq => {
                        // Every worker that lives through the restart must consume again, and
                        // promptly again when, right after, the broker drops every connection
                        // while staying up (as a proxy or a network blip would).
                        let marks = consuming_marks(&workers);
                        let took = services.run("restart-rabbitmq").await;
                        let restarted = Instant::now();
                        await_consuming(
                            &mut workers,
                            marks,
                            Duration::from_secs(60),
                            "after RabbitMQ restarted",
                        )
                        .await;
                        let resumed = restarted.elapsed();
                        let marks = consuming_marks(&workers);
                        let dropped = Instant::now();
                        services
                            .rabbitmqctl(&["close_all_connections", "chaos"])
                            .await;
                        await_consuming(
                            &mut workers,
                            marks,
                            RESUME_AFTER_DROP,
                            "promptly after the broker closed every connection (the broker \
                             stayed up)",
                        )
                        .await;
                        log.push(format!(
                            "{when}: RabbitMQ restarted ({:.1}s), workers consuming again after \
                             {:.1}s; all connections closed, workers consuming again after {:.1}s",
                            took.as_secs_f64(),
                            resumed.as_secs_f64(),
                            dropped.elapsed().as_secs_f64()
                        ));
                    }
                    Chaos::RestartPostgres => {
                        let took = services.run("restart-postgres").await;
                        log.push(format!(
                            "{when}: PostgreSQL restarted ({:.1}s)",
                            took.as_secs_f64()
                        ));
                    }
                    Chaos::PingppHiccup => {
                        fake.fail_next(4, 503);
                        fake.lose_next_answers(2);
                        log.push(format!(
                            "{when}: Ping++ answers 503 four times, loses two answers"
                        ));
                    }
                }
                say(log.last().unwrap());
                continue;
            }
        }
        if schedule.peek().is_none()
            && publishers.iter().all(|p| p.is_finished())
            && board.complete()
        {
            let (commands, events) = db_counts(&db_url).await.unwrap_or((-1, -1));
            let state = board.state();
            if commands == state.expected.len() as i64 && events == state.event_ids.len() as i64 {
                break;
            }
        }
        if traffic_started.elapsed() > TRAFFIC_DEADLINE {
            let (missing, incomplete) = board.stragglers();
            panic!(
                "not done after {TRAFFIC_DEADLINE:?}: {}; db (commands with a result, events): \
                 {:?}; no result yet for {missing:?}; recharges not completed: {incomplete:?}; \
                 chaos so far: {log:#?}",
                board.progress(),
                db_counts(&db_url).await,
            );
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = Instant::now();
            say(format!(
                "{:>5.1}s: {}",
                traffic_started.elapsed().as_secs_f64(),
                board.progress()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let traffic_time = traffic_started.elapsed();
    say(format!(
        "{:>5.1}s: every command answered: {}",
        traffic_time.as_secs_f64(),
        board.progress()
    ));
    let mut publisher_connects = 0;
    let mut publisher_retries = 0;
    for publisher in publishers {
        let (_, connects, retries) = publisher.await.unwrap();
        publisher_connects += connects;
        publisher_retries += retries;
    }

    // Let the duplicates still queued be consumed, then stop the workers gracefully: nothing
    // may be left behind in the queues, not even unacknowledged.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    for queue in [&names.commands_queue, &names.webhooks_queue] {
        loop {
            workers.check();
            if ready_count(&amqp_url, queue).await == Some(0) {
                break;
            }
            assert!(
                Instant::now() < drain_deadline,
                "{queue} does not drain: {:?} ready",
                ready_count(&amqp_url, queue).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for slot in [0, 1] {
        if workers.slots[slot].is_some() {
            workers.stop(slot).await;
        }
    }
    for queue in [&names.commands_queue, &names.webhooks_queue] {
        assert_eq!(
            ready_count(&amqp_url, queue).await,
            Some(0),
            "{queue} still holds messages after the workers stopped"
        );
    }
    stop.cancel();
    collector.await.unwrap();
    let mut follow_up_publishes = 0;
    for task in follow_up_tasks {
        let (published, retries) = task.await.unwrap();
        follow_up_publishes += published;
        publisher_retries += retries;
    }
    // No worker panicked, and none met a failure it did not take for transient: under this
    // chaos that would be a lost connection mistaken for a bug, which ends in the dead letters.
    let alarms: Vec<String> = workers
        .all_logs
        .iter()
        .flat_map(|log| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("panicked") || l.contains("message failed"))
                .map(|l| format!("{}: {l}", log.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(alarms.is_empty(), "in the worker logs: {alarms:#?}");

    // The dead letters are exactly the bad messages (a worker killed between dead-lettering
    // one and acknowledging it may have dead-lettered it twice, which is at-least-once).
    let dead = {
        let connection = amqp::connect(&amqp_url, "chaos-dead").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut dead = Vec::new();
        while let Some(message) = channel
            .basic_get(
                names.dead_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            dead.push(message.delivery);
        }
        connection.close(200, "bye".into()).await.unwrap();
        dead
    };
    let mut dead_ids = HashSet::new();
    for letter in &dead {
        let id = letter
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let reason = header_str(letter.properties.headers(), ERROR_HEADER).unwrap_or_default();
        let Some(meant) = scenario.bad.iter().find(|b| b.id == id) else {
            panic!(
                "an unexpected dead letter (message id {id:?}, reason {reason:?}): {}",
                String::from_utf8_lossy(&letter.data)
            );
        };
        assert_eq!(letter.data, meant.body, "dead letter {id}");
        assert!(
            reason.contains(meant.reason),
            "dead letter {id}: reason {reason:?}, expected it to mention {:?}",
            meant.reason
        );
        dead_ids.insert(id);
    }
    let meant: HashSet<String> = scenario.bad.iter().map(|b| b.id.clone()).collect();
    assert_eq!(dead_ids, meant, "the dead letters");

    // ---- the model, from the results alone
    // Every task that wrote to the board has ended.
    let state = std::mem::take(&mut *board.state());
    let db = pluspay::db::connect(&db_url).await.unwrap();
    let stored: HashMap<String, Value> = db
        .query("SELECT id, result::text FROM commands", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let result: Option<&str> = row.get(1);
            let result =
                result.unwrap_or_else(|| panic!("{}: no stored result", row.get::<_, &str>(0)));
            (row.get(0), serde_json::from_str(result).unwrap())
        })
        .collect();
    let expected_ids: HashSet<&String> = state.expected.keys().collect();
    let stored_ids: HashSet<&String> = stored.keys().collect();
    assert_eq!(
        stored_ids, expected_ids,
        "the commands table holds one row per command sent"
    );
    for id in state.results.keys() {
        assert!(
            state.expected.contains_key(id),
            "a result for {id}, never sent"
        );
    }
    let mut published_results = 0;
    for (id, command) in &state.expected {
        let results = &state.results[id];
        published_results += results.len();
        for result in results {
            assert_eq!(
                result, &stored[id],
                "{id}: a published result differs from the stored one"
            );
        }
        assert_eq!(stored[id]["type"], command["type"], "{id}");
    }

    let mut wallets: BTreeMap<i64, i64> = (1..=USERS).map(|u| (u, FUNDING)).collect();
    let mut points: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut pending_payouts, mut paid_out, mut revenue, mut clearing) = (0i64, 0i64, 0i64, 0i64);
    let mut outcomes: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    let mut cash_values: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut recharge_orders: HashMap<i64, (i64, i64, bool)> = HashMap::new();
    for plan in &scenario.plans {
        let result = &stored[&plan.id];
        let user = plan.command["user_id"].as_i64().unwrap();
        let data = &plan.command["data"];
        let status = result["status"].as_str().unwrap();
        let outcome = match status {
            "succeeded" => "succeeded".to_owned(),
            _ => result["code"].as_str().unwrap_or("?").to_owned(),
        };
        *outcomes.entry((plan.kind, outcome.clone())).or_default() += 1;
        if status != "succeeded" {
            assert!(
                matches!(
                    plan.kind,
                    Kind::Transfer | Kind::Reward | Kind::Cash | Kind::Transform
                ) && outcome == "insufficient_balance",
                "{}: {result}",
                plan.id
            );
            continue;
        }
        match plan.kind {
            Kind::Transfer | Kind::Reward => {
                let amount = data["amount"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= amount;
                *wallets.get_mut(&data["user"].as_i64().unwrap()).unwrap() += amount;
            }
            Kind::Cash => {
                let value = data["value"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= value;
                pending_payouts += value;
                cash_values.insert(
                    result["data"]["cash"]["id"].as_i64().unwrap(),
                    (user, value),
                );
            }
            Kind::Transform => {
                let amount = data["amount"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= amount;
                *points.entry(user).or_default() += amount * ratio;
                revenue += amount;
            }
            Kind::Recharge => {
                let order = result["data"]["order"]["id"].as_i64().unwrap();
                let paid = state.recharges[&order].1;
                recharge_orders.insert(order, (user, data["amount"].as_i64().unwrap(), paid));
            }
            Kind::Read => {}
        }
    }
    // Cash decisions: each request ends approved or rejected, whichever decision won.
    let mut cash_status: HashMap<i64, i64> = HashMap::new();
    let mut lost_races = 0;
    for (&cash, &index) in &state.cashes {
        let plan = scenario.plans[index].cash.as_ref().unwrap();
        let mut finals = HashSet::new();
        for (d, (kind, _)) in plan.decisions.iter().enumerate() {
            let result = &stored[&format!("f-{index}-d{d}")];
            if result["status"] == "succeeded" {
                finals.insert(result["data"]["cash"]["status"].as_i64().unwrap());
                let want = if *kind == "cash.approve" { 1 } else { 2 };
                assert_eq!(result["data"]["cash"]["status"], want, "{result}");
            } else {
                assert_eq!(result["code"], "cash_already_decided", "{result}");
                assert_eq!(
                    plan.decisions.len(),
                    2,
                    "only a racing decision may lose: {result}"
                );
                lost_races += 1;
            }
        }
        assert_eq!(finals.len(), 1, "cash {cash}: decided as {finals:?}");
        let status = *finals.iter().next().unwrap();
        let (user, value) = cash_values[&cash];
        pending_payouts -= value;
        if status == 2 {
            *wallets.get_mut(&user).unwrap() += value;
        } else {
            paid_out += value;
        }
        cash_status.insert(cash, status);
    }
    assert_eq!(
        cash_status.len(),
        cash_values.len(),
        "every cash request was decided"
    );
    // Recharges: credited once when paid, failed otherwise, as the events and retrieves say.
    let mut credited = 0;
    for (&order, &(user, amount, paid)) in &recharge_orders {
        let seen = &state.order_states[&order];
        let want = if paid { 1 } else { -1 };
        assert!(
            seen.iter().all(|&s| s == want),
            "recharge order {order}: states {seen:?}, expected {want}"
        );
        if paid {
            *wallets.get_mut(&user).unwrap() += amount;
            clearing -= amount;
            credited += 1;
        }
    }
    for event in &state.events {
        let order = event["data"]["order"]["id"].as_i64().unwrap();
        assert!(
            recharge_orders.contains_key(&order),
            "an event for order {order}: {event}"
        );
    }

    // ---- the database agrees with the model
    let rows = db
        .query(
            "SELECT kind, coalesce(user_id, 0), coalesce(name, ''), balance FROM accounts",
            &[],
        )
        .await
        .unwrap();
    let mut db_wallets = BTreeMap::new();
    let mut db_points = BTreeMap::new();
    let mut system = HashMap::new();
    for row in rows {
        let (kind, user, name, balance): (String, i64, String, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        match kind.as_str() {
            "wallet" => {
                assert!(balance >= 0, "wallet {user} is negative: {balance}");
                db_wallets.insert(user, balance);
            }
            "points" => {
                db_points.insert(user, balance);
            }
            _ => {
                system.insert(name, balance);
            }
        }
    }
    assert_eq!(db_wallets, wallets, "the wallets against the model");
    points.retain(|_, p| *p != 0);
    db_points.retain(|_, p| *p != 0);
    assert_eq!(db_points, points, "the points against the model");
    let issued: i64 = points.values().sum();
    for (name, want) in [
        ("pending_payouts", pending_payouts),
        ("paid_out", paid_out),
        ("transform_revenue", revenue),
        ("pingpp_clearing", clearing),
        ("points_issued", -issued),
        ("test_funding", -USERS * FUNDING),
    ] {
        assert_eq!(
            system.get(name).copied().unwrap_or(0),
            want,
            "system account {name}"
        );
    }
    for row in db
        .query("SELECT id, status FROM cashes", &[])
        .await
        .unwrap()
    {
        let (id, status): (i64, i16) = (row.get(0), row.get(1));
        assert_eq!(
            cash_status.get(&id).copied(),
            Some(i64::from(status)),
            "cash {id}"
        );
    }
    let rows = db
        .query(
            "SELECT id, state FROM wallet_orders WHERE target_type = 'recharge_ping_p_p'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), recharge_orders.len(), "one order per recharge");
    for row in rows {
        let (id, db_state): (i64, i16) = (row.get(0), row.get(1));
        let paid = recharge_orders[&id].2;
        assert_eq!(db_state, if paid { 1 } else { -1 }, "recharge order {id}");
    }
    let recorded: HashSet<String> = db
        .query("SELECT id FROM pingpp_events", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        recorded, state.event_ids,
        "every genuine event recorded once"
    );
    let audit =
        crate::support::pluspay(&["audit"], &[("PLUSPAY_DATABASE_URL", db_url.clone())]).await;
    assert!(
        audit.status.success(),
        "pluspay audit: {}\n{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );

    // Both paths of the rules were exercised.
    let count = |kind: Kind, outcome: &str| {
        outcomes
            .get(&(kind, outcome.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let moved: usize = [Kind::Transfer, Kind::Reward, Kind::Cash, Kind::Transform]
        .iter()
        .map(|&k| count(k, "succeeded"))
        .sum();
    let refused: usize = [Kind::Transfer, Kind::Reward, Kind::Cash, Kind::Transform]
        .iter()
        .map(|&k| count(k, "insufficient_balance"))
        .sum();
    assert!(
        moved > 2 * refused && refused > 0,
        "{moved} moved money, {refused} refused"
    );
    assert!(workers.killed >= 3, "{} kills", workers.killed);

    let duplicates_sent: usize = scenario
        .sends
        .iter()
        .flatten()
        .filter(|s| matches!(s, Send::Copy(_)))
        .count();
    say(format!("seed {seed}"));
    for line in &log {
        say(format!("  {line}"));
    }
    say(format!(
        "{} base commands ({} of them sent more than once, {duplicates_sent} extra copies), \
         {} follow-up commands, {} genuine events ({} enqueued in all), {} bad messages",
        BASE_COMMANDS,
        scenario.duplicated,
        state.expected.len() - BASE_COMMANDS,
        state.event_ids.len(),
        scenario
            .plans
            .iter()
            .filter_map(|p| p.recharge.as_ref())
            .map(|r| r.event_copies)
            .sum::<usize>(),
        scenario.bad.len(),
    ));
    say(format!(
        "outcomes: {}",
        outcomes
            .iter()
            .map(|((kind, outcome), n)| format!("{kind:?} {outcome} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    say(format!(
        "{} results published for {} ids; {credited} recharges credited; {} cash requests \
         decided ({lost_races} racing decisions lost); {} dead letters for {} bad messages",
        published_results,
        state.expected.len(),
        cash_status.len(),
        dead.len(),
        scenario.bad.len()
    ));
    say(format!(
        "{} worker processes, {} SIGKILLs; publishers connected {publisher_connects} times and \
         published again {publisher_retries} times ({follow_up_publishes} follow-up messages, \
         {} publishes in all); the collector connected {} times",
        workers.spawned, workers.killed, state.publishes, state.collector_connects
    ));
    say(format!(
        "traffic {:.1}s, whole test {:.1}s",
        traffic_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}
