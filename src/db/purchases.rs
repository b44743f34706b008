//! Purchases with the money at Ping++: `pingpp_orders` (a buyer's order to a sub-merchant and
//! the Ping++ order made for it) and `order_refunds`.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::allocation::{RewardAttempt, Status};
use crate::domain::order::OrderState;
use crate::domain::purchase::RefundStatus;
use crate::error::EngineError;

/// A purchase as recorded, with its buyer's wallet order.
#[derive(Debug, Clone)]
pub struct Purchase {
    pub order_id: i64,
    pub fingerprint: Vec<u8>,
    pub buyer: i64,
    pub seller: i64,
    pub amount: i64,
    pub merchant_order_no: String,
    pub request: Value,
    pub pingpp_order_id: Option<String>,
    pub pingpp_order: Option<Value>,
    pub channel: Option<String>,
    /// The charge that paid it, once paid.
    pub charge_id: Option<String>,
    pub state: OrderState,
    pub order: Value,
    /// The buyer's order's body: the purchase's subject.
    pub subject: String,
    /// The command that made it has its result.
    pub concluded: bool,
    /// A split order.
    pub allocation: bool,
    /// A reward: its allocations are the platform's (the commission and the completion).
    pub reward: bool,
}

const PURCHASE: &str =
    "p.order_id, p.fingerprint, p.buyer, p.seller, p.amount, p.merchant_order_no, p.allocation,
    p.reward,
    p.request, p.pingpp_order_id, p.pingpp_order, p.channel, p.charge_id, o.state,
    order_json(o) AS json,
    coalesce(o.body, '') AS subject, c.result IS NOT NULL AS concluded
    FROM pingpp_orders p JOIN wallet_orders o ON o.id = p.order_id
    LEFT JOIN commands c ON c.id = p.command_id";

fn purchase(row: &tokio_postgres::Row) -> Result<Purchase, EngineError> {
    Ok(Purchase {
        order_id: row.get("order_id"),
        fingerprint: row.get("fingerprint"),
        buyer: row.get("buyer"),
        seller: row.get("seller"),
        amount: row.get("amount"),
        merchant_order_no: row.get("merchant_order_no"),
        request: row.get("request"),
        pingpp_order_id: row.get("pingpp_order_id"),
        pingpp_order: row.get("pingpp_order"),
        channel: row.get("channel"),
        charge_id: row.get("charge_id"),
        state: super::order_state(row.get("state"))?,
        order: row.get("json"),
        subject: row.get("subject"),
        concluded: row.get::<_, Option<bool>>("concluded").unwrap_or(false),
        allocation: row.get("allocation"),
        reward: row.get("reward"),
    })
}

pub async fn of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<Purchase>, EngineError> {
    let sql = format!("SELECT {PURCHASE} WHERE p.command_id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&command_id])
        .await?;
    row.as_ref().map(purchase).transpose()
}

/// The purchase of buyer's order `order_id`, its rows locked (a payment, a refund and a
/// webhook of one order take turns).
pub async fn lock(tx: &Transaction<'_>, order_id: i64) -> Result<Option<Purchase>, EngineError> {
    let sql = format!("SELECT {PURCHASE} WHERE p.order_id = $1 FOR UPDATE OF p, o");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&order_id])
        .await?;
    row.as_ref().map(purchase).transpose()
}

/// The purchase a Ping++ order is for, by its id or `merchant_order_no`, locked.
pub async fn lock_at_pingpp(
    tx: &Transaction<'_>,
    pingpp_order_id: &str,
    merchant_order_no: &str,
) -> Result<Option<Purchase>, EngineError> {
    let sql = format!(
        "SELECT {PURCHASE} WHERE p.pingpp_order_id = $1 OR p.merchant_order_no = $2
         LIMIT 1 FOR UPDATE OF p, o"
    );
    let row = tx
        .query_opt(
            &tx.prepare_cached(&sql).await?,
            &[&pingpp_order_id, &merchant_order_no],
        )
        .await?;
    row.as_ref().map(purchase).transpose()
}

pub struct NewPurchase<'a> {
    pub order_id: i64,
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub buyer: i64,
    pub seller: i64,
    pub amount: i64,
    pub merchant_order_no: &'a str,
    pub request: &'a Value,
    pub allocation: bool,
    /// A reward's commission (then it is a reward).
    pub commission: Option<i64>,
}

pub async fn insert(tx: &Transaction<'_>, new: &NewPurchase<'_>) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO pingpp_orders (order_id, command_id, fingerprint, buyer, seller, amount,
                 merchant_order_no, request, allocation, reward, commission)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11::bigint, 0))",
        )
        .await?,
        &[
            &new.order_id,
            &new.command_id,
            &new.fingerprint,
            &new.buyer,
            &new.seller,
            &new.amount,
            &new.merchant_order_no,
            new.request,
            &new.allocation,
            &new.commission.is_some(),
            &new.commission,
        ],
    )
    .await?;
    Ok(())
}

