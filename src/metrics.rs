//! Prometheus metrics: every name and label in one place, so the dashboard, the alerts in
//! docs/OPERATIONS.md and the code agree. Served at `/metrics` on `metrics.listen`.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::domain::command::CommandType;

pub const COMMANDS: &str = "pluspay_commands_total";
pub const COMMAND_SECONDS: &str = "pluspay_command_duration_seconds";
pub const EVENTS: &str = "pluspay_pingpp_events_total";
pub const DB_RETRIES: &str = "pluspay_db_retries_total";
pub const BROKER_RECONNECTS: &str = "pluspay_broker_reconnects_total";
pub const BROKER_CONNECTED: &str = "pluspay_broker_connected";
pub const BROKER_FAILOVERS: &str = "pluspay_broker_failovers_total";
pub const DATABASE_SERVER: &str = "pluspay_database_server";
pub const DATABASE_PRIMARY_CHANGES: &str = "pluspay_database_primary_changes_total";
pub const IN_FLIGHT: &str = "pluspay_messages_in_flight";
pub const WEBHOOKS: &str = "pluspay_webhooks_total";
pub const PINGPP_REQUESTS: &str = "pluspay_pingpp_requests_total";
pub const PINGPP_SECONDS: &str = "pluspay_pingpp_request_duration_seconds";
pub const LEDGER_OK: &str = "pluspay_ledger_ok";
pub const LEDGER_VIOLATIONS: &str = "pluspay_ledger_violations";
pub const LEDGER_CHECKED: &str = "pluspay_ledger_last_check_timestamp_seconds";
pub const LEDGER_CHECK_SECONDS: &str = "pluspay_ledger_check_seconds";
pub const READ_RESULTS_REMOVED: &str = "pluspay_read_results_removed_total";
pub const OLDEST_READ_RESULT: &str = "pluspay_oldest_read_result_age_seconds";
pub const LATE_PAYMENTS: &str = "pluspay_late_payments_total";
pub const EVENTS_WAITING: &str = "pluspay_pingpp_events_waiting";
pub const OUTCOME_UNKNOWN: &str = "pluspay_pingpp_outcome_unknown_total";
pub const DEAD_LETTERS_HANDLED: &str = "pluspay_dead_letters_handled_total";
pub const EXPIRED: &str = "pluspay_expired_total";
pub const OUTBOX_PUBLISHED: &str = "pluspay_outbox_published_total";
pub const WALLET_CHANGED_PUBLISHED: &str = "pluspay_wallet_changed_published_total";
pub const WALLET_CHANGED_LAG_JOURNALS: &str = "pluspay_wallet_changed_lag_journals";
pub const WALLET_CHANGED_LAG_SECONDS: &str = "pluspay_wallet_changed_lag_seconds";

