//! `transfer` and `reward`: money from the acting user's wallet to another user's. A batch's
//! transfers are decided one after the other in memory, against the balances the earlier ones
//! left (`decide`), then written with the batch's other decisions (src/engine/batch.rs).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::db::ledger::LockedWallet;
use crate::domain::command::{CommandType, Envelope};
use crate::domain::ledger::Journal;
use crate::domain::limits::not_frozen;
use crate::domain::order::OrderDraft;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::transfer::{self, TransferKind, TransferRequest};
use crate::engine::limits::Limits;
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
    let (sender, receiver) = (locked(request.from)?, locked(request.to)?);
    if let Err(rejection) = not_frozen(sender.frozen) {
        return Ok(Err(rejection));
    }
    let journal = match transfer::decide(&request, sender.figures, receiver.figures) {
        Ok(journal) => journal,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if let Err(rejection) = limits.admit(request.from, request.kind.command(), request.amount) {
        return Ok(Err(rejection));
    }
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
