//! `recharge` and `recharge.retrieve`, which call Ping++. The HTTP call never
//! runs inside a database transaction, so each is split in steps with a recovery point between
//! them (the `recharges` row): a crash or redelivery at any step resumes instead of creating a
//! second order or a second charge.
//!
//! 1. One transaction validates, creates the waiting order and records the exact charge request.
//! 2. The charge is created at Ping++. Retries send the same `order_no` and parameters; a
//!    Ping++ that refuses the repeat is asked for the charge it made instead (its list).
//! 3. One transaction records the charge on the order and stores the command's result.
//!
//! Twins (the same command delivered twice at once) are serialised by an advisory lock on the
//! command id.

use serde_json::{json, Value};

use crate::db::commands::Applied;
use crate::db::ledger::insert_orders;
use crate::db::{orders, recharges};
use crate::domain::command::Envelope;
use crate::domain::order::OrderState;
use crate::domain::outcome::{Code, Rejection};
use crate::domain::query;
use crate::domain::recharge;
use crate::domain::recharge_object::{self, RechargeTerms};
use crate::engine::completion::charge::complete_charge;
use crate::engine::provider::{self, unix_now, LOOKUP_MARGIN_SECS};
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::{ChargeRequest, RechargeObjectRequest};

/// What step 1 found or made.
struct Progress {
    order_id: i64,
    /// The charge asked for (in recharge-object mode, the `charge[...]` part).
    request: ChargeRequest,
    /// Set in recharge-object mode: the whole recharge request.
    recharge: Option<RechargeObjectRequest>,
    /// Set once step 3 ran for a twin, or step 2 is known done.
    charge: Option<Value>,
    /// The recharge object, when known (recharge-object mode).
    object: Option<Value>,
    /// When step 1 ran (unix s): no charge of this order can be older.
    begun_at: i64,
}

/// How `recharge` begins: answered already, or its progress to go on with.
enum Begun {
    Answered(Applied),
    Progress(Box<Progress>),
}

pub(crate) async fn create(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let progress = match begin(engine, envelope).await? {
        Begun::Answered(applied) => return Ok(applied),
        Begun::Progress(progress) => progress,
    };
    let made = match (&progress.charge, &progress.recharge) {
        (Some(charge), _) => Ok((charge.clone(), progress.object.clone())),
        (None, None) => provider::client(engine)?
            .create_charge(&progress.request)
            .await
            .map(|charge| (charge, None)),
        (None, Some(request)) => provider::client(engine)?
            .create_recharge(request)
            .await
            .map(|object| (object["charge"].clone(), Some(object))),
    };
    let (charge, object) = match made {
        Ok(made) => made,
        Err(error) => match provider::rejection(&error) {
            None => return Err(provider::failure(error)),
            // A refusal may answer a repeat of a create that did take effect (its first answer
            // was lost or late, or the worker crashed before recording it): look for what
            // Ping++ made before believing it.
            Some(rejection) => match find_made(engine, &progress).await? {
                Some(made) => made,
                None if provider::refuses_used_order_no(&error) => {
                    return Err(provider::outcome_unknown(
                        "create_charge",
                        &progress.request.order_no,
                    ))
                }
                None => return refuse(engine, envelope, &progress, rejection).await,
            },
        },
    };
    record_charge(engine, envelope, &progress, charge, object).await
}

/// What Ping++ made for this recharge's `order_no`, if anything: the charge (and, in
/// recharge-object mode, the recharge object). A lookup that can't be done is an unknown
/// outcome: the command waits.
async fn find_made(
    engine: &Engine,
    progress: &Progress,
) -> Result<Option<(Value, Option<Value>)>, EngineError> {
    let client = provider::client(engine)?;
    let order_no = &progress.request.order_no;
    let since = progress.begun_at - LOOKUP_MARGIN_SECS;
    let found = match &progress.recharge {
        None => client
            .find_charge(order_no, since)
            .await
            .map(|charge| charge.map(|charge| (charge, None))),
        Some(_) => client
            .find_recharge(order_no, since)
            .await
            .map(|object| object.map(|object| (object["charge"].clone(), Some(object)))),
    };
    let found = found.map_err(|e| {
        tracing::warn!(error = %e, %order_no, "cannot look up what Ping++ made");
        provider::outcome_unknown("create_charge", order_no)
    })?;
    if found.is_some() {
        tracing::warn!(%order_no, "Ping++ refused a repeated create, but had made it: going on with it");
    }
    Ok(found)
}

fn unreadable(what: &str, e: serde_json::Error) -> EngineError {
    EngineError::Broken(format!("a recharge's stored {what} is unreadable: {e}"))
}

