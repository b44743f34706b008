//! Settings: built-in defaults, then `config/pluspay.toml` (or `--config FILE`), then `PLUSPAY_*`
//! environment variables. `PLUSPAY_<SECTION>_<KEY>` sets `<key>` of `[<section>]`, so
//! `PLUSPAY_DATABASE_URL` is `[database] url` and `PLUSPAY_PINGPP_API_BASE` is `[pingpp] api_base`.
//!
//! Each secret may instead be read from a file named by its `<key>_file` setting
//! (`PLUSPAY_DATABASE_URL_FILE`), so that it need be neither in the environment, which child
//! processes inherit and `/proc` shows, nor in the config file: the systemd units point these
//! at the credentials `LoadCredential=` puts in `$CREDENTIALS_DIRECTORY`.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::custody::Custody;
use crate::domain::policy::WalletPolicy;
pub use crate::redact::redact_url;

pub const DEFAULT_CONFIG_FILE: &str = "config/pluspay.toml";
pub const MIN_FINGERPRINT_KEY_BYTES: usize = 32;
pub const DEFAULT_MERCHANT_USER_ID_TEMPLATE: &str = "biz_{id}";
/// Brokers in `amqp.urls`, at most: a cluster has a handful of nodes.
pub const MAX_BROKER_URLS: usize = 16;

#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub worker: WorkerSettings,
    pub webhook: WebhookSettings,
    pub metrics: MetricsSettings,
    pub pingpp: PingppSettings,
    pub wallet: WalletPolicy,
    pub log: LogSettings,
    pub security: SecuritySettings,
    pub console: ConsoleSettings,
}

/// The operator console (`pluspay console`, and part of `pluspay run` when `listen` is set).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    pub listen: Option<SocketAddr>,
    /// Who may log in; their decisions are commands with their `user_id` as the operator.
    pub operators: Vec<ConsoleOperator>,
    /// How long a login lasts without use.
    pub session_idle_secs: u64,
    /// Cookies marked `Secure` (sent over HTTPS only; browsers also send them to
    /// `http://localhost`). Off only behind a proxy that ends TLS on another host name.
    pub secure_cookies: bool,
    /// Failed logins per operator name, and per client address, within `login_window_secs`
    /// before further attempts are refused.
    pub login_attempts: u32,
    pub login_window_secs: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            listen: None,
            operators: Vec::new(),
            session_idle_secs: 30 * 60,
            secure_cookies: true,
            login_attempts: 5,
            login_window_secs: 15 * 60,
        }
    }
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let operators: Vec<(&str, i64)> = self
            .operators
            .iter()
            .map(|o| (o.name.as_str(), o.user_id))
            .collect();
        f.debug_struct("ConsoleSettings")
            .field("listen", &self.listen)
            .field("operators", &operators)
            .field("session_idle_secs", &self.session_idle_secs)
            .field("secure_cookies", &self.secure_cookies)
            .field("login_attempts", &self.login_attempts)
            .field("login_window_secs", &self.login_window_secs)
            .finish()
    }
}

/// An operator's console account. The password is kept only as an argon2id PHC string
/// (`pluspay console hash-password`).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleOperator {
    pub name: String,
    /// The operator's id in the commands the console sends (`user_id`).
    pub user_id: i64,
    pub password_hash: String,
}

impl ConsoleSettings {
    /// Names the first console setting that makes no sense.
    pub fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for operator in &self.operators {
            if operator.name.is_empty()
                || operator.name.chars().count() > 64
                || operator
                    .name
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "console.operators: {:?} is not a name (1 to 64 characters, no spaces)",
                    operator.name
                ));
            }
            if !names.insert(operator.name.as_str()) {
                return Err(format!(
                    "console.operators: {} is named twice",
                    operator.name
                ));
            }
            if operator.user_id < 1 || !ids.insert(operator.user_id) {
                return Err(format!(
                    "console.operators: {}'s user_id must be a positive id no other operator has",
                    operator.name
                ));
            }
            if !crate::console::auth::is_argon2id_hash(&operator.password_hash) {
                return Err(format!(
                    "console.operators: {}'s password_hash is not an argon2id hash (make one with `pluspay console hash-password`)",
                    operator.name
                ));
            }
        }
        if self.listen.is_some() && self.operators.is_empty() {
            return Err("console.listen is set but console.operators names nobody".into());
        }
        if self.session_idle_secs == 0 || self.login_attempts == 0 || self.login_window_secs == 0 {
            return Err(
                "console.session_idle_secs, login_attempts and login_window_secs must be above 0"
                    .into(),
            );
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// AMQP users whose messages (by their broker-validated `user_id`) may carry operator
    /// commands (`cash.approve`, `cash.reject`, `cash.retrieve`).
    pub operator_users: Vec<String>,
    /// Lets every publisher send operator commands: only for a broker whose every user is an
    /// operator. The worker starts with an empty `operator_users` only when this is set.
    pub allow_any_operator: bool,
    /// Broker users bound to the operator ids (`user_id`) their operator commands may name,
    /// e.g. `{ ops-alice = [91], pluspay-console = [91, 92] }`; others are `forbidden`. An
    /// operator user not listed may name any id.
    pub operator_ids: std::collections::BTreeMap<String, Vec<i64>>,
}

