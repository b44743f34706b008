//! Purchases with the money at Ping++ (`wallet.custody = "pingpp"`): `order.create`,
//! `order.pay`, `order.get`, `order.refund`, `order.refunds`, `order.refund.get`.
//!
//! `order.create` records the buyer's waiting order and the exact request
//! (`merchant_order_no` = `o` + its id) before Ping++ is asked, and every retry sends the same;
//! the order is recorded when Ping++ answers. Nothing moves until Ping++ reports the order paid
//! (`order.succeeded`, or `order.get`): then the buyer's e-wallet (or the channel, through it)
//! pays the seller's sub-merchant, and the seller gets an income order.
//!
//! `order.refund` holds its amount against what the order has left to refund from the moment
//! it is recorded (two refunds racing for the last fen: the second is refused before Ping++ is
//! asked), sends the same `order_no` on every retry, and looks a refused repeat up in the
//! order's refund list. A refund that succeeds moves exactly its amount back, once; one that
//! fails moves nothing and frees what it held.

use serde_json::{json, Value};

use crate::db::commands::{conflict, Applied};
use crate::db::ledger::insert_orders;
use crate::db::purchases::{self, NewPurchase, NewRefund, Purchase, Refund};
use crate::db::{accounts, merchants, orders};
use crate::domain::command::Envelope;
use crate::domain::merchant::{self, ApplicationStatus as MerchantStatus};
use crate::domain::order::OrderState;
use crate::domain::outcome::{Code, Rejection};
use crate::domain::purchase::{self as rules, RefundStatus};
use crate::domain::query;
use crate::engine::commands::account::pingpp_id;
use crate::engine::completion::allocation::held_of;
use crate::engine::completion::purchase::{complete_order, complete_refund};
use crate::engine::provider::{self, unix_now};
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::{OrderPayRequest, OrderRefundRequest, OrderRequest};

fn unreadable(e: serde_json::Error) -> EngineError {
    EngineError::Broken(format!("a purchase's stored request is unreadable: {e}"))
}

/// The seller's sub-app, if the seller is a sub-merchant whose application completed.
async fn seller_app(
    tx: &deadpool_postgres::Transaction<'_>,
    seller: i64,
) -> Result<Result<String, Rejection>, EngineError> {
    let Some(sub_app_id) = merchants::of_user(tx, seller)
        .await?
        .and_then(|m| m.sub_app_id)
    else {
        return Ok(Err(Rejection::field(
            Code::NotAMerchant,
            "seller",
            merchant::MSG_NOT_A_MERCHANT,
        )));
    };
    let opened = merchants::applications_of(tx, seller)
        .await?
        .iter()
        .any(|a| a.status == MerchantStatus::Completed);
    if !opened {
        return Ok(Err(Rejection::field(
            Code::MerchantNotOpen,
            "seller",
            merchant::MSG_NOT_OPEN,
        )));
    }
    Ok(Ok(sub_app_id))
}

