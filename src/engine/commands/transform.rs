//! `transform`: fen from the wallet to `transform_revenue`, and points from `points_issued` to
//! the user's points, at `wallet.ratio`. Runs in the batch's transaction.

use deadpool_postgres::Transaction;
use serde_json::json;

use super::post_one;
use crate::db::ledger::{insert_orders, lock_points, SystemDeltas};
use crate::domain::command::Envelope;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::domain::transform;
use crate::engine::limits::{admit_one, lock_sender, may_send};
use crate::engine::succeeded;
use crate::error::EngineError;

pub(crate) async fn apply(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
    system: &mut SystemDeltas,
) -> Result<Result<CommandResult, Rejection>, EngineError> {
    let request = match transform::parse(envelope.user_id, &envelope.data, policy) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let (wallets, own_limits) = lock_sender(tx, request.user, envelope.kind).await?;
    if let Err(rejection) = may_send(wallets.get(&request.user)) {
        return Ok(Err(rejection));
    }
    let figures = wallets
        .get(&request.user)
        .map_or_else(Default::default, |w| w.figures);
    let points = lock_points(tx, request.user).await?;
    let journal = match transform::decide(&request, figures, points) {
        Ok(journal) => journal,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let sending = (envelope.kind, request.user, request.amount);
    let admitted = admit_one(tx, policy, sending, &own_limits).await?;
    if let Err(rejection) = admitted {
        return Ok(Err(rejection));
    }
    let journal_id = post_one(tx, "transform", &envelope.id, &journal, &wallets, system).await?;
    let order = insert_orders(
        tx,
        Some(&envelope.id),
        Some(journal_id),
        &[transform::order(&request)],
    )
    .await?
    .remove(0);
    Ok(Ok(succeeded(
        envelope,
        Some(transform::MSG_DONE),
        json!({ "order": order, "points": request.points }),
    )))
}
