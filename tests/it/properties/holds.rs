//! Holds: any sequence of holds, captures, releases and expiries, decided by the rules, against a
//! plain model of wallets and open holds. The ledger the journals build must say what the model
//! says after every step.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use pluspay::domain::hold::{self, HoldStatus, LockedHold};
use pluspay::domain::ledger::{AccountRef, Journal, SystemAccount, WalletFigures};
use pluspay::domain::outcome::Code;

use super::config;

const USERS: i64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Create {
        user: i64,
        amount: i64,
    },
    Capture {
        pick: usize,
        actor_is_owner: bool,
        receiver: i64,
        amount: i64,
    },
    Release {
        pick: usize,
        actor_is_owner: bool,
    },
    Expire {
        pick: usize,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=USERS, -5i64..=1_500).prop_map(|(user, amount)| Op::Create { user, amount }),
        3 => (any::<usize>(), prop::bool::weighted(0.9), 1..=USERS, -5i64..=1_600).prop_map(
            |(pick, actor_is_owner, receiver, amount)| Op::Capture { pick, actor_is_owner, receiver, amount }
        ),
        2 => (any::<usize>(), prop::bool::weighted(0.9))
            .prop_map(|(pick, actor_is_owner)| Op::Release { pick, actor_is_owner }),
        1 => any::<usize>().prop_map(|pick| Op::Expire { pick }),
    ]
}

/// The model: what each wallet holds and which holds are open, nothing else.
struct Model {
    wallets: BTreeMap<i64, i64>,
    /// (owner, amount, open)
    holds: Vec<(i64, i64, bool)>,
    /// The accounts as the journals leave them.
    ledger: BTreeMap<AccountRef, i64>,
}

impl Model {
    fn post(&mut self, journal: &Journal) {
        let mut sum = 0;
        for (account, amount) in journal.entries() {
            *self.ledger.entry(account).or_default() += amount;
            sum += amount;
        }
        assert_eq!(sum, 0, "a journal balances");
    }

    fn figures(&self, user: i64) -> WalletFigures {
        self.ledger
            .get(&AccountRef::Wallet(user))
            .copied()
            .unwrap_or(0)
            .into()
    }

