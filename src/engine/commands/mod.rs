//! One module per command family; each applies its commands by the domain's rules against the
//! database (and Ping++). The dispatch table is `Engine::apply` (and, for the commands applied
//! in a shared transaction, `engine::decide_in`, or src/engine/batch.rs for those decided in
//! memory with the batch's transfers).

pub(crate) mod account;
pub(crate) mod allocation;
pub(crate) mod cash;
pub(crate) mod deposit;
pub(crate) mod ewallet_cash;
pub(crate) mod hold;
pub(crate) mod merchant;
pub(crate) mod payout;
pub(crate) mod purchase;
pub(crate) mod reads;
pub(crate) mod recharge;
pub(crate) mod redpacket;
pub(crate) mod refund;
pub(crate) mod transfer;
pub(crate) mod transform;
pub(crate) mod wallet_control;

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;

use crate::db::ledger::{post_journals, JournalDraft, LockedWallet, SystemDeltas};
use crate::domain::ledger::{AccountRef, Journal, WalletFigures};
use crate::domain::outcome::CommandResult;
use crate::error::EngineError;

/// Posts one command's journal; system accounts move in `system`, at the end.
pub(crate) async fn post_one(
    tx: &Transaction<'_>,
    kind: &str,
    command_id: &str,
    journal: &Journal,
    wallets: &BTreeMap<i64, LockedWallet>,
    system: &mut SystemDeltas,
) -> Result<i64, EngineError> {
    let draft = JournalDraft {
        kind,
        command_id: Some(command_id),
        journal,
    };
    Ok(post_journals(tx, &[draft], wallets, system).await?[0])
}

/// Moves the figures of the locked wallets that a decided journal touches, as posting it will
/// (src/db/ledger.rs): a batch decides its later commands against the balances its earlier ones
/// leave. The ceilings are each command's own rule, checked before. Each wallet it moves is at
/// its next version, as `post_journals` numbers it when the journals are posted in the order
/// they were tracked: a result can then name the version its command wrote.
pub(crate) fn track(
    wallets: &mut BTreeMap<i64, LockedWallet>,
    journal: &Journal,
) -> Result<(), EngineError> {
    for (account, amount) in journal.entries() {
        let AccountRef::Wallet(user) = account else {
            continue;
        };
        let wallet = wallets
            .get_mut(&user)
            .ok_or_else(|| EngineError::Broken(format!("wallet of user {user} was not locked")))?;
        let figures = &mut wallet.figures;
        let moved = figures.balance.checked_add(amount).and_then(|balance| {
            Some(WalletFigures {
                balance,
                total_income: figures.total_income.checked_add(amount.max(0))?,
                total_expenses: figures.total_expenses.checked_add((-amount).max(0))?,
            })
        });
        *figures = moved.ok_or_else(|| {
            EngineError::Broken(format!("wallet of user {user} overflows by {amount}"))
        })?;
        wallet.version += 1;
    }
    Ok(())
}

/// The version of `user`'s wallet as the tracked journals leave it: what a result that moved
/// the actor's wallet carries (docs/CONTRACT.md §5, "Versions").
pub(crate) fn wallet_version(
    wallets: &BTreeMap<i64, LockedWallet>,
    user: i64,
) -> Result<i64, EngineError> {
    wallets
        .get(&user)
        .map(|w| w.version)
        .ok_or_else(|| EngineError::Broken(format!("wallet of user {user} was not locked")))
}

/// Adds the actor's wallet `version` to a succeeded result's data.
pub(crate) fn with_version(mut result: CommandResult, version: i64) -> CommandResult {
    if let Some(serde_json::Value::Object(data)) = result.data.as_mut() {
        data.insert("version".into(), version.into());
    }
    result
}
