//! PostgreSQL, and all the SQL there is: the connection pool, migrations, the command log
//! (`commands`), the ledger's storage (`ledger`: wallets, journals, entries, orders), one module
//! per table of the commands that call Ping++ (`recharges`, `cash_payouts`, `cashes`,
//! `pingpp_events`), the reads (`orders`), and the audit. No business rules: those are in
//! `domain`.

pub mod audit;
pub mod cash_payouts;
pub mod cashes;
pub mod commands;
pub mod ledger;
pub mod migrate;
pub mod orders;
pub mod pingpp_events;
pub mod recharges;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::config::DatabaseSettings;

/// A database failure, split by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Not the command's fault and likely to pass: serialization failures, deadlocks, lost
    /// connections, a full pool. Retried; never turned into a rejection.
    #[error("transient database error: {0}")]
    Transient(String),
    /// Anything else: a bug or a broken schema. The command is not acknowledged.
    #[error("database error: {0}")]
    Fatal(String),
}

impl DbError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Transient(_))
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        // tokio-postgres says only "db error"; the server's code and message say what happened.
        let text = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        if is_transient(&e) {
            DbError::Transient(text)
        } else {
            DbError::Fatal(text)
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) | PoolError::Closed => DbError::Transient(e.to_string()),
            other => DbError::Fatal(other.to_string()),
        }
    }
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let class = &code.code()[..2];
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::TOO_MANY_CONNECTIONS
                // 08: connection exception; 57P0x: the server shutting down or starting up.
                || class == "08"
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // No SQLSTATE: the connection itself failed (closed, I/O, refused).
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|_| anyhow::anyhow!("database.url is not a PostgreSQL URL"))?;
    // `Fast` recycling only checks that the socket is open; a connection that died anyway fails
    // its first query with a transient error, and that attempt is retried.
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Duration::from_millis(settings.pool_timeout_ms);
    Ok(Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// Connects once, outside the pool, for one-off commands (`migrate`, `audit`).
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to the database at {}: {}",
            crate::config::redact_url(url),
            DbError::from(e)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}
