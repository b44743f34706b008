//! Double entry: every movement of money is a journal whose entries sum to zero in each unit.

use std::collections::BTreeMap;

/// The most any wallet's balance and running totals (`total_income`, `total_expenses`) may reach
/// through a command that can still be refused: about half of what a PostgreSQL bigint holds.
/// Credits that cannot be refused once the money moved (a paid recharge, a returned cash
/// request) may go past it; the other half is their headroom, which no plausible history fills:
/// it takes 5 million recharges of the largest allowed size ([`MAX_COMMAND_AMOUNT`]).
pub const WALLET_CEILING: i64 = 4_000_000_000_000_000_000;

/// The largest amount a setting may allow one command to move (`wallet.recharge_max` and the
/// other limits): 10^12 fen, ten billion yuan.
pub const MAX_COMMAND_AMOUNT: i64 = 1_000_000_000_000;

/// A wallet's figures as locked: what a movement must keep within [`WALLET_CEILING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalletFigures {
    pub balance: i64,
    pub total_income: i64,
    pub total_expenses: i64,
}

impl From<i64> for WalletFigures {
    /// A wallet with this balance and no history to speak of.
    fn from(balance: i64) -> Self {
        WalletFigures {
            balance,
            ..Default::default()
        }
    }
}

impl WalletFigures {
    /// The figures after `delta` (income when positive, expense when negative), or `None` when
    /// that takes the balance or a total past the ceiling. Says nothing about a balance going
    /// below zero: that is each command's own rule, with its own message.
    pub fn moved(self, delta: i64) -> Option<WalletFigures> {
        // Only what grows is held to the ceiling: spending from a balance above it is fine.
        let within = |v: i64| (v <= WALLET_CEILING).then_some(v);
        let balance = self.balance.checked_add(delta)?;
        Some(if delta >= 0 {
            WalletFigures {
                balance: within(balance)?,
                total_income: within(self.total_income.checked_add(delta)?)?,
                ..self
            }
        } else {
            WalletFigures {
                balance,
                total_expenses: within(self.total_expenses.checked_sub(delta)?)?,
                ..self
            }
        })
    }
}

/// What an amount counts: CNY fen or points (积分). Entries balance per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Fen,
    Point,
}

/// Accounts the platform itself holds; the other side of money entering or leaving wallets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemAccount {
    /// Money paid in through Ping++: goes negative as wallets are credited by recharges.
    PingppClearing,
    /// Cash requested but not yet paid out.
    PendingPayouts,
    /// Cash paid out to the outside world.
    PaidOut,
    /// Fen turned into points by `transform`.
    TransformRevenue,
    /// The source of every point: goes negative as points are issued.
    PointsIssued,
    /// User fees kept out of recharge-object recharges.
    RechargeFees,
    /// Balance bonuses given with recharge-object recharges: goes negative as they are paid.
    RechargeBonuses,
    /// With the money at Ping++: the world outside the users' e-wallets (banks, channels).
    /// Deposits come from it, so it goes negative; paid withdrawals go back to it.
    EwalletOutside,
    /// With the money at Ping++: money in a user's e-wallet held for a withdrawal under way.
    EwalletWithdrawals,
    /// With the money at Ping++: split orders' payments Ping++ holds until they are allocated
    /// or completed.
    AllocationsPending,
    /// Refunds of recharges asked of Ping++ and not decided yet: out of the wallet already.
    PendingRefunds,
}

