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
//!
//! Here are the test's knobs and the test; `plan` makes the scenario from the seed, `services`
//! runs the servers and the workers, `broker` holds the test's own broker clients and `board`
//! what the test sees, with the publishers that feed the system.

mod board;
mod broker;
mod plan;
mod services;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::TestEnv;
use lapin::options::BasicGetOptions;
use pluspay::amqp;
use pluspay::amqp::publisher::header_str;
use pluspay::worker::ERROR_HEADER;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use board::{collect, follow_ups, publish_base, Board};
use broker::{declare_watch, ready_count};
use plan::{scenario, Chaos, Kind, Send};
use services::{await_consuming, consuming_marks, Services, Workers};

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
        amqp::topology::declare(&connection, &names, &settings.amqp)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
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
