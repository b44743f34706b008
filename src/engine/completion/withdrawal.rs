//! A withdrawal settles its cash record: succeeded moves the money from `pending_payouts` to
//! `paid_out` and the order succeeds; failed or canceled returns it to the wallet, the cash
//! record is rejected with Ping++'s reason and the order fails. The cash row is locked first.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::db::cash_payouts;
use crate::db::cashes::{self, LockedCash};
use crate::db::ledger::{lock_wallets, post_journal};
use crate::domain::cash::{self, CashStatus, WithdrawalFacts, WithdrawalState};
use crate::domain::custody::Custody;
use crate::domain::order::OrderState;
use crate::error::EngineError;
use crate::pingpp::WithdrawalRequest;

/// A payout attempt as recorded in `cash_payouts`.
#[derive(Debug, Clone)]
pub(crate) struct Payout {
    pub id: i64,
    pub cash_id: i64,
    pub request: WithdrawalRequest,
    pub withdrawal: Option<Value>,
    /// When the payout was begun (unix s): no withdrawal of it can be older.
    pub begun_at: i64,
}

fn unreadable(e: serde_json::Error) -> EngineError {
    EngineError::Broken(format!("a cash payout's stored request is unreadable: {e}"))
}

impl Payout {
    pub(crate) fn from_recorded(
        recorded: cash_payouts::Recorded,
        cash_id: i64,
    ) -> Result<Payout, EngineError> {
        Ok(Payout {
            id: recorded.id,
            cash_id,
            request: serde_json::from_str(&recorded.request).map_err(unreadable)?,
            withdrawal: recorded
                .withdrawal
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(unreadable)?,
            begun_at: recorded.begun_at,
        })
    }
}

/// What a withdrawal did to its cash record.
#[derive(Debug, Clone, PartialEq)]
pub enum WithdrawalCompletion {
    /// Succeeded: the money went from pending_payouts to paid_out just now; order state 1.
    PaidOut {
        cash: Value,
        order: Value,
        journal_id: i64,
    },
    /// Failed or canceled: the money went back to the wallet just now; status 2, order -1.
    Returned {
        cash: Value,
        order: Value,
        journal_id: i64,
        reason: String,
    },
    /// Settled before, still under way, or given up: nothing changed but its recorded status.
    Unchanged { cash: Value, order: Value },
    /// Final at Ping++, but the cash record's approval (or rejection) has not finished yet:
    /// that command settles it when it does.
    NotDecidedYet { cash: Value, order: Value },
}

impl WithdrawalCompletion {
    pub fn cash(&self) -> &Value {
        match self {
            WithdrawalCompletion::PaidOut { cash, .. }
            | WithdrawalCompletion::Returned { cash, .. }
            | WithdrawalCompletion::Unchanged { cash, .. }
            | WithdrawalCompletion::NotDecidedYet { cash, .. } => cash,
        }
    }

    pub fn order(&self) -> &Value {
        match self {
            WithdrawalCompletion::PaidOut { order, .. }
            | WithdrawalCompletion::Returned { order, .. }
            | WithdrawalCompletion::Unchanged { order, .. }
            | WithdrawalCompletion::NotDecidedYet { order, .. } => order,
        }
    }
}

/// A withdrawal Ping++ answered, read; unreadable is a broken answer, not the command's fault.
pub(crate) fn facts(withdrawal: &Value) -> Result<WithdrawalFacts, EngineError> {
    cash::withdrawal_facts(withdrawal)
        .map_err(|e| EngineError::Broken(format!("unreadable Ping++ withdrawal: {e}")))
}

