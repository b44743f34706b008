//! Applying a verified Ping++ event: each event id takes effect once, and a charge event
//! completes its recharge order through the same path as `recharge.retrieve`.

use serde_json::{json, Value};

use super::payout::{complete_withdrawal, withdrawal_cash, WithdrawalCompletion};
use super::recharge::{complete_charge, ChargeCompletion};
use super::Engine;
use crate::db::{events, DbError};
use crate::domain::event::{EventAction, PingppEvent};
use crate::domain::recharge_object;

/// What the worker does after applying an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// Applied now or before: publish this on the events exchange (if anything), then ack.
    Done {
        publish: Option<(String, String)>,
        replayed: bool,
    },
    /// Credits nothing and is not recorded: dead-letter it with this reason.
    Refused(String),
    /// What it completes is not recorded yet (its recharge or payout is still in progress):
    /// parked, to be put back on the queue later. Acknowledge it.
    Waiting(String),
    /// Parked for longer than `worker.event_wait_secs`: dead-letter it with this reason, then
    /// [`crate::db::events::mark_dead_lettered`].
    GaveUp(String),
}

/// `raw` is the event as Ping++ signed it, kept for the record.
pub async fn apply_event(
    engine: &Engine,
    event: &PingppEvent,
    raw: &str,
) -> Result<EventOutcome, DbError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    // A parked event (or one dead-lettered after waiting, replayed from there) is taken up
    // again; any other known id is a replay.
    let inserted = tx
        .execute(
            &tx.prepare_cached(
                "INSERT INTO pingpp_events (id, type, livemode, body, outcome)
             VALUES ($1, $2, $3, $4::text::json, 'pending')
             ON CONFLICT (id) DO UPDATE SET outcome = 'pending'
             WHERE pingpp_events.outcome IN ('waiting', 'dead_lettered')",
            )
            .await?,
            &[&event.id, &event.kind, &event.livemode, &raw],
        )
        .await?;
    if inserted == 0 {
        let row = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT routing_key, published::text FROM pingpp_events WHERE id = $1",
                )
                .await?,
                &[&event.id],
            )
            .await?;
        tx.rollback().await?;
        let publish = match (
            row.get::<_, Option<String>>(0),
            row.get::<_, Option<String>>(1),
        ) {
            (Some(key), Some(body)) => Some((key, body)),
            _ => None,
        };
        return Ok(EventOutcome::Done {
            publish,
            replayed: true,
        });
    }
    let charge = match event.action() {
        EventAction::Record => {
            set_outcome(&tx, event, "recorded", None, None).await?;
            tx.commit().await?;
            return Ok(EventOutcome::Done {
                publish: None,
                replayed: false,
            });
        }
        EventAction::CompleteCharge(charge) => charge,
        EventAction::CompleteWithdrawal(withdrawal) => {
            return apply_withdrawal_event(engine, tx, event, &withdrawal).await
        }
    };
    let (Some(charge_id), Some(order_no)) = (event.charge_id(), event.order_no()) else {
        return Ok(EventOutcome::Refused(
            "the charge has no id or order_no".into(),
        ));
    };
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
    let Some(row) = row else {
        return Ok(EventOutcome::Refused(format!(
            "no recharge order for charge {charge_id} (order_no {order_no})"
        )));
    };
    let order_id: i64 = row.get(0);
    if row.get::<_, Option<String>>(1).is_none() {
        // Paid before the recharge command recorded its charge: that command is still running
        // and will record it, so wait for it rather than refuse.
        let reason = format!("order {order_id} has not recorded its charge yet");
        return wait(engine, tx, event, reason).await;
    }
    if let Some(recharge) = event.recharge() {
        if let Err(reason) = recharge_object::matches(
            recharge,
            row.get::<_, Option<&str>>(2),
            row.get(3),
            row.get(4),
        ) {
            return Ok(EventOutcome::Refused(format!("order {order_id}: {reason}")));
        }
    }
    let completion = match complete_charge(&tx, order_id, &charge, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch.to_string())),
    };
    let (outcome, publish) = match &completion {
        ChargeCompletion::Credited { order, late } => (
            if *late { "credited_late" } else { "credited" },
            Some(published_credit(event, order, *late)),
        ),
        ChargeCompletion::Failed { order, reason } => (
            "failed",
            Some(published(event, "recharge.failed", order, Some(reason))),
        ),
        ChargeCompletion::Unchanged { .. } => ("unchanged", None),
    };
    if matches!(completion, ChargeCompletion::Credited { .. }) {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE journal SET event_id = $1
             WHERE id = (SELECT journal_id FROM wallet_orders WHERE id = $2)",
            )
            .await?,
            &[&event.id, &order_id],
        )
        .await?;
    }
    set_outcome(&tx, event, outcome, Some(order_id), publish.as_ref()).await?;
    tx.commit().await?;
    Ok(EventOutcome::Done {
        publish,
        replayed: false,
    })
}

