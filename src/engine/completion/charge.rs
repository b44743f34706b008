//! A charge completes its recharge order: paid credits the wallet once (even after the order
//! was marked failed: a late payment), failed or expired fails the order, pending changes
//! nothing.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::db::ledger::{lock_wallets, post_journal};
use crate::db::{orders, recharges};
use crate::domain::order::OrderState;
use crate::domain::recharge::{self, charge_facts, Completion, Mismatch, WaitingRecharge};
use crate::engine::provider::unix_now;
use crate::error::EngineError;

/// What a charge did to its order.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeCompletion {
    /// Paid: the wallet was credited just now (state 1), by this journal. `late`: the order
    /// had been marked failed (-1) before the payment was confirmed; the payer's money reached
    /// Ping++ all the same, so it is credited (a late payment).
    Credited {
        order: Value,
        journal_id: i64,
        late: bool,
    },
    /// Failed or expired: state -1 just now.
    Failed { order: Value, reason: String },
    /// Already final before, or still payable: nothing changed.
    Unchanged { order: Value },
}

impl ChargeCompletion {
    pub fn order(&self) -> &Value {
        match self {
            ChargeCompletion::Credited { order, .. }
            | ChargeCompletion::Failed { order, .. }
            | ChargeCompletion::Unchanged { order } => order,
        }
    }
}

/// Completes order `order_id` by what `charge` says; `command_id` is the command doing it, if a
/// command does. `Err(mismatch)`: the charge is not this order's, or unreadable; nothing moved.
pub async fn complete_charge(
    tx: &Transaction<'_>,
    order_id: i64,
    charge: &Value,
    command_id: Option<&str>,
) -> Result<Result<ChargeCompletion, Mismatch>, EngineError> {
    let facts = match charge_facts(charge, unix_now()) {
        Ok(facts) => facts,
        // What Ping++ signed or answered will read the same way next time: refuse it now.
        Err(reason) => return Ok(Err(Mismatch::Unreadable { reason })),
    };
    let locked = recharges::lock_for_completion(tx, order_id).await?;
    let Some(charge_id) = locked.charge_id else {
        return Ok(Err(Mismatch::Charge {
            charge: facts.id,
            order: order_id,
            expected: "none yet".into(),
        }));
    };
    let waiting = WaitingRecharge {
        order_id,
        owner: locked.owner_id,
        amount: locked.amount,
        charge_id,
        livemode: locked.livemode,
        user_fee: locked.user_fee,
        bonus: locked.balance_bonus,
    };
    let completion = match recharge::complete(&waiting, &facts) {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(Err(mismatch)),
    };
    let late = match (locked.state, &completion) {
        (OrderState::Waiting, _) => false,
        // Marked failed (expired by our clock, or a failure reported) and then paid after all.
        (OrderState::Failed, Completion::Credit(_)) => true,
        _ => {
            return Ok(Ok(ChargeCompletion::Unchanged {
                order: locked.order,
            }))
        }
    };
    Ok(Ok(match completion {
        Completion::Wait => ChargeCompletion::Unchanged {
            order: locked.order,
        },
        Completion::Credit(journal) => {
            if late {
                crate::metrics::late_payment();
                tracing::warn!(
                    order_id,
                    charge = %facts.id,
                    "a payment confirmed for an order marked failed: credited as a late payment"
                );
            }
            let wallets = lock_wallets(tx, &[waiting.owner]).await?;
            let journal_id = post_journal(tx, "recharge", command_id, &journal, &wallets).await?;
            let order = orders::mark_succeeded(tx, order_id, journal_id).await?;
            ChargeCompletion::Credited {
                order,
                journal_id,
                late,
            }
        }
        Completion::Fail { reason } => {
            let order = orders::mark_failed(tx, order_id, None).await?;
            ChargeCompletion::Failed { order, reason }
        }
    }))
}