impl SecuritySettings {
    /// Who may send operator commands, or why the worker must not start.
    pub fn operators(&self) -> Result<crate::domain::operators::Operators, ConfigError> {
        use crate::domain::operators::Operators;
        for (user, ids) in &self.operator_ids {
            if !self.allow_any_operator && !self.operator_users.contains(user) {
                return Err(ConfigError::Invalid(format!(
                    "security.operator_ids binds {user}, who is not in security.operator_users"
                )));
            }
            if ids.is_empty() || ids.iter().any(|id| *id < 1) {
                return Err(ConfigError::Invalid(format!(
                    "security.operator_ids: {user} needs one or more positive operator ids"
                )));
            }
        }
        match (self.operator_users.is_empty(), self.allow_any_operator) {
            (false, false) => Ok(
                Operators::only(self.operator_users.clone()).with_ids(self.operator_ids.clone())
            ),
            (true, true) => Ok(Operators::anyone().with_ids(self.operator_ids.clone())),
            (true, false) => Err(ConfigError::Invalid(
                "security.operator_users is empty: name the AMQP users that may send operator \
                 commands (cash.approve, cash.reject, cash.retrieve, wallet.freeze, \
                 wallet.unfreeze, limits.set), or set \
                 security.allow_any_operator = true to let every publisher send them"
                    .into(),
            )),
            (false, true) => Err(ConfigError::Invalid(
                "security.operator_users and security.allow_any_operator are both set: choose one"
                    .into(),
            )),
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub url: String,
    /// A file holding `url` (a credential: the URL carries the password).
    pub url_file: Option<PathBuf>,
    /// A file holding the password, put into `url` (which then names the user but no
    /// password), so the hosts stay in the config file and only the password is a credential.
    pub password_file: Option<PathBuf>,
    pub pool_size: usize,
    /// How long a command waits for a pooled connection before the attempt counts as failed.
    pub pool_timeout_ms: u64,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    pub url: String,
    /// A file holding `url`.
    pub url_file: Option<PathBuf>,
    /// The nodes of a cluster; when set, `url` is not used. A process connects to one that
    /// answers and moves to another when it goes.
    pub urls: Vec<String>,
    /// A file holding `urls`, one a line.
    pub urls_file: Option<PathBuf>,
    /// A file holding the password, put into `urls` (or `url`), which name the user only.
    pub password_file: Option<PathBuf>,
    /// Prefix of every exchange and queue name: `<namespace>.commands`, `.results`, ...
    pub namespace: String,
    pub prefetch: u16,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Replicas of each quorum queue when it is first declared (RabbitMQ takes all the nodes
    /// there are when the cluster has fewer).
    pub quorum_group_size: u16,
    /// PEM file of the CA that signed the brokers' certificates (`amqps://` URLs), trusted
    /// beside the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl AmqpSettings {
    /// The brokers to try: `urls`, or `url` alone.
    pub fn broker_urls(&self) -> Vec<String> {
        if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Transactions (single commands or batches) running at once in one worker process.
    pub concurrency: usize,
    /// Commands that wait on Ping++ (recharges, `cash.retrieve`, withdrawal decisions) running
    /// at once, beside the transaction slots, so a slow Ping++ never holds those up.
    pub pingpp_concurrency: usize,
    /// Most commands applied in one transaction (group commit); 1 turns batching off.
    pub batch_size: usize,
    pub shutdown_timeout_secs: u64,
    /// How long a Ping++ event may wait for what it completes (a charge paid before its
    /// recharge recorded it) before it goes to the dead letters. It waits off the queue.
    pub event_wait_secs: u64,
    /// How long the stored results of reads (`wallet.get`, `orders.list`, ...) are kept, to
    /// replay a redelivery; older ones are removed and a read redelivered after that is
    /// answered afresh. 0 keeps them for ever. Money commands keep theirs for ever.
    pub read_retention_secs: u64,
    /// How long a refund of a recharge may stay pending before the worker asks Ping++ about it
    /// (a `recharge.retrieve` of its order); the wait doubles after each ask, up to a day.
    pub refund_pull_secs: u64,
    /// Seconds between the worker's looks at whether the last day that ended (UTC) has its
    /// Merkle root over the accounts' heads (`ledger_roots`), recording it if not; 0: never
    /// (`pluspay root` still records one).
    pub ledger_root_secs: u64,
    /// Whether the worker publishes `wallet.changed` for every version of a user's wallet and
    /// points account. Off, none goes out and the cursor stays where it is: turned on again,
    /// the events of the versions made meanwhile go out then. Each transfer's two events are
    /// two more messages through the worker and the broker; a platform that consumes none
    /// saves them.
    pub wallet_changed: bool,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    /// Larger bodies are refused with 413 (Ping++ events are a few KiB).
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers, and then its body (408).
    pub read_timeout_ms: u64,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// Seconds between the worker's ledger checks, each of what changed since the one before;
    /// 0: never.
    pub ledger_check_secs: u64,
    /// Seconds between the worker's full ledger checks (every row, as `pluspay audit`), which
    /// also see what the incremental one can't (changes made with the triggers disabled); 0:
    /// never.
    pub ledger_full_check_secs: u64,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PingppSettings {
    pub api_base: String,
    pub app_id: String,
    pub secret_key: String,
    /// A file holding `secret_key`.
    pub secret_key_file: Option<PathBuf>,
    /// Path to the merchant's PEM private key; empty: requests are not signed.
    pub private_key: Option<PathBuf>,
    /// Path to Ping++'s PEM public key, which signs webhooks.
    pub public_key: Option<PathBuf>,
    pub timeout_ms: u64,
    pub max_retries: u32,
    /// How `recharge` asks Ping++ for money: a plain charge, or a recharge object.
    pub recharge_mode: RechargeMode,
    /// The Ping++ user id of our user `{id}` (recharge-object mode and withdrawals).
    pub user_id_template: String,
    /// How an approved cash request is paid out: by hand, or by a Ping++ withdrawal.
    pub payout: PayoutMode,
    /// The channel of Ping++ withdrawals (`pingpp.payout = "withdrawals"`).
    pub withdrawal_channel: String,
    /// `extra[return_url]` of Ping++ withdrawals: where the user's cashier page returns to.
    /// Required when `pingpp.payout = "withdrawals"`.
    pub withdrawal_return_url: String,
    /// The Ping++ business user id of our user `{id}`'s sub-merchant (`merchant.create`).
    pub merchant_user_id_template: String,
    /// The server secret keying the fingerprints of commands that carry personal data (ID
    /// numbers, names, mobiles, card numbers), so the command log can't be brute-forced back
    /// to them. Required with `wallet.custody = "pingpp"`; at least 32 bytes; never changed
    /// (a redelivered command would no longer match its first delivery).
    pub fingerprint_key: String,
    /// A file holding `fingerprint_key`.
    pub fingerprint_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayoutMode {
    /// `cash.approve` moves the money to `paid_out`; someone pays the user by hand.
    #[default]
    Manual,
    /// `cash.approve` creates and confirms a Ping++ withdrawal; its webhook settles the cash.
    Withdrawals,
}

#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "snake_case")]
pub enum RechargeMode {
    /// `POST /v1/charges`.
    #[default]
    Charge,
    /// `POST /v1/apps/{app}/recharges`, with user fee or balance bonus.
    RechargeObject,
}

#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `pluspay=debug,lapin=warn`; RUST_LOG wins when set.
    pub filter: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "postgres://postgres@127.0.0.1:15432/pluspay".into(),
            url_file: None,
            password_file: None,
            pool_size: 16,
            pool_timeout_ms: 5_000,
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            url_file: None,
            urls: Vec::new(),
            urls_file: None,
            password_file: None,
            namespace: "pluspay".into(),
            prefetch: 512,
            delivery_limit: 20,
            quorum_group_size: 3,
            ca_file: None,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 4,
            pingpp_concurrency: 16,
            batch_size: 64,
            shutdown_timeout_secs: 30,
            event_wait_secs: 86_400,
            read_retention_secs: 86_400,
            refund_pull_secs: 600,
            ledger_root_secs: 600,
            wallet_changed: true,
        }
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            listen: ([127, 0, 0, 1], 8080).into(),
            max_body_bytes: 64 * 1024,
            read_timeout_ms: 10_000,
        }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: ([127, 0, 0, 1], 9187).into(),
            ledger_check_secs: 60,
            ledger_full_check_secs: 86_400,
        }
    }
}

impl Default for PingppSettings {
    fn default() -> Self {
        PingppSettings {
            api_base: "https://api.pingxx.com".into(),
            app_id: String::new(),
            secret_key: String::new(),
            secret_key_file: None,
            private_key: None,
            public_key: None,
            timeout_ms: 10_000,
            max_retries: 3,
            recharge_mode: RechargeMode::Charge,
            user_id_template: crate::domain::recharge_object::DEFAULT_USER_ID_TEMPLATE.into(),
            payout: PayoutMode::Manual,
            withdrawal_channel: crate::domain::cash::DEFAULT_WITHDRAWAL_CHANNEL.into(),
            withdrawal_return_url: String::new(),
            fingerprint_key: String::new(),
            fingerprint_key_file: None,
            merchant_user_id_template: DEFAULT_MERCHANT_USER_ID_TEMPLATE.into(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Human,
            filter: "info".into(),
        }
    }
}

/// Start-up refuses a bad setting with a message naming it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("bad setting: {0}")]
    Invalid(String),
}

const SECTIONS: [&str; 10] = [
    "database", "amqp", "worker", "webhook", "metrics", "pingpp", "wallet", "log", "security",
    "console",
];

impl Settings {
    /// Loads the settings. An explicitly named file must exist; the default one may be absent.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("PLUSPAY_"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        figment = figment.merge(env.map(|key| {
            // `database_url` -> `database.url`; a variable naming no section stays as it is and
            // is then refused as an unknown setting.
            let key = key.as_str().to_ascii_lowercase();
            match SECTIONS.iter().find(|s| {
                key.len() > s.len() && key.starts_with(*s) && key.as_bytes()[s.len()] == b'_'
            }) {
                Some(section) => format!("{section}.{}", &key[section.len() + 1..]).into(),
                None => key.into(),
            }
        }));
        Self::extract(figment)
    }

    /// The settings a config file with this content gives, without the environment: the same
    /// reading and checks as [`Settings::load`]. For tests and the fuzz targets.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml)),
        )
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_extract_error(e)))?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Replaces each secret whose `<key>_file` is set with the file's content, and puts the
    /// `password_file`s into their URLs; before `validate`, which then checks what was read.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let defaults = Settings::default();
        let (database, amqp, pingpp) = (&mut self.database, &mut self.amqp, &mut self.pingpp);
        for (key, value, default, file) in [
            (
                "database.url",
                &mut database.url,
                &defaults.database.url,
                &database.url_file,
            ),
            (
                "amqp.url",
                &mut amqp.url,
                &defaults.amqp.url,
                &amqp.url_file,
            ),
            (
                "pingpp.secret_key",
                &mut pingpp.secret_key,
                &defaults.pingpp.secret_key,
                &pingpp.secret_key_file,
            ),
            (
                "pingpp.fingerprint_key",
                &mut pingpp.fingerprint_key,
                &defaults.pingpp.fingerprint_key,
                &pingpp.fingerprint_key_file,
            ),
        ] {
            if let Some(path) = file {
                // A value left at its default (the shipped config file's) is not a conflict.
                if value != default {
                    return Err(both_set(key));
                }
                let text = read_secret_file(&format!("{key}_file"), path)?;
                // A URL never starts with a blank; a key or password might.
                *value = if key.ends_with("url") {
                    text.trim().to_owned()
                } else {
                    text
                };
            }
        }
        if let Some(path) = &amqp.urls_file {
            if !amqp.urls.is_empty() {
                return Err(both_set("amqp.urls"));
            }
            amqp.urls = read_secret_file("amqp.urls_file", path)?
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(path) = &database.password_file {
            let password = read_secret_file("database.password_file", path)?;
            database.url = with_database_password(&database.url, &password)
                .map_err(|why| password_misfit("database.url", why))?;
        }
        if let Some(path) = &amqp.password_file {
            let password = read_secret_file("amqp.password_file", path)?;
            let (key, urls) = if amqp.urls.is_empty() {
                ("amqp.url", std::slice::from_mut(&mut amqp.url))
            } else {
                ("amqp.urls", amqp.urls.as_mut_slice())
            };
            for url in urls {
                *url = with_password(url, &password).map_err(|why| password_misfit(key, why))?;
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let (database, _) = crate::db::tls::parse_url(&self.database.url).map_err(|e| {
            ConfigError::Invalid(format!(
                "{} {e}",
                named("database.url", &self.database.url_file)
            ))
        })?;
        // A connection tries the hosts in turn, each for `connect_timeout`: a first host that
        // does not answer at all must give up in time for the others to be tried within the
        // pool's wait, or no connection is ever made after it goes. (Without one, the pool
        // gives each host its share of the wait: `db::pool`.)
        let hosts = database.get_hosts().len();
        if let Some(each) = database.get_connect_timeout() {
            let pool_wait = Duration::from_millis(self.database.pool_timeout_ms);
            if hosts > 1 && *each * (hosts as u32 - 1) >= pool_wait {
                return Err(ConfigError::Invalid(format!(
                    "database.url names {hosts} hosts: {} x its connect_timeout must stay below \
                     database.pool_timeout_ms ({} ms), or a host that does not answer keeps \
                     the others from being tried",
                    hosts - 1,
                    self.database.pool_timeout_ms
                )));
            }
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size must be at least 1");
        }
        let is_amqp_url = |url: &str| {
            (url.starts_with("amqp://") || url.starts_with("amqps://"))
                && url.parse::<lapin::uri::AMQPUri>().is_ok()
        };
        if self.amqp.urls.is_empty() && !is_amqp_url(&self.amqp.url) {
            return Err(ConfigError::Invalid(format!(
                "{} is not an AMQP URL",
                named("amqp.url", &self.amqp.url_file)
            )));
        }
        if let Some(n) = self.amqp.urls.iter().position(|url| !is_amqp_url(url)) {
            return Err(ConfigError::Invalid(format!(
                "{}: entry {} is not an AMQP URL",
                named("amqp.urls", &self.amqp.urls_file),
                n + 1
            )));
        }
        if self.amqp.urls.len() > MAX_BROKER_URLS {
            return Err(ConfigError::Invalid(format!(
                "amqp.urls names more than {MAX_BROKER_URLS} brokers"
            )));
        }
        if self
            .security
            .operator_users
            .iter()
            .any(|user| user.is_empty() || user.len() > 255)
        {
            return invalid("security.operator_users: each is an AMQP user name, 1 to 255 bytes");
        }
        if self.amqp.quorum_group_size == 0 {
            return invalid("amqp.quorum_group_size must be at least 1");
        }
        if self.amqp.namespace.is_empty()
            || !self
                .amqp
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return invalid("amqp.namespace must be letters, digits, '.', '_' or '-'");
        }
        if self.amqp.prefetch == 0 {
            return invalid("amqp.prefetch must be at least 1");
        }
        if self.amqp.delivery_limit == 0 {
            return invalid("amqp.delivery_limit must be at least 1");
        }
        if self.worker.concurrency == 0 {
            return invalid("worker.concurrency must be at least 1");
        }
        if self.worker.pingpp_concurrency == 0 {
            return invalid("worker.pingpp_concurrency must be at least 1");
        }
        if self.worker.event_wait_secs == 0 {
            return invalid("worker.event_wait_secs must be at least 1");
        }
        if self.worker.refund_pull_secs == 0 {
            return invalid("worker.refund_pull_secs must be at least 1");
        }
        if self.worker.batch_size == 0 {
            return invalid("worker.batch_size must be at least 1 (1: no batching)");
        }
        if self.webhook.max_body_bytes == 0 {
            return invalid("webhook.max_body_bytes must be at least 1");
        }
        if self.webhook.read_timeout_ms == 0 {
            return invalid("webhook.read_timeout_ms must be at least 1");
        }
        if !(self.pingpp.api_base.starts_with("http://")
            || self.pingpp.api_base.starts_with("https://"))
        {
            return invalid("pingpp.api_base (PLUSPAY_PINGPP_API_BASE) must be an http(s) URL");
        }
        crate::domain::recharge_object::check_user_id_template(&self.pingpp.user_id_template)
            .map_err(|e| ConfigError::Invalid(format!("pingpp.user_id_template: {e}")))?;
        crate::domain::recharge_object::check_user_id_template(
            &self.pingpp.merchant_user_id_template,
        )
        .map_err(|e| ConfigError::Invalid(format!("pingpp.merchant_user_id_template: {e}")))?;
        if self.pingpp.merchant_user_id_template == self.pingpp.user_id_template {
            return invalid(
                "pingpp.merchant_user_id_template must differ from pingpp.user_id_template: a \
                 sub-merchant's business user is not the person's e-wallet user",
            );
        }
        crate::domain::cash::check_withdrawal_channel(&self.pingpp.withdrawal_channel)
            .map_err(|e| ConfigError::Invalid(format!("pingpp.withdrawal_channel: {e}")))?;
        if self.pingpp.payout == PayoutMode::Withdrawals
            || !self.pingpp.withdrawal_return_url.is_empty()
        {
            crate::domain::cash::check_return_url(&self.pingpp.withdrawal_return_url).map_err(
                |e| {
                    ConfigError::Invalid(format!(
                        "pingpp.withdrawal_return_url (needed by pingpp.payout = \"withdrawals\"): {e}"
                    ))
                },
            )?;
        }
        self.wallet.check().map_err(ConfigError::Invalid)?;
        self.console.check().map_err(ConfigError::Invalid)?;
        if self.wallet.custody == Custody::Pingpp
            && self.pingpp.fingerprint_key.len() < MIN_FINGERPRINT_KEY_BYTES
        {
            return Err(ConfigError::Invalid(format!(
                "{} must be a secret of at least 32 bytes with wallet.custody = \"pingpp\"",
                named("pingpp.fingerprint_key", &self.pingpp.fingerprint_key_file)
            )));
        }
        Ok(())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.worker.shutdown_timeout_secs)
    }
}

