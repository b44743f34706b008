//! `recharge` and `recharge.retrieve` with the money at Ping++ (`wallet.custody = "pingpp"`): a
//! deposit into the user's own e-wallet. As for a charge, the Ping++ call runs between
//! transactions with a recovery point (the `deposits` row):
//!
//! 1. One transaction checks the e-wallet is open, creates the waiting order and records the
//!    exact deposit request (`order_no` = `d` + the order id).
//! 2. The deposit is created at Ping++. Retries send the same `order_no` and parameters; a
//!    Ping++ that refuses the repeat is asked for the deposit it made (its list), and while
//!    that can't be known the command waits.
//! 3. One transaction records the deposit on the order and stores the result: the order and
//!    the deposit, its payment link (`extra.credential`, 15 minutes) inside.
//!
//! Nothing is credited until Ping++ reports the deposit succeeded (`deposit.succeeded`, or
//! `recharge.retrieve`), through `completion::deposit`.

use serde_json::{json, Value};

use crate::db::commands::{conflict, Applied};
use crate::db::ledger::insert_orders;
use crate::db::{deposits, orders, recharges};
use crate::domain::command::Envelope;
use crate::domain::deposit::{self, DepositFacts};
use crate::domain::order::OrderState;
use crate::domain::outcome::{Code, Rejection};
use crate::domain::{query, recharge};
use crate::engine::commands::account;
use crate::engine::completion::deposit::complete_deposit;
use crate::engine::provider::{self, unix_now, LOOKUP_MARGIN_SECS};
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::DepositRequest;

struct Progress {
    order_id: i64,
    request: DepositRequest,
    deposit: Option<Value>,
    begun_at: i64,
}

enum Begun {
    Answered(Applied),
    Progress(Box<Progress>),
}

fn unreadable(e: serde_json::Error) -> EngineError {
    EngineError::Broken(format!("a deposit's stored request is unreadable: {e}"))
}

fn read(deposit: &Value) -> Result<DepositFacts, EngineError> {
    deposit::facts(deposit, unix_now())
        .map_err(|e| EngineError::Broken(format!("unreadable deposit: {e}")))
}

pub(crate) async fn create(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let progress = match begin(engine, envelope).await? {
        Begun::Answered(applied) => return Ok(applied),
        Begun::Progress(progress) => progress,
    };
    let made = match &progress.deposit {
        Some(deposit) => deposit.clone(),
        None => match provider::client(engine)?
            .create_deposit(&progress.request)
            .await
        {
            Ok(deposit) => deposit,
            Err(error) => {
                let Some(rejection) = provider::rejection(&error) else {
                    return Err(provider::failure(error));
                };
                if !provider::refuses_used_order_no(&error) {
                    // Refused for what it asks: nothing was made.
                    return refuse(engine, envelope, &progress, rejection).await;
                }
                // Refused as a repeat of a create that took effect: look for what it made.
                match find_made(engine, &progress).await? {
                    Some(deposit) => deposit,
                    None => return unknowable(engine, envelope, &progress).await,
                }
            }
        },
    };
    record(engine, envelope, &progress, made).await
}

/// What Ping++ made for this deposit's `order_no`, from its list. `None`: not found, or the
/// list can't be read at all (Ping++ refuses it); a list that can't be read now (an outage) is
/// waited for.
async fn find_made(engine: &Engine, progress: &Progress) -> Result<Option<Value>, EngineError> {
    let order_no = &progress.request.order_no;
    match provider::client(engine)?
        .find_deposit(order_no, progress.begun_at - LOOKUP_MARGIN_SECS)
        .await
    {
        Ok(found) => Ok(found),
        Err(error) if error.is_transient() => {
            tracing::warn!(%error, %order_no, "cannot look up what Ping++ made");
            Err(provider::outcome_unknown("create_deposit", order_no))
        }
        Err(error) => {
            tracing::warn!(%error, %order_no, "Ping++ does not show its deposits");
            Ok(None)
        }
    }
}

/// Ping++ says this `order_no` was used, and what it made can't be found: the command is
/// answered `provider_outcome_unknown` and nothing is resent. The order stays waiting: if the
/// deposit exists, its webhook completes it (and records it) when it comes.
async fn unknowable(
    engine: &Engine,
    envelope: &Envelope,
    progress: &Progress,
) -> Result<Applied, EngineError> {
    let rejection = provider::outcome_unknown_rejection(
        "create_deposit",
        &progress.request.order_no,
        provider::MSG_OUTCOME_UNKNOWN,
    );
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    step::store_result(tx, envelope, &rejected(envelope, rejection)).await
}

