//! Applying a verified Ping++ event: each event id takes effect once, and a charge event
//! completes its recharge order through the same path as `recharge.retrieve`.

use serde_json::{json, Value};

use super::completion::allocation::{complete_allocation, AllocationCompletion};
use super::completion::charge::{complete_charge, ChargeCompletion};
use super::completion::deposit::{complete_deposit, DepositCompletion};
use super::completion::purchase::{
    complete_order, complete_refund, OrderCompletion, RefundCompletion,
};
use super::completion::refund::{complete_recharge_refund, RechargeRefundCompletion};
use super::completion::withdrawal::{complete_withdrawal, WithdrawalCompletion};
use super::Engine;
use crate::db::pingpp_events as events;
use crate::db::{
    accounts, allocations, cash_payouts, deposits, merchants, purchases, recharges, refunds,
};
use crate::domain::account::{mask_personal, ApplicationStatus};
use crate::domain::allocation::Kind as AllocationKind;
use crate::domain::event::{EventAction, PingppEvent};
use crate::domain::merchant::ApplicationStatus as MerchantApplicationStatus;
use crate::domain::purchase::RefundStatus;
use crate::domain::recharge_object;
use crate::error::EngineError;

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
    /// [`crate::db::pingpp_events::mark_dead_lettered`].
    GaveUp(String),
}

/// `raw` is the event as Ping++ signed it, kept for the record with its personal data masked.
pub async fn apply_event(
    engine: &Engine,
    event: &PingppEvent,
    raw: &str,
) -> Result<EventOutcome, EngineError> {
    let kept = match serde_json::from_str::<Value>(raw) {
        Ok(mut value) => {
            mask_personal(&mut value);
            value.to_string()
        }
        Err(_) => raw.to_owned(),
    };
    let raw = kept.as_str();
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    // A parked event (or one dead-lettered after waiting, replayed from there) is taken up
    // again; any other known id is a replay.
    if !events::begin(&tx, &event.id, &event.kind, event.livemode, raw).await? {
        let publish = events::published(&tx, &event.id).await?;
        tx.rollback().await?;
        return Ok(EventOutcome::Done {
            publish,
            replayed: true,
        });
    }
    let charge = match event.action() {
        EventAction::Record => {
            return done(tx, event, "recorded", None, None).await;
        }
        EventAction::CompleteCharge(charge) => charge,
        EventAction::CompleteWithdrawal(withdrawal) => {
            return apply_withdrawal_event(engine, tx, event, &withdrawal).await
        }
        EventAction::CompleteDeposit(deposit) => {
            return apply_deposit_event(engine, tx, event, &deposit).await
        }
        EventAction::DecideApplication(application) => {
            return apply_application_event(tx, event, application).await
        }
        EventAction::DecideMerchantApplication(application) => {
            return apply_merchant_application_event(tx, event, application).await
        }
        EventAction::CompleteOrder(order) => {
            return apply_order_event(engine, tx, event, &order).await
        }
        EventAction::CompleteRefund(refund) => {
            return apply_refund_event(engine, tx, event, &refund).await
        }
        EventAction::CompleteRechargeRefund(refund) => {
            return apply_recharge_refund_event(engine, tx, event, &refund).await
        }
        EventAction::CompleteAllocation(allocation) => {
            return apply_allocation_event(engine, tx, event, &allocation).await
        }
    };
    let (Some(charge_id), Some(order_no)) = (event.charge_id(), event.order_no()) else {
        return Ok(EventOutcome::Refused(
            "the charge has no id or order_no".into(),
        ));
    };
    let Some(found) = recharges::for_event(&tx, charge_id, order_no).await? else {
        return Ok(EventOutcome::Refused(format!(
            "no recharge order for charge {charge_id} (order_no {order_no})"
        )));
    };
    let order_id = found.order_id;
    if found.charge_id.is_none() {
        // Paid before the recharge command recorded its charge: that command is still running
        // and will record it, so wait for it rather than refuse.
        let reason = format!("order {order_id} has not recorded its charge yet");
        return wait(engine, tx, event, reason).await;
    }
    if let Some(recharge) = event.recharge() {
        if let Err(reason) = recharge_object::matches(
            recharge,
            found.recharge_id.as_deref(),
            found.user_fee,
            found.balance_bonus,
        ) {
            return Ok(EventOutcome::Refused(format!("order {order_id}: {reason}")));
        }
    }
    let completion = match complete_charge(&tx, order_id, &charge, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch.to_string())),
    };
    let (outcome, publish) = match &completion {
        ChargeCompletion::Credited {
            order,
            journal_id,
            late,
        } => {
            events::link_journal(&tx, &event.id, *journal_id).await?;
            (
                if *late { "credited_late" } else { "credited" },
                Some(published(
                    event,
                    "recharge.succeeded",
                    order,
                    None,
                    &late_payment(*late),
                )),
            )
        }
        ChargeCompletion::Failed { order, reason } => (
            "failed",
            Some(published(
                event,
                "recharge.failed",
                order,
                Some(reason),
                &[],
            )),
        ),
        ChargeCompletion::Unchanged { .. } => ("unchanged", None),
    };
    done(tx, event, outcome, Some(order_id), publish).await
}

