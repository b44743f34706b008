//! Split purchases with the money at Ping++: `allocation.create`, `allocation.refund`,
//! `allocation.complete` (the seller's, for their split orders) and `allocation.get`.
//!
//! Each create records its row (and so holds its amount of the order) before Ping++ is asked,
//! sends the same `order_no` on every retry, and is completed once by its webhook,
//! `allocation.get` or the command itself, through `completion::allocation`. A refusal as a
//! used `order_no` (Ping++ made it, and has no list to show it) keeps the hold and answers
//! `provider_outcome_unknown`: the webhook decides it.

use serde_json::{json, Value};

use crate::db::allocations::{self, Allocation, NewAllocation};
use crate::db::commands::{conflict, Applied};
use crate::db::purchases::{self, Purchase};
use crate::domain::allocation::{self, Kind, Share, Status};
use crate::domain::command::Envelope;
use crate::domain::order::OrderState;
use crate::domain::outcome::{Code, Rejection};
use crate::domain::query;
use crate::engine::commands::account::pingpp_id;
use crate::engine::completion::allocation::{complete_allocation, held_of};
use crate::engine::provider;
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::{
    AllocationCompleteRequest, AllocationRefundRequest, AllocationRequest, AllocationShare,
    SentOnceError,
};

/// What one of the three creates asks.
enum Ask {
    Allocation(AllocationRequest),
    Refund(AllocationRefundRequest),
    Complete(AllocationCompleteRequest),
}

fn rejection(code: Code, field: &str, message: &str) -> Rejection {
    Rejection::field(code, field, message)
}

/// The split order `order_id`, paid, with its Ping++ order id: the seller's to split, or for a
/// reward, the platform's own commands' (its commission, then its completion; nothing given
/// back).
fn split_order(
    found: Option<Purchase>,
    envelope: &Envelope,
    kind: Kind,
    platform_user: i64,
) -> Result<(Purchase, String), Rejection> {
    let Some(order) = found else {
        return Err(query::unknown_order());
    };
    if order.reward {
        let step = match kind {
            Kind::Allocation => Some("commission"),
            Kind::Complete => Some("complete"),
            Kind::Refund => None,
        };
        let platforms = step.is_some_and(|step| {
            envelope.user_id == platform_user
                && allocation::is_reward_step(&envelope.id, order.order_id, step)
        });
        if !platforms {
            return Err(if order.seller == envelope.user_id {
                rejection(Code::RewardOrder, "order", allocation::MSG_REWARD)
            } else {
                query::unknown_order()
            });
        }
    } else if order.seller != envelope.user_id {
        return Err(query::unknown_order());
    }
    if !order.allocation {
        return Err(rejection(
            Code::NotSplitOrder,
            "order",
            allocation::MSG_NOT_SPLIT,
        ));
    }
    match (&order.pingpp_order_id, order.state) {
        (Some(id), OrderState::Succeeded) => {
            let id = id.clone();
            Ok((order, id))
        }
        _ => Err(rejection(
            Code::OrderNotPaid,
            "order",
            crate::domain::purchase::MSG_NOT_PAID,
        )),
    }
}

fn pingpp_shares(engine: &Engine, shares: &[Share]) -> Vec<AllocationShare> {
    shares
        .iter()
        .map(|s| AllocationShare {
            user: pingpp_id(engine, s.user),
            amount: s.amount as u64,
            description: s.description.clone(),
        })
        .collect()
}

