//! `--scale`: the scenarios on the small ledger every run uses and on a big one, side by side,
//! and what grows with the ledger: the periodic check, a wallet's orders, the full audit, the
//! command log's retention and the bytes each transfer adds (docs/BENCHMARKS.md, "At scale").
//!
//! The big ledger is built once per run with set-based SQL and the scenarios run on it one
//! after another. A copy per scenario (CREATE DATABASE ... TEMPLATE) would give each the same
//! start, but costs a copy of the whole database each time and twice its size on disk, while
//! each scenario adds about 0.2% to a history of 5,000,000 transfers; `--scale-copy` times one
//! copy for comparison.

use super::*;

use pluspay::domain::query::{Action, Page};

/// The tables whose rows the history writes: their keys and indexes are dropped for the load
/// and built again afterwards, so that each index is built once from sorted rows and each
/// foreign key checked once for the whole table instead of once per row.
const LOADED: [&str; 4] = ["commands", "journal", "ledger_entries", "wallet_orders"];
/// The tables a transfer writes to, for its bytes.
const WRITTEN: [&str; 5] = [
    "commands",
    "journal",
    "ledger_entries",
    "wallet_orders",
    "accounts",
];
/// The read commands, whose stored results retention removes.
const READS: [&str; 6] = [
    "wallet.get",
    "orders.list",
    "orders.get",
    "cashes.list",
    "charges.list",
    "charges.get",
];
/// The wallet with many orders. The hot scenario pays it, as popular users are paid.
const BIG_WALLET: i64 = 1;
/// Seconds between two transfers of the history, so that it spans months (5,000,000 transfers:
/// about 290 days) and the orders' and results' timestamps look like a wallet's.
const HISTORY_STEP_SECS: i64 = 5;

/// Whether the --scale options make a ledger that can be built.
pub(super) fn check(options: &Options) -> anyhow::Result<()> {
    Scale::of(options).map(|_| ())
}

/// The big ledger's size.
#[derive(Debug, Clone, Copy)]
struct Scale {
    wallets: i64,
    transfers: i64,
    big_orders: i64,
}

impl Scale {
    fn of(options: &Options) -> anyhow::Result<Scale> {
        let scale = Scale {
            wallets: options.scale_wallets as i64,
            transfers: options.scale_transfers as i64,
            big_orders: options.big_wallet_orders as i64,
        };
        if scale.wallets < 3 {
            bail!("--scale-wallets must be at least 3");
        }
        if scale.big_orders > scale.transfers {
            bail!("--big-wallet-orders can't be more than --scale-transfers");
        }
        // Each wallet sends about (transfers + big_orders) / (wallets - 1) of the history's
        // transfers, at most 100 fen each (see `history`): its funding must cover them.
        if (scale.transfers + scale.big_orders) / (scale.wallets - 1) * 100 + 100 >= FUNDING {
            bail!("too many transfers per wallet: at most {FUNDING} fen each to spend");
        }
        Ok(scale)
    }
}

/// What a ledger's runs measured.
#[derive(Default)]
struct LedgerReport {
    rows: Vec<Row>,
    size: Option<SizeRun>,
    steady: Option<DaemonRun>,
}

