//! Cash payouts through Ping++ withdrawals (`pingpp.payout = "withdrawals"`): `cash.approve`,
//! `cash.reject` and `cash.retrieve` call Ping++ between their own transactions, with a
//! recovery point (the `cash_payouts` row) between them, as `recharge` does:
//!
//! 1. One transaction checks the cash record is waiting and records the exact withdrawal
//!    request (`order_no` = `w` + the payout's id) as the cash record's active payout.
//! 2. The withdrawal is created at Ping++ (the same `order_no` and parameters on every retry,
//!    for which Ping++ returns the withdrawal it already made) and its id recorded; then it is
//!    confirmed (`PUT {"status":"pending"}`). A redelivery or a second approval of the same cash
//!    resumes the active payout: it never creates a second withdrawal.
//! 3. One transaction approves the cash record (status 1, its order still waiting) and stores
//!    the result. If Ping++ refused (a 4xx with its error body), a withdrawal left created is
//!    canceled, the payout is given up and the cash record stays waiting, untouched.
//!
//! The money left the wallet for `pending_payouts` when the cash was requested. It stays there
//! until Ping++ reports the withdrawal final, through the one completion path
//! [`complete_withdrawal`] shared by the webhook (`withdrawal.succeeded` / `.failed` /
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

use super::recharge::{
    conclude, lock_command, outcome_unknown, provider_failure, provider_rejection,
    refuses_used_order_no, LOOKUP_MARGIN_SECS,
};
use super::{rejected, succeeded, Engine};
use crate::db::cashes::{self, LockedCash};
use crate::db::commands::{self, Applied, Claim};
use crate::db::wallets::{lock_wallets, post_journal};
use crate::db::DbError;
use crate::domain::cash::{self, Decision, DecisionEffect, WithdrawalFacts, WithdrawalState};
use crate::domain::command::Envelope;
use crate::domain::outcome::{Code, CommandResult, Rejection};
use crate::domain::recharge_object::pingpp_user;
use crate::pingpp::{PingppClient, PingppError, WithdrawalRequest, WithdrawalUpdate};

/// What withdrawals are made with (`[pingpp]` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutSettings {
    /// The Ping++ user id of our user `{id}`.
    pub user_id_template: String,
    pub channel: String,
    pub return_url: String,
}

/// A payout attempt as recorded.
#[derive(Debug, Clone)]
struct Payout {
    id: i64,
    cash_id: i64,
    request: WithdrawalRequest,
    withdrawal: Option<Value>,
    /// When the payout was begun (unix s): no withdrawal of it can be older.
    begun_at: i64,
}

enum Begin {
    Done(Applied),
    Resume(Box<Payout>),
}

fn pingpp(engine: &Engine) -> Result<&PingppClient, DbError> {
    engine.pingpp.as_ref().ok_or_else(|| {
        DbError::Fatal(
            "Ping++ is not configured (set pingpp.app_id and pingpp.secret_key): \
             withdrawals cannot be made"
                .into(),
        )
    })
}

fn settings(engine: &Engine) -> Result<&PayoutSettings, DbError> {
    engine
        .payout
        .as_deref()
        .ok_or_else(|| DbError::Fatal("pingpp.payout is not \"withdrawals\"".into()))
}

fn unreadable(e: serde_json::Error) -> DbError {
    DbError::Fatal(format!("a cash payout's stored request is unreadable: {e}"))
}

fn status_of(withdrawal: &Value) -> &str {
    withdrawal
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn facts(withdrawal: &Value) -> Result<WithdrawalFacts, DbError> {
    cash::withdrawal_facts(withdrawal)
        .map_err(|e| DbError::Fatal(format!("unreadable Ping++ withdrawal: {e}")))
}

/// A Ping++ failure as the command's outcome: a refusal (its error body) or a retry later.
fn refused_or_retry(error: PingppError) -> Result<Rejection, DbError> {
    provider_rejection(&error).ok_or_else(|| provider_failure(error))
}

/// The active payout of a cash record.
async fn active_payout(tx: &Transaction<'_>, cash_id: i64) -> Result<Option<Payout>, DbError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, request::text, withdrawal::text,
                    extract(epoch FROM created_at)::bigint AS begun_at
             FROM cash_payouts WHERE cash_id = $1 AND active",
            )
            .await?,
            &[&cash_id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Payout {
        id: row.get(0),
        cash_id,
        request: serde_json::from_str(row.get(1)).map_err(unreadable)?,
        withdrawal: row
            .get::<_, Option<&str>>(2)
            .map(serde_json::from_str)
            .transpose()
            .map_err(unreadable)?,
        begun_at: row.get("begun_at"),
    }))
}

