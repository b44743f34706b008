//! Applying a command: the domain's rules put to work against the database (and Ping++).
//!
//! - `commands/`: one module per command family (`transfer`, `cash`, `transform`, `reads`,
//!   `recharge`, `payout`, `refund`, and with the money at Ping++ `account`, `deposit`, `ewallet_cash`); adding a command touches its module, the dispatch in
//!   [`Engine::apply`] (or `decide_in`) and the contract's schema.
//! - `batch`: group commit. Commands that need no Ping++ share one transaction when they arrive
//!   together; a single command is a batch of one.
//! - `step`: how each step of a command that calls Ping++ between its transactions begins.
//! - `completion/`: the one path by which a Ping++ charge or withdrawal completes what it
//!   belongs to, shared by the webhook, the retrieves and the commands.
//! - `event`: applying verified Ping++ webhook events.
//! - `provider`: what the commands that call Ping++ share (failures, unknown outcomes).

mod batch;
mod commands;
mod completion;
mod event;
mod limits;
mod provider;
mod step;

pub use commands::payout::PayoutSettings;
pub use completion::charge::{complete_charge, ChargeCompletion};
pub use completion::withdrawal::{complete_withdrawal, WithdrawalCompletion};
pub use event::{apply_event, EventOutcome};

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};

use crate::config::{PayoutMode, PingppSettings, RechargeMode, Settings};
use crate::db::commands::{self as command_log, Applied, Claim};
use crate::db::ledger::SystemDeltas;
use crate::domain::cash::Decision;
use crate::domain::command::{CommandType, Envelope};
use crate::domain::custody::Custody;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::domain::validate;
use crate::error::EngineError;
use crate::pingpp::{ClientConfig, MerchantKey, PingppClient};

/// What applying commands needs; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub pool: Pool,
    pub policy: Arc<WalletPolicy>,
    /// `None` when Ping++ is not configured: recharges then wait (and finally dead-letter)
    /// instead of being rejected, since it is not the command's fault.
    pub pingpp: Option<PingppClient>,
    /// `Some(user id template)` when new recharges go through Ping++ recharge objects
    /// (`pingpp.recharge_mode = "recharge_object"`), `None` for plain charges.
    pub recharge_object: Option<String>,
    /// `Some` when approved cash requests are paid out through Ping++ withdrawals
    /// (`pingpp.payout = "withdrawals"`), `None` for the manual flow.
    pub payout: Option<Arc<PayoutSettings>>,
    /// How long a Ping++ event may wait for what it completes before it is dead-lettered
    /// (`worker.event_wait_secs`).
    pub event_wait: Duration,
    /// The Ping++ user id of our user `{id}` (`pingpp.user_id_template`).
    pub user_id_template: String,
    /// The channel of withdrawals from a user's e-wallet (`pingpp.withdrawal_channel`).
    pub withdrawal_channel: String,
    /// The Ping++ business user id of our user `{id}`'s sub-merchant
    /// (`pingpp.merchant_user_id_template`).
    pub merchant_user_id_template: String,
    /// How long a refund of a recharge stays pending before it is asked about
    /// (`worker.refund_pull_secs`).
    pub refund_pull: Duration,
}

