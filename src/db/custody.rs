//! The custody a database keeps records for, pinned once.

use deadpool_postgres::Pool;

use crate::domain::custody::Custody;
use crate::error::EngineError;

/// Pins `custody` for a database that has none yet, and answers the one it keeps.
pub async fn pin(pool: &Pool, custody: Custody) -> Result<Custody, EngineError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO custody (mode) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&custody.as_str()],
        )
        .await?;
    let row = client.query_one("SELECT mode FROM custody", &[]).await?;
    let mode: &str = row.get(0);
    Custody::parse(mode).ok_or_else(|| EngineError::Broken(format!("custody mode {mode:?}")))
}
