//! The reads: `orders.list`, `orders.get`, `cashes.list`, `charges.list`, `charges.get` and
//! `wallet.get` (now or at a time), in the wallet API's shapes, `wallet.changes`,
//! `wallet.statement` and `wallet.proof`. They run in the batch's transaction and, like every
//! command, keep their result under their id.

use deadpool_postgres::Transaction;
use serde_json::json;

use crate::db::ledger::{summary, wallet_changes};
use crate::db::{self, cashes, chains, charge_records, orders};
use crate::domain::command::{CommandType, Envelope};
use crate::domain::history;
use crate::domain::outcome::{CommandResult, Rejection};
use crate::domain::policy::WalletPolicy;
use crate::domain::query;
use crate::engine::succeeded;
use crate::error::EngineError;

/// Answers a read command.
pub(crate) async fn answer(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    policy: &WalletPolicy,
) -> Result<Result<CommandResult, Rejection>, EngineError> {
    let user = envelope.user_id;
    let data = &envelope.data;
    Ok(match envelope.kind {
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
        CommandType::ChargesList => match query::charges_page(data) {
            Ok(page) => Ok(succeeded(
                envelope,
                None,
                charge_records::list(tx, user, &page).await?,
            )),
            Err(rejection) => Err(rejection),
        },
        CommandType::ChargesGet => match query::charge_id(data) {
            Ok(id) => match charge_records::get(tx, user, id).await? {
                Some(record) => Ok(succeeded(envelope, None, record)),
                None => Err(query::unknown_charge()),
            },
            Err(rejection) => Err(rejection),
        },
        CommandType::WalletGet => match history::wallet_at(data) {
            Ok(None) => Ok(succeeded(
                envelope,
                None,
                wallet_info(&summary(tx, user).await?, policy),
            )),
            Ok(Some(at)) => Ok(succeeded(
                envelope,
                None,
                db::history::wallet_at(tx, user, &at).await?,
            )),
            Err(rejection) => Err(rejection),
        },
        CommandType::WalletChanges => match query::changes_page(data) {
            Ok(page) => Ok(succeeded(
                envelope,
                None,
                json!({
                    "changes": wallet_changes(tx, user, page.unit.account_kind(), page.since, page.limit).await?,
                }),
            )),
            Err(rejection) => Err(rejection),
        },
        CommandType::WalletStatement => match history::statement_period(data) {
            Ok(period) => match db::history::statement(tx, user, &period).await? {
                Some(statement) => Ok(succeeded(envelope, None, statement)),
                None => Err(history::statement_too_long()),
            },
            Err(rejection) => Err(rejection),
        },
        CommandType::WalletProof => match query::proof_day(data) {
            Ok(day) => match chains::wallet_proof(tx, user, &day).await? {
                chains::Proof::Found(proof) => Ok(succeeded(envelope, None, proof)),
                chains::Proof::NoRoot => Err(query::root_not_found()),
                chains::Proof::NotInRoot => Err(query::wallet_not_in_root()),
            },
            Err(rejection) => Err(rejection),
        },
        other => {
            return Err(EngineError::Broken(format!(
                "{} is not a read command",
                other.as_str()
            )))
        }
    })
}

/// `wallet.get`: the older wallet API's "钱包信息" plus the balances.
fn wallet_info(
    wallet: &crate::db::ledger::WalletSummary,
    policy: &WalletPolicy,
) -> serde_json::Value {
    json!({
        "balance": wallet.balance,
        "held": wallet.held,
        "total_income": wallet.total_income,
        "total_expenses": wallet.total_expenses,
        "points": wallet.points,
        "version": wallet.version,
        "labels": policy.labels,
        "ratio": policy.ratio,
        "rule": policy.rule,
        "cash": policy.cash_types,
        "case_min_amount": policy.cash_min,
        "recharge_type": policy.recharge_types,
    })
}
