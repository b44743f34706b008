//! `recharge` and `recharge.retrieve`: the two commands that call Ping++. The HTTP call never
//! runs inside a database transaction, so each is split in steps with a recovery point between
//! them (the `recharges` row): a crash or redelivery at any step resumes instead of creating a
//! second order or a second charge.
//!
//! 1. One transaction validates, creates the waiting order and records the exact charge request.
//! 2. The charge is created at Ping++. Retries send the same `order_no` and parameters, for
//!    which Ping++ returns the charge it already made rather than a second one.
//! 3. One transaction records the charge on the order and stores the command's result.
//!
//! Twins (the same command delivered twice at once) are serialised by an advisory lock on the
//! command id.

use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::Transaction;
use serde_json::{json, Value};

use super::{rejected, succeeded, Engine};
use crate::db::commands::{self, Applied, Claim};
use crate::db::wallets::{insert_orders, lock_wallets, post_journal};
use crate::db::DbError;
use crate::domain::command::Envelope;
use crate::domain::outcome::{Code, Rejection};
use crate::domain::query;
use crate::domain::recharge::{self, charge_facts, Completion, Mismatch, WaitingRecharge};
use crate::domain::recharge_object::{self, RechargeTerms};
use crate::pingpp::{ChargeRequest, PingppClient, PingppError, RechargeObjectRequest};

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

enum Begin {
    Done(Applied),
    Resume(Box<Progress>),
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn pingpp(engine: &Engine) -> Result<&PingppClient, DbError> {
    engine.pingpp.as_ref().ok_or_else(|| {
        DbError::Fatal(
            "Ping++ is not configured (set pingpp.app_id and pingpp.secret_key): \
             recharges cannot be applied"
                .into(),
        )
    })
}

/// A Ping++ failure that is not the command's fault is retried; a refusal by Ping++ (an error
/// body) becomes the command's rejection.
pub(super) fn provider_rejection(error: &PingppError) -> Option<Rejection> {
    match error {
        PingppError::Api {
            kind,
            message,
            param,
            ..
        } => {
            let field = param.as_deref().unwrap_or("type");
            let mut rejection =
                Rejection::field(Code::PaymentProviderError, field, message.as_str());
            rejection
                .errors
                .insert("pingpp".into(), vec![format!("{kind}: {message}")]);
            Some(rejection)
        }
        _ => None,
    }
}

pub(super) fn provider_failure(error: PingppError) -> DbError {
    if error.is_transient() {
        DbError::Transient(format!("Ping++: {error}"))
    } else {
        DbError::Fatal(format!("Ping++: {error}"))
    }
}

/// Serialises twins of one command for the rest of the transaction.
pub(super) async fn lock_command(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), DbError> {
    tx.execute(
        &tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .await?,
        &[&envelope.id],
    )
    .await?;
    Ok(())
}

/// Claims the id and stores `result` in one short transaction.
pub(super) async fn conclude(
    tx: Transaction<'_>,
    envelope: &Envelope,
    result: crate::domain::outcome::CommandResult,
) -> Result<Applied, DbError> {
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    let applied = commands::store(&tx, envelope, &result).await?;
    tx.commit().await?;
    Ok(applied)
}

pub(super) async fn create(engine: &Engine, envelope: &Envelope) -> Result<Applied, DbError> {
    let progress = match begin(engine, envelope).await? {
        Begin::Done(applied) => return Ok(applied),
        Begin::Resume(progress) => progress,
    };
    let made = match (&progress.charge, &progress.recharge) {
        (Some(charge), _) => Ok((charge.clone(), progress.object.clone())),
        (None, None) => pingpp(engine)?
            .create_charge(&progress.request)
            .await
            .map(|charge| (charge, None)),
        (None, Some(request)) => pingpp(engine)?
            .create_recharge(request)
            .await
            .map(|object| (object["charge"].clone(), Some(object))),
    };
    let (charge, object) = match made {
        Ok(made) => made,
        Err(error) => match provider_rejection(&error) {
            None => return Err(provider_failure(error)),
            // A refusal may answer a repeat of a create that did take effect (its first answer
            // was lost or late, or the worker crashed before recording it): look for what
            // Ping++ made before believing it.
            Some(rejection) => match find_made(engine, &progress).await? {
                Some(made) => made,
                None if refuses_used_order_no(&error) => {
                    return Err(outcome_unknown("create_charge", &progress.request.order_no))
                }
                None => return refuse(engine, envelope, &progress, rejection).await,
            },
        },
    };
    finish(engine, envelope, &progress, charge, object).await
}

/// What Ping++ made for this recharge's `order_no`, if anything: the charge (and, in
/// recharge-object mode, the recharge object). A lookup that can't be done is an unknown
/// outcome: the command waits.
async fn find_made(
    engine: &Engine,
    progress: &Progress,
) -> Result<Option<(Value, Option<Value>)>, DbError> {
    let client = pingpp(engine)?;
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
        outcome_unknown("create_charge", order_no)
    })?;
    if found.is_some() {
        tracing::warn!(%order_no, "Ping++ refused a repeated create, but had made it: going on with it");
    }
    Ok(found)
}

