//! Storing the ledger: locking wallets, posting journals, writing orders.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use serde_json::Value;

use super::DbError;
use crate::domain::ledger::{AccountRef, Journal};
use crate::domain::transfer::OrderDraft;

/// A wallet row, locked for the rest of the transaction.
#[derive(Debug, Clone, Copy)]
pub struct LockedWallet {
    pub account_id: i64,
    pub balance: i64,
}

/// Locks the wallets of `users` (creating the missing ones empty), always in user id order so
/// two commands touching the same wallets can't deadlock each other.
pub async fn lock_wallets(
    tx: &Transaction<'_>,
    users: &[i64],
) -> Result<BTreeMap<i64, LockedWallet>, DbError> {
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    const LOCK: &str = "SELECT user_id, id, balance FROM accounts
        WHERE kind = 'wallet' AND user_id = ANY($1) ORDER BY user_id FOR UPDATE";
    let read = |rows: Vec<tokio_postgres::Row>| {
        rows.into_iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0),
                    LockedWallet {
                        account_id: r.get(1),
                        balance: r.get(2),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let locked = read(tx.query(&tx.prepare_cached(LOCK).await?, &[&users]).await?);
    if locked.len() == users.len() {
        return Ok(locked);
    }
    let missing: Vec<i64> = users
        .iter()
        .copied()
        .filter(|u| !locked.contains_key(u))
        .collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO accounts (kind, user_id, unit)
         SELECT 'wallet', u, 'fen' FROM unnest($1::bigint[]) AS u ORDER BY u
         ON CONFLICT (kind, user_id) DO NOTHING",
        )
        .await?,
        &[&missing],
    )
    .await?;
    Ok(read(
        tx.query(&tx.prepare_cached(LOCK).await?, &[&users]).await?,
    ))
}

/// Writes a journal and its entries and moves the balances, in two statements. Account ids of
/// wallets come from `wallets`; system accounts are looked up by name.
pub async fn post_journal(
    tx: &Transaction<'_>,
    kind: &str,
    command_id: Option<&str>,
    journal: &Journal,
    wallets: &BTreeMap<i64, LockedWallet>,
) -> Result<i64, DbError> {
    let mut account_ids = Vec::new();
    let mut amounts = Vec::new();
    for (account, amount) in journal.entries() {
        let id = match account {
            AccountRef::Wallet(user) => wallets
                .get(&user)
                .map(|w| w.account_id)
                .ok_or_else(|| DbError::Fatal(format!("wallet of user {user} was not locked")))?,
            AccountRef::Points(user) => tx
                .query_one(
                    &tx.prepare_cached(
                        "SELECT id FROM accounts WHERE kind = 'points' AND user_id = $1",
                    )
                    .await?,
                    &[&user],
                )
                .await?
                .get(0),
            AccountRef::System(system) => tx
                .query_one(
                    &tx.prepare_cached("SELECT id FROM accounts WHERE name = $1")
                        .await?,
                    &[&system.name()],
                )
                .await?
                .get(0),
        };
        account_ids.push(id);
        amounts.push(amount);
    }
    let journal_id: i64 = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO journal (kind, command_id) VALUES ($1, $2) RETURNING id",
            )
            .await?,
            &[&kind, &command_id],
        )
        .await?
        .get(0);
    tx.execute(
        &tx.prepare_cached(
            "WITH entries AS (
            INSERT INTO ledger_entries (journal_id, account_id, amount)
            SELECT $1, a, d FROM unnest($2::bigint[], $3::bigint[]) AS u(a, d))
         UPDATE accounts SET
            balance = balance + u.d,
            total_income = total_income + greatest(u.d, 0),
            total_expenses = total_expenses + greatest(-u.d, 0),
            updated_at = now()
         FROM unnest($2::bigint[], $3::bigint[]) AS u(a, d)
         WHERE accounts.id = u.a",
        )
        .await?,
        &[&journal_id, &account_ids, &amounts],
    )
    .await?;
    Ok(journal_id)
}