/// Step 1: the stored outcome, the recorded progress, or a new waiting order.
async fn begin(engine: &Engine, envelope: &Envelope) -> Result<Begun, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::looking(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(Begun::Answered(applied)),
        Step::Open(tx) => tx,
    };
    if let Some(recorded) = recharges::find(&tx, &envelope.id).await? {
        tx.rollback().await?;
        if recorded.fingerprint != envelope.fingerprint() {
            return Ok(Begun::Answered(crate::db::commands::conflict(envelope)));
        }
        let request = serde_json::from_str(&recorded.charge_request)
            .map_err(|e| unreadable("charge request", e))?;
        let json = |text: &Option<String>, what: &str| {
            text.as_deref()
                .map(serde_json::from_str::<Value>)
                .transpose()
                .map_err(|e| unreadable(what, e))
        };
        let charge = json(&recorded.charge, "charge")?;
        let object = json(&recorded.recharge, "recharge")?;
        let recharge = json(&recorded.recharge_request, "recharge request")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| unreadable("recharge request", e))?;
        return Ok(Begun::Progress(Box::new(Progress {
            order_id: recorded.order_id,
            request,
            recharge,
            charge,
            object,
            begun_at: recorded.begun_at,
        })));
    }
    // The mode of new recharges; one begun already keeps the mode it was begun in.
    let parsed = match &engine.recharge_object {
        None => recharge::parse(envelope.user_id, &envelope.data, &engine.policy)
            .map(|request| (request, None)),
        Some(_) => {
            recharge_object::parse(envelope.user_id, &envelope.data, &engine.policy, unix_now())
                .map(|(request, terms)| (request, Some(terms)))
        }
    };
    let (request, terms) = match parsed {
        Ok(parsed) => parsed,
        Err(rejection) => {
            let result = rejected(envelope, rejection);
            return Ok(Begun::Answered(step::conclude(tx, envelope, result).await?));
        }
    };
    let mut draft = recharge::order(&request);
    if let Some(terms) = &terms {
        // The order is what the wallet gets.
        draft.amount = terms.credited(request.amount);
    }
    let order = insert_orders(&tx, None, None, &[draft]).await?.remove(0);
    let order_id = order["id"]
        .as_i64()
        .ok_or_else(|| EngineError::Broken("an order without an id".into()))?;
    let metadata = json!({ "order_id": order_id, "user_id": request.user });
    let mut charge_request = ChargeRequest {
        order_no: recharge::order_no(order_id),
        channel: request.channel.clone(),
        amount: request.amount as u64,
        client_ip: request.client_ip.clone(),
        subject: recharge::TITLE.into(),
        body: recharge::BODY.into(),
        extra: request.extra.clone().map(Value::Object),
        time_expire: None,
        metadata: Some(metadata.clone()),
        description: None,
    };
    let recharge_request = match (&terms, &engine.recharge_object) {
        (Some(terms), Some(template)) => {
            // The recharge object carries the metadata and description; its charge the rest.
            charge_request.metadata = None;
            charge_request.time_expire = terms.time_expire;
            Some(object_request(
                template,
                &request,
                terms,
                &charge_request,
                metadata,
            ))
        }
        _ => None,
    };
    let charge_request_json =
        serde_json::to_string(&charge_request).expect("a charge request serializes");
    let recharge_request_json = recharge_request
        .as_ref()
        .map(|r| serde_json::to_string(r).expect("a recharge request serializes"));
    recharges::insert(
        &tx,
        &recharges::NewRecharge {
            command_id: &envelope.id,
            fingerprint: &envelope.fingerprint(),
            user_id: request.user,
            order_id,
            order_no: &charge_request.order_no,
            charge_request: &charge_request_json,
            user_fee: terms.as_ref().and_then(|t| t.user_fee),
            balance_bonus: terms.as_ref().and_then(|t| t.balance_bonus),
            recharge_request: recharge_request_json.as_deref(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Begun::Progress(Box::new(Progress {
        order_id,
        request: charge_request,
        recharge: recharge_request,
        charge: None,
        object: None,
        begun_at: unix_now(),
    })))
}

/// The recharge object to ask for: our metadata (order and user) over the caller's.
fn object_request(
    template: &str,
    request: &recharge::RechargeRequest,
    terms: &RechargeTerms,
    charge: &ChargeRequest,
    ours: Value,
) -> RechargeObjectRequest {
    let mut metadata = terms.metadata.clone().unwrap_or_default();
    if let Value::Object(ours) = ours {
        metadata.extend(ours);
    }
    RechargeObjectRequest {
        user: recharge_object::pingpp_user(template, request.user),
        charge: charge.clone(),
        user_fee: terms.user_fee.map(|f| f as u64),
        balance_bonus: terms.balance_bonus.map(|b| b as u64),
        description: terms.description.clone(),
        metadata: Some(Value::Object(metadata)),
    }
}

/// Step 3: the charge exists; record it and the command's result.
async fn record_charge(
    engine: &Engine,
    envelope: &Envelope,
    progress: &Progress,
    charge: Value,
    object: Option<Value>,
) -> Result<Applied, EngineError> {
    let charge_id = charge
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| EngineError::Broken("Ping++ returned a charge without an id".into()))?;
    if charge.get("order_no").and_then(Value::as_str) != Some(progress.request.order_no.as_str())
        || charge.get("amount").and_then(Value::as_u64) != Some(progress.request.amount)
    {
        return Err(EngineError::Broken(format!(
            "Ping++ returned charge {charge_id} for another order_no or amount than {}",
            progress.request.order_no
        )));
    }
    let recharge_id = match (&progress.recharge, &object) {
        (None, _) => None,
        (Some(request), Some(object)) => {
            let id = object.get("id").and_then(Value::as_str);
            let fee = object.get("user_fee").and_then(Value::as_u64).unwrap_or(0);
            if id.is_none() || fee != request.user_fee.unwrap_or(0) {
                return Err(EngineError::Broken(format!(
                    "Ping++ returned recharge {id:?} with another user_fee than asked for {}",
                    progress.request.order_no
                )));
            }
            id.map(str::to_owned)
        }
        (Some(_), None) => {
            return Err(EngineError::Broken(format!(
                "no recharge object recorded for {}",
                progress.request.order_no
            )))
        }
    };
    let livemode = charge.get("livemode").and_then(Value::as_bool) == Some(true);
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let made = recharges::MadeCharge {
        charge_id,
        livemode,
        charge: &charge,
        recharge_id: recharge_id.as_deref(),
        recharge: recharge_id.as_ref().and(object.as_ref()),
    };
    recharges::record_charge(&tx, &envelope.id, &made).await?;
    let order = orders::attach_charge(&tx, progress.order_id, charge_id, &envelope.id).await?;
    let mut data = json!({ "order": order, "pingpp_order": charge });
    if let (Some(object), Some(_)) = (object, &recharge_id) {
        data["pingpp_recharge"] = object;
    }
    let result = succeeded(envelope, Some(recharge::MSG_CREATED), data);
    step::store_result(tx, envelope, &result).await
}