/// A withdrawal event settles its cash record through the same path as `cash.retrieve`.
async fn apply_withdrawal_event(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    withdrawal: &Value,
) -> Result<EventOutcome, EngineError> {
    let text = |name: &str| withdrawal.get(name).and_then(Value::as_str);
    let (Some(withdrawal_id), Some(order_no)) = (text("id"), text("order_no")) else {
        return Ok(EventOutcome::Refused(
            "the withdrawal has no id or order_no".into(),
        ));
    };
    let Some((cash_id, recorded)) =
        cash_payouts::cash_of_withdrawal(&tx, withdrawal_id, order_no).await?
    else {
        return Ok(EventOutcome::Refused(format!(
            "no cash payout for withdrawal {withdrawal_id} (order_no {order_no})"
        )));
    };
    if !recorded {
        // Made before its cash.approve recorded it: that command is still running.
        let reason = format!("cash {cash_id} has not recorded its withdrawal yet");
        return wait(engine, tx, event, reason).await;
    }
    let completion =
        match complete_withdrawal(&tx, engine.policy.custody, cash_id, withdrawal, None).await? {
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
            Some(published(
                event,
                "withdrawal.succeeded",
                order,
                None,
                &[("cash", cash.clone())],
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
            Some(published(
                event,
                "withdrawal.failed",
                order,
                Some(reason),
                &[("cash", cash.clone())],
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
        events::link_journal(&tx, &event.id, journal_id).await?;
    }
    let order_id = completion.order()["id"].as_i64();
    events::set_cash(&tx, &event.id, cash_id).await?;
    done(tx, event, outcome, order_id, publish).await
}

/// A deposit event completes its recharge order through the same path as `recharge.retrieve`.
async fn apply_deposit_event(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    deposit: &Value,
) -> Result<EventOutcome, EngineError> {
    let text = |name: &str| deposit.get(name).and_then(Value::as_str);
    let (Some(deposit_id), Some(order_no)) = (text("id"), text("order_no")) else {
        return Ok(EventOutcome::Refused(
            "the deposit has no id or order_no".into(),
        ));
    };
    let Some(found) = deposits::for_event(&tx, deposit_id, order_no).await? else {
        return Ok(EventOutcome::Refused(format!(
            "no recharge order for deposit {deposit_id} (order_no {order_no})"
        )));
    };
    let order_id = found.order_id;
    if found.deposit_id.is_none() && !found.concluded {
        // Paid before its recharge command recorded the deposit: that command is running.
        let reason = format!("order {order_id} has not recorded its deposit yet");
        return wait(engine, tx, event, reason).await;
    }
    let completion = match complete_deposit(&tx, order_id, deposit, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch)),
    };
    let (outcome, publish) = match &completion {
        DepositCompletion::Credited {
            order,
            journal_id,
            late,
        } => {
            events::link_journal(&tx, &event.id, *journal_id).await?;
            (
                if *late { "credited_late" } else { "credited" },
                Some(published(
                    event,
                    "deposit.succeeded",
                    order,
                    None,
                    &late_payment(*late),
                )),
            )
        }
        DepositCompletion::Failed { order, reason } => (
            "failed",
            Some(published(event, "deposit.failed", order, Some(reason), &[])),
        ),
        DepositCompletion::Unchanged { .. } => ("unchanged", None),
    };
    done(tx, event, outcome, Some(order_id), publish).await
}

/// A decided personal account application: recorded (masked), and `account.opened` or
/// `account.refused` published.
async fn apply_application_event(
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    mut application: Value,
) -> Result<EventOutcome, EngineError> {
    mask_personal(&mut application);
    let text = |name: &str| application.get(name).and_then(Value::as_str);
    let (Some(application_id), Some(order_no), Some(status)) =
        (text("id"), text("order_no"), text("status"))
    else {
        return Ok(EventOutcome::Refused(
            "the application has no id, order_no or status".into(),
        ));
    };
    let recorded = match accounts::application_by_pingpp_id(&tx, application_id).await? {
        Some(recorded) => recorded,
        None => match accounts::application_by_order_no(&tx, order_no).await? {
            Some(recorded) if recorded.application_id.is_none() => {
                // Decided before its account.open recorded it: made with this order_no, so
                // it is that application; record it now.
                recorded
            }
            _ => {
                return Ok(EventOutcome::Refused(format!(
                    "no application {application_id} (order_no {order_no})"
                )))
            }
        },
    };
    let status = ApplicationStatus::from_pingpp(status);
    let kind = match status {
        ApplicationStatus::Succeeded => "account.opened",
        ApplicationStatus::Failed => "account.refused",
        ApplicationStatus::Pending => {
            return done(tx, event, "unchanged", None, None).await;
        }
    };
    let changed = recorded.status != status;
    accounts::record_application(
        &tx,
        recorded.id,
        status,
        Some((application_id, &application)),
    )
    .await?;
    let publish = changed.then(|| {
        let body = json!({
            "type": kind,
            "event_id": event.id,
            "user_id": recorded.user_id,
            "data": { "cus_application": application },
        });
        (kind.to_owned(), body.to_string())
    });
    let outcome = if changed {
        status.as_str()
    } else {
        "unchanged"
    };
    done(tx, event, outcome, None, publish).await
}

/// A decided merchant application: recorded (masked). Nothing is published: `merchant.get`
/// and `merchant.application.get` show it.
async fn apply_merchant_application_event(
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    mut application: Value,
) -> Result<EventOutcome, EngineError> {
    mask_personal(&mut application);
    let text = |name: &str| application.get(name).and_then(Value::as_str);
    let (Some(application_id), Some(order_no), Some(status)) =
        (text("id"), text("order_no"), text("status"))
    else {
        return Ok(EventOutcome::Refused(
            "the merchant application has no id, order_no or status".into(),
        ));
    };
    let Some(recorded) = merchants::application_at_pingpp(&tx, application_id, order_no).await?
    else {
        return Ok(EventOutcome::Refused(format!(
            "no merchant application {application_id} (order_no {order_no})"
        )));
    };
    let status = MerchantApplicationStatus::from_pingpp(status);
    // An outcome pluspay could not learn is learned now; one Ping++ decided stays decided.
    let outcome = if recorded.status == status {
        "unchanged"
    } else {
        merchants::record_application(
            &tx,
            recorded.id,
            status,
            Some((application_id, &application)),
        )
        .await?;
        status.as_str()
    };
    done(tx, event, outcome, None, None).await
}

/// A Ping++ order's event completes its purchase through the same path as `order.get`.
async fn apply_order_event(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    order: &Value,
) -> Result<EventOutcome, EngineError> {
    let text = |name: &str| order.get(name).and_then(Value::as_str);
    let (Some(id), Some(merchant_order_no)) = (text("id"), text("merchant_order_no")) else {
        return Ok(EventOutcome::Refused(
            "the order has no id or merchant_order_no".into(),
        ));
    };
    let Some(found) = purchases::lock_at_pingpp(&tx, id, merchant_order_no).await? else {
        return Ok(EventOutcome::Refused(format!(
            "no purchase for order {id} (merchant_order_no {merchant_order_no})"
        )));
    };
    if found.pingpp_order_id.is_none() && !found.concluded {
        let reason = format!(
            "order {} has not recorded its Ping++ order yet",
            found.order_id
        );
        return wait(engine, tx, event, reason).await;
    }
    let completion = match complete_order(&tx, found.order_id, order, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch)),
    };
    let (outcome, publish) = match &completion {
        OrderCompletion::Paid {
            order, journal_id, ..
        } => {
            events::link_journal(&tx, &event.id, *journal_id).await?;
            (
                "paid",
                Some(published(event, "order.succeeded", order, None, &[])),
            )
        }
        OrderCompletion::Failed { .. } => ("failed", None),
        OrderCompletion::Unchanged { .. } => ("unchanged", None),
        OrderCompletion::MirrorBehind { .. } => {
            let reason = format!(
                "order {} was paid from an e-wallet whose mirror does not hold it yet",
                found.order_id
            );
            return wait(engine, tx, event, reason).await;
        }
    };
    done(tx, event, outcome, Some(found.order_id), publish).await
}