pub(crate) async fn create(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (order_id, shares) = match allocation::parse_create(&envelope.data) {
        Ok(parsed) => parsed,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    begin(engine, envelope, Kind::Allocation, order_id, shares, None).await
}

pub(crate) async fn refund(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (allocation_id, shares) = match allocation::parse_refund(&envelope.data) {
        Ok(parsed) => parsed,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    let parent = {
        let mut client = engine.pool.get().await?;
        let tx = client.transaction().await?;
        let found = allocations::lock_at_pingpp(&tx, &allocation_id, "").await?;
        tx.rollback().await?;
        found
    };
    let unknown = || {
        rejection(
            Code::UnknownAllocation,
            "allocation",
            allocation::MSG_UNKNOWN,
        )
    };
    let Some(parent) =
        parent.filter(|a| a.kind == Kind::Allocation && a.status == Status::Succeeded)
    else {
        return step::refuse(engine, envelope, unknown()).await;
    };
    let order_id = parent.order_id;
    begin(
        engine,
        envelope,
        Kind::Refund,
        order_id,
        shares,
        Some(parent),
    )
    .await
}

pub(crate) async fn complete(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let order_id = match allocation::parse_complete(&envelope.data) {
        Ok(order) => order,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    begin(engine, envelope, Kind::Complete, order_id, Vec::new(), None).await
}

/// Step 1 (the recorded row, or a new one holding its amount), then steps 2 and 3.
async fn begin(
    engine: &Engine,
    envelope: &Envelope,
    kind: Kind,
    order_id: i64,
    shares: Vec<Share>,
    parent: Option<Allocation>,
) -> Result<Applied, EngineError> {
    let (row, ask, resumed) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        if let Some(recorded) = allocations::of_command(&tx, &envelope.id).await? {
            tx.rollback().await?;
            if recorded.fingerprint != envelope.fingerprint() {
                return Ok(conflict(envelope));
            }
            let ask = match recorded.kind {
                Kind::Allocation => Ask::Allocation(
                    serde_json::from_value(recorded.request.clone()).map_err(unreadable)?,
                ),
                Kind::Refund => Ask::Refund(
                    serde_json::from_value(recorded.request.clone()).map_err(unreadable)?,
                ),
                Kind::Complete => Ask::Complete(
                    serde_json::from_value(recorded.request.clone()).map_err(unreadable)?,
                ),
            };
            (recorded, ask, true)
        } else {
            let found = purchases::lock(&tx, order_id).await?;
            let platform_user = engine.policy.platform_user_id;
            let (order, pingpp_order) = match split_order(found, envelope, kind, platform_user) {
                Ok(found) => found,
                Err(rejection) => {
                    return step::conclude(tx, envelope, rejected(envelope, rejection)).await
                }
            };
            let held = held_of(&tx, &order).await?;
            if held.completion.is_some() {
                let rejection = rejection(
                    Code::AllocationCompleted,
                    "order",
                    allocation::MSG_COMPLETED,
                );
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
            }
            let refused = match kind {
                Kind::Complete if held.in_progress() => Some(rejection(
                    Code::AllocationInProgress,
                    "order",
                    allocation::MSG_IN_PROGRESS,
                )),
                Kind::Allocation if Share::total(&shares) > held.allocatable() => Some(rejection(
                    Code::AllocationTooLarge,
                    "recipients",
                    allocation::MSG_TOO_MUCH,
                )),
                Kind::Refund => {
                    let parent = parent.as_ref().expect("a refund has its allocation");
                    too_much_back(&tx, parent, &shares).await?
                }
                _ => None,
            };
            if let Some(rejection) = refused {
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
            }
            let id = allocations::next_id(&tx).await?;
            let order_no = allocation::order_no(kind, id);
            let ask = match kind {
                Kind::Allocation => Ask::Allocation(AllocationRequest {
                    order: pingpp_order,
                    order_no: order_no.clone(),
                    recipients: pingpp_shares(engine, &shares),
                }),
                Kind::Refund => Ask::Refund(AllocationRefundRequest {
                    order: pingpp_order,
                    order_no: order_no.clone(),
                    allocation: parent
                        .as_ref()
                        .and_then(|p| p.pingpp_id.clone())
                        .ok_or_else(|| {
                            EngineError::Broken("an allocation without its id".into())
                        })?,
                    senders: pingpp_shares(engine, &shares),
                }),
                Kind::Complete => Ask::Complete(AllocationCompleteRequest {
                    order: pingpp_order,
                    order_no: order_no.clone(),
                    description: None,
                }),
            };
            let request = match &ask {
                Ask::Allocation(r) => serde_json::to_value(r),
                Ask::Refund(r) => serde_json::to_value(r),
                Ask::Complete(r) => serde_json::to_value(r),
            }
            .expect("a request serializes");
            let fingerprint = envelope.fingerprint();
            allocations::insert(
                &tx,
                &NewAllocation {
                    id,
                    order_id: order.order_id,
                    command_id: &envelope.id,
                    fingerprint: &fingerprint,
                    kind,
                    order_no: &order_no,
                    parent_id: parent.as_ref().map(|p| p.id),
                    shares: &shares,
                    request: &request,
                },
            )
            .await?;
            tx.commit().await?;
            let row = Allocation {
                id,
                order_id: order.order_id,
                fingerprint: fingerprint.to_vec(),
                kind,
                order_no,
                parent_id: parent.as_ref().map(|p| p.id),
                amount: Share::total(&shares),
                shares,
                request,
                pingpp_id: None,
                object: None,
                status: Status::Pending,
                concluded: false,
            };
            (row, ask, false)
        }
    };
    // Step 2: the same order_no on every try.
    let client = provider::client(engine)?;
    let made = match &ask {
        Ask::Allocation(r) => client.create_allocation(r).await,
        Ask::Refund(r) => client.create_allocation_refund(r).await,
        Ask::Complete(r) => client.create_allocation_complete(r).await,
    };
    let endpoint = match kind_of(&ask) {
        Kind::Allocation => "create_allocation",
        Kind::Refund => "create_allocation_refund",
        Kind::Complete => "create_allocation_complete",
    };
    let made = match made {
        Ok(made) => made,
        Err(SentOnceError { error, .. }) => {
            let Some(refusal) = provider::rejection(&error) else {
                // Not answered (a timeout, a 5xx, no connection): tried again, as a resumed
                // command, which sends the same order_no.
                return Err(provider::failure(error));
            };
            let mut client = engine.pool.get().await?;
            let tx = match step::claiming(&mut client, envelope).await? {
                Step::Answered(applied) => return Ok(applied),
                Step::Open(tx) => tx,
            };
            // Refused when an earlier try may have made it (a lost answer, a crash after
            // sending): the refusal may be about what that try did, and no list shows it. It
            // keeps its hold, and its webhook (found by order_no) decides it.
            let answer = if resumed || provider::refuses_used_order_no(&error) {
                provider::outcome_unknown_rejection(
                    endpoint,
                    &row.order_no,
                    provider::MSG_OUTCOME_UNKNOWN,
                )
            } else {
                allocations::record(&tx, row.id, Status::Failed, None, None).await?;
                refusal
            };
            return step::store_result(tx, envelope, &rejected(envelope, answer)).await;
        }
    };
    // Step 3: record it, and complete it if Ping++ says how it ended already.
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    if let Err(mismatch) = complete_allocation(&tx, &made, Some(&envelope.id)).await? {
        return Err(EngineError::Broken(format!("{}: {mismatch}", row.order_no)));
    }
    let name = match kind_of(&ask) {
        Kind::Complete => "allocation_complete",
        _ => "allocation",
    };
    let result = succeeded(
        envelope,
        Some(allocation::MSG_CREATED),
        json!({ name: made }),
    );
    step::store_result(tx, envelope, &result).await
}

fn kind_of(ask: &Ask) -> Kind {
    match ask {
        Ask::Allocation(_) => Kind::Allocation,
        Ask::Refund(_) => Kind::Refund,
        Ask::Complete(_) => Kind::Complete,
    }
}

fn unreadable(e: serde_json::Error) -> EngineError {
    EngineError::Broken(format!("an allocation's stored request is unreadable: {e}"))
}

/// A sender may give back at most what they received in that allocation and have not given
/// back (or are not giving back) already.
async fn too_much_back(
    tx: &deadpool_postgres::Transaction<'_>,
    parent: &Allocation,
    shares: &[Share],
) -> Result<Option<Rejection>, EngineError> {
    let back: Vec<Allocation> = allocations::of_order(tx, parent.order_id)
        .await?
        .into_iter()
        .filter(|a| a.parent_id == Some(parent.id) && a.status != Status::Failed)
        .collect();
    for share in shares {
        let received: i64 = parent
            .shares
            .iter()
            .filter(|s| s.user == share.user)
            .map(|s| s.amount)
            .sum();
        let given_back: i64 = back
            .iter()
            .flat_map(|a| a.shares.iter())
            .filter(|s| s.user == share.user)
            .map(|s| s.amount)
            .sum();
        if share.amount > received - given_back {
            return Ok(Some(rejection(
                Code::AllocationTooLarge,
                "senders",
                allocation::MSG_BACK_TOO_MUCH,
            )));
        }
    }
    Ok(None)
}

/// `allocation.get`: an allocation, allocation refund or completion of the user's orders (by
/// Ping++'s id), as Ping++ sees it now, applied as its webhook would be.
pub(crate) async fn get(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let unknown = || {
        rejection(
            Code::UnknownAllocation,
            "allocation",
            allocation::MSG_UNKNOWN,
        )
    };
    let Some(id) = envelope
        .data
        .get("allocation")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .map(str::to_owned)
    else {
        return step::refuse(engine, envelope, unknown()).await;
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    let found = {
        let mut client = engine.pool.get().await?;
        let tx = client.transaction().await?;
        let found = allocations::lock_at_pingpp(&tx, &id, "").await?;
        let order = match &found {
            Some(row) => purchases::lock(&tx, row.order_id).await?,
            None => None,
        };
        tx.rollback().await?;
        let platform = engine.policy.platform_user_id;
        found.filter(|_| {
            order.is_some_and(|o| {
                o.seller == envelope.user_id
                    || o.buyer == envelope.user_id
                    || (o.reward && envelope.user_id == platform)
            })
        })
    };
    let Some(row) = found else {
        return step::refuse(engine, envelope, unknown()).await;
    };
    let client = provider::client(engine)?;
    let now = match row.kind {
        Kind::Complete => client.retrieve_allocation_complete(&id).await,
        _ => client.retrieve_allocation(&id).await,
    };
    let now = match now {
        Ok(now) => now,
        Err(error) => {
            return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
        }
    };
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let result = match complete_allocation(&tx, &now, Some(&envelope.id)).await? {
        Ok(_) => {
            let name = match row.kind {
                Kind::Complete => "allocation_complete",
                _ => "allocation",
            };
            succeeded(envelope, None, json!({ name: now }))
        }
        Err(_) => rejected(envelope, unknown()),
    };
    step::store_result(tx, envelope, &result).await
}
