//! `cash` with the money at Ping++ (`wallet.custody = "pingpp"`): a withdrawal from the user's
//! own e-wallet. No operator reviews it: it is the user's money, and Ping++'s cashier page
//! (`operation_url`, 15 minutes) is where the user confirms it. As for the payouts of
//! `commands::payout`, the Ping++ calls run between transactions with a recovery point (the
//! `cash_payouts` row):
//!
//! 1. One transaction checks the e-wallet is open and the balance suffices, holds the money
//!    (wallet to `ewallet_withdrawals`), and records the cash record (`yeepay`, the user's
//!    Ping++ id as its account), its waiting order and the exact withdrawal request.
//! 2. The withdrawal is created (the same `order_no` on every retry; a refused repeat is
//!    looked up in Ping++'s list) and confirmed (`PUT {"status":"pending"}`).
//! 3. One transaction approves the cash record (status 1, its order still waiting) and stores
//!    the result with the withdrawal and its `operation_url`. If Ping++ refused, the hold goes
//!    back to the wallet, the cash record is rejected (status 2) with Ping++'s message, the
//!    order fails, and the command is rejected.
//!
//! `withdrawal.succeeded` (or `cash.retrieve`) then moves the money to `ewallet_outside`;
//! failed or canceled returns it, through `completion::withdrawal` as for payouts.

use serde_json::{json, Value};

use crate::db::accounts;
use crate::db::cash_payouts;
use crate::db::cashes;
use crate::db::commands::{conflict, Applied};
use crate::db::ledger::{insert_orders, lock_wallets, post_journal};
use crate::db::orders;
use crate::domain::account;
use crate::domain::cash::{self, CashRequest, CashStatus, EWALLET_CASH_TYPE};
use crate::domain::command::Envelope;
use crate::domain::ledger::{AccountRef, Journal, SystemAccount};
use crate::domain::order::OrderState;
use crate::domain::outcome::Rejection;
use crate::engine::commands::account::pingpp_id;
use crate::engine::commands::payout::{confirm, ensure_created, Unconfirmed};
use crate::engine::completion::withdrawal::{complete_withdrawal, observe, Payout};
use crate::engine::provider;
use crate::engine::step::{self, Step};
use crate::engine::{rejected, succeeded, Engine};
use crate::error::EngineError;
use crate::pingpp::WithdrawalRequest;

enum Begun {
    Answered(Applied),
    Payout(Box<Payout>),
}

