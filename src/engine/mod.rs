//! Applying a command: the domain's rules put to work against the database (and Ping++ for
//! recharges). Every command but the recharges runs in one transaction with its command-log
//! row; `recharge` and `recharge.retrieve` call Ping++ between transactions (see `recharge`),
//! as do `cash.retrieve` and, with `pingpp.payout = "withdrawals"`, `cash.approve` and
//! `cash.reject` (see `payout`).

mod batch;
mod event;
mod payout;
mod recharge;

pub use event::{apply_event, EventOutcome};
pub use payout::{complete_withdrawal, PayoutSettings, WithdrawalCompletion};
pub use recharge::{complete_charge, ChargeCompletion};

use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use serde_json::json;

use std::collections::BTreeMap;

use crate::db::commands::{self, Applied, Claim};
use crate::db::wallets::{
    insert_orders, lock_points, lock_wallets, post_journals, summary, JournalDraft, LockedWallet,
    SystemDeltas,
};
use crate::db::{cashes, orders, DbError};
use crate::domain::cash::{self, Decision, DecisionEffect};
use crate::domain::command::{CommandType, Envelope};
use crate::domain::ledger::Journal;
use crate::domain::outcome::{Code, CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::domain::query;
use crate::domain::transform;
use crate::domain::validate;
use crate::pingpp::PingppClient;

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
    pub event_wait: std::time::Duration,
}

impl Engine {
    /// Applies a command exactly once. A transient error leaves nothing half-done and may be
    /// retried freely.
    pub async fn apply(&self, envelope: &Envelope) -> Result<Applied, DbError> {
        if let Some(rejection) = validate::unstorable_text(&envelope.data) {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            return recharge::conclude(tx, envelope, rejected(envelope, rejection)).await;
        }
        match envelope.kind {
            CommandType::Recharge => recharge::create(self, envelope).await,
            CommandType::RechargeRetrieve => recharge::retrieve(self, envelope).await,
            CommandType::CashRetrieve => payout::retrieve(self, envelope).await,
            CommandType::CashApprove if self.payout.is_some() => {
                payout::approve(self, envelope).await
            }
            CommandType::CashReject if self.payout.is_some() => {
                payout::reject(self, envelope).await
            }
            _ => self.apply_in_one_transaction(envelope).await,
        }
    }

    /// Whether this engine may take the command into `apply_batch`: any command that does not
    /// call Ping++.
    pub fn takes_in_batch(&self, kind: CommandType) -> bool {
        !self.calls_pingpp(kind)
    }

    /// Whether applying the command waits on Ping++: the recharges, `cash.retrieve`, and the
    /// cash decisions with `pingpp.payout = "withdrawals"`.
    pub fn calls_pingpp(&self, kind: CommandType) -> bool {
        !Self::batchable(kind)
            || (self.payout.is_some()
                && matches!(kind, CommandType::CashApprove | CommandType::CashReject))
    }

    /// Whether `apply_batch` may take this command: everything but the recharges, which call
    /// Ping++ between their own transactions.
    pub fn batchable(kind: CommandType) -> bool {
        !matches!(
            kind,
            CommandType::Recharge | CommandType::RechargeRetrieve | CommandType::CashRetrieve
        )
    }

