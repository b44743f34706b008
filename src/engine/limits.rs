//! Daily limits inside the transaction that moves the money: the limits that apply to a batch's
//! senders and their usage today are read once, each command is admitted against them in
//! memory as the batch decides it (so two commands of one batch cannot pass a limit together),
//! and the new usage is written before the commit. The senders' wallets are locked first: two
//! transactions admitting the same user wait for each other.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::Transaction;

use crate::db::ledger::{lock_wallets, LockedWallet};
use crate::db::limits as stored;
use crate::domain::command::CommandType;
use crate::domain::ledger::WalletFigures;
use crate::domain::limits::{self, DailyLimit, Usage};
use crate::domain::outcome::Rejection;
use crate::domain::policy::WalletPolicy;
use crate::error::EngineError;

/// Users' own limits by (user, command type name).
pub(crate) type OwnLimits = HashMap<(i64, String), DailyLimit>;

pub(crate) struct Limits {
    applying: HashMap<(i64, CommandType), (DailyLimit, Usage)>,
    admitted: HashSet<(i64, CommandType)>,
    offset_hours: i32,
}

impl Limits {
    /// The users' own limits that may apply to these (sender, type) pairs; no statement when
    /// none of the types takes a limit. A plain read: it may be pipelined with the wallet locks.
    pub async fn own_limits(
        tx: &Transaction<'_>,
        pairs: &[(i64, CommandType)],
    ) -> Result<OwnLimits, EngineError> {
        let mut users: Vec<i64> = pairs
            .iter()
            .filter(|(_, kind)| limits::limitable(*kind).is_some())
            .map(|p| p.0)
            .collect();
        if users.is_empty() {
            return Ok(OwnLimits::new());
        }
        users.sort_unstable();
        users.dedup();
        stored::own_limits(tx, &users).await
    }

    /// The limits on these (sender, type) pairs, a user's own (from `own_limits`) before the
    /// settings', and what each sender used today. Pairs no limit applies to are left out:
    /// they pass.
    pub async fn load_with(
        tx: &Transaction<'_>,
        policy: &WalletPolicy,
        pairs: &[(i64, CommandType)],
        own: &OwnLimits,
    ) -> Result<Limits, EngineError> {
        let mut limits = Limits {
            applying: HashMap::new(),
            admitted: HashSet::new(),
            offset_hours: policy.day_offset_hours,
        };
        let limited: Vec<((i64, CommandType), DailyLimit)> = pairs
            .iter()
            .copied()
            .filter(|(_, kind)| limits::limitable(*kind).is_some())
            .collect::<HashSet<_>>()
            .into_iter()
            .filter_map(|(user, kind)| {
                own.get(&(user, kind.as_str().to_owned()))
                    .copied()
                    .or_else(|| policy.daily_limit(kind))
                    .filter(|limit| !limit.is_none())
                    .map(|limit| ((user, kind), limit))
            })
            .collect();
        if limited.is_empty() {
            return Ok(limits);
        }
        let keys: Vec<(i64, CommandType)> = limited.iter().map(|(pair, _)| *pair).collect();
        let usage = stored::usage_today(tx, &keys, policy.day_offset_hours).await?;
        for (pair, limit) in limited {
            let used = usage.get(&pair).copied().unwrap_or_default();
            limits.applying.insert(pair, (limit, used));
        }
        Ok(limits)
    }

    /// Admits one more command of `amount` from `user`, counting it when it passes.
    pub fn admit(&mut self, user: i64, kind: CommandType, amount: i64) -> Result<(), Rejection> {
        let Some((limit, usage)) = self.applying.get_mut(&(user, kind)) else {
            return Ok(());
        };
        limits::admit(kind, limit, *usage, amount)?;
        usage.count += 1;
        usage.amount = usage.amount.saturating_add(amount);
        self.admitted.insert((user, kind));
        Ok(())
    }

    /// Writes the usage of every pair a command was admitted on.
    pub async fn record(self, tx: &Transaction<'_>) -> Result<(), EngineError> {
        let usage: Vec<((i64, CommandType), Usage)> = self
            .admitted
            .iter()
            .map(|pair| (*pair, self.applying[pair].1))
            .collect();
        stored::record_usage(tx, &usage, self.offset_hours).await
    }
}

/// Whether the sender's wallet, as locked, may send: a frozen one sends nothing.
pub(crate) fn may_send(wallet: Option<&LockedWallet>) -> Result<(), Rejection> {
    limits::not_frozen(wallet.is_some_and(|w| w.frozen))
}

/// A command of a batch that sends from `user`'s wallet, decided in memory against the wallets
/// the batch locked, as its earlier commands left them: refused when the wallet is frozen,
/// decided by `decide` against its figures, and `amount` admitted against the day's limit (and
/// counted when it passes), in the order [`decide_sending`] keeps for a command decided alone.
pub(crate) fn admit_sending<T>(
    wallets: &BTreeMap<i64, LockedWallet>,
    limits: &mut Limits,
    (kind, user, amount): (CommandType, i64, i64),
    decide: impl FnOnce(WalletFigures) -> Result<T, Rejection>,
) -> Result<T, Rejection> {
    let wallet = wallets.get(&user);
    may_send(wallet)?;
    let decided = decide(wallet.map_or_else(Default::default, |w| w.figures))?;
    limits.admit(user, kind, amount)?;
    Ok(decided)
}

/// A command that sends from the acting user's wallet, decided on its own: locks the wallet,
/// refuses it when frozen, decides by `decide` against its figures, and admits `amount` against
/// the day's limit. The locked wallets and the decision, or the rejection (nothing written).
pub(crate) async fn decide_sending<T>(
    tx: &Transaction<'_>,
    policy: &WalletPolicy,
    (kind, user, amount): (CommandType, i64, i64),
    decide: impl FnOnce(WalletFigures) -> Result<T, Rejection>,
) -> Result<Result<(BTreeMap<i64, LockedWallet>, T), Rejection>, EngineError> {
    let (wallets, own) = lock_sender(tx, user, kind).await?;
    let wallet = wallets.get(&user);
    if let Err(rejection) = may_send(wallet) {
        return Ok(Err(rejection));
    }
    let decided = match decide(wallet.map_or_else(Default::default, |w| w.figures)) {
        Ok(decided) => decided,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if let Err(rejection) = admit_one(tx, policy, (kind, user, amount), &own).await? {
        return Ok(Err(rejection));
    }
    Ok(Ok((wallets, decided)))
}

/// Locks the sender's wallet and reads their own limits on `kind`, in one round trip (the read
/// locks nothing, so it may travel with the lock).
async fn lock_sender(
    tx: &Transaction<'_>,
    user: i64,
    kind: CommandType,
) -> Result<(BTreeMap<i64, LockedWallet>, OwnLimits), EngineError> {
    let (wallets, own) = futures_util::future::join(
        lock_wallets(tx, &[user]),
        Limits::own_limits(tx, &[(user, kind)]),
    )
    .await;
    Ok((wallets?, own?))
}

/// Admits and records one command's limit, with the sender's own limits read by
/// `lock_sender`: for the commands decided one by one.
async fn admit_one(
    tx: &Transaction<'_>,
    policy: &WalletPolicy,
    (kind, user, amount): (CommandType, i64, i64),
    own: &OwnLimits,
) -> Result<Result<(), Rejection>, EngineError> {
    let mut limits = Limits::load_with(tx, policy, &[(user, kind)], own).await?;
    if let Err(rejection) = limits.admit(user, kind, amount) {
        return Ok(Err(rejection));
    }
    limits.record(tx).await?;
    Ok(Ok(()))
}
