//! PostgreSQL, and all the SQL there is: the connection pool, migrations, the command log
//! (`commands`), the ledger's storage (`ledger`: wallets, journals, entries, orders), one module
//! per table of the commands that call Ping++ (`recharges`, `cash_payouts`, `cashes`,
//! `pingpp_events`, and with the money at Ping++ `accounts` and `deposits`), the pinned
//! `custody`, the reads (`orders`, `charge_records`), and the audit. No business rules: those
//! are in `domain`.

pub mod accounts;
pub mod allocations;
pub mod audit;
pub mod cash_payouts;
pub mod cashes;
pub mod charge_records;
pub mod commands;
pub mod custody;
pub mod deposits;
pub mod ledger;
pub mod merchants;
pub mod migrate;
pub mod orders;
pub mod pingpp_events;
pub mod purchases;
pub mod recharges;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::DatabaseSettings;
use crate::domain::cash::CashStatus;
use crate::domain::order::OrderState;
use crate::error::EngineError;

/// An order's stored state as the domain's; another number is a broken row.
pub(crate) fn order_state(code: i16) -> Result<OrderState, EngineError> {
    OrderState::from_code(code)
        .ok_or_else(|| EngineError::Broken(format!("an order with state {code}")))
}

/// A cash record's stored status as the domain's; another number is a broken row.
pub(crate) fn cash_status(code: i16) -> Result<CashStatus, EngineError> {
    CashStatus::from_code(code)
        .ok_or_else(|| EngineError::Broken(format!("a cash record with status {code}")))
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
            crate::error::EngineError::from(e)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}