const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Starts the exporter's HTTP listener. Call once per process.
pub fn install(listen: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .install()
        .map_err(|e| anyhow::anyhow!("metrics.listen {listen}: {e}"))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(COMMANDS, "Commands handled, by type and outcome (succeeded, rejected, replayed, dead_lettered, retried).");
    describe_histogram!(
        COMMAND_SECONDS,
        Unit::Seconds,
        "Time from delivery to acknowledgement of a command, by type."
    );
    describe_counter!(EVENTS, "Ping++ events handled by the worker, by outcome.");
    describe_counter!(
        DB_RETRIES,
        "Attempts retried after a transient database or Ping++ failure."
    );
    describe_counter!(
        BROKER_RECONNECTS,
        "Broker sessions lost and re-established, by role."
    );
    describe_gauge!(
        BROKER_CONNECTED,
        "1 for the broker node (host:port of amqp.urls) each role is connected to, else 0."
    );
    describe_counter!(
        BROKER_FAILOVERS,
        "Broker connections made to another node than the one before, by role."
    );
    describe_gauge!(
        DATABASE_SERVER,
        "1 for the database server (address:port) new connections reach, else 0."
    );
    describe_counter!(
        DATABASE_PRIMARY_CHANGES,
        "Times new database connections reached another server than before (a failover)."
    );
    describe_gauge!(IN_FLIGHT, "Messages being processed right now.");
    describe_counter!(
        OUTCOME_UNKNOWN,
        "Times a command found that Ping++ may or may not have acted (a create refused as a repeat and not found) and went on waiting, by endpoint."
    );
    describe_gauge!(
        EVENTS_WAITING,
        "Ping++ events parked until what they complete is recorded."
    );
    describe_counter!(
        LATE_PAYMENTS,
        "Recharges paid after their order was marked failed, credited as late payments."
    );
    describe_counter!(WEBHOOKS, "Webhook requests, by outcome (accepted, bad_signature, malformed, broker_unavailable, ...).");
    describe_counter!(
        PINGPP_REQUESTS,
        "Ping++ API requests, by endpoint and outcome."
    );
    describe_histogram!(
        PINGPP_SECONDS,
        Unit::Seconds,
        "Ping++ API request latency, by endpoint."
    );
    describe_gauge!(
        LEDGER_OK,
        "1 when the last ledger check (incremental or full) passed, else 0."
    );
    describe_gauge!(
        LEDGER_VIOLATIONS,
        "Rows breaking each ledger invariant at the last check."
    );
    describe_counter!(
        READ_RESULTS_REMOVED,
        "Stored results of reads removed after worker.read_retention_secs."
    );
    describe_counter!(
        EXPIRED,
        "Holds and red packets closed by their expiry, the money given back to the owner."
    );
    describe_counter!(
        OUTBOX_PUBLISHED,
        "Events of the outbox (hold.expired, ...) published on the events exchange."
    );
    describe_counter!(
        WALLET_CHANGED_PUBLISHED,
        "wallet.changed events published on the events exchange (copies after a crash included)."
    );
    describe_gauge!(
        WALLET_CHANGED_LAG_JOURNALS,
        "Journals handed out beyond the wallet.changed cursor: those whose events are not published yet (ids of rolled-back transactions count too)."
    );
    describe_gauge!(
        WALLET_CHANGED_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest journal whose wallet.changed events are not published yet (0 when none)."
    );
    describe_gauge!(
        OLDEST_READ_RESULT,
        Unit::Seconds,
        "Age of the oldest stored result of a read: stays near worker.read_retention_secs \
         while removal keeps up."
    );
    describe_gauge!(
        LEDGER_CHECK_SECONDS,
        Unit::Seconds,
        "How long the last ledger check took, by scope (incremental, full)."
    );
    describe_gauge!(
        LEDGER_CHECKED,
        "Unix time of the last completed ledger check."
    );
    describe_counter!(
        DEAD_LETTERS_HANDLED,
        "Dead letters an operator took off the dead-letter queue, by action (replay, discard)."
    );
}

/// The `type` label of a command: its type when it is one of ours, else `unknown`. A type
/// read off the wire is never a label by itself, so garbage cannot make new series.
pub fn type_label(kind: Option<CommandType>) -> &'static str {
    kind.map_or("unknown", CommandType::as_str)
}

pub fn command_handled(kind: Option<CommandType>, outcome: &'static str) {
    counter!(COMMANDS, "type" => type_label(kind), "outcome" => outcome).increment(1);
}

pub fn command_duration(kind: CommandType, elapsed: Duration) {
    histogram!(COMMAND_SECONDS, "type" => kind.as_str()).record(elapsed.as_secs_f64());
}

pub fn event_handled(outcome: &'static str) {
    counter!(EVENTS, "outcome" => outcome).increment(1);
}

pub fn pingpp_outcome_unknown(endpoint: &'static str) {
    counter!(OUTCOME_UNKNOWN, "endpoint" => endpoint).increment(1);
}

