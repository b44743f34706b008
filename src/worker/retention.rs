//! Removing the stored results of old reads, so the command log grows with money commands
//! only.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::db;
use crate::metrics;

/// Rows removed per statement: a few milliseconds of work, locking only rows no command waits
/// on.
const BATCH: i64 = 1_000;

/// The pause between two full batches, so that removing a backlog leaves the database to the
/// traffic most of the time.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// How often to look again once nothing is left to remove.
const IDLE: Duration = Duration::from_secs(60);

pub(super) async fn remove_expired_reads(
    pool: deadpool_postgres::Pool,
    keep: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let pause = match pass(&pool, keep).await {
            Ok(removed) if removed >= BATCH as u64 => BETWEEN_BATCHES,
            Ok(_) => IDLE,
            Err(e) => {
                warn!(error = %e, "could not remove old read results");
                IDLE
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn pass(pool: &deadpool_postgres::Pool, keep: Duration) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let removed = db::commands::remove_expired_reads(&client, keep, BATCH)
        .await
        .map_err(|e| crate::error::EngineError::from(e).to_string())?;
    metrics::read_results_removed(removed);
    let oldest = db::commands::oldest_read_age(&client)
        .await
        .map_err(|e| crate::error::EngineError::from(e).to_string())?;
    metrics::oldest_read_result(oldest);
    // The daily limits' counts of days gone by: a few rows per limited user and day.
    db::limits::remove_old_usage(&client)
        .await
        .map_err(|e| crate::error::EngineError::from(e).to_string())?;
    Ok(removed)
}
