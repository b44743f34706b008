//! Cash payouts through Ping++ withdrawals (`pingpp.payout = "withdrawals"`): `cash.approve`,
//! `cash.reject` and `cash.retrieve` call Ping++ between their own transactions, with a
//! recovery point (the `cash_payouts` row) between them, as `recharge` does:
//!
//! 1. One transaction checks the cash record is waiting and records the exact withdrawal
//!    request (`order_no` = `w` + the payout's id) as the cash record's active payout.
//! 2. The withdrawal is created at Ping++ (the same `order_no` and parameters on every retry;
//!    a Ping++ that refuses the repeat is asked for the withdrawal it made instead, through its
//!    list, and while that can't be known the command waits) and its id recorded; then it is
//!    confirmed (`PUT {"status":"pending"}`). A redelivery or a second approval of the same cash
//!    resumes the active payout: it never creates a second withdrawal.
//! 3. One transaction approves the cash record (status 1, its order still waiting) and stores
//!    the result. If Ping++ refused (a 4xx with its error body), a withdrawal left created is
//!    canceled, the payout is given up and the cash record stays waiting, untouched.
//!
//! The money left the wallet for `pending_payouts` when the cash was requested. It stays there
//! until Ping++ reports the withdrawal final, through the one completion path
//! `completion::withdrawal` shared by the webhook (`withdrawal.succeeded` / `.failed` /
//! `.canceled`), `cash.retrieve` and the commands above: succeeded moves it to `paid_out` and
//! the order succeeds; failed or canceled returns it to the wallet, the cash record is rejected
//! (status 2) with Ping++'s `failure_msg` as its remark and the order fails. The cash row is
//! locked first, so racing callers settle once.
//!
//! `cash.reject` of a waiting cash record whose payout began cancels the withdrawal first
//! (`PUT {"status":"canceled"}`), creating it by its `order_no` if an approval crashed before
//! recording it, so no withdrawal can go on after the money went back to the wallet.

use deadpool_postgres::Transaction;
use serde_json::{json, Value};

use crate::db::cash_payouts;
use crate::db::cashes::{self, LockedCash};
use crate::db::commands::Applied;
use crate::db::ledger::{lock_wallets, post_journal};
use crate::domain::cash::{
    self, ApprovalStep, CashStatus, Decision, DecisionEffect, WithdrawalState, WithdrawalStatus,
};
use crate::domain::command::Envelope;
use crate::domain::order::OrderState;
use crate::domain::outcome::{Code, CommandResult, Rejection};
use crate::domain::recharge_object::pingpp_user;
use crate::engine::completion::withdrawal::{complete_withdrawal, facts, observe, Payout};
use crate::engine::provider::{self, LOOKUP_MARGIN_SECS};
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::{WithdrawalRequest, WithdrawalUpdate};

/// What withdrawals are made with (`[pingpp]` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutSettings {
    /// The Ping++ user id of our user `{id}`.
    pub user_id_template: String,
    pub channel: String,
    pub return_url: String,
}

/// How `cash.approve` begins: answered already, or a payout (found or new) to go on with.
enum Approval {
    Answered(Applied),
    Payout(Box<Payout>),
}

fn settings(engine: &Engine) -> Result<&PayoutSettings, EngineError> {
    engine
        .payout
        .as_deref()
        .ok_or_else(|| EngineError::Broken("pingpp.payout is not \"withdrawals\"".into()))
}

fn already_decided() -> Rejection {
    Rejection::field(Code::CashAlreadyDecided, "cash", cash::MSG_ALREADY_DECIDED)
}

async fn active_payout(tx: &Transaction<'_>, cash_id: i64) -> Result<Option<Payout>, EngineError> {
    match cash_payouts::active(tx, cash_id).await? {
        Some(recorded) => Ok(Some(Payout::from_recorded(recorded, cash_id)?)),
        None => Ok(None),
    }
}

