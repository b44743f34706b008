//! `hold.create`, `hold.capture` and `hold.release`, decided in memory with a batch's
//! transfers and written with them (`decide`, then src/engine/batch.rs), and the expiry of open
//! holds whose time has come (`expire_due`, run by the worker's sweeper).
//!
//! Every transaction that moves a hold's money locks the owner's wallet first, then the hold:
//! the batch locks the wallets it names up front, in user order, then the holds, in id order,
//! and the sweeper does the same, so a capture racing the expiry waits instead of deadlocking,
//! and whichever comes second finds the hold closed.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Transaction;
use serde_json::{json, Value};

use super::track;
use crate::db::holds;
use crate::db::ledger::{
    insert_orders_of, lock_wallets, post_journals, JournalDraft, LockedWallet, SystemDeltas,
};
use crate::db::outbox;
use crate::domain::command::{CommandType, Envelope};
use crate::domain::hold::{self, CaptureRequest, Closing, CreateRequest, HoldStatus, LockedHold};
use crate::domain::ledger::{AccountRef, Journal};
use crate::domain::order::OrderDraft;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::engine::limits::{admit_sending, may_send, Limits};
use crate::engine::{succeeded, Engine};
use crate::error::EngineError;

/// A hold command of a batch, parsed.
pub(crate) enum HoldCommand {
    Create(CreateRequest),
    Capture(CaptureRequest),
    Release(i64),
}

/// The hold command `envelope` is, parsed; `None` when it is none.
pub(crate) fn parse(envelope: &Envelope) -> Option<Result<HoldCommand, Rejection>> {
    let data = &envelope.data;
    Some(match envelope.kind {
        CommandType::HoldCreate => {
            hold::parse_create(envelope.user_id, data).map(HoldCommand::Create)
        }
        CommandType::HoldCapture => {
            hold::parse_capture(envelope.user_id, data).map(HoldCommand::Capture)
        }
        CommandType::HoldRelease => hold::parse_release(data).map(HoldCommand::Release),
        _ => return None,
    })
}

impl HoldCommand {
    /// The hold a capture or release closes, as (hold, owner): the acting user's, or none.
    pub(crate) fn closes(&self, actor: i64) -> Option<(i64, i64)> {
        match self {
            HoldCommand::Create(_) => None,
            HoldCommand::Capture(request) => Some((request.hold, actor)),
            HoldCommand::Release(hold) => Some((*hold, actor)),
        }
    }

    /// The wallet a capture pays, beside the owner's.
    pub(crate) fn receiver(&self) -> Option<i64> {
        match self {
            HoldCommand::Capture(request) => Some(request.receiver),
            _ => None,
        }
    }

    /// Whether it is a `hold.create`: it sends from the wallet, under the daily limits.
    pub(crate) fn makes_a_hold(&self) -> bool {
        matches!(self, HoldCommand::Create(_))
    }
}

/// A hold command decided and not yet written.
pub(crate) enum DecidedHold {
    Create {
        request: CreateRequest,
        journal: Journal,
    },
    Close {
        hold: LockedHold,
        closing: Closing,
    },
}

impl DecidedHold {
    pub(crate) fn journal(&self) -> &Journal {
        match self {
            DecidedHold::Create { journal, .. } => journal,
            DecidedHold::Close { closing, .. } => &closing.journal,
        }
    }

    /// The account a new hold's money goes into, which must exist before its journal is posted.
    pub(crate) fn account_to_make(&self) -> Option<AccountRef> {
        match self {
            DecidedHold::Create { request, .. } => Some(AccountRef::Held(request.user)),
            DecidedHold::Close { .. } => None,
        }
    }

    /// Its orders, of the hold `hold_id` (the command's own first: the owner's hold, the
    /// capture's receiver's, the release's owner's).
    pub(crate) fn orders(&self, hold_id: i64) -> Vec<OrderDraft> {
        match self {
            DecidedHold::Create { request, .. } => vec![hold::create_order(request, hold_id)],
            DecidedHold::Close { closing, .. } => closing.orders.clone(),
        }
    }

    /// The command's result, with the hold as written and its own order.
    pub(crate) fn answer(
        &self,
        envelope: &Envelope,
        hold: Value,
        orders: &[Value],
    ) -> CommandResult {
        let message = match self {
            DecidedHold::Create { .. } => hold::MSG_CREATED,
            DecidedHold::Close { closing, .. } if closing.status == HoldStatus::Captured => {
                hold::MSG_CAPTURED
            }
            DecidedHold::Close { .. } => hold::MSG_RELEASED,
        };
        succeeded(
            envelope,
            Some(message),
            json!({ "hold": hold, "order": orders[0] }),
        )
    }
}