/// The environment variable of a setting: `database.url_file` -> `PLUSPAY_DATABASE_URL_FILE`.
fn variable(key: &str) -> String {
    format!("PLUSPAY_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// A setting as messages name it: with the file it was read from, or else its variable.
fn named(key: &str, file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => format!("{key} (read from {})", path.display()),
        None => format!("{key} ({})", variable(key)),
    }
}

fn both_set(key: &str) -> ConfigError {
    ConfigError::Invalid(format!(
        "{key} ({}) and {key}_file ({}) are both set: set one",
        variable(key),
        variable(&format!("{key}_file"))
    ))
}

fn password_misfit(key: &str, why: &str) -> ConfigError {
    let file = format!("{}.password_file", key.split('.').next().unwrap_or(key));
    ConfigError::Invalid(format!("{file} is set, but {key} {why}"))
}

/// Credentials are a line or a few; a file much larger is the wrong one (or `/dev/zero`).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// A secret file's text without its trailing whitespace (the newline an editor leaves). Errors
/// name the setting and the path, never the content.
fn read_secret_file(setting: &str, path: &Path) -> Result<String, ConfigError> {
    let fail = |why: String| {
        ConfigError::Invalid(format!(
            "{setting} ({}): {}: {why}",
            variable(setting),
            path.display()
        ))
    };
    if path.as_os_str().is_empty() {
        return Err(fail("names no file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(fail(format!(
            "larger than {MAX_SECRET_FILE_BYTES} bytes: not a credential"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("is not UTF-8 text".into()))?;
    let text = text.trim_end();
    if text.is_empty() {
        return Err(fail("is empty".into()));
    }
    Ok(text.to_owned())
}

/// `scheme://user@host...` with `password` put in as `scheme://user:password@host...`,
/// percent-encoded so that any character survives; or why it can't be.
fn with_password(url: &str, password: &str) -> Result<String, &'static str> {
    let start = url.find("://").ok_or("is not a URL")? + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let at = url[start..end]
        .rfind('@')
        .map(|i| start + i)
        .ok_or("names no user (scheme://USER@host/...) to give the password to")?;
    let user = &url[start..at];
    if user.contains(':') {
        return Err("has a password already: leave it out of the URL");
    }
    if user.is_empty() {
        return Err("names no user (scheme://USER@host/...) to give the password to");
    }
    Ok(format!(
        "{}{user}:{}{}",
        &url[..start],
        percent_encode(password),
        &url[at..]
    ))
}

/// As [`with_password`], for a PostgreSQL URL or `key=value` connection string.
fn with_database_password(url: &str, password: &str) -> Result<String, &'static str> {
    let config = crate::db::tls::parse_url(url);
    if config
        .as_ref()
        .is_ok_and(|(c, _)| c.get_password().is_some())
    {
        return Err("has a password already: leave it out");
    }
    if url.contains("://") {
        with_password(url, password)
    } else {
        // libpq's quoting: single quotes, with `\'` and `\\` inside.
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        Ok(format!("{url} password='{quoted}'"))
    }
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// Settings whose values are secrets, or may hold one (a URL's password).
const SECRET_SETTINGS: [&str; 5] = [
    "pingpp.secret_key",
    "pingpp.fingerprint_key",
    "database.url",
    "amqp.url",
    "amqp.urls",
];

/// figment's message for a setting it could not read, without the value when the setting is a
/// secret (figment's own message quotes what it found).
fn describe_extract_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let secret = SECRET_SETTINGS
                .iter()
                .any(|s| key == *s || key.strip_prefix(s).is_some_and(|r| r.starts_with('.')));
            if secret {
                let expected = match &e.kind {
                    figment::error::Kind::InvalidType(_, expected) => {
                        format!(": expected {expected}")
                    }
                    _ => String::new(),
                };
                format!("invalid value for {key}{expected} (not shown: it is a secret)")
            } else {
                e.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// Secrets never reach logs: Debug shows URLs without passwords and keys as set or not.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database.url", &redact_url(&self.database.url))
            .field("database.url_file", &self.database.url_file)
            .field("database.password_file", &self.database.password_file)
            .field("database.pool_size", &self.database.pool_size)
            .field("amqp.url", &redact_url(&self.amqp.url))
            .field("amqp.url_file", &self.amqp.url_file)
            .field(
                "amqp.urls",
                &self
                    .amqp
                    .urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("amqp.urls_file", &self.amqp.urls_file)
            .field("amqp.password_file", &self.amqp.password_file)
            .field("amqp.quorum_group_size", &self.amqp.quorum_group_size)
            .field("amqp.namespace", &self.amqp.namespace)
            .field("amqp.prefetch", &self.amqp.prefetch)
            .field("worker.concurrency", &self.worker.concurrency)
            .field("worker.pingpp_concurrency", &self.worker.pingpp_concurrency)
            .field("worker.batch_size", &self.worker.batch_size)
            .field("webhook.listen", &self.webhook.listen)
            .field("webhook.max_body_bytes", &self.webhook.max_body_bytes)
            .field("webhook.read_timeout_ms", &self.webhook.read_timeout_ms)
            .field("metrics.listen", &self.metrics.listen)
            .field("pingpp.api_base", &self.pingpp.api_base)
            .field("pingpp.app_id", &self.pingpp.app_id)
            .field(
                "pingpp.secret_key",
                &if self.pingpp.secret_key.is_empty() {
                    "<unset>"
                } else {
                    "<set>"
                },
            )
            .field("pingpp.secret_key_file", &self.pingpp.secret_key_file)
            .field("pingpp.public_key", &self.pingpp.public_key)
            .field(
                "pingpp.fingerprint_key",
                &if self.pingpp.fingerprint_key.is_empty() {
                    "<unset>"
                } else {
                    "<set>"
                },
            )
            .field(
                "pingpp.fingerprint_key_file",
                &self.pingpp.fingerprint_key_file,
            )
            .field("wallet", &self.wallet)
            .field("log", &self.log)
            .field("security", &self.security)
            .field("console", &self.console)
            .finish()
    }
}

// figment's Jail reports failures as a large error type; these tests only unwrap.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load(jail: &Jail, file: Option<&str>) -> Result<Settings, ConfigError> {
        let _ = jail;
        Settings::load_from(file.map(Path::new), Env::prefixed("PLUSPAY_"))
    }

    #[test]
    fn defaults_without_a_file() {
        Jail::expect_with(|jail| {
            let s = load(jail, None).unwrap();
            assert_eq!(s.amqp.namespace, "pluspay");
            assert_eq!(s.webhook.max_body_bytes, 65_536);
            assert_eq!(s.webhook.read_timeout_ms, 10_000);
            assert_eq!(s.worker.shutdown_timeout_secs, 30);
            Ok(())
        });
    }

    #[test]
    fn the_tls_settings_are_read_and_checked() {
        Jail::expect_with(|jail| {
            // `ca_file` is a path setting of its own, not the file of a secret `amqp.ca`.
            jail.set_env("PLUSPAY_AMQP_CA_FILE", "/etc/pluspay/mq-ca.pem");
            jail.set_env(
                "PLUSPAY_DATABASE_URL",
                "postgres://u@db.internal/p?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            );
            let s = load(jail, None).unwrap();
            assert_eq!(s.amqp.ca_file, Some("/etc/pluspay/mq-ca.pem".into()));
            jail.set_env(
                "PLUSPAY_DATABASE_URL",
                "postgres://u@db.internal/p?sslmode=strict",
            );
            let err = load(jail, None).unwrap_err().to_string();
            assert!(
                err.contains("database.url (PLUSPAY_DATABASE_URL) has sslmode=\"strict\""),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn operator_ids_bind_broker_users_from_the_file_or_the_environment() {
        Jail::expect_with(|jail| {
            let s = Settings::from_toml_str(
                "[security]\noperator_users = [\"ops\", \"console\"]\noperator_ids = { ops = [91], console = [92, 93] }\n",
            )
            .unwrap();
            assert_eq!(s.security.operator_ids["console"], vec![92, 93]);
            assert!(s.security.operators().is_ok());
            jail.set_env("PLUSPAY_SECURITY_OPERATOR_USERS", "[ops]");
            jail.set_env("PLUSPAY_SECURITY_OPERATOR_IDS", "{ops=[91]}");
            let s = load(jail, None).unwrap();
            assert_eq!(s.security.operator_ids["ops"], vec![91]);
            jail.set_env("PLUSPAY_SECURITY_OPERATOR_IDS", "{ops=[0]}");
            let err = load(jail, None).unwrap().security.operators().unwrap_err();
            assert!(err.to_string().contains("positive operator ids"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn console_operators_are_checked() {
        let hash = crate::console::auth::hash_password("pw").unwrap();
        let ok = format!(
            "[console]\nlisten = \"127.0.0.1:8090\"\noperators = [\n  {{ name = \"li\", user_id = 91, password_hash = \"{hash}\" }},\n  {{ name = \"wang\", user_id = 92, password_hash = \"{hash}\" }},\n]\n"
        );
        let s = Settings::from_toml_str(&ok).unwrap();
        assert_eq!(s.console.operators.len(), 2);
        assert!(s.console.secure_cookies);
        // Debug output names operators, never their hashes.
        assert!(!format!("{s:?}").contains(&hash), "{s:?}");
        let refused = |text: String, expected: &str| match Settings::from_toml_str(&text) {
            Err(ConfigError::Invalid(m)) => assert!(m.contains(expected), "{m}"),
            other => panic!("{text} gave {other:?}"),
        };
        refused(ok.replace("wang", "li"), "li is named twice");
        refused(ok.replace("92", "91"), "wang's user_id");
        refused(
            ok.replace(&hash, "plain-text"),
            "li's password_hash is not an argon2id hash",
        );
        refused(
            "[console]\nlisten = \"127.0.0.1:8090\"\n".into(),
            "console.operators names nobody",
        );
        refused(format!("{ok}session_idle_secs = 0\n"), "must be above 0");
    }

    #[test]
    fn text_is_read_as_a_file_is_without_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_AMQP_PREFETCH", "9");
            let s = Settings::from_toml_str("[amqp]\nprefetch = 7\n").unwrap();
            assert_eq!(s.amqp.prefetch, 7);
            assert_eq!(Settings::from_toml_str("").unwrap().amqp.prefetch, 512);
            assert!(matches!(
                Settings::from_toml_str("[amqp]\nprefetch = 0\n"),
                Err(ConfigError::Invalid(m)) if m.contains("amqp.prefetch")
            ));
            assert!(Settings::from_toml_str("[nope]\nx = 1\n").is_err());
            Ok(())
        });
    }

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "p.toml",
                "[database]\nurl = \"postgres://a@h/db\"\n[amqp]\nprefetch = 7\n",
            )?;
            jail.set_env("PLUSPAY_DATABASE_URL", "postgres://b@h/db");
            jail.set_env("PLUSPAY_PINGPP_API_BASE", "http://127.0.0.1:1");
            jail.set_env("PLUSPAY_WEBHOOK_LISTEN", "127.0.0.1:9999");
            jail.set_env("PLUSPAY_WEBHOOK_READ_TIMEOUT_MS", "2500");
            let s = load(jail, Some("p.toml")).unwrap();
            assert_eq!(s.webhook.read_timeout_ms, 2500);
            assert_eq!(s.database.url, "postgres://b@h/db");
            assert_eq!(s.amqp.prefetch, 7);
            assert_eq!(s.pingpp.api_base, "http://127.0.0.1:1");
            assert_eq!(s.webhook.listen.port(), 9999);
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_WALLET_CASH_TYPES", "[wechat]");
            jail.set_env("PLUSPAY_WALLET_RECHARGE_MAX", "500");
            let s = load(jail, None).unwrap();
            assert_eq!(s.wallet.cash_types, vec!["wechat".to_owned()]);
            assert_eq!(s.wallet.recharge_max, 500);
            jail.set_env("PLUSPAY_WALLET_RECHARGE_MAX", "1000000000001");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("wallet.recharge_max"), "{err}");
            jail.set_env("PLUSPAY_WALLET_RECHARGE_MAX", "1000000000000");
            assert!(load(jail, None).is_ok());
            jail.set_env("PLUSPAY_WALLET_RATIO", "0");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("wallet.ratio"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn several_database_hosts_and_their_connect_timeout() {
        Jail::expect_with(|jail| {
            let two = "postgres://u@h1:5432,h2:5432/pluspay?target_session_attrs=read-write";
            jail.set_env("PLUSPAY_DATABASE_URL", two);
            assert!(load(jail, None).is_ok(), "the pool gives each host a share");
            jail.set_env("PLUSPAY_DATABASE_URL", format!("{two}&connect_timeout=5"));
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("5000 ms"), "{err}");
            jail.set_env("PLUSPAY_DATABASE_URL", format!("{two}&connect_timeout=2"));
            let s = load(jail, None).unwrap();
            assert!(s.database.url.contains("h2:5432"));
            Ok(())
        });
    }

    #[test]
    fn a_list_of_brokers() {
        Jail::expect_with(|jail| {
            let s = load(jail, None).unwrap();
            assert_eq!(s.amqp.broker_urls(), vec![s.amqp.url.clone()]);
            jail.set_env(
                "PLUSPAY_AMQP_URLS",
                "[amqp://u:pw1@a:5672/%2f,amqps://u:pw1@b:5671/%2f]",
            );
            let s = load(jail, None).unwrap();
            assert_eq!(
                s.amqp.broker_urls(),
                vec!["amqp://u:pw1@a:5672/%2f", "amqps://u:pw1@b:5671/%2f"]
            );
            let shown = format!("{s:?}");
            assert!(
                shown.contains("amqps://u:***@b:5671") && !shown.contains("pw1"),
                "{shown}"
            );
            jail.set_env("PLUSPAY_AMQP_URLS", "[amqp://a:5672/%2f,http://pw1@b/]");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(
                err.contains("amqp.urls") && err.contains("entry 2"),
                "{err}"
            );
            assert!(!err.contains("pw1"), "{err}");
            jail.set_env("PLUSPAY_AMQP_URLS", "amqp://u:pw1@a:5672/%2f");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("amqp.urls") && !err.contains("pw1"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_settings_are_named() {
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_AMQP_PREFETCH", "many");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("amqp.prefetch"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_DATABSE_URL", "postgres://x@h/db");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("databse_url"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("p.toml", "[amqp]\nurl = \"http://nope\"\n")?;
            let err = load(jail, Some("p.toml")).unwrap_err().to_string();
            assert!(err.contains("amqp.url"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            for (variable, setting) in [
                ("PLUSPAY_WORKER_BATCH_SIZE", "worker.batch_size"),
                (
                    "PLUSPAY_WORKER_PINGPP_CONCURRENCY",
                    "worker.pingpp_concurrency",
                ),
            ] {
                jail.set_env(variable, "0");
                let err = load(jail, None).unwrap_err().to_string();
                assert!(err.contains(setting), "{err}");
                jail.set_env(variable, "1");
            }
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_WEBHOOK_READ_TIMEOUT_MS", "0");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("webhook.read_timeout_ms"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_PINGPP_PAYOUT", "withdrawals");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("pingpp.withdrawal_return_url"), "{err}");
            jail.set_env(
                "PLUSPAY_PINGPP_WITHDRAWAL_RETURN_URL",
                "https://example.com/cash",
            );
            let s = load(jail, None).unwrap();
            assert_eq!(s.pingpp.payout, PayoutMode::Withdrawals);
            assert_eq!(s.pingpp.withdrawal_channel, "yeepay");
            jail.set_env("PLUSPAY_PINGPP_WITHDRAWAL_CHANNEL", "yee pay");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("pingpp.withdrawal_channel"), "{err}");
            jail.set_env("PLUSPAY_PINGPP_WITHDRAWAL_CHANNEL", "yeepay");
            jail.set_env(
                "PLUSPAY_PINGPP_WITHDRAWAL_RETURN_URL",
                "javascript:alert(1)",
            );
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("pingpp.withdrawal_return_url"), "{err}");
            jail.set_env("PLUSPAY_PINGPP_PAYOUT", "bank");
            assert!(load(jail, None).is_err());
            Ok(())
        });
        Jail::expect_with(|jail| {
            let err = load(jail, Some("missing.toml")).unwrap_err().to_string();
            assert!(err.contains("missing.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut s = Settings::default();
        s.database.url = "postgres://u:hunter2@h/db".into();
        s.amqp.url = "amqp://u:s3cret@h/%2f".into();
        s.pingpp.secret_key = "sk_live_abc".into();
        let shown = format!("{s:?}");
        for secret in ["hunter2", "s3cret", "sk_live_abc"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(
            redact_url("amqp://guest:guest@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        s.database.url = "host=h password=hunter2".into();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn each_secret_can_come_from_a_file() {
        Jail::expect_with(|jail| {
            jail.create_file("database_url", "postgres://u:pw1@h/db\n\n")?;
            jail.create_file("amqp_url", "  amqp://u:pw2@h:5672/%2f\n")?;
            jail.create_file("secret_key", "sk_test_fromfile\n")?;
            jail.create_file("fingerprint_key", "fp-0123456789abcdef0123456789abcdef \n")?;
            jail.set_env("PLUSPAY_DATABASE_URL_FILE", "database_url");
            jail.set_env("PLUSPAY_AMQP_URL_FILE", "amqp_url");
            jail.set_env("PLUSPAY_PINGPP_SECRET_KEY_FILE", "secret_key");
            jail.set_env("PLUSPAY_PINGPP_FINGERPRINT_KEY_FILE", "fingerprint_key");
            jail.set_env("PLUSPAY_WALLET_CUSTODY", "pingpp");
            let s = load(jail, None).unwrap();
            assert_eq!(s.database.url, "postgres://u:pw1@h/db");
            assert_eq!(s.amqp.url, "amqp://u:pw2@h:5672/%2f");
            assert_eq!(s.pingpp.secret_key, "sk_test_fromfile");
            assert_eq!(
                s.pingpp.fingerprint_key,
                "fp-0123456789abcdef0123456789abcdef"
            );
            let shown = format!("{s:?}");
            for secret in ["pw1", "pw2", "sk_test_fromfile", "fp-0123"] {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(
                shown.contains("\"secret_key\""),
                "the path is shown: {shown}"
            );
            Ok(())
        });
        // In the config file, beside the shipped defaults (which are no conflict).
        Jail::expect_with(|jail| {
            jail.create_file("database_url", "postgres://u:pw1@h/db")?;
            jail.create_file(
                "p.toml",
                "[database]\nurl = \"postgres://postgres@127.0.0.1:15432/pluspay\"\n\
                 url_file = \"database_url\"\n",
            )?;
            let s = load(jail, Some("p.toml")).unwrap();
            assert_eq!(s.database.url, "postgres://u:pw1@h/db");
            Ok(())
        });
    }

    #[test]
    fn a_value_and_its_file_are_not_both_set() {
        Jail::expect_with(|jail| {
            jail.create_file("secret", "postgres://u:pw1@h/db\n")?;
            for (setting, variable, value) in [
                (
                    "database.url",
                    "PLUSPAY_DATABASE_URL",
                    "postgres://u:pw9@h/db",
                ),
                ("amqp.url", "PLUSPAY_AMQP_URL", "amqp://u:pw9@h/%2f"),
                ("amqp.urls", "PLUSPAY_AMQP_URLS", "[amqp://u:pw9@h/%2f]"),
                ("pingpp.secret_key", "PLUSPAY_PINGPP_SECRET_KEY", "sk_pw9"),
                (
                    "pingpp.fingerprint_key",
                    "PLUSPAY_PINGPP_FINGERPRINT_KEY",
                    "pw9-0123456789abcdef0123456789abcdef",
                ),
            ] {
                jail.set_env(variable, value);
                jail.set_env(format!("{variable}_FILE"), "secret");
                let err = load(jail, None).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("{setting} ({variable})"))
                        && err.contains(&format!("{setting}_file ({variable}_FILE)"))
                        && err.contains("both set"),
                    "{err}"
                );
                assert!(!err.contains("pw1") && !err.contains("pw9"), "{err}");
                jail.clear_env();
            }
            Ok(())
        });
    }

    #[test]
    fn a_missing_empty_or_bad_file_is_named_and_not_shown() {
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_PINGPP_SECRET_KEY_FILE", "/nonexistent/secret_key");
            let err = load(jail, None).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
            let err = err.to_string();
            assert!(
                err.contains("pingpp.secret_key_file (PLUSPAY_PINGPP_SECRET_KEY_FILE)")
                    && err.contains("/nonexistent/secret_key")
                    && err.contains("cannot read"),
                "{err}"
            );
            jail.create_file("empty", "\n  \n")?;
            jail.set_env("PLUSPAY_PINGPP_SECRET_KEY_FILE", "empty");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("empty: is empty"), "{err}");
            jail.set_env("PLUSPAY_PINGPP_SECRET_KEY_FILE", "");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("names no file"), "{err}");
            jail.set_env("PLUSPAY_PINGPP_SECRET_KEY_FILE", ".");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("pingpp.secret_key_file"), "{err}");
            jail.clear_env();
            // What a file holds is checked as the value would be, and not shown.
            jail.create_file("database_url", "hunter2-not-a-url\n")?;
            jail.set_env("PLUSPAY_DATABASE_URL_FILE", "database_url");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(
                err.contains("database.url (read from database_url) is not a PostgreSQL URL"),
                "{err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
            jail.clear_env();
            jail.create_file("short_key", "hunter2\n")?;
            jail.set_env("PLUSPAY_PINGPP_FINGERPRINT_KEY_FILE", "short_key");
            jail.set_env("PLUSPAY_WALLET_CUSTODY", "pingpp");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(
                err.contains("pingpp.fingerprint_key (read from short_key)")
                    && !err.contains("hunter2"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn urls_file_holds_one_url_a_line() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "amqp_urls",
                "\n  amqp://u:pw1@a:5672/%2f  \n\n\tamqps://u:pw1@b:5671/%2f\n\n",
            )?;
            jail.set_env("PLUSPAY_AMQP_URLS_FILE", "amqp_urls");
            let s = load(jail, None).unwrap();
            assert_eq!(
                s.amqp.broker_urls(),
                vec!["amqp://u:pw1@a:5672/%2f", "amqps://u:pw1@b:5671/%2f"]
            );
            assert!(!format!("{s:?}").contains("pw1"));
            jail.create_file("amqp_urls", "amqp://u:pw1@a:5672/%2f\nhttp://u:pw1@b/\n")?;
            let err = load(jail, None).unwrap_err().to_string();
            assert!(
                err.contains("amqp.urls (read from amqp_urls): entry 2") && !err.contains("pw1"),
                "{err}"
            );
            jail.create_file("amqp_urls", "\n \n")?;
            let err = load(jail, None).unwrap_err().to_string();
            assert!(
                err.contains("amqp.urls_file") && err.contains("is empty"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn password_files_go_into_the_urls() {
        // Every character a password may hold survives the URL.
        let password = "p@ss:w/rd%?#&= 'é\\";
        Jail::expect_with(|jail| {
            jail.create_file("password", &format!("{password}\n"))?;
            jail.create_file(
                "p.toml",
                "[database]\n\
                 url = \"postgres://pluspay@db1:5432,db2:5432/pluspay?target_session_attrs=read-write\"\n\
                 password_file = \"password\"\n\
                 [amqp]\n\
                 urls = [\"amqp://pluspay@mq1:5672/%2f\", \"amqps://pluspay@mq2:5671/vh\"]\n\
                 password_file = \"password\"\n",
            )?;
            let s = load(jail, Some("p.toml")).unwrap();
            let database: tokio_postgres::Config = s.database.url.parse().unwrap();
            assert_eq!(database.get_user(), Some("pluspay"));
            assert_eq!(database.get_password(), Some(password.as_bytes()));
            assert_eq!(database.get_hosts().len(), 2);
            for (url, host) in s.amqp.urls.iter().zip(["mq1", "mq2"]) {
                let uri: lapin::uri::AMQPUri = url.parse().unwrap();
                assert_eq!(uri.authority.userinfo.username, "pluspay");
                assert_eq!(uri.authority.userinfo.password, password);
                assert_eq!(uri.authority.host, host);
            }
            let shown = format!("{s:?}");
            assert!(
                !shown.contains("p%40ss") && !shown.contains("p@ss"),
                "{shown}"
            );

            // A key=value connection string, and amqp.url alone.
            jail.create_file(
                "p.toml",
                "[database]\nurl = \"host=db1 user=pluspay dbname=pluspay\"\n\
                 password_file = \"password\"\n\
                 [amqp]\nurl = \"amqp://pluspay@mq1:5672/%2f\"\npassword_file = \"password\"\n",
            )?;
            let s = load(jail, Some("p.toml")).unwrap();
            let database: tokio_postgres::Config = s.database.url.parse().unwrap();
            assert_eq!(database.get_password(), Some(password.as_bytes()));
            let uri: lapin::uri::AMQPUri = s.amqp.url.parse().unwrap();
            assert_eq!(uri.authority.userinfo.password, password);
            assert!(!format!("{s:?}").contains("p@ss"));

            // A URL with a password of its own (the default's guest:guest), or with no user.
            jail.create_file("p.toml", "[amqp]\npassword_file = \"password\"\n")?;
            let err = load(jail, Some("p.toml")).unwrap_err().to_string();
            assert!(
                err.contains("amqp.password_file is set, but amqp.url has a password already"),
                "{err}"
            );
            assert!(!err.contains("guest") && !err.contains("p@ss"), "{err}");
            jail.create_file(
                "p.toml",
                "[database]\nurl = \"postgres://db1/pluspay\"\npassword_file = \"password\"\n",
            )?;
            let err = load(jail, Some("p.toml")).unwrap_err().to_string();
            assert!(err.contains("database.url names no user"), "{err}");
            jail.create_file(
                "p.toml",
                "[database]\nurl = \"postgres://u:old@db1/pluspay\"\npassword_file = \"password\"\n",
            )?;
            let err = load(jail, Some("p.toml")).unwrap_err().to_string();
            assert!(
                err.contains("database.url has a password already") && !err.contains("old"),
                "{err}"
            );
            jail.create_file("empty", "")?;
            jail.create_file(
                "p.toml",
                "[database]\nurl = \"postgres://u@db1/pluspay\"\npassword_file = \"empty\"\n",
            )?;
            let err = load(jail, Some("p.toml")).unwrap_err().to_string();
            assert!(
                err.contains("database.password_file") && err.contains("is empty"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn secret_values_are_not_echoed_in_errors() {
        Jail::expect_with(|jail| {
            jail.set_env("PLUSPAY_PINGPP_SECRET_KEY", "1234567890");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("pingpp.secret_key"), "{err}");
            assert!(!err.contains("1234567890"), "{err}");
            jail.set_env("PLUSPAY_PINGPP_SECRET_KEY", "sk_test_x");
            jail.set_env("PLUSPAY_PINGPP_FINGERPRINT_KEY", "9876543210");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("pingpp.fingerprint_key"), "{err}");
            assert!(!err.contains("9876543210"), "{err}");
            jail.set_env("PLUSPAY_PINGPP_FINGERPRINT_KEY", "");
            jail.set_env("PLUSPAY_DATABASE_URL", "987654321");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(
                err.contains("database.url") && !err.contains("987654321"),
                "{err}"
            );
            // Other settings keep figment's full message.
            jail.set_env("PLUSPAY_DATABASE_URL", "postgres://u@h/db");
            jail.set_env("PLUSPAY_AMQP_PREFETCH", "many");
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains("many"), "{err}");
            Ok(())
        });
    }
}