/// Records the Ping++ order as Ping++ answered it (and, once known, how it was paid). An
/// answer read before the order was paid, stored after, never replaces a paid one.
pub async fn record_order(
    tx: &Transaction<'_>,
    order_id: i64,
    pingpp_order_id: &str,
    status: &str,
    pingpp_order: &Value,
    paid_by: Option<(&str, &str)>,
) -> Result<(), EngineError> {
    let (channel, charge) = match paid_by {
        Some((channel, charge)) => (Some(channel), Some(charge)),
        None => (None, None),
    };
    let updated = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE pingpp_orders SET pingpp_order_id = $2,
                     status = CASE WHEN charge_id IS NOT NULL AND $6::text IS NULL THEN status
                                   ELSE $3 END,
                     pingpp_order = CASE WHEN charge_id IS NOT NULL AND $6::text IS NULL
                                         THEN pingpp_order ELSE $4 END,
                     channel = coalesce($5, channel), charge_id = coalesce($6, charge_id),
                     updated_at = now()
                 WHERE order_id = $1 AND (pingpp_order_id IS NULL OR pingpp_order_id = $2)",
            )
            .await?,
            &[
                &order_id,
                &pingpp_order_id,
                &status,
                pingpp_order,
                &channel,
                &charge,
            ],
        )
        .await?;
    if updated != 1 {
        return Err(EngineError::Broken(format!(
            "order {order_id} has another Ping++ order than {pingpp_order_id}"
        )));
    }
    Ok(())
}

pub async fn set_seller_order(
    tx: &Transaction<'_>,
    order_id: i64,
    seller_order_id: i64,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("UPDATE pingpp_orders SET seller_order_id = $2 WHERE order_id = $1")
            .await?,
        &[&order_id, &seller_order_id],
    )
    .await?;
    Ok(())
}

/// A refund as recorded.
#[derive(Debug, Clone)]
pub struct Refund {
    pub id: i64,
    pub order_id: i64,
    pub fingerprint: Vec<u8>,
    pub order_no: String,
    pub amount: i64,
    pub request: Value,
    pub refund_id: Option<String>,
    pub refund: Option<Value>,
    pub status: RefundStatus,
    pub concluded: bool,
}

const REFUND: &str = "r.id, r.order_id, r.fingerprint, r.order_no, r.amount, r.request,
    r.refund_id, r.refund, r.status, c.result IS NOT NULL AS concluded
    FROM order_refunds r LEFT JOIN commands c ON c.id = r.command_id";

fn refund(row: &tokio_postgres::Row) -> Result<Refund, EngineError> {
    let status: &str = row.get("status");
    Ok(Refund {
        id: row.get("id"),
        order_id: row.get("order_id"),
        fingerprint: row.get("fingerprint"),
        order_no: row.get("order_no"),
        amount: row.get("amount"),
        request: row.get("request"),
        refund_id: row.get("refund_id"),
        refund: row.get("refund"),
        status: RefundStatus::parse(status)
            .ok_or_else(|| EngineError::Broken(format!("a refund with status {status}")))?,
        concluded: row.get::<_, Option<bool>>("concluded").unwrap_or(false),
    })
}

pub async fn refund_of_command(
    tx: &Transaction<'_>,
    command_id: &str,
) -> Result<Option<Refund>, EngineError> {
    let sql = format!("SELECT {REFUND} WHERE r.command_id = $1");
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&command_id])
        .await?;
    row.as_ref().map(refund).transpose()
}

/// The refund Ping++ knows by its id or `order_no`, locked.
pub async fn lock_refund_at_pingpp(
    tx: &Transaction<'_>,
    refund_id: &str,
    order_no: &str,
) -> Result<Option<Refund>, EngineError> {
    let sql = format!(
        "SELECT {REFUND} WHERE r.refund_id = $1 OR r.order_no = $2 LIMIT 1 FOR UPDATE OF r"
    );
    let row = tx
        .query_opt(&tx.prepare_cached(&sql).await?, &[&refund_id, &order_no])
        .await?;
    row.as_ref().map(refund).transpose()
}

pub async fn refunds_of(tx: &Transaction<'_>, order_id: i64) -> Result<Vec<Refund>, EngineError> {
    let sql = format!("SELECT {REFUND} WHERE r.order_id = $1 ORDER BY r.id");
    let rows = tx
        .query(&tx.prepare_cached(&sql).await?, &[&order_id])
        .await?;
    rows.iter().map(refund).collect()
}

