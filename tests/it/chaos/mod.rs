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
mod books;
mod broker;
mod cluster;
mod plan;
pub(crate) mod services;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::TestEnv;
use pluspay::amqp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use board::{Routes, Traffic};
use books::check_the_books;
use broker::declare_watch;
use plan::{scenario, Chaos};
use services::{
    alarms, await_consuming, consuming_marks, drain_then_stop, process_env, Services, Workers,
};

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

/// Waits until every hold and red packet has ended (their expiries are seconds away and post
/// journals of their own), then until the workers have published `wallet.changed` for every
/// journal and the collector has seen one event per version of every wallet and points
/// account.
async fn await_wallet_changed(db_url: &str, board: &board::Board) {
    let client = pluspay::db::connect(db_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT journal_id FROM wallet_changed_cursor)
                            >= (SELECT coalesce(max(id), 0) FROM journal)
                        AND NOT EXISTS (SELECT 1 FROM holds WHERE status = 'held')
                        AND NOT EXISTS (SELECT 1 FROM redpackets WHERE status = 'open'),
                        (SELECT coalesce(sum(entry_count), 0)::bigint FROM accounts
                         WHERE kind IN ('wallet', 'points'))",
                &[],
            )
            .await
            .unwrap();
        let (caught_up, versions): (bool, i64) = (row.get(0), row.get(1));
        let seen = board.state().wallet_changed.len() as i64;
        if caught_up && seen >= versions {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wallet.changed: holds and packets ended and cursor caught up: {caught_up}, {seen} of \
             {versions} versions seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // Refunds end in their command: the chaos hits the command's steps, not a webhook's wait.
    fake.decide_charge_refunds_at_once(Some("succeeded"));
    let settings = env.settings.clone();
    let names = env.names.clone();
    let amqp_url = settings.amqp.url.clone();
    let amqp_urls = vec![amqp_url.clone()];
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

    let mut workers = Workers::new("worker", process_env(&settings), services.logs(), 2);
    workers.spawn(0);

    let mut traffic = Traffic::start(
        &scenario,
        fake.clone(),
        Routes {
            brokers: amqp_urls.clone(),
            listeners: Arc::new(Vec::new()),
            names: names.clone(),
        },
        (results_queue.clone(), events_queue.clone()),
    );
    let board = traffic.board.clone();
    let traffic_started = traffic.started;

    // The chaos, then the wait for everything to be answered.
    let mut schedule = scenario.schedule.iter().peekable();
    let mut log: Vec<String> = Vec::new();
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
        if traffic
            .answered(
                schedule.peek().is_some(),
                &db_url,
                TRAFFIC_DEADLINE,
                "",
                &log,
            )
            .await
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let traffic_time = traffic_started.elapsed();
    await_wallet_changed(&db_url, &board).await;
    let (publisher_connects, mut publisher_retries) = traffic.publishers_done().await;
    drain_then_stop(&amqp_urls, &names, &mut [&mut workers]).await;
    let (follow_up_publishes, retries) = traffic.finish().await;
    publisher_retries += retries;
    // No worker panicked, and none met a failure it did not take for transient: under this
    // chaos that would be a lost connection mistaken for a bug, which ends in the dead letters.
    let alarms = alarms(&workers.all_logs);
    assert!(alarms.is_empty(), "in the worker logs: {alarms:#?}");

    let state = std::mem::take(&mut *board.state());
    let books = check_the_books(&scenario, &state, &db_url, &amqp_urls, &names, ratio).await;
    assert!(workers.killed >= 3, "{} kills", workers.killed);

    say(format!("seed {seed}"));
    for line in &log {
        say(format!("  {line}"));
    }
    books.summarize(&scenario, &state);
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
