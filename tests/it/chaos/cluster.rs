//! The cluster fault test: the chaos test's traffic (thousands of mixed commands, some sent
//! more than once, and the signed webhooks of the recharges, delivered over HTTP) against the
//! local cluster of scripts/cluster.sh (three RabbitMQ nodes, a PostgreSQL primary with a
//! synchronous standby under pg_auto_failover), three `pluspay worker` and two `pluspay
//! webhooks` processes, and publishers spread over the three broker nodes. One after another:
//! the node leading the commands queue is SIGKILLed and later restarted, the PostgreSQL primary
//! is SIGKILLed and the monitor promotes the standby, a worker is SIGKILLed, a listener is
//! SIGKILLed. Afterwards the books are checked as in the chaos test, and for each fault the
//! test prints how long no result came out.
//!
//! The seed is printed at the start and taken from `PP_CLUSTER_SEED` when set.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::TestEnv;
use pluspay::amqp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::board::{Routes, Traffic};
use super::books::check_the_books;
use super::broker::declare_watch;
use super::plan::scenario;
use super::services::{
    alarms, await_consuming, consuming_marks, drain_then_stop, process_env, take_down, Workers,
};
use super::{say, BASE_COMMANDS, FUNDING, USERS};

const WORKERS: usize = 3;
const LISTENERS: usize = 2;
/// Signed webhooks the run must deliver at least.
const MIN_WEBHOOKS: usize = 500;
/// From the first command to the last result, at most.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(420);
/// How long the monitor may take to promote the standby.
const PROMOTION_DEADLINE: Duration = Duration::from_secs(120);
/// The window after a fault (cut short by the next one) in which the longest stretch without
/// a result is its unavailability.
const AFTER_FAULT: Duration = Duration::from_secs(60);
/// No fault may stop the results for this long (each is over in seconds: a promotion, a
/// reconnect, a redelivery).
const MAX_UNAVAILABLE: Duration = Duration::from_secs(45);

/// scripts/cluster.sh's cluster: the one scripts/test.sh started (`PP_CLUSTER_DIR`), or one
/// of its own in a new directory. Dropping its own takes it down (and keeps the directory,
/// with every log, when the test failed or `PP_CHAOS_KEEP` is set).
struct Cluster {
    script: PathBuf,
    dir: PathBuf,
    own: bool,
    amqp_urls: Vec<String>,
    db_url: String,
}

impl Cluster {
    async fn up() -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
        let given = std::env::var_os("PP_CLUSTER_DIR").map(PathBuf::from);
        let own = given.is_none();
        let dir = given.unwrap_or_else(|| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            std::env::temp_dir().join(format!("ppcluster-{}", &suffix[..10]))
        });
        let mut cluster = Cluster {
            script,
            dir,
            own,
            amqp_urls: Vec::new(),
            db_url: String::new(),
        };
        if own {
            cluster.run(&["up"]).await;
        }
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(r#"source "$1/env" && printf '%s\n%s\n' "$PP_CLUSTER_AMQP_URLS" "$PP_CLUSTER_DATABASE_URL""#)
            .arg("bash")
            .arg(&cluster.dir)
            .output()
            .expect("read the cluster's env");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        cluster.amqp_urls = lines
            .next()
            .expect("PP_CLUSTER_AMQP_URLS")
            .split(',')
            .map(str::to_owned)
            .collect();
        cluster.db_url = lines.next().expect("PP_CLUSTER_DATABASE_URL").to_owned();
        assert_eq!(cluster.amqp_urls.len(), 3, "{text}");
        cluster
    }

    /// Runs `cluster.sh ACTION DIR ARGS...`; its stdout, or None when it failed.
    async fn try_run(&self, args: &[&str]) -> Option<String> {
        let out = tokio::process::Command::new("bash")
            .arg(&self.script)
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run cluster.sh");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .or_else(|| {
                say(format!(
                    "cluster.sh {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
                None
            })
    }

    async fn run(&self, args: &[&str]) -> String {
        self.try_run(args)
            .await
            .unwrap_or_else(|| panic!("cluster.sh {args:?} failed"))
    }

    async fn queue_leader(&self, queue: &str) -> usize {
        let node = self.run(&["queue-leader", queue]).await;
        node.parse().expect("a node number")
    }

    async fn pg_primary(&self) -> Option<usize> {
        self.try_run(&["pg-primary"]).await?.parse().ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.own {
            take_down(&self.script, "down", &self.dir);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillCommandsLeader,
    RestartBroker,
    KillDatabasePrimary,
    KillWorker,
    KillListener,
}

/// What happened at one fault, and what it cost.
struct Happened {
    fault: Fault,
    at: Instant,
    what: String,
}

/// The faults, one after another, at moments counted in base results seen.
fn fault_plan(rng: &mut StdRng) -> Vec<(usize, Fault)> {
    let at = |rng: &mut StdRng, from: f64, to: f64| {
        (BASE_COMMANDS as f64 * rng.random_range(from..to)) as usize
    };
    vec![
        (at(rng, 0.08, 0.12), Fault::KillCommandsLeader),
        (at(rng, 0.22, 0.26), Fault::RestartBroker),
        (at(rng, 0.36, 0.42), Fault::KillDatabasePrimary),
        (at(rng, 0.60, 0.66), Fault::KillWorker),
        (at(rng, 0.76, 0.82), Fault::KillListener),
    ]
}

/// The longest stretch without a result from `from` until `until` (`times` sorted), the one
/// running at `until` included.
fn unavailability(times: &[Instant], from: Instant, until: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &t in times.iter().filter(|&&t| t > from && t <= until) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(until.saturating_duration_since(last))
}

async fn await_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "no listener on port {port} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The broker node (`host:port`) a process's log says it connected to last.
fn last_node(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter(|l| {
            l.contains("connected to the broker") || l.contains("moved to another broker node")
        })
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("node="))
                .map(|n| n.trim_matches('"').to_owned())
        })
}