/// Step 1 of `cash.approve`: its stored outcome, the cash record's active payout, or a new one.
async fn begin_approve(engine: &Engine, envelope: &Envelope) -> Result<Begin, DbError> {
    let settings = settings(engine)?;
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    lock_command(&tx, envelope).await?;
    if let Some(applied) = commands::lookup(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(Begin::Done(applied));
    }
    let request = match cash::parse_decision(Decision::Approve, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => {
            let result = rejected(envelope, rejection);
            return Ok(Begin::Done(conclude(tx, envelope, result).await?));
        }
    };
    let other_content = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT 1 FROM cash_payouts WHERE command_id = $1 AND fingerprint <> $2",
            )
            .await?,
            &[&envelope.id, &envelope.fingerprint().as_slice()],
        )
        .await?;
    if other_content.is_some() {
        tx.rollback().await?;
        return Ok(Begin::Done(commands::conflict(envelope)));
    }
    let Some(locked) = cashes::lock(&tx, request.cash_id).await? else {
        let rejection = Rejection::field(Code::UnknownCash, "cash", cash::MSG_UNKNOWN_CASH);
        let result = rejected(envelope, rejection);
        return Ok(Begin::Done(conclude(tx, envelope, result).await?));
    };
    if locked.status != cash::WAITING {
        // Approved already (by another command), or rejected: as in the manual flow.
        let result = match cash::decide(Decision::Approve, locked.status, locked.owner, 0) {
            Ok(_) => approved_result(&tx, envelope, locked.id, None).await?,
            Err(rejection) => rejected(envelope, rejection),
        };
        return Ok(Begin::Done(conclude(tx, envelope, result).await?));
    }
    if let Some(payout) = active_payout(&tx, locked.id).await? {
        tx.rollback().await?;
        return Ok(Begin::Resume(Box::new(payout)));
    }
    let id: i64 = tx
        .query_one(
            &tx.prepare_cached("SELECT nextval(pg_get_serial_sequence('cash_payouts', 'id'))")
                .await?,
            &[],
        )
        .await?
        .get(0);
    let withdrawal = WithdrawalRequest {
        user: pingpp_user(&settings.user_id_template, locked.owner),
        channel: settings.channel.clone(),
        amount: locked.value as u64,
        order_no: cash::withdrawal_order_no(id),
        return_url: settings.return_url.clone(),
    };
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO cash_payouts (id, cash_id, command_id, fingerprint, operator, remark,
                                   order_no, request)
         OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)",
        )
        .await?,
        &[
            &id,
            &locked.id,
            &envelope.id,
            &envelope.fingerprint().as_slice(),
            &envelope.user_id,
            &request.remark,
            &withdrawal.order_no,
            &serde_json::to_string(&withdrawal).expect("a withdrawal request serializes"),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Begin::Resume(Box::new(Payout {
        id,
        cash_id: locked.id,
        request: withdrawal,
        withdrawal: None,
        begun_at: super::recharge::unix_now(),
    })))
}

/// `{cash, pingpp_withdrawal?}` with the approval's message.
async fn approved_result(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    cash_id: i64,
    withdrawal: Option<&Value>,
) -> Result<CommandResult, DbError> {
    let mut data = json!({ "cash": cashes::get_json(tx, cash_id).await? });
    if let Some(withdrawal) = withdrawal {
        data["pingpp_withdrawal"] = withdrawal.clone();
    }
    Ok(succeeded(envelope, Some(cash::MSG_APPROVED), data))
}