pub(crate) async fn create(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let request = match rules::parse_create(envelope.user_id, &envelope.data, unix_now()) {
        Ok(request) => request,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    make(engine, envelope, request, None).await
}

/// A reward's terms: where the tipper's e-wallet page returns, and the platform's commission.
struct RewardTerms {
    return_url: String,
    commission: i64,
}

/// `reward` with the money at Ping++: a split purchase from the tipper to the creator's
/// sub-merchant, paid from the tipper's e-wallet (the result carries the e-wallet's payment
/// link). Once paid, the worker asks for the platform's commission
/// (`wallet.reward_commission_percent`, to `wallet.platform_user_id`) and the completion, as
/// `allocation.create` and `allocation.complete` commands of its own (ids `reward-<order>-...`).
pub(crate) async fn reward(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (request, return_url) = match rules::parse_reward(envelope.user_id, &envelope.data) {
        Ok(parsed) => parsed,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    let commission = rules::commission(request.amount, engine.policy.reward_commission_percent);
    let terms = RewardTerms {
        return_url,
        commission,
    };
    make(engine, envelope, request, Some(terms)).await
}

async fn make(
    engine: &Engine,
    envelope: &Envelope,
    request: rules::PurchaseRequest,
    reward: Option<RewardTerms>,
) -> Result<Applied, EngineError> {
    // Step 1: the recorded purchase, or a new waiting order and its exact request.
    let (order_id, asked) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        if let Some(recorded) = purchases::of_command(&tx, &envelope.id).await? {
            tx.rollback().await?;
            if recorded.fingerprint != envelope.fingerprint() {
                return Ok(conflict(envelope));
            }
            let asked: OrderRequest =
                serde_json::from_value(recorded.request).map_err(unreadable)?;
            (recorded.order_id, asked)
        } else {
            let latest = accounts::latest_application(&tx, request.buyer).await?;
            let checked = crate::domain::account::require_open(latest.map(|a| a.status));
            let receipt_app = match checked {
                Err(rejection) => Err(rejection),
                Ok(()) => seller_app(&tx, request.seller).await?,
            };
            let receipt_app = match receipt_app {
                Ok(app) => app,
                Err(rejection) => {
                    return step::conclude(tx, envelope, rejected(envelope, rejection)).await
                }
            };
            let order = insert_orders(&tx, None, None, &[rules::buyer_order(&request)])
                .await?
                .remove(0);
            let order_id = order["id"]
                .as_i64()
                .ok_or_else(|| EngineError::Broken("an order without an id".into()))?;
            let asked = OrderRequest {
                merchant_order_no: rules::merchant_order_no(order_id),
                amount: request.amount as u64,
                client_ip: request.client_ip.clone(),
                subject: request.subject.clone(),
                body: request.body.clone(),
                uid: pingpp_id(engine, request.buyer),
                receipt_app,
                time_expire: request.time_expire,
                description: request.description.clone(),
                allocation: request.allocation,
                metadata: request.metadata.clone(),
            };
            let request_json = serde_json::to_value(&asked).expect("an order request serializes");
            purchases::insert(
                &tx,
                &NewPurchase {
                    order_id,
                    command_id: &envelope.id,
                    fingerprint: &envelope.fingerprint(),
                    buyer: request.buyer,
                    seller: request.seller,
                    amount: request.amount,
                    merchant_order_no: &asked.merchant_order_no,
                    request: &request_json,
                    allocation: request.allocation,
                    commission: reward.as_ref().map(|r| r.commission),
                },
            )
            .await?;
            tx.commit().await?;
            (order_id, asked)
        }
    };
    // Step 2: the same request on every try.
    let made = match provider::client(engine)?.create_order(&asked).await {
        Ok(made) => made,
        Err(error) => {
            let Some(rejection) = provider::rejection(&error) else {
                return Err(provider::failure(error));
            };
            let mut client = engine.pool.get().await?;
            let tx = match step::claiming(&mut client, envelope).await? {
                Step::Answered(applied) => return Ok(applied),
                Step::Open(tx) => tx,
            };
            let rejection = if provider::refuses_used_order_no(&error) {
                // A repeat of a create that took effect, and Ping++ shows no list of orders:
                // the order stays waiting for its webhook, found by merchant_order_no.
                provider::outcome_unknown_rejection(
                    "create_order",
                    &asked.merchant_order_no,
                    provider::MSG_OUTCOME_UNKNOWN,
                )
            } else {
                orders::mark_failed(&tx, order_id, Some(&envelope.id)).await?;
                rejection
            };
            return step::store_result(tx, envelope, &rejected(envelope, rejection)).await;
        }
    };
    // Step 3: record what Ping++ made.
    let facts = rules::order_facts(&made)
        .map_err(|e| EngineError::Broken(format!("unreadable Ping++ order: {e}")))?;
    if facts.merchant_order_no != asked.merchant_order_no || facts.amount as u64 != asked.amount {
        return Err(EngineError::Broken(format!(
            "Ping++ returned order {} for another merchant_order_no or amount than {}",
            facts.id, asked.merchant_order_no
        )));
    }
    // A reward is paid from the e-wallet at once: its link goes back with the result. Asking
    // again for a link is safe; only one payment of the whole amount completes the order.
    let made = match &reward {
        None => made,
        Some(terms) => {
            let pay = OrderPayRequest {
                channel: "balance".into(),
                charge_amount: asked.amount,
                extra: Some(json!({ "return_url": terms.return_url })),
                charge_order_no: None,
                time_expire: None,
            };
            match provider::client(engine)?.pay_order(&facts.id, &pay).await {
                Ok(paying) => paying,
                Err(error) => {
                    let rejection = provider::refused_or_retry(error)?;
                    let mut client = engine.pool.get().await?;
                    let tx = match step::claiming(&mut client, envelope).await? {
                        Step::Answered(applied) => return Ok(applied),
                        Step::Open(tx) => tx,
                    };
                    purchases::record_order(&tx, order_id, &facts.id, &facts.status, &made, None)
                        .await?;
                    orders::mark_failed(&tx, order_id, Some(&envelope.id)).await?;
                    return step::store_result(tx, envelope, &rejected(envelope, rejection)).await;
                }
            }
        }
    };
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    purchases::record_order(&tx, order_id, &facts.id, &facts.status, &made, None).await?;
    let order = orders::attach_charge(&tx, order_id, &facts.id, &envelope.id).await?;
    let result = succeeded(
        envelope,
        Some(rules::MSG_CREATED),
        json!({ "order": order, "pingpp_order": made }),
    );
    step::store_result(tx, envelope, &result).await
}

/// The acting user's purchase `order`, looked at in a transaction of its own.
async fn own_purchase(
    engine: &Engine,
    envelope: &Envelope,
    order_id: i64,
) -> Result<Option<Purchase>, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    let found = purchases::lock(&tx, order_id).await?;
    tx.rollback().await?;
    Ok(found.filter(|p| p.buyer == envelope.user_id))
}