impl Engine {
    /// The engine the settings describe: the database pool, the wallet's rules, and the Ping++
    /// client when Ping++ is configured.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Engine> {
        if !settings.pingpp.fingerprint_key.is_empty() {
            crate::domain::command::set_fingerprint_key(settings.pingpp.fingerprint_key.as_bytes());
        }
        Ok(Engine {
            pool: crate::db::pool(&settings.database)?,
            policy: Arc::new(settings.wallet.clone()),
            pingpp: pingpp_client(&settings.pingpp)?,
            recharge_object: match settings.pingpp.recharge_mode {
                RechargeMode::Charge => None,
                RechargeMode::RechargeObject => Some(settings.pingpp.user_id_template.clone()),
            },
            payout: match settings.pingpp.payout {
                PayoutMode::Manual => None,
                PayoutMode::Withdrawals => Some(Arc::new(PayoutSettings {
                    user_id_template: settings.pingpp.user_id_template.clone(),
                    channel: settings.pingpp.withdrawal_channel.clone(),
                    return_url: settings.pingpp.withdrawal_return_url.clone(),
                })),
            },
            event_wait: Duration::from_secs(settings.worker.event_wait_secs),
            user_id_template: settings.pingpp.user_id_template.clone(),
            withdrawal_channel: settings.pingpp.withdrawal_channel.clone(),
            merchant_user_id_template: settings.pingpp.merchant_user_id_template.clone(),
            refund_pull: Duration::from_secs(settings.worker.refund_pull_secs),
        })
    }

    /// Applies a command exactly once. A transient error leaves nothing half-done and may be
    /// retried freely.
    pub async fn apply(&self, envelope: &Envelope) -> Result<Applied, EngineError> {
        if let Some(rejection) = validate::unstorable_text(&envelope.data) {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
        let custody = self.policy.custody;
        if !custody.offers(envelope.kind) {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let rejection = crate::domain::custody::not_in_this_mode();
            return step::conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
        let at_pingpp = custody == Custody::Pingpp;
        match envelope.kind {
            CommandType::Recharge if at_pingpp => commands::deposit::create(self, envelope).await,
            CommandType::RechargeRetrieve if at_pingpp => {
                commands::deposit::retrieve(self, envelope).await
            }
            CommandType::Cash if at_pingpp => commands::ewallet_cash::request(self, envelope).await,
            CommandType::Reward if at_pingpp => commands::purchase::reward(self, envelope).await,
            CommandType::AccountOpen => commands::account::open(self, envelope).await,
            CommandType::AccountGet => commands::account::get(self, envelope).await,
            CommandType::AccountCards => commands::account::cards(self, envelope).await,
            CommandType::UploadPic => commands::account::upload_pic(self, envelope).await,
            CommandType::CardBin => commands::account::card_bin(self, envelope).await,
            CommandType::MerchantCreate => commands::merchant::create(self, envelope).await,
            CommandType::MerchantGet => commands::merchant::get(self, envelope).await,
            CommandType::MerchantApply => commands::merchant::apply(self, envelope).await,
            CommandType::MerchantApplicationGet => {
                commands::merchant::application_get(self, envelope).await
            }
            CommandType::MerchantSettleAccount => {
                commands::merchant::settle_account(self, envelope).await
            }
            CommandType::OrderCreate => commands::purchase::create(self, envelope).await,
            CommandType::OrderPay => commands::purchase::pay(self, envelope).await,
            CommandType::OrderGet => commands::purchase::get(self, envelope).await,
            CommandType::OrderRefund => commands::purchase::refund(self, envelope).await,
            CommandType::OrderRefunds => commands::purchase::refunds(self, envelope).await,
            CommandType::OrderRefundGet => commands::purchase::refund_get(self, envelope).await,
            CommandType::AllocationCreate => commands::allocation::create(self, envelope).await,
            CommandType::AllocationGet => commands::allocation::get(self, envelope).await,
            CommandType::AllocationRefund => commands::allocation::refund(self, envelope).await,
            CommandType::AllocationComplete => commands::allocation::complete(self, envelope).await,
            CommandType::Recharge => commands::recharge::create(self, envelope).await,
            CommandType::RechargeRetrieve => commands::recharge::retrieve(self, envelope).await,
            CommandType::RechargeRefund => commands::refund::request(self, envelope).await,
            CommandType::CashRetrieve => commands::payout::retrieve(self, envelope).await,
            CommandType::CashApprove if self.payout.is_some() => {
                commands::payout::approve(self, envelope).await
            }
            CommandType::CashReject if self.payout.is_some() => {
                commands::payout::reject(self, envelope).await
            }
            _ => {
                let mut applied =
                    batch::apply_together(self, std::slice::from_ref(envelope)).await?;
                Ok(applied.remove(0))
            }
        }
    }

    /// Whether applying the command waits on Ping++ (the recharges, `cash.retrieve`, the e-wallet
    /// commands, `cash` with the money at Ping++, and the cash decisions with
    /// `pingpp.payout = "withdrawals"`). Those never share a transaction
    /// and take their own worker slots; every other command may share one ([`Engine::apply_batch`]).
    pub fn waits_on_pingpp(&self, kind: CommandType) -> bool {
        matches!(
            kind,
            CommandType::Recharge
                | CommandType::RechargeRetrieve
                | CommandType::CashRetrieve
                | CommandType::AccountOpen
                | CommandType::AccountGet
                | CommandType::AccountCards
                | CommandType::UploadPic
                | CommandType::CardBin
                | CommandType::MerchantCreate
                | CommandType::MerchantGet
                | CommandType::MerchantApply
                | CommandType::MerchantApplicationGet
                | CommandType::MerchantSettleAccount
                | CommandType::OrderCreate
                | CommandType::OrderPay
                | CommandType::OrderGet
                | CommandType::OrderRefund
                | CommandType::OrderRefunds
                | CommandType::OrderRefundGet
                | CommandType::AllocationCreate
                | CommandType::AllocationGet
                | CommandType::AllocationRefund
                | CommandType::AllocationComplete
                | CommandType::RechargeRefund
        ) || (self.payout.is_some()
            && matches!(kind, CommandType::CashApprove | CommandType::CashReject))
            || (self.policy.custody == Custody::Pingpp
                && matches!(kind, CommandType::Cash | CommandType::Reward))
    }

    /// Applies several commands that don't wait on Ping++ in one transaction (group commit):
    /// one commit, one fsync, for all of them. Each command is still decided on its own; a
    /// rejection is a result like any other and never fails its neighbours. If the transaction
    /// itself fails, every command is applied again alone, so one bad command can't hold back
    /// the others; each result is then that of the single-command path.
    pub async fn apply_batch(&self, envelopes: &[Envelope]) -> Vec<Result<Applied, EngineError>> {
        debug_assert!(envelopes.iter().all(|e| !self.waits_on_pingpp(e.kind)));
        // A command refused for its text is rare: the whole batch then goes one by one.
        let all_storable = envelopes
            .iter()
            .all(|e| validate::unstorable_text(&e.data).is_none());
        if envelopes.len() > 1 && all_storable {
            match batch::apply_together(self, envelopes).await {
                Ok(applied) => return applied.into_iter().map(Ok).collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "batch failed; applying its commands one by one")
                }
            }
        }
        let mut out = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            out.push(self.apply(envelope).await);
        }
        out
    }
}