/// Creates the payout's withdrawal (or finds the one its `order_no` made) and records it.
async fn ensure_created(
    engine: &Engine,
    payout: &Payout,
) -> Result<Result<Value, Rejection>, DbError> {
    if let Some(withdrawal) = &payout.withdrawal {
        return Ok(Ok(withdrawal.clone()));
    }
    let client = pingpp(engine)?;
    let order_no = &payout.request.order_no;
    let withdrawal = match client.create_withdrawal(&payout.request).await {
        Ok(withdrawal) => withdrawal,
        Err(error) => {
            let Some(rejection) = provider_rejection(&error) else {
                return Err(provider_failure(error));
            };
            // A refusal may answer a repeat of a create that took effect (see
            // recharge::create): look for the withdrawal before believing it.
            let since = payout.begun_at - LOOKUP_MARGIN_SECS;
            let found = client.find_withdrawal(order_no, since).await.map_err(|e| {
                tracing::warn!(error = %e, %order_no, "cannot look up what Ping++ made");
                outcome_unknown("create_withdrawal", order_no)
            })?;
            match found {
                Some(withdrawal) => withdrawal,
                None if refuses_used_order_no(&error) => {
                    return Err(outcome_unknown("create_withdrawal", order_no))
                }
                None => return Ok(Err(rejection)),
            }
        }
    };
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| DbError::Fatal(format!("cash {} vanished", payout.cash_id)))?;
    observe(&tx, payout, &locked, &withdrawal).await?;
    tx.commit().await?;
    Ok(Ok(withdrawal))
}

/// Records what Ping++ says of the payout's withdrawal, on the payout and (while the payout is
/// active) on the cash record. Refuses a withdrawal that isn't this payout's.
async fn observe(
    tx: &Transaction<'_>,
    payout: &Payout,
    cash: &LockedCash,
    withdrawal: &Value,
) -> Result<WithdrawalFacts, DbError> {
    let facts = facts(withdrawal)?;
    if facts.order_no != payout.request.order_no || facts.amount != cash.value {
        return Err(DbError::Fatal(format!(
            "Ping++ returned withdrawal {} for another order_no or amount than {}",
            facts.id, payout.request.order_no
        )));
    }
    let updated = tx
        .query_opt(
            &tx.prepare_cached(
                "UPDATE cash_payouts SET withdrawal_id = $2, status = $3, withdrawal = $4::text::json,
                    updated_at = now()
             WHERE id = $1 AND (withdrawal_id IS NULL OR withdrawal_id = $2) RETURNING active",
            )
            .await?,
            &[&payout.id, &facts.id, &facts.status, &withdrawal.to_string()],
        )
        .await?;
    match updated {
        None => Err(DbError::Fatal(format!(
            "payout {} has another withdrawal than {}",
            payout.id, facts.id
        ))),
        Some(row) => {
            if row.get::<_, bool>(0) {
                cashes::set_withdrawal(tx, cash.id, Some((&facts.id, &facts.status))).await?;
            }
            Ok(facts)
        }
    }
}

pub(super) async fn approve(engine: &Engine, envelope: &Envelope) -> Result<Applied, DbError> {
    let payout = match begin_approve(engine, envelope).await? {
        Begin::Done(applied) => return Ok(applied),
        Begin::Resume(payout) => payout,
    };
    let mut withdrawal = match ensure_created(engine, &payout).await? {
        Ok(withdrawal) => withdrawal,
        Err(rejection) => return give_up(engine, envelope, &payout, None, rejection).await,
    };
    if status_of(&withdrawal) == "created" {
        let client = pingpp(engine)?;
        let id = facts(&withdrawal)?.id;
        match client
            .update_withdrawal(&id, WithdrawalUpdate::Confirm)
            .await
        {
            Ok(confirmed) => withdrawal = confirmed,
            Err(error) => {
                let rejection = refused_or_retry(error)?;
                // Refused: what is it now? Confirmed after all (by a twin), or still created
                // (cancel it, so nothing is left half-done), or canceled by a rejection.
                let now = client
                    .retrieve_withdrawal(&id)
                    .await
                    .map_err(provider_failure)?;
                match status_of(&now) {
                    "created" => {
                        let canceled = match client
                            .update_withdrawal(&id, WithdrawalUpdate::Cancel)
                            .await
                        {
                            Ok(canceled) => Some(canceled),
                            Err(error) if error.is_transient() => {
                                return Err(provider_failure(error))
                            }
                            Err(error) => {
                                tracing::error!(withdrawal = %id, %error,
                                    "Ping++ refused to confirm and to cancel a withdrawal; it stays created");
                                Some(now)
                            }
                        };
                        return give_up(engine, envelope, &payout, canceled, rejection).await;
                    }
                    "canceled" | "failed" => {
                        return give_up(engine, envelope, &payout, Some(now), rejection).await
                    }
                    _ => withdrawal = now,
                }
            }
        }
    }
    finish_approve(engine, envelope, &payout, &withdrawal).await
}