/// What only the big ledger measures.
struct BigReport {
    ledger: LedgerReport,
    build: Vec<(String, Duration)>,
    build_audit: Duration,
    database_bytes: i64,
    copy: Option<Duration>,
    checks: Vec<(String, Duration, &'static str)>,
    full_audit: Duration,
    orders: OrdersReport,
    retention: Retention,
}

pub(super) async fn run(
    options: &Options,
    admin_url: &str,
    amqp_url: &str,
    run_tag: &str,
    log_dir: &Path,
) -> anyhow::Result<()> {
    let scale = Scale::of(options)?;
    let started = Instant::now();

    println!(
        "\n=== the small ledger: {WALLETS} wallets, {HISTORY} transfers of history, a fresh \
         database per scenario"
    );
    let mut small = LedgerReport::default();
    for (n, &scenario) in options.scenarios.iter().enumerate() {
        let database = format!("bench_small_{}_{run_tag}", scenario.name());
        println!(
            "\n== small: {} (load average {})",
            scenario.name(),
            load_average()
        );
        let db_url = fresh_database(admin_url, &database).await?;
        let log = log_dir.join(format!("worker-small-{}.log", scenario.name()));
        let seed = options.seed ^ n as u64;
        let row = run_scenario(options, scenario, seed, WALLETS, &db_url, amqp_url, &log).await?;
        drop_database(admin_url, &database).await?;
        small.rows.push(row);
    }
    let database = format!("bench_small_extra_{run_tag}");
    println!(
        "\n== small: bytes per transfer and steady traffic (load average {})",
        load_average()
    );
    let db_url = fresh_database(admin_url, &database).await?;
    small.size = Some(measure_size(options, &db_url, amqp_url, WALLETS, log_dir, "small").await?);
    small.steady = Some(steady(options, &db_url, amqp_url, WALLETS, log_dir, "small").await?);
    drop_database(admin_url, &database).await?;

    // Dropped whatever happened: it takes gigabytes.
    let database = format!("bench_big_{run_tag}");
    let big = big_ledger(options, scale, admin_url, amqp_url, &database, log_dir).await;
    let dropped = drop_database_if_exists(admin_url, &database).await;
    let big = big?;
    dropped?;

    println!(
        "\nload average at the end: {}; the whole run took {:.1} min",
        load_average(),
        started.elapsed().as_secs_f64() / 60.0
    );
    print_summary(options, scale, &small, &big);
    Ok(())
}

async fn drop_database_if_exists(admin_url: &str, database: &str) -> anyhow::Result<()> {
    let admin = pluspay::db::connect(admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    Ok(())
}

async fn big_ledger(
    options: &Options,
    scale: Scale,
    admin_url: &str,
    amqp_url: &str,
    database: &str,
    log_dir: &Path,
) -> anyhow::Result<BigReport> {
    println!(
        "\n=== the big ledger: {} wallets, {} transfers of history, wallet {BIG_WALLET} in {} of \
         them; built once, the scenarios one after another (load average {})",
        scale.wallets,
        scale.transfers,
        scale.big_orders,
        load_average()
    );
    let (url, build, database_bytes) = build(admin_url, database, scale).await?;
    let build_audit = {
        let started = Instant::now();
        audit(&url, "the build").await?;
        let took = started.elapsed();
        println!(
            "  full audit of the new ledger: {:.1} s, ok",
            took.as_secs_f64()
        );
        took
    };
    let mut checks = vec![periodic_check(&url, "first call, right after the build").await?];
    let size = measure_size(options, &url, amqp_url, scale.wallets, log_dir, "big").await?;
    let mut ledger = LedgerReport {
        size: Some(size),
        ..Default::default()
    };
    for (n, &scenario) in options.scenarios.iter().enumerate() {
        println!(
            "\n== big: {} (load average {})",
            scenario.name(),
            load_average()
        );
        let log = log_dir.join(format!("worker-big-{}.log", scenario.name()));
        let seed = options.seed ^ n as u64;
        let row =
            run_scenario(options, scenario, seed, scale.wallets, &url, amqp_url, &log).await?;
        ledger.rows.push(row);
    }
    println!("\n== big: the periodic check around steady traffic");
    checks.push(periodic_check(&url, "after the runs above").await?);
    ledger.steady = Some(steady(options, &url, amqp_url, scale.wallets, log_dir, "big").await?);
    checks.push(
        periodic_check(
            &url,
            &format!(
                "after {} s of mixed traffic at {}/s",
                options.steady_secs, options.steady_rate
            ),
        )
        .await?,
    );
    println!("\n== big: the full audit, the orders of wallet {BIG_WALLET}, retention");
    let full_audit = {
        let mut db = pluspay::db::connect(&url).await?;
        let started = Instant::now();
        let report = pluspay::db::audit::run(&mut db).await?;
        let took = started.elapsed();
        if !report.ok {
            bail!("the audit failed: {}", serde_json::to_string(&report)?);
        }
        println!(
            "  full audit (pluspay::db::audit::run): {:.2} s, ok",
            took.as_secs_f64()
        );
        took
    };
    let orders = orders_timings(options, &url).await?;
    let retention = retention(&url).await?;
    // Last: its gigabytes of writes would still be reaching the disk during what follows.
    let copy = if options.scale_copy {
        Some(time_copy(admin_url, database).await?)
    } else {
        None
    };
    Ok(BigReport {
        ledger,
        build,
        build_audit,
        database_bytes,
        copy,
        checks,
        full_audit,
        orders,
        retention,
    })
}

// ---------------------------------------------------------------- building the big ledger

/// A step of the build: runs `sql`, prints and records how long it took.
async fn step(
    db: &tokio_postgres::Client,
    steps: &mut Vec<(String, Duration)>,
    name: &str,
    sql: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    db.batch_execute(sql)
        .await
        .with_context(|| format!("build: {name}"))?;
    let took = started.elapsed();
    println!("  build: {name}: {:.1} s", took.as_secs_f64());
    steps.push((name.to_owned(), took));
    Ok(())
}

/// The keys and indexes of the loaded tables (and the foreign keys pointing at them), as
/// statements that make them again, in an order that works: keys, then indexes, then the
/// foreign keys, which need the keys they point at.
#[derive(Debug, PartialEq)]
struct Keys {
    /// (table, name, definition)
    keys: Vec<(String, String, String)>,
    /// (name, CREATE INDEX ...)
    indexes: Vec<(String, String)>,
    foreign_keys: Vec<(String, String, String)>,
}

impl Keys {
    async fn read(db: &tokio_postgres::Client) -> anyhow::Result<Keys> {
        let tables: Vec<&str> = LOADED.to_vec();
        let constraints = db
            .query(
                "SELECT c.conrelid::regclass::text, quote_ident(c.conname),
                        pg_get_constraintdef(c.oid), c.contype = 'f'
                 FROM pg_constraint c
                 WHERE (c.contype IN ('p', 'u') AND c.conrelid = ANY($1::text[]::regclass[]))
                    OR (c.contype = 'f' AND (c.conrelid = ANY($1::text[]::regclass[])
                                             OR c.confrelid = ANY($1::text[]::regclass[])))
                 ORDER BY 1, 2",
                &[&tables],
            )
            .await?;
        let mut keys = Keys {
            keys: Vec::new(),
            indexes: Vec::new(),
            foreign_keys: Vec::new(),
        };
        for row in constraints {
            let entry = (row.get(0), row.get(1), row.get(2));
            if row.get::<_, bool>(3) {
                keys.foreign_keys.push(entry);
            } else {
                keys.keys.push(entry);
            }
        }
        keys.indexes = db
            .query(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
                 FROM pg_index i
                 WHERE i.indrelid = ANY($1::text[]::regclass[])
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                   WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                                     AND c.contype IN ('p', 'u', 'x'))
                 ORDER BY 1",
                &[&tables],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(keys)
    }

    fn drop_sql(&self) -> String {
        let mut sql = String::new();
        for (table, name, _) in self.foreign_keys.iter().chain(&self.keys) {
            sql += &format!("ALTER TABLE {table} DROP CONSTRAINT {name};\n");
        }
        for (name, _) in &self.indexes {
            sql += &format!("DROP INDEX {name};\n");
        }
        sql
    }

    fn add_sql(keys: &[(String, String, String)]) -> String {
        keys.iter()
            .map(|(table, name, definition)| {
                format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition};\n")
            })
            .collect()
    }
}

/// A new database, migrated, with `scale.wallets` funded wallets and `scale.transfers`
/// transfers of history, each as the engine writes one: its command with the stored result,
/// a journal, two ledger entries, two orders; balances and totals to match. Returns its URL,
/// the build's steps and the database's size.
async fn build(
    admin_url: &str,
    database: &str,
    scale: Scale,
) -> anyhow::Result<(String, Vec<(String, Duration)>, i64)> {
    let started = Instant::now();
    let mut steps = Vec::new();
    let admin = pluspay::db::connect(admin_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let url = database_url(admin_url, database)?;
    let mut db = pluspay::db::connect(&url).await?;
    pluspay::db::migrate::migrate(&mut db).await?;
    steps.push(("create and migrate".to_owned(), started.elapsed()));
    // One session does the whole load: it may lose its last commits in a crash (the database
    // is thrown away then anyway), and sorts for the index builds and the balances in memory.
    db.batch_execute(
        "SET synchronous_commit = off; SET maintenance_work_mem = '1GB'; SET work_mem = '256MB'",
    )
    .await?;
    let keys = Keys::read(&db).await?;
    step(
        &db,
        &mut steps,
        "drop the keys and indexes",
        // The trigger that notes entries added to journals the audit has verified copies
        // every inserted row into a transition table: for ten million rows, and no journal
        // verified yet, it is off during the load.
        &format!(
            "{}ALTER TABLE ledger_entries DISABLE TRIGGER audit_entry_added;",
            keys.drop_sql()
        ),
    )
    .await?;

    let (w, t, b) = (scale.wallets, scale.transfers, scale.big_orders);
    step(
        &db,
        &mut steps,
        "accounts",
        &format!(
            "INSERT INTO accounts (kind, name, unit, may_go_negative)
                 VALUES ('system', 'test_funding', 'fen', true);
             INSERT INTO accounts (kind, user_id, unit)
                 SELECT 'wallet', u, 'fen' FROM generate_series(1, {w}) AS u;"
        ),
    )
    .await?;
    // The ids are computed from the transfer's number below (OVERRIDING SYSTEM VALUE), so
    // that each table is written in one pass without joins: the wallets' account ids must be
    // one run, and the history's journals, entries and orders come after the funding's.
    let row = db
        .query_one(
            "SELECT min(id) - 1, count(*) FILTER (WHERE id - user_id <> (SELECT min(id) - 1
                                                   FROM accounts WHERE kind = 'wallet'))
             FROM accounts WHERE kind = 'wallet'",
            &[],
        )
        .await?;
    let account0: i64 = row.get(0);
    if row.get::<_, i64>(1) != 0 {
        bail!("the wallets' account ids are not one run");
    }
    let funding_journal: i64 = db
        .query_one(
            "INSERT INTO journal (kind) VALUES ('test_funding') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    step(
        &db,
        &mut steps,
        "funding entries",
        &format!(
            "INSERT INTO ledger_entries (journal_id, account_id, amount, version, balance_after,
                                         hash)
                 SELECT {funding_journal}, id, {FUNDING}, 1, {FUNDING},
                        ledger_entry_hash(NULL, id, 1, {FUNDING}, {FUNDING}, {funding_journal})
                     FROM accounts WHERE kind = 'wallet'
                 UNION ALL
                 SELECT {funding_journal}, id, -{FUNDING}::bigint * {w}, NULL, NULL, NULL
                     FROM accounts WHERE name = 'test_funding';"
        ),
    )
    .await?;
    let order0: i64 = db
        .query_one("SELECT coalesce(max(id), 0) FROM wallet_orders", &[])
        .await?
        .get(0);
    let journal0 = funding_journal;
    let history = history(scale, server_now(&db).await?);

    // The result the engine stores for a transfer (src/engine/commands/transfer.rs: the
    // sender's order under data.order, serialized by serde_json), byte for byte in its shape.
    step(
        &db,
        &mut steps,
        "commands",
        &format!(
            r#"INSERT INTO commands (id, type, fingerprint, status, result, created_at)
               SELECT 'history-' || g, 'transfer',
                      sha256(convert_to('history-' || g, 'UTF8')), 'succeeded',
                      ('{{"id":"history-' || g || '","type":"transfer","user_id":' || f
                       || ',"status":"succeeded","message":["转账成功"],"data":{{"order":{{'
                       || '"amount":' || amount || ',"body":null,"created_at":"' || ts
                       || '","id":' || ({order0} + 2 * g - 1) || ',"owner_id":' || f
                       || ',"state":1,"target_id":"' || t
                       || '","target_type":"user","title":"转账","type":-1,"updated_at":"'
                       || ts || '"}}}}}}')::json,
                      at
               FROM {history}"#
        ),
    )
    .await?;
    step(
        &db,
        &mut steps,
        "journal",
        &format!(
            "INSERT INTO journal (id, kind, command_id, created_at) OVERRIDING SYSTEM VALUE
                 SELECT {journal0} + g, 'transfer', 'history-' || g, at FROM {history}"
        ),
    )
    .await?;
    step(
        &db,
        &mut steps,
        "ledger entries",
        &format!(
            // Each wallet's versions follow its funding (version 1) in journal order, as
            // postings would have numbered them, and chained onto it.
            "INSERT INTO ledger_entries (journal_id, account_id, amount, version, balance_after,
                                         hash)
                 SELECT j, a, d, v, b,
                        ledger_chain(ledger_entry_hash(NULL, a, 1, {FUNDING}, {FUNDING},
                                                       {funding_journal}), a, v, d, b, j)
                            OVER (PARTITION BY a ORDER BY v
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                 FROM (SELECT {journal0} + g AS j, {account0} + d.owner AS a, d.amount AS d,
                              1 + row_number() OVER w AS v,
                              ({FUNDING} + sum(d.amount) OVER w)::bigint AS b
                       FROM {history},
                            LATERAL (VALUES (f, -amount), (t, amount)) AS d(owner, amount)
                       WINDOW w AS (PARTITION BY d.owner ORDER BY g
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) x"
        ),
    )
    .await?;
    step(
        &db,
        &mut steps,
        "wallet orders",
        &format!(
            "INSERT INTO wallet_orders (id, owner_id, target_type, target_id, title, body, type,
                                        amount, state, command_id, journal_id, created_at,
                                        updated_at) OVERRIDING SYSTEM VALUE
                 SELECT {order0} + 2 * g - 1 + d.i, d.owner, 'user', d.other::text, '转账', NULL,
                        d.direction, amount, 1, NULL, {journal0} + g, at, at
                 FROM {history},
                      LATERAL (VALUES (0, f, t, -1), (1, t, f, 1)) AS d(i, owner, other, direction)"
        ),
    )
    .await?;
    step(
        &db,
        &mut steps,
        "balances and totals",
        "UPDATE accounts a SET balance = e.sum, total_income = e.income,
                total_expenses = e.expenses, entry_count = e.n
           FROM (SELECT account_id, sum(amount) AS sum, sum(greatest(amount, 0)) AS income,
                        sum(greatest(-amount, 0)) AS expenses, count(*) AS n
                 FROM ledger_entries GROUP BY account_id) e
          WHERE a.id = e.account_id;
         SELECT setval(pg_get_serial_sequence('journal', 'id'), (SELECT max(id) FROM journal));
         SELECT setval(pg_get_serial_sequence('wallet_orders', 'id'),
                       (SELECT max(id) FROM wallet_orders));",
    )
    .await?;
    step(
        &db,
        &mut steps,
        "primary and unique keys",
        &Keys::add_sql(&keys.keys),
    )
    .await?;
    for (name, definition) in &keys.indexes {
        step(&db, &mut steps, &format!("index {name}"), definition).await?;
    }
    step(
        &db,
        &mut steps,
        "foreign keys (each checked)",
        &Keys::add_sql(&keys.foreign_keys),
    )
    .await?;
    step(
        &db,
        &mut steps,
        "account heads",
        "UPDATE accounts a SET head_hash = e.hash FROM ledger_entries e
          WHERE e.account_id = a.id AND e.version = a.entry_count AND a.kind <> 'system'",
    )
    .await?;
    db.batch_execute("ALTER TABLE ledger_entries ENABLE TRIGGER audit_entry_added")
        .await?;
    if Keys::read(&db).await? != keys {
        bail!("the keys and indexes built again differ from the migrations'");
    }
    step(&db, &mut steps, "VACUUM ANALYZE", "VACUUM ANALYZE").await?;
    let row = db
        .query_one(
            "SELECT pg_database_size(current_database()),
                    (SELECT count(*) FROM wallet_orders WHERE owner_id = $1)",
            &[&BIG_WALLET],
        )
        .await?;
    let (bytes, big_orders): (i64, i64) = (row.get(0), row.get(1));
    if big_orders != scale.big_orders {
        bail!(
            "wallet {BIG_WALLET} has {big_orders} orders, not {}",
            scale.big_orders
        );
    }
    println!(
        "  database {database}: {w} wallets, {t} transfers of history ({} entries, {} orders; \
         wallet {BIG_WALLET}: {b} orders), {}, built in {:.1} s",
        2 * t,
        2 * t,
        gib(bytes),
        started.elapsed().as_secs_f64()
    );
    Ok((url, steps, bytes))
}

