//! Holds (migrations/0016_holds.sql): their rows, locked for a decision, and the sweeper's
//! queue of expired ones.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::hold::{Closing, CreateRequest, HoldStatus, LockedHold};
use crate::error::EngineError;

/// Stores a new open hold and returns its id and JSON.
pub async fn insert(
    tx: &Transaction<'_>,
    request: &CreateRequest,
    command_id: &str,
    journal_id: i64,
) -> Result<(i64, Value), EngineError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO holds (user_id, amount, reason, expires_at, command_id, journal_id)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6)
                 RETURNING id, hold_json(holds)",
            )
            .await?,
            &[
                &request.user,
                &request.amount,
                &request.reason,
                &(request.expires_in as f64),
                &command_id,
                &journal_id,
            ],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Locks `owner`'s hold `id` for the rest of the transaction; `None` when `owner` has no such
/// hold (somebody else's is never locked). Callers hold the owner's wallet first, as every
/// transaction that moves the hold's money does, so that none waits on another in turn.
pub async fn lock(
    tx: &Transaction<'_>,
    id: i64,
    owner: i64,
) -> Result<Option<LockedHold>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, user_id, amount, status, reason, expires_at <= now() AS past_expiry
                 FROM holds WHERE id = $1 AND user_id = $2 FOR UPDATE",
            )
            .await?,
            &[&id, &owner],
        )
        .await?;
    row.map(|r| {
        let status: &str = r.get("status");
        Ok(LockedHold {
            id: r.get("id"),
            user: r.get("user_id"),
            amount: r.get("amount"),
            status: HoldStatus::parse(status)
                .ok_or_else(|| EngineError::Broken(format!("hold status {status:?}")))?,
            reason: r.get("reason"),
            past_expiry: r.get("past_expiry"),
        })
    })
    .transpose()
}

/// Records how an open hold closed.
pub async fn close(
    tx: &Transaction<'_>,
    id: i64,
    closing: &Closing,
    journal_id: i64,
) -> Result<(), EngineError> {
    let closed = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE holds SET status = $2, captured = $3, released = $4, receiver = $5,
                        closed_journal_id = $6, updated_at = now()
                 WHERE id = $1 AND status = 'held'",
            )
            .await?,
            &[
                &id,
                &closing.status.as_str(),
                &closing.captured,
                &closing.released,
                &closing.receiver,
                &journal_id,
            ],
        )
        .await?;
    if closed != 1 {
        return Err(EngineError::Broken(format!("hold {id} was not open")));
    }
    Ok(())
}

/// The hold in the contract's JSON shape.
pub async fn json(tx: &Transaction<'_>, id: i64) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT hold_json(h) FROM holds h WHERE id = $1")
                .await?,
            &[&id],
        )
        .await?
        .get(0))
}

/// Open holds whose expiry has come, oldest first: (hold, owner). Not locked: the sweeper locks
/// their owners' wallets first, then each hold, and looks at its status again.
pub async fn due(tx: &Transaction<'_>, limit: i64) -> Result<Vec<(i64, i64)>, EngineError> {
    Ok(tx
        .query(
            &tx.prepare_cached(
                "SELECT id, user_id FROM holds WHERE status = 'held' AND expires_at <= now()
                 ORDER BY expires_at, id LIMIT $1",
            )
            .await?,
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
