//! Cash records: stored with the request, locked while an operator's decision is applied.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::cash::CashRequest;
use crate::domain::cash::CashStatus;
use crate::domain::order::OrderState;
use crate::domain::query::Page;
use crate::error::EngineError;

pub async fn insert(
    tx: &Transaction<'_>,
    request: &CashRequest,
    command_id: &str,
) -> Result<i64, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO cashes (user_id, value, type, account, command_id)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .await?,
            &[
                &request.user,
                &request.value,
                &request.kind,
                &request.account,
                &command_id,
            ],
        )
        .await?
        .get(0))
}

pub async fn link_order(
    tx: &Transaction<'_>,
    cash_id: i64,
    order_id: i64,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached("UPDATE cashes SET order_id = $2 WHERE id = $1")
            .await?,
        &[&cash_id, &order_id],
    )
    .await?;
    Ok(())
}

/// A cash record locked for a decision.
#[derive(Debug, Clone)]
pub struct LockedCash {
    pub id: i64,
    pub owner: i64,
    pub value: i64,
    pub status: CashStatus,
    pub order_id: Option<i64>,
}

pub async fn lock(tx: &Transaction<'_>, cash_id: i64) -> Result<Option<LockedCash>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, user_id, value, status, order_id FROM cashes WHERE id = $1 FOR UPDATE",
            )
            .await?,
            &[&cash_id],
        )
        .await?;
    row.map(|r| {
        Ok(LockedCash {
            id: r.get("id"),
            owner: r.get("user_id"),
            value: r.get("value"),
            status: super::cash_status(r.get("status"))?,
            order_id: r.get("order_id"),
        })
    })
    .transpose()
}

/// The operators whose approvals of the cash request are recorded, earliest first.
pub async fn approvers(tx: &Transaction<'_>, cash_id: i64) -> Result<Vec<i64>, EngineError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT operator FROM cash_approvals WHERE cash_id = $1 ORDER BY created_at, operator",
            )
            .await?,
            &[&cash_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Records an operator's approval (once: a second one of the same operator changes nothing);
/// the caller holds the cash record's lock.
pub async fn record_approval(
    tx: &Transaction<'_>,
    cash_id: i64,
    operator: i64,
    remark: &str,
    command_id: &str,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO cash_approvals (cash_id, operator, remark, command_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT (cash_id, operator) DO NOTHING",
        )
        .await?,
        &[&cash_id, &operator, &remark, &command_id],
    )
    .await?;
    Ok(())
}

/// Records a decision and sets the state of the request's order.
pub async fn record_decision(
    tx: &Transaction<'_>,
    cash: &LockedCash,
    status: CashStatus,
    order_state: OrderState,
    remark: &str,
    operator: i64,
    command_id: &str,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE cashes SET status = $2, remark = $3, decided_by = $4, decision_command_id = $5,
                updated_at = now()
         WHERE id = $1",
        )
        .await?,
        &[&cash.id, &status.code(), &remark, &operator, &command_id],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("UPDATE wallet_orders SET state = $2, updated_at = now() WHERE id = $1")
            .await?,
        &[&cash.order_id, &order_state.code()],
    )
    .await?;
    Ok(())
}

/// Approves a cash request whose payout is left to a Ping++ withdrawal: its order stays
/// waiting until the withdrawal settles.
pub async fn approve_pending_payout(
    tx: &Transaction<'_>,
    cash_id: i64,
    remark: &str,
    operator: i64,
    command_id: &str,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE cashes SET status = $5, remark = $2, decided_by = $3, decision_command_id = $4,
                updated_at = now()
         WHERE id = $1 AND status = $6",
        )
        .await?,
        &[
            &cash_id,
            &remark,
            &operator,
            &command_id,
            &CashStatus::Approved.code(),
            &CashStatus::Waiting.code(),
        ],
    )
    .await?;
    Ok(())
}

