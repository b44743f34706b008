//! The end-to-end benchmark: the release `pluspay worker` as a child process, fed N
//! commands by P publishers over RabbitMQ with confirms, every result awaited; then pgbench
//! doing the same SQL work one command per transaction on the same server, for the ratio.
//!
//! ```text
//! cargo bench --bench e2e -- [--scenario uniform|hot|mixed|all] [--commands N] [--publishers P]
//!     [--rate R] [--smoke] [--pgbench-secs S] [--pgbench-clients C]
//!     [--pgbench-mode prepared|extended|simple] [--window W] [--seed S]
//!     [--scale [--scale-wallets N] [--scale-transfers N] [--big-wallet-orders N]
//!      [--size-transfers N] [--steady-rate R] [--steady-secs S] [--order-calls N] [--scale-copy]]
//! ```
//!
//! (`-- --help` lists them.) `--scale` runs the scenarios on the usual small ledger and then on
//! a big one built once (benches/e2e/scale.rs), and reports what grows with the ledger.
//!
//! `scripts/bench.sh` starts throwaway PostgreSQL and RabbitMQ and runs this; by hand it needs
//! PP_TEST_DATABASE_URL (a superuser's URL; a fresh database is created per scenario) and
//! PP_TEST_AMQP_URL. Other PLUSPAY_* variables in the environment (say
//! PLUSPAY_WORKER_CONCURRENCY) are passed to the worker, to try settings.
//!
//! Under `cargo test` (which runs a `harness = false` bench without `--bench`) it runs the
//! smoke version when those variables are set, so CI checks that the harness works (every
//! command answered once, the audit clean) without timing anything.

// Not benches/scale.rs: cargo would take that for a bench of its own.
#[path = "e2e/scale.rs"]
mod scale;
mod support;
use support::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection};
use pluspay::amqp::publisher::json_properties;
use pluspay::amqp::{self, Names};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Funded wallets (users 1..=WALLETS) in every scenario.
const WALLETS: i64 = 10_000;
/// Fen per wallet: far more than any run moves, so transfers are never refused for money.
const FUNDING: i64 = 1_000_000;
/// Fen of the open hold every wallet starts with (hold id = user id), for the mixed scenario's
/// captures.
const BENCH_HOLD: i64 = 10_000;
/// Users 1..=BENCH_PACKETS each start with an open red packet of `BENCH_PACKET_SHARES` shares of
/// 100 fen (packet id = user id), for the mixed scenario's claims.
const BENCH_PACKETS: i64 = 100;
const BENCH_PACKET_SHARES: i64 = 1_000;
/// Transfers already in the database before a scenario starts, as in a wallet that has been
/// in use: on empty tables the planner's statistics (taken by the VACUUM ANALYZE below, before
/// autovacuum's first pass a minute later) say "empty", and the foreign-key checks of every
/// insert then scan whole tables, a cost no live system pays.
const HISTORY: i64 = 20_000;

/// In the set-up's statements: the hash of the last entry of account `a` (NULL for none), the
/// one a new entry of it chains onto (migrations/0021_hash_chains.sql).
const LAST_HASH: &str = "(SELECT p.hash FROM ledger_entries p
                          WHERE p.account_id = a.id AND p.version = a.entry_count)";
/// The default `amqp.delivery_limit`, for declaring the same topology as the worker.
const DELIVERY_LIMIT: u32 = 20;

fn amqp_settings() -> pluspay::config::AmqpSettings {
    pluspay::config::AmqpSettings {
        delivery_limit: DELIVERY_LIMIT,
        ..Default::default()
    }
}
/// No result for this long means the run is stuck.
const STALL: Duration = Duration::from_secs(60);
const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Transfers between random pairs of the funded wallets.
    Uniform,
    /// Every transfer pays wallet 1.
    Hot,
    /// Transfers, rewards, transforms, cash requests, wallet.get and orders.list.
    Mixed,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::Uniform, Scenario::Hot, Scenario::Mixed];

    fn name(self) -> &'static str {
        match self {
            Scenario::Uniform => "uniform",
            Scenario::Hot => "hot",
            Scenario::Mixed => "mixed",
        }
    }

    /// pgbench scripts (benches/pgbench) and weights doing the same SQL work.
    fn pgbench_scripts(self) -> &'static [(&'static str, u32)] {
        match self {
            Scenario::Uniform | Scenario::Hot => &[("transfer.sql", 1)],
            // The blend of `mixed_command`; a reward is a transfer with another order type.
            Scenario::Mixed => &[
                ("transfer.sql", 69),
                ("transform.sql", 10),
                ("cash.sql", 5),
                ("wallet_get.sql", 10),
                ("orders_list.sql", 8),
            ],
        }
    }
}

