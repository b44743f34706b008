//! Red packets and their shares (migrations/0017_redpackets.sql): made with their shares, locked
//! for a claim or the expiry, and the sweeper's queue of expired ones.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::redpacket::{CreateRequest, LockedPacket, PacketStatus};
use crate::error::EngineError;

/// Stores a new open packet with its shares (in claim order) and returns its id.
pub async fn insert(
    tx: &Transaction<'_>,
    request: &CreateRequest,
    shares: &[i64],
    command_id: &str,
    journal_id: i64,
) -> Result<i64, EngineError> {
    let id: i64 = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO redpackets
                     (user_id, total, count, mode, users, expires_at, command_id, journal_id)
                 VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, $8)
                 RETURNING id",
            )
            .await?,
            &[
                &request.user,
                &request.total,
                &request.count,
                &request.mode.as_str(),
                &request.users,
                &(request.expires_in as f64),
                &command_id,
                &journal_id,
            ],
        )
        .await?
        .get(0);
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO redpacket_shares (redpacket_id, number, amount)
             SELECT $1, n, a FROM unnest($2::bigint[]) WITH ORDINALITY AS u(a, n)",
        )
        .await?,
        &[&id, &shares],
    )
    .await?;
    Ok(id)
}

/// The senders of these packets (those that exist), unlocked: a packet's sender never changes,
/// so the batch may lock their wallets before it decides the claims.
pub async fn senders(tx: &Transaction<'_>, ids: &[i64]) -> Result<Vec<i64>, EngineError> {
    Ok(tx
        .query(
            &tx.prepare_cached("SELECT DISTINCT user_id FROM redpackets WHERE id = ANY($1)")
                .await?,
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

const COLUMNS: &str = "id, user_id, total, count, claimed, claimed_amount, status, users,
                       expires_at <= now() AS past_expiry";

/// Locks a packet for the rest of the transaction. Callers hold its sender's wallet first (see
/// src/engine/commands/redpacket.rs).
pub async fn lock(tx: &Transaction<'_>, id: i64) -> Result<Option<LockedPacket>, EngineError> {
    let sql = format!("SELECT {COLUMNS} FROM redpackets WHERE id = $1 FOR UPDATE");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&id])
        .await?;
    row.map(|r| packet(&r)).transpose()
}

/// A packet as it is now, unlocked: for `redpacket.get`.
pub async fn read(tx: &Transaction<'_>, id: i64) -> Result<Option<LockedPacket>, EngineError> {
    let sql = format!("SELECT {COLUMNS} FROM redpackets WHERE id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&id])
        .await?;
    row.map(|r| packet(&r)).transpose()
}

fn packet(r: &tokio_postgres::Row) -> Result<LockedPacket, EngineError> {
    let status: &str = r.get("status");
    Ok(LockedPacket {
        id: r.get("id"),
        user: r.get("user_id"),
        total: r.get("total"),
        count: r.get("count"),
        claimed: r.get("claimed"),
        claimed_amount: r.get("claimed_amount"),
        status: PacketStatus::parse(status)
            .ok_or_else(|| EngineError::Broken(format!("red packet status {status:?}")))?,
        users: r.get("users"),
        past_expiry: r.get("past_expiry"),
    })
}

/// Whether `user` holds a share of the packet already, and the amount of share `number` (none
/// past the last).
pub async fn claim_lookup(
    tx: &Transaction<'_>,
    id: i64,
    user: i64,
    number: i32,
) -> Result<(bool, Option<i64>), EngineError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM redpacket_shares
                                WHERE redpacket_id = $1 AND claimer = $2),
                        (SELECT amount FROM redpacket_shares
                         WHERE redpacket_id = $1 AND number = $3)",
            )
            .await?,
            &[&id, &user, &number],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Gives share `number` to `claimer` and counts it on the packet (finished with its last
/// share); returns the share's JSON.
pub async fn record_claim(
    tx: &Transaction<'_>,
    id: i64,
    number: i32,
    claimer: i64,
    journal_id: i64,
) -> Result<Value, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "WITH s AS (
                    UPDATE redpacket_shares SET claimer = $3, claimed_at = now(), journal_id = $4
                    WHERE redpacket_id = $1 AND number = $2 AND claimer IS NULL
                    RETURNING amount, redpacket_share_json(redpacket_shares) AS json
                 ), p AS (
                    UPDATE redpackets SET claimed = claimed + 1,
                           claimed_amount = claimed_amount + (SELECT amount FROM s),
                           status = CASE WHEN claimed + 1 = count THEN 'finished' ELSE status END,
                           updated_at = now()
                    WHERE id = $1 AND status = 'open' AND claimed + 1 = $2
                      AND EXISTS (SELECT 1 FROM s)
                    RETURNING id
                 )
                 SELECT s.json FROM s, p",
            )
            .await?,
            &[&id, &number, &claimer, &journal_id],
        )
        .await?;
    row.map(|r| r.get(0)).ok_or_else(|| {
        EngineError::Broken(format!(
            "share {number} of red packet {id} was not the next"
        ))
    })
}

/// Records that the expiry gave `refunded` back to the sender.
pub async fn record_refund(
    tx: &Transaction<'_>,
    id: i64,
    refunded: i64,
    journal_id: i64,
) -> Result<(), EngineError> {
    let closed = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE redpackets SET status = 'expired', refunded = $2, refund_journal_id = $3,
                        updated_at = now()
                 WHERE id = $1 AND status = 'open'",
            )
            .await?,
            &[&id, &refunded, &journal_id],
        )
        .await?;
    if closed != 1 {
        return Err(EngineError::Broken(format!("red packet {id} was not open")));
    }
    Ok(())
}

/// The packet in the contract's JSON shape.
pub async fn json(tx: &Transaction<'_>, id: i64) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT redpacket_json(p) FROM redpackets p WHERE id = $1")
                .await?,
            &[&id],
        )
        .await?
        .get(0))
}

/// The packet in the contract's JSON shape and its claimed shares in claim order, read in one
/// statement so that the two agree.
pub async fn json_with_claims(
    tx: &Transaction<'_>,
    id: i64,
) -> Result<(Value, Value), EngineError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT redpacket_json(p),
                        coalesce((SELECT json_agg(redpacket_share_json(s) ORDER BY s.number)
                                  FROM redpacket_shares s
                                  WHERE s.redpacket_id = p.id AND s.claimer IS NOT NULL),
                                 '[]'::json)
                 FROM redpackets p WHERE p.id = $1",
            )
            .await?,
            &[&id],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Open packets whose expiry has come, oldest first: (packet, sender). Not locked: the sweeper
/// locks their senders' wallets first, then each packet, and looks at its status again.
pub async fn due(tx: &Transaction<'_>, limit: i64) -> Result<Vec<(i64, i64)>, EngineError> {
    Ok(tx
        .query(
            &tx.prepare_cached(
                "SELECT id, user_id FROM redpackets WHERE status = 'open' AND expires_at <= now()
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
