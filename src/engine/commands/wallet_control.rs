//! The operators' controls on a user's wallet: `wallet.freeze` / `wallet.unfreeze` (a frozen
//! wallet sends nothing, it still receives) and `limits.set` (the user's own daily limit on a
//! command type). Run in the batch's transaction, under the user's wallet lock, like every
//! command they affect.

use deadpool_postgres::Transaction;
use serde_json::json;

use crate::db::ledger::lock_wallets;
use crate::db::limits as stored;
use crate::domain::command::Envelope;
use crate::domain::limits::{self, MSG_FROZEN_DONE, MSG_LIMITS_SET, MSG_UNFROZEN_DONE};
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::engine::succeeded;
use crate::error::EngineError;

type Decided = Result<Result<CommandResult, Rejection>, EngineError>;

pub(crate) async fn set_frozen(tx: &Transaction<'_>, envelope: &Envelope, frozen: bool) -> Decided {
    let request = match limits::parse_freeze(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    lock_wallets(tx, &[request.user]).await?;
    let wallet = stored::set_frozen(
        tx,
        request.user,
        frozen,
        &request.reason,
        envelope.user_id,
        &envelope.id,
    )
    .await?;
    let message = if frozen {
        MSG_FROZEN_DONE
    } else {
        MSG_UNFROZEN_DONE
    };
    Ok(Ok(succeeded(
        envelope,
        Some(message),
        json!({ "wallet": wallet }),
    )))
}

pub(crate) async fn set_limits(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
) -> Decided {
    let request = match limits::parse_limits(&envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    lock_wallets(tx, &[request.user]).await?;
    stored::set_own_limit(
        tx,
        request.user,
        request.kind,
        &request.limit,
        envelope.user_id,
    )
    .await?;
    // Usage is kept only while a limit applies: counted afresh from the day's orders, it is
    // right whatever applied before.
    stored::forget_usage_today(tx, request.user, request.kind, policy.day_offset_hours).await?;
    let (source, limit) = if !request.limit.is_none() {
        ("user", request.limit)
    } else if let Some(limit) = policy.daily_limit(request.kind) {
        ("settings", limit)
    } else {
        ("none", request.limit)
    };
    Ok(Ok(succeeded(
        envelope,
        Some(MSG_LIMITS_SET),
        json!({ "limits": {
            "user_id": request.user,
            "type": request.kind.as_str(),
            "daily_count": limit.daily_count,
            "daily_amount": limit.daily_amount,
            "source": source,
        }}),
    )))
}