pub fn events_waiting(count: i64) {
    gauge!(EVENTS_WAITING).set(count as f64);
}

/// A dead letter replayed or discarded (`action`: `replay` or `discard`).
pub fn dead_letter_handled(action: &'static str) {
    counter!(DEAD_LETTERS_HANDLED, "action" => action).increment(1);
}

pub fn late_payment() {
    counter!(LATE_PAYMENTS).increment(1);
}

pub fn retried() {
    counter!(DB_RETRIES).increment(1);
}

pub fn broker_reconnect(role: &'static str) {
    counter!(BROKER_RECONNECTS, "role" => role).increment(1);
}

/// `role` is now connected to broker `node`; `previous` is the node it was connected to before.
pub fn broker_connected(role: &'static str, node: &str, previous: Option<&str>) {
    if let Some(previous) = previous {
        if previous != node {
            gauge!(BROKER_CONNECTED, "role" => role, "node" => previous.to_owned()).set(0.0);
            counter!(BROKER_FAILOVERS, "role" => role).increment(1);
        }
    }
    gauge!(BROKER_CONNECTED, "role" => role, "node" => node.to_owned()).set(1.0);
}

/// `role` lost its connection to broker `node`.
pub fn broker_disconnected(role: &'static str, node: &str) {
    gauge!(BROKER_CONNECTED, "role" => role, "node" => node.to_owned()).set(0.0);
}

/// New database connections reach `server`, and before reached `previous`.
pub fn database_server(server: &str, previous: Option<&str>) {
    if let Some(previous) = previous {
        gauge!(DATABASE_SERVER, "server" => previous.to_owned()).set(0.0);
        counter!(DATABASE_PRIMARY_CHANGES).increment(1);
    }
    gauge!(DATABASE_SERVER, "server" => server.to_owned()).set(1.0);
}

pub fn in_flight(delta: f64) {
    gauge!(IN_FLIGHT).increment(delta);
}

pub fn webhook(outcome: &'static str) {
    counter!(WEBHOOKS, "outcome" => outcome).increment(1);
}

pub fn pingpp_request(endpoint: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(PINGPP_REQUESTS, "endpoint" => endpoint, "outcome" => outcome).increment(1);
    histogram!(PINGPP_SECONDS, "endpoint" => endpoint).record(elapsed.as_secs_f64());
}

pub fn ledger_checked(report: &crate::db::audit::Report, took: Duration) {
    gauge!(LEDGER_OK).set(if report.ok { 1.0 } else { 0.0 });
    gauge!(LEDGER_CHECK_SECONDS, "scope" => report.scope).set(took.as_secs_f64());
    for check in &report.checks {
        gauge!(LEDGER_VIOLATIONS, "check" => check.name).set(check.violations as f64);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(LEDGER_CHECKED).set(now);
}

pub fn read_results_removed(removed: u64) {
    counter!(READ_RESULTS_REMOVED).increment(removed);
}

pub fn expired(count: usize) {
    counter!(EXPIRED).increment(count as u64);
}

pub fn outbox_published(count: usize) {
    counter!(OUTBOX_PUBLISHED).increment(count as u64);
}

pub fn wallet_changed_published(count: usize) {
    counter!(WALLET_CHANGED_PUBLISHED).increment(count as u64);
}

/// How far `wallet.changed` is behind the ledger (`db::wallet_changed::lag`).
pub fn wallet_changed_lag(journals: i64, seconds: f64) {
    gauge!(WALLET_CHANGED_LAG_JOURNALS).set(journals as f64);
    gauge!(WALLET_CHANGED_LAG_SECONDS).set(seconds);
}

pub fn oldest_read_result(age: Duration) {
    gauge!(OLDEST_READ_RESULT).set(age.as_secs_f64());
}

/// A guard counting one message in flight for as long as it lives.
pub struct InFlight;

impl InFlight {
    pub fn start() -> Self {
        in_flight(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight(-1.0);
    }
}
