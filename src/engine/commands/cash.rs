//! `cash` (a cash request: the money goes from the wallet to `pending_payouts` at once) and,
//! with `pingpp.payout = "manual"`, the operator's `cash.approve` (the money goes on to
//! `paid_out`; someone pays the user by hand) and `cash.reject` (it goes back to the wallet).
//! Both run in the batch's transaction. A request above `wallet.cash_review_threshold` is
//! settled by the approval of a second operator (`cash::approval_step`); the first is recorded
//! and answered with the request still waiting.

use deadpool_postgres::Transaction;
use serde_json::json;

use super::{post_one, track, wallet_version, with_version};
use crate::db::cashes::{self, LockedCash};
use crate::db::ledger::{insert_orders, lock_wallets, SystemDeltas};
use crate::domain::cash::{self, ApprovalStep, Decision, DecisionEffect};
use crate::domain::command::Envelope;
use crate::domain::outcome::{Code, CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::engine::limits::decide_sending;
use crate::engine::succeeded;
use crate::error::EngineError;

pub(crate) async fn request(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
    system: &mut SystemDeltas,
) -> Result<Result<CommandResult, Rejection>, EngineError> {
    let request = match cash::parse_request(envelope.user_id, &envelope.data, policy) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let sending = (envelope.kind, request.user, request.value);
    let decided = decide_sending(tx, policy, sending, |figures| {
        cash::decide_request(&request, figures)
    })
    .await?;
    let (wallets, journal) = match decided {
        Ok(decided) => decided,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let journal_id = post_one(tx, "cash", &envelope.id, &journal, &wallets, system).await?;
    let mut after = wallets;
    track(&mut after, &journal)?;
    let version = wallet_version(&after, request.user)?;
    let cash_id = cashes::insert(tx, &request, &envelope.id).await?;
    let order = insert_orders(
        tx,
        Some(&envelope.id),
        Some(journal_id),
        &[cash::request_order(&request, cash_id)],
    )
    .await?
    .remove(0);
    let order_id = order["id"]
        .as_i64()
        .ok_or_else(|| EngineError::Broken("an order without an id".into()))?;
    cashes::link_order(tx, cash_id, order_id).await?;
    let cash = cashes::get_json(tx, cash_id).await?;
    Ok(Ok(with_version(
        succeeded(
            envelope,
            Some(cash::MSG_REQUESTED),
            json!({ "cash": cash, "order": order }),
        ),
        version,
    )))
}

pub(crate) async fn decision(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    decision: Decision,
    policy: &WalletPolicy,
    system: &mut SystemDeltas,
) -> Result<Result<CommandResult, Rejection>, EngineError> {
    let request = match cash::parse_decision(decision, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let Some(locked) = cashes::lock(tx, request.cash_id).await? else {
        return Ok(Err(Rejection::field(
            Code::UnknownCash,
            "cash",
            cash::MSG_UNKNOWN_CASH,
        )));
    };
    match cash::decide(decision, locked.status, locked.owner, locked.value) {
        Err(rejection) => return Ok(Err(rejection)),
        Ok(DecisionEffect::AlreadyDone) => {}
        Ok(DecisionEffect::Apply(journal)) => {
            if decision == Decision::Approve {
                let threshold = policy.cash_review_threshold;
                match approval(tx, envelope, &locked, &request.remark, threshold).await? {
                    Err(rejection) => return Ok(Err(rejection)),
                    Ok(ApprovalStep::RecordFirst) => {
                        return Ok(Ok(first_approval_result(tx, envelope, locked.id).await?))
                    }
                    Ok(ApprovalStep::Settle) => {}
                }
            }
            // Only a rejection touches a wallet; lock it all the same so the lock order
            // (cash, then wallet) is the same for both.
            let wallets = lock_wallets(tx, &[locked.owner]).await?;
            post_one(
                tx,
                envelope.kind.as_str(),
                &envelope.id,
                &journal,
                &wallets,
                system,
            )
            .await?;
            cashes::record_decision(
                tx,
                &locked,
                decision.status(),
                decision.order_state(),
                &request.remark,
                envelope.user_id,
                &envelope.id,
            )
            .await?;
        }
    }
    let mut data = json!({ "cash": cashes::get_json(tx, locked.id).await? });
    if let Some(approvals) = approvals_shown(tx, &locked, policy.cash_review_threshold).await? {
        data["approvals"] = approvals.into();
    }
    Ok(Ok(succeeded(
        envelope,
        Some(decision.success_message()),
        data,
    )))
}

/// Applies the two-person rule to an operator's approval of a waiting request (its record
/// locked): records the approval unless it is refused, and says whether it settles the request.
pub(crate) async fn approval(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    locked: &LockedCash,
    remark: &str,
    threshold: Option<i64>,
) -> Result<Result<ApprovalStep, Rejection>, EngineError> {
    let approved_by = cashes::approvers(tx, locked.id).await?;
    let step = match cash::approval_step(
        envelope.user_id,
        locked.owner,
        locked.value,
        threshold,
        &approved_by,
    ) {
        Ok(step) => step,
        Err(rejection) => return Ok(Err(rejection)),
    };
    cashes::record_approval(tx, locked.id, envelope.user_id, remark, &envelope.id).await?;
    Ok(Ok(step))
}

/// The answer to the first of two approvals: the request still waits for another operator.
pub(crate) async fn first_approval_result(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    cash_id: i64,
) -> Result<CommandResult, EngineError> {
    let cash = cashes::get_json(tx, cash_id).await?;
    Ok(succeeded(
        envelope,
        Some(cash::MSG_FIRST_APPROVAL),
        json!({ "cash": cash, "approvals": 1 }),
    ))
}

/// The number of approvals a decision's result shows, for requests that need two.
pub(crate) async fn approvals_shown(
    tx: &Transaction<'_>,
    locked: &LockedCash,
    threshold: Option<i64>,
) -> Result<Option<usize>, EngineError> {
    if !cash::needs_two_approvals(locked.value, threshold) {
        return Ok(None);
    }
    Ok(Some(cashes::approvers(tx, locked.id).await?.len()))
}