/// What the order's refunds hold of its paid amount: all but the failed ones.
pub async fn refunds_held(tx: &Transaction<'_>, order_id: i64) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT coalesce(sum(amount), 0)::bigint FROM order_refunds
                 WHERE order_id = $1 AND status <> 'failed'",
            )
            .await?,
            &[&order_id],
        )
        .await?
        .get(0))
}

pub async fn next_refund_id(tx: &Transaction<'_>) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT nextval(pg_get_serial_sequence('order_refunds', 'id'))")
                .await?,
            &[],
        )
        .await?
        .get(0))
}

pub struct NewRefund<'a> {
    pub id: i64,
    pub order_id: i64,
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub order_no: &'a str,
    pub amount: i64,
    pub request: &'a Value,
}

pub async fn insert_refund(tx: &Transaction<'_>, new: &NewRefund<'_>) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO order_refunds (id, order_id, command_id, fingerprint, order_no, amount,
                 request)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?,
        &[
            &new.id,
            &new.order_id,
            &new.command_id,
            &new.fingerprint,
            &new.order_no,
            &new.amount,
            new.request,
        ],
    )
    .await?;
    Ok(())
}

/// Records what Ping++ says of a refund; `refund` is `None` when Ping++ refused to make it.
pub async fn record_refund(
    tx: &Transaction<'_>,
    id: i64,
    status: RefundStatus,
    refund: Option<(&str, &Value)>,
) -> Result<(), EngineError> {
    let (refund_id, object) = match refund {
        Some((id, object)) => (Some(id), Some(object)),
        None => (None, None),
    };
    tx.execute(
        &tx.prepare_cached(
            "UPDATE order_refunds SET status = $2, refund_id = coalesce($3, refund_id),
                 refund = coalesce($4, refund), updated_at = now()
             WHERE id = $1",
        )
        .await?,
        &[&id, &status.as_str(), &refund_id, &object],
    )
    .await?;
    Ok(())
}

/// A paid reward due for a look: what its settlement has done so far.
#[derive(Debug, Clone)]
pub struct RewardToSettle {
    pub order_id: i64,
    pub commission: i64,
    pub attempts: Vec<RewardAttempt>,
}

/// Paid rewards not settled whose next look is due, oldest due first, locked (a worker looking
/// at one, the others skip it).
pub async fn rewards_to_settle(
    tx: &Transaction<'_>,
    limit: i64,
) -> Result<Vec<RewardToSettle>, EngineError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT p.order_id, p.commission FROM pingpp_orders p
                 JOIN wallet_orders o ON o.id = p.order_id
                 WHERE p.reward AND o.state = 1
                   AND (p.settle_due_at IS NULL OR p.settle_due_at <= now())
                 ORDER BY p.settle_due_at NULLS FIRST, p.order_id LIMIT $1
                 FOR UPDATE OF p SKIP LOCKED",
            )
            .await?,
            &[&limit],
        )
        .await?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let order_id: i64 = row.get("order_id");
        let prefix = format!("reward-{order_id}-");
        let attempts = tx
            .query(
                &tx.prepare_cached(
                    "SELECT c.id, c.status, a.status AS row_status, a.pingpp_id
                     FROM commands c LEFT JOIN allocations a ON a.command_id = c.id
                     WHERE c.id LIKE $1 || '%'",
                )
                .await?,
                &[&prefix],
            )
            .await?
            .iter()
            .filter_map(|r| {
                let id: String = r.get("id");
                let rest = id.strip_prefix(&prefix)?;
                let (step, n) = rest.rsplit_once('-')?;
                let step = match step {
                    "commission" => "commission",
                    "complete" => "complete",
                    _ => return None,
                };
                let status: Option<String> = r.get("status");
                let row_status: Option<String> = r.get("row_status");
                Some(RewardAttempt {
                    step,
                    attempt: n.parse().ok()?,
                    command_succeeded: status.map(|s| s == "succeeded"),
                    row: row_status
                        .as_deref()
                        .and_then(Status::parse)
                        .map(|s| (s, r.get("pingpp_id"))),
                })
            })
            .collect();
        due.push(RewardToSettle {
            order_id,
            commission: row.get("commission"),
            attempts,
        });
    }
    Ok(due)
}

/// When to look at reward `order_id` next (`None`: never, it is settled).
pub async fn set_settle_due(
    tx: &Transaction<'_>,
    order_id: i64,
    after_secs: Option<f64>,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE pingpp_orders SET settle_due_at = CASE WHEN $2::float8 IS NULL
                 THEN 'infinity'::timestamptz ELSE now() + make_interval(secs => $2) END
             WHERE order_id = $1",
        )
        .await?,
        &[&order_id, &after_secs],
    )
    .await?;
    Ok(())
}
