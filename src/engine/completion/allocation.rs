//! An allocation, allocation refund or completion of a split order completes once, through one
//! path for the webhook, `allocation.get` and the commands that made them: a share given moves
//! from `allocations_pending` to the recipient's e-wallet, a share given back the other way, a
//! completion moves what is still held to the seller's sub-merchant. The purchase's rows are
//! locked first.

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::db::allocations::{self, Allocation};
use crate::db::ledger::{insert_orders, lock_merchant, lock_wallets, post_journal};
use crate::db::purchases::{self, Purchase};
use crate::domain::allocation::{self, Held, Kind, Status};
use crate::domain::order::OrderState;
use crate::domain::purchase;
use crate::error::EngineError;

/// What Ping++ holds for the split order, as pluspay recorded it.
pub(crate) async fn held_of(tx: &Transaction<'_>, order: &Purchase) -> Result<Held, EngineError> {
    let paid = if order.state == OrderState::Succeeded {
        order.amount
    } else {
        0
    };
    let rows: Vec<(Kind, Status, i64)> = allocations::of_order(tx, order.order_id)
        .await?
        .iter()
        .map(|a| (a.kind, a.status, a.amount))
        .collect();
    let pending_refunds = purchases::refunds_of(tx, order.order_id)
        .await?
        .iter()
        .filter(|r| r.status == purchase::RefundStatus::Pending)
        .map(|r| r.amount)
        .sum();
    let from_held = allocations::refunds_from_held(tx, order.order_id).await?;
    Ok(Held::of(paid, from_held, pending_refunds, &rows))
}

#[derive(Debug, Clone)]
pub enum AllocationCompletion {
    /// Succeeded just now: its shares (or the rest) moved.
    Done { row: Allocation, order: Value },
    /// Failed just now: what it held is free again.
    Failed {
        row: Allocation,
        order: Value,
        reason: String,
    },
    /// Final before, or still under way.
    Unchanged,
    /// A share given back that a sender's e-wallet mirror does not hold yet: nothing moved.
    MirrorBehind { row: Allocation },
}

/// Completes what `object` (an allocation, allocation refund or completion) says.
/// `Err(mismatch)`: not one pluspay asked for, or unreadable.
pub async fn complete_allocation(
    tx: &Transaction<'_>,
    object: &Value,
    command_id: Option<&str>,
) -> Result<Result<AllocationCompletion, String>, EngineError> {
    let facts = match allocation::facts(object) {
        Ok(facts) => facts,
        Err(reason) => return Ok(Err(reason)),
    };
    let Some(row) = allocations::lock_at_pingpp(tx, &facts.id, &facts.order_no).await? else {
        return Ok(Err(format!(
            "no allocation {} (order_no {})",
            facts.id, facts.order_no
        )));
    };
    if row.kind != facts.kind
        || row.order_no != facts.order_no
        || row.pingpp_id.as_deref().is_some_and(|id| id != facts.id)
    {
        return Ok(Err(format!(
            "{} {} is not the one asked for as {}",
            facts.kind.as_str(),
            facts.id,
            row.order_no
        )));
    }
    if row.status == Status::Failed && row.pingpp_id.is_none() && facts.status != Status::Failed {
        return Ok(Err(format!(
            "Ping++ reports {} {} as {}, which pluspay had taken as refused",
            facts.kind.as_str(),
            facts.id,
            facts.status.as_str()
        )));
    }
    let order = purchases::lock(tx, row.order_id)
        .await?
        .ok_or_else(|| EngineError::Broken(format!("order {} vanished", row.order_id)))?;
    if row.status != Status::Pending || facts.status == Status::Pending {
        if row.status == Status::Pending {
            allocations::record(tx, row.id, Status::Pending, Some((&facts.id, object)), None)
                .await?;
        }
        return Ok(Ok(AllocationCompletion::Unchanged));
    }
    if order.reward {
        // A reward's next step may be asked for now.
        purchases::set_settle_due(tx, order.order_id, Some(0.0)).await?;
    }
    if facts.status == Status::Failed {
        allocations::record(tx, row.id, Status::Failed, Some((&facts.id, object)), None).await?;
        return Ok(Ok(AllocationCompletion::Failed {
            reason: facts.reason.unwrap_or_else(|| "分账失败".into()),
            row,
            order: order.order,
        }));
    }
    let kind = row.kind;
    let mut settled = None;
    match kind {
        Kind::Allocation | Kind::Refund => {
            let users: Vec<i64> = row.shares.iter().map(|s| s.user).collect();
            let wallets = lock_wallets(tx, &users).await?;
            if kind == Kind::Refund {
                let short = row
                    .shares
                    .iter()
                    .any(|s| wallets.get(&s.user).map_or(0, |w| w.figures.balance) < s.amount);
                if short {
                    return Ok(Ok(AllocationCompletion::MirrorBehind { row }));
                }
            }
            for share in &row.shares {
                let (name, journal, direction) = match kind {
                    Kind::Allocation => {
                        ("allocation", allocation::give(share.user, share.amount), 1)
                    }
                    _ => (
                        "allocation.refund",
                        allocation::take_back(share.user, share.amount),
                        -1,
                    ),
                };
                let journal = journal
                    .ok_or_else(|| EngineError::Broken("a share that moves no money".into()))?;
                let journal_id = post_journal(tx, name, command_id, &journal, &wallets).await?;
                let draft =
                    allocation::share_order(share.user, share.amount, row.order_id, direction);
                insert_orders(tx, command_id, Some(journal_id), &[draft]).await?;
            }
        }
        Kind::Complete => {
            let held = held_of(tx, &order).await?;
            let amount = held.settling().max(0);
            if amount > 0 {
                lock_merchant(tx, order.seller).await?;
                let journal = allocation::settle(order.seller, amount).ok_or_else(|| {
                    EngineError::Broken("a completion that moves no money".into())
                })?;
                let wallets = lock_wallets(tx, &[]).await?;
                let journal_id =
                    post_journal(tx, "allocation.complete", command_id, &journal, &wallets).await?;
                let draft =
                    purchase::seller_order(order.seller, amount, order.order_id, &order.subject);
                let made = insert_orders(tx, command_id, Some(journal_id), &[draft])
                    .await?
                    .remove(0);
                if let Some(id) = made["id"].as_i64() {
                    purchases::set_seller_order(tx, order.order_id, id).await?;
                }
            }
            settled = Some(amount);
        }
    }
    allocations::record(
        tx,
        row.id,
        Status::Succeeded,
        Some((&facts.id, object)),
        settled,
    )
    .await?;
    Ok(Ok(AllocationCompletion::Done {
        row,
        order: order.order,
    }))
}
