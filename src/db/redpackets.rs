//! Red packets and their shares (migrations/0017_redpackets.sql): made with their shares, locked
//! for a claim or the expiry, and the sweeper's queue of expired ones.

use std::collections::{HashMap, HashSet};

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

/// Locks these packets for the rest of the transaction, in id order, and returns those that
/// exist by id. Callers hold their senders' wallets first (see
/// src/engine/commands/redpacket.rs).
pub async fn lock_many(
    tx: &Transaction<'_>,
    ids: &[i64],
) -> Result<HashMap<i64, LockedPacket>, EngineError> {
    let sql = format!("SELECT {COLUMNS} FROM redpackets WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let rows = tx.query(&tx.prepare_cached(&sql).await?, &[&ids]).await?;
    rows.iter().map(|r| packet(r).map(|p| (p.id, p))).collect()
}

/// Locks a packet for the rest of the transaction (its sender's wallet held first).
pub async fn lock(tx: &Transaction<'_>, id: i64) -> Result<Option<LockedPacket>, EngineError> {
    Ok(lock_many(tx, &[id]).await?.remove(&id))
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

/// What a batch's claims need to know of locked packets: which of `claimers` hold a share of
/// which of the packets already, as (packet, claimer), and the amounts of the next shares, as
/// (packet, number): for each `(packet, claimed, wanted)`, shares `claimed + 1` to
/// `claimed + wanted` (those that exist).
pub async fn claims_lookup(
    tx: &Transaction<'_>,
    claimers: &[i64],
    next: &[(i64, i32, i32)],
) -> Result<(HashSet<(i64, i64)>, HashMap<(i64, i32), i64>), EngineError> {
    let packets: Vec<i64> = next.iter().map(|n| n.0).collect();
    let claimed: Vec<i32> = next.iter().map(|n| n.1).collect();
    let wanted: Vec<i32> = next.iter().map(|n| n.2).collect();
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT redpacket_id, claimer, NULL::int AS number, NULL::bigint AS amount
                 FROM redpacket_shares
                 WHERE redpacket_id = ANY($1) AND claimer = ANY($2)
                 UNION ALL
                 SELECT s.redpacket_id, NULL, s.number, s.amount
                 FROM unnest($1::bigint[], $3::int[], $4::int[]) AS n(p, claimed, wanted)
                 JOIN redpacket_shares s ON s.redpacket_id = n.p
                      AND s.number > n.claimed AND s.number <= n.claimed + n.wanted",
            )
            .await?,
            &[&packets, &claimers, &claimed, &wanted],
        )
        .await?;
    let mut holders = HashSet::new();
    let mut amounts = HashMap::new();
    for r in &rows {
        let packet: i64 = r.get(0);
        match r.get::<_, Option<i64>>(1) {
            Some(claimer) => {
                holders.insert((packet, claimer));
            }
            None => {
                amounts.insert((packet, r.get::<_, i32>(2)), r.get::<_, i64>(3));
            }
        }
    }
    Ok((holders, amounts))
}

/// Gives shares to their claimers, each `(packet, number, claimer, journal)`, the numbers of a
/// packet following on from what it had claimed, and counts them on their packets (finished
/// with the last share); returns the shares' JSON in the order given.
pub async fn record_claims(
    tx: &Transaction<'_>,
    claims: &[(i64, i32, i64, i64)],
) -> Result<Vec<Value>, EngineError> {
    let packets: Vec<i64> = claims.iter().map(|c| c.0).collect();
    let numbers: Vec<i32> = claims.iter().map(|c| c.1).collect();
    let claimers: Vec<i64> = claims.iter().map(|c| c.2).collect();
    let journal_ids: Vec<i64> = claims.iter().map(|c| c.3).collect();
    let distinct_packets = packets.iter().collect::<HashSet<_>>().len() as i64;
    let rows = tx
        .query(
            &tx.prepare_cached(
                "WITH s AS (
                    UPDATE redpacket_shares SET claimer = c.u, claimed_at = now(), journal_id = c.j
                    FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[])
                         AS c(p, n, u, j)
                    WHERE redpacket_id = c.p AND number = c.n AND claimer IS NULL
                    RETURNING redpacket_id, number, amount,
                              redpacket_share_json(redpacket_shares) AS json
                 ), by_packet AS (
                    SELECT redpacket_id, count(*)::int AS n, sum(amount)::bigint AS a,
                           max(number) AS last
                    FROM s GROUP BY redpacket_id
                 ), p AS (
                    UPDATE redpackets SET claimed = claimed + b.n,
                           claimed_amount = claimed_amount + b.a,
                           status = CASE WHEN claimed + b.n = count THEN 'finished' ELSE status END,
                           updated_at = now()
                    FROM by_packet b
                    WHERE id = b.redpacket_id AND status = 'open' AND claimed + b.n = b.last
                    RETURNING id
                 )
                 SELECT redpacket_id, number, json, (SELECT count(*) FROM p) FROM s",
            )
            .await?,
            &[&packets, &numbers, &claimers, &journal_ids],
        )
        .await?;
    let counted: i64 = rows.first().map_or(0, |r| r.get(3));
    if rows.len() != claims.len() || counted != distinct_packets {
        return Err(EngineError::Broken(format!(
            "{} of {} shares given, {counted} of {distinct_packets} packets counted: \
             the shares were not the next",
            rows.len(),
            claims.len()
        )));
    }
    let mut by_share: HashMap<(i64, i32), Value> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    claims
        .iter()
        .map(|(packet, number, _, _)| {
            by_share.remove(&(*packet, *number)).ok_or_else(|| {
                EngineError::Broken(format!(
                    "share {number} of red packet {packet} went missing"
                ))
            })
        })
        .collect()
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
