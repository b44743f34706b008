//! `hold.create`, `hold.capture` and `hold.release` (in the batch's transaction), and the
//! expiry of open holds whose time has come (`expire_due`, run by the worker's sweeper).
//!
//! Every transaction that moves a hold's money locks the owner's wallet first, then the hold:
//! the batch locks the wallets it names up front, in user order, and the sweeper does the same,
//! so a capture racing the expiry waits instead of deadlocking, and whichever comes second finds
//! the hold closed.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use serde_json::{json, Value};

use super::set_aside;
use crate::db::holds;
use crate::db::ledger::{insert_orders, lock_wallets, LockedWallet, SystemDeltas};
use crate::db::outbox;
use crate::domain::command::Envelope;
use crate::domain::hold::{self, Closing, HoldStatus, LockedHold};
use crate::domain::ledger::AccountRef;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::engine::limits::may_send;
use crate::engine::{succeeded, Engine};
use crate::error::EngineError;

type Decided = Result<Result<CommandResult, Rejection>, EngineError>;

pub(crate) async fn create(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
) -> Decided {
    let request = match hold::parse_create(envelope.user_id, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let into = (AccountRef::Held(request.user), request.amount);
    let decided = set_aside(tx, envelope, policy, into, |figures| {
        hold::decide_create(&request, figures)
    })
    .await?;
    let journal_id = match decided {
        Ok(journal_id) => journal_id,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let (hold_id, hold_json) = holds::insert(tx, &request, &envelope.id, journal_id).await?;
    let order = insert_orders(
        tx,
        Some(&envelope.id),
        Some(journal_id),
        &[hold::create_order(&request, hold_id)],
    )
    .await?
    .remove(0);
    Ok(Ok(succeeded(
        envelope,
        Some(hold::MSG_CREATED),
        json!({ "hold": hold_json, "order": order }),
    )))
}

pub(crate) async fn capture(tx: &Transaction<'_>, envelope: &Envelope) -> Decided {
    let request = match hold::parse_capture(envelope.user_id, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let wallets = lock_wallets(tx, &[envelope.user_id, request.receiver]).await?;
    // Paying out of a hold sends the owner's money: a frozen wallet can only get it back.
    if let Err(rejection) = may_send(wallets.get(&envelope.user_id)) {
        return Ok(Err(rejection));
    }
    let locked = holds::lock(tx, request.hold, envelope.user_id).await?;
    let hold = match hold::open_for(locked.as_ref(), envelope.user_id) {
        Ok(hold) => hold,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let receiver = wallets
        .get(&request.receiver)
        .map_or_else(Default::default, |w| w.figures);
    let closing = match hold::decide_capture(hold, &request, receiver) {
        Ok(closing) => closing,
        Err(rejection) => return Ok(Err(rejection)),
    };
    answer_closed(tx, envelope, hold, &closing, &wallets, hold::MSG_CAPTURED).await
}

pub(crate) async fn release(tx: &Transaction<'_>, envelope: &Envelope) -> Decided {
    let hold_id = match hold::parse_release(&envelope.data) {
        Ok(id) => id,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let wallets = lock_wallets(tx, &[envelope.user_id]).await?;
    let locked = holds::lock(tx, hold_id, envelope.user_id).await?;
    let hold = match hold::open_for(locked.as_ref(), envelope.user_id) {
        Ok(hold) => hold,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let closing = hold::give_back(hold, HoldStatus::Released);
    answer_closed(tx, envelope, hold, &closing, &wallets, hold::MSG_RELEASED).await
}

/// Closes the hold by the command and answers with it and the command's order (the capture's
/// receiver's, the release's owner's).
async fn answer_closed(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    hold: &LockedHold,
    closing: &Closing,
    wallets: &BTreeMap<i64, LockedWallet>,
    message: &str,
) -> Decided {
    let command_id = Some(envelope.id.as_str());
    let (hold, orders) = close(
        tx,
        envelope.kind.as_str(),
        command_id,
        hold,
        closing,
        wallets,
    )
    .await?;
    Ok(Ok(succeeded(
        envelope,
        Some(message),
        json!({ "hold": hold, "order": orders[0] }),
    )))
}

/// Posts a closing's journal and orders and marks the hold closed; returns the hold's JSON and
/// the orders'.
async fn close(
    tx: &Transaction<'_>,
    kind: &str,
    command_id: Option<&str>,
    hold: &LockedHold,
    closing: &Closing,
    wallets: &BTreeMap<i64, LockedWallet>,
) -> Result<(Value, Vec<Value>), EngineError> {
    let mut system = SystemDeltas::default();
    let journal_id = crate::db::ledger::post_journals(
        tx,
        &[crate::db::ledger::JournalDraft {
            kind,
            command_id,
            journal: &closing.journal,
        }],
        wallets,
        &mut system,
    )
    .await?[0];
    let orders = insert_orders(tx, command_id, Some(journal_id), &closing.orders).await?;
    holds::close(tx, hold.id, closing, journal_id).await?;
    Ok((holds::json(tx, hold.id).await?, orders))
}

/// Most holds expired in one transaction: few, so that the owners' wallets it locks are
/// held for a few milliseconds (the sweeper goes on at once after a full one).
const EXPIRE_AT_ONCE: i64 = 10;

/// Gives back the money of open holds whose expiry has come, each exactly once (a hold closed
/// meanwhile by its owner is left as it is), and writes a `hold.expired` event for each to the
/// outbox. Returns how many expired.
pub(crate) async fn expire_due(engine: &Engine) -> Result<usize, EngineError> {
    let mut client = engine.pool.get().await?;
    let tx = client.transaction().await?;
    let due = holds::due(&tx, EXPIRE_AT_ONCE).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let owners: Vec<i64> = due.iter().map(|&(_, user)| user).collect();
    let wallets = lock_wallets(&tx, &owners).await?;
    let mut expired = 0;
    for (id, owner) in due {
        let Some(hold) = holds::lock(&tx, id, owner).await? else {
            continue;
        };
        if hold.status != HoldStatus::Held {
            continue;
        }
        let closing = hold::give_back(&hold, HoldStatus::Expired);
        let (hold_json, orders) =
            close(&tx, "hold.expire", None, &hold, &closing, &wallets).await?;
        outbox::enqueue(
            &tx,
            "hold.expired",
            &json!({
                "type": "hold.expired",
                "event_id": format!("hold.expired.{}", hold.id),
                "user_id": hold.user,
                "data": { "hold": hold_json, "order": orders[0] },
            }),
        )
        .await?;
        expired += 1;
    }
    tx.commit().await?;
    Ok(expired)
}