impl Engine {
    /// Closes what has expired (open holds, open red packets), each exactly once, with its
    /// event in the outbox. Returns how many closed; the caller runs it again while that is not
    /// zero.
    pub async fn expire_due(&self, what: Expiring) -> Result<usize, EngineError> {
        match what {
            Expiring::Holds => commands::hold::expire_due(self).await,
            Expiring::Redpackets => commands::redpacket::expire_due(self).await,
        }
    }
}

/// What expires, each swept on its own, so that a failure of one never holds up the other.
#[derive(Debug, Clone, Copy)]
pub enum Expiring {
    Holds,
    Redpackets,
}

fn pingpp_client(settings: &PingppSettings) -> anyhow::Result<Option<PingppClient>> {
    if settings.app_id.is_empty() || settings.secret_key.is_empty() {
        tracing::warn!(
            "Ping++ is not configured (pingpp.app_id, pingpp.secret_key): recharges will wait"
        );
        return Ok(None);
    }
    let merchant_key = match &settings.private_key {
        None => None,
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("pingpp.private_key: cannot read {}: {e}", path.display())
            })?;
            Some(
                MerchantKey::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("pingpp.private_key {}: {e}", path.display()))?,
            )
        }
    };
    let client = PingppClient::new(ClientConfig {
        api_base: settings.api_base.clone(),
        app_id: settings.app_id.clone(),
        secret_key: settings.secret_key.clone(),
        merchant_key,
        timeout: Duration::from_millis(settings.timeout_ms),
        max_retries: settings.max_retries,
    })
    .map_err(|e| anyhow::anyhow!("pingpp: {e}"))?;
    Ok(Some(client))
}