/// The server's clock, once: every table's rows of a transfer get the same timestamp.
async fn server_now(db: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(db
        .query_one("SELECT date_trunc('second', now())::text", &[])
        .await?
        .get(0))
}

/// The history as a FROM item, one row per transfer `g` in 1..=transfers: from `f` to `t`,
/// `amount` fen, at `at` (and `ts`, as orders show it). Every (transfers / big_orders)-th
/// transfer, big_orders of them, is wallet 1's, alternately sent and received with the same
/// amount in each pair (so its balance stays near its funding), spread over the whole history
/// as a popular wallet's are. The others go from wallet v to v + 1 among wallets 2..=wallets,
/// each wallet sending and receiving about transfers / wallets of them.
fn history(scale: Scale, epoch: String) -> String {
    let (t, b) = (scale.transfers, scale.big_orders);
    let others = scale.wallets - 1;
    let stride = t / b;
    format!(
        "(SELECT g, p.f, p.t, 1 + (p.n * 37) % 100 AS amount, p.at,
                 to_char(p.at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS ts
          FROM generate_series(1, {t}::bigint) AS g,
               LATERAL (SELECT g % {stride} = 0 AND g / {stride} <= {b} AS big,
                               g / {stride} AS k) w,
               LATERAL (SELECT CASE WHEN NOT w.big THEN 2 + g % {others}
                                    WHEN w.k % 2 = 1 THEN {BIG_WALLET}
                                    ELSE 2 + w.k % {others} END AS f,
                               CASE WHEN NOT w.big THEN 2 + (g + 1) % {others}
                                    WHEN w.k % 2 = 1 THEN 2 + w.k % {others}
                                    ELSE {BIG_WALLET} END AS t,
                               CASE WHEN w.big THEN (w.k + 1) / 2 ELSE g END AS n,
                               '{epoch}'::timestamptz
                                   - ({t} - g) * interval '{HISTORY_STEP_SECS} seconds' AS at) p
         ) AS h"
    )
}

