//! Recording each day's Merkle root over the accounts' heads once the day has ended (UTC).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db;

/// Looks every `every` whether the last day that ended has its root, and records it if not.
/// With several workers, each looks and one records it (`db::chains::record_root`).
pub(super) async fn record_roots_periodically(
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
        if let Err(e) = record_due_root(&pool).await {
            warn!(error = %e, "could not record the ledger's daily root");
        }
    }
}

async fn record_due_root(pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let Some(day) = db::chains::day_to_record(&client).await? else {
        return Ok(());
    };
    if let Some(recorded) = db::chains::record_root(&mut client, &day).await? {
        info!(
            day = %recorded.day,
            root = %hex::encode(recorded.root),
            leaves = recorded.leaves,
            "recorded the ledger's daily root"
        );
    }
    Ok(())
}
