//! Test harness: real PostgreSQL and RabbitMQ, started once per test run by scripts/test.sh.
//! Each test gets its own database and its own AMQP namespace, so tests run in parallel
//! without seeing each other.

pub mod fake_pingpp;
pub mod schemas;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use pluspay::amqp::publisher::json_properties;
use pluspay::amqp::{self, Names, Publisher};
use pluspay::config::Settings;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts PostgreSQL and RabbitMQ")
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A test's own database and namespace, with settings pointing at them.
pub struct TestEnv {
    pub settings: Settings,
    pub names: Names,
    pub db: tokio_postgres::Client,
}

/// A new, empty database; returns its URL.
pub async fn empty_database() -> String {
    empty_database_at(&env("PP_TEST_DATABASE_URL")).await
}

/// A new, empty database on the server `admin_url` points at (a superuser's URL); returns its
/// URL.
/// Runs rabbitmqctl against the shared broker of scripts/test.sh.
pub async fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    let script = env("PP_SERVICES_SCRIPT");
    let dir = env("PP_SERVICES_DIR");
    tokio::process::Command::new("bash")
        .arg(script)
        .arg("rabbitmqctl")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run rabbitmqctl")
}

/// A broker user of one test, with no permissions yet; deleted again when dropped.
pub struct BrokerUser {
    pub name: String,
    password: String,
}

impl BrokerUser {
    /// A new user named `prefix` and a random suffix.
    pub async fn add(prefix: &str) -> BrokerUser {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let password = uuid::Uuid::new_v4().simple().to_string();
        let added = rabbitmqctl(&["add_user", &name, &password]).await;
        assert!(added.status.success(), "{added:?}");
        BrokerUser { name, password }
    }