/// Step 1: the stored outcome, the recorded progress, or a new waiting order.
async fn begin(engine: &Engine, envelope: &Envelope) -> Result<Begun, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::looking(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(Begun::Answered(applied)),
        Step::Open(tx) => tx,
    };
    if let Some(recorded) = deposits::find(&tx, &envelope.id).await? {
        tx.rollback().await?;
        if recorded.fingerprint != envelope.fingerprint() {
            return Ok(Begun::Answered(conflict(envelope)));
        }
        return Ok(Begun::Progress(Box::new(Progress {
            order_id: recorded.order_id,
            request: serde_json::from_value(recorded.request).map_err(unreadable)?,
            deposit: recorded.deposit,
            begun_at: recorded.begun_at,
        })));
    }
    let parsed = deposit::parse(envelope.user_id, &envelope.data, &engine.policy);
    let request = match parsed {
        Ok(request) => request,
        Err(rejection) => {
            let result = rejected(envelope, rejection);
            return Ok(Begun::Answered(step::conclude(tx, envelope, result).await?));
        }
    };
    let latest = crate::db::accounts::latest_application(&tx, request.user).await?;
    if let Err(rejection) = crate::domain::account::require_open(latest.map(|a| a.status)) {
        let result = rejected(envelope, rejection);
        return Ok(Begun::Answered(step::conclude(tx, envelope, result).await?));
    }
    let draft = recharge::order_of(request.user, request.amount);
    let order = insert_orders(&tx, None, None, &[draft]).await?.remove(0);
    let order_id = order["id"]
        .as_i64()
        .ok_or_else(|| EngineError::Broken("an order without an id".into()))?;
    let deposit_request = DepositRequest {
        user: account::pingpp_id(engine, request.user),
        order_no: deposit::order_no(order_id),
        amount: request.amount as u64,
        return_url: request.return_url,
        metadata: Some(json!({ "order_id": order_id, "user_id": request.user })),
    };
    let request_json =
        serde_json::to_value(&deposit_request).expect("a deposit request serializes");
    deposits::insert(
        &tx,
        &deposits::NewDeposit {
            command_id: &envelope.id,
            fingerprint: &envelope.fingerprint(),
            user_id: request.user,
            order_id,
            order_no: &deposit_request.order_no,
            request: &request_json,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Begun::Progress(Box::new(Progress {
        order_id,
        request: deposit_request,
        deposit: None,
        begun_at: unix_now(),
    })))
}

/// Step 3: the deposit exists; record it and the command's result.
async fn record(
    engine: &Engine,
    envelope: &Envelope,
    progress: &Progress,
    deposit: Value,
) -> Result<Applied, EngineError> {
    let facts = read(&deposit)?;
    if facts.order_no != progress.request.order_no || facts.amount as u64 != progress.request.amount
    {
        return Err(EngineError::Broken(format!(
            "Ping++ returned deposit {} for another order_no or amount than {}",
            facts.id, progress.request.order_no
        )));
    }
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    deposits::record_deposit(&tx, progress.order_id, &facts.id, &facts.status, &deposit).await?;
    let order = orders::attach_charge(&tx, progress.order_id, &facts.id, &envelope.id).await?;
    let data = json!({ "order": order, "deposit": deposit });
    let result = succeeded(envelope, Some(recharge::MSG_CREATED), data);
    step::store_result(tx, envelope, &result).await
}

/// Ping++ refused the deposit: the waiting order fails and the command is rejected.
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

/// `recharge.retrieve` of a deposit: what Ping++ says of it now, applied through the same
/// completion as the webhook.
pub(crate) async fn retrieve(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (order_id, deposit_id) = {
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
        let deposit = deposits::of_order(&tx, order_id).await?;
        let Some(deposit_id) = deposit else {
            let rejection =
                Rejection::field(Code::NotRecharge, "order", recharge::MSG_NOT_RECHARGE);
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        };
        match deposit_id {
            // Waiting, or failed and perhaps paid late after all: ask Ping++.
            Some(id) if found.state != OrderState::Succeeded => {
                tx.rollback().await?;
                (order_id, id)
            }
            _ => {
                let result = succeeded(envelope, None, json!({ "order": found.order }));
                return step::conclude(tx, envelope, result).await;
            }
        }
    };
    let deposit = match provider::client(engine)?
        .retrieve_deposit(&deposit_id)
        .await
    {
        Ok(deposit) => deposit,
        Err(error) => {
            let rejection = provider::refused_or_retry(error)?;
            let mut client = engine.pool.get().await?;
            let tx = client.transaction().await?;
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
    };
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let result = match complete_deposit(&tx, order_id, &deposit, Some(&envelope.id)).await? {
        Ok(completion) => succeeded(envelope, None, json!({ "order": completion.order() })),
        Err(mismatch) => {
            tracing::error!(order_id, %mismatch, "Ping++ deposit disagrees with its order");
            rejected(
                envelope,
                Rejection::field(Code::DepositMismatch, "order", &mismatch),
            )
        }
    };
    step::store_result(tx, envelope, &result).await
}