/// Step 3 of `cash.approve`: the withdrawal is confirmed; approve the cash record.
async fn finish_approve(
    engine: &Engine,
    envelope: &Envelope,
    payout: &Payout,
    withdrawal: &Value,
) -> Result<Applied, DbError> {
    let request = cash::parse_decision(Decision::Approve, &envelope.data)
        .map_err(|_| DbError::Fatal("an approval that was valid is not".into()))?;
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    lock_command(&tx, envelope).await?;
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| DbError::Fatal(format!("cash {} vanished", payout.cash_id)))?;
    let result = if locked.status == cash::REJECTED {
        rejected(
            envelope,
            Rejection::field(Code::CashAlreadyDecided, "cash", cash::MSG_ALREADY_DECIDED),
        )
    } else {
        if locked.status == cash::WAITING {
            cashes::approve_pending_payout(
                &tx,
                locked.id,
                &request.remark,
                envelope.user_id,
                &envelope.id,
            )
            .await?;
        }
        match complete_withdrawal(&tx, locked.id, withdrawal, Some(&envelope.id)).await? {
            Ok(_) => approved_result(&tx, envelope, locked.id, Some(withdrawal)).await?,
            Err(mismatch) => rejected(
                envelope,
                Rejection::field(Code::WithdrawalMismatch, "cash", &mismatch),
            ),
        }
    };
    let applied = commands::store(&tx, envelope, &result).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Ping++ refused the approval's withdrawal: the payout is given up (the cash record stays as
/// it was, waiting) and the command rejected.
async fn give_up(
    engine: &Engine,
    envelope: &Envelope,
    payout: &Payout,
    withdrawal: Option<Value>,
    rejection: Rejection,
) -> Result<Applied, DbError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    lock_command(&tx, envelope).await?;
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| DbError::Fatal(format!("cash {} vanished", payout.cash_id)))?;
    if let Some(withdrawal) = &withdrawal {
        observe(&tx, payout, &locked, withdrawal).await?;
    }
    if locked.status == cash::WAITING {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE cash_payouts SET active = false, updated_at = now() WHERE id = $1",
            )
            .await?,
            &[&payout.id],
        )
        .await?;
        cashes::set_withdrawal(&tx, locked.id, None).await?;
    }
    let applied = commands::store(&tx, envelope, &rejected(envelope, rejection)).await?;
    tx.commit().await?;
    Ok(applied)
}

pub(super) async fn reject(engine: &Engine, envelope: &Envelope) -> Result<Applied, DbError> {
    // Step 1: a cash record without a payout under way is rejected as in the manual flow.
    let payout = {
        let mut client = engine.pool.get().await?;
        let tx = client.transaction().await?;
        lock_command(&tx, envelope).await?;
        if let Some(applied) = commands::lookup(&tx, envelope).await? {
            tx.rollback().await?;
            return Ok(applied);
        }
        let payout = match cash::parse_decision(Decision::Reject, &envelope.data) {
            Ok(request) => match cashes::lock(&tx, request.cash_id).await? {
                Some(locked) if locked.status == cash::WAITING => {
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
                let applied = engine.apply_within(&tx, envelope).await?;
                tx.commit().await?;
                return Ok(applied);
            }
        }
    };
    // Step 2: the withdrawal is known, and canceled unless it is final or under way.
    // `None`: Ping++ refuses to make it, so no withdrawal exists and none will.
    let mut withdrawal = ensure_created(engine, &payout).await?.ok();
    if let Some(current) = withdrawal.as_ref().filter(|w| status_of(w) == "created") {
        let client = pingpp(engine)?;
        let id = facts(current)?.id;
        match client
            .update_withdrawal(&id, WithdrawalUpdate::Cancel)
            .await
        {
            Ok(canceled) => withdrawal = Some(canceled),
            Err(error) => {
                let rejection = refused_or_retry(error)?;
                let now = client
                    .retrieve_withdrawal(&id)
                    .await
                    .map_err(provider_failure)?;
                if !matches!(status_of(&now), "canceled" | "failed") {
                    let mut client = engine.pool.get().await?;
                    let tx = client.transaction().await?;
                    return conclude(tx, envelope, rejected(envelope, rejection)).await;
                }
                withdrawal = Some(now);
            }
        }
    }
    // Step 3: reject, unless the withdrawal went on (then its approval decides).
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    lock_command(&tx, envelope).await?;
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    let request = cash::parse_decision(Decision::Reject, &envelope.data)
        .map_err(|_| DbError::Fatal("a rejection that was valid is not".into()))?;
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| DbError::Fatal(format!("cash {} vanished", payout.cash_id)))?;
    let state = match &withdrawal {
        Some(withdrawal) => Some(observe(&tx, &payout, &locked, withdrawal).await?.state),
        None => None,
    };
    let returned = matches!(state, None | Some(WithdrawalState::Returned { .. }));
    let result = if !returned {
        rejected(
            envelope,
            Rejection::field(Code::CashAlreadyDecided, "cash", cash::MSG_ALREADY_DECIDED),
        )
    } else if locked.status == cash::WAITING {
        if state.is_none() {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE cash_payouts SET active = false, updated_at = now() WHERE id = $1",
                )
                .await?,
                &[&payout.id],
            )
            .await?;
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
                cashes::decide(
                    &tx,
                    &locked,
                    cash::REJECTED,
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
            if let Err(mismatch) =
                complete_withdrawal(&tx, locked.id, withdrawal, Some(&envelope.id)).await?
            {
                return Err(DbError::Fatal(mismatch));
            }
        }
        let now = cashes::lock(&tx, locked.id).await?.map_or(0, |c| c.status);
        if now == cash::REJECTED {
            rejected_result(&tx, envelope, locked.id).await?
        } else {
            rejected(
                envelope,
                Rejection::field(Code::CashAlreadyDecided, "cash", cash::MSG_ALREADY_DECIDED),
            )
        }
    };
    let applied = commands::store(&tx, envelope, &result).await?;
    tx.commit().await?;
    Ok(applied)
}