/// Decides one hold command against the wallets and holds (locked, by id) as the batch's
/// earlier commands left them, and moves those in memory when it goes through.
pub(crate) fn decide(
    command: HoldCommand,
    actor: i64,
    wallets: &mut BTreeMap<i64, LockedWallet>,
    holds: &mut HashMap<i64, LockedHold>,
    limits: &mut Limits,
) -> Result<Result<DecidedHold, Rejection>, EngineError> {
    let decided = match command {
        HoldCommand::Create(request) => {
            let sending = (CommandType::HoldCreate, actor, request.amount);
            let decided = admit_sending(wallets, limits, sending, |figures| {
                hold::decide_create(&request, figures)
            });
            match decided {
                Ok(journal) => DecidedHold::Create { request, journal },
                Err(rejection) => return Ok(Err(rejection)),
            }
        }
        HoldCommand::Capture(request) => {
            // Paying out of a hold sends the owner's money: a frozen wallet can only get it back.
            if let Err(rejection) = may_send(wallets.get(&actor)) {
                return Ok(Err(rejection));
            }
            let hold = match hold::open_for(holds.get(&request.hold), actor) {
                Ok(hold) => hold,
                Err(rejection) => return Ok(Err(rejection)),
            };
            let receiver = wallets
                .get(&request.receiver)
                .map_or_else(Default::default, |w| w.figures);
            match hold::decide_capture(hold, &request, receiver) {
                Ok(closing) => DecidedHold::Close {
                    hold: hold.clone(),
                    closing,
                },
                Err(rejection) => return Ok(Err(rejection)),
            }
        }
        HoldCommand::Release(id) => match hold::open_for(holds.get(&id), actor) {
            Ok(hold) => DecidedHold::Close {
                hold: hold.clone(),
                closing: hold::give_back(hold, HoldStatus::Released),
            },
            Err(rejection) => return Ok(Err(rejection)),
        },
    };
    track(wallets, decided.journal())?;
    if let DecidedHold::Close { hold, closing } = &decided {
        if let Some(locked) = holds.get_mut(&hold.id) {
            locked.status = closing.status;
        }
    }
    Ok(Ok(decided))
}

/// Stores the new holds and closes the closed ones, each `(command id, decision, its posted
/// journal)`, in one round trip; returns each one's hold id and JSON, in the order given.
pub(crate) async fn write_rows(
    tx: &Transaction<'_>,
    items: &[(Option<&str>, &DecidedHold, i64)],
) -> Result<Vec<(i64, Value)>, EngineError> {
    let mut new_holds = Vec::new();
    let mut closed = Vec::new();
    for &(command_id, decided, journal_id) in items {
        match decided {
            DecidedHold::Create { request, .. } => {
                let command_id = command_id.ok_or_else(|| {
                    EngineError::Broken("a hold is only made by a command".into())
                })?;
                new_holds.push((request, command_id, journal_id));
            }
            DecidedHold::Close { hold, closing } => closed.push((hold.id, closing, journal_id)),
        }
    }
    // Different rows, written in one round trip.
    let (stored, closed_json) = futures_util::future::join(
        async {
            if new_holds.is_empty() {
                Ok(Vec::new())
            } else {
                holds::insert_many(tx, &new_holds).await
            }
        },
        async {
            if closed.is_empty() {
                Ok(Vec::new())
            } else {
                holds::close_many(tx, &closed).await
            }
        },
    )
    .await;
    let (mut stored, mut closed_json) = (stored?.into_iter(), closed_json?.into_iter());
    let missing = || EngineError::Broken("a hold written went missing".into());
    items
        .iter()
        .map(|&(_, decided, _)| match decided {
            DecidedHold::Create { .. } => stored.next().ok_or_else(missing),
            DecidedHold::Close { hold, .. } => {
                Ok((hold.id, closed_json.next().ok_or_else(missing)?))
            }
        })
        .collect()
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
    let locked = holds::lock_many(&tx, &due).await?;
    let expiring: Vec<(&LockedHold, DecidedHold)> = due
        .iter()
        .filter_map(|(id, _)| locked.get(id))
        .filter(|hold| hold.status == HoldStatus::Held)
        .map(|hold| {
            let closing = hold::give_back(hold, HoldStatus::Expired);
            let decided = DecidedHold::Close {
                hold: hold.clone(),
                closing,
            };
            (hold, decided)
        })
        .collect();
    if expiring.is_empty() {
        return Ok(0);
    }
    let mut system = SystemDeltas::default();
    let drafts: Vec<JournalDraft> = expiring
        .iter()
        .map(|(_, d)| JournalDraft {
            kind: "hold.expire",
            command_id: None,
            journal: d.journal(),
        })
        .collect();
    let journal_ids = post_journals(&tx, &drafts, &wallets, &mut system).await?;
    let items: Vec<(Option<&str>, &DecidedHold, i64)> = expiring
        .iter()
        .zip(&journal_ids)
        .map(|((_, d), &journal_id)| (None, d, journal_id))
        .collect();
    let rows = write_rows(&tx, &items).await?;
    // One order each: the release's.
    let order_drafts: Vec<_> = expiring
        .iter()
        .zip(&rows)
        .map(|((_, d), (id, _))| d.orders(*id).remove(0))
        .collect();
    let orders_of: Vec<_> = journal_ids
        .iter()
        .zip(&order_drafts)
        .map(|(&journal_id, order)| (None, Some(journal_id), order))
        .collect();
    let orders = insert_orders_of(&tx, &orders_of).await?;
    let events: Vec<(&str, Value)> = expiring
        .iter()
        .zip(rows.into_iter().zip(orders))
        .map(|((hold, _), ((_, hold_json), order))| {
            let event = json!({
                "type": "hold.expired",
                "event_id": format!("hold.expired.{}", hold.id),
                "user_id": hold.user,
                "data": { "hold": hold_json, "order": order },
            });
            ("hold.expired", event)
        })
        .collect();
    outbox::enqueue_many(&tx, &events).await?;
    tx.commit().await?;
    Ok(events.len())
}