    fn locked(&self, id: usize) -> LockedHold {
        let (user, amount, open) = self.holds[id];
        LockedHold {
            id: id as i64 + 1,
            user,
            amount,
            status: if open {
                HoldStatus::Held
            } else {
                HoldStatus::Released
            },
            reason: "悬赏".into(),
            past_expiry: false,
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for user in 1..=USERS {
            let wallet = self
                .ledger
                .get(&AccountRef::Wallet(user))
                .copied()
                .unwrap_or(0);
            let held = self
                .ledger
                .get(&AccountRef::Held(user))
                .copied()
                .unwrap_or(0);
            let open: i64 = self
                .holds
                .iter()
                .filter(|h| h.0 == user && h.2)
                .map(|h| h.1)
                .sum();
            prop_assert_eq!(wallet, self.wallets[&user], "user {}'s wallet", user);
            prop_assert_eq!(held, open, "user {}'s held account", user);
            prop_assert!(wallet >= 0 && held >= 0);
        }
        prop_assert_eq!(self.ledger.values().sum::<i64>(), 0);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Create { user, amount } => {
                let data = json!({"amount": amount, "reason": "悬赏", "expires_in": 60});
                let parsed = hold::parse_create(user, data.as_object().unwrap());
                if amount < 1 {
                    prop_assert_eq!(parsed.unwrap_err().code, Code::AmountTooSmall);
                    return self.check();
                }
                let request = parsed.unwrap();
                match hold::decide_create(&request, self.figures(user)) {
                    Ok(journal) => {
                        prop_assert!(amount <= self.wallets[&user]);
                        self.post(&journal);
                        *self.wallets.get_mut(&user).unwrap() -= amount;
                        self.holds.push((user, amount, true));
                    }
                    Err(rejection) => {
                        prop_assert!(amount > self.wallets[&user]);
                        prop_assert_eq!(rejection.code, Code::InsufficientBalance);
                    }
                }
            }
            Op::Capture {
                pick,
                actor_is_owner,
                receiver,
                amount,
            } => {
                if self.holds.is_empty() {
                    return Ok(());
                }
                let id = pick % self.holds.len();
                let locked = self.locked(id);
                let actor = if actor_is_owner {
                    locked.user
                } else {
                    locked.user % USERS + 1
                };
                let data = json!({"hold": locked.id, "user": receiver, "amount": amount});
                let parsed = hold::parse_capture(actor, data.as_object().unwrap());
                let Ok(request) = parsed else {
                    prop_assert!(receiver == actor || amount < 1);
                    return self.check();
                };
                let open = match hold::open_for(Some(&locked), actor) {
                    Ok(open) => open.clone(),
                    Err(rejection) => {
                        let want = if actor != locked.user {
                            Code::HoldNotFound
                        } else {
                            Code::HoldClosed
                        };
                        prop_assert_eq!(rejection.code, want);
                        return self.check();
                    }
                };
                match hold::decide_capture(&open, &request, self.figures(receiver)) {
                    Ok(closing) => {
                        prop_assert!(amount <= open.amount);
                        prop_assert_eq!(closing.captured + closing.released, open.amount);
                        self.post(&closing.journal);
                        *self.wallets.get_mut(&receiver).unwrap() += amount;
                        *self.wallets.get_mut(&open.user).unwrap() += open.amount - amount;
                        self.holds[id].2 = false;
                    }
                    Err(rejection) => {
                        prop_assert!(amount > open.amount);
                        prop_assert_eq!(rejection.code, Code::AmountTooLarge);
                    }
                }
            }
            Op::Release {
                pick,
                actor_is_owner,
            } => self.give_back(pick, actor_is_owner, false)?,
            Op::Expire { pick } => self.give_back(pick, true, true)?,
        }
        self.check()
    }

    /// A release by `actor_is_owner`'s choice of actor, or the expiry (always the owner's).
    fn give_back(
        &mut self,
        pick: usize,
        actor_is_owner: bool,
        expiry: bool,
    ) -> Result<(), TestCaseError> {
        if self.holds.is_empty() {
            return Ok(());
        }
        let id = pick % self.holds.len();
        let locked = self.locked(id);
        let actor = if actor_is_owner {
            locked.user
        } else {
            locked.user % USERS + 1
        };
        match hold::open_for(Some(&locked), actor) {
            Ok(open) => {
                let status = if expiry {
                    HoldStatus::Expired
                } else {
                    HoldStatus::Released
                };
                let closing = hold::give_back(open, status);
                prop_assert_eq!(closing.released, open.amount);
                prop_assert_eq!(closing.captured, 0);
                let (user, amount) = (open.user, open.amount);
                self.post(&closing.journal);
                *self.wallets.get_mut(&user).unwrap() += amount;
                self.holds[id].2 = false;
            }
            Err(rejection) => {
                let want = if actor != locked.user {
                    Code::HoldNotFound
                } else {
                    Code::HoldClosed
                };
                prop_assert_eq!(rejection.code, want);
                prop_assert!(!self.holds[id].2 || actor != locked.user);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Any sequence of holds and their ends: money is conserved, each user's held account is
    /// their open holds, no balance goes below zero, and every refusal is the model's.
    #[test]
    fn holds_agree_with_the_model(
        funding in prop::collection::vec(0i64..=3_000, USERS as usize),
        ops in prop::collection::vec(arb_op(), 1..60),
    ) {
        let mut model = Model { wallets: BTreeMap::new(), holds: Vec::new(), ledger: BTreeMap::new() };
        for (user, amount) in (1..).zip(funding) {
            model.wallets.insert(user, amount);
            model.ledger.insert(AccountRef::Wallet(user), amount);
            *model.ledger.entry(AccountRef::System(SystemAccount::PingppClearing)).or_default() -= amount;
        }
        for op in &ops {
            model.step(op)?;
        }
    }
}
