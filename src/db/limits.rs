//! Frozen wallets, users' own daily limits and the day's usage (migrations/0019). Every write
//! here happens under the user's wallet lock, which the caller holds.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::command::CommandType;
use crate::domain::limits::{limitable, DailyLimit, Usage};
use crate::error::EngineError;

/// Freezes or unfreezes a locked wallet (creating it empty if it never existed) and records
/// who did it and why; returns the wallet's state as `wallet.freeze` answers it.
pub async fn set_frozen(
    tx: &Transaction<'_>,
    user: i64,
    frozen: bool,
    reason: &str,
    operator: i64,
    command_id: &str,
) -> Result<Value, EngineError> {
    let updated = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE accounts SET frozen = $2 WHERE kind = 'wallet' AND user_id = $1",
            )
            .await?,
            &[&user, &frozen],
        )
        .await?;
    if updated != 1 {
        return Err(EngineError::Broken(format!(
            "the wallet of user {user} was not locked"
        )));
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO wallet_freezes (user_id, frozen, reason, operator_id, command_id)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?,
        &[&user, &frozen, &reason, &operator, &command_id],
    )
    .await?;
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT json_build_object(
                    'user_id', a.user_id, 'frozen', a.frozen, 'balance', a.balance,
                    'reason', f.reason, 'operator_id', f.operator_id,
                    'updated_at', to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))
                 FROM accounts a
                 JOIN LATERAL (SELECT * FROM wallet_freezes WHERE user_id = a.user_id
                               ORDER BY id DESC LIMIT 1) f ON true
                 WHERE a.kind = 'wallet' AND a.user_id = $1",
            )
            .await?,
            &[&user],
        )
        .await?
        .get(0))
}

/// Sets (or, with no limit of either kind, removes) a user's own daily limit on a type.
pub async fn set_own_limit(
    tx: &Transaction<'_>,
    user: i64,
    kind: CommandType,
    limit: &DailyLimit,
    operator: i64,
) -> Result<(), EngineError> {
    if limit.is_none() {
        tx.execute(
            &tx.prepare_cached("DELETE FROM wallet_limits WHERE user_id = $1 AND type = $2")
                .await?,
            &[&user, &kind.as_str()],
        )
        .await?;
        return Ok(());
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO wallet_limits (user_id, type, daily_count, daily_amount, operator_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, type) DO UPDATE SET daily_count = excluded.daily_count,
                 daily_amount = excluded.daily_amount, operator_id = excluded.operator_id,
                 updated_at = now()",
        )
        .await?,
        &[
            &user,
            &kind.as_str(),
            &limit.daily_count,
            &limit.daily_amount,
            &operator,
        ],
    )
    .await?;
    Ok(())
}

/// The users' own limits, by (user, type).
pub async fn own_limits(
    tx: &Transaction<'_>,
    users: &[i64],
) -> Result<HashMap<(i64, String), DailyLimit>, EngineError> {
    Ok(tx
        .query(
            &tx.prepare_cached(
                "SELECT user_id, type, daily_count, daily_amount FROM wallet_limits
                 WHERE user_id = ANY($1)",
            )
            .await?,
            &[&users],
        )
        .await?
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                DailyLimit {
                    daily_count: r.get(2),
                    daily_amount: r.get(3),
                },
            )
        })
        .collect())
}

/// Today's usage of each (user, type), the day beginning at midnight `offset_hours` east of
/// UTC. A pair without a row yet is counted from the user's orders of the day (once: the
/// caller records its usage from then on).
pub async fn usage_today(
    tx: &Transaction<'_>,
    pairs: &[(i64, CommandType)],
    offset_hours: i32,
) -> Result<HashMap<(i64, CommandType), Usage>, EngineError> {
    let users: Vec<i64> = pairs.iter().map(|p| p.0).collect();
    let types: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let targets: Vec<&str> = pairs
        .iter()
        .map(|p| limitable(p.1).map_or("", |(target, _)| target))
        .collect();
    let rows = tx
        .query(
            &tx.prepare_cached(
                "WITH day AS (
                    SELECT ((now() AT TIME ZONE 'UTC') + make_interval(hours => $4))::date AS d
                 )
                 SELECT p.u, p.t, coalesce(du.count, o.count, 0), coalesce(du.amount, o.amount, 0)
                 FROM unnest($1::bigint[], $2::text[], $3::text[]) AS p(u, t, target)
                 CROSS JOIN day
                 LEFT JOIN daily_usage du ON du.user_id = p.u AND du.type = p.t AND du.day = day.d
                 LEFT JOIN LATERAL (
                    SELECT count(*) AS count, coalesce(sum(amount), 0)::bigint AS amount
                    FROM wallet_orders w
                    WHERE du.user_id IS NULL AND w.owner_id = p.u AND w.target_type = p.target
                      AND w.type = -1
                      AND w.created_at >= (day.d::timestamp - make_interval(hours => $4))
                                              AT TIME ZONE 'UTC'
                 ) o ON true",
            )
            .await?,
            &[&users, &types, &targets, &offset_hours],
        )
        .await?;
    let mut usage = HashMap::new();
    for row in rows {
        let name: &str = row.get(1);
        let kind = CommandType::parse(name)
            .ok_or_else(|| EngineError::Broken(format!("usage of {name:?}")))?;
        usage.insert(
            (row.get::<_, i64>(0), kind),
            Usage {
                count: row.get(2),
                amount: row.get(3),
            },
        );
    }
    Ok(usage)
}

/// Records today's usage of each (user, type) as it now stands.
pub async fn record_usage(
    tx: &Transaction<'_>,
    usage: &[((i64, CommandType), Usage)],
    offset_hours: i32,
) -> Result<(), EngineError> {
    if usage.is_empty() {
        return Ok(());
    }
    let users: Vec<i64> = usage.iter().map(|((u, _), _)| *u).collect();
    let types: Vec<&str> = usage.iter().map(|((_, t), _)| t.as_str()).collect();
    let counts: Vec<i64> = usage.iter().map(|(_, u)| u.count).collect();
    let amounts: Vec<i64> = usage.iter().map(|(_, u)| u.amount).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO daily_usage (user_id, type, day, count, amount)
             SELECT u, t, ((now() AT TIME ZONE 'UTC') + make_interval(hours => $5))::date, c, a
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS x(u, t, c, a)
             ON CONFLICT (user_id, type, day) DO UPDATE
                 SET count = excluded.count, amount = excluded.amount",
        )
        .await?,
        &[&users, &types, &counts, &amounts, &offset_hours],
    )
    .await?;
    Ok(())
}

/// Forgets what was counted of a user's type today: the next limited command counts it afresh
/// from the day's orders.
pub async fn forget_usage_today(
    tx: &Transaction<'_>,
    user: i64,
    kind: CommandType,
    offset_hours: i32,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "DELETE FROM daily_usage WHERE user_id = $1 AND type = $2
               AND day = ((now() AT TIME ZONE 'UTC') + make_interval(hours => $3))::date",
        )
        .await?,
        &[&user, &kind.as_str(), &offset_hours],
    )
    .await?;
    Ok(())
}

/// Removes the usage of days before yesterday, which no limit reads any more.
pub async fn remove_old_usage(
    client: &tokio_postgres::Client,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM daily_usage WHERE day < (now() AT TIME ZONE 'UTC')::date - 1",
            &[],
        )
        .await
}