/// Inserts orders and returns them in the seeds' JSON shape, in the order given.
pub async fn insert_orders(
    tx: &Transaction<'_>,
    command_id: Option<&str>,
    journal_id: Option<i64>,
    drafts: &[OrderDraft],
) -> Result<Vec<Value>, DbError> {
    let column = |f: fn(&OrderDraft) -> Option<String>| drafts.iter().map(f).collect::<Vec<_>>();
    let owners: Vec<i64> = drafts.iter().map(|d| d.owner_id).collect();
    let target_types = column(|d| Some(d.target_type.to_owned()));
    let target_ids = column(|d| Some(d.target_id.clone()));
    let titles = column(|d| Some(d.title.to_owned()));
    let bodies = column(|d| d.body.clone());
    let directions: Vec<i16> = drafts.iter().map(|d| d.direction).collect();
    let amounts: Vec<i64> = drafts.iter().map(|d| d.amount).collect();
    let states: Vec<i16> = drafts.iter().map(|d| d.state).collect();
    let rows = tx
        .query(&tx.prepare_cached("INSERT INTO wallet_orders
                (owner_id, target_type, target_id, title, body, type, amount, state, command_id, journal_id)
             SELECT o, tt, ti, t, b, d, a, s, $9, $10
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::smallint[], $7::bigint[], $8::smallint[])
                  WITH ORDINALITY AS u(o, tt, ti, t, b, d, a, s, n)
             ORDER BY n
             RETURNING id, order_json(wallet_orders)").await?,
            &[
                &owners,
                &target_types,
                &target_ids,
                &titles,
                &bodies,
                &directions,
                &amounts,
                &states,
                &command_id,
                &journal_id,
            ],
        )
        .await?;
    // Identity ids follow insertion order, which follows the drafts.
    let mut rows: Vec<(i64, Value)> = rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
    rows.sort_by_key(|(id, _)| *id);
    Ok(rows.into_iter().map(|(_, order)| order).collect())
}

/// Locks the user's points account (creating it empty) and returns its balance.
pub async fn lock_points(tx: &Transaction<'_>, user: i64) -> Result<i64, DbError> {
    const LOCK: &str =
        "SELECT balance FROM accounts WHERE kind = 'points' AND user_id = $1 FOR UPDATE";
    if let Some(row) = tx
        .query_opt(&tx.prepare_cached(LOCK).await?, &[&user])
        .await?
    {
        return Ok(row.get(0));
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO accounts (kind, user_id, unit) VALUES ('points', $1, 'point')
         ON CONFLICT (kind, user_id) DO NOTHING",
        )
        .await?,
        &[&user],
    )
    .await?;
    Ok(tx
        .query_one(&tx.prepare_cached(LOCK).await?, &[&user])
        .await?
        .get(0))
}

/// A user's wallet and points as `wallet.get` shows them; all zero before the first movement.
pub async fn summary(tx: &Transaction<'_>, user: i64) -> Result<WalletSummary, DbError> {
    let row = tx
        .query_one(
            "SELECT coalesce(max(balance) FILTER (WHERE kind = 'wallet'), 0),
                    coalesce(max(total_income) FILTER (WHERE kind = 'wallet'), 0),
                    coalesce(max(total_expenses) FILTER (WHERE kind = 'wallet'), 0),
                    coalesce(max(balance) FILTER (WHERE kind = 'points'), 0)
             FROM accounts WHERE user_id = $1 AND kind IN ('wallet', 'points')",
            &[&user],
        )
        .await?;
    Ok(WalletSummary {
        balance: row.get(0),
        total_income: row.get(1),
        total_expenses: row.get(2),
        points: row.get(3),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletSummary {
    pub balance: i64,
    pub total_income: i64,
    pub total_expenses: i64,
    pub points: i64,
}