pub(crate) async fn pay(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let request = match rules::parse_pay(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    let Some(purchase) = own_purchase(engine, envelope, request.order).await? else {
        return step::refuse(engine, envelope, query::unknown_order()).await;
    };
    let not_payable = || Rejection::field(Code::OrderNotPayable, "order", rules::MSG_NOT_PAYABLE);
    let Some(pingpp_order_id) = purchase.pingpp_order_id.clone() else {
        return step::refuse(engine, envelope, not_payable()).await;
    };
    if purchase.state != OrderState::Waiting {
        return step::refuse(engine, envelope, not_payable()).await;
    }
    if request.charge_amount.is_some_and(|a| a != purchase.amount) {
        let rejection = Rejection::field(
            Code::InvalidAmount,
            "charge_amount",
            rules::MSG_CHARGE_AMOUNT,
        );
        return step::refuse(engine, envelope, rejection).await;
    }
    let asked = OrderPayRequest {
        channel: request.channel.clone(),
        charge_amount: purchase.amount as u64,
        extra: request.extra.clone(),
        charge_order_no: None,
        time_expire: None,
    };
    // Paying asks Ping++ for a payment link: a repeat asks again, and only one payment of the
    // whole amount can ever complete the order.
    let paying = match provider::client(engine)?
        .pay_order(&pingpp_order_id, &asked)
        .await
    {
        Ok(paying) => paying,
        Err(error) => {
            let rejection = provider::refused_or_retry(error)?;
            return step::refuse(engine, envelope, rejection).await;
        }
    };
    answer_with_order(engine, envelope, purchase.order_id, &paying).await
}

pub(crate) async fn get(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let order_id = match query::order_id(&envelope.data) {
        Ok(id) => id,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    let Some(purchase) = own_purchase(engine, envelope, order_id).await? else {
        return step::refuse(engine, envelope, query::unknown_order()).await;
    };
    let Some(pingpp_order_id) = purchase.pingpp_order_id.clone() else {
        let data = json!({ "order": purchase.order, "pingpp_order": Value::Null });
        return step::answer(engine, envelope, succeeded(envelope, None, data)).await;
    };
    let now = match provider::client(engine)?
        .retrieve_order(&pingpp_order_id)
        .await
    {
        Ok(now) => now,
        Err(error) => {
            return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
        }
    };
    answer_with_order(engine, envelope, order_id, &now).await
}

/// Completes the order from what Ping++ says of it now and answers with both, in the
/// transaction that claims the command's id (`order.pay`, `order.get`).
async fn answer_with_order(
    engine: &Engine,
    envelope: &Envelope,
    order_id: i64,
    pingpp_order: &Value,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let result = match complete_order(&tx, order_id, pingpp_order, Some(&envelope.id)).await? {
        Ok(completion) => succeeded(
            envelope,
            None,
            json!({ "order": completion.order(), "pingpp_order": pingpp_order }),
        ),
        Err(mismatch) => rejected(
            envelope,
            Rejection::field(Code::OrderMismatch, "order", &mismatch),
        ),
    };
    step::store_result(tx, envelope, &result).await
}

pub(crate) async fn refund(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let request = match rules::parse_refund(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    // Step 1: the recorded refund, or a new one holding its amount.
    let (recorded, pingpp_order_id, asked) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        if let Some(recorded) = purchases::refund_of_command(&tx, &envelope.id).await? {
            let purchase = purchases::lock(&tx, recorded.order_id)
                .await?
                .ok_or_else(|| EngineError::Broken("a refund without its order".into()))?;
            tx.rollback().await?;
            if recorded.fingerprint != envelope.fingerprint() {
                return Ok(conflict(envelope));
            }
            let asked: OrderRefundRequest =
                serde_json::from_value(recorded.request.clone()).map_err(unreadable)?;
            let id = purchase
                .pingpp_order_id
                .ok_or_else(|| EngineError::Broken("a paid order without its Ping++ id".into()))?;
            (recorded, id, asked)
        } else {
            // The money comes back out of the seller's sub-merchant: the seller refunds.
            let purchase = match purchases::lock(&tx, request.order).await? {
                Some(p) if p.seller == envelope.user_id => p,
                _ => {
                    let result = rejected(envelope, query::unknown_order());
                    return step::conclude(tx, envelope, result).await;
                }
            };
            if purchase.reward {
                // A tip is the creator's once given: its split is the platform's to settle.
                let rejection = Rejection::field(
                    Code::RewardOrder,
                    "order",
                    crate::domain::allocation::MSG_REWARD,
                );
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
            }
            let (Some(charge), OrderState::Succeeded, Some(pingpp_order_id)) = (
                purchase.charge_id.clone(),
                purchase.state,
                purchase.pingpp_order_id.clone(),
            ) else {
                let rejection = Rejection::field(Code::OrderNotPaid, "order", rules::MSG_NOT_PAID);
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
            };
            let held = purchases::refunds_held(&tx, purchase.order_id).await?;
            // Of a split order, what was given to recipients can't be refunded either.
            let given = if purchase.allocation {
                held_of(&tx, &purchase).await?.allocated_out
            } else {
                0
            };
            if request.amount > purchase.amount - held - given {
                let rejection =
                    Rejection::field(Code::RefundTooLarge, "amount", rules::MSG_REFUND_TOO_LARGE);
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
            }
            let id = purchases::next_refund_id(&tx).await?;
            let asked = OrderRefundRequest {
                order_no: rules::refund_order_no(id),
                amount: request.amount as u64,
                charge,
                description: request.description.clone(),
            };
            let request_json = serde_json::to_value(&asked).expect("a refund request serializes");
            let fingerprint = envelope.fingerprint();
            purchases::insert_refund(
                &tx,
                &NewRefund {
                    id,
                    order_id: purchase.order_id,
                    command_id: &envelope.id,
                    fingerprint: &fingerprint,
                    order_no: &asked.order_no,
                    amount: request.amount,
                    request: &request_json,
                },
            )
            .await?;
            tx.commit().await?;
            let recorded = Refund {
                id,
                order_id: purchase.order_id,
                fingerprint: fingerprint.to_vec(),
                order_no: asked.order_no.clone(),
                amount: request.amount,
                request: request_json,
                refund_id: None,
                refund: None,
                status: RefundStatus::Pending,
                concluded: false,
            };
            (recorded, pingpp_order_id, asked)
        }
    };
    // Step 2: the same order_no on every try; a refused repeat is looked up in the list.
    let client = provider::client(engine)?;
    let made = match client.create_order_refund(&pingpp_order_id, &asked).await {
        Ok(made) => made,
        Err(error) => {
            let Some(rejection) = provider::rejection(&error) else {
                return Err(provider::failure(error));
            };
            let found = if provider::refuses_used_order_no(&error) {
                client
                    .find_order_refund(&pingpp_order_id, &asked.order_no)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, order_no = %asked.order_no, "cannot look up the refund Ping++ made");
                        provider::outcome_unknown("create_order_refund", &asked.order_no)
                    })?
            } else {
                None
            };
            match found {
                Some(made) => made,
                None => {
                    let mut client = engine.pool.get().await?;
                    let tx = match step::claiming(&mut client, envelope).await? {
                        Step::Answered(applied) => return Ok(applied),
                        Step::Open(tx) => tx,
                    };
                    // Refused: it holds nothing any more.
                    purchases::record_refund(&tx, recorded.id, RefundStatus::Failed, None).await?;
                    return step::store_result(tx, envelope, &rejected(envelope, rejection)).await;
                }
            }
        }
    };
    // Step 3: record it (and complete it, if Ping++ already says how it ended).
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let result = match complete_refund(&tx, &made, Some(&envelope.id)).await? {
        Ok(_) => succeeded(
            envelope,
            Some(rules::MSG_REFUND_CREATED),
            json!({ "refund": made }),
        ),
        Err(mismatch) => {
            return Err(EngineError::Broken(format!(
                "refund {}: {mismatch}",
                recorded.order_no
            )))
        }
    };
    step::store_result(tx, envelope, &result).await
}

