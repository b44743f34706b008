//! Holds (migrations/0016_holds.sql): their rows, locked for a decision, and the sweeper's
//! queue of expired ones.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::hold::{Closing, CreateRequest, HoldStatus, LockedHold};
use crate::error::EngineError;

/// Stores new open holds, each `(request, command id, journal id)`, and returns their ids and
/// JSON in the order given.
pub async fn insert_many(
    tx: &Transaction<'_>,
    holds: &[(&CreateRequest, &str, i64)],
) -> Result<Vec<(i64, Value)>, EngineError> {
    let users: Vec<i64> = holds.iter().map(|h| h.0.user).collect();
    let amounts: Vec<i64> = holds.iter().map(|h| h.0.amount).collect();
    let reasons: Vec<&str> = holds.iter().map(|h| h.0.reason.as_str()).collect();
    let expires_in: Vec<f64> = holds.iter().map(|h| h.0.expires_in as f64).collect();
    let command_ids: Vec<&str> = holds.iter().map(|h| h.1).collect();
    let journal_ids: Vec<i64> = holds.iter().map(|h| h.2).collect();
    let rows = tx
        .query(
            &tx.prepare_cached(
                "INSERT INTO holds (user_id, amount, reason, expires_at, command_id, journal_id)
                 SELECT u, a, r, now() + make_interval(secs => e), c, j
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::text[],
                             $6::bigint[]) WITH ORDINALITY AS h(u, a, r, e, c, j, n)
                 ORDER BY n
                 RETURNING id, hold_json(holds)",
            )
            .await?,
            &[
                &users,
                &amounts,
                &reasons,
                &expires_in,
                &command_ids,
                &journal_ids,
            ],
        )
        .await?;
    if rows.len() != holds.len() {
        return Err(EngineError::Broken(format!(
            "{} holds stored for {}",
            rows.len(),
            holds.len()
        )));
    }
    // Identity ids follow insertion order, which follows the holds given.
    let mut stored: Vec<(i64, Value)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    stored.sort_by_key(|(id, _)| *id);
    Ok(stored)
}

/// Locks these `(hold, owner)` holds for the rest of the transaction, in id order, and returns
/// those that exist by id; a hold named with somebody else as its owner is neither locked nor
/// returned. Callers hold the owners' wallets first, as every transaction that moves a hold's
/// money does, so that none waits on another in turn.
pub async fn lock_many(
    tx: &Transaction<'_>,
    named: &[(i64, i64)],
) -> Result<HashMap<i64, LockedHold>, EngineError> {
    let ids: Vec<i64> = named.iter().map(|n| n.0).collect();
    let owners: Vec<i64> = named.iter().map(|n| n.1).collect();
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT id, user_id, amount, status, reason, expires_at <= now() AS past_expiry
                 FROM holds
                 WHERE (id, user_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))
                 ORDER BY id FOR UPDATE",
            )
            .await?,
            &[&ids, &owners],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let status: &str = r.get("status");
            let hold = LockedHold {
                id: r.get("id"),
                user: r.get("user_id"),
                amount: r.get("amount"),
                status: HoldStatus::parse(status)
                    .ok_or_else(|| EngineError::Broken(format!("hold status {status:?}")))?,
                reason: r.get("reason"),
                past_expiry: r.get("past_expiry"),
            };
            Ok((hold.id, hold))
        })
        .collect()
}

/// Records how open holds closed, each `(hold, closing, closing journal)` (a hold at most once),
/// and returns their JSON in the order given.
pub async fn close_many(
    tx: &Transaction<'_>,
    closed: &[(i64, &Closing, i64)],
) -> Result<Vec<Value>, EngineError> {
    let ids: Vec<i64> = closed.iter().map(|c| c.0).collect();
    let statuses: Vec<&str> = closed.iter().map(|c| c.1.status.as_str()).collect();
    let captured: Vec<i64> = closed.iter().map(|c| c.1.captured).collect();
    let released: Vec<i64> = closed.iter().map(|c| c.1.released).collect();
    let receivers: Vec<Option<i64>> = closed.iter().map(|c| c.1.receiver).collect();
    let journal_ids: Vec<i64> = closed.iter().map(|c| c.2).collect();
    let rows = tx
        .query(
            &tx.prepare_cached(
                "UPDATE holds SET status = c.s, captured = c.c, released = c.r, receiver = c.v,
                        closed_journal_id = c.j, updated_at = now()
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                             $6::bigint[]) AS c(id, s, c, r, v, j)
                 WHERE holds.id = c.id AND holds.status = 'held'
                 RETURNING holds.id, hold_json(holds)",
            )
            .await?,
            &[
                &ids,
                &statuses,
                &captured,
                &released,
                &receivers,
                &journal_ids,
            ],
        )
        .await?;
    let mut by_id: HashMap<i64, Value> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    ids.iter()
        .map(|id| {
            by_id
                .remove(id)
                .ok_or_else(|| EngineError::Broken(format!("hold {id} was not open")))
        })
        .collect()
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
