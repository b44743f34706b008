//! `transfer` and `reward`: money from the acting user's wallet to another user's. A batch's
//! transfers are decided one after the other in memory, against the balances the earlier ones
//! left (`decide`), then written together in a few statements (`write`).

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use serde_json::json;

use crate::db::ledger::{
    insert_orders_of, post_journals, JournalDraft, LockedWallet, SystemDeltas,
};
use crate::domain::command::{CommandType, Envelope};
use crate::domain::ledger::{AccountRef, Journal};
use crate::domain::limits::not_frozen;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::transfer::{self, TransferKind, TransferRequest};
use crate::engine::limits::Limits;
use crate::engine::succeeded;
use crate::error::EngineError;

const ORDERS_PER_TRANSFER: usize = 2;

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
    for (account, amount) in journal.entries() {
        if let AccountRef::Wallet(user) = account {
            let wallet = wallets.get_mut(&user).expect("checked above");
            wallet.figures = wallet
                .figures
                .moved(amount)
                .expect("transfer::decide checked the ceiling");
        }
    }
    Ok(Ok(DecidedTransfer { request, journal }))
}

/// Writes the decided transfers in three statements and returns their results.
pub(crate) async fn write(
    tx: &Transaction<'_>,
    envelopes: &[Envelope],
    transfers: &[(usize, DecidedTransfer)],
    wallets: &BTreeMap<i64, LockedWallet>,
    system: &mut SystemDeltas,
) -> Result<Vec<(usize, CommandResult)>, EngineError> {
    let drafts: Vec<JournalDraft> = transfers
        .iter()
        .map(|(i, t)| JournalDraft {
            kind: envelopes[*i].kind.as_str(),
            command_id: Some(&envelopes[*i].id),
            journal: &t.journal,
        })
        .collect();
    let journal_ids = post_journals(tx, &drafts, wallets, system).await?;
    let order_drafts: Vec<_> = transfers
        .iter()
        .map(|(_, t)| transfer::orders(&t.request))
        .collect();
    let orders_of: Vec<_> = transfers
        .iter()
        .zip(&journal_ids)
        .zip(&order_drafts)
        .flat_map(|(((i, _), &journal_id), drafts)| {
            drafts
                .iter()
                .map(move |d| (Some(envelopes[*i].id.as_str()), Some(journal_id), d))
        })
        .collect();
    let orders = insert_orders_of(tx, &orders_of).await?;
    if orders.len() != orders_of.len() {
        return Err(EngineError::Broken("orders went missing".into()));
    }
    // Each transfer has two orders, the sender's first: that one is its result.
    Ok(transfers
        .iter()
        .zip(orders.chunks(ORDERS_PER_TRANSFER))
        .map(|((i, t), orders)| {
            let envelope = &envelopes[*i];
            (
                *i,
                succeeded(
                    envelope,
                    Some(t.request.kind.success_message()),
                    json!({ "order": orders[0] }),
                ),
            )
        })
        .collect())
}
