//! The periodic ledger check behind `pluspay_ledger_ok`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::db;
use crate::metrics;

/// Keeps `pluspay_ledger_ok` current, so an alert fires without anyone running the audit.
pub(super) async fn check_ledger_periodically(
    pool: deadpool_postgres::Pool,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let report = match pool.get().await {
            Ok(mut client) => db::audit::run(&mut client).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match report {
            Ok(report) => {
                if !report.ok {
                    error!(report = %serde_json::to_string(&report).unwrap_or_default(),
                           "the ledger check failed");
                }
                metrics::ledger_checked(&report);
            }
            Err(e) => warn!(error = %e, "could not run the ledger check"),
        }
    }
}