/// Records what Ping++ says of the payout's withdrawal, on the payout and (while the payout is
/// active) on the cash record. Refuses a withdrawal that isn't this payout's.
pub(crate) async fn observe(
    tx: &Transaction<'_>,
    payout: &Payout,
    cash: &LockedCash,
    withdrawal: &Value,
) -> Result<WithdrawalFacts, EngineError> {
    let facts = facts(withdrawal)?;
    if facts.order_no != payout.request.order_no || facts.amount != cash.value {
        return Err(EngineError::Broken(format!(
            "Ping++ returned withdrawal {} for another order_no or amount than {}",
            facts.id, payout.request.order_no
        )));
    }
    let recorded = cash_payouts::record_withdrawal(
        tx,
        payout.id,
        &facts.id,
        facts.status.as_str(),
        &withdrawal.to_string(),
    )
    .await?;
    match recorded {
        None => Err(EngineError::Broken(format!(
            "payout {} has another withdrawal than {}",
            payout.id, facts.id
        ))),
        Some(active) => {
            if active {
                cashes::set_withdrawal(tx, cash.id, Some((&facts.id, facts.status.as_str())))
                    .await?;
            }
            Ok(facts)
        }
    }
}

/// Settles cash record `cash_id` by what `withdrawal` says, for the webhook, `cash.retrieve`,
/// the decisions and an e-wallet `cash` alike (`custody` names the accounts the money moves
/// between); `command_id` is the command doing it, if a command does. `Err`
/// when the withdrawal is not this cash record's (or unreadable).
pub async fn complete_withdrawal(
    tx: &Transaction<'_>,
    custody: Custody,
    cash_id: i64,
    withdrawal: &Value,
    command_id: Option<&str>,
) -> Result<Result<WithdrawalCompletion, String>, EngineError> {
    let facts = match cash::withdrawal_facts(withdrawal) {
        Ok(facts) => facts,
        Err(e) => return Ok(Err(e)),
    };
    let Some(locked) = cashes::lock(tx, cash_id).await? else {
        return Ok(Err(format!("no cash record {cash_id}")));
    };
    let Some(recorded) = cash_payouts::by_order_no(tx, cash_id, &facts.order_no).await? else {
        return Ok(Err(format!(
            "withdrawal {} (order_no {}) is not a payout of cash {cash_id}",
            facts.id, facts.order_no
        )));
    };
    if recorded
        .withdrawal_id
        .as_deref()
        .is_some_and(|id| id != facts.id)
        || facts.amount != locked.value
    {
        return Ok(Err(format!(
            "withdrawal {} of {} fen does not match cash {cash_id} of {} fen",
            facts.id, facts.amount, locked.value
        )));
    }
    let payout = Payout {
        id: recorded.id,
        cash_id,
        request: serde_json::from_str(&recorded.request).map_err(unreadable)?,
        withdrawal: None,
        begun_at: 0,
    };
    observe(tx, &payout, &locked, withdrawal).await?;
    let order_state = cashes::order_state(tx, &locked).await?;
    let journal = cash::settle(custody, &facts.state, locked.owner, locked.value);
    let completion = match journal {
        Some(journal)
            if recorded.active
                && locked.status == CashStatus::Approved
                && order_state == OrderState::Waiting =>
        {
            let wallets = lock_wallets(tx, &[locked.owner]).await?;
            let kind = match facts.state {
                WithdrawalState::Succeeded => "cash.payout",
                _ => "cash.payout_returned",
            };
            let journal_id = post_journal(tx, kind, command_id, &journal, &wallets).await?;
            match &facts.state {
                WithdrawalState::Returned { reason } => {
                    cashes::settle_payout(tx, &locked, Some(reason)).await?;
                    let (cash, order) = cashes::with_order_json(tx, locked.id).await?;
                    WithdrawalCompletion::Returned {
                        cash,
                        order,
                        journal_id,
                        reason: reason.clone(),
                    }
                }
                _ => {
                    cashes::settle_payout(tx, &locked, None).await?;
                    let (cash, order) = cashes::with_order_json(tx, locked.id).await?;
                    WithdrawalCompletion::PaidOut {
                        cash,
                        order,
                        journal_id,
                    }
                }
            }
        }
        Some(_) if recorded.active && locked.status == CashStatus::Waiting => {
            let (cash, order) = cashes::with_order_json(tx, locked.id).await?;
            WithdrawalCompletion::NotDecidedYet { cash, order }
        }
        _ => {
            let (cash, order) = cashes::with_order_json(tx, locked.id).await?;
            WithdrawalCompletion::Unchanged { cash, order }
        }
    };
    Ok(Ok(completion))
}