/// A refund's event completes it through the same path as `order.refunds`.
async fn apply_refund_event(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    refund: &Value,
) -> Result<EventOutcome, EngineError> {
    let text = |name: &str| refund.get(name).and_then(Value::as_str);
    let (Some(id), Some(order_no)) = (text("id"), text("order_no")) else {
        return Ok(EventOutcome::Refused(
            "the refund has no id or order_no".into(),
        ));
    };
    let Some(found) = purchases::lock_refund_at_pingpp(&tx, id, order_no).await? else {
        return Ok(EventOutcome::Refused(format!(
            "no refund {id} (order_no {order_no})"
        )));
    };
    if found.refund_id.is_none() && !found.concluded {
        let reason = format!("refund {order_no} is not recorded yet");
        return wait(engine, tx, event, reason).await;
    }
    let completion = match complete_refund(&tx, refund, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch)),
    };
    let with_refund = |kind: &str, order: &Value, reason: Option<&String>| {
        published(event, kind, order, reason, &[("refund", refund.clone())])
    };
    let (outcome, publish) = match &completion {
        RefundCompletion::Refunded { journal_id, order } => {
            events::link_journal(&tx, &event.id, *journal_id).await?;
            (
                "refunded",
                Some(with_refund("refund.succeeded", order, None)),
            )
        }
        RefundCompletion::Failed { reason, order } => (
            "failed",
            Some(with_refund("refund.failed", order, Some(reason))),
        ),
        RefundCompletion::Unchanged { .. } => ("unchanged", None),
    };
    done(tx, event, outcome, Some(found.order_id), publish).await
}

