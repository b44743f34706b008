//! `recharge_refunds`: refunds of recharges through their Ping++ charge, and the recovery point
//! of `recharge.refund` between its transactions and its Ping++ call.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::order::OrderState;
use crate::domain::purchase::RefundStatus;
use crate::domain::refund::Recharge;
use crate::error::EngineError;

/// A refund as recorded.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: i64,
    pub command_id: String,
    pub fingerprint: Vec<u8>,
    pub user_id: i64,
    pub recharge_order_id: i64,
    /// The refund's own order.
    pub order_id: i64,
    pub charge_id: String,
    pub amount: i64,
    pub description: String,
    pub status: RefundStatus,
    /// Ping++'s id, once an answer (or a report) named it.
    pub refund_id: Option<String>,
    /// Creates sent so far.
    pub sends: i32,
    /// How long ago (ms) the last create that may have reached Ping++ was sent.
    pub sent_ago_ms: Option<i64>,
    /// `recharge_refund_json`: the refund as results and events show it.
    pub json: Value,
}

const COLUMNS: &str = "r.id, r.command_id, r.fingerprint, r.user_id, r.recharge_order_id,
    r.order_id, r.charge_id, r.amount, r.description, r.status, r.refund_id, r.sends,
    (extract(epoch FROM now() - r.sent_at) * 1000)::bigint AS sent_ago_ms,
    recharge_refund_json(r) AS json
    FROM recharge_refunds r";

fn recorded(row: &tokio_postgres::Row) -> Result<Recorded, EngineError> {
    let status: String = row.get("status");
    Ok(Recorded {
        id: row.get("id"),
        command_id: row.get("command_id"),
        fingerprint: row.get("fingerprint"),
        user_id: row.get("user_id"),
        recharge_order_id: row.get("recharge_order_id"),
        order_id: row.get("order_id"),
        charge_id: row.get("charge_id"),
        amount: row.get("amount"),
        description: row.get("description"),
        status: RefundStatus::parse(&status)
            .ok_or_else(|| EngineError::Broken(format!("a refund with status {status:?}")))?,
        refund_id: row.get("refund_id"),
        sends: row.get("sends"),
        sent_ago_ms: row.get("sent_ago_ms"),
        json: row.get("json"),
    })
}

async fn one(
    tx: &Transaction<'_>,
    condition: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Recorded>, EngineError> {
    let sql = format!("SELECT {COLUMNS} {condition}");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, params)
        .await?;
    row.as_ref().map(recorded).transpose()
}

/// The recharge order `order_id` (any order, for the checks to tell), locked: refunds of one
/// recharge take turns, so two can't both take its last fen.
pub async fn lock_recharge(
    tx: &Transaction<'_>,
    order_id: i64,
) -> Result<Option<Recharge>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT o.owner_id, o.target_type, o.state, r.charge_id,
                    r.recharge_request IS NOT NULL AS via_recharge_object,
                    coalesce((r.charge_request ->> 'amount')::bigint, o.amount) AS amount
                 FROM wallet_orders o LEFT JOIN recharges r ON r.order_id = o.id
                 WHERE o.id = $1 FOR UPDATE OF o",
            )
            .await?,
            &[&order_id],
        )
        .await?;
    row.map(|row| {
        Ok(Recharge {
            owner: row.get("owner_id"),
            target_type: row.get("target_type"),
            state: super::order_state(row.get("state"))?,
            charge_id: row.get("charge_id"),
            via_recharge_object: row.get("via_recharge_object"),
            amount: row.get("amount"),
        })
    })
    .transpose()
}

/// What the recharge's refunds take of its charge: all but the failed ones.
pub async fn taken(tx: &Transaction<'_>, recharge_order_id: i64) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT coalesce(sum(amount), 0)::bigint FROM recharge_refunds
                 WHERE recharge_order_id = $1 AND status <> 'failed'",
            )
            .await?,
            &[&recharge_order_id],
        )
        .await?
        .get(0))
}

/// A refund to record before Ping++ is asked.
pub struct NewRefund<'a> {
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub user_id: i64,
    pub recharge_order_id: i64,
    pub order_id: i64,
    pub charge_id: &'a str,
    pub amount: i64,
    pub description: &'a str,
}

pub async fn insert(tx: &Transaction<'_>, new: &NewRefund<'_>) -> Result<Recorded, EngineError> {
    let id: i64 = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO recharge_refunds (command_id, fingerprint, user_id,
                     recharge_order_id, order_id, charge_id, amount, description)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .await?,
            &[
                &new.command_id,
                &new.fingerprint,
                &new.user_id,
                &new.recharge_order_id,
                &new.order_id,
                &new.charge_id,
                &new.amount,
                &new.description,
            ],
        )
        .await?
        .get(0);
    lock(tx, id).await
}

pub async fn of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<Recorded>, EngineError> {
    one(tx, "WHERE r.command_id = $1", &[&command_id]).await
}

/// The refund whose own order is `order_id`.
pub async fn of_order(
    tx: &Transaction<'_>,
    order_id: i64,
) -> Result<Option<Recorded>, EngineError> {
    one(tx, "WHERE r.order_id = $1", &[&order_id]).await
}

/// The refund a Ping++ refund object is about, locked: by Ping++'s id, else by our mark (a
/// refund whose create answer has not been recorded yet).
pub async fn lock_for_report(
    tx: &Transaction<'_>,
    refund_id: &str,
    marked: Option<i64>,
) -> Result<Option<Recorded>, EngineError> {
    one(
        tx,
        "WHERE r.refund_id = $1 OR r.id = $2
         ORDER BY r.refund_id = $1 DESC NULLS LAST LIMIT 1 FOR UPDATE OF r",
        &[&refund_id, &marked],
    )
    .await
}