/// One copy of the big ledger, dropped at once: what a fresh copy per scenario would cost.
async fn time_copy(admin_url: &str, database: &str) -> anyhow::Result<Duration> {
    let copy = format!("{database}_copy");
    let admin = pluspay::db::connect(admin_url).await?;
    let started = Instant::now();
    let copied = admin
        .batch_execute(&format!(
            "CREATE DATABASE {copy} TEMPLATE {database} STRATEGY FILE_COPY"
        ))
        .await;
    let took = started.elapsed();
    drop_database_if_exists(admin_url, &copy).await?;
    copied.context("copy the big ledger")?;
    println!(
        "  a copy of it (CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY): {:.1} s",
        took.as_secs_f64()
    );
    Ok(took)
}

fn gib(bytes: i64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

// ---------------------------------------------------------------- the checks

/// Times one call of the periodic check; it must find the ledger sound.
async fn periodic_check(url: &str, when: &str) -> anyhow::Result<(String, Duration, &'static str)> {
    let mut db = pluspay::db::connect(url).await?;
    let started = Instant::now();
    let report = pluspay::db::audit::run_incremental(&mut db).await?;
    let took = started.elapsed();
    if !report.ok {
        bail!(
            "the periodic check failed {when}: {}",
            serde_json::to_string(&report)?
        );
    }
    println!(
        "  periodic check (pluspay::db::audit::run_incremental), {when}: {:.1} ms, scope {}, ok",
        ms(took),
        report.scope
    );
    Ok((when.to_owned(), took, report.scope))
}

/// The mixed scenario at a fixed offered rate (latency worth reading, unlike at --rate 0).
async fn steady(
    options: &Options,
    db_url: &str,
    amqp_url: &str,
    wallets: i64,
    log_dir: &Path,
    ledger: &str,
) -> anyhow::Result<DaemonRun> {
    let n = (options.steady_rate * options.steady_secs as f64)
        .round()
        .max(1.0) as usize;
    println!(
        "  steady: {n} mixed commands offered at {}/s",
        options.steady_rate
    );
    let steady_options = Options {
        rate: options.steady_rate,
        ..options.clone()
    };
    let commands = generate(
        Scenario::Mixed,
        n,
        options.seed ^ 0x57ead,
        wallets,
        "steady",
    );
    let log = log_dir.join(format!("worker-{ledger}-steady.log"));
    let statements = StatementStats::reset(db_url).await;
    let run = run_daemon(&steady_options, "steady", db_url, amqp_url, commands, &log).await?;
    run.print();
    if let Some(statements) = statements {
        statements.print(n).await?;
    }
    Ok(run)
}

/// Where PostgreSQL's time goes during a run, statement by statement, when the server loads
/// pg_stat_statements (scripts/bench.sh has it load it).
struct StatementStats {
    db: tokio_postgres::Client,
}

impl StatementStats {
    async fn reset(db_url: &str) -> Option<StatementStats> {
        let db = pluspay::db::connect(db_url).await.ok()?;
        db.batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
        )
        .await
        .ok()?;
        Some(StatementStats { db })
    }

    async fn print(self, commands: usize) -> anyhow::Result<()> {
        let rows = self
            .db
            .query(
                "SELECT calls, total_exec_time, total_plan_time, rows,
                        regexp_replace(left(query, 90), '\\s+', ' ', 'g') AS query
                 FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 ORDER BY total_exec_time + total_plan_time DESC LIMIT 12",
                &[],
            )
            .await?;
        let all: f64 = self
            .db
            .query_one(
                "SELECT coalesce(sum(total_exec_time + total_plan_time), 0)::float8
                 FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await?
            .get(0);
        println!(
            "  pg_stat_statements over the run: {:.3} ms of execution and planning per command \
             in all; the top statements:",
            all / commands as f64
        );
        println!("  | calls | ms per command | ms per call | rows per call | statement |");
        println!("  | ---: | ---: | ---: | ---: | --- |");
        for row in rows {
            let calls: i64 = row.get("calls");
            let ms: f64 =
                row.get::<_, f64>("total_exec_time") + row.get::<_, f64>("total_plan_time");
            println!(
                "  | {calls} | {:.4} | {:.4} | {:.1} | `{}` |",
                ms / commands as f64,
                ms / calls.max(1) as f64,
                row.get::<_, i64>("rows") as f64 / calls.max(1) as f64,
                row.get::<_, String>("query").replace('|', "\\|")
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- bytes per transfer

/// One table's size: pg_relation_size (the heap), pg_indexes_size, pg_total_relation_size
/// (with TOAST, free space map and visibility map), the heap's free space as the free space
/// map has it, and the bytes the indexes' leaf pages use (pgstatindex: leaf pages times
/// their average density).
#[derive(Debug, Clone, Copy, Default)]
struct TableSize {
    heap: i64,
    indexes: i64,
    total: i64,
    heap_free: i64,
    index_used: i64,
}

impl TableSize {
    fn minus(self, before: TableSize) -> TableSize {
        TableSize {
            heap: self.heap - before.heap,
            indexes: self.indexes - before.indexes,
            total: self.total - before.total,
            heap_free: self.heap_free - before.heap_free,
            index_used: self.index_used - before.index_used,
        }
    }

    fn plus(self, other: TableSize) -> TableSize {
        TableSize {
            heap: self.heap + other.heap,
            indexes: self.indexes + other.indexes,
            total: self.total + other.total,
            heap_free: self.heap_free + other.heap_free,
            index_used: self.index_used + other.index_used,
        }
    }
}

async fn table_sizes(db: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, TableSize)>> {
    let tables: Vec<&str> = WRITTEN.to_vec();
    let rows = db
        .query(
            "SELECT t.name, pg_relation_size(c.oid), pg_indexes_size(c.oid),
                    pg_total_relation_size(c.oid),
                    (SELECT coalesce(sum(f.avail), 0)::bigint FROM pg_freespace(c.oid) f),
                    (SELECT coalesce(sum(s.leaf_pages * current_setting('block_size')::bigint
                                         * CASE WHEN s.avg_leaf_density = 'NaN' THEN 0
                                                ELSE s.avg_leaf_density END / 100), 0)::bigint
                     FROM pg_index i
                     JOIN pg_class ic ON ic.oid = i.indexrelid
                     JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree',
                     LATERAL pgstatindex(i.indexrelid::regclass) s
                     WHERE i.indrelid = c.oid)
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n)
             JOIN pg_class c ON c.oid = t.name::regclass
             ORDER BY t.n",
            &[&tables],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                TableSize {
                    heap: r.get(1),
                    indexes: r.get(2),
                    total: r.get(3),
                    heap_free: r.get(4),
                    index_used: r.get(5),
                },
            )
        })
        .collect())
}

struct SizeRun {
    transfers: usize,
    /// Per table: after - before.
    tables: Vec<(String, TableSize)>,
    wal_bytes: i64,
    wal_fpi: i64,
    /// Average length of the results stored for these transfers, and of the history's.
    result_bytes: f64,
    history_result_bytes: Option<f64>,
}

/// N transfers through the daemon, and what they added to the tables they write, each
/// measured after a VACUUM so that the free space of dead row versions (each command's row
/// before its result, the accounts' old versions) is in the free space map both times.
/// CHECKPOINT would not change these sizes: a relation's file grows as soon as a page is
/// added to it.
async fn measure_size(
    options: &Options,
    db_url: &str,
    amqp_url: &str,
    wallets: i64,
    log_dir: &Path,
    ledger: &str,
) -> anyhow::Result<SizeRun> {
    let n = options.size_transfers;
    println!("  bytes per transfer: {n} uniform transfers");
    let db = pluspay::db::connect(db_url).await?;
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_freespacemap;
         CREATE EXTENSION IF NOT EXISTS pgstattuple;",
    )
    .await?;
    let vacuum = format!("VACUUM {}", WRITTEN.join(", "));
    db.batch_execute(&vacuum).await?;
    let before = table_sizes(&db).await?;
    let size_options = Options {
        rate: 0.0,
        ..options.clone()
    };
    let commands = generate(Scenario::Uniform, n, options.seed ^ 0x5123, wallets, "size");
    let log = log_dir.join(format!("worker-{ledger}-size.log"));
    let run = run_daemon(&size_options, "size", db_url, amqp_url, commands, &log).await?;
    run.print();
    let succeeded = run.outcomes.get("succeeded").copied().unwrap_or(0);
    if succeeded != n {
        bail!("{succeeded} of the {n} transfers succeeded: their bytes would not be a transfer's");
    }
    db.batch_execute(&vacuum).await?;
    let after = table_sizes(&db).await?;
    let tables: Vec<(String, TableSize)> = after
        .iter()
        .zip(&before)
        .map(|((name, a), (_, b))| (name.clone(), a.minus(*b)))
        .collect();
    let result_bytes: f64 = db
        .query_one(
            "SELECT avg(octet_length(result::text))::float8 FROM commands WHERE id LIKE 'size-%'",
            &[],
        )
        .await?
        .get(0);
    // A sample of the history's pages: its results are all of one shape.
    let history_result_bytes: Option<f64> = db
        .query_one(
            "SELECT avg(octet_length(result::text))::float8 FROM commands TABLESAMPLE SYSTEM (1)
             WHERE id LIKE 'history-%' AND result::text <> '{}'",
            &[],
        )
        .await?
        .get(0);
    let samples = db
        .query(
            "(SELECT result::text FROM commands WHERE id = 'size-0')
             UNION ALL
             (SELECT result::text FROM commands WHERE id = 'history-1')",
            &[],
        )
        .await?;
    for sample in samples {
        println!("  a stored result: {}", sample.get::<_, String>(0));
    }
    let report = SizeRun {
        transfers: n,
        tables,
        wal_bytes: run.stats.wal_bytes,
        wal_fpi: run.stats.wal_fpi,
        result_bytes,
        history_result_bytes,
    };
    print_sizes(&report);
    Ok(report)
}

