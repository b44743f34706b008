//! One module per command family; each applies its commands by the domain's rules against the
//! database (and Ping++). The dispatch table is `Engine::apply` (and, for the commands applied
//! in a shared transaction, `engine::decide_in`).

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
use crate::domain::ledger::Journal;
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