pub async fn lock(tx: &Transaction<'_>, id: i64) -> Result<Recorded, EngineError> {
    one(tx, "WHERE r.id = $1 FOR UPDATE OF r", &[&id])
        .await?
        .ok_or_else(|| EngineError::Broken(format!("refund {id} vanished")))
}

/// Takes the next send of refund `id` if no twin took it since `sends` was read; `false`: one
/// did, and may be sending now.
pub async fn claim_send(tx: &Transaction<'_>, id: i64, sends: i32) -> Result<bool, EngineError> {
    let updated = tx
        .execute(
            "UPDATE recharge_refunds SET sends = sends + 1, sent_at = now(), updated_at = now()
             WHERE id = $1 AND sends = $2 AND refund_id IS NULL AND status = 'pending'",
            &[&id, &sends],
        )
        .await?;
    Ok(updated == 1)
}

/// The send numbered `sends` certainly did not reach Ping++: none may be under way.
pub async fn unsend(tx: &Transaction<'_>, id: i64, sends: i32) -> Result<(), EngineError> {
    tx.execute(
        "UPDATE recharge_refunds SET sent_at = NULL WHERE id = $1 AND sends = $2",
        &[&id, &sends],
    )
    .await?;
    Ok(())
}

/// What Ping++ says of the refund now (`refund` its object, `None` for a refusal of the
/// create), with the status it leaves it in.
pub struct Report<'a> {
    pub status: RefundStatus,
    pub refund: Option<(&'a str, &'a Value)>,
    pub failure_code: Option<&'a str>,
    pub failure_msg: Option<&'a str>,
}

pub async fn record(tx: &Transaction<'_>, id: i64, report: &Report<'_>) -> Result<(), EngineError> {
    let (refund_id, refund) = match report.refund {
        Some((refund_id, refund)) => (Some(refund_id), Some(refund.to_string())),
        None => (None, None),
    };
    tx.execute(
        &tx.prepare_cached(
            "UPDATE recharge_refunds SET status = $2,
                 refund_id = coalesce($3, refund_id),
                 refund = coalesce($4::text::json, refund),
                 failure_code = coalesce($5, failure_code),
                 failure_msg = coalesce($6, failure_msg),
                 succeeded_at = CASE WHEN $2 = 'succeeded' THEN coalesce(succeeded_at, now()) END,
                 updated_at = now()
             WHERE id = $1",
        )
        .await?,
        &[
            &id,
            &report.status.as_str(),
            &refund_id,
            &refund,
            &report.failure_code,
            &report.failure_msg,
        ],
    )
    .await?;
    Ok(())
}

/// The refund as results and events show it, as it is now.
pub async fn json(tx: &Transaction<'_>, id: i64) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT recharge_refund_json(r) FROM recharge_refunds r WHERE id = $1",
            )
            .await?,
            &[&id],
        )
        .await?
        .get(0))
}

/// The refund's own order ends in `state`, keeping the journal that moved the wallet.
pub async fn set_order_state(
    tx: &Transaction<'_>,
    order_id: i64,
    state: OrderState,
) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE wallet_orders SET state = $2, updated_at = now()
                 WHERE id = $1 RETURNING order_json(wallet_orders)",
            )
            .await?,
            &[&order_id, &state.code()],
        )
        .await?
        .get(0))
}

/// The refund's own order, as it is now.
pub async fn order(tx: &Transaction<'_>, order_id: i64) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT order_json(o) FROM wallet_orders o WHERE o.id = $1")
                .await?,
            &[&order_id],
        )
        .await?
        .get(0))
}

/// Asks about the refund after `after_secs`, and then again at doubling waits, up to a day.
pub async fn schedule_pull(
    tx: &Transaction<'_>,
    id: i64,
    after_secs: i64,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE recharge_refunds SET pull_due_at = now() + make_interval(secs => $2)
             WHERE id = $1",
        )
        .await?,
        &[&id, &(after_secs as f64)],
    )
    .await?;
    Ok(())
}

/// A pending refund whose answer has come and that has waited too long for its report.
#[derive(Debug, Clone)]
pub struct DuePull {
    pub id: i64,
    pub user_id: i64,
    pub order_id: i64,
    pub pulls: i32,
}

/// Up to `limit` refunds due to be asked about, locked until the transaction ends (others
/// checking at once skip them).
pub async fn due_pulls(tx: &Transaction<'_>, limit: i64) -> Result<Vec<DuePull>, EngineError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT id, user_id, order_id, pulls FROM recharge_refunds
                 WHERE status = 'pending' AND pull_due_at <= now() AND refund_id IS NOT NULL
                 ORDER BY pull_due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DuePull {
            id: r.get("id"),
            user_id: r.get("user_id"),
            order_id: r.get("order_id"),
            pulls: r.get("pulls"),
        })
        .collect())
}

/// The refund was asked about (pull number `pulls`); the next ask comes after `next_secs`.
pub async fn pulled(tx: &Transaction<'_>, id: i64, next_secs: i64) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE recharge_refunds SET pulls = pulls + 1,
                 pull_due_at = now() + make_interval(secs => $2)
             WHERE id = $1",
        )
        .await?,
        &[&id, &(next_secs as f64)],
    )
    .await?;
    Ok(())
}