/// Step 1 of `cash.approve`: its stored outcome, the cash record's active payout, or a new one.
async fn begin_approve(engine: &Engine, envelope: &Envelope) -> Result<Approval, EngineError> {
    let settings = settings(engine)?;
    let mut client = engine.pool.get().await?;
    let tx = match step::looking(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(Approval::Answered(applied)),
        Step::Open(tx) => tx,
    };
    let request = match cash::parse_decision(Decision::Approve, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => {
            let result = rejected(envelope, rejection);
            return Ok(Approval::Answered(
                step::conclude(tx, envelope, result).await?,
            ));
        }
    };
    if cash_payouts::taken_by_other_content(&tx, &envelope.id, &envelope.fingerprint()).await? {
        tx.rollback().await?;
        return Ok(Approval::Answered(crate::db::commands::conflict(envelope)));
    }
    let Some(locked) = cashes::lock(&tx, request.cash_id).await? else {
        let rejection = Rejection::field(Code::UnknownCash, "cash", cash::MSG_UNKNOWN_CASH);
        let result = rejected(envelope, rejection);
        return Ok(Approval::Answered(
            step::conclude(tx, envelope, result).await?,
        ));
    };
    let threshold = engine.policy.cash_review_threshold;
    if locked.status != CashStatus::Waiting {
        // Approved already (by another command), or rejected: as in the manual flow.
        let result = match cash::decide(Decision::Approve, locked.status, locked.owner, 0) {
            Ok(_) => approved_result(&tx, envelope, &locked, threshold, None).await?,
            Err(rejection) => rejected(envelope, rejection),
        };
        return Ok(Approval::Answered(
            step::conclude(tx, envelope, result).await?,
        ));
    }
    // The two-person rule. The settling approval is recorded with the approval itself (step
    // 3), so that a payout given up leaves the request as it was.
    let approved_by = cashes::approvers(&tx, locked.id).await?;
    let approval = match cash::approval_step(
        envelope.user_id,
        locked.owner,
        locked.value,
        threshold,
        &approved_by,
    ) {
        Ok(approval) => approval,
        Err(rejection) => {
            let result = rejected(envelope, rejection);
            return Ok(Approval::Answered(
                step::conclude(tx, envelope, result).await?,
            ));
        }
    };
    if let Some(payout) = active_payout(&tx, locked.id).await? {
        tx.rollback().await?;
        return Ok(Approval::Payout(Box::new(payout)));
    }
    if approval == ApprovalStep::RecordFirst {
        cashes::record_approval(
            &tx,
            locked.id,
            envelope.user_id,
            &request.remark,
            &envelope.id,
        )
        .await?;
        let result = super::cash::first_approval_result(&tx, envelope, locked.id).await?;
        return Ok(Approval::Answered(
            step::conclude(tx, envelope, result).await?,
        ));
    }
    let id = cash_payouts::next_id(&tx).await?;
    let withdrawal = WithdrawalRequest {
        user: pingpp_user(&settings.user_id_template, locked.owner),
        channel: settings.channel.clone(),
        amount: locked.value as u64,
        order_no: cash::withdrawal_order_no(id),
        return_url: settings.return_url.clone(),
    };
    let request_json = serde_json::to_string(&withdrawal).expect("a withdrawal request serializes");
    cash_payouts::insert(
        &tx,
        &cash_payouts::NewPayout {
            id,
            cash_id: locked.id,
            command_id: &envelope.id,
            fingerprint: &envelope.fingerprint(),
            operator: envelope.user_id,
            remark: &request.remark,
            order_no: &withdrawal.order_no,
            request: &request_json,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Approval::Payout(Box::new(Payout {
        id,
        cash_id: locked.id,
        request: withdrawal,
        withdrawal: None,
        begun_at: provider::unix_now(),
    })))
}
/// `{cash, pingpp_withdrawal?}` with the approval's message.
async fn approved_result(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    locked: &LockedCash,
    threshold: Option<i64>,
    withdrawal: Option<&Value>,
) -> Result<CommandResult, EngineError> {
    let mut data = json!({ "cash": cashes::get_json(tx, locked.id).await? });
    if let Some(withdrawal) = withdrawal {
        data["pingpp_withdrawal"] = withdrawal.clone();
    }
    if let Some(approvals) = super::cash::approvals_shown(tx, locked, threshold).await? {
        data["approvals"] = approvals.into();
    }
    Ok(succeeded(envelope, Some(cash::MSG_APPROVED), data))
}

/// Creates the payout's withdrawal (or finds the one its `order_no` made) and records it.
pub(crate) async fn ensure_created(
    engine: &Engine,
    payout: &Payout,
) -> Result<Result<Value, Rejection>, EngineError> {
    if let Some(withdrawal) = &payout.withdrawal {
        return Ok(Ok(withdrawal.clone()));
    }
    let client = provider::client(engine)?;
    let order_no = &payout.request.order_no;
    let withdrawal = match client.create_withdrawal(&payout.request).await {
        Ok(withdrawal) => withdrawal,
        Err(error) => {
            let Some(rejection) = provider::rejection(&error) else {
                return Err(provider::failure(error));
            };
            // A refusal may answer a repeat of a create that took effect (see
            // recharge::create): look for the withdrawal before believing it.
            let since = payout.begun_at - LOOKUP_MARGIN_SECS;
            let found = client.find_withdrawal(order_no, since).await.map_err(|e| {
                tracing::warn!(error = %e, %order_no, "cannot look up what Ping++ made");
                provider::outcome_unknown("create_withdrawal", order_no)
            })?;
            match found {
                Some(withdrawal) => withdrawal,
                None if provider::refuses_used_order_no(&error) => {
                    return Err(provider::outcome_unknown("create_withdrawal", order_no))
                }
                None => return Ok(Err(rejection)),
            }
        }
    };
    let mut db = engine.pool.get().await?;
    let tx = db.transaction().await?;
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| EngineError::Broken(format!("cash {} vanished", payout.cash_id)))?;
    observe(&tx, payout, &locked, &withdrawal).await?;
    tx.commit().await?;
    Ok(Ok(withdrawal))
}