/// Settles an approved cash request by its withdrawal: paid out (order state 1), or returned
/// (status 2 with `reason` as its remark, order state -1).
pub async fn settle_payout(
    tx: &Transaction<'_>,
    cash: &LockedCash,
    returned_reason: Option<&str>,
) -> Result<(), EngineError> {
    if let Some(reason) = returned_reason {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE cashes SET status = $3, remark = $2, updated_at = now() WHERE id = $1",
            )
            .await?,
            &[&cash.id, &reason, &CashStatus::Rejected.code()],
        )
        .await?;
    }
    let state = match returned_reason {
        Some(_) => OrderState::Failed,
        None => OrderState::Succeeded,
    };
    tx.execute(
        &tx.prepare_cached("UPDATE wallet_orders SET state = $2, updated_at = now() WHERE id = $1")
            .await?,
        &[&cash.order_id, &state.code()],
    )
    .await?;
    Ok(())
}

/// The withdrawal shown on the cash record (none once its payout was given up).
pub async fn set_withdrawal(
    tx: &Transaction<'_>,
    cash_id: i64,
    withdrawal: Option<(&str, &str)>,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE cashes SET withdrawal_id = $2, withdrawal_status = $3, updated_at = now()
         WHERE id = $1",
        )
        .await?,
        &[&cash_id, &withdrawal.map(|w| w.0), &withdrawal.map(|w| w.1)],
    )
    .await?;
    Ok(())
}

/// The state of a cash request's order: waiting while its money is held in pending_payouts.
pub async fn order_state(
    tx: &Transaction<'_>,
    cash: &LockedCash,
) -> Result<OrderState, EngineError> {
    super::order_state(
        tx.query_one(
            &tx.prepare_cached("SELECT state FROM wallet_orders WHERE id = $1")
                .await?,
            &[&cash.order_id],
        )
        .await?
        .get("state"),
    )
}

pub async fn get_json(tx: &Transaction<'_>, cash_id: i64) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT cash_json(c) FROM cashes c WHERE id = $1")
                .await?,
            &[&cash_id],
        )
        .await?
        .get(0))
}

/// The user's cash records, newest first.
pub async fn list(tx: &Transaction<'_>, user: i64, page: &Page) -> Result<Value, EngineError> {
    Ok(tx
        .query_one(
            "SELECT coalesce(json_agg(cash_json(c) ORDER BY c.id DESC), '[]'::json)
             FROM (SELECT * FROM cashes
                   WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2)
                   ORDER BY id DESC LIMIT $3) c",
            &[&user, &page.after, &page.limit],
        )
        .await?
        .get(0))
}

/// The cash record and its order, both as JSON.
pub async fn with_order_json(
    tx: &Transaction<'_>,
    cash_id: i64,
) -> Result<(Value, Value), EngineError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT cash_json(c) AS cash, order_json(o) AS order FROM cashes c
                 JOIN wallet_orders o ON o.id = c.order_id WHERE c.id = $1",
            )
            .await?,
            &[&cash_id],
        )
        .await?;
    Ok((row.get("cash"), row.get("order")))
}

/// A cash record as `cash.retrieve` sees it: with its order's state and its active payout's
/// withdrawal, if any.
#[derive(Debug, Clone)]
pub struct ToRetrieve {
    pub cash: Value,
    pub order_state: OrderState,
    pub withdrawal_id: Option<String>,
    pub withdrawal: Option<Value>,
}

pub async fn to_retrieve(
    tx: &Transaction<'_>,
    cash_id: i64,
) -> Result<Option<ToRetrieve>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT cash_json(c) AS cash, o.state, p.withdrawal_id, p.withdrawal
                 FROM cashes c JOIN wallet_orders o ON o.id = c.order_id
                 LEFT JOIN cash_payouts p ON p.cash_id = c.id AND p.active
                 WHERE c.id = $1",
            )
            .await?,
            &[&cash_id],
        )
        .await?;
    row.map(|row| {
        Ok(ToRetrieve {
            cash: row.get("cash"),
            order_state: super::order_state(row.get("state"))?,
            withdrawal_id: row.get("withdrawal_id"),
            withdrawal: row.get("withdrawal"),
        })
    })
    .transpose()
}
