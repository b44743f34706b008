//! `transfer` and `reward`: money from the acting user's wallet to another user's. A batch's
//! transfers are decided one after the other in memory, against the balances the earlier ones
//! left (`decide`), then written with the batch's other decisions (src/engine/batch.rs).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::db::ledger::LockedWallet;
use crate::domain::command::{CommandType, Envelope};
use crate::domain::ledger::Journal;
use crate::domain::order::OrderDraft;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::transfer::{self, TransferKind, TransferRequest};
use crate::engine::limits::{admit_sending, Limits};
use crate::engine::succeeded;
use crate::error::EngineError;

/// A transfer decided and not yet written.
pub(crate) struct DecidedTransfer {
    request: TransferRequest,
    journal: Journal,
}

pub(crate) fn kind_of(kind: CommandType) -> Option<TransferKind> {
    match kind {
        CommandType::Transfer => Some(TransferKind::Transfer),
        CommandType::Reward => Some(TransferKind::Reward),
        _ => None,
    }
}

/// Decides a transfer against the balances (and the sender's daily limit) as the batch's
/// earlier transfers left them, and moves those in memory when it goes through.
pub(crate) fn decide(
    request: TransferRequest,
    wallets: &mut BTreeMap<i64, LockedWallet>,
    limits: &mut Limits,
) -> Result<Result<DecidedTransfer, Rejection>, EngineError> {
    let locked = |user: i64| {
        wallets
            .get(&user)
            .copied()
            .ok_or_else(|| EngineError::Broken(format!("wallet of user {user} was not locked")))
    };
    locked(request.from)?;
    let receiver = locked(request.to)?;
    let sending = (request.kind.command(), request.from, request.amount);
    let decided = admit_sending(wallets, limits, sending, |sender| {
        transfer::decide(&request, sender, receiver.figures)
    });
    let journal = match decided {
        Ok(journal) => journal,
        Err(rejection) => return Ok(Err(rejection)),
    };
    super::track(wallets, &journal)?;
    Ok(Ok(DecidedTransfer { request, journal }))
}

impl DecidedTransfer {
    pub(crate) fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The sender's order, then the receiver's.
    pub(crate) fn orders(&self) -> Vec<OrderDraft> {
        transfer::orders(&self.request).into()
    }

    /// The result, with the sender's order (the first of `orders`).
    pub(crate) fn answer(&self, envelope: &Envelope, orders: &[Value]) -> CommandResult {
        let message = self.request.kind.success_message();
        succeeded(envelope, Some(message), json!({ "order": orders[0] }))
    }
}
