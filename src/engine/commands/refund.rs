//! `recharge.refund` (the money with the platform): a succeeded recharge given back through its
//! Ping++ charge, and `recharge.retrieve` of a refund's order. The Ping++ call never runs inside
//! a transaction; the `recharge_refunds` row is the recovery point between the steps:
//!
//! 1. One transaction locks the recharge order (refunds of one recharge take turns) and the
//!    wallet, checks the amount against what the charge has left and what the wallet holds,
//!    moves it out of the wallet into `pending_refunds`, and records the refund with its
//!    waiting expense order.
//! 2. The refund is created at Ping++, marked `metadata.refund_no`. Ping++ keys a charge refund
//!    by nothing of ours and makes a new one for each create, so a create is sent once, and
//!    one that may have reached Ping++ (no answer, a 5xx, a crash) is looked for in the
//!    charge's refund list before anything is sent again: found, the command goes on with
//!    it; not found, it waits (an unknown outcome, never a rejection) until the earlier
//!    create can no longer turn up ([`RESEND_AFTER_TIMEOUTS`] Ping++ timeouts), and only then
//!    sends again. Twins of the command take turns on the row's send count.
//! 3. One transaction records the refund (completing it, if Ping++ says how it ended) and
//!    stores the result `{refund}`. Ping++ refusing the create gives the money back to the
//!    wallet, fails the order and rejects the command (`payment_provider_error`).
//!
//! The refund then ends by its webhook, by the worker's pull, or by a `recharge.retrieve` of its
//! order, all through `completion::refund`.

use serde_json::json;

use crate::db::commands::{conflict, Applied};
use crate::db::ledger::{insert_orders, lock_wallets, post_journal};
use crate::db::orders;
use crate::db::refunds::{self, NewRefund, Recorded, Report};
use crate::domain::command::Envelope;
use crate::domain::outcome::{Code, Rejection};
use crate::domain::purchase::RefundStatus;
use crate::domain::refund::{self as rules, Settle};
use crate::engine::completion::refund::{complete_recharge_refund, settle_money};
use crate::engine::provider;
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::{ChargeRefundRequest, PingppClient, SentOnceError};

/// A create that may have reached Ping++ and is not in the charge's refund list is sent again
/// only after this many Ping++ timeouts: by then Ping++ has made it or never will.
pub const RESEND_AFTER_TIMEOUTS: u32 = 6;

const ENDPOINT: &str = "create_charge_refund";

enum Begun {
    Answered(Applied),
    Recorded(Box<Recorded>),
}

pub(crate) async fn request(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let recorded = match begin(engine, envelope).await? {
        Begun::Answered(applied) => return Ok(applied),
        Begun::Recorded(recorded) => recorded,
    };
    let client = provider::client(engine)?;
    match send(engine, client, &recorded).await? {
        Sent::Made(made) => record(engine, envelope, &recorded, &made).await,
        Sent::Refused(rejection, send) => {
            give_back(engine, envelope, &recorded, rejection, send).await
        }
    }
}

