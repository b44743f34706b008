//! Storing the ledger: locking wallets, posting journals, writing orders.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Transaction;
use serde_json::Value;

use crate::domain::ledger::{AccountRef, Journal, WalletFigures};
use crate::domain::order::OrderDraft;
use crate::error::EngineError;

/// A wallet row, locked for the rest of the transaction.
#[derive(Debug, Clone, Copy)]
pub struct LockedWallet {
    pub account_id: i64,
    pub figures: WalletFigures,
    /// Frozen by an operator: the wallet sends nothing.
    pub frozen: bool,
    /// The wallet's version (its entry count, migrations/0020): the version of its last entry.
    pub version: i64,
}

/// Locks the wallets of `users` (creating the missing ones empty), always in user id order so
/// two commands touching the same wallets can't deadlock each other.
pub async fn lock_wallets(
    tx: &Transaction<'_>,
    users: &[i64],
) -> Result<BTreeMap<i64, LockedWallet>, EngineError> {
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    const LOCK: &str =
        "SELECT user_id, id, balance, total_income, total_expenses, frozen, entry_count
        FROM accounts
        WHERE kind = 'wallet' AND user_id = ANY($1) ORDER BY user_id FOR UPDATE";
    let read = |rows: Vec<tokio_postgres::Row>| {
        rows.into_iter()
            .map(|r| {
                (
                    r.get::<_, i64>("user_id"),
                    LockedWallet {
                        account_id: r.get("id"),
                        figures: WalletFigures {
                            balance: r.get("balance"),
                            total_income: r.get("total_income"),
                            total_expenses: r.get("total_expenses"),
                        },
                        frozen: r.get("frozen"),
                        version: r.get("entry_count"),
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

/// Locks the merchant account of `user`'s sub-merchant (creating it empty), for a journal that
/// moves it; its balance, as a wallet's, can never go below zero.
pub async fn lock_merchant(tx: &Transaction<'_>, user: i64) -> Result<i64, EngineError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO accounts (kind, user_id, unit) VALUES ('merchant', $1, 'fen')
             ON CONFLICT (kind, user_id) DO NOTHING",
        )
        .await?,
        &[&user],
    )
    .await?;
    Ok(tx
        .query_one(
            &tx.prepare_cached(
                "SELECT balance FROM accounts WHERE kind = 'merchant' AND user_id = $1 FOR UPDATE",
            )
            .await?,
            &[&user],
        )
        .await?
        .get(0))
}

/// Writes a journal and its entries and moves the balances, system accounts included.
pub async fn post_journal(
    tx: &Transaction<'_>,
    kind: &str,
    command_id: Option<&str>,
    journal: &Journal,
    wallets: &BTreeMap<i64, LockedWallet>,
) -> Result<i64, EngineError> {
    let mut system = SystemDeltas::default();
    let draft = JournalDraft {
        kind,
        command_id,
        journal,
    };
    let id = post_journals(tx, &[draft], wallets, &mut system).await?[0];
    system.apply(tx).await?;
    Ok(id)
}

/// A journal to post, with what it is for.
pub struct JournalDraft<'a> {
    pub kind: &'a str,
    pub command_id: Option<&'a str>,
    pub journal: &'a Journal,
}

/// The balance changes of shared system accounts, held back until `apply` just before the
/// commit: every transaction through such an account (each cash request, each transform) then
/// holds that row's lock for one statement and the commit, not for the rest of its work.
#[derive(Debug, Default)]
pub struct SystemDeltas {
    by_name: BTreeMap<&'static str, Totals>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    delta: i64,
    income: i64,
    expenses: i64,
    entries: i64,
}

impl Totals {
    fn add(&mut self, amount: i64) -> Result<(), EngineError> {
        let overflow = || EngineError::Broken("a system account's change overflows".into());
        self.entries += 1;
        self.delta = self.delta.checked_add(amount).ok_or_else(overflow)?;
        if amount > 0 {
            self.income = self.income.checked_add(amount).ok_or_else(overflow)?;
        } else {
            self.expenses = self.expenses.checked_sub(amount).ok_or_else(overflow)?;
        }
        Ok(())
    }
}

impl SystemDeltas {
    /// Moves the held-back balances, one account after the other in name order (the same
    /// order in every transaction, so two of them can't deadlock), pipelined.
    pub async fn apply(self, tx: &Transaction<'_>) -> Result<(), EngineError> {
        if self.by_name.is_empty() {
            return Ok(());
        }
        let update = tx
            .prepare_cached(
                "UPDATE accounts SET balance = balance + $2, total_income = total_income + $3,
                    total_expenses = total_expenses + $4, entry_count = entry_count + $5,
                    updated_at = now()
                 WHERE name = $1",
            )
            .await?;
        let updates = self.by_name.iter().map(|(name, t)| {
            let update = &update;
            async move {
                tx.execute(
                    update,
                    &[name, &t.delta, &t.income, &t.expenses, &t.entries],
                )
                .await
            }
        });
        for updated in futures_util::future::join_all(updates).await {
            if updated? != 1 {
                return Err(EngineError::Broken("a system account is missing".into()));
            }
        }
        Ok(())
    }
}

/// Writes journals and their entries in one statement whatever their number, and moves the
/// balances of wallets and points at once, each account once by its summed change, giving
/// each entry of a user's account its version, the balance after it and its chained hash;
/// system accounts' changes go to `system`. Wallets must be in `wallets` (locked). Returns the
/// journals' ids in the order given.
pub async fn post_journals(
    tx: &Transaction<'_>,
    drafts: &[JournalDraft<'_>],
    wallets: &BTreeMap<i64, LockedWallet>,
    system: &mut SystemDeltas,
) -> Result<Vec<i64>, EngineError> {
    let kinds: Vec<&str> = drafts.iter().map(|d| d.kind).collect();
    let command_ids: Vec<Option<&str>> = drafts.iter().map(|d| d.command_id).collect();
    let mut entry_journals: Vec<i64> = Vec::new();
    let mut entry_accounts: Vec<Option<i64>> = Vec::new();
    let mut entry_systems: Vec<Option<&str>> = Vec::new();
    let mut entry_user_kinds: Vec<Option<&str>> = Vec::new();
    let mut entry_users: Vec<Option<i64>> = Vec::new();
    let mut entry_amounts = Vec::new();
    for (position, draft) in (1..).zip(drafts) {
        for (account, amount) in draft.journal.entries() {
            let (wallet, system_name, of_user) = match account {
                AccountRef::Wallet(user) => {
                    let wallet = wallets.get(&user).ok_or_else(|| {
                        EngineError::Broken(format!("wallet of user {user} was not locked"))
                    })?;
                    (Some(wallet.account_id), None, None)
                }
                AccountRef::System(account) => {
                    system
                        .by_name
                        .entry(account.name())
                        .or_default()
                        .add(amount)?;
                    (None, Some(account.name()), None)
                }
                // Created before (`lock_points`, `lock_merchant`, `ensure_user_accounts`) by
                // a transaction that holds the user's wallet or the account itself.
                other => (None, None, other.of_user()),
            };
            entry_journals.push(position);
            entry_accounts.push(wallet);
            entry_systems.push(system_name);
            entry_user_kinds.push(of_user.map(|(kind, _)| kind));
            entry_users.push(of_user.map(|(_, user)| user));
            entry_amounts.push(amount);
        }
    }
    // A journal's time is when it is posted, not when its transaction began (`now()`): the
    // accounts are locked by then, so each account's entries are in time order as they are in
    // version order, which balances at a time and statements rely on (db::history).
    // `pg_current_xact_id()` gives the transaction its id before it takes journal ids, which
    // the incremental audit relies on (`audit::settle_point`).
    // Entries name their journal by its position among the drafts; identity ids follow
    // insertion order, which follows the drafts, so position n is the n-th smallest new id.
    // Each entry of a user's account is that account's next version (migrations/0020): its
    // entry count and balance before this statement (this statement's snapshot; the rows are
    // locked, so nothing else moves them) plus its rank and running sum among the statement's
    // entries of the account, in journal order. System accounts' entries get no version (the
    // left join finds no row for them, so both stay NULL).
    // Each versioned entry's hash chains onto the one before it of the same account
    // (migrations/0021): the first of the statement's entries of an account onto the account
    // row's head_hash, the next ones onto each other, by the running aggregate `ledger_chain`
    // in the same order as the versions (one sort for both windows); the account's new head
    // is the hash of its last one. System accounts' entries have no version, hence no hash
    // (the text hashed is NULL). Nothing is updated after the insert, so the audit's trigger
    // on changed entries stays quiet.
    // The unique index on (account_id, version) turns a posting that raced another on the
    // same account without its lock into an error, never into two entries of one version.
    let rows = tx
        .query(
            &tx.prepare_cached(
                "WITH j AS (
                    INSERT INTO journal (kind, command_id, created_at)
                    SELECT k, c, clock_timestamp()
                    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(k, c, n)
                    WHERE pg_current_xact_id() IS NOT NULL
                    ORDER BY n RETURNING id
                 ), jn AS (
                    SELECT id, row_number() OVER (ORDER BY id) AS n FROM j
                 ), e AS (
                    SELECT jn.id AS j, u.d, u.s IS NULL AS moves_now,
                           coalesce(u.a, (SELECT id FROM accounts WHERE name = u.s),
                                    (SELECT id FROM accounts
                                     WHERE kind = u.k AND user_id = u.p)) AS a
                    FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bigint[],
                                $8::bigint[])
                        AS u(n, a, s, k, p, d)
                    JOIN jn ON jn.n = u.n
                 ), v AS (
                    SELECT e.j, e.a, e.d, e.moves_now, c.head_hash AS head,
                           c.entry_count + row_number() OVER w AS version,
                           (c.balance + sum(e.d) OVER w)::bigint AS balance_after
                    FROM e LEFT JOIN accounts c ON c.id = e.a AND e.moves_now
                    WINDOW w AS (PARTITION BY e.a ORDER BY e.j
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                 ), h AS (
                    SELECT v.j, v.a, v.d, v.moves_now, v.version, v.balance_after,
                           ledger_chain(v.head, v.a, v.version, v.d, v.balance_after, v.j)
                               OVER (PARTITION BY v.a ORDER BY v.j
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS hash
                    FROM v
                 ), inserted AS (
                    INSERT INTO ledger_entries (journal_id, account_id, amount, version,
                                                balance_after, hash)
                    SELECT j, a, d, version, balance_after, hash FROM h
                 ), moved AS (
                    UPDATE accounts SET
                        balance = balance + t.d,
                        total_income = total_income + t.income,
                        total_expenses = total_expenses + t.expenses,
                        entry_count = entry_count + t.n,
                        head_hash = t.head,
                        updated_at = now()
                    FROM (SELECT a, sum(d)::bigint AS d, sum(greatest(d, 0))::bigint AS income,
                                 sum(greatest(-d, 0))::bigint AS expenses, count(*) AS n,
                                 (array_agg(hash ORDER BY version DESC))[1] AS head
                          FROM h WHERE moves_now GROUP BY a) AS t
                    WHERE accounts.id = t.a
                 )
                 SELECT id FROM jn ORDER BY n",
            )
            .await?,
            &[
                &kinds,
                &command_ids,
                &entry_journals,
                &entry_accounts,
                &entry_systems,
                &entry_user_kinds,
                &entry_users,
                &entry_amounts,
            ],
        )
        .await?;
    if rows.len() != drafts.len() {
        return Err(EngineError::Broken(format!(
            "{} journals written for {}",
            rows.len(),
            drafts.len()
        )));
    }
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Inserts orders and returns them in the wallet API's JSON shape, in the order given.
pub async fn insert_orders(
    tx: &Transaction<'_>,
    command_id: Option<&str>,
    journal_id: Option<i64>,
    drafts: &[OrderDraft],
) -> Result<Vec<Value>, EngineError> {
    let drafts: Vec<(Option<&str>, Option<i64>, &OrderDraft)> =
        drafts.iter().map(|d| (command_id, journal_id, d)).collect();
    insert_orders_of(tx, &drafts).await
}

/// Inserts the orders of several commands in one statement (each with its command and
/// journal) and returns them in the wallet API's JSON shape, in the order given. An order
/// with a journal names its command through the journal only: the same id twice in a row is
/// forty-odd bytes per order for nothing.
pub async fn insert_orders_of(
    tx: &Transaction<'_>,
    drafts: &[(Option<&str>, Option<i64>, &OrderDraft)],
) -> Result<Vec<Value>, EngineError> {
    let column =
        |f: fn(&OrderDraft) -> Option<String>| drafts.iter().map(|d| f(d.2)).collect::<Vec<_>>();
    let owners: Vec<i64> = drafts.iter().map(|d| d.2.owner_id).collect();
    let target_types = column(|d| Some(d.target_type.to_owned()));
    let target_ids = column(|d| Some(d.target_id.clone()));
    let titles = column(|d| Some(d.title.to_owned()));
    let bodies = column(|d| d.body.clone());
    let directions: Vec<i16> = drafts.iter().map(|d| d.2.direction).collect();
    let amounts: Vec<i64> = drafts.iter().map(|d| d.2.amount).collect();
    let states: Vec<i16> = drafts.iter().map(|d| d.2.state.code()).collect();
    let command_ids: Vec<Option<&str>> = drafts.iter().map(|d| d.0).collect();
    let journal_ids: Vec<Option<i64>> = drafts.iter().map(|d| d.1).collect();
    let rows = tx
        .query(&tx.prepare_cached("INSERT INTO wallet_orders
                (owner_id, target_type, target_id, title, body, type, amount, state, command_id, journal_id)
             SELECT o, tt, ti, t, b, d, a, s, CASE WHEN j IS NULL THEN c END, j
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::smallint[], $7::bigint[], $8::smallint[], $9::text[], $10::bigint[])
                  WITH ORDINALITY AS u(o, tt, ti, t, b, d, a, s, c, j, n)
             ORDER BY n
             RETURNING id, order_json(wallet_orders) AS json").await?,
            &[
                &owners,
                &target_types,
                &target_ids,
                &titles,
                &bodies,
                &directions,
                &amounts,
                &states,
                &command_ids,
                &journal_ids,
            ],
        )
        .await?;
    // Identity ids follow insertion order, which follows the drafts.
    let mut rows: Vec<(i64, Value)> = rows
        .into_iter()
        .map(|r| (r.get("id"), r.get("json")))
        .collect();
    rows.sort_by_key(|(id, _)| *id);
    Ok(rows.into_iter().map(|(_, order)| order).collect())
}

/// Locks the points accounts of `users` (creating the missing ones empty), in user order, and
/// returns their balances by user; for journals that move them under the users' wallet locks.
pub async fn lock_points(
    tx: &Transaction<'_>,
    users: &[i64],
) -> Result<HashMap<i64, i64>, EngineError> {
    let mut users = users.to_vec();
    users.sort_unstable();
    users.dedup();
    const LOCK: &str = "SELECT user_id, balance FROM accounts
                        WHERE kind = 'points' AND user_id = ANY($1) ORDER BY user_id FOR UPDATE";
    let read = |rows: Vec<tokio_postgres::Row>| -> HashMap<i64, i64> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let locked = read(tx.query(&tx.prepare_cached(LOCK).await?, &[&users]).await?);
    if locked.len() == users.len() {
        return Ok(locked);
    }
    let missing: Vec<AccountRef> = users
        .iter()
        .filter(|u| !locked.contains_key(u))
        .map(|&u| AccountRef::Points(u))
        .collect();
    ensure_user_accounts(tx, &missing).await?;
    Ok(read(
        tx.query(&tx.prepare_cached(LOCK).await?, &[&users]).await?,
    ))
}

/// Makes sure users' accounts other than their wallets (held, packets) exist, for journals
/// that move them under the users' wallet locks: one statement, which writes nothing when they
/// do.
pub async fn ensure_user_accounts(
    tx: &Transaction<'_>,
    accounts: &[AccountRef],
) -> Result<(), EngineError> {
    let mut kinds = Vec::with_capacity(accounts.len());
    let mut users = Vec::with_capacity(accounts.len());
    for account in accounts {
        let Some((kind, user)) = account.of_user() else {
            return Err(EngineError::Broken(format!(
                "{account:?} is not a user's account"
            )));
        };
        kinds.push(kind);
        users.push(user);
    }
    if accounts.is_empty() {
        return Ok(());
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO accounts (kind, user_id, unit)
             SELECT k, u, CASE WHEN k = 'points' THEN 'point' ELSE 'fen' END
             FROM unnest($1::text[], $2::bigint[]) AS a(k, u) ORDER BY k, u
             ON CONFLICT (kind, user_id) DO NOTHING",
        )
        .await?,
        &[&kinds, &users],
    )
    .await?;
    Ok(())
}

/// A user's wallet, points and held money as `wallet.get` shows them; all zero before the first
/// movement.
pub async fn summary(tx: &Transaction<'_>, user: i64) -> Result<WalletSummary, EngineError> {
    let row = tx
        .query_one(
            "SELECT coalesce(max(balance) FILTER (WHERE kind = 'wallet'), 0) AS balance,
                    coalesce(max(total_income) FILTER (WHERE kind = 'wallet'), 0) AS total_income,
                    coalesce(max(total_expenses) FILTER (WHERE kind = 'wallet'), 0)
                        AS total_expenses,
                    coalesce(max(balance) FILTER (WHERE kind = 'points'), 0) AS points,
                    coalesce(max(balance) FILTER (WHERE kind = 'held'), 0) AS held,
                    coalesce(max(entry_count) FILTER (WHERE kind = 'wallet'), 0) AS version
             FROM accounts WHERE user_id = $1 AND kind IN ('wallet', 'points', 'held')",
            &[&user],
        )
        .await?;
    Ok(WalletSummary {
        balance: row.get("balance"),
        total_income: row.get("total_income"),
        total_expenses: row.get("total_expenses"),
        points: row.get("points"),
        held: row.get("held"),
        version: row.get("version"),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletSummary {
    pub balance: i64,
    pub total_income: i64,
    pub total_expenses: i64,
    pub points: i64,
    /// In open holds: out of the balance until captured, released or expired.
    pub held: i64,
    /// The wallet's version: how many entries have moved it, which is the version of the last
    /// one (0 before the first).
    pub version: i64,
}

/// One version of a user's account as `wallet.changes` answers it and `wallet.changed` carries
/// it, over `ledger_entries e JOIN accounts a`: `order` is the user's wallet order of the
/// journal (the first, should there be several), null when there is none. Once the journal is
/// committed nothing here changes, so a version reads the same every time.
macro_rules! change_json {
    () => {
        "json_build_object('user', a.user_id, 'unit', a.unit, 'version', e.version,
                'balance', e.balance_after, 'amount', e.amount, 'journal', e.journal_id,
                'order', (SELECT min(o.id) FROM wallet_orders o
                          WHERE o.journal_id = e.journal_id AND o.owner_id = a.user_id))"
    };
}
pub(crate) use change_json;

/// `wallet.changes`: the entries of `user`'s wallet (or points account: `account_kind`
/// `points`) after version `since`, in version order, at most `limit`, each with the balance
/// after it and the user's wallet order of its journal (null for a journal without one, such
/// as a test's funding).
pub async fn wallet_changes(
    tx: &Transaction<'_>,
    user: i64,
    account_kind: &str,
    since: i64,
    limit: i64,
) -> Result<Vec<Value>, EngineError> {
    let rows = tx
        .query(
            &tx.prepare_cached(concat!(
                "SELECT ",
                change_json!(),
                " FROM accounts a JOIN ledger_entries e ON e.account_id = a.id
                 WHERE a.kind = $4 AND a.user_id = $1 AND e.version > $2
                 ORDER BY e.version LIMIT $3"
            ))
            .await?,
            &[&user, &since, &limit, &account_kind],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