pub(crate) async fn approve(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let payout = match begin_approve(engine, envelope).await? {
        Approval::Answered(applied) => return Ok(applied),
        Approval::Payout(payout) => payout,
    };
    let withdrawal = match ensure_created(engine, &payout).await? {
        Ok(withdrawal) => withdrawal,
        Err(rejection) => return give_up(engine, envelope, &payout, None, rejection).await,
    };
    let withdrawal = match confirm(engine, withdrawal).await? {
        Ok(withdrawal) => withdrawal,
        Err(Unconfirmed { now, rejection }) => {
            return give_up(engine, envelope, &payout, now, rejection).await
        }
    };
    approve_after_payout(engine, envelope, &payout, &withdrawal).await
}

/// Ping++ refused to confirm a withdrawal, which will not go on: what it is now, if known, and
/// the refusal.
pub(crate) struct Unconfirmed {
    pub now: Option<Value>,
    pub rejection: Rejection,
}

/// Confirms a created withdrawal (`PUT {"status":"pending"}`); one confirmed already is taken
/// as it is. Refused: what is it now? Confirmed after all (by a twin), or still created (it is
/// canceled, so nothing is left half-done), or canceled by a rejection.
pub(crate) async fn confirm(
    engine: &Engine,
    mut withdrawal: Value,
) -> Result<Result<Value, Unconfirmed>, EngineError> {
    if facts(&withdrawal)?.status != WithdrawalStatus::Created {
        return Ok(Ok(withdrawal));
    }
    let client = provider::client(engine)?;
    let id = facts(&withdrawal)?.id;
    match client
        .update_withdrawal(&id, WithdrawalUpdate::Confirm)
        .await
    {
        Ok(confirmed) => withdrawal = confirmed,
        Err(error) => {
            let rejection = provider::refused_or_retry(error)?;
            let now = client
                .retrieve_withdrawal(&id)
                .await
                .map_err(provider::failure)?;
            match facts(&now)?.status {
                WithdrawalStatus::Created => {
                    let canceled = match client
                        .update_withdrawal(&id, WithdrawalUpdate::Cancel)
                        .await
                    {
                        Ok(canceled) => canceled,
                        Err(error) if error.is_transient() => return Err(provider::failure(error)),
                        Err(error) => {
                            tracing::error!(withdrawal = %id, %error,
                                "Ping++ refused to confirm and to cancel a withdrawal; it stays created");
                            now
                        }
                    };
                    return Ok(Err(Unconfirmed {
                        now: Some(canceled),
                        rejection,
                    }));
                }
                status if status.is_returned() => {
                    return Ok(Err(Unconfirmed {
                        now: Some(now),
                        rejection,
                    }))
                }
                _ => withdrawal = now,
            }
        }
    }
    Ok(Ok(withdrawal))
}