/// Ping++'s clock and ours may disagree: look this far before the recharge began.
pub(super) const LOOKUP_MARGIN_SECS: i64 = 600;

/// Whether Ping++ refused because the `order_no` was used: ours are unique by construction, so
/// only an earlier attempt of the same command can have used it.
pub(super) fn refuses_used_order_no(error: &PingppError) -> bool {
    match error {
        PingppError::Api { message, param, .. } => {
            param.as_deref().is_some_and(|p| p.contains("order_no"))
                || message.contains("order_no")
                || message.contains("订单号")
        }
        _ => false,
    }
}

/// Ping++ may or may not have acted and it can't be found out now: never a rejection; the
/// command waits and is tried again (the worker retries transient errors), and says so.
pub(super) fn outcome_unknown(endpoint: &'static str, order_no: &str) -> DbError {
    crate::metrics::pingpp_outcome_unknown(endpoint);
    tracing::warn!(
        %order_no,
        endpoint,
        "Ping++ may have acted on this order_no and that can't be found out now: the command waits"
    );
    DbError::Transient(format!(
        "Ping++'s outcome for order_no {order_no} is unknown; waiting to find it out"
    ))
}

fn unreadable(what: &str, e: serde_json::Error) -> DbError {
    DbError::Fatal(format!("a recharge's stored {what} is unreadable: {e}"))
}