/// Waits until every running process of `processes` has said which node it connected to;
/// the slots on `node`.
async fn slots_on(processes: &mut Workers, node: &str) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        processes.check();
        let running = processes.running();
        let nodes: Vec<Option<String>> = running.iter().map(|(_, log)| last_node(log)).collect();
        if nodes.iter().all(Option::is_some) {
            return running
                .iter()
                .zip(&nodes)
                .filter(|(_, n)| n.as_deref() == Some(node))
                .map(|((slot, _), _)| *slot)
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "a {} did not connect to a broker within 60 s",
            processes.subcommand
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_faults() {
    let started = Instant::now();
    let seed: u64 = match std::env::var("PP_CLUSTER_SEED") {
        Ok(seed) => seed.trim().parse().expect("PP_CLUSTER_SEED is a u64"),
        Err(_) => rand::random(),
    };
    say(format!(
        "cluster: seed {seed} (replay with PP_CLUSTER_SEED={seed})"
    ));
    let mut rng = StdRng::seed_from_u64(seed);

    let cluster = Cluster::up().await;
    let logs = cluster.dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    say(format!(
        "cluster: up in {:.1}s in {}",
        started.elapsed().as_secs_f64(),
        cluster.dir.display()
    ));
    let mut env = TestEnv::with_urls(&cluster.db_url, &cluster.amqp_urls[0]).await;
    env.settings.amqp.urls = cluster.amqp_urls.clone();
    let fake = Arc::new(env.with_fake_pingpp().await);
    // As in the chaos test: refunds end in their command (see check_the_books).
    fake.decide_charge_refunds_at_once(Some("succeeded"));
    let key_file = logs.join("pingpp-webhook-key.pem");
    std::fs::write(&key_file, fake.public_key_pem()).unwrap();
    env.settings.pingpp.public_key = Some(key_file);
    let settings = env.settings.clone();
    let names = env.names.clone();
    let urls = cluster.amqp_urls.clone();
    let db_url = settings.database.url.clone();
    for user in 1..=USERS {
        env.fund(user, FUNDING).await;
    }
    // That connection would not live through the failover; the books use new ones.
    drop(env);

    let scenario = scenario(&mut rng, &fake);
    let mut fault_rng = StdRng::seed_from_u64(seed ^ 0xC105_7E12);
    let faults = fault_plan(&mut fault_rng);

    let results_queue = format!("{}.chaos.results", settings.amqp.namespace);
    let events_queue = format!("{}.chaos.events", settings.amqp.namespace);
    {
        let connection = amqp::connect(&urls[0], "cluster-setup").await.unwrap();
        amqp::topology::declare(&connection, &names, &settings.amqp)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        declare_watch(&channel, &results_queue, &names.results_exchange).await;
        declare_watch(&channel, &events_queue, &names.events_exchange).await;
        connection.close(200, "bye".into()).await.unwrap();
    }

    let mut workers = Workers::new("worker", process_env(&settings), logs.clone(), WORKERS);
    for slot in 0..WORKERS {
        workers.spawn(slot);
    }
    // The node that will be killed leads the commands queue; at least one worker is connected
    // to it, so that the kill makes a worker move (each starts at a random node).
    let leader = cluster.queue_leader(&names.commands_queue).await;
    let leader_node = amqp::node_label(&urls[leader - 1]);
    let mut respawned = 0;
    while slots_on(&mut workers, &leader_node).await.is_empty() {
        assert!(respawned < 40, "no worker ever started on node {leader}");
        workers.kill(0).await;
        workers.spawn(0);
        respawned += 1;
    }
    let mut listeners = Workers::new("webhooks", process_env(&settings), logs.clone(), LISTENERS);
    let ports: Vec<u16> = (0..LISTENERS).map(|_| free_port()).collect();
    for (slot, port) in ports.iter().enumerate() {
        listeners.slot_env[slot].push(("PLUSPAY_WEBHOOK_LISTEN", format!("127.0.0.1:{port}")));
        listeners.spawn(slot);
    }
    for &port in &ports {
        await_listening(port).await;
    }
    let listener_urls: Arc<Vec<String>> = Arc::new(
        ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}/api/v2/plus-pay/webhooks"))
            .collect(),
    );

    // Publisher p starts on node p % 3.
    let mut traffic = Traffic::start(
        &scenario,
        fake.clone(),
        Routes {
            brokers: urls.clone(),
            listeners: listener_urls.clone(),
            names: names.clone(),
        },
        (results_queue.clone(), events_queue.clone()),
    );
    let board = traffic.board.clone();
    let traffic_started = traffic.started;

    let mut schedule = faults.iter().peekable();
    let mut happened: Vec<Happened> = Vec::new();
    let mut killed_broker = None;
    let mut rejoin = None;
    loop {
        workers.check();
        listeners.check();
        let seen = board.state().base_seen;
        if let Some(&&(at, fault)) = schedule.peek() {
            if seen >= at {
                schedule.next();
                let mut now = Instant::now();
                let what = match fault {
                    Fault::KillCommandsLeader => {
                        let node = cluster.queue_leader(&names.commands_queue).await;
                        assert_eq!(node, leader, "the commands queue's leader moved by itself");
                        let on_node = slots_on(&mut workers, &leader_node).await;
                        let marks: Vec<_> = consuming_marks(&workers)
                            .into_iter()
                            .filter(|(slot, _, _)| on_node.contains(slot))
                            .collect();
                        now = Instant::now();
                        cluster.run(&["kill-rabbit", &node.to_string()]).await;
                        killed_broker = Some(node);
                        // Its workers move to another node and consume there.
                        await_consuming(
                            &mut workers,
                            marks,
                            Duration::from_secs(60),
                            "on another node after theirs was killed",
                        )
                        .await;
                        for (slot, log) in workers.running() {
                            if !on_node.contains(&slot) {
                                continue;
                            }
                            assert_ne!(
                                last_node(&log).as_deref(),
                                Some(leader_node.as_str()),
                                "worker {slot} still on the killed node"
                            );
                        }
                        format!(
                            "SIGKILL RabbitMQ node {node}, leader of the commands queue; \
                             worker(s) {on_node:?} on it consuming on another node after {:.1}s",
                            now.elapsed().as_secs_f64()
                        )
                    }
                    Fault::RestartBroker => {
                        let node = killed_broker.expect("a node was killed").to_string();
                        cluster.run(&["start-rabbit", &node]).await;
                        format!(
                            "RabbitMQ node {node} restarted and back in the cluster ({:.1}s)",
                            now.elapsed().as_secs_f64()
                        )
                    }
                    Fault::KillDatabasePrimary => {
                        let old = cluster.pg_primary().await.expect("a primary");
                        now = Instant::now();
                        cluster.run(&["kill-pg", &old.to_string()]).await;
                        loop {
                            if let Some(new) = cluster.pg_primary().await {
                                if new != old {
                                    break;
                                }
                            }
                            assert!(
                                now.elapsed() < PROMOTION_DEADLINE,
                                "the monitor did not promote the standby within \
                                 {PROMOTION_DEADLINE:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        let promoted = now.elapsed();
                        // The old primary comes back as the new standby while traffic goes on.
                        let script = cluster.script.clone();
                        let dir = cluster.dir.clone();
                        rejoin = Some(tokio::spawn(async move {
                            let begun = Instant::now();
                            let status = tokio::process::Command::new("bash")
                                .arg(script)
                                .arg("start-pg")
                                .arg(dir)
                                .arg(old.to_string())
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .status()
                                .await
                                .expect("run cluster.sh start-pg");
                            (status.success(), begun.elapsed())
                        }));
                        format!(
                            "SIGKILL PostgreSQL primary (node {old}: pg_autoctl and postgres), \
                             standby promoted after {:.1}s",
                            promoted.as_secs_f64()
                        )
                    }
                    Fault::KillWorker => {
                        let slot = fault_rng.random_range(0..WORKERS);
                        workers.kill(slot).await;
                        let pause = fault_rng.random_range(0..1_000);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        workers.spawn(slot);
                        format!("SIGKILL worker {slot}, restarted after {pause} ms")
                    }
                    Fault::KillListener => {
                        let slot = fault_rng.random_range(0..LISTENERS);
                        listeners.kill(slot).await;
                        let pause = fault_rng.random_range(500..3_000);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        listeners.spawn(slot);
                        await_listening(ports[slot]).await;
                        format!("SIGKILL listener {slot}, restarted after {pause} ms")
                    }
                };
                say(format!(
                    "cluster: {:>5.1}s at {seen:>4}: {what}",
                    traffic_started.elapsed().as_secs_f64()
                ));
                happened.push(Happened {
                    fault,
                    at: now,
                    what,
                });
                continue;
            }
        }
        let story: Vec<String> = happened.iter().map(|h| h.what.clone()).collect();
        if traffic
            .answered(
                schedule.peek().is_some(),
                &db_url,
                TRAFFIC_DEADLINE,
                "cluster: ",
                &story,
            )
            .await
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let traffic_time = traffic_started.elapsed();
    traffic.publishers_done().await;
    drain_then_stop(&urls, &names, &mut [&mut workers, &mut listeners]).await;
    traffic.finish().await;
    let logs: Vec<PathBuf> = workers
        .all_logs
        .iter()
        .chain(&listeners.all_logs)
        .cloned()
        .collect();
    let alarms = alarms(&logs);
    assert!(alarms.is_empty(), "in the process logs: {alarms:#?}");
    let moved = logs
        .iter()
        .map(|log| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("moved to another broker node")
                .count()
        })
        .sum::<usize>();

    assert!(
        moved >= 1,
        "no process logged a move to another broker node"
    );
    let state = std::mem::take(&mut *board.state());
    let ratio = settings.wallet.ratio;
    let books = check_the_books(&scenario, &state, &db_url, &urls, &names, ratio).await;
    assert!(
        state.webhooks_accepted >= MIN_WEBHOOKS,
        "only {} signed webhooks were delivered",
        state.webhooks_accepted
    );
    let (rejoined, rejoin_time) = rejoin
        .expect("the primary was killed")
        .await
        .expect("the rejoin task");
    assert!(rejoined, "the old primary did not rejoin as a standby");
    assert_eq!(
        happened.len(),
        faults.len(),
        "every fault happened before the end"
    );

    say(format!("cluster: seed {seed}"));
    books.summarize(&scenario, &state);
    let mut times = state.result_times.clone();
    times.sort();
    let first_fault = happened[0].at;
    let traffic_end = *times.last().expect("results arrived");
    say(format!(
        "cluster: before the first fault, the longest stretch without a result was {:.2}s",
        unavailability(&times, traffic_started, first_fault).as_secs_f64()
    ));
    for (n, h) in happened.iter().enumerate() {
        let next = happened
            .get(n + 1)
            .map_or(h.at + AFTER_FAULT, |next| next.at);
        let gap = unavailability(&times, h.at, next.min(h.at + AFTER_FAULT).min(traffic_end));
        say(format!(
            "cluster: {:?}: {}; then no result for {:.2}s at most",
            h.fault,
            h.what,
            gap.as_secs_f64()
        ));
        assert!(
            gap < MAX_UNAVAILABLE,
            "{:?}: no result for {gap:?} after it",
            h.fault
        );
    }
    say(format!(
        "cluster: the old primary rejoined as the standby in {:.1}s; processes moved to another \
         broker node {moved} times; {} webhooks accepted, {} deliveries failed and were made \
         again",
        rejoin_time.as_secs_f64(),
        state.webhooks_accepted,
        state.webhook_failures
    ));
    say(format!(
        "cluster: traffic {:.1}s ({:.0} results/s), whole test {:.1}s",
        traffic_time.as_secs_f64(),
        state.result_times.len() as f64 / traffic_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}