/// Claims, decides and stores one command that needs no Ping++ inside the caller's
/// transaction, which the caller commits (a `cash.reject` with nothing to cancel at Ping++).
pub(crate) async fn apply_within(
    engine: &Engine,
    tx: &Transaction<'_>,
    envelope: &Envelope,
) -> Result<Applied, EngineError> {
    if let Claim::Done(applied) = command_log::claim(tx, envelope).await? {
        return Ok(applied);
    }
    let mut system = SystemDeltas::default();
    let result = match decide_in(engine, tx, envelope, &mut system).await? {
        Ok(result) => result,
        Err(rejection) => rejected(envelope, rejection),
    };
    let applied = command_log::store(tx, envelope, &result).await?;
    system.apply(tx).await?;
    Ok(applied)
}

/// Decides a claimed command that is neither a transfer (see `commands::transfer`) nor waits on
/// Ping++, inside the batch's transaction; system accounts' balances move in `system`, at the
/// end. A rejection leaves no writes behind.
async fn decide_in(
    engine: &Engine,
    tx: &Transaction<'_>,
    envelope: &Envelope,
    system: &mut SystemDeltas,
) -> Result<Result<CommandResult, Rejection>, EngineError> {
    let policy = &engine.policy;
    match envelope.kind {
        CommandType::Cash => commands::cash::request(tx, envelope, policy, system).await,
        CommandType::CashApprove => {
            commands::cash::decision(tx, envelope, Decision::Approve, policy, system).await
        }
        CommandType::CashReject => {
            commands::cash::decision(tx, envelope, Decision::Reject, policy, system).await
        }
        CommandType::WalletFreeze => commands::wallet_control::set_frozen(tx, envelope, true).await,
        CommandType::WalletUnfreeze => {
            commands::wallet_control::set_frozen(tx, envelope, false).await
        }
        CommandType::LimitsSet => commands::wallet_control::set_limits(tx, envelope, policy).await,
        CommandType::RedpacketCreate => commands::redpacket::create(tx, envelope, policy).await,
        CommandType::RedpacketGet => commands::redpacket::get(tx, envelope).await,
        CommandType::OrdersList
        | CommandType::OrdersGet
        | CommandType::CashesList
        | CommandType::WalletGet
        | CommandType::ChargesList
        | CommandType::ChargesGet
        | CommandType::WalletChanges
        | CommandType::WalletStatement
        | CommandType::WalletProof => commands::reads::answer(tx, envelope, policy).await,
        CommandType::Transfer
        | CommandType::Reward
        | CommandType::HoldCreate
        | CommandType::HoldCapture
        | CommandType::HoldRelease
        | CommandType::RedpacketClaim
        | CommandType::Transform => Err(EngineError::Broken(format!(
            "{} is decided in memory with its batch (src/engine/batch.rs)",
            envelope.kind.as_str()
        ))),
        CommandType::Recharge
        | CommandType::RechargeRetrieve
        | CommandType::CashRetrieve
        | CommandType::AccountOpen
        | CommandType::AccountGet
        | CommandType::AccountCards
        | CommandType::UploadPic
        | CommandType::CardBin
        | CommandType::MerchantCreate
        | CommandType::MerchantGet
        | CommandType::MerchantApply
        | CommandType::MerchantApplicationGet
        | CommandType::MerchantSettleAccount
        | CommandType::OrderCreate
        | CommandType::OrderPay
        | CommandType::OrderGet
        | CommandType::OrderRefund
        | CommandType::OrderRefunds
        | CommandType::OrderRefundGet
        | CommandType::AllocationCreate
        | CommandType::AllocationGet
        | CommandType::AllocationRefund
        | CommandType::AllocationComplete
        | CommandType::RechargeRefund => Err(EngineError::Broken(format!(
            "{} is not decided inside a shared transaction",
            envelope.kind.as_str()
        ))),
    }
}

pub(crate) fn succeeded(
    envelope: &Envelope,
    message: Option<&str>,
    data: serde_json::Value,
) -> CommandResult {
    let mut result = CommandResult::succeeded(
        &envelope.id,
        envelope.kind.as_str(),
        envelope.user_id,
        message.unwrap_or(""),
        data,
    );
    if message.is_none() {
        // Reads answer with data only, as the wallet API's GET endpoints do.
        result.message.clear();
    }
    result
}

pub(crate) fn rejected(envelope: &Envelope, rejection: Rejection) -> CommandResult {
    CommandResult::rejected(
        &envelope.id,
        envelope.kind.as_str(),
        envelope.user_id,
        rejection,
    )
}