fn print_sizes(run: &SizeRun) {
    let per = |bytes: i64| bytes as f64 / run.transfers as f64;
    let mut all = TableSize::default();
    for (name, d) in &run.tables {
        all = all.plus(*d);
        println!(
            "  {name}: +{} ({:.0} bytes per transfer: heap {:.0} (used {:.0}), indexes {:.0} \
             (used {:.0}))",
            mib(d.total),
            per(d.total),
            per(d.heap),
            per(d.heap - d.heap_free),
            per(d.indexes),
            per(d.index_used)
        );
    }
    println!(
        "  all: {:.0} bytes per transfer (heap {:.0}, used {:.0}; indexes {:.0}, used {:.0}); \
         WAL {:.0} bytes per transfer; stored results {:.0} bytes on average",
        per(all.total),
        per(all.heap),
        per(all.heap - all.heap_free),
        per(all.indexes),
        per(all.index_used),
        per(run.wal_bytes),
        run.result_bytes
    );
}

// ---------------------------------------------------------------- orders of the big wallet

/// The text of `pluspay::db::orders::list`'s and `get`'s queries, for EXPLAIN. The timed calls
/// go through those functions; each EXPLAINed query's answer is compared with theirs, so that
/// a change in src/db/orders.rs shows here.
const LIST_SQL: &str = "SELECT coalesce(json_agg(order_json(o) ORDER BY o.id DESC), '[]'::json)
             FROM (SELECT * FROM wallet_orders
                   WHERE owner_id = $1 AND ($2::bigint IS NULL OR id < $2)
                     AND ($3::smallint IS NULL OR type = $3)
                   ORDER BY id DESC LIMIT $4) o";