pub(crate) async fn request(engine: &Engine, envelope: &Envelope) -> Result<Applied, EngineError> {
    let payout = match begin(engine, envelope).await? {
        Begun::Answered(applied) => return Ok(applied),
        Begun::Payout(payout) => payout,
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
    finish(engine, envelope, &payout, &withdrawal).await
}

/// Step 1: the stored outcome, the recorded payout, or a new cash record holding the money.
async fn begin(engine: &Engine, envelope: &Envelope) -> Result<Begun, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::looking(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(Begun::Answered(applied)),
        Step::Open(tx) => tx,
    };
    if let Some((cash_id, fingerprint, recorded)) =
        cash_payouts::of_command(&tx, &envelope.id).await?
    {
        tx.rollback().await?;
        if fingerprint != envelope.fingerprint() {
            return Ok(Begun::Answered(conflict(envelope)));
        }
        return Ok(Begun::Payout(Box::new(Payout::from_recorded(
            recorded, cash_id,
        )?)));
    }
    let request =
        match cash::parse_ewallet_request(envelope.user_id, &envelope.data, &engine.policy) {
            Ok(request) => request,
            Err(rejection) => {
                let result = rejected(envelope, rejection);
                return Ok(Begun::Answered(step::conclude(tx, envelope, result).await?));
            }
        };
    let latest = accounts::latest_application(&tx, request.user).await?;
    if let Err(rejection) = account::require_open(latest.map(|a| a.status)) {
        let result = rejected(envelope, rejection);
        return Ok(Begun::Answered(step::conclude(tx, envelope, result).await?));
    }
    let wallets = lock_wallets(&tx, &[request.user]).await?;
    let figures = wallets
        .get(&request.user)
        .map_or_else(Default::default, |w| w.figures);
    let journal = match cash::hold_for_withdrawal(&request, figures) {
        Ok(journal) => journal,
        Err(rejection) => {
            let result = rejected(envelope, rejection);
            return Ok(Begun::Answered(step::conclude(tx, envelope, result).await?));
        }
    };
    // The command's row comes with its result: the hold names no command yet.
    let journal_id = post_journal(&tx, "cash", None, &journal, &wallets).await?;
    let user = pingpp_id(engine, request.user);
    let record = CashRequest {
        user: request.user,
        value: request.value,
        kind: EWALLET_CASH_TYPE.into(),
        account: user.clone(),
    };
    let cash_id = cashes::insert(&tx, &record, &envelope.id).await?;
    let order = insert_orders(
        &tx,
        None,
        Some(journal_id),
        &[cash::request_order(&record, cash_id)],
    )
    .await?
    .remove(0);
    let order_id = order["id"]
        .as_i64()
        .ok_or_else(|| EngineError::Broken("an order without an id".into()))?;
    cashes::link_order(&tx, cash_id, order_id).await?;
    let id = cash_payouts::next_id(&tx).await?;
    let withdrawal = WithdrawalRequest {
        user,
        channel: engine.withdrawal_channel.clone(),
        amount: request.value as u64,
        order_no: cash::withdrawal_order_no(id),
        return_url: request.return_url,
    };
    let request_json = serde_json::to_string(&withdrawal).expect("a withdrawal request serializes");
    cash_payouts::insert(
        &tx,
        &cash_payouts::NewPayout {
            id,
            cash_id,
            command_id: &envelope.id,
            fingerprint: &envelope.fingerprint(),
            operator: envelope.user_id,
            remark: "",
            order_no: &withdrawal.order_no,
            request: &request_json,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Begun::Payout(Box::new(Payout {
        id,
        cash_id,
        request: withdrawal,
        withdrawal: None,
        begun_at: provider::unix_now(),
    })))
}

/// Step 3: the withdrawal is confirmed; the cash record is approved and the result stored.
async fn finish(
    engine: &Engine,
    envelope: &Envelope,
    payout: &Payout,
    withdrawal: &Value,
) -> Result<Applied, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = match step::claiming(&mut client, envelope).await? {
        Step::Answered(applied) => return Ok(applied),
        Step::Open(tx) => tx,
    };
    let locked = cashes::lock(&tx, payout.cash_id)
        .await?
        .ok_or_else(|| EngineError::Broken(format!("cash {} vanished", payout.cash_id)))?;
    if let Some(order_id) = locked.order_id {
        orders::set_command(&tx, order_id, &envelope.id).await?;
    }
    if locked.status == CashStatus::Waiting {
        cashes::approve_pending_payout(&tx, locked.id, "", envelope.user_id, &envelope.id).await?;
    }
    let custody = engine.policy.custody;
    let result =
        match complete_withdrawal(&tx, custody, locked.id, withdrawal, Some(&envelope.id)).await? {
            Ok(completion) => succeeded(
                envelope,
                Some(cash::MSG_REQUESTED),
                json!({
                    "cash": completion.cash(),
                    "order": completion.order(),
                    "pingpp_withdrawal": withdrawal,
                }),
            ),
            Err(mismatch) => {
                return Err(EngineError::Broken(format!(
                    "cash {}: {mismatch}",
                    payout.cash_id
                )))
            }
        };
    step::store_result(tx, envelope, &result).await
}

/// Ping++ refused the withdrawal: the hold goes back to the wallet, the cash record is
/// rejected with Ping++'s message, the order fails, and the command is rejected.
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
    if let Some(order_id) = locked.order_id {
        orders::set_command(&tx, order_id, &envelope.id).await?;
    }
    if locked.status == CashStatus::Waiting {
        cash_payouts::deactivate(&tx, payout.id).await?;
        cashes::set_withdrawal(&tx, locked.id, None).await?;
        let journal = Journal::transfer(
            AccountRef::System(SystemAccount::EwalletWithdrawals),
            AccountRef::Wallet(locked.owner),
            locked.value,
        )
        .map_err(|_| EngineError::Broken(format!("cash {} holds no money", locked.id)))?;
        let wallets = lock_wallets(&tx, &[locked.owner]).await?;
        post_journal(&tx, "cash.returned", Some(&envelope.id), &journal, &wallets).await?;
        let reason = rejection.messages().join("; ");
        cashes::record_decision(
            &tx,
            &locked,
            CashStatus::Rejected,
            OrderState::Failed,
            &reason,
            envelope.user_id,
            &envelope.id,
        )
        .await?;
    }
    step::store_result(tx, envelope, &rejected(envelope, rejection)).await
}