/// A refund of a recharge's charge completes it through the same path as the pull
/// (`recharge.retrieve` of its order); `refund.succeeded` / `refund.failed` carry
/// `data.refund` as results show it.
async fn apply_recharge_refund_event(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    object: &Value,
) -> Result<EventOutcome, EngineError> {
    let facts = match crate::domain::refund::facts(object) {
        Ok(facts) => facts,
        Err(reason) => return Ok(EventOutcome::Refused(reason)),
    };
    let marked = facts
        .refund_no
        .as_deref()
        .and_then(crate::domain::refund::id_of_refund_no);
    let Some(found) = refunds::lock_for_report(&tx, &facts.id, marked).await? else {
        return Ok(EventOutcome::Refused(format!(
            "no refund {} (refund_no {:?})",
            facts.id, facts.refund_no
        )));
    };
    if found.refund_id.is_none() && found.status == RefundStatus::Pending {
        // Made before its recharge.refund recorded the answer: that command is under way.
        let reason = format!("refund {} is not recorded yet", facts.id);
        return wait(engine, tx, event, reason).await;
    }
    let completion = match complete_recharge_refund(&tx, object, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch)),
    };
    let with_refund = |kind: &str, reason: Option<&String>| {
        let refund = completion.refund().clone();
        published(
            event,
            kind,
            completion.order(),
            reason,
            &[("refund", refund)],
        )
    };
    let (outcome, publish) = match &completion {
        RechargeRefundCompletion::Succeeded { journal_id, .. } => {
            events::link_journal(&tx, &event.id, *journal_id).await?;
            ("refunded", Some(with_refund("refund.succeeded", None)))
        }
        RechargeRefundCompletion::Failed {
            journal_id, reason, ..
        } => {
            events::link_journal(&tx, &event.id, *journal_id).await?;
            ("failed", Some(with_refund("refund.failed", Some(reason))))
        }
        RechargeRefundCompletion::Unchanged { .. } => ("unchanged", None),
    };
    done(tx, event, outcome, Some(found.order_id), publish).await
}