const GET_SQL: &str = "SELECT order_json(o) FROM wallet_orders o WHERE id = $1 AND owner_id = $2";

struct QueryTime {
    name: String,
    rows: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    execution_ms: f64,
    planning_ms: f64,
    /// The top plan node's `Buffers:` line.
    buffers: String,
}

struct OrdersReport {
    orders: i64,
    calls: usize,
    queries: Vec<QueryTime>,
}

/// EXPLAIN (ANALYZE, BUFFERS) of `sql` with these parameters: (execution ms, planning ms, the
/// top node's buffers, the plan).
async fn explain(
    db: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<(f64, f64, String, Vec<String>)> {
    let lines: Vec<String> = db
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let time = |prefix: &str| -> anyhow::Result<f64> {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.trim().trim_end_matches("ms").trim().parse().ok())
            .with_context(|| format!("no {prefix:?} in EXPLAIN's output"))
    };
    let buffers = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("Buffers: "))
        .unwrap_or("-")
        .to_owned();
    Ok((
        time("Execution Time:")?,
        time("Planning Time:")?,
        buffers,
        lines,
    ))
}

/// orders.list's pages and orders.get for the wallet with many orders, through the engine's
/// own functions on one pooled (direct) connection, each call in a transaction as the engine
/// makes them, timed around the function alone; then EXPLAIN ANALYZE of each once.
async fn orders_timings(options: &Options, url: &str) -> anyhow::Result<OrdersReport> {
    let calls = options.order_calls;
    let db = pluspay::db::connect(url).await?;
    let ids: Vec<i64> = db
        .query(
            "SELECT id FROM wallet_orders WHERE owner_id = $1 ORDER BY id DESC",
            &[&BIG_WALLET],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let count = ids.len();
    if count < 32 {
        bail!("wallet {BIG_WALLET} has only {count} orders");
    }
    let page = |limit: i64, after: Option<i64>, action: Option<Action>| Page {
        limit,
        after,
        action,
    };
    let pages = [
        ("orders.list, first page (15)", page(15, None, None)),
        (
            "orders.list, a page at the middle (after = the order in the middle)",
            page(15, Some(ids[count / 2]), None),
        ),
        (
            "orders.list, the last page (the 15 oldest)",
            page(15, Some(ids[count - 16]), None),
        ),
        (
            "orders.list, first page of income only",
            page(15, None, Some(Action::Income)),
        ),
        (
            "orders.list, first page of 100 (the most)",
            page(100, None, None),
        ),
    ];
    let pool = pluspay::db::pool(&pluspay::config::DatabaseSettings {
        url: url.to_owned(),
        pool_size: 1,
        ..Default::default()
    })?;
    let mut client = pool.get().await?;
    let mut queries = Vec::new();
    for (name, page) in pages {
        let mut times = Vec::with_capacity(calls);
        let mut answer = serde_json::Value::Null;
        // Ten untimed calls first: the connection's first queries read the catalogs.
        for i in 0..calls + 10 {
            let tx = client.transaction().await?;
            let started = Instant::now();
            answer = pluspay::db::orders::list(&tx, BIG_WALLET, &page).await?;
            let took = started.elapsed();
            tx.commit().await?;
            if i >= 10 {
                times.push(took);
            }
        }
        let direction = page.action.map(|a| a.direction());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&BIG_WALLET, &page.after, &direction, &page.limit];
        let copy: serde_json::Value = db.query_one(LIST_SQL, &params).await?.get(0);
        if copy != answer {
            bail!("LIST_SQL no longer answers as pluspay::db::orders::list: update it");
        }
        let (execution_ms, planning_ms, buffers, plan) = explain(&db, LIST_SQL, &params).await?;
        let rows = answer.as_array().map_or(0, Vec::len);
        queries.push(timed(
            name,
            rows,
            times,
            execution_ms,
            planning_ms,
            buffers,
            &plan,
        ));
    }
    // Random orders of the wallet, a new one each call.
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed ^ 0x04de5);
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + 10 {
        let id = ids[rng.random_range(0..count)];
        let tx = client.transaction().await?;
        let started = Instant::now();
        let order = pluspay::db::orders::get(&tx, BIG_WALLET, id).await?;
        let took = started.elapsed();
        tx.commit().await?;
        if order.is_none() {
            bail!("orders::get found no order {id} of wallet {BIG_WALLET}");
        }
        if i >= 10 {
            times.push(took);
        }
    }
    let id = ids[count / 2];
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &BIG_WALLET];
    let tx = client.transaction().await?;
    let answer = pluspay::db::orders::get(&tx, BIG_WALLET, id).await?;
    tx.commit().await?;
    let copy: Option<serde_json::Value> = db.query_opt(GET_SQL, &params).await?.map(|r| r.get(0));
    if copy != answer {
        bail!("GET_SQL no longer answers as pluspay::db::orders::get: update it");
    }
    let (execution_ms, planning_ms, buffers, plan) = explain(&db, GET_SQL, &params).await?;
    queries.push(timed(
        "orders.get, a random order of the wallet",
        1,
        times,
        execution_ms,
        planning_ms,
        buffers,
        &plan,
    ));
    Ok(OrdersReport {
        orders: count as i64,
        calls,
        queries,
    })
}

