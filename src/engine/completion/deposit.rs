//! A deposit completes its recharge order: succeeded credits the wallet (the e-wallet's
//! mirror) once, even after the order was marked failed (a late payment, as for charges);
//! failed, canceled or expired fails the order; anything else changes nothing. The order row
//! is locked first, so racing callers (the webhook, `recharge.retrieve`) settle once.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::db::deposits;
use crate::db::ledger::{lock_wallets, post_journal};
use crate::db::orders;
use crate::domain::deposit::{self, DepositState};
use crate::domain::order::OrderState;
use crate::engine::provider::unix_now;
use crate::error::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub enum DepositCompletion {
    /// Succeeded: credited just now by this journal; `late` when the order had been marked
    /// failed before.
    Credited {
        order: Value,
        journal_id: i64,
        late: bool,
    },
    /// Failed, canceled or expired: order state -1 just now.
    Failed { order: Value, reason: String },
    /// Final before, or still waiting: nothing changed but the deposit's recorded status.
    Unchanged { order: Value },
}

impl DepositCompletion {
    pub fn order(&self) -> &Value {
        match self {
            DepositCompletion::Credited { order, .. }
            | DepositCompletion::Failed { order, .. }
            | DepositCompletion::Unchanged { order } => order,
        }
    }
}

/// Completes order `order_id` by what `deposit` says; `command_id` is the command doing it, if a
/// command does. `Err(mismatch)`: the deposit is not this order's, or unreadable; nothing moved.
pub async fn complete_deposit(
    tx: &Transaction<'_>,
    order_id: i64,
    deposit: &Value,
    command_id: Option<&str>,
) -> Result<Result<DepositCompletion, String>, EngineError> {
    let facts = match deposit::facts(deposit, unix_now()) {
        Ok(facts) => facts,
        Err(reason) => return Ok(Err(reason)),
    };
    let Some(locked) = deposits::lock_for_completion(tx, order_id).await? else {
        return Ok(Err(format!("order {order_id} is not a deposit")));
    };
    if facts.order_no != locked.order_no
        || facts.amount != locked.amount
        || locked
            .deposit_id
            .as_deref()
            .is_some_and(|id| id != facts.id)
    {
        return Ok(Err(format!(
            "deposit {} (order_no {}, {} fen) is not order {order_id}'s ({}, {} fen)",
            facts.id, facts.order_no, facts.amount, locked.order_no, locked.amount
        )));
    }
    deposits::record_deposit(tx, order_id, &facts.id, &facts.status, deposit).await?;
    Ok(Ok(match (locked.state, &facts.state) {
        (OrderState::Waiting | OrderState::Failed, DepositState::Succeeded) => {
            let late = locked.state == OrderState::Failed;
            if late {
                crate::metrics::late_payment();
                tracing::warn!(
                    order_id,
                    deposit = %facts.id,
                    "a deposit confirmed for an order marked failed: credited as a late payment"
                );
            }
            let journal = deposit::credit(locked.owner_id, locked.amount).ok_or_else(|| {
                EngineError::Broken(format!("order {order_id} has no creditable amount"))
            })?;
            let wallets = lock_wallets(tx, &[locked.owner_id]).await?;
            let journal_id = post_journal(tx, "deposit", command_id, &journal, &wallets).await?;
            let order = orders::mark_succeeded(tx, order_id, journal_id).await?;
            DepositCompletion::Credited {
                order,
                journal_id,
                late,
            }
        }
        (OrderState::Waiting, DepositState::Failed { reason }) => {
            let order = orders::mark_failed(tx, order_id, None).await?;
            DepositCompletion::Failed {
                order,
                reason: reason.clone(),
            }
        }
        _ => DepositCompletion::Unchanged {
            order: locked.order,
        },
    }))
}
