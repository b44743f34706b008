//! The periodic ledger checks behind `pluspay_ledger_ok`.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::db;
use crate::metrics;

#[derive(Debug, Clone, Copy)]
pub(super) enum LedgerCheck {
    /// What changed since the last check (`db::audit::run_incremental`): often and cheap.
    Incremental,
    /// Every row, as `pluspay audit`: rarely, for what the incremental check can't see.
    Full,
}

/// Keeps `pluspay_ledger_ok` current, so an alert fires without anyone running the audit.
pub(super) async fn check_ledger_periodically(
    pool: deadpool_postgres::Pool,
    scope: LedgerCheck,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    if let LedgerCheck::Full = scope {
        // The first tick is at once; the full check waits a period, not the start-up.
        ticks.tick().await;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        let mut client = match pool.get().await {
            Ok(client) => client,
            Err(e) => {
                warn!(error = %e, ?scope, "could not run the ledger check");
                continue;
            }
        };
        let report = match scope {
            LedgerCheck::Incremental => db::audit::run_incremental(&mut client)
                .await
                .map_err(|e| e.to_string()),
            LedgerCheck::Full => db::audit::run_and_note(&mut client)
                .await
                .map_err(|e| e.to_string()),
        };
        match report {
            Ok(report) => {
                let took = started.elapsed();
                if !report.ok {
                    error!(report = %serde_json::to_string(&report).unwrap_or_default(),
                           "the ledger check failed");
                }
                metrics::ledger_checked(&report, took);
                if let Err(e) = db::audit::record(&client, &report, took).await {
                    warn!(error = %e, "could not record the ledger check for the console");
                }
            }
            Err(e) => warn!(error = %e, ?scope, "could not run the ledger check"),
        }
    }
}
