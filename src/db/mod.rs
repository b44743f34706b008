//! PostgreSQL, and all the SQL there is: the connection pool, migrations, the command log
//! (`commands`), the ledger's storage (`ledger`: wallets, journals, entries, orders), one module
//! per table of the commands that call Ping++ (`recharges`, `cash_payouts`, `cashes`,
//! `pingpp_events`, and with the money at Ping++ `accounts` and `deposits`), the pinned
//! `custody`, the record of discarded dead letters (`dead_letters`), the reads (`orders`,
//! `charge_records`), the audit, and the accounts' hash chains and daily roots (`chains`). No business rules: those are in `domain`.

pub mod accounts;
pub mod allocations;
pub mod audit;
pub mod cash_payouts;
pub mod cashes;
pub mod chains;
pub mod charge_records;
pub mod commands;
pub mod console;
pub mod custody;
pub mod dead_letters;
pub mod deposits;
pub mod history;
pub mod holds;
pub mod ledger;
pub mod limits;
pub mod merchants;
pub mod migrate;
pub mod orders;
pub mod outbox;
pub mod pingpp_events;
pub mod purchases;
pub mod recharges;
pub mod redpackets;
pub mod refunds;
pub mod tls;
pub mod wallet_changed;

use std::time::Duration;

use std::sync::Mutex;

use deadpool_postgres::Hook;
use deadpool_postgres::{HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

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

/// The connection settings of `url` and its TLS options (`tls`). With several hosts and no
/// `connect_timeout`, each host gets its share of `wait`: a host that does not answer at all
/// must not keep the others from being tried.
fn database_config(
    url: &str,
    wait: Duration,
) -> anyhow::Result<(tokio_postgres::Config, tls::TlsOptions)> {
    let (mut config, tls) = tls::parse_url(url).map_err(|e| anyhow::anyhow!("database.url {e}"))?;
    let hosts = config.get_hosts().len();
    if hosts > 1 && config.get_connect_timeout().is_none() {
        config.connect_timeout(wait / hosts as u32);
    }
    Ok((config, tls))
}

pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let (config, tls) = database_config(
        &settings.url,
        Duration::from_millis(settings.pool_timeout_ms),
    )?;
    let unchecked = tls::remote_hosts(&config);
    if !unchecked.is_empty() && !tls.checks_host() {
        tracing::warn!(
            hosts = %unchecked.join(","),
            "database.url reaches the database over the network without checking its \
             certificate: add sslmode=verify-full (and sslrootcert for a private CA)"
        );
    }
    // `Fast` recycling only checks that the socket is open; a connection that died anyway fails
    // its first query with a transient error, and that attempt is retried.
    let manager = Manager::from_config(
        config,
        tls::connector(&tls)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Duration::from_millis(settings.pool_timeout_ms);
    Ok(Pool::builder(manager)
        .post_create(Hook::async_fn(move |client, _| {
            Box::pin(async move {
                match tokio::time::timeout(timeout, note_server(client)).await {
                    Ok(noted) => noted.map_err(HookError::Backend),
                    Err(_) => Err(HookError::Message(
                        "a new connection did not answer which server it reached".into(),
                    )),
                }
            })
        }))
        .max_size(settings.pool_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// The server the pool's last new connection reached, as `address:port`.
static LAST_SERVER: Mutex<Option<String>> = Mutex::new(None);

/// Notes which server a new connection reached. With several hosts in `database.url` and
/// `target_session_attrs=read-write` that is the primary, so a change is a failover: logged
/// and counted (`pluspay_database_primary_changes_total`).
async fn note_server(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let messages = client
        .simple_query(
            "SELECT coalesce(host(inet_server_addr()), 'local') || ':' || current_setting('port')",
        )
        .await?;
    let Some(server) = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    }) else {
        return Ok(());
    };
    let mut last = LAST_SERVER.lock().unwrap_or_else(|p| p.into_inner());
    if last.as_deref() == Some(server.as_str()) {
        return Ok(());
    }
    match last.as_deref() {
        Some(previous) => tracing::warn!(%server, %previous, "the database primary changed"),
        None => tracing::info!(%server, "connected to the database"),
    }
    crate::metrics::database_server(&server, last.as_deref());
    *last = Some(server);
    Ok(())
}

/// How long a one-off connection tries all the hosts of a URL without `connect_timeout`.
const ONE_OFF_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Connects once, outside the pool, for one-off commands (`migrate`, `audit`).
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (config, tls) = database_config(url, ONE_OFF_CONNECT_WAIT)?;
    let (client, connection) = config.connect(tls::connector(&tls)?).await.map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_hosts_share_the_wait_unless_a_connect_timeout_is_given() {
        let wait = Duration::from_secs(5);
        let two = "postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write";
        let (shared, _) = database_config(two, wait).unwrap();
        assert_eq!(
            shared.get_connect_timeout(),
            Some(&Duration::from_millis(2_500))
        );
        let (given, _) = database_config(&format!("{two}&connect_timeout=1"), wait).unwrap();
        assert_eq!(given.get_connect_timeout(), Some(&Duration::from_secs(1)));
        let (one, _) = database_config("postgres://u@h1:5432/db", wait).unwrap();
        assert_eq!(one.get_connect_timeout(), None);
    }
}