/// The order's refunds as Ping++ sees them now, each applied as its webhook would be.
pub(crate) async fn refunds(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let order_id = match query::order_id(&envelope.data) {
        Ok(id) => id,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    let purchase = match own_or_sold(engine, envelope, order_id).await? {
        Some(purchase) => purchase,
        None => return step::refuse(engine, envelope, query::unknown_order()).await,
    };
    let Some(pingpp_order_id) = purchase.pingpp_order_id.clone() else {
        let data = json!({ "refunds": [] });
        return step::answer(engine, envelope, succeeded(envelope, None, data)).await;
    };
    let list = match provider::client(engine)?
        .list_order_refunds(&pingpp_order_id)
        .await
    {
        Ok(list) => list,
        Err(error) => {
            return step::refuse(engine, envelope, provider::refused_or_retry(error)?).await
        }
    };
    let listed: Vec<Value> = list
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    for refund in &listed {
        if let Err(mismatch) = complete_refund(&tx, refund, Some(&envelope.id)).await? {
            // One pluspay did not ask for (made elsewhere): shown, not applied.
            tracing::warn!(%mismatch, "a refund of the order that pluspay did not ask for");
        }
    }
    let result = succeeded(envelope, None, json!({ "refunds": listed }));
    step::store_result(tx, envelope, &result).await
}

/// `order.refund.get`: one refund of the order, as Ping++ sees it now.
pub(crate) async fn refund_get(
    engine: &Engine,
    envelope: &Envelope,
) -> Result<Applied, EngineError> {
    let order_id = match query::order_id(&envelope.data) {
        Ok(id) => id,
        Err(rejection) => return step::refuse(engine, envelope, rejection).await,
    };
    let Some(refund_id) = envelope
        .data
        .get("refund")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .map(str::to_owned)
    else {
        let rejection = Rejection::field(Code::UnknownRefund, "refund", rules::MSG_UNKNOWN_REFUND);
        return step::refuse(engine, envelope, rejection).await;
    };
    if let Some(applied) = step::answered(engine, envelope).await? {
        return Ok(applied);
    }
    let purchase = match own_or_sold(engine, envelope, order_id).await? {
        Some(purchase) => purchase,
        None => return step::refuse(engine, envelope, query::unknown_order()).await,
    };
    let Some(pingpp_order_id) = purchase.pingpp_order_id.clone() else {
        return step::refuse(engine, envelope, query::unknown_order()).await;
    };
    let now = match provider::client(engine)?
        .retrieve_order_refund(&pingpp_order_id, &refund_id)
        .await
    {
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
    let result = match complete_refund(&tx, &now, Some(&envelope.id)).await? {
        Ok(_) => succeeded(envelope, None, json!({ "refund": now })),
        Err(_) => rejected(
            envelope,
            Rejection::field(Code::UnknownRefund, "refund", rules::MSG_UNKNOWN_REFUND),
        ),
    };
    step::store_result(tx, envelope, &result).await
}

/// The purchase `order_id` if the acting user bought or sold it.
async fn own_or_sold(
    engine: &Engine,
    envelope: &Envelope,
    order_id: i64,
) -> Result<Option<Purchase>, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    let found = purchases::lock(&tx, order_id).await?;
    tx.rollback().await?;
    Ok(found.filter(|p| p.buyer == envelope.user_id || p.seller == envelope.user_id))
}