/// Step 1: the stored answer, the recorded refund, or a new one with its money out of the
/// wallet.
async fn begin(engine: &Engine, envelope: &Envelope) -> Result<Begun, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::looking(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(Begun::Answered(applied)),
        Step::Open(tx) => tx,
    };
    if let Some(recorded) = refunds::of_command(&tx, &envelope.id).await? {
        tx.rollback().await?;
        if recorded.fingerprint != envelope.fingerprint() {
            return Ok(Begun::Answered(conflict(envelope)));
        }
        return Ok(Begun::Recorded(Box::new(recorded)));
    }
    // Without Ping++ nothing may leave the wallet: the command waits (and is finally
    // dead-lettered), never rejected.
    provider::client(engine)?;
    let refused = |rejection| rejected(envelope, rejection);
    let request = match rules::parse(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => {
            let answer = step::conclude(tx, envelope, refused(rejection)).await?;
            return Ok(Begun::Answered(answer));
        }
    };
    // The recharge first, then the wallet: the order a charge's completion locks them in.
    let recharge = refunds::lock_recharge(&tx, request.order).await?;
    let charge = match rules::refundable(envelope.user_id, recharge.as_ref()) {
        Ok(charge) => charge.to_owned(),
        Err(rejection) => {
            let answer = step::conclude(tx, envelope, refused(rejection)).await?;
            return Ok(Begun::Answered(answer));
        }
    };
    let paid = recharge.as_ref().map_or(0, |r| r.amount);
    let taken = refunds::taken(&tx, request.order).await?;
    let wallets = lock_wallets(&tx, &[envelope.user_id]).await?;
    // A refund sends the wallet's money out: a frozen wallet sends nothing.
    if let Err(rejection) = crate::engine::limits::may_send(wallets.get(&envelope.user_id)) {
        let answer = step::conclude(tx, envelope, refused(rejection)).await?;
        return Ok(Begun::Answered(answer));
    }
    let figures = wallets
        .get(&envelope.user_id)
        .map_or_else(Default::default, |w| w.figures);
    let journal = match rules::decide(envelope.user_id, request.amount, paid, taken, figures) {
        Ok(journal) => journal,
        Err(rejection) => {
            let answer = step::conclude(tx, envelope, refused(rejection)).await?;
            return Ok(Begun::Answered(answer));
        }
    };
    // The command's row comes with its result: the request names no command yet.
    let journal_id = post_journal(&tx, rules::JOURNAL_REQUESTED, None, &journal, &wallets).await?;
    let draft = rules::order(
        envelope.user_id,
        request.order,
        request.amount,
        &request.description,
    );
    let order = insert_orders(&tx, None, Some(journal_id), &[draft])
        .await?
        .remove(0);
    let order_id = order["id"]
        .as_i64()
        .ok_or_else(|| EngineError::Broken("an order without an id".into()))?;
    let recorded = refunds::insert(
        &tx,
        &NewRefund {
            command_id: &envelope.id,
            fingerprint: &envelope.fingerprint(),
            user_id: envelope.user_id,
            recharge_order_id: request.order,
            order_id,
            charge_id: &charge,
            amount: request.amount,
            description: &request.description,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Begun::Recorded(Box::new(recorded)))
}

/// What step 2 came to.
enum Sent {
    /// Ping++ made this refund (now, or on an earlier try).
    Made(serde_json::Value),
    /// Ping++ refused it, and no earlier try made one; with the number of the refused send.
    Refused(Rejection, i32),
}

/// Step 2: the refund Ping++ made for an earlier try, or a new create, sent once.
async fn send(
    engine: &Engine,
    client: &PingppClient,
    recorded: &Recorded,
) -> Result<Sent, EngineError> {
    let refund_no = rules::refund_no(recorded.id);
    if let Some(ago_ms) = recorded.sent_ago_ms {
        let found = client
            .find_charge_refund(&recorded.charge_id, &refund_no)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, %refund_no, "cannot look for the refund Ping++ may have made");
                provider::outcome_unknown(ENDPOINT, &refund_no)
            })?;
        if let Some(made) = found {
            tracing::warn!(%refund_no, "a refund whose answer was lost: going on with it");
            return Ok(Sent::Made(made));
        }
        let settle_ms = (client.timeout() * RESEND_AFTER_TIMEOUTS).as_millis() as i64;
        if ago_ms < settle_ms {
            // The earlier create may still be under way at Ping++.
            return Err(provider::outcome_unknown(ENDPOINT, &refund_no));
        }
    }
    let sends = recorded.sends + 1;
    {
        let mut db = engine.pool.get().await?;
        let tx = db.transaction().await?;
        let mine = refunds::claim_send(&tx, recorded.id, recorded.sends).await?;
        tx.commit().await?;
        if !mine {
            // A twin of this command sends, or has sent: its outcome is waited for.
            return Err(provider::outcome_unknown(ENDPOINT, &refund_no));
        }
    }
    let request = ChargeRefundRequest {
        amount: recorded.amount as u64,
        description: recorded.description.clone(),
        refund_no: refund_no.clone(),
    };
    match client
        .create_charge_refund(&recorded.charge_id, &request)
        .await
    {
        Ok(made) => Ok(Sent::Made(made)),
        Err(SentOnceError {
            error,
            may_have_acted: false,
        }) => match provider::rejection(&error) {
            // The send stays marked until `give_back` records the refusal and returns the money
            // in one transaction: a twin of the command meanwhile looks for a refund and waits,
            // and never sends one while the money is on its way back.
            Some(rejection) => Ok(Sent::Refused(rejection, sends)),
            None => {
                let mut db = engine.pool.get().await?;
                let tx = db.transaction().await?;
                refunds::unsend(&tx, recorded.id, sends).await?;
                tx.commit().await?;
                Err(provider::failure(error))
            }
        },
        Err(SentOnceError { error, .. }) => {
            tracing::warn!(error = %error, %refund_no, "Ping++ may have made the refund: looking for it next");
            Err(provider::outcome_unknown(ENDPOINT, &refund_no))
        }
    }
}