fn timed(
    name: &str,
    rows: usize,
    mut times: Vec<Duration>,
    execution_ms: f64,
    planning_ms: f64,
    buffers: String,
    plan: &[String],
) -> QueryTime {
    times.sort_unstable();
    let query = QueryTime {
        name: name.to_owned(),
        rows,
        p50: percentile(&times, 0.50),
        p99: percentile(&times, 0.99),
        max: *times.last().expect("calls > 0"),
        execution_ms,
        planning_ms,
        buffers,
    };
    println!(
        "  {name}: {rows} rows; {} calls p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; EXPLAIN \
         ANALYZE: execution {:.3} ms, planning {:.3} ms",
        times.len(),
        ms(query.p50),
        ms(query.p99),
        ms(query.max),
        query.execution_ms,
        query.planning_ms
    );
    for line in plan {
        println!("      {line}");
    }
    query
}

// ---------------------------------------------------------------- retention

#[derive(Debug, Clone, Copy)]
struct CommandLog {
    bytes: i64,
    rows: i64,
    reads: i64,
}

async fn command_log(db: &tokio_postgres::Client) -> anyhow::Result<CommandLog> {
    let reads: Vec<&str> = READS.to_vec();
    let row = db
        .query_one(
            "SELECT pg_total_relation_size('commands'), count(*),
                    count(*) FILTER (WHERE type = ANY($1))
             FROM commands",
            &[&reads],
        )
        .await?;
    Ok(CommandLog {
        bytes: row.get(0),
        rows: row.get(1),
        reads: row.get(2),
    })
}

struct Retention {
    before: CommandLog,
    after: CommandLog,
    removed: u64,
    batches: usize,
    took: Duration,
    vacuum: Duration,
}

/// The read commands' stored results removed in batches of 10,000 until none is left (age 0:
/// all of them), then VACUUM commands; the command log's size before and after. The ledger
/// must still pass the audit.
async fn retention(url: &str) -> anyhow::Result<Retention> {
    let db = pluspay::db::connect(url).await?;
    let before = command_log(&db).await?;
    let started = Instant::now();
    let (mut removed, mut batches) = (0, 0);
    loop {
        let n = pluspay::db::commands::remove_expired_reads(&db, Duration::ZERO, 10_000).await?;
        batches += 1;
        removed += n;
        if n == 0 {
            break;
        }
    }
    let took = started.elapsed();
    let started = Instant::now();
    db.batch_execute("VACUUM commands").await?;
    let vacuum = started.elapsed();
    let after = command_log(&db).await?;
    audit(url, "the retention").await?;
    println!(
        "  retention (pluspay::db::commands::remove_expired_reads, age 0, batches of 10,000): \
         {removed} removed in {batches} calls, {:.2} s; VACUUM commands {:.2} s; commands \
         {} / {} rows / {} reads before, {} / {} rows / {} reads after; audit ok",
        took.as_secs_f64(),
        vacuum.as_secs_f64(),
        mib(before.bytes),
        before.rows,
        before.reads,
        mib(after.bytes),
        after.rows,
        after.reads
    );
    Ok(Retention {
        before,
        after,
        removed,
        batches,
        took,
        vacuum,
    })
}

// ---------------------------------------------------------------- the summary