impl SystemAccount {
    pub fn name(self) -> &'static str {
        match self {
            SystemAccount::PingppClearing => "pingpp_clearing",
            SystemAccount::PendingPayouts => "pending_payouts",
            SystemAccount::PaidOut => "paid_out",
            SystemAccount::TransformRevenue => "transform_revenue",
            SystemAccount::PointsIssued => "points_issued",
            SystemAccount::RechargeFees => "recharge_fees",
            SystemAccount::RechargeBonuses => "recharge_bonuses",
            SystemAccount::EwalletOutside => "ewallet_outside",
            SystemAccount::EwalletWithdrawals => "ewallet_withdrawals",
            SystemAccount::AllocationsPending => "allocations_pending",
            SystemAccount::PendingRefunds => "pending_refunds",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            SystemAccount::PointsIssued => Unit::Point,
            _ => Unit::Fen,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountRef {
    Wallet(i64),
    Points(i64),
    /// With the money at Ping++: the user's sub-merchant's money there (its business user).
    Merchant(i64),
    /// The user's money in open holds: out of the wallet, not yet paid or given back.
    Held(i64),
    /// What the user's open red packets still have to give.
    Packets(i64),
    System(SystemAccount),
}

impl AccountRef {
    /// The `accounts.kind` of an account of a user's other than their wallet, with the user:
    /// found by the two, created empty when first needed.
    pub fn of_user(self) -> Option<(&'static str, i64)> {
        match self {
            AccountRef::Points(user) => Some(("points", user)),
            AccountRef::Merchant(user) => Some(("merchant", user)),
            AccountRef::Held(user) => Some(("held", user)),
            AccountRef::Packets(user) => Some(("packets", user)),
            AccountRef::Wallet(_) | AccountRef::System(_) => None,
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            AccountRef::Wallet(_)
            | AccountRef::Merchant(_)
            | AccountRef::Held(_)
            | AccountRef::Packets(_) => Unit::Fen,
            AccountRef::Points(_) => Unit::Point,
            AccountRef::System(s) => s.unit(),
        }
    }
}

/// `amount` of the user's wallet into another account of theirs (a hold's `held`, a red
/// packet's `packets`), when the balance has it; the refusal names `field` with `insufficient`.
pub fn set_aside(
    user: i64,
    into: AccountRef,
    amount: i64,
    wallet: WalletFigures,
    (field, insufficient): (&str, &str),
) -> Result<Journal, super::outcome::Rejection> {
    use super::outcome::{Code, Rejection};
    if amount > wallet.balance {
        return Err(Rejection::field(
            Code::InsufficientBalance,
            field,
            insufficient,
        ));
    }
    Journal::transfer(AccountRef::Wallet(user), into, amount)
        .map_err(|_| Rejection::field(Code::AmountOverflow, field, super::validate::MSG_BAD_DATA))
}

/// A balanced set of entries: positive credits an account, negative debits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    entries: BTreeMap<AccountRef, i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("the entries of a journal do not sum to zero in every unit")]
    Unbalanced,
    #[error("an amount overflows")]
    Overflow,
    #[error("a journal needs at least one non-zero entry")]
    Empty,
}

impl Journal {
    /// Builds a journal from movements, merging several on one account, and refuses one that
    /// does not balance: the invariant is checked where journals are made, not trusted later.
    pub fn new(movements: &[(AccountRef, i64)]) -> Result<Self, JournalError> {
        let mut entries = BTreeMap::new();
        let mut sums: BTreeMap<Unit, i64> = BTreeMap::new();
        for &(account, amount) in movements {
            let entry: &mut i64 = entries.entry(account).or_default();
            *entry = entry.checked_add(amount).ok_or(JournalError::Overflow)?;
            let sum = sums.entry(account.unit()).or_default();
            *sum = sum.checked_add(amount).ok_or(JournalError::Overflow)?;
        }
        if sums.values().any(|&s| s != 0) {
            return Err(JournalError::Unbalanced);
        }
        entries.retain(|_, amount| *amount != 0);
        if entries.is_empty() {
            return Err(JournalError::Empty);
        }
        Ok(Journal { entries })
    }

    /// Money moving from one account to another of the same unit.
    pub fn transfer(from: AccountRef, to: AccountRef, amount: i64) -> Result<Self, JournalError> {
        let debit = amount.checked_neg().ok_or(JournalError::Overflow)?;
        Journal::new(&[(from, debit), (to, amount)])
    }

    /// Entries in a stable order (by account), one per account.
    pub fn entries(&self) -> impl Iterator<Item = (AccountRef, i64)> + '_ {
        self.entries.iter().map(|(&a, &v)| (a, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_balances() {
        let j = Journal::transfer(AccountRef::Wallet(1), AccountRef::Wallet(2), 100).unwrap();
        let entries: Vec<_> = j.entries().collect();
        assert_eq!(
            entries,
            vec![(AccountRef::Wallet(1), -100), (AccountRef::Wallet(2), 100)]
        );
    }

    #[test]
    fn units_balance_separately() {
        let fen_to_points = [
            (AccountRef::Wallet(1), -100),
            (AccountRef::System(SystemAccount::TransformRevenue), 100),
            (AccountRef::System(SystemAccount::PointsIssued), -100),
            (AccountRef::Points(1), 100),
        ];
        assert!(Journal::new(&fen_to_points).is_ok());
        let crossing = [(AccountRef::Wallet(1), -100), (AccountRef::Points(1), 100)];
        assert_eq!(Journal::new(&crossing), Err(JournalError::Unbalanced));
    }

    #[test]
    fn refuses_unbalanced_empty_and_overflowing() {
        assert_eq!(
            Journal::new(&[(AccountRef::Wallet(1), 5)]),
            Err(JournalError::Unbalanced)
        );
        assert_eq!(Journal::new(&[]), Err(JournalError::Empty));
        assert_eq!(
            Journal::transfer(AccountRef::Wallet(1), AccountRef::Wallet(1), 5),
            Err(JournalError::Empty)
        );
        assert_eq!(
            Journal::transfer(AccountRef::Wallet(1), AccountRef::Wallet(2), i64::MIN),
            Err(JournalError::Overflow)
        );
    }
}