/// Step 3 of `cash.approve`: the withdrawal is confirmed; approve the cash record.
async fn approve_after_payout(
    engine: &Engine,
    envelope: &Envelope,
    payout: &Payout,
    withdrawal: &Value,
) -> Result<Applied, EngineError> {
    let request = cash::parse_decision(Decision::Approve, &envelope.data)
        .map_err(|_| EngineError::Broken("an approval that was valid is not".into()))?;
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| EngineError::Broken(format!("cash {} vanished", payout.cash_id)))?;
    let result = if locked.status == CashStatus::Rejected {
        rejected(envelope, already_decided())
    } else {
        if locked.status == CashStatus::Waiting {
            // A twin that resumed this payout may have recorded its approval already.
            cashes::record_approval(
                &tx,
                locked.id,
                envelope.user_id,
                &request.remark,
                &envelope.id,
            )
            .await?;
            cashes::approve_pending_payout(
                &tx,
                locked.id,
                &request.remark,
                envelope.user_id,
                &envelope.id,
            )
            .await?;
        }
        match complete_withdrawal(
            &tx,
            engine.policy.custody,
            locked.id,
            withdrawal,
            Some(&envelope.id),
        )
        .await?
        {
            Ok(_) => {
                let threshold = engine.policy.cash_review_threshold;
                approved_result(&tx, envelope, &locked, threshold, Some(withdrawal)).await?
            }
            Err(mismatch) => rejected(
                envelope,
                Rejection::field(Code::WithdrawalMismatch, "cash", &mismatch),
            ),
        }
    };
    step::store_result(tx, envelope, &result).await
}

/// Ping++ refused the approval's withdrawal: the payout is given up (the cash record stays as
/// it was, waiting) and the command rejected.
async fn give_up(
    engine: &Engine,
    envelope: &Envelope,
    payout: &Payout,
    withdrawal: Option<Value>,
    rejection: Rejection,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| EngineError::Broken(format!("cash {} vanished", payout.cash_id)))?;
    if let Some(withdrawal) = &withdrawal {
        observe(&tx, payout, &locked, withdrawal).await?;
    }
    if locked.status == CashStatus::Waiting {
        cash_payouts::deactivate(&tx, payout.id).await?;
        cashes::set_withdrawal(&tx, locked.id, None).await?;
    }
    step::store_result(tx, envelope, &rejected(envelope, rejection)).await
}

pub(crate) async fn reject(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    // Step 1: a cash record without a payout under way is rejected as in the manual flow.
    let payout = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let payout = match cash::parse_decision(Decision::Reject, &envelope.data) {
            Ok(request) => match cashes::lock(&tx, request.cash_id).await? {
                Some(locked) if locked.status == CashStatus::Waiting => {
                    active_payout(&tx, locked.id).await?
                }
                _ => None,
            },
            Err(_) => None,
        };
        match payout {
            Some(payout) => {
                tx.rollback().await?;
                payout
            }
            None => {
                let applied = crate::engine::apply_within(engine, &tx, envelope).await?;
                tx.commit().await?;
                return Ok(applied);
            }
        }
    };
    // Step 2: the withdrawal is known, and canceled unless it is final or under way.
    // `None`: Ping++ refuses to make it, so no withdrawal exists and none will.
    let mut withdrawal = ensure_created(engine, &payout).await?.ok();
    let created = match &withdrawal {
        Some(w) => facts(w)?.status == WithdrawalStatus::Created,
        None => false,
    };
    if let Some(current) = withdrawal.as_ref().filter(|_| created) {
        let client = provider::client(engine)?;
        let id = facts(current)?.id;
        match client
            .update_withdrawal(&id, WithdrawalUpdate::Cancel)
            .await
        {
            Ok(canceled) => withdrawal = Some(canceled),
            Err(error) => {
                let rejection = provider::refused_or_retry(error)?;
                let now = client
                    .retrieve_withdrawal(&id)
                    .await
                    .map_err(provider::failure)?;
                if !facts(&now)?.status.is_returned() {
                    let mut client = engine.pool.get().await?;
                    let tx = client.transaction().await?;
                    return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
                }
                withdrawal = Some(now);
            }
        }
    }
    // Step 3: reject, unless the withdrawal went on (then its approval decides).
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let request = cash::parse_decision(Decision::Reject, &envelope.data)
        .map_err(|_| EngineError::Broken("a rejection that was valid is not".into()))?;
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| EngineError::Broken(format!("cash {} vanished", payout.cash_id)))?;
    let state = match &withdrawal {
        Some(withdrawal) => Some(observe(&tx, &payout, &locked, withdrawal).await?.state),
        None => None,
    };
    let returned = matches!(state, None | Some(WithdrawalState::Returned { .. }));
    let result = if !returned {
        rejected(envelope, already_decided())
    } else if locked.status == CashStatus::Waiting {
        if state.is_none() {
            cash_payouts::deactivate(&tx, payout.id).await?;
        }
        match cash::decide(Decision::Reject, locked.status, locked.owner, locked.value) {
            Ok(DecisionEffect::Apply(journal)) => {
                let wallets = lock_wallets(&tx, &[locked.owner]).await?;
                post_journal(
                    &tx,
                    envelope.kind.as_str(),
                    Some(&envelope.id),
                    &journal,
                    &wallets,
                )
                .await?;
                cashes::record_decision(
                    &tx,
                    &locked,
                    CashStatus::Rejected,
                    Decision::Reject.order_state(),
                    &request.remark,
                    envelope.user_id,
                    &envelope.id,
                )
                .await?;
                rejected_result(&tx, envelope, locked.id).await?
            }
            Ok(DecisionEffect::AlreadyDone) => rejected_result(&tx, envelope, locked.id).await?,
            Err(rejection) => rejected(envelope, rejection),
        }
    } else {
        // Approved meanwhile with this (now canceled) withdrawal: the completion returns it.
        if let Some(withdrawal) = &withdrawal {
            if let Err(mismatch) = complete_withdrawal(
                &tx,
                engine.policy.custody,
                locked.id,
                withdrawal,
                Some(&envelope.id),
            )
            .await?
            {
                return Err(EngineError::Broken(mismatch));
            }
        }
        let now = cashes::lock(&tx, locked.id).await?.map(|c| c.status);
        if now == Some(CashStatus::Rejected) {
            rejected_result(&tx, envelope, locked.id).await?
        } else {
            rejected(envelope, already_decided())
        }
    };
    step::store_result(tx, envelope, &result).await
}