    /// Applies several batchable commands in one transaction (group commit): one commit, one
    /// fsync, for all of them. Each command is still decided on its own; a rejection is a
    /// result like any other and never fails its neighbours. If the transaction itself fails,
    /// every command is applied again alone, so one bad command can't hold back the others;
    /// each result is then that of the single-command path.
    pub async fn apply_batch(&self, envelopes: &[Envelope]) -> Vec<Result<Applied, DbError>> {
        debug_assert!(envelopes.iter().all(|e| self.takes_in_batch(e.kind)));
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

    async fn apply_in_one_transaction(&self, envelope: &Envelope) -> Result<Applied, DbError> {
        let mut applied = batch::apply_together(self, std::slice::from_ref(envelope)).await?;
        Ok(applied.remove(0))
    }

    /// Claims, decides and stores one command that is not a transfer inside the caller's
    /// transaction, which the caller commits.
    async fn apply_within(
        &self,
        tx: &Transaction<'_>,
        envelope: &Envelope,
    ) -> Result<Applied, DbError> {
        if let Claim::Done(applied) = commands::claim(tx, envelope).await? {
            return Ok(applied);
        }
        let mut system = SystemDeltas::default();
        let result = match self.decide(tx, envelope, &mut system).await? {
            Ok(result) => result,
            Err(rejection) => rejected(envelope, rejection),
        };
        let applied = commands::store(tx, envelope, &result).await?;
        system.apply(tx).await?;
        Ok(applied)
    }

    /// Runs the rules of a claimed command that is not a transfer inside the batch's
    /// transaction; system accounts' balances move in `system`, at the end. A rejection may
    /// leave writes behind in `tx` only if they are harmless to commit; none here do.
    async fn decide(
        &self,
        tx: &Transaction<'_>,
        envelope: &Envelope,
        system: &mut SystemDeltas,
    ) -> Result<Result<CommandResult, Rejection>, DbError> {
        let user = envelope.user_id;
        let data = &envelope.data;
        Ok(match envelope.kind {
            CommandType::Cash => cash_request(tx, envelope, &self.policy, system).await?,
            CommandType::CashApprove => {
                cash_decision(tx, envelope, Decision::Approve, system).await?
            }
            CommandType::CashReject => {
                cash_decision(tx, envelope, Decision::Reject, system).await?
            }
            CommandType::Transform => transform(tx, envelope, &self.policy, system).await?,
            CommandType::OrdersList => match query::orders_page(data) {
                Ok(page) => Ok(succeeded(
                    envelope,
                    None,
                    orders::list(tx, user, &page).await?,
                )),
                Err(rejection) => Err(rejection),
            },
            CommandType::OrdersGet => match query::order_id(data) {
                Ok(id) => match orders::get(tx, user, id).await? {
                    Some(order) => Ok(succeeded(envelope, None, order)),
                    None => Err(query::unknown_order()),
                },
                Err(rejection) => Err(rejection),
            },
            CommandType::CashesList => match query::cashes_page(data) {
                Ok(page) => Ok(succeeded(
                    envelope,
                    None,
                    cashes::list(tx, user, &page).await?,
                )),
                Err(rejection) => Err(rejection),
            },
            CommandType::WalletGet => Ok(succeeded(
                envelope,
                None,
                wallet_info(&summary(tx, user).await?, &self.policy),
            )),
            CommandType::Transfer | CommandType::Reward => {
                unreachable!("transfers are decided by engine::batch")
            }
            CommandType::Recharge | CommandType::RechargeRetrieve => {
                unreachable!("recharges are applied by engine::recharge")
            }
            CommandType::CashRetrieve => unreachable!("cash.retrieve is applied by engine::payout"),
        })
    }
}

fn succeeded(envelope: &Envelope, message: Option<&str>, data: serde_json::Value) -> CommandResult {
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

fn rejected(envelope: &Envelope, rejection: Rejection) -> CommandResult {
    CommandResult::rejected(
        &envelope.id,
        envelope.kind.as_str(),
        envelope.user_id,
        rejection,
    )
}

/// `wallet.get`: the older wallet API's "钱包信息" plus the balances.
fn wallet_info(
    wallet: &crate::db::wallets::WalletSummary,
    policy: &WalletPolicy,
) -> serde_json::Value {
    json!({
        "balance": wallet.balance,
        "total_income": wallet.total_income,
        "total_expenses": wallet.total_expenses,
        "points": wallet.points,
        "labels": policy.labels,
        "ratio": policy.ratio,
        "rule": policy.rule,
        "cash": policy.cash_types,
        "case_min_amount": policy.cash_min,
        "recharge_type": policy.recharge_types,
    })
}

async fn cash_request(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
    system: &mut SystemDeltas,
) -> Result<Result<CommandResult, Rejection>, DbError> {
    let request = match cash::parse_request(envelope.user_id, &envelope.data, policy) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let wallets = lock_wallets(tx, &[request.user]).await?;
    let figures = wallets
        .get(&request.user)
        .map_or_else(Default::default, |w| w.figures);
    let journal = match cash::decide_request(&request, figures) {
        Ok(journal) => journal,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let journal_id = post_one(tx, "cash", &envelope.id, &journal, &wallets, system).await?;
    let cash_id = cashes::insert(tx, &request, &envelope.id).await?;
    let order = insert_orders(
        tx,
        Some(&envelope.id),
        Some(journal_id),
        &[cash::request_order(&request, cash_id)],
    )
    .await?
    .remove(0);
    let order_id = order["id"]
        .as_i64()
        .ok_or_else(|| DbError::Fatal("an order without an id".into()))?;
    cashes::link_order(tx, cash_id, order_id).await?;
    let cash = cashes::get_json(tx, cash_id).await?;
    Ok(Ok(succeeded(
        envelope,
        Some(cash::MSG_REQUESTED),
        json!({ "cash": cash, "order": order }),
    )))
}

async fn cash_decision(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    decision: Decision,
    system: &mut SystemDeltas,
) -> Result<Result<CommandResult, Rejection>, DbError> {
    let request = match cash::parse_decision(decision, &envelope.data) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let Some(locked) = cashes::lock(tx, request.cash_id).await? else {
        return Ok(Err(Rejection::field(
            Code::UnknownCash,
            "cash",
            cash::MSG_UNKNOWN_CASH,
        )));
    };
    match cash::decide(decision, locked.status, locked.owner, locked.value) {
        Err(rejection) => return Ok(Err(rejection)),
        Ok(DecisionEffect::AlreadyDone) => {}
        Ok(DecisionEffect::Apply(journal)) => {
            // Only a rejection touches a wallet; lock it all the same so the lock order
            // (cash, then wallet) is the same for both.
            let wallets = lock_wallets(tx, &[locked.owner]).await?;
            post_one(
                tx,
                envelope.kind.as_str(),
                &envelope.id,
                &journal,
                &wallets,
                system,
            )
            .await?;
            cashes::decide(
                tx,
                &locked,
                decision.status(),
                decision.order_state(),
                &request.remark,
                envelope.user_id,
                &envelope.id,
            )
            .await?;
        }
    }
    let cash = cashes::get_json(tx, locked.id).await?;
    Ok(Ok(succeeded(
        envelope,
        Some(decision.success_message()),
        json!({ "cash": cash }),
    )))
}

async fn transform(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
    system: &mut SystemDeltas,
) -> Result<Result<CommandResult, Rejection>, DbError> {
    let request = match transform::parse(envelope.user_id, &envelope.data, policy) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let wallets = lock_wallets(tx, &[request.user]).await?;
    let figures = wallets
        .get(&request.user)
        .map_or_else(Default::default, |w| w.figures);
    let points = lock_points(tx, request.user).await?;
    let journal = match transform::decide(&request, figures, points) {
        Ok(journal) => journal,
        Err(rejection) => return Ok(Err(rejection)),
    };
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

/// Posts one command's journal; system accounts move in `system`, at the end.
async fn post_one(
    tx: &Transaction<'_>,
    kind: &str,
    command_id: &str,
    journal: &Journal,
    wallets: &BTreeMap<i64, LockedWallet>,
    system: &mut SystemDeltas,
) -> Result<i64, DbError> {
    let draft = JournalDraft {
        kind,
        command_id: Some(command_id),
        journal,
    };
    Ok(post_journals(tx, &[draft], wallets, system).await?[0])
}