    /// The test broker's URL, logged in as this user.
    pub fn url(&self, env: &TestEnv) -> String {
        let url = &env.settings.amqp.url;
        let (_, rest) = url.split_once('@').expect("a URL with user information");
        format!("amqp://{}:{}@{rest}", self.name, self.password)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let script = std::env::var("PP_SERVICES_SCRIPT").unwrap_or_default();
        let dir = std::env::var("PP_SERVICES_DIR").unwrap_or_default();
        let _ = std::process::Command::new("bash")
            .args([&script, "rabbitmqctl", &dir, "delete_user", &self.name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The user a broker URL logs in as: the `user_id` the broker accepts on its messages.
pub fn broker_user(amqp_url: &str) -> String {
    pluspay::amqp::url_user(amqp_url).expect("an AMQP URL")
}

pub async fn empty_database_at(admin_url: &str) -> String {
    let database = unique("pp");
    let admin = pluspay::db::connect(admin_url)
        .await
        .expect("admin connection");
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .expect("create the test database");
    replace_database(admin_url, &database)
}

/// The `pluspay` binary with `args` and `env` (and no other PLUSPAY_ variable), to run from the
/// crate root.
pub fn pluspay_command(args: &[&str], env: &[(&str, String)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"));
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PLUSPAY_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

/// Runs `pluspay ARGS` to its end.
pub async fn pluspay(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    pluspay_command(args, env)
        .output()
        .await
        .expect("run pluspay")
}

/// Starts `pluspay ARGS` (a daemon), its log on the piped stderr; killed when dropped.
pub fn spawn_pluspay(args: &[&str], env: &[(&str, String)]) -> tokio::process::Child {
    pluspay_command(args, env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pluspay")
}

/// `pluspay send cash.approve` with `id` and `data`, by the broker user of `amqp_url` (which
/// `send` sets as the message's user_id); it must succeed.
pub async fn approve_as(env: &TestEnv, amqp_url: String, id: &str, data: &Value) -> Value {
    let mut vars = env.process_env();
    vars.retain(|(key, _)| *key != "PLUSPAY_AMQP_URL");
    vars.push(("PLUSPAY_AMQP_URL", amqp_url));
    let args = ["send", "cash.approve", "--user", "10000", "--data"];
    let data = data.to_string();
    let sent = pluspay(&[&args[..], &[data.as_str(), "--id", id]].concat(), &vars).await;
    assert!(sent.status.success(), "{sent:?}");
    serde_json::from_slice(&sent.stdout).expect("send prints the result")
}

/// The status of cash record `cash`.
pub async fn cash_status(env: &TestEnv, cash: i64) -> i16 {
    env.db
        .query_one("SELECT status FROM cashes WHERE id = $1", &[&cash])
        .await
        .unwrap()
        .get(0)
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_urls(&env("PP_TEST_DATABASE_URL"), &env("PP_TEST_AMQP_URL")).await
    }

    /// Like [`TestEnv::new`], against other servers than the shared ones (a test that restarts
    /// its own PostgreSQL and RabbitMQ): a fresh database on the server `db_admin_url` points
    /// at (a superuser's URL) and a fresh namespace on the broker at `amqp_url`.
    pub async fn with_urls(db_admin_url: &str, amqp_url: &str) -> Self {
        let url = empty_database_at(db_admin_url).await;
        let mut settings = Settings::default();
        settings.database.url = url.clone();
        settings.amqp.url = amqp_url.to_owned();
        settings.amqp.namespace = unique("t");
        // The test broker's one user sends everything, operator commands too (the client
        // below sets it as every message's user_id, as config/pluspay.toml allows for the
        // processes the tests start).
        settings.security.operator_users = vec![broker_user(amqp_url)];
        settings.worker.shutdown_timeout_secs = 10;
        // Yesterday's ledger root would be one more event on every test's events exchange:
        // the tests of the roots record them themselves.
        settings.worker.ledger_root_secs = 0;
        let mut db = pluspay::db::connect(&url)
            .await
            .expect("test database connection");
        pluspay::db::migrate::migrate(&mut db)
            .await
            .expect("migrate");
        // The incremental check's starting point, so that every `audit` below compares it with
        // the full one.
        let first = pluspay::db::audit::run_incremental(&mut db)
            .await
            .expect("the first ledger check");
        assert_eq!(first.scope, "full");
        let names = Names::new(&settings.amqp.namespace);
        TestEnv {
            settings,
            names,
            db,
        }
    }

    /// The environment a `pluspay` process needs to use this test's database and namespace.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PLUSPAY_DATABASE_URL", self.settings.database.url.clone()),
            ("PLUSPAY_AMQP_URL", self.settings.amqp.url.clone()),
            (
                "PLUSPAY_AMQP_NAMESPACE",
                self.settings.amqp.namespace.clone(),
            ),
            // Processes of parallel tests must not fight over the default metrics port.
            ("PLUSPAY_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "PLUSPAY_SECURITY_OPERATOR_USERS",
                format!("[{}]", self.settings.security.operator_users.join(",")),
            ),
        ]
    }

    /// Starts a worker in this process; it stops when the returned guard is dropped or stopped.
    pub fn start_worker(&self) -> WorkerHandle {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pluspay::worker::run(
            self.settings.clone(),
            shutdown.clone(),
        ));
        WorkerHandle {
            shutdown,
            task: Some(task),
        }
    }

    /// Test-only money: a balanced journal from a `test_funding` system account that exists
    /// only in test databases. Production has no command that mints money. The wallet's entry
    /// is its next version, chained onto its head, as a posting's is; its row is locked first,
    /// as the engine's are, so that funding a wallet a worker is moving numbers it right.
    pub async fn fund(&self, user: i64, amount: i64) {
        self.db
            .batch_execute(&format!(
                "INSERT INTO accounts (kind, name, unit, may_go_negative)
                     VALUES ('system', 'test_funding', 'fen', true) ON CONFLICT (name) DO NOTHING;
                 INSERT INTO accounts (kind, user_id, unit) VALUES ('wallet', {user}, 'fen')
                     ON CONFLICT (kind, user_id) DO NOTHING;
                 BEGIN;
                 SELECT 1 FROM accounts WHERE kind = 'wallet' AND user_id = {user} FOR UPDATE;
                 WITH j AS (INSERT INTO journal (kind) VALUES ('test_funding') RETURNING id),
                      moves AS (SELECT a.id AS account_id, {amount}::bigint AS amount,
                                       a.entry_count + 1 AS version,
                                       a.balance + {amount}::bigint AS balance_after,
                                       ledger_entry_hash(a.head_hash, a.id, a.entry_count + 1,
                                           {amount}::bigint, a.balance + {amount}::bigint, j.id)
                                           AS hash
                                FROM accounts a, j WHERE kind = 'wallet' AND user_id = {user}
                                UNION ALL
                                SELECT id, -{amount}::bigint, NULL, NULL, NULL FROM accounts
                                WHERE name = 'test_funding'),
                      entries AS (INSERT INTO ledger_entries
                                      (journal_id, account_id, amount, version, balance_after,
                                       hash)
                                  SELECT j.id, m.account_id, m.amount, m.version, m.balance_after,
                                         m.hash
                                  FROM j, moves m)
                 UPDATE accounts a SET balance = balance + m.amount,
                        total_income = total_income + greatest(m.amount, 0),
                        total_expenses = total_expenses + greatest(-m.amount, 0),
                        entry_count = entry_count + 1,
                        head_hash = coalesce(m.hash, a.head_hash)
                   FROM moves m WHERE a.id = m.account_id;
                 COMMIT;"
            ))
            .await
            .expect("fund a wallet");
    }

    /// Starts a fake Ping++ that checks request signatures, and points the settings at it with
    /// a fresh merchant key written to a temporary file.
    pub async fn with_fake_pingpp(&mut self) -> fake_pingpp::FakePingpp {
        let (private_pem, public_pem) = fake_pingpp::generate_test_keys();
        let fake = fake_pingpp::FakePingpp::start(Some(&public_pem)).await;
        let key_file = std::env::temp_dir().join(format!("{}.pem", unique("merchant")));
        std::fs::write(&key_file, private_pem).expect("write the merchant key");
        let pingpp = &mut self.settings.pingpp;
        pingpp.api_base = fake.url();
        pingpp.app_id = fake_pingpp::APP_ID.into();
        pingpp.secret_key = fake_pingpp::SECRET_KEY.into();
        pingpp.private_key = Some(key_file);
        pingpp.timeout_ms = 1_000;
        pingpp.max_retries = 2;
        fake
    }

    /// Waits until `sql` (a count) returns `expected`.
    pub async fn wait_for_count(&self, sql: &str, expected: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.count(sql).await;
            if got == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sql}: {got}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn balance(&self, user: i64) -> i64 {
        self.db
            .query_opt("SELECT balance FROM wallets WHERE user_id = $1", &[&user])
            .await
            .unwrap()
            .map_or(0, |r| r.get(0))
    }

    /// The balance of a system account (`pending_payouts`, `pingpp_clearing`, ...).
    pub async fn system_balance(&self, name: &str) -> i64 {
        self.db
            .query_one("SELECT balance FROM accounts WHERE name = $1", &[&name])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// The full audit, after checking that the incremental check (of what changed since the
    /// previous call) comes to the same verdict on every invariant.
    pub async fn audit(&mut self) -> pluspay::db::audit::Report {
        let incremental = pluspay::db::audit::run_incremental(&mut self.db)
            .await
            .unwrap();
        let full = pluspay::db::audit::run(&mut self.db).await.unwrap();
        assert_eq!(full.scope, "full");
        // Checks of records against accounts (held money, red packets) are the full check's
        // alone: an incremental report leaves them out.
        let verdicts = |r: &pluspay::db::audit::Report| -> Vec<(&'static str, bool)> {
            r.checks
                .iter()
                .filter(|c| incremental.checks.iter().any(|i| i.name == c.name))
                .map(|c| (c.name, c.ok))
                .collect()
        };
        // Some checks are the full check's only (audit::FULL_ONLY_CHECKS).
        let full_verdicts: Vec<(&'static str, bool)> = verdicts(&full)
            .into_iter()
            .filter(|(name, _)| incremental.checks.iter().any(|c| c.name == *name))
            .collect();
        assert_eq!(
            verdicts(&incremental),
            full_verdicts,
            "the incremental check ({}) and the full one disagree: {}",
            incremental.scope,
            serde_json::to_string(&incremental).unwrap()
        );
        full
    }

    pub async fn client(&self) -> BrokerClient {
        BrokerClient::connect(&self.settings).await
    }
}

/// The URL with another database name, its parameters (`?target_session_attrs=...`) kept.
fn replace_database(url: &str, database: &str) -> String {
    let (address, query) = match url.split_once('?') {
        Some((address, query)) => (address, format!("?{query}")),
        None => (url, String::new()),
    };
    let (base, _) = address
        .rsplit_once('/')
        .expect("a database URL ends with /name");
    format!("{base}/{database}{query}")
}

pub struct WorkerHandle {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl WorkerHandle {
    /// Asks for a graceful stop and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("the worker task").expect("the worker");
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Plays upstream: publishes commands and collects their results through `reply_to`.
pub struct BrokerClient {
    pub connection: Arc<Connection>,
    pub publisher: Publisher,
    pub names: Names,
    reply_queue: String,
    replies: lapin::Consumer,
    /// The broker user it publishes as, and so every message's `user_id`.
    user: String,
    /// Results that arrived, by correlation id, in arrival order.
    pub received: HashMap<String, Vec<Value>>,
}

impl BrokerClient {
    pub async fn connect(settings: &Settings) -> Self {
        let client = Self::connect_as(settings, &settings.amqp.url).await;
        amqp::topology::declare(&client.connection, &client.names, &settings.amqp)
            .await
            .unwrap();
        client
    }

    /// A client logged in with `amqp_url` that declares nothing of the topology (a
    /// least-privileged upstream user may not): the worker must have declared it.
    pub async fn connect_as(settings: &Settings, amqp_url: &str) -> Self {
        let tls = amqp::tls_config(&settings.amqp).unwrap();
        let connection = Arc::new(
            amqp::connect_with_tls(amqp_url, "test-client", &tls)
                .await
                .unwrap(),
        );
        let names = Names::new(&settings.amqp.namespace);
        let channel = connection.create_channel().await.unwrap();
        let (reply_queue, replies) = temporary_queue(&channel).await;
        let publisher = Publisher::open(connection.clone()).await.unwrap();
        BrokerClient {
            connection,
            publisher,
            names,
            reply_queue,
            replies,
            user: broker_user(amqp_url),
            received: HashMap::new(),
        }
    }

    fn properties(&self, correlation_id: &str) -> BasicProperties {
        json_properties()
            .with_reply_to(self.reply_queue.as_str().into())
            .with_correlation_id(correlation_id.into())
            .with_user_id(self.user.as_str().into())
    }

    /// Publishes a command through the commands exchange, as upstream does.
    pub async fn command(&self, command: &Value) {
        let correlation_id = command["id"].as_str().expect("a command has an id");
        self.command_with(command, self.properties(correlation_id))
            .await
            .expect("publish a command");
    }

    /// Publishes a command with these properties (its result comes back to this client when
    /// they carry its reply queue: `reply_properties`).
    pub async fn command_with(
        &self,
        command: &Value,
        properties: BasicProperties,
    ) -> Result<(), pluspay::amqp::PublishError> {
        let kind = command["type"].as_str().expect("a command has a type");
        self.publisher
            .publish(
                &self.names.commands_exchange,
                kind,
                command.to_string().as_bytes(),
                properties,
                true,
            )
            .await
    }

    /// Properties that bring the result back to this client, with no `user_id`.
    pub fn reply_properties(&self, correlation_id: &str) -> BasicProperties {
        json_properties()
            .with_reply_to(self.reply_queue.as_str().into())
            .with_correlation_id(correlation_id.into())
    }

    /// Sends one command with these properties and returns its result.
    pub async fn call_with(&mut self, command: Value, properties: BasicProperties) -> Value {
        let id = command["id"].as_str().unwrap().to_owned();
        let before = self.received.get(&id).map_or(0, Vec::len);
        self.command_with(&command, properties)
            .await
            .expect("publish a command");
        self.wait_until(|received| received.get(&id).map_or(0, Vec::len) > before)
            .await;
        self.received[&id].last().unwrap().clone()
    }

    /// Publishes raw bytes straight into the commands queue (for garbage no exchange would route).
    pub async fn raw(&self, body: &[u8], correlation_id: Option<&str>) {
        let properties = match correlation_id {
            Some(c) => self.properties(c),
            None => json_properties(),
        };
        self.publisher
            .publish("", &self.names.commands_queue, body, properties, true)
            .await
            .expect("publish raw bytes");
    }

    /// Waits until `n` results in all have arrived.
    pub async fn wait_results(&mut self, n: usize) {
        self.wait_until(|received| received.values().map(Vec::len).sum::<usize>() >= n)
            .await
    }

    async fn wait_until(&mut self, done: impl Fn(&HashMap<String, Vec<Value>>) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.received) {
            let next = tokio::time::timeout_at(deadline, self.replies.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out with {} results",
                        self.received.values().map(Vec::len).sum::<usize>()
                    )
                })
                .expect("reply stream open")
                .expect("a reply");
            let correlation_id = next
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&next.data).expect("a result is JSON");
            schemas::check(schemas::Schema::Result, &body);
            self.received.entry(correlation_id).or_default().push(body);
        }
    }

    /// Sends one command and returns its result.
    pub async fn call(&mut self, command: Value) -> Value {
        let id = command["id"].as_str().unwrap().to_owned();
        let before = self.received.get(&id).map_or(0, Vec::len);
        self.command(&command).await;
        self.wait_until(|received| received.get(&id).map_or(0, Vec::len) > before)
            .await;
        let results = &self.received[&id];
        assert_eq!(results.len(), before + 1, "one more result for {id}");
        results.last().unwrap().clone()
    }

    /// Puts a Ping++ event on the webhooks queue, as the listener does once it verified it.
    pub async fn enqueue_pingpp_event(&self, body: &str) {
        self.publisher
            .publish(
                &self.names.webhooks_exchange,
                pluspay::amqp::topology::PINGPP_ROUTING_KEY,
                body.as_bytes(),
                json_properties(),
                true,
            )
            .await
            .expect("the broker takes the event");
    }

    /// Messages ready in the webhooks queue (not those delivered and unacknowledged).
    pub async fn webhooks_queue_depth(&self) -> u32 {
        let channel = self.connection.create_channel().await.unwrap();
        let ready = ready_messages(&channel, &self.names.webhooks_queue).await;
        let _ = channel.close(200, "".into()).await;
        ready
    }

    /// Collects `n` messages from the dead-letter queue.
    pub async fn dead_letters(&self, n: usize) -> Vec<Delivery> {
        let channel = self.connection.create_channel().await.unwrap();
        let mut consumer = no_ack_consumer(&channel, &self.names.dead_queue).await;
        let mut out = Vec::new();
        while out.len() < n {
            let next = tokio::time::timeout(WAIT, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("timed out with {} of {n} dead letters", out.len()))
                .unwrap()
                .unwrap();
            out.push(next);
        }
        out
    }

    /// Binds a fresh queue to an exchange, to watch what is published there.
    pub async fn watch(&self, exchange: &str, pattern: &str) -> lapin::Consumer {
        let channel = self.connection.create_channel().await.unwrap();
        let (queue, consumer) = temporary_queue(&channel).await;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        consumer
    }
}

/// POSTs a webhook as Ping++ does (JSON, the signature in `X-Pingplusplus-Signature` when
/// given); the answer's status, 0 when no answer came at all.
pub async fn post_webhook(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
) -> u16 {
    let mut request = http
        .post(url)
        .header("Content-Type", "application/json; charset=UTF-8")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Pingplusplus-Signature", signature);
    }
    match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(e) => {
            eprintln!("delivery failed: {e}");
            0
        }
    }
}

/// A server-named queue of this connection alone, gone with it, and a consumer on it that
/// needs no acknowledgements: for replies and for watching an exchange.
pub async fn temporary_queue(channel: &lapin::Channel) -> (String, lapin::Consumer) {
    let (name, consumer) = pluspay::amqp::reply_queue(channel)
        .await
        .expect("a temporary queue");
    (name.to_string(), consumer)
}

/// A consumer on `queue` whose deliveries need no acknowledgement.
pub async fn no_ack_consumer(channel: &lapin::Channel, queue: &str) -> lapin::Consumer {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// Messages ready in `queue` (not those delivered and unacknowledged).
pub async fn ready_messages(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// The next event off `consumer` (a queue bound to the events exchange, see
/// `BrokerClient::watch`), checked against the contract's event schema.
pub async fn next_event(consumer: &mut lapin::Consumer) -> Value {
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    schemas::check(schemas::Schema::Event, &event);
    event
}

/// A command as the worker decodes it from the wire.
pub fn envelope(command: &Value) -> pluspay::domain::command::Envelope {
    pluspay::domain::command::decode(command.to_string().as_bytes()).expect("a command")
}

/// Applies one command through the engine (no broker) and returns its result, checked against
/// the contract's schema.
pub async fn apply_checked(engine: &pluspay::engine::Engine, command: &Value) -> Value {
    let applied = engine.apply(&envelope(command)).await.expect("applied");
    let result: Value = serde_json::from_str(&applied.body).unwrap();
    schemas::check(schemas::Schema::Result, &result);
    result
}

/// The names of an audit report's failed checks.
pub fn failing(report: &pluspay::db::audit::Report) -> Vec<&'static str> {
    report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect()
}

pub fn transfer(id: &str, from: i64, to: i64, amount: i64) -> Value {
    serde_json::json!({ "id": id, "type": "transfer", "user_id": from, "data": { "user": to, "amount": amount } })
}

/// A test's database and namespace, a fake Ping++ (settings then adjusted by `configure`), a
/// worker using them, and a client.
pub async fn with_fake_pingpp_and_worker(
    configure: impl FnOnce(&mut Settings),
) -> (TestEnv, fake_pingpp::FakePingpp, BrokerClient, WorkerHandle) {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    configure(&mut env.settings);
    let worker = env.start_worker();
    let client = env.client().await;
    (env, fake, client, worker)
}
