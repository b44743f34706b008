//! What the operator console and `pluspay cashes pending` read. Nothing here writes: the
//! console's decisions are commands, applied by the worker like everyone's.

use deadpool_postgres::Transaction;
use serde::Serialize;
use serde_json::Value;

use crate::domain::query::Page;
use crate::error::EngineError;

/// Waiting cash requests listed at most at once.
pub const MAX_PENDING: i64 = 500;
/// Orders shown beside each waiting request.
const LAST_ORDERS: i64 = 3;

/// A cash request waiting for an operator, with what the operator needs to decide it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingCash {
    pub id: i64,
    pub user_id: i64,
    pub value: i64,
    #[serde(rename = "type")]
    pub kind: String,
    /// The payout account as the user typed it; masked before it is shown.
    #[serde(skip)]
    pub account: String,
    pub created_at: String,
    pub age_secs: i64,
    /// The user's wallet balance now (the request's money has left it already).
    pub balance: i64,
    /// Operators whose approvals are recorded, earliest first.
    pub approved_by: Vec<i64>,
    /// A Ping++ withdrawal of it is under way (`pingpp.payout = "withdrawals"`).
    pub payout_in_progress: bool,
    pub last_orders: Value,
}

/// The waiting requests, oldest first, at most `limit` of them.
pub async fn pending_cashes(
    tx: &Transaction<'_>,
    limit: i64,
) -> Result<Vec<PendingCash>, EngineError> {
    let rows = tx
        .query(
            "SELECT c.id, c.user_id, c.value, c.type, c.account,
                    to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS created_at,
                    greatest(extract(epoch FROM now() - c.created_at), 0)::bigint AS age_secs,
                    coalesce(a.balance, 0) AS balance,
                    array(SELECT operator FROM cash_approvals p WHERE p.cash_id = c.id
                          ORDER BY p.created_at, p.operator) AS approved_by,
                    EXISTS (SELECT 1 FROM cash_payouts p WHERE p.cash_id = c.id AND p.active)
                        AS payout_in_progress,
                    (SELECT coalesce(json_agg(order_json(o) ORDER BY o.id DESC), '[]'::json)
                     FROM (SELECT * FROM wallet_orders WHERE owner_id = c.user_id
                           ORDER BY id DESC LIMIT $2) o) AS last_orders
             FROM cashes c
             LEFT JOIN accounts a ON a.kind = 'wallet' AND a.user_id = c.user_id
             WHERE c.status = 0
             ORDER BY c.id
             LIMIT $1",
            &[&limit.clamp(1, MAX_PENDING), &LAST_ORDERS],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PendingCash {
            id: r.get("id"),
            user_id: r.get("user_id"),
            value: r.get("value"),
            kind: r.get("type"),
            account: r.get("account"),
            created_at: r.get("created_at"),
            age_secs: r.get("age_secs"),
            balance: r.get("balance"),
            approved_by: r.get("approved_by"),
            payout_in_progress: r.get("payout_in_progress"),
            last_orders: r.get("last_orders"),
        })
        .collect())
}

/// One user's wallet as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WalletView {
    pub user_id: i64,
    pub balance: i64,
    pub total_income: i64,
    pub total_expenses: i64,
    pub points: i64,
    pub orders: Value,
    pub cashes: Value,
    pub charges: Value,
}

/// Rows of each list on the user's page.
const USER_PAGE_ROWS: i64 = 20;

pub async fn wallet(tx: &Transaction<'_>, user: i64) -> Result<WalletView, EngineError> {
    let figures = tx
        .query_opt(
            "SELECT balance, total_income, total_expenses FROM accounts
             WHERE kind = 'wallet' AND user_id = $1",
            &[&user],
        )
        .await?;
    let points: i64 = tx
        .query_opt(
            "SELECT balance FROM accounts WHERE kind = 'points' AND user_id = $1",
            &[&user],
        )
        .await?
        .map_or(0, |r| r.get(0));
    let page = Page {
        limit: USER_PAGE_ROWS,
        after: None,
        action: None,
    };
    Ok(WalletView {
        user_id: user,
        balance: figures.as_ref().map_or(0, |r| r.get(0)),
        total_income: figures.as_ref().map_or(0, |r| r.get(1)),
        total_expenses: figures.as_ref().map_or(0, |r| r.get(2)),
        points,
        orders: super::orders::list(tx, user, &page).await?,
        cashes: super::cashes::list(tx, user, &page).await?,
        charges: super::charge_records::list(tx, user, &page).await?,
    })
}

/// The last ledger check of a scope (`db::audit::record`).
#[derive(Debug, Clone, Serialize)]
pub struct LastCheck {
    pub scope: String,
    pub checked_at: String,
    pub age_secs: i64,
    pub ok: bool,
    pub millis: f64,
    pub report: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemAccount {
    pub name: String,
    pub unit: String,
    pub balance: i64,
}

pub async fn health(
    tx: &Transaction<'_>,
) -> Result<(Vec<LastCheck>, Vec<SystemAccount>), EngineError> {
    let checks = tx
        .query(
            "SELECT scope, to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS at,
                    greatest(extract(epoch FROM now() - checked_at), 0)::bigint AS age_secs,
                    ok, millis, report
             FROM ledger_checks ORDER BY scope",
            &[],
        )
        .await?
        .iter()
        .map(|r| LastCheck {
            scope: r.get("scope"),
            checked_at: r.get("at"),
            age_secs: r.get("age_secs"),
            ok: r.get("ok"),
            millis: r.get("millis"),
            report: r.get("report"),
        })
        .collect();
    let accounts = tx
        .query(
            "SELECT name, unit, balance FROM accounts WHERE kind = 'system' ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(|r| SystemAccount {
            name: r.get("name"),
            unit: r.get("unit"),
            balance: r.get("balance"),
        })
        .collect();
    Ok((checks, accounts))
}