/// A withdrawal event settles its cash record through the same path as `cash.retrieve`.
async fn apply_withdrawal_event(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    withdrawal: &Value,
) -> Result<EventOutcome, DbError> {
    let text = |name: &str| withdrawal.get(name).and_then(Value::as_str);
    let (Some(withdrawal_id), Some(order_no)) = (text("id"), text("order_no")) else {
        return Ok(EventOutcome::Refused(
            "the withdrawal has no id or order_no".into(),
        ));
    };
    let Some((cash_id, recorded)) = withdrawal_cash(&tx, withdrawal_id, order_no).await? else {
        return Ok(EventOutcome::Refused(format!(
            "no cash payout for withdrawal {withdrawal_id} (order_no {order_no})"
        )));
    };
    if !recorded {
        // Made before its cash.approve recorded it: that command is still running.
        let reason = format!("cash {cash_id} has not recorded its withdrawal yet");
        return wait(engine, tx, event, reason).await;
    }
    let completion = match complete_withdrawal(&tx, cash_id, withdrawal, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch)),
    };
    let (outcome, publish, journal_id) = match &completion {
        WithdrawalCompletion::PaidOut {
            cash,
            order,
            journal_id,
        } => (
            "paid_out",
            Some(published_cash(
                event,
                "withdrawal.succeeded",
                cash,
                order,
                None,
            )),
            Some(*journal_id),
        ),
        WithdrawalCompletion::Returned {
            cash,
            order,
            journal_id,
            reason,
        } => (
            "returned",
            Some(published_cash(
                event,
                "withdrawal.failed",
                cash,
                order,
                Some(reason),
            )),
            Some(*journal_id),
        ),
        WithdrawalCompletion::NotDecidedYet { .. } => {
            // Its cash.approve (or cash.reject) is still running and settles it when done.
            let reason = format!("cash {cash_id} is not decided yet");
            return wait(engine, tx, event, reason).await;
        }
        WithdrawalCompletion::Unchanged { .. } => ("unchanged", None, None),
    };
    if let Some(journal_id) = journal_id {
        tx.execute(
            &tx.prepare_cached("UPDATE journal SET event_id = $1 WHERE id = $2")
                .await?,
            &[&event.id, &journal_id],
        )
        .await?;
    }
    let order_id = completion.order()["id"].as_i64();
    set_outcome(&tx, event, outcome, order_id, publish.as_ref()).await?;
    tx.execute(
        &tx.prepare_cached("UPDATE pingpp_events SET cash_id = $2 WHERE id = $1")
            .await?,
        &[&event.id, &cash_id],
    )
    .await?;
    tx.commit().await?;
    Ok(EventOutcome::Done {
        publish,
        replayed: false,
    })
}

/// Parks the event (this transaction inserted or took it up) until its next try; past
/// `worker.event_wait_secs` it is given up instead, to be dead-lettered.
async fn wait(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    reason: String,
) -> Result<EventOutcome, DbError> {
    let parked = events::park(&tx, &event.id, &reason).await?;
    tx.commit().await?;
    if parked.waited >= engine.event_wait {
        return Ok(EventOutcome::GaveUp(format!(
            "waited {} s ({} tries) for what it completes: {reason}",
            parked.waited.as_secs(),
            parked.attempts
        )));
    }
    Ok(EventOutcome::Waiting(reason))
}

/// `{type, event_id, user_id, data: {order, cash, reason?}}` for a settled cash record.
fn published_cash(
    event: &PingppEvent,
    kind: &str,
    cash: &Value,
    order: &Value,
    reason: Option<&String>,
) -> (String, String) {
    let mut data = json!({ "order": order, "cash": cash });
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    let body = json!({
        "type": kind,
        "event_id": event.id,
        "user_id": order["owner_id"],
        "data": data,
    });
    (kind.to_owned(), body.to_string())
}

/// `recharge.succeeded`, with `late_payment: true` when the order had been marked failed.
fn published_credit(event: &PingppEvent, order: &Value, late: bool) -> (String, String) {
    let (kind, body) = published(event, "recharge.succeeded", order, None);
    if !late {
        return (kind, body);
    }
    let mut body: Value = serde_json::from_str(&body).expect("just serialized");
    body["data"]["late_payment"] = json!(true);
    (kind, body.to_string())
}

/// The message on `<namespace>.events`: `{type, event_id, user_id, data: {order, reason?}}`.
fn published(
    event: &PingppEvent,
    kind: &str,
    order: &Value,
    reason: Option<&String>,
) -> (String, String) {
    let mut data = json!({ "order": order });
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    let body = json!({
        "type": kind,
        "event_id": event.id,
        "user_id": order["owner_id"],
        "data": data,
    });
    (kind.to_owned(), body.to_string())
}

async fn set_outcome(
    tx: &deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    outcome: &str,
    order_id: Option<i64>,
    publish: Option<&(String, String)>,
) -> Result<(), DbError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE pingpp_events SET outcome = $2, order_id = $3, routing_key = $4,
                published = $5::text::json
         WHERE id = $1",
        )
        .await?,
        &[
            &event.id,
            &outcome,
            &order_id,
            &publish.map(|(key, _)| key.as_str()),
            &publish.map(|(_, body)| body.as_str()),
        ],
    )
    .await?;
    Ok(())
}