async fn rejected_result(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    cash_id: i64,
) -> Result<CommandResult, DbError> {
    let cash = cashes::get_json(tx, cash_id).await?;
    Ok(succeeded(
        envelope,
        Some(cash::MSG_REJECTED),
        json!({ "cash": cash }),
    ))
}

/// `cash.retrieve`: the cash record, and its withdrawal as Ping++ sees it now, applied through
/// the same completion path as the webhook.
pub(super) async fn retrieve(engine: &Engine, envelope: &Envelope) -> Result<Applied, DbError> {
    let (cash_id, withdrawal_id) = {
        let mut client = engine.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(applied) = commands::lookup(&tx, envelope).await? {
            tx.rollback().await?;
            return Ok(applied);
        }
        let cash_id = match cash::parse_cash_id(&envelope.data) {
            Ok(id) => id,
            Err(rejection) => return conclude(tx, envelope, rejected(envelope, rejection)).await,
        };
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT cash_json(c), o.state, p.withdrawal_id, p.withdrawal
                 FROM cashes c JOIN wallet_orders o ON o.id = c.order_id
                 LEFT JOIN cash_payouts p ON p.cash_id = c.id AND p.active
                 WHERE c.id = $1",
                )
                .await?,
                &[&cash_id],
            )
            .await?;
        let Some(row) = row else {
            let rejection = Rejection::field(Code::UnknownCash, "cash", cash::MSG_UNKNOWN_CASH);
            return conclude(tx, envelope, rejected(envelope, rejection)).await;
        };
        match row.get::<_, Option<String>>(2) {
            // Still open at Ping++ as far as we know: ask.
            Some(id) if row.get::<_, i16>(1) == 0 => {
                tx.rollback().await?;
                (cash_id, id)
            }
            // Settled, or never paid out through Ping++: nothing to ask.
            _ => {
                let mut data = json!({ "cash": row.get::<_, Value>(0) });
                if let Some(withdrawal) = row.get::<_, Option<Value>>(3) {
                    data["pingpp_withdrawal"] = withdrawal;
                }
                let result = succeeded(envelope, None, data);
                return conclude(tx, envelope, result).await;
            }
        }
    };
    let withdrawal = match pingpp(engine)?.retrieve_withdrawal(&withdrawal_id).await {
        Ok(withdrawal) => withdrawal,
        Err(error) => {
            let rejection = refused_or_retry(error)?;
            let mut client = engine.pool.get().await?;
            let tx = client.transaction().await?;
            return conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
    };
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    if let Claim::Done(applied) = commands::claim(&tx, envelope).await? {
        tx.rollback().await?;
        return Ok(applied);
    }
    let result = match complete_withdrawal(&tx, cash_id, &withdrawal, Some(&envelope.id)).await? {
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
    let applied = commands::store(&tx, envelope, &result).await?;
    tx.commit().await?;
    Ok(applied)
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

/// The cash record a withdrawal belongs to, and whether its id was recorded yet.
pub async fn withdrawal_cash(
    tx: &Transaction<'_>,
    withdrawal_id: &str,
    order_no: &str,
) -> Result<Option<(i64, bool)>, DbError> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT cash_id, withdrawal_id IS NOT NULL FROM cash_payouts
             WHERE withdrawal_id = $1 OR order_no = $2
             ORDER BY withdrawal_id = $1 DESC NULLS LAST LIMIT 1",
            )
            .await?,
            &[&withdrawal_id, &order_no],
        )
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

