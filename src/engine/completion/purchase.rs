//! A Ping++ order completes its purchase, and a refund its share of it, through one path for
//! the webhook, the `order.get` and `order.refunds` pulls and the commands that made them. The
//! purchase's rows are locked first, so racing callers complete once.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::db::ledger::{insert_orders, lock_merchant, lock_wallets, post_journal};
use crate::db::{allocations, orders, purchases};
use crate::domain::ledger::{AccountRef, SystemAccount};
use crate::domain::order::OrderState;
use crate::domain::purchase::{self, RefundStatus};
use crate::engine::completion::allocation::held_of;
use crate::error::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCompletion {
    /// Paid: the money went to the seller just now (`late`: the order had been marked failed).
    Paid {
        order: Value,
        journal_id: i64,
        late: bool,
    },
    /// Canceled unpaid: the order failed just now.
    Failed { order: Value },
    /// Final before, or still payable.
    Unchanged { order: Value },
    /// Paid from the e-wallet at Ping++, but its mirror does not hold the amount yet (a
    /// deposit whose webhook has not come, a withdrawal held here and not yet at Ping++):
    /// nothing moved; it completes once the mirror has caught up.
    MirrorBehind { order: Value },
}

impl OrderCompletion {
    pub fn order(&self) -> &Value {
        match self {
            OrderCompletion::Paid { order, .. }
            | OrderCompletion::Failed { order }
            | OrderCompletion::Unchanged { order }
            | OrderCompletion::MirrorBehind { order } => order,
        }
    }
}

/// Completes the purchase of buyer's order `order_id` by what Ping++'s `order` says.
/// `Err(mismatch)`: the order is not this purchase's, or unreadable; nothing moved.
pub async fn complete_order(
    tx: &Transaction<'_>,
    order_id: i64,
    pingpp_order: &Value,
    command_id: Option<&str>,
) -> Result<Result<OrderCompletion, String>, EngineError> {
    let facts = match purchase::order_facts(pingpp_order) {
        Ok(facts) => facts,
        Err(reason) => return Ok(Err(reason)),
    };
    let Some(locked) = purchases::lock(tx, order_id).await? else {
        return Ok(Err(format!("order {order_id} is not a purchase")));
    };
    if facts.merchant_order_no != locked.merchant_order_no
        || facts.amount != locked.amount
        || locked
            .pingpp_order_id
            .as_deref()
            .is_some_and(|id| id != facts.id)
    {
        return Ok(Err(format!(
            "Ping++ order {} ({}, {} fen) is not order {order_id}'s ({}, {} fen)",
            facts.id,
            facts.merchant_order_no,
            facts.amount,
            locked.merchant_order_no,
            locked.amount
        )));
    }
    let paid_by = facts
        .paid
        .as_ref()
        .map(|(charge, channel)| (channel.as_str(), charge.as_str()));
    purchases::record_order(
        tx,
        order_id,
        &facts.id,
        &facts.status,
        pingpp_order,
        paid_by,
    )
    .await?;
    Ok(Ok(match (locked.state, &facts.paid) {
        (OrderState::Waiting | OrderState::Failed, Some((_, channel))) => {
            let late = locked.state == OrderState::Failed;
            if late {
                tracing::warn!(
                    order_id,
                    "a purchase paid after it was marked failed: completed late"
                );
            }
            // A split order's money waits for its allocations; any other goes to the seller.
            let to = if locked.allocation {
                AccountRef::System(SystemAccount::AllocationsPending)
            } else {
                AccountRef::Merchant(locked.seller)
            };
            let journals = purchase::payment(locked.buyer, to, locked.amount, channel)
                .ok_or_else(|| EngineError::Broken(format!("order {order_id} moves no money")))?;
            let wallets = lock_wallets(tx, &[locked.buyer]).await?;
            let balance = wallets.get(&locked.buyer).map_or(0, |w| w.figures.balance);
            if channel == "balance" && balance < locked.amount {
                tracing::warn!(
                    order_id,
                    "paid from the e-wallet at Ping++ before its mirror holds the amount: waiting"
                );
                return Ok(Ok(OrderCompletion::MirrorBehind {
                    order: locked.order,
                }));
            }
            if !locked.allocation {
                lock_merchant(tx, locked.seller).await?;
            }
            let mut journal_id = 0;
            for (kind, journal) in &journals {
                journal_id = post_journal(tx, kind, command_id, journal, &wallets).await?;
            }
            let order = orders::mark_succeeded(tx, order_id, journal_id).await?;
            if locked.allocation {
                // A split order's seller earns with its completion.
                return Ok(Ok(OrderCompletion::Paid {
                    order,
                    journal_id,
                    late,
                }));
            }
            let seller_order =
                purchase::seller_order(locked.seller, locked.amount, order_id, &locked.subject);
            let seller_order = insert_orders(tx, command_id, Some(journal_id), &[seller_order])
                .await?
                .remove(0);
            let seller_order_id = seller_order["id"]
                .as_i64()
                .ok_or_else(|| EngineError::Broken("an order without an id".into()))?;
            purchases::set_seller_order(tx, order_id, seller_order_id).await?;
            OrderCompletion::Paid {
                order,
                journal_id,
                late,
            }
        }
        (OrderState::Waiting, None) if facts.canceled => OrderCompletion::Failed {
            order: orders::mark_failed(tx, order_id, None).await?,
        },
        _ => OrderCompletion::Unchanged {
            order: locked.order,
        },
    }))
}