/// The end-to-end benchmark of the worker.
///
/// N commands per scenario published by P publishers over RabbitMQ with confirms, every result
/// awaited, then pgbench doing the same SQL work. Needs PP_TEST_DATABASE_URL and
/// PP_TEST_AMQP_URL (scripts/bench.sh starts both services); docs/BENCHMARKS.md explains the
/// options and the output.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "e2e", override_usage = "cargo bench --bench e2e -- [OPTIONS]")]
struct Options {
    /// The scenario to run, or all three in turn.
    #[arg(
        long = "scenario",
        value_name = "SCENARIO",
        default_value = "all",
        value_parser = scenarios()
    )]
    scenarios: Box<[Scenario]>,
    /// Commands per scenario (--smoke: 200).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        default_value_if("smoke", "true", "200"),
        value_parser = positive
    )]
    commands: usize,
    /// Concurrent publishers, each with its own connection and confirm channel (--smoke: 4).
    #[arg(
        long,
        value_name = "P",
        default_value_t = 8,
        default_value_if("smoke", "true", "4"),
        value_parser = positive
    )]
    publishers: usize,
    /// Offered commands per second over all publishers, on a fixed schedule; 0: as fast as the
    /// confirms allow.
    #[arg(
        long,
        value_name = "R",
        default_value_t = 0.0,
        value_parser = non_negative,
        allow_negative_numbers = true
    )]
    rate: f64,
    /// The short version for CI: checks that everything works, measures nothing worth reading.
    #[arg(long)]
    smoke: bool,
    /// Length of the pgbench baseline in seconds; 0: no pgbench baseline (--smoke: 2; --scale
    /// --smoke: 0).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 20,
        default_value_if("smoke", "true", "2")
    )]
    pgbench_secs: u64,
    /// pgbench connections (16 = the worker's default database.pool_size).
    #[arg(long, value_name = "C", default_value_t = 16, value_parser = positive)]
    pgbench_clients: usize,
    /// pgbench's query mode (-M).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = PgbenchMode::Prepared)]
    pgbench_mode: PgbenchMode,
    /// Unconfirmed publishes each publisher may have outstanding.
    #[arg(long, value_name = "W", default_value_t = 256, value_parser = positive)]
    window: usize,
    /// The seed of the commands' random generator (printed) [default: random].
    #[arg(long, value_name = "S", default_value_t = rand::random(), hide_default_value = true)]
    seed: u64,
    /// Runs the scenarios on the small ledger and then on a big one (built once, reused by
    /// every scenario), side by side, with what grows with the ledger: the periodic check,
    /// orders.list and orders.get of a wallet with many orders, the full audit, the command
    /// log's retention, bytes per transfer.
    #[arg(long)]
    scale: bool,
    /// --scale: funded wallets of the big ledger (--smoke: 2,000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000_000,
        default_value_if("smoke", "true", "2000"),
        value_parser = positive,
        requires = "scale"
    )]
    scale_wallets: usize,
    /// --scale: transfers of history in the big ledger, each a command with its result, a
    /// journal, two entries and two orders (--smoke: 10,000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5_000_000,
        default_value_if("smoke", "true", "10000"),
        value_parser = positive,
        requires = "scale"
    )]
    scale_transfers: usize,
    /// --scale: how many of those transfers are wallet 1's, so that it has this many orders
    /// (--smoke: 1,000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100_000,
        default_value_if("smoke", "true", "1000"),
        value_parser = positive,
        requires = "scale"
    )]
    big_wallet_orders: usize,
    /// --scale: transfers through the daemon whose bytes are measured, on each ledger
    /// (--smoke: 500).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20_000,
        default_value_if("smoke", "true", "500"),
        value_parser = positive,
        requires = "scale"
    )]
    size_transfers: usize,
    /// --scale: the offered rate of the steady mixed traffic before the periodic check's
    /// second measurement (--smoke: 200).
    #[arg(
        long,
        value_name = "R",
        default_value_t = 1000.0,
        default_value_if("smoke", "true", "200"),
        value_parser = positive_rate,
        requires = "scale"
    )]
    steady_rate: f64,
    /// --scale: how long the steady mixed traffic lasts, in seconds (--smoke: 2).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 60,
        default_value_if("smoke", "true", "2"),
        value_parser = positive,
        requires = "scale"
    )]
    steady_secs: usize,
    /// --scale: timed calls of each orders.list page and of orders.get (--smoke: 50).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        default_value_if("smoke", "true", "50"),
        value_parser = positive,
        requires = "scale"
    )]
    order_calls: usize,
    /// --scale: also time one copy of the big ledger (CREATE DATABASE ... TEMPLATE, STRATEGY
    /// FILE_COPY), then drop it: what a fresh copy per scenario would cost. Needs the big
    /// ledger's size again on disk for a moment.
    #[arg(long, requires = "scale")]
    scale_copy: bool,
    /// Added by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

impl Options {
    /// `args` without the program's name.
    fn parse_args(args: &[String]) -> anyhow::Result<Options> {
        let matches = Options::command()
            .try_get_matches_from(std::iter::once("e2e").chain(args.iter().map(String::as_str)))?;
        let mut options = Options::from_arg_matches(&matches)?;
        // --scale --smoke runs every scenario twice; the plain smoke already runs pgbench, and
        // without it this one stays under a minute.
        if options.scale
            && options.smoke
            && matches.value_source("pgbench_secs") != Some(ValueSource::CommandLine)
        {
            options.pgbench_secs = 0;
        }
        if options.scale {
            scale::check(&options)?;
        }
        Ok(options)
    }
}

/// `--scenario`: one scenario by name, or `all`.
fn scenarios() -> impl TypedValueParser<Value = Box<[Scenario]>> {
    let names = Scenario::ALL.map(Scenario::name);
    PossibleValuesParser::new(names.into_iter().chain(["all"])).map(|name| {
        match Scenario::ALL.into_iter().find(|s| s.name() == name) {
            Some(scenario) => Box::new([scenario]) as Box<[Scenario]>,
            None => Box::new(Scenario::ALL),
        }
    })
}

fn non_negative(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate < 0.0 => Err("must be at least 0".to_owned()),
        Ok(rate) => Ok(rate),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        Ok(_) => Err("must be positive".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PgbenchMode {
    /// Each statement parsed and planned once per connection.
    Prepared,
    /// Parsed and planned every time, as the daemon's statements are.
    Extended,
    /// The simple query protocol.
    Simple,
}

impl PgbenchMode {
    fn name(self) -> &'static str {
        match self {
            PgbenchMode::Prepared => "prepared",
            PgbenchMode::Extended => "extended",
            PgbenchMode::Simple => "simple",
        }
    }
}

fn main() -> ExitCode {
    bench_main("e2e", "scripts/bench.sh", Options::parse_args, run)
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run scripts/bench.sh, which starts PostgreSQL and RabbitMQ")
    })
}

/// One scenario's measurements.
struct Row {
    scenario: Scenario,
    daemon: DaemonRun,
    pgbench: Option<PgbenchRun>,
}

