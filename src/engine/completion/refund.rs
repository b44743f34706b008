//! A Ping++ refund of a charge completes its refund of a recharge, through one path for the
//! webhook (`refund.succeeded`, `refund.failed`), the pull (`recharge.retrieve` of the
//! refund's order) and the `recharge.refund` command that made it. The refund's row is locked
//! first, so racing callers move its money once.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::db::ledger::{lock_wallets, post_journal};
use crate::db::refunds::{self, Report};
use crate::domain::purchase::RefundStatus;
use crate::domain::refund::{self, Settle};
use crate::error::EngineError;

/// What a report did to its refund; each carries the refund's own order and the refund as
/// results and events show them, as they are now.
#[derive(Debug, Clone, PartialEq)]
pub enum RechargeRefundCompletion {
    /// Succeeded just now: `pending_refunds` → `pingpp_clearing`, the order 1.
    Succeeded {
        order: Value,
        refund: Value,
        journal_id: i64,
    },
    /// Failed just now: the money went back to the wallet, the order -1.
    Failed {
        order: Value,
        refund: Value,
        journal_id: i64,
        reason: String,
    },
    /// Decided before, or still pending.
    Unchanged { order: Value, refund: Value },
}

impl RechargeRefundCompletion {
    pub fn order(&self) -> &Value {
        match self {
            Self::Succeeded { order, .. }
            | Self::Failed { order, .. }
            | Self::Unchanged { order, .. } => order,
        }
    }

    pub fn refund(&self) -> &Value {
        match self {
            Self::Succeeded { refund, .. }
            | Self::Failed { refund, .. }
            | Self::Unchanged { refund, .. } => refund,
        }
    }
}

/// Completes the refund that Ping++'s `object` is about by what it says; `command_id` is the
/// command doing it, if one does. `Err(mismatch)`: it is no refund pluspay asked for, it
/// disagrees with the one asked for, or it contradicts how that one ended; nothing moved.
pub async fn complete_recharge_refund(
    tx: &Transaction<'_>,
    object: &Value,
    command_id: Option<&str>,
) -> Result<Result<RechargeRefundCompletion, String>, EngineError> {
    let facts = match refund::facts(object) {
        Ok(facts) => facts,
        Err(reason) => return Ok(Err(reason)),
    };
    let marked = facts.refund_no.as_deref().and_then(refund::id_of_refund_no);
    let Some(recorded) = refunds::lock_for_report(tx, &facts.id, marked).await? else {
        return Ok(Err(format!(
            "no refund {} (refund_no {:?})",
            facts.id, facts.refund_no
        )));
    };
    if recorded.charge_id != facts.charge
        || recorded.amount != facts.amount
        || recorded
            .refund_id
            .as_deref()
            .is_some_and(|id| id != facts.id)
    {
        return Ok(Err(format!(
            "refund {} of charge {} ({} fen) is not refund {} ({}, {} fen)",
            facts.id,
            facts.charge,
            facts.amount,
            refund::refund_no(recorded.id),
            recorded.charge_id,
            recorded.amount
        )));
    }
    if recorded.refund_id.is_none() && recorded.status == RefundStatus::Failed {
        // Taken as refused (Ping++ refused the create) and the money given back: Ping++ made it
        // after all. Nothing moves without a person looking.
        return Ok(Err(format!(
            "Ping++ reports refund {} ({}) as {}, which pluspay had taken as refused",
            facts.id,
            refund::refund_no(recorded.id),
            facts.status.as_str()
        )));
    }
    let settle = match refund::transition(recorded.status, facts.status) {
        Ok(settle) => settle,
        Err(reason) => return Ok(Err(format!("refund {}: {reason}", facts.id))),
    };
    let status = settle.map_or(recorded.status, Settle::status);
    let report = Report {
        status,
        refund: Some((&facts.id, object)),
        failure_code: facts.failure_code.as_deref(),
        failure_msg: facts.failure_msg.as_deref(),
    };
    refunds::record(tx, recorded.id, &report).await?;
    let Some(outcome) = settle else {
        return Ok(Ok(RechargeRefundCompletion::Unchanged {
            order: refunds::order(tx, recorded.order_id).await?,
            refund: refunds::json(tx, recorded.id).await?,
        }));
    };
    let journal_id = settle_money(tx, &recorded, outcome, command_id).await?;
    let order = refunds::set_order_state(tx, recorded.order_id, outcome.order_state()).await?;
    let refund = refunds::json(tx, recorded.id).await?;
    Ok(Ok(match outcome {
        Settle::Succeed => RechargeRefundCompletion::Succeeded {
            order,
            refund,
            journal_id,
        },
        Settle::Fail => RechargeRefundCompletion::Failed {
            order,
            refund,
            journal_id,
            reason: facts
                .failure_msg
                .unwrap_or_else(|| refund::MSG_FAILED.into()),
        },
    }))
}

/// Moves a refund's money at its end (the row locked by the caller): one journal.
pub(crate) async fn settle_money(
    tx: &Transaction<'_>,
    recorded: &refunds::Recorded,
    outcome: Settle,
    command_id: Option<&str>,
) -> Result<i64, EngineError> {
    let (kind, journal) = refund::settle(outcome, recorded.user_id, recorded.amount)
        .ok_or_else(|| EngineError::Broken(format!("refund {} moves no money", recorded.id)))?;
    let wallets = match outcome {
        Settle::Fail => lock_wallets(tx, &[recorded.user_id]).await?,
        Settle::Succeed => Default::default(),
    };
    post_journal(tx, kind, command_id, &journal, &wallets).await
}
