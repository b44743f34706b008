//! `cash` (a cash request: the money goes from the wallet to `pending_payouts` at once) and,
//! with `pingpp.payout = "manual"`, the operator's `cash.approve` (the money goes on to
//! `paid_out`; someone pays the user by hand) and `cash.reject` (it goes back to the wallet).
//! Both run in the batch's transaction.

use deadpool_postgres::Transaction;
use serde_json::json;

use super::post_one;
use crate::db::cashes;
use crate::db::ledger::{insert_orders, lock_wallets, SystemDeltas};
use crate::domain::cash::{self, Decision, DecisionEffect};
use crate::domain::command::Envelope;
use crate::domain::outcome::{Code, CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
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
    let wallets = lock_wallets(tx, &[request.user]).await?;
    let figures = wallets
        .get(&request.user)
        .map_or_else(Default::default, |w| w.figures);
    let journal = match cash::decide_request(&request, figures) {
        Ok(journal) => journal,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let journal_id = post_one(tx, "cash", &envelope.id, &journal, &wallets, system).await?;
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
    Ok(Ok(succeeded(
        envelope,
        Some(cash::MSG_REQUESTED),
        json!({ "cash": cash, "order": order }),
    )))
}

pub(crate) async fn decision(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    decision: Decision,
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
    let cash = cashes::get_json(tx, locked.id).await?;
    Ok(Ok(succeeded(
        envelope,
        Some(decision.success_message()),
        json!({ "cash": cash }),
    )))
}