/// Ping++ refused to create the charge: the waiting order fails and the command is rejected.
async fn refuse(
    engine: &Engine,
    envelope: &Envelope,
    progress: &Progress,
    rejection: Rejection,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    orders::mark_failed(&tx, progress.order_id, Some(&envelope.id)).await?;
    step::store_result(tx, envelope, &rejected(envelope, rejection)).await
}

pub(crate) async fn retrieve(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (order_id, charge_id) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let order_id = match query::order_id(&envelope.data) {
            Ok(id) => id,
            Err(rejection) => {
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await
            }
        };
        let found = match recharges::order_to_retrieve(&tx, order_id).await? {
            Some(found) if found.owner_id == envelope.user_id => found,
            _ => {
                let result = rejected(envelope, query::unknown_order());
                return step::conclude(tx, envelope, result).await;
            }
        };
        if found.target_type == crate::domain::refund::TARGET_TYPE {
            // A refund of a recharge: asked about the same way.
            tx.rollback().await?;
            return super::refund::retrieve(engine, envelope, order_id).await;
        }
        if found.target_type != recharge::TARGET_TYPE {
            let rejection =
                Rejection::field(Code::NotRecharge, "order", recharge::MSG_NOT_RECHARGE);
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
        match found.charge_id {
            // Waiting, or failed and perhaps paid late after all: ask Ping++. Paid already, or
            // its charge was never made: nothing to ask.
            Some(charge_id) if found.state != OrderState::Succeeded => {
                tx.rollback().await?;
                (order_id, charge_id)
            }
            _ => {
                let result = succeeded(envelope, None, json!({ "order": found.order }));
                return step::conclude(tx, envelope, result).await;
            }
        }
    };
    let charge = match provider::client(engine)?.retrieve_charge(&charge_id).await {
        Ok(charge) => charge,
        Err(error) => match provider::rejection(&error) {
            Some(rejection) => {
                let mut client = engine.pool.get().await?;
                let tx = client.transaction().await?;
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
            }
            None => return Err(provider::failure(error)),
        },
    };
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let result = match complete_charge(&tx, order_id, &charge, Some(&envelope.id)).await? {
        Ok(completion) => succeeded(envelope, None, json!({ "order": completion.order() })),
        Err(mismatch) => {
            tracing::error!(order_id, %mismatch, "Ping++ charge disagrees with its order");
            rejected(
                envelope,
                Rejection::field(Code::ChargeMismatch, "order", &mismatch.to_string()),
            )
        }
    };
    step::store_result(tx, envelope, &result).await
}