/// The one path that settles a cash record from its withdrawal, for the webhook,
/// `cash.retrieve` and the decisions alike: the cash row is locked first, so racing callers
/// settle once. `Err` when the withdrawal is not this cash record's.
pub async fn complete_withdrawal(
    tx: &Transaction<'_>,
    cash_id: i64,
    withdrawal: &Value,
    command_id: Option<&str>,
) -> Result<Result<WithdrawalCompletion, String>, DbError> {
    let facts = match cash::withdrawal_facts(withdrawal) {
        Ok(facts) => facts,
        Err(e) => return Ok(Err(e)),
    };
    let Some(locked) = cashes::lock(tx, cash_id).await? else {
        return Ok(Err(format!("no cash record {cash_id}")));
    };
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, request::text, withdrawal_id, active FROM cash_payouts
             WHERE cash_id = $1 AND order_no = $2",
            )
            .await?,
            &[&cash_id, &facts.order_no],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(format!(
            "withdrawal {} (order_no {}) is not a payout of cash {cash_id}",
            facts.id, facts.order_no
        )));
    };
    if row
        .get::<_, Option<&str>>(2)
        .is_some_and(|id| id != facts.id)
        || facts.amount != locked.value
    {
        return Ok(Err(format!(
            "withdrawal {} of {} fen does not match cash {cash_id} of {} fen",
            facts.id, facts.amount, locked.value
        )));
    }
    let payout = Payout {
        id: row.get(0),
        cash_id,
        request: serde_json::from_str(row.get(1)).map_err(unreadable)?,
        withdrawal: None,
        begun_at: 0,
    };
    let active: bool = row.get(3);
    observe(tx, &payout, &locked, withdrawal).await?;
    let order_state = cashes::order_state(tx, &locked).await?;
    let journal = cash::settle(&facts.state, locked.owner, locked.value);
    let completion = match journal {
        Some(journal) if active && locked.status == cash::APPROVED && order_state == 0 => {
            let wallets = lock_wallets(tx, &[locked.owner]).await?;
            let kind = match facts.state {
                WithdrawalState::Succeeded => "cash.payout",
                _ => "cash.payout_returned",
            };
            let journal_id = post_journal(tx, kind, command_id, &journal, &wallets).await?;
            match &facts.state {
                WithdrawalState::Returned { reason } => {
                    cashes::settle_payout(tx, &locked, Some(reason)).await?;
                    let (cash, order) = cash_and_order(tx, &locked).await?;
                    WithdrawalCompletion::Returned {
                        cash,
                        order,
                        journal_id,
                        reason: reason.clone(),
                    }
                }
                _ => {
                    cashes::settle_payout(tx, &locked, None).await?;
                    let (cash, order) = cash_and_order(tx, &locked).await?;
                    WithdrawalCompletion::PaidOut {
                        cash,
                        order,
                        journal_id,
                    }
                }
            }
        }
        Some(_) if active && locked.status == cash::WAITING => {
            let (cash, order) = cash_and_order(tx, &locked).await?;
            WithdrawalCompletion::NotDecidedYet { cash, order }
        }
        _ => {
            let (cash, order) = cash_and_order(tx, &locked).await?;
            WithdrawalCompletion::Unchanged { cash, order }
        }
    };
    Ok(Ok(completion))
}

async fn cash_and_order(
    tx: &Transaction<'_>,
    cash: &LockedCash,
) -> Result<(Value, Value), DbError> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT cash_json(c), order_json(o) FROM cashes c
             JOIN wallet_orders o ON o.id = c.order_id WHERE c.id = $1",
            )
            .await?,
            &[&cash.id],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