async fn rejected_result(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    cash_id: i64,
) -> Result<CommandResult, EngineError> {
    let cash = cashes::get_json(tx, cash_id).await?;
    Ok(succeeded(
        envelope,
        Some(cash::MSG_REJECTED),
        json!({ "cash": cash }),
    ))
}

/// `cash.retrieve`: the cash record, and its withdrawal as Ping++ sees it now, applied through
/// the same completion path as the webhook.
pub(crate) async fn retrieve(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let (cash_id, withdrawal_id) = {
        let mut client = engine.pool.get().await?;
        let tx = match step::looking(&mut client, envelope).await? {
            Step::Answered(applied) => return Ok(applied),
            Step::Open(tx) => tx,
        };
        let cash_id = match cash::parse_cash_id(&envelope.data) {
            Ok(id) => id,
            Err(rejection) => {
                return step::conclude(tx, envelope, rejected(envelope, rejection)).await
            }
        };
        let Some(found) = cashes::to_retrieve(&tx, cash_id).await? else {
            let rejection = Rejection::field(Code::UnknownCash, "cash", cash::MSG_UNKNOWN_CASH);
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        };
        match found.withdrawal_id {
            // Still open at Ping++ as far as we know: ask.
            Some(id) if found.order_state == OrderState::Waiting => {
                tx.rollback().await?;
                (cash_id, id)
            }
            // Settled, or never paid out through Ping++: nothing to ask.
            _ => {
                let mut data = json!({ "cash": found.cash });
                if let Some(withdrawal) = found.withdrawal {
                    data["pingpp_withdrawal"] = withdrawal;
                }
                let result = succeeded(envelope, None, data);
                return step::conclude(tx, envelope, result).await;
            }
        }
    };
    let withdrawal = match provider::client(engine)?
        .retrieve_withdrawal(&withdrawal_id)
        .await
    {
        Ok(withdrawal) => withdrawal,
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
    let result = match complete_withdrawal(
        &tx,
        engine.policy.custody,
        cash_id,
        &withdrawal,
        Some(&envelope.id),
    )
    .await?
    {
        Ok(completion) => succeeded(
            envelope,
            None,
            json!({ "cash": completion.cash(), "pingpp_withdrawal": withdrawal }),
        ),
        Err(mismatch) => {
            tracing::error!(cash_id, %mismatch, "Ping++ withdrawal disagrees with its cash record");
            rejected(
                envelope,
                Rejection::field(Code::WithdrawalMismatch, "cash", &mismatch),
            )
        }
    };
    step::store_result(tx, envelope, &result).await
}