async fn run(options: Options) -> anyhow::Result<()> {
    let admin_url = env("PP_TEST_DATABASE_URL")?;
    let amqp_url = env("PP_TEST_AMQP_URL")?;
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let log_dir = std::env::temp_dir().join(format!("pluspay-bench-{run_tag}"));
    std::fs::create_dir_all(&log_dir)?;
    println!(
        "e2e: run {run_tag}, seed {}, {} commands per scenario, {} publishers, rate {}, \
         pgbench {} s x {} clients -M {}; worker logs in {}",
        options.seed,
        options.commands,
        options.publishers,
        rate_label(options.rate),
        options.pgbench_secs,
        options.pgbench_clients,
        options.pgbench_mode.name(),
        log_dir.display()
    );
    if options.scale {
        println!(
            "e2e --scale: the small ledger ({WALLETS} wallets, {HISTORY} transfers of history), \
             then a big one: {} wallets, {} transfers of history, wallet 1 in {} of them; \
             {} transfers measured for size; steady mixed traffic {}/s for {} s; {} calls per \
             orders query",
            options.scale_wallets,
            options.scale_transfers,
            options.big_wallet_orders,
            options.size_transfers,
            options.steady_rate,
            options.steady_secs,
            options.order_calls
        );
    }
    print_server_settings(&admin_url).await?;
    let passed: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PLUSPAY_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !passed.is_empty() {
        println!("e2e: passed to the worker: {}", passed.join(" "));
    }
    if options.scale {
        scale::run(&options, &admin_url, &amqp_url, &run_tag, &log_dir).await?;
    } else {
        let mut rows = Vec::new();
        for (n, &scenario) in options.scenarios.iter().enumerate() {
            let database = format!("bench_{}_{run_tag}", scenario.name());
            println!("\n== {} (load average {})", scenario.name(), load_average());
            let db_url = fresh_database(&admin_url, &database).await?;
            let log = log_dir.join(format!("worker-{}.log", scenario.name()));
            let seed = options.seed ^ n as u64;
            let row =
                run_scenario(&options, scenario, seed, WALLETS, &db_url, &amqp_url, &log).await?;
            drop_database(&admin_url, &database).await?;
            rows.push(row);
        }
        println!("\nload average at the end: {}\n", load_average());
        print_table(&options, &rows);
    }
    if options.smoke {
        // Nothing to read after a smoke run that passed (CI runs it on every test run).
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    Ok(())
}

/// One scenario on a ledger whose wallets 1..=`wallets` are funded: its commands through the
/// daemon, then pgbench on the same database.
async fn run_scenario(
    options: &Options,
    scenario: Scenario,
    seed: u64,
    wallets: i64,
    db_url: &str,
    amqp_url: &str,
    log: &Path,
) -> anyhow::Result<Row> {
    let commands = generate(scenario, options.commands, seed, wallets, scenario.name());
    let daemon = run_daemon(options, scenario.name(), db_url, amqp_url, commands, log).await?;
    daemon.print();
    let pgbench = if options.pgbench_secs > 0 {
        let run = run_pgbench(options, scenario, db_url, wallets).await?;
        println!(
            "  pgbench: {:.1} tps, {} transactions, {} failed, latency average {:.2} ms \
             ({} clients, {} s); audit after it ok",
            run.tps,
            run.transactions,
            run.failed,
            run.latency_avg_ms,
            options.pgbench_clients,
            options.pgbench_secs
        );
        println!("  pgbench database {}", run.stats.per(run.transactions));
        println!("  pgbench {}", run.cpu.per(run.transactions));
        Some(run)
    } else {
        None
    };
    if let Some(pgbench) = &pgbench {
        println!(
            "  ratio daemon / pgbench: {:.2}",
            daemon.throughput / pgbench.tps
        );
    }
    Ok(Row {
        scenario,
        daemon,
        pgbench,
    })
}

fn rate_label(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate}/s")
    } else {
        "max".to_owned()
    }
}