/// An allocation's event (or its refund's, or its completion's) completes it through the same
/// path as `allocation.get`; allocations and their refunds publish `allocation.succeeded` /
/// `allocation.failed`.
async fn apply_allocation_event(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    object: &Value,
) -> Result<EventOutcome, EngineError> {
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    let (Some(id), Some(order_no)) = (text("id"), text("order_no")) else {
        return Ok(EventOutcome::Refused(
            "the allocation has no id or order_no".into(),
        ));
    };
    let Some(found) = allocations::lock_at_pingpp(&tx, id, order_no).await? else {
        return Ok(EventOutcome::Refused(format!(
            "no allocation {id} (order_no {order_no})"
        )));
    };
    if found.pingpp_id.is_none() && !found.concluded {
        let reason = format!("allocation {order_no} is not recorded yet");
        return wait(engine, tx, event, reason).await;
    }
    let completion = match complete_allocation(&tx, object, None).await? {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(EventOutcome::Refused(mismatch)),
    };
    let with_allocation = |kind: &str, order: &Value, reason: Option<&String>| {
        published(
            event,
            kind,
            order,
            reason,
            &[("allocation", object.clone())],
        )
    };
    let (outcome, publish) = match &completion {
        AllocationCompletion::Done { row, order } => (
            "completed",
            (row.kind != AllocationKind::Complete)
                .then(|| with_allocation("allocation.succeeded", order, None)),
        ),
        AllocationCompletion::Failed { row, order, reason } => (
            "failed",
            (row.kind != AllocationKind::Complete)
                .then(|| with_allocation("allocation.failed", order, Some(reason))),
        ),
        AllocationCompletion::Unchanged => ("unchanged", None),
        AllocationCompletion::MirrorBehind { row } => {
            let reason = format!(
                "allocation refund {} needs money its senders' e-wallet mirrors do not hold yet",
                row.order_no
            );
            return wait(engine, tx, event, reason).await;
        }
    };
    done(tx, event, outcome, Some(found.order_id), publish).await
}

/// Parks the event (this transaction inserted or took it up) until its next try; past
/// `worker.event_wait_secs` it is given up instead, to be dead-lettered.
async fn wait(
    engine: &Engine,
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    reason: String,
) -> Result<EventOutcome, EngineError> {
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

/// Records what the event did, commits, and says so.
async fn done(
    tx: deadpool_postgres::Transaction<'_>,
    event: &PingppEvent,
    outcome: &str,
    order_id: Option<i64>,
    publish: Option<(String, String)>,
) -> Result<EventOutcome, EngineError> {
    events::set_outcome(&tx, &event.id, outcome, order_id, publish.as_ref()).await?;
    tx.commit().await?;
    Ok(EventOutcome::Done {
        publish,
        replayed: false,
    })
}

/// The message on `<namespace>.events`: `{type, event_id, user_id, data: {order, reason?,
/// ...extra}}`, `user_id` the order's owner.
fn published(
    event: &PingppEvent,
    kind: &str,
    order: &Value,
    reason: Option<&String>,
    extra: &[(&str, Value)],
) -> (String, String) {
    let mut data = json!({ "order": order });
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    for (name, value) in extra {
        data[*name] = value.clone();
    }
    let body = json!({
        "type": kind,
        "event_id": event.id,
        "user_id": order["owner_id"],
        "data": data,
    });
    (kind.to_owned(), body.to_string())
}

/// `data.late_payment: true` when the order had been marked failed before Ping++ confirmed it.
fn late_payment(late: bool) -> Vec<(&'static str, Value)> {
    if late {
        vec![("late_payment", json!(true))]
    } else {
        Vec::new()
    }
}