fn print_summary(options: &Options, scale: Scale, small: &LedgerReport, big: &BigReport) {
    println!("\n==== summary (--scale)\n");
    println!(
        "small ledger: {WALLETS} wallets, {HISTORY} transfers of history, a fresh database per \
         scenario; big ledger: {} wallets, {} transfers of history ({} ledger entries, {} \
         orders), wallet {BIG_WALLET} with {} orders, {} after the build, the scenarios one \
         after another on it",
        scale.wallets,
        scale.transfers,
        2 * scale.transfers,
        2 * scale.transfers,
        scale.big_orders,
        gib(big.database_bytes)
    );
    let total: Duration = big.build.iter().map(|(_, d)| *d).sum();
    let steps: Vec<String> = big
        .build
        .iter()
        .map(|(name, d)| format!("{name} {:.1} s", d.as_secs_f64()))
        .collect();
    println!(
        "building the big ledger: {:.1} s in all (then its full audit, {:.1} s): {}",
        total.as_secs_f64(),
        big.build_audit.as_secs_f64(),
        steps.join(", ")
    );
    if let Some(copy) = big.copy {
        println!(
            "one copy of it (CREATE DATABASE ... TEMPLATE, STRATEGY FILE_COPY): {:.1} s",
            copy.as_secs_f64()
        );
    }

    println!(
        "\n{} commands per scenario, {} publishers, offered rate {} (at max, latency is mostly \
         time in the queue):\n",
        options.commands,
        options.publishers,
        rate_label(options.rate)
    );
    println!(
        "| scenario | small cmds/s | big cmds/s | big / small (target >= 0.90) | small p50 ms \
         | small p99 ms | big p50 ms | big p99 ms | small pgbench tps | big pgbench tps |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let tps = |row: &Row| {
        row.pgbench
            .as_ref()
            .map_or("-".to_owned(), |p| format!("{:.1}", p.tps))
    };
    for (s, b) in small.rows.iter().zip(&big.ledger.rows) {
        println!(
            "| {} | {:.1} | {:.1} | **{:.2}** | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            s.scenario.name(),
            s.daemon.throughput,
            b.daemon.throughput,
            b.daemon.throughput / s.daemon.throughput,
            ms(s.daemon.p50),
            ms(s.daemon.p99),
            ms(b.daemon.p50),
            ms(b.daemon.p99),
            tps(s),
            tps(b)
        );
    }

    println!(
        "\nthe database per command in the same runs (WAL: whole server; a full-page image is \
         a page's first change after a checkpoint, and each run starts with a CHECKPOINT):\n"
    );
    println!(
        "| scenario | small WAL bytes | big WAL bytes | small full-page images | big full-page \
         images | small commits | big commits |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (s, b) in small.rows.iter().zip(&big.ledger.rows) {
        let per = |d: &DaemonRun, v: i64| v as f64 / d.commands as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.scenario.name(),
            per(&s.daemon, s.daemon.stats.wal_bytes),
            per(&b.daemon, b.daemon.stats.wal_bytes),
            per(&s.daemon, s.daemon.stats.wal_fpi),
            per(&b.daemon, b.daemon.stats.wal_fpi),
            per(&s.daemon, s.daemon.stats.commits),
            per(&b.daemon, b.daemon.stats.commits)
        );
    }

    println!(
        "\nsteady mixed traffic, offered {}/s for {} s:\n",
        options.steady_rate, options.steady_secs
    );
    println!(
        "| ledger | commands | achieved cmds/s | p50 ms | p99 ms | max ms | WAL bytes per \
         command | full-page images per command |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, ledger) in [("small", small), ("big", &big.ledger)] {
        if let Some(d) = &ledger.steady {
            println!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} |",
                d.commands,
                d.throughput,
                ms(d.p50),
                ms(d.p99),
                ms(d.max),
                d.stats.wal_bytes as f64 / d.commands as f64,
                d.stats.wal_fpi as f64 / d.commands as f64
            );
        }
    }

    println!("\nthe big ledger's checks:\n");
    println!("| measurement | time | scope |");
    println!("| --- | ---: | --- |");
    for (i, (when, took, scope)) in big.checks.iter().enumerate() {
        let target = if i + 1 == big.checks.len() {
            " (target < 100 ms)"
        } else {
            ""
        };
        println!(
            "| periodic check (audit::run_incremental), {when}{target} | {:.1} ms | {scope} |",
            ms(*took)
        );
    }
    println!(
        "| full audit (audit::run, what `pluspay audit` runs) | {:.2} s | full |",
        big.full_audit.as_secs_f64()
    );
    let audits = |ledger: &LedgerReport| -> String {
        let mut parts: Vec<String> = ledger
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{} {:.2} s",
                    r.scenario.name(),
                    r.daemon.audit_time.as_secs_f64()
                )
            })
            .collect();
        if let Some(s) = &ledger.steady {
            parts.push(format!("steady {:.2} s", s.audit_time.as_secs_f64()));
        }
        parts.join(", ")
    };
    println!(
        "\nthe full audit after each daemon run: small ledger {}; big ledger {}",
        audits(small),
        audits(&big.ledger)
    );
    if big.checks.iter().any(|(_, _, scope)| *scope == "full") {
        println!(
            "(scope full: there was no verified point yet, so run_incremental ran the full \
             check and set the point)"
        );
    }

    println!(
        "\norders of wallet {BIG_WALLET} ({} orders), {} timed calls each through \
         pluspay::db::orders (client side, one direct connection), EXPLAIN (ANALYZE, BUFFERS) \
         once (server side); target: orders.list p99 < 5 ms\n",
        big.orders.orders, big.orders.calls
    );
    println!(
        "| query | rows | p50 ms | p99 ms | max ms | EXPLAIN execution ms | planning ms | \
         buffers |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for q in &big.orders.queries {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            q.name,
            q.rows,
            ms(q.p50),
            ms(q.p99),
            ms(q.max),
            q.execution_ms,
            q.planning_ms,
            q.buffers
        );
    }

    let r = &big.retention;
    println!(
        "\nthe command log's retention on the big ledger (remove_expired_reads, age 0, batches \
         of 10,000, until it returns 0; then VACUUM commands):\n"
    );
    println!("| | pg_total_relation_size('commands') | rows | read commands |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, log) in [("before", r.before), ("after", r.after)] {
        println!(
            "| {name} | {} ({} bytes) | {} | {} |",
            mib(log.bytes),
            log.bytes,
            log.rows,
            log.reads
        );
    }
    println!(
        "removed {} in {} calls ({:.2} s); VACUUM commands {:.2} s{}",
        r.removed,
        r.batches,
        r.took.as_secs_f64(),
        r.vacuum.as_secs_f64(),
        if r.removed == 0 {
            " (nothing removed)"
        } else {
            ""
        }
    );

    println!(
        "\nbytes per transfer: what N transfers through the daemon added, over N (VACUUM before \
         and after; heap = pg_relation_size, used = minus the free space map's free space; \
         indexes = pg_indexes_size, used = pgstatindex's leaf pages x density; total = \
         pg_total_relation_size):\n"
    );
    println!("| ledger | transfers | table | heap | heap used | indexes | indexes used | total |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, ledger) in [("small", small), ("big", &big.ledger)] {
        let Some(size) = &ledger.size else { continue };
        let per = |bytes: i64| bytes as f64 / size.transfers as f64;
        let mut all = TableSize::default();
        let row = |table: &str, d: &TableSize| {
            println!(
                "| {name} | {} | {table} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                size.transfers,
                per(d.heap),
                per(d.heap - d.heap_free),
                per(d.indexes),
                per(d.index_used),
                per(d.total)
            );
        };
        for (table, d) in &size.tables {
            all = all.plus(*d);
            row(table, d);
        }
        row("**all**", &all);
    }
    for (name, ledger) in [("small", small), ("big", &big.ledger)] {
        let Some(size) = &ledger.size else { continue };
        println!(
            "{name}: WAL {:.0} bytes and {:.2} full-page images per transfer; results stored for \
             these transfers {:.0} bytes on average{}",
            size.wal_bytes as f64 / size.transfers as f64,
            size.wal_fpi as f64 / size.transfers as f64,
            size.result_bytes,
            size.history_result_bytes
                .map_or(String::new(), |h| format!(", the history's {h:.0}"))
        );
    }
    println!("(a pure-SQL ledger without idempotency or orders: about 850 bytes per transfer)");
}