fn print_table(options: &Options, rows: &[Row]) {
    println!(
        "| scenario | commands | publishers | offered rate | cmds/s | p50 ms | p99 ms | max ms \
         | peak RSS MiB | pgbench tps | daemon / pgbench |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let d = &row.daemon;
        let (tps, ratio) = match &row.pgbench {
            Some(p) => (
                format!("{:.1}", p.tps),
                format!("{:.2}", d.throughput / p.tps),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            row.scenario.name(),
            d.commands,
            options.publishers,
            rate_label(options.rate),
            d.throughput,
            ms(d.p50),
            ms(d.p99),
            ms(d.max),
            d.peak_rss_kib as f64 / 1024.0,
            tps,
            ratio
        );
    }
}

// ---------------------------------------------------------------- the database

async fn print_server_settings(admin_url: &str) -> anyhow::Result<()> {
    let db = pluspay::db::connect(admin_url).await?;
    let version: String = db.query_one("SHOW server_version", &[]).await?.get(0);
    let mut settings = Vec::new();
    for name in [
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "wal_sync_method",
        "shared_buffers",
        "max_wal_size",
        "checkpoint_timeout",
        "max_connections",
    ] {
        let value: String = db.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
        settings.push(format!("{name}={value}"));
    }
    println!("PostgreSQL {version}: {}", settings.join(" "));
    Ok(())
}

/// The admin URL with another database, its parameters (`?target_session_attrs=...`) kept.
fn database_url(admin_url: &str, database: &str) -> anyhow::Result<String> {
    let (address, query) = match admin_url.split_once('?') {
        Some((address, query)) => (address, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let (base, _) = address
        .rsplit_once('/')
        .context("PP_TEST_DATABASE_URL must end with /database")?;
    Ok(format!("{base}/{database}{query}"))
}

/// A new database, migrated, with wallets 1..=WALLETS funded from the test-only `test_funding`
/// system account in one balanced journal (TestEnv::fund, for every wallet at once).
async fn fresh_database(admin_url: &str, database: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    let admin = pluspay::db::connect(admin_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let url = database_url(admin_url, database)?;
    let mut db = pluspay::db::connect(&url).await?;
    pluspay::db::migrate::migrate(&mut db).await?;
    db.batch_execute(&format!(
        "INSERT INTO accounts (kind, name, unit, may_go_negative)
             VALUES ('system', 'test_funding', 'fen', true);
         INSERT INTO accounts (kind, user_id, unit)
             SELECT 'wallet', u, 'fen' FROM generate_series(1, {WALLETS}) AS u;
         WITH j AS (INSERT INTO journal (kind) VALUES ('test_funding') RETURNING id),
              moves AS (SELECT id AS account_id, {FUNDING}::bigint AS amount, 1 AS version,
                                   {FUNDING}::bigint AS balance_after
                            FROM accounts WHERE kind = 'wallet'
                        UNION ALL
                        SELECT id, -{FUNDING}::bigint * {WALLETS}, NULL, NULL FROM accounts
                            WHERE name = 'test_funding'),
              entries AS (INSERT INTO ledger_entries
                              (journal_id, account_id, amount, version, balance_after, hash)
                          SELECT j.id, m.account_id, m.amount, m.version, m.balance_after,
                                 ledger_entry_hash(NULL, m.account_id, m.version, m.amount,
                                                   m.balance_after, j.id)
                          FROM j, moves m)
         UPDATE accounts a SET balance = balance + m.amount,
                total_income = total_income + greatest(m.amount, 0),
                total_expenses = total_expenses + greatest(-m.amount, 0),
                entry_count = entry_count + 1
           FROM moves m WHERE a.id = m.account_id;"
    ))
    .await
    .context("fund the wallets")?;
    db.batch_execute(&format!(
        "INSERT INTO commands (id, type, fingerprint, status, result)
             SELECT 'history-' || g, 'transfer', '\\x00', 'succeeded', '{{}}'
             FROM generate_series(1, {HISTORY}) AS g;
         INSERT INTO journal (kind, command_id)
             SELECT 'transfer', 'history-' || g FROM generate_series(1, {HISTORY}) AS g;
         CREATE TEMP TABLE history_moves AS
             WITH h AS (SELECT id AS journal_id, command_id, substr(command_id, 9)::bigint AS g
                        FROM journal WHERE command_id LIKE 'history-%')
             SELECT journal_id, command_id, g % {WALLETS} + 1 AS owner,
                    (g + 1) % {WALLETS} + 1 AS other, -1 AS direction FROM h
             UNION ALL
             SELECT journal_id, command_id, (g + 1) % {WALLETS} + 1, g % {WALLETS} + 1, 1 FROM h;
         INSERT INTO ledger_entries (journal_id, account_id, amount, version, balance_after, hash)
             SELECT journal_id, account_id, amount, version, balance_after,
                    ledger_chain(start, account_id, version, amount, balance_after, journal_id)
                        OVER (PARTITION BY account_id ORDER BY version
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
             FROM (SELECT m.journal_id, a.id AS account_id, m.direction AS amount,
                          a.entry_count + row_number() OVER w AS version,
                          a.balance + sum(m.direction) OVER w AS balance_after,
                          {LAST_HASH} AS start
                   FROM history_moves m
                   JOIN accounts a ON a.kind = 'wallet' AND a.user_id = m.owner
                   WINDOW w AS (PARTITION BY a.id ORDER BY m.journal_id
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) x;
         INSERT INTO wallet_orders
                (owner_id, target_type, target_id, title, type, amount, state, command_id, journal_id)
             SELECT owner, 'user', other::text, '转账', direction, 1, 1, command_id, journal_id
             FROM history_moves ORDER BY journal_id, direction;
         UPDATE accounts a SET balance = balance + m.sum, total_income = total_income + m.income,
                total_expenses = total_expenses + m.expenses, entry_count = entry_count + m.n
           FROM (SELECT owner, sum(direction) AS sum, count(*) AS n,
                        count(*) FILTER (WHERE direction > 0) AS income,
                        count(*) FILTER (WHERE direction < 0) AS expenses
                 FROM history_moves GROUP BY owner) m
          WHERE a.kind = 'wallet' AND a.user_id = m.owner;"
    ))
    .await
    .context("write the history")?;
    db.batch_execute(&format!(
        "INSERT INTO accounts (kind, user_id, unit)
             SELECT 'held', u, 'fen' FROM generate_series(1, {WALLETS}) AS u;
         CREATE TEMP TABLE bench_hold_journal AS
             WITH j AS (INSERT INTO journal (kind) VALUES ('bench_holds') RETURNING id)
             SELECT id FROM j;
         INSERT INTO ledger_entries (journal_id, account_id, amount, version, balance_after, hash)
             SELECT j.id, a.id, m.amount, a.entry_count + 1, a.balance + m.amount,
                    ledger_entry_hash({LAST_HASH}, a.id, a.entry_count + 1, m.amount,
                                      a.balance + m.amount, j.id)
             FROM bench_hold_journal j, accounts a,
                  LATERAL (SELECT CASE a.kind WHEN 'wallet' THEN -{BENCH_HOLD}
                                  ELSE {BENCH_HOLD} END AS amount) m
             WHERE a.kind IN ('wallet', 'held');
         INSERT INTO holds (user_id, amount, reason, expires_at, command_id, journal_id)
             SELECT u, {BENCH_HOLD}, 'bench', now() + interval '1 day', 'bench-hold-' || u, j.id
             FROM generate_series(1, {WALLETS}) AS u, bench_hold_journal j ORDER BY u;
         UPDATE accounts SET
                balance = balance + CASE kind WHEN 'wallet' THEN -{BENCH_HOLD} ELSE {BENCH_HOLD} END,
                total_income = total_income + CASE kind WHEN 'held' THEN {BENCH_HOLD} ELSE 0 END,
                total_expenses = total_expenses + CASE kind WHEN 'wallet' THEN {BENCH_HOLD} ELSE 0 END,
                entry_count = entry_count + 1
          WHERE kind IN ('wallet', 'held');"
    ))
    .await
    .context("make a hold for every wallet")?;
    let packet = 100 * BENCH_PACKET_SHARES;
    db.batch_execute(&format!(
        "INSERT INTO accounts (kind, user_id, unit)
             SELECT 'packets', u, 'fen' FROM generate_series(1, {BENCH_PACKETS}) AS u;
         CREATE TEMP TABLE bench_packet_journal AS
             WITH j AS (INSERT INTO journal (kind) VALUES ('bench_redpackets') RETURNING id)
             SELECT id FROM j;
         INSERT INTO ledger_entries (journal_id, account_id, amount, version, balance_after, hash)
             SELECT j.id, a.id, m.amount, a.entry_count + 1, a.balance + m.amount,
                    ledger_entry_hash({LAST_HASH}, a.id, a.entry_count + 1, m.amount,
                                      a.balance + m.amount, j.id)
             FROM bench_packet_journal j, accounts a,
                  LATERAL (SELECT CASE a.kind WHEN 'wallet' THEN -{packet}
                                  ELSE {packet} END AS amount) m
             WHERE a.kind IN ('wallet', 'packets') AND a.user_id <= {BENCH_PACKETS};
         INSERT INTO redpackets (user_id, total, count, mode, expires_at, command_id, journal_id)
             SELECT u, {packet}, {BENCH_PACKET_SHARES}, 'equal', now() + interval '1 day',
                    'bench-redpacket-' || u, j.id
             FROM generate_series(1, {BENCH_PACKETS}) AS u, bench_packet_journal j ORDER BY u;
         INSERT INTO redpacket_shares (redpacket_id, number, amount)
             SELECT p.id, n, 100 FROM redpackets p,
                    generate_series(1, {BENCH_PACKET_SHARES}) AS n;
         UPDATE accounts SET
                balance = balance + CASE kind WHEN 'wallet' THEN -{packet} ELSE {packet} END,
                total_income = total_income + CASE kind WHEN 'packets' THEN {packet} ELSE 0 END,
                total_expenses = total_expenses + CASE kind WHEN 'wallet' THEN {packet} ELSE 0 END,
                entry_count = entry_count + 1
          WHERE kind IN ('wallet', 'packets') AND user_id <= {BENCH_PACKETS};"
    ))
    .await
    .context("make the red packets")?;
    // Each account's head, the hash of its last entry, as postings leave it.
    db.batch_execute(
        "UPDATE accounts a SET head_hash = e.hash FROM ledger_entries e
         WHERE e.account_id = a.id AND e.version = a.entry_count AND a.kind <> 'system'",
    )
    .await
    .context("the accounts' heads")?;
    db.batch_execute("VACUUM ANALYZE").await?;
    println!(
        "  database {database}: migrated, {WALLETS} wallets funded with {FUNDING} fen each, \
         {HISTORY} transfers of history, an open hold of {BENCH_HOLD} fen each, {BENCH_PACKETS} \
         red packets ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(url)
}

async fn drop_database(admin_url: &str, database: &str) -> anyhow::Result<()> {
    let admin = pluspay::db::connect(admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// The ledger's invariants must hold after a run, and every command must have its row.
async fn audit(url: &str, what: &str) -> anyhow::Result<()> {
    let mut db = pluspay::db::connect(url).await?;
    let report = pluspay::db::audit::run(&mut db).await?;
    if !report.ok {
        bail!(
            "the audit failed after {what}: {}",
            serde_json::to_string(&report)?
        );
    }
    Ok(())
}

async fn checkpoint(url: &str) -> anyhow::Result<()> {
    let db = pluspay::db::connect(url).await?;
    db.batch_execute("CHECKPOINT").await?;
    Ok(())
}

/// Counters of the server (WAL: cluster-wide) and of one database, to tell per command how
/// many transactions committed and how often the WAL was flushed to disk.
#[derive(Debug, Clone, Copy, Default)]
struct DbStats {
    wal_syncs: i64,
    wal_writes: i64,
    wal_bytes: i64,
    /// Full-page images: a page's first change after a checkpoint writes the whole page.
    wal_fpi: i64,
    commits: i64,
}

impl DbStats {
    async fn read(url: &str) -> anyhow::Result<DbStats> {
        let db = pluspay::db::connect(url).await?;
        let row = db
            .query_one(
                "SELECT w.wal_sync, w.wal_write, w.wal_bytes::bigint, w.wal_fpi, d.xact_commit
                 FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = current_database()",
                &[],
            )
            .await?;
        Ok(DbStats {
            wal_syncs: row.get(0),
            wal_writes: row.get(1),
            wal_bytes: row.get(2),
            wal_fpi: row.get(3),
            commits: row.get(4),
        })
    }

    fn since(self, before: DbStats) -> DbStats {
        DbStats {
            wal_syncs: self.wal_syncs - before.wal_syncs,
            wal_writes: self.wal_writes - before.wal_writes,
            wal_bytes: self.wal_bytes - before.wal_bytes,
            wal_fpi: self.wal_fpi - before.wal_fpi,
            commits: self.commits - before.commits,
        }
    }

    fn per(self, n: u64) -> String {
        let n = n.max(1) as f64;
        format!(
            "per command: {:.2} commits, {:.2} WAL flushes (fsync), {:.2} WAL writes, {:.0} WAL bytes",
            self.commits as f64 / n,
            self.wal_syncs as f64 / n,
            self.wal_writes as f64 / n,
            self.wal_bytes as f64 / n
        )
    }
}

// ---------------------------------------------------------------- the commands

struct Command {
    id: String,
    kind: &'static str,
    body: Vec<u8>,
}

/// The scenario's `n` commands between the funded wallets 1..=`wallets`, with ids
/// `<label>-<i>` (distinct labels for commands sent to the same database).
fn generate(scenario: Scenario, n: usize, seed: u64, wallets: i64, label: &str) -> Vec<Command> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let id = format!("{label}-{i}");
            let (kind, user, data) = match scenario {
                Scenario::Uniform => {
                    let from = rng.random_range(1..=wallets);
                    let to = (from + rng.random_range(1..wallets) - 1) % wallets + 1;
                    let amount = rng.random_range(1..=100);
                    ("transfer", from, json!({ "user": to, "amount": amount }))
                }
                Scenario::Hot => {
                    let from = rng.random_range(2..=wallets);
                    let amount = rng.random_range(1..=100);
                    ("transfer", from, json!({ "user": 1, "amount": amount }))
                }
                Scenario::Mixed => mixed_command(&mut rng, wallets),
            };
            let body = json!({ "id": id, "type": kind, "user_id": user, "data": data });
            Command {
                id,
                kind,
                body: body.to_string().into_bytes(),
            }
        })
        .collect()
}

/// 45% transfers, 15% rewards, 10% transforms, 5% cash requests, 10% wallet.get, 8%
/// orders.list, 3% holds made (expiring within the run, so the sweeper gives them back while
/// the traffic runs), 2% captures of the hold each wallet starts with (`BENCH_HOLD`; a second
/// capture of one is refused as closed) and 2% claims of the red packets the first
/// `BENCH_PACKETS` users start with. Scenario::pgbench_scripts has the same blend, a hold, a
/// capture or a claim doing a transfer's work there.
fn mixed_command(rng: &mut impl Rng, wallets: i64) -> (&'static str, i64, serde_json::Value) {
    let user = rng.random_range(1..=wallets);
    let other = (user + rng.random_range(1..wallets) - 1) % wallets + 1;
    match rng.random_range(0..100) {
        0..45 => (
            "transfer",
            user,
            json!({ "user": other, "amount": rng.random_range(1..=100) }),
        ),
        45..60 => (
            "reward",
            user,
            json!({ "user": other, "amount": rng.random_range(1..=100), "body": "bench" }),
        ),
        60..70 => (
            "transform",
            user,
            json!({ "amount": rng.random_range(100..=1000) }),
        ),
        70..75 => (
            "cash",
            user,
            json!({ "value": rng.random_range(100..=1000), "type": "alipay",
                    "account": "bench@example.com" }),
        ),
        75..85 => ("wallet.get", user, json!({})),
        85..93 => ("orders.list", user, json!({ "limit": 15 })),
        // The red packet made for user `p` by `fresh_database` has the id `p`.
        93..95 => (
            "redpacket.claim",
            user,
            json!({ "redpacket": rng.random_range(1..=BENCH_PACKETS) }),
        ),
        95..98 => (
            "hold.create",
            user,
            json!({ "amount": rng.random_range(1..=100), "reason": "bench",
                    "expires_in": rng.random_range(1..=3) }),
        ),
        // The hold made for `user` by `fresh_database` has the id `user`.
        _ => (
            "hold.capture",
            user,
            json!({ "hold": user, "user": other, "amount": rng.random_range(1..=BENCH_HOLD) }),
        ),
    }
}

// ---------------------------------------------------------------- the daemon

struct DaemonRun {
    commands: usize,
    /// Commands / (last result - first publish).
    throughput: f64,
    elapsed: Duration,
    /// What the publishers achieved: commands / (last publish - first publish).
    publish_rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// The highest VmRSS sampled every 100 ms, or VmHWM if higher.
    peak_rss_kib: u64,
    sampled_rss_kib: u64,
    hwm_kib: u64,
    idle_rss_kib: u64,
    /// The worker's CPU time while the commands were applied.
    cpu: Duration,
    /// The other parts' CPU time over the same span.
    others: CpuSnapshot,
    /// Results by status and code.
    outcomes: BTreeMap<String, usize>,
    stats: DbStats,
    /// The full audit after the run.
    audit_time: Duration,
}

impl DaemonRun {
    fn print(&self) {
        println!(
            "  daemon: {} commands in {:.2} s = {:.1} cmds/s (published at {:.0}/s); latency \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.commands,
            self.elapsed.as_secs_f64(),
            self.throughput,
            self.publish_rate,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        );
        println!(
            "  worker: RSS idle {:.1} MiB, sampled peak {:.1} MiB, VmHWM {:.1} MiB; CPU {:.2} s \
             = {:.2} ms per command ({:.0}% of one core over the run)",
            self.idle_rss_kib as f64 / 1024.0,
            self.sampled_rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0,
            self.cpu.as_secs_f64(),
            ms(self.cpu) / self.commands as f64,
            100.0 * self.cpu.as_secs_f64() / self.elapsed.as_secs_f64()
        );
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "  results: {}; each command answered once; audit ok",
            outcomes.join(", ")
        );
        println!("  database {}", self.stats.per(self.commands as u64));
        println!(
            "  {}, worker {:.2}",
            self.others.per(self.commands as u64),
            ms(self.cpu) / self.commands as f64
        );
    }
}

/// CPU time used so far by each part of a run, where it can be read.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSnapshot {
    postgres: Option<Duration>,
    rabbitmq: Option<Duration>,
    /// This process: the publishers and the results consumer, or nothing during pgbench.
    bench: Option<Duration>,
}

impl CpuSnapshot {
    fn now() -> CpuSnapshot {
        let (postgres, rabbitmq) = service_pids();
        CpuSnapshot {
            postgres: postgres.and_then(server_cpu_time),
            rabbitmq: rabbitmq.and_then(server_cpu_time),
            bench: cpu_time(std::process::id()),
        }
    }

    fn since(self, before: CpuSnapshot) -> CpuSnapshot {
        let delta = |a: Option<Duration>, b: Option<Duration>| Some(a?.saturating_sub(b?));
        CpuSnapshot {
            postgres: delta(self.postgres, before.postgres),
            rabbitmq: delta(self.rabbitmq, before.rabbitmq),
            bench: delta(self.bench, before.bench),
        }
    }

    /// Milliseconds of CPU per command, by part.
    fn per(self, n: u64) -> String {
        let part = |name: &str, d: Option<Duration>| {
            d.map(|d| format!("{name} {:.2}", ms(d) / n.max(1) as f64))
        };
        let parts: Vec<String> = [
            part("PostgreSQL", self.postgres),
            part("RabbitMQ", self.rabbitmq),
            part("bench client", self.bench),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("CPU ms per command: {}", parts.join(", "))
    }
}

struct Worker {
    child: tokio::process::Child,
    pid: u32,
}

impl Worker {
    fn start(db_url: &str, amqp_url: &str, namespace: &str, log: &Path) -> anyhow::Result<Worker> {
        let log = std::fs::File::create(log).context("create the worker log")?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"))
            .arg("worker")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PLUSPAY_DATABASE_URL", db_url)
            .env("PLUSPAY_AMQP_URL", amqp_url)
            .env("PLUSPAY_AMQP_NAMESPACE", namespace)
            .env("PLUSPAY_METRICS_LISTEN", "127.0.0.1:0")
            .env("PLUSPAY_METRICS_LEDGER_CHECK_SECS", "0")
            // The fresh database has no root for yesterday: recording it is a daily job, not
            // part of the traffic measured.
            .env("PLUSPAY_WORKER_LEDGER_ROOT_SECS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start `pluspay worker`")?;
        let pid = child.id().context("the worker's pid")?;
        Ok(Worker { child, pid })
    }

    /// Waits until the worker consumes the commands queue.
    async fn ready(&mut self, channel: &Channel, names: &Names) -> anyhow::Result<()> {
        let deadline = Instant::now() + STALL;
        loop {
            let queue = channel
                .queue_declare(
                    names.commands_queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if queue.consumer_count() >= 1 {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the worker exited at start-up ({status}); see its log");
            }
            if Instant::now() > deadline {
                bail!("the worker did not start consuming within {STALL:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for a graceful exit (a kill after 30 s).
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the worker exited with {status}");
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the worker did not stop within 30 s of SIGTERM");
            }
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct ResultMessage {
    id: Option<String>,
    status: String,
    code: Option<String>,
}

/// What the results queue saw.
struct Collected {
    arrivals: Vec<Option<Instant>>,
    counts: Vec<u32>,
    unknown: usize,
    outcomes: BTreeMap<String, usize>,
}

/// Consumes results until one arrived for every command, then a little longer to catch
/// duplicates.
async fn collect_results(
    mut consumer: lapin::Consumer,
    ids: Arc<std::collections::HashMap<String, usize>>,
) -> anyhow::Result<Collected> {
    let n = ids.len();
    let mut collected = Collected {
        arrivals: vec![None; n],
        counts: vec![0; n],
        unknown: 0,
        outcomes: BTreeMap::new(),
    };
    let mut answered = 0;
    let mut linger = false;
    loop {
        let wait = if linger {
            Duration::from_millis(500)
        } else {
            STALL
        };
        let delivery = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) if linger => return Ok(collected),
            Err(_) => bail!("no result for {STALL:?}: {answered} of {n} commands answered"),
            Ok(None) => bail!("the results consumer closed"),
            Ok(Some(delivery)) => delivery?,
        };
        let now = Instant::now();
        let result: ResultMessage =
            serde_json::from_slice(&delivery.data).context("a result that is not JSON")?;
        let outcome = match &result.code {
            Some(code) => format!("{} ({code})", result.status),
            None => result.status.clone(),
        };
        *collected.outcomes.entry(outcome).or_default() += 1;
        match result.id.as_deref().and_then(|id| ids.get(id)) {
            Some(&i) => {
                collected.counts[i] += 1;
                if collected.arrivals[i].is_none() {
                    collected.arrivals[i] = Some(now);
                    answered += 1;
                }
            }
            None => collected.unknown += 1,
        }
        if answered == n {
            linger = true;
        }
    }
}

/// Publishes its share of the commands (every `publishers`-th, from `offset`) on its own
/// confirm channel, at most `window` unconfirmed; returns (command index, publish time).
async fn publish(
    channel: Channel,
    names: Arc<Names>,
    commands: Arc<Vec<Command>>,
    offset: usize,
    options: Options,
    start: Instant,
) -> anyhow::Result<Vec<(usize, Instant)>> {
    let mut sent = Vec::new();
    let mut pending = FuturesUnordered::new();
    let check = |confirmation: lapin::Result<Confirmation>| -> anyhow::Result<()> {
        match confirmation? {
            Confirmation::Ack(None) => Ok(()),
            other => bail!("a command was not confirmed: {other:?}"),
        }
    };
    for i in (offset..commands.len()).step_by(options.publishers) {
        if options.rate > 0.0 {
            // An open loop: command i is due at i / rate, whatever happened before.
            let due = start + Duration::from_secs_f64(i as f64 / options.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        while pending.len() >= options.window {
            check(pending.next().await.expect("pending confirms"))?;
        }
        let command = &commands[i];
        let published = Instant::now();
        let confirm = channel
            .basic_publish(
                names.commands_exchange.as_str().into(),
                command.kind.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &command.body,
                json_properties().with_message_id(command.id.as_str().into()),
            )
            .await?;
        sent.push((i, published));
        pending.push(confirm);
    }
    while let Some(confirmation) = pending.next().await {
        check(confirmation)?;
    }
    Ok(sent)
}

/// The commands (ids `<label>-<i>`, see `generate`) through a worker started for them.
async fn run_daemon(
    options: &Options,
    label: &str,
    db_url: &str,
    amqp_url: &str,
    commands: Vec<Command>,
    log: &Path,
) -> anyhow::Result<DaemonRun> {
    let n = commands.len();
    let namespace = format!("bench_{label}_{}", uuid::Uuid::new_v4().simple());
    let names = Arc::new(Names::new(&namespace));
    let connection = amqp::connect(amqp_url, "pluspay-bench").await?;
    amqp::topology::declare(&connection, &names, &amqp_settings()).await?;
    let channel = connection.create_channel().await?;
    // Every result, whatever its routing key.
    let results = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            results.name().clone(),
            names.results_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            results.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let ids: Arc<std::collections::HashMap<String, usize>> = Arc::new(
        commands
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect(),
    );
    if ids.len() != n {
        bail!("command ids are not unique");
    }

    checkpoint(db_url).await?;
    let stats_before = DbStats::read(db_url).await?;
    let mut worker = Worker::start(db_url, amqp_url, &namespace, log)?;
    let poll = connection.create_channel().await?;
    if let Err(e) = worker.ready(&poll, &names).await {
        let _ = worker.child.kill().await;
        return Err(e.context(format!("worker log: {}", log.display())));
    }
    let idle_rss_kib = proc_status_kib(worker.pid, "VmRSS:").unwrap_or(0);
    let cpu_before = cpu_time(worker.pid).unwrap_or_default();
    let others_before = CpuSnapshot::now();
    let stop_sampling = CancellationToken::new();
    let sampler = sample_rss(worker.pid, stop_sampling.clone());
    let collector = tokio::spawn(collect_results(consumer, ids));

    let mut publishers: Vec<(Connection, Channel)> = Vec::new();
    for p in 0..options.publishers {
        let connection = amqp::connect(amqp_url, &format!("pluspay-bench-publisher-{p}")).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        publishers.push((connection, channel));
    }
    let commands = Arc::new(commands);
    let start = Instant::now();
    let tasks: Vec<_> = publishers
        .iter()
        .enumerate()
        .map(|(p, (_, channel))| {
            tokio::spawn(publish(
                channel.clone(),
                names.clone(),
                commands.clone(),
                p,
                options.clone(),
                start,
            ))
        })
        .collect();
    let mut published: Vec<Option<Instant>> = vec![None; n];
    for task in tasks {
        for (i, at) in task.await?? {
            published[i] = Some(at);
        }
    }
    let collected = collector.await??;
    let hwm_kib = proc_status_kib(worker.pid, "VmHWM:").unwrap_or(0);
    let cpu = cpu_time(worker.pid)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let others = CpuSnapshot::now().since(others_before);
    stop_sampling.cancel();
    let sampled_rss_kib = sampler.await?;
    worker
        .stop()
        .await
        .with_context(|| format!("worker log: {}", log.display()))?;
    let stats = DbStats::read(db_url).await?.since(stats_before);
    for (connection, _) in publishers {
        let _ = connection.close(200, "bye".into()).await;
    }
    let _ = connection.close(200, "bye".into()).await;

    let duplicated = collected.counts.iter().filter(|&&c| c > 1).count();
    if duplicated > 0 || collected.unknown > 0 {
        bail!(
            "{duplicated} commands got more than one result, {} results for unknown ids",
            collected.unknown
        );
    }
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let (Some(sent), Some(arrived)) = (published[i], collected.arrivals[i]) else {
            bail!(
                "command {} was not published or not answered",
                commands[i].id
            );
        };
        latencies.push(arrived.saturating_duration_since(sent));
    }
    latencies.sort_unstable();
    let first_publish = published.iter().flatten().min().copied().expect("n > 0");
    let last_publish = published.iter().flatten().max().copied().expect("n > 0");
    let last_result = collected
        .arrivals
        .iter()
        .flatten()
        .max()
        .copied()
        .expect("n > 0");
    let elapsed = last_result - first_publish;
    // By the run's id prefix: a big ledger takes several runs, and a scan of its whole command
    // log would take seconds.
    let stored: i64 = pluspay::db::connect(db_url)
        .await?
        .query_one(
            "SELECT count(*) FROM commands WHERE id LIKE $1 || '-%'",
            &[&label],
        )
        .await?
        .get(0);
    if stored != n as i64 {
        bail!("{stored} commands stored for {n} published");
    }
    let audit_started = Instant::now();
    audit(db_url, "the daemon's run").await?;
    let audit_time = audit_started.elapsed();
    Ok(DaemonRun {
        commands: n,
        throughput: n as f64 / elapsed.as_secs_f64(),
        elapsed,
        publish_rate: n as f64 / (last_publish - first_publish).as_secs_f64().max(1e-9),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().expect("n > 0"),
        peak_rss_kib: sampled_rss_kib.max(hwm_kib),
        sampled_rss_kib,
        hwm_kib,
        idle_rss_kib,
        cpu,
        others,
        outcomes: collected.outcomes,
        stats,
        audit_time,
    })
}

// ---------------------------------------------------------------- pgbench

struct PgbenchRun {
    tps: f64,
    transactions: u64,
    failed: u64,
    latency_avg_ms: f64,
    stats: DbStats,
    /// PostgreSQL's CPU (pgbench's own is not counted).
    cpu: CpuSnapshot,
}

fn pgbench_binary() -> PathBuf {
    match std::env::var_os("PGBENCH") {
        Some(path) => path.into(),
        None if Path::new(PGBENCH).exists() => PGBENCH.into(),
        None => "pgbench".into(),
    }
}

/// pgbench on the daemon's database (same server, same settings), the scenario's scripts.
async fn run_pgbench(
    options: &Options,
    scenario: Scenario,
    db_url: &str,
    wallets: i64,
) -> anyhow::Result<PgbenchRun> {
    checkpoint(db_url).await?;
    let stats_before = DbStats::read(db_url).await?;
    let cpu_before = CpuSnapshot::now();
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pgbench");
    let mut command = tokio::process::Command::new(pgbench_binary());
    command
        .args(["-n", "-M", options.pgbench_mode.name(), "-j", "2"])
        .args(["-c", &options.pgbench_clients.to_string()])
        .args(["-T", &options.pgbench_secs.to_string()])
        .args(["-D", &format!("wallets={wallets}")])
        .args([
            "-D",
            if scenario == Scenario::Hot {
                "hot=1"
            } else {
                "hot=0"
            },
        ]);
    for (script, weight) in scenario.pgbench_scripts() {
        command
            .arg("-f")
            .arg(format!("{}@{weight}", scripts.join(script).display()));
    }
    let output = command
        .arg(db_url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let field = |prefix: &str| -> anyhow::Result<f64> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {prefix:?} in pgbench's output:\n{stdout}"))
    };
    // Its backends exit as it disconnects: let the postmaster reap them (their CPU time then
    // counts in its cutime), or they would be missed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = CpuSnapshot::now().since(cpu_before);
    let stats = DbStats::read(db_url).await?.since(stats_before);
    let run = PgbenchRun {
        tps: field("tps = ")?,
        transactions: field("number of transactions actually processed: ")? as u64,
        failed: field("number of failed transactions: ")? as u64,
        latency_avg_ms: field("latency average = ")?,
        stats,
        cpu: CpuSnapshot {
            rabbitmq: None,
            bench: None,
            ..cpu
        },
    };
    if run.failed > 0 {
        bail!("pgbench had {} failed transactions:\n{stdout}", run.failed);
    }
    audit(db_url, "pgbench").await?;
    Ok(run)
}