/// Step 3: record what Ping++ made (completing it, if it ended already) and answer.
async fn record(
    engine: &Engine,
    envelope: &Envelope,
    recorded: &Recorded,
    made: &serde_json::Value,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let completion = match complete_recharge_refund(&tx, made, Some(&envelope.id)).await? {
        Ok(completion) => completion,
        Err(mismatch) => {
            return Err(EngineError::Broken(format!(
                "refund {}: {mismatch}",
                rules::refund_no(recorded.id)
            )))
        }
    };
    orders::set_command(&tx, recorded.order_id, &envelope.id).await?;
    refunds::schedule_pull(&tx, recorded.id, engine.refund_pull.as_secs() as i64).await?;
    let result = succeeded(
        envelope,
        Some(rules::MSG_CREATED),
        json!({ "refund": completion.refund() }),
    );
    step::store_result(tx, envelope, &result).await
}

/// Ping++ refused the create: the money goes back to the wallet, the order fails, and the
/// command is rejected.
async fn give_back(
    engine: &Engine,
    envelope: &Envelope,
    recorded: &Recorded,
    rejection: Rejection,
    refused_send: i32,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let locked = refunds::lock(&tx, recorded.id).await?;
    if locked.status == RefundStatus::Pending && locked.refund_id.is_none() {
        if locked.sends != refused_send {
            // Sent again since (this answer came late): that send's outcome decides.
            return Err(provider::outcome_unknown(
                ENDPOINT,
                &rules::refund_no(recorded.id),
            ));
        }
        let reason = rejection.messages().join("; ");
        let report = Report {
            status: RefundStatus::Failed,
            refund: None,
            failure_code: Some("payment_provider_error"),
            failure_msg: Some(&reason),
        };
        refunds::record(&tx, locked.id, &report).await?;
        settle_money(&tx, &locked, Settle::Fail, Some(&envelope.id)).await?;
        refunds::set_order_state(&tx, locked.order_id, Settle::Fail.order_state()).await?;
    }
    orders::set_command(&tx, recorded.order_id, &envelope.id).await?;
    step::store_result(tx, envelope, &rejected(envelope, rejection)).await
}

/// `recharge.retrieve` of a refund's own order (the owner's, checked by the caller): the refund
/// as Ping++ sees it now, applied as its webhook would be; `{order, refund}`.
pub(crate) async fn retrieve(
    engine: &Engine,
    envelope: &Envelope,
    order_id: i64,
) -> Result<Applied, EngineError> {
    let asked = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let Some(recorded) = refunds::of_order(&tx, order_id).await? else {
            return Err(EngineError::Broken(format!(
                "refund order {order_id} without its refund"
            )));
        };
        match (&recorded.refund_id, recorded.status) {
            (Some(refund_id), RefundStatus::Pending) => {
                tx.rollback().await?;
                (recorded.charge_id.clone(), refund_id.clone())
            }
            // Decided, or not made at Ping++ yet (its command is under way): nothing to ask.
            _ => {
                let order = refunds::order(&tx, order_id).await?;
                let data = json!({ "order": order, "refund": recorded.json });
                return step::conclude(tx, envelope, succeeded(envelope, None, data)).await;
            }
        }
    };
    let (charge_id, refund_id) = asked;
    let now = match provider::client(engine)?
        .retrieve_charge_refund(&charge_id, &refund_id)
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
    let result = match complete_recharge_refund(&tx, &now, Some(&envelope.id)).await? {
        Ok(completion) => succeeded(
            envelope,
            None,
            json!({ "order": completion.order(), "refund": completion.refund() }),
        ),
        Err(mismatch) => {
            tracing::error!(order_id, %mismatch, "Ping++'s refund disagrees with pluspay's");
            rejected(
                envelope,
                Rejection::field(Code::ChargeMismatch, "order", &mismatch),
            )
        }
    };
    step::store_result(tx, envelope, &result).await
}