/// Step 1: the stored outcome, the recorded progress, or a new waiting order.
async fn begin(engine: &Engine, envelope: &Envelope) -> Result<Begin, DbError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    lock_command(&tx, envelope).await?;
    if let Some(applied) = commands::lookup(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(Begin::Done(applied));
    }
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT fingerprint, order_id, charge_request::text, charge::text,
                    recharge_request::text, recharge::text,
                    extract(epoch FROM created_at)::bigint AS begun_at
             FROM recharges WHERE command_id = $1",
            )
            .await?,
            &[&envelope.id],
        )
        .await?;
    if let Some(row) = row {
        tx.rollback().await?;
        if row.get::<_, Vec<u8>>(0) != envelope.fingerprint() {
            return Ok(Begin::Done(commands::conflict(envelope)));
        }
        let request =
            serde_json::from_str(row.get(2)).map_err(|e| unreadable("charge request", e))?;
        let json = |i: usize, what: &str| {
            row.get::<_, Option<&str>>(i)
                .map(serde_json::from_str::<Value>)
                .transpose()
                .map_err(|e| unreadable(what, e))
        };
        let charge = json(3, "charge")?;
        let object = json(5, "recharge")?;
        let recharge = json(4, "recharge request")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| unreadable("recharge request", e))?;
        return Ok(Begin::Resume(Box::new(Progress {
            order_id: row.get(1),
            request,
            recharge,
            charge,
            object,
            begun_at: row.get("begun_at"),
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
            return Ok(Begin::Done(conclude(tx, envelope, result).await?));
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
        .ok_or_else(|| DbError::Fatal("an order without an id".into()))?;
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
    tx.execute(&tx.prepare_cached("INSERT INTO recharges (command_id, fingerprint, user_id, order_id, order_no, charge_request,
                                user_fee, balance_bonus, recharge_request)
         VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8, $9::text::json)").await?,
        &[
            &envelope.id,
            &envelope.fingerprint().as_slice(),
            &request.user,
            &order_id,
            &charge_request.order_no,
            &serde_json::to_string(&charge_request).expect("a charge request serializes"),
            &terms.as_ref().and_then(|t| t.user_fee),
            &terms.as_ref().and_then(|t| t.balance_bonus),
            &recharge_request
                .as_ref()
                .map(|r| serde_json::to_string(r).expect("a recharge request serializes")),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Begin::Resume(Box::new(Progress {
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
async fn finish(
    engine: &Engine,
    envelope: &Envelope,
    progress: &Progress,
    charge: Value,
    object: Option<Value>,
) -> Result<Applied, DbError> {
    let charge_id = charge
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| DbError::Fatal("Ping++ returned a charge without an id".into()))?;
    if charge.get("order_no").and_then(Value::as_str) != Some(progress.request.order_no.as_str())
        || charge.get("amount").and_then(Value::as_u64) != Some(progress.request.amount)
    {
        return Err(DbError::Fatal(format!(
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
                return Err(DbError::Fatal(format!(
                    "Ping++ returned recharge {id:?} with another user_fee than asked for {}",
                    progress.request.order_no
                )));
            }
            id.map(str::to_owned)
        }
        (Some(_), None) => {
            return Err(DbError::Fatal(format!(
                "no recharge object recorded for {}",
                progress.request.order_no
            )))
        }
    };
    let livemode = charge.get("livemode").and_then(Value::as_bool) == Some(true);
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    lock_command(&tx, envelope).await?;
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    tx.execute(
        &tx.prepare_cached(
            "UPDATE recharges SET charge_id = $2, livemode = $3, charge = $4::text::json,
                recharge_id = $5, recharge = $6::text::json
         WHERE command_id = $1",
        )
        .await?,
        &[
            &envelope.id,
            &charge_id,
            &livemode,
            &charge.to_string(),
            &recharge_id,
            &recharge_id
                .as_ref()
                .and(object.as_ref())
                .map(Value::to_string),
        ],
    )
    .await?;
    let order: Value = tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE wallet_orders SET target_id = $2, command_id = $3, updated_at = now()
             WHERE id = $1 RETURNING order_json(wallet_orders)",
            )
            .await?,
            &[&progress.order_id, &charge_id, &envelope.id],
        )
        .await?
        .get(0);
    let mut data = json!({ "order": order, "pingpp_order": charge });
    if let (Some(object), Some(_)) = (object, &recharge_id) {
        data["pingpp_recharge"] = object;
    }
    let result = succeeded(envelope, Some(recharge::MSG_CREATED), data);
    let applied = commands::store(&tx, envelope, &result).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Ping++ refused to create the charge: the waiting order fails and the command is rejected.
async fn refuse(
    engine: &Engine,
    envelope: &Envelope,
    progress: &Progress,
    rejection: Rejection,
) -> Result<Applied, DbError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    lock_command(&tx, envelope).await?;
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    tx.execute(&tx.prepare_cached("UPDATE wallet_orders SET state = -1, command_id = $2, updated_at = now() WHERE id = $1").await?,
        &[&progress.order_id, &envelope.id],
    )
    .await?;
    let applied = commands::store(&tx, envelope, &rejected(envelope, rejection)).await?;
    tx.commit().await?;
    Ok(applied)
}

pub(super) async fn retrieve(engine: &Engine, envelope: &Envelope) -> Result<Applied, DbError> {
    let (order_id, charge_id) = {
        let mut client = engine.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(applied) = commands::lookup(&tx, envelope).await? {
            tx.rollback().await?;
            return Ok(applied);
        }
        let order_id = match query::order_id(&envelope.data) {
            Ok(id) => id,
            Err(rejection) => return conclude(tx, envelope, rejected(envelope, rejection)).await,
        };
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT o.owner_id, o.target_type, o.state, r.charge_id, order_json(o)
                 FROM wallet_orders o LEFT JOIN recharges r ON r.order_id = o.id
                 WHERE o.id = $1",
                )
                .await?,
                &[&order_id],
            )
            .await?;
        let row = match row {
            Some(row) if row.get::<_, i64>(0) == envelope.user_id => row,
            _ => {
                let result = rejected(envelope, query::unknown_order());
                return conclude(tx, envelope, result).await;
            }
        };
        if row.get::<_, &str>(1) != recharge::TARGET_TYPE {
            let rejection =
                Rejection::field(Code::NotRecharge, "order", recharge::MSG_NOT_RECHARGE);
            return conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
        let charge_id: Option<String> = row.get(3);
        match charge_id {
            // Waiting, or failed and perhaps paid late after all: ask Ping++. Paid already, or
            // its charge was never made: nothing to ask.
            Some(charge_id) if row.get::<_, i16>(2) != 1 => {
                tx.rollback().await?;
                (order_id, charge_id)
            }
            _ => {
                let order: Value = row.get(4);
                let result = succeeded(envelope, None, json!({ "order": order }));
                return conclude(tx, envelope, result).await;
            }
        }
    };
    let charge = match pingpp(engine)?.retrieve_charge(&charge_id).await {
        Ok(charge) => charge,
        Err(error) => match provider_rejection(&error) {
            Some(rejection) => {
                let mut client = engine.pool.get().await?;
                let tx = client.transaction().await?;
                return conclude(tx, envelope, rejected(envelope, rejection)).await;
            }
            None => return Err(provider_failure(error)),
        },
    };
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
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
    let applied = commands::store(&tx, envelope, &result).await?;
    tx.commit().await?;
    Ok(applied)
}

/// What a charge did to its order.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeCompletion {
    /// Paid: the wallet was credited just now (state 1). `late`: the order had been marked
    /// failed (-1) before the payment was confirmed; the payer's money reached Ping++ all the
    /// same, so it is credited (a late payment).
    Credited { order: Value, late: bool },
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

/// The one path that completes a recharge order from its charge, for `recharge.retrieve` and
/// the webhook alike: the order row is locked first, so racing callers credit once.
pub async fn complete_charge(
    tx: &Transaction<'_>,
    order_id: i64,
    charge: &Value,
    command_id: Option<&str>,
) -> Result<Result<ChargeCompletion, Mismatch>, DbError> {
    let facts = match charge_facts(charge, unix_now()) {
        Ok(facts) => facts,
        // What Ping++ signed or answered will read the same way next time: refuse it now.
        Err(reason) => return Ok(Err(Mismatch::Unreadable { reason })),
    };
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT o.owner_id, o.amount, o.state, r.charge_id, coalesce(r.livemode, false),
                    order_json(o), coalesce(r.user_fee, 0), coalesce(r.balance_bonus, 0)
             FROM wallet_orders o JOIN recharges r ON r.order_id = o.id
             WHERE o.id = $1 FOR UPDATE OF o",
            )
            .await?,
            &[&order_id],
        )
        .await?;
    let order: Value = row.get(5);
    let Some(charge_id) = row.get::<_, Option<String>>(3) else {
        return Ok(Err(Mismatch::Charge {
            charge: facts.id,
            order: order_id,
            expected: "none yet".into(),
        }));
    };
    let waiting = WaitingRecharge {
        order_id,
        owner: row.get(0),
        amount: row.get(1),
        charge_id,
        livemode: row.get(4),
        user_fee: row.get(6),
        bonus: row.get(7),
    };
    let completion = match recharge::complete(&waiting, &facts) {
        Ok(completion) => completion,
        Err(mismatch) => return Ok(Err(mismatch)),
    };
    let state: i16 = row.get(2);
    let late = match (state, &completion) {
        (0, _) => false,
        // Marked failed (expired by our clock, or a failure reported) and then paid after all.
        (-1, Completion::Credit(_)) => true,
        _ => return Ok(Ok(ChargeCompletion::Unchanged { order })),
    };
    Ok(Ok(match completion {
        Completion::Wait => ChargeCompletion::Unchanged { order },
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
            let order = tx
                .query_one(
                    &tx.prepare_cached(
                        "UPDATE wallet_orders SET state = 1, journal_id = $2, updated_at = now()
                     WHERE id = $1 RETURNING order_json(wallet_orders)",
                    )
                    .await?,
                    &[&order_id, &journal_id],
                )
                .await?
                .get(0);
            ChargeCompletion::Credited { order, late }
        }
        Completion::Fail { reason } => {
            let order = tx
                .query_one(
                    &tx.prepare_cached(
                        "UPDATE wallet_orders SET state = -1, updated_at = now()
                     WHERE id = $1 RETURNING order_json(wallet_orders)",
                    )
                    .await?,
                    &[&order_id],
                )
                .await?
                .get(0);
            ChargeCompletion::Failed { order, reason }
        }
    }))
}