#[derive(Debug, Clone, PartialEq)]
pub enum RefundCompletion {
    /// Succeeded: the money went back to the buyer just now.
    Refunded { journal_id: i64, order: Value },
    /// Failed: what it held of the order is free again.
    Failed { reason: String, order: Value },
    /// Final before, or still pending.
    Unchanged { order: Value },
}

/// Completes refund `refund` by what Ping++ says of it. `Err(mismatch)`: it is not a refund
/// pluspay asked for, or unreadable.
pub async fn complete_refund(
    tx: &Transaction<'_>,
    refund: &Value,
    command_id: Option<&str>,
) -> Result<Result<RefundCompletion, String>, EngineError> {
    let facts = match purchase::refund_facts(refund) {
        Ok(facts) => facts,
        Err(reason) => return Ok(Err(reason)),
    };
    let Some(recorded) = purchases::lock_refund_at_pingpp(tx, &facts.id, &facts.order_no).await?
    else {
        return Ok(Err(format!(
            "no refund {} (order_no {})",
            facts.id, facts.order_no
        )));
    };
    if recorded.amount != facts.amount
        || recorded.order_no != facts.order_no
        || recorded
            .refund_id
            .as_deref()
            .is_some_and(|id| id != facts.id)
    {
        return Ok(Err(format!(
            "refund {} of {} fen is not the one asked for as {}",
            facts.id, facts.amount, recorded.order_no
        )));
    }
    if recorded.status == RefundStatus::Failed
        && recorded.refund_id.is_none()
        && facts.status != RefundStatus::Failed
    {
        // Taken as refused (Ping++ refused it and its list did not show it), and what it
        // held released: Ping++ made it after all. Nothing can move without a person looking.
        return Ok(Err(format!(
            "Ping++ reports refund {} ({}) as {}, which pluspay had taken as refused",
            facts.id,
            facts.order_no,
            facts.status.as_str()
        )));
    }
    let locked = purchases::lock(tx, recorded.order_id)
        .await?
        .ok_or_else(|| EngineError::Broken(format!("order {} vanished", recorded.order_id)))?;
    // A decided refund stays decided; what is recorded of it follows Ping++ otherwise.
    let status = match (recorded.status, facts.status) {
        (RefundStatus::Pending, now) => now,
        (decided, _) => decided,
    };
    purchases::record_refund(tx, recorded.id, status, Some((&facts.id, refund))).await?;
    Ok(Ok(match (recorded.status, facts.status) {
        (RefundStatus::Pending, RefundStatus::Succeeded) => {
            let channel = locked.channel.clone().unwrap_or_else(|| "balance".into());
            // Of a split order, from what Ping++ still holds for it first, then from the seller.
            let from_held = if locked.allocation {
                let held = held_of(tx, &locked).await?;
                recorded.amount.min(held.settling().max(0))
            } else {
                0
            };
            if from_held > 0 {
                allocations::set_refund_from_held(tx, recorded.id, from_held).await?;
            }
            let journals = purchase::refund(
                locked.buyer,
                locked.seller,
                recorded.amount,
                from_held,
                &channel,
            )
            .ok_or_else(|| EngineError::Broken("a refund that moves no money".into()))?;
            let wallets = lock_wallets(tx, &[locked.buyer]).await?;
            lock_merchant(tx, locked.seller).await?;
            let mut ids = Vec::new();
            for (kind, journal) in &journals {
                ids.push(post_journal(tx, kind, command_id, journal, &wallets).await?);
            }
            let journal_id = ids[0];
            let drafts = purchase::refund_orders(
                locked.buyer,
                locked.seller,
                recorded.amount,
                recorded.amount - from_held,
                recorded.order_id,
            );
            insert_orders(tx, command_id, Some(journal_id), &drafts).await?;
            RefundCompletion::Refunded {
                journal_id,
                order: locked.order,
            }
        }
        (RefundStatus::Pending, RefundStatus::Failed) => RefundCompletion::Failed {
            reason: facts.reason.unwrap_or_else(|| "退款失败".into()),
            order: locked.order,
        },
        _ => RefundCompletion::Unchanged {
            order: locked.order,
        },
    }))
}
