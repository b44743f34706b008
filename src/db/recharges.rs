//! `recharges`: a recharge command's progress between its database transactions and its Ping++
//! call (the exact request, then the charge or recharge object Ping++ made), so a crash or a
//! redelivery resumes with the same `order_no` instead of making a second order or charge.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::order::OrderState;
use crate::error::EngineError;

/// A recharge as recorded: the JSON columns as text, for the engine to read.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub fingerprint: Vec<u8>,
    pub order_id: i64,
    pub charge_request: String,
    pub charge: Option<String>,
    pub recharge_request: Option<String>,
    pub recharge: Option<String>,
    /// When the recharge began (unix s).
    pub begun_at: i64,
}

pub async fn find(tx: &Transaction<'_>, command_id: &str) -> Result<Option<Recorded>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT fingerprint, order_id, charge_request::text AS charge_request,
                    charge::text AS charge, recharge_request::text AS recharge_request,
                    recharge::text AS recharge,
                    extract(epoch FROM created_at)::bigint AS begun_at
                 FROM recharges WHERE command_id = $1",
            )
            .await?,
            &[&command_id],
        )
        .await?;
    Ok(row.map(|row| Recorded {
        fingerprint: row.get("fingerprint"),
        order_id: row.get("order_id"),
        charge_request: row.get("charge_request"),
        charge: row.get("charge"),
        recharge_request: row.get("recharge_request"),
        recharge: row.get("recharge"),
        begun_at: row.get("begun_at"),
    }))
}

/// A recharge to record before Ping++ is asked.
pub struct NewRecharge<'a> {
    pub command_id: &'a str,
    pub fingerprint: &'a [u8],
    pub user_id: i64,
    pub order_id: i64,
    pub order_no: &'a str,
    /// The charge request, as JSON.
    pub charge_request: &'a str,
    pub user_fee: Option<i64>,
    pub balance_bonus: Option<i64>,
    /// The recharge-object request, as JSON (recharge-object mode).
    pub recharge_request: Option<&'a str>,
}

pub async fn insert(tx: &Transaction<'_>, new: &NewRecharge<'_>) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO recharges (command_id, fingerprint, user_id, order_id, order_no,
                 charge_request, user_fee, balance_bonus, recharge_request)
             VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8, $9::text::json)",
        )
        .await?,
        &[
            &new.command_id,
            &new.fingerprint,
            &new.user_id,
            &new.order_id,
            &new.order_no,
            &new.charge_request,
            &new.user_fee,
            &new.balance_bonus,
            &new.recharge_request,
        ],
    )
    .await?;
    Ok(())
}

/// The charge (and recharge object) Ping++ made for the recharge.
pub struct MadeCharge<'a> {
    pub charge_id: &'a str,
    pub livemode: bool,
    pub charge: &'a Value,
    pub recharge_id: Option<&'a str>,
    pub recharge: Option<&'a Value>,
}

pub async fn record_charge(
    tx: &Transaction<'_>,
    command_id: &str,
    made: &MadeCharge<'_>,
) -> Result<(), EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE recharges SET charge_id = $2, livemode = $3, charge = $4::text::json,
                 recharge_id = $5, recharge = $6::text::json
             WHERE command_id = $1",
        )
        .await?,
        &[
            &command_id,
            &made.charge_id,
            &made.livemode,
            &made.charge.to_string(),
            &made.recharge_id,
            &made.recharge.map(Value::to_string),
        ],
    )
    .await?;
    Ok(())
}

/// The recharge a Ping++ charge event is about, found by its charge id or its `order_no`.
#[derive(Debug, Clone)]
pub struct ForEvent {
    pub order_id: i64,
    /// `None` while the recharge command has not recorded its charge yet.
    pub charge_id: Option<String>,
    pub recharge_id: Option<String>,
    pub user_fee: Option<i64>,
    pub balance_bonus: Option<i64>,
}

pub async fn for_event(
    tx: &Transaction<'_>,
    charge_id: &str,
    order_no: &str,
) -> Result<Option<ForEvent>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT order_id, charge_id, recharge_id, user_fee, balance_bonus
                 FROM recharges WHERE charge_id = $1 OR order_no = $2
                 ORDER BY charge_id = $1 DESC NULLS LAST LIMIT 1",
            )
            .await?,
            &[&charge_id, &order_no],
        )
        .await?;
    Ok(row.map(|row| ForEvent {
        order_id: row.get("order_id"),
        charge_id: row.get("charge_id"),
        recharge_id: row.get("recharge_id"),
        user_fee: row.get("user_fee"),
        balance_bonus: row.get("balance_bonus"),
    }))
}

/// A wallet order as `recharge.retrieve` sees it, with the charge of its recharge if any.
#[derive(Debug, Clone)]
pub struct OrderToRetrieve {
    pub owner_id: i64,
    pub target_type: String,
    pub state: OrderState,
    pub charge_id: Option<String>,
    pub order: Value,
}

pub async fn order_to_retrieve(
    tx: &Transaction<'_>,
    order_id: i64,
) -> Result<Option<OrderToRetrieve>, EngineError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT o.owner_id, o.target_type, o.state, r.charge_id, order_json(o) AS json
                 FROM wallet_orders o LEFT JOIN recharges r ON r.order_id = o.id
                 WHERE o.id = $1",
            )
            .await?,
            &[&order_id],
        )
        .await?;
    row.map(|row| {
        Ok(OrderToRetrieve {
            owner_id: row.get("owner_id"),
            target_type: row.get("target_type"),
            state: super::order_state(row.get("state"))?,
            charge_id: row.get("charge_id"),
            order: row.get("json"),
        })
    })
    .transpose()
}

/// A recharge order locked for completing it, with what was asked of Ping++ for it.
#[derive(Debug, Clone)]
pub struct LockedRecharge {
    pub owner_id: i64,
    pub amount: i64,
    pub state: OrderState,
    pub charge_id: Option<String>,
    pub livemode: bool,
    pub order: Value,
    pub user_fee: i64,
    pub balance_bonus: i64,
}

/// Locks the order row: racing completions (a retrieve and a webhook) then take turns.
pub async fn lock_for_completion(
    tx: &Transaction<'_>,
    order_id: i64,
) -> Result<LockedRecharge, EngineError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT o.owner_id, o.amount, o.state, r.charge_id,
                    coalesce(r.livemode, false) AS livemode, order_json(o) AS json,
                    coalesce(r.user_fee, 0) AS user_fee,
                    coalesce(r.balance_bonus, 0) AS balance_bonus
                 FROM wallet_orders o JOIN recharges r ON r.order_id = o.id
                 WHERE o.id = $1 FOR UPDATE OF o",
            )
            .await?,
            &[&order_id],
        )
        .await?;
    Ok(LockedRecharge {
        owner_id: row.get("owner_id"),
        amount: row.get("amount"),
        state: super::order_state(row.get("state"))?,
        charge_id: row.get("charge_id"),
        livemode: row.get("livemode"),
        order: row.get("json"),
        user_fee: row.get("user_fee"),
        balance_bonus: row.get("balance_bonus"),
    })
}
