//! Red packets: the shares of any packet, and any sequence of creates, claims and expiries run
//! by the domain's rules against an in-memory ledger, compared with a model that knows only
//! what the contract says.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use pluspay::domain::ledger::{AccountRef, Journal};
use pluspay::domain::outcome::Code;
use pluspay::domain::redpacket::{self, LockedPacket, Mode, PacketStatus, ShareRng};

use super::config;

const USERS: i64 = 4;
const FUNDING: i64 = 5_000;

fn arb_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Equal), Just(Mode::Random)]
}

proptest! {
    #![proptest_config(config(256))]

    /// Every share is at least 1 fen, there are `count` of them and they sum to the total;
    /// equal shares differ by at most a fen, the larger first.
    #[test]
    fn shares_split_the_total_exactly(
        count in 1i32..=redpacket::MAX_COUNT,
        extra in prop_oneof![0i64..=10, 0i64..=100_000, 0i64..=1_000_000_000_000],
        mode in arb_mode(),
        seed in any::<u64>(),
    ) {
        let total = i64::from(count) + extra;
        let request = redpacket::CreateRequest {
            user: 1, total, count, mode, expires_in: 60, users: None,
        };
        let shares = redpacket::shares(&request, seed);
        prop_assert_eq!(shares.len(), count as usize);
        prop_assert!(shares.iter().all(|&s| s >= 1), "{:?}", shares);
        prop_assert_eq!(shares.iter().map(|&s| i128::from(s)).sum::<i128>(), i128::from(total));
        if mode == Mode::Equal {
            prop_assert!(shares.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
        }
        prop_assert_eq!(&shares, &redpacket::shares(&request, seed), "the seed decides");
    }

    /// No random share takes so much that another would be left less than a fen.
    #[test]
    fn random_shares_leave_a_fen_for_every_other(
        count in 1i32..=50,
        extra in 0i64..=10_000,
        seed in any::<u64>(),
    ) {
        let total = i64::from(count) + extra;
        let shares = redpacket::random_shares(total, count, &mut ShareRng::new(seed));
        let most = total - i64::from(count - 1);
        prop_assert!(shares.iter().all(|&s| s <= most), "{:?}", shares);
    }

    #[test]
    fn any_sequence_conserves_money_and_matches_the_model(
        ops in prop::collection::vec(arb_op(), 1..60),
    ) {
        let mut world = World::default();
        for user in 1..=USERS {
            world.ledger.insert(AccountRef::Wallet(user), FUNDING);
            world.model_wallets.insert(user, FUNDING);
        }
        for op in &ops {
            world.step(op)?;
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        sender: i64,
        total: i64,
        count: i32,
        mode: Mode,
        users: Option<Vec<i64>>,
        seed: u64,
    },
    /// `packet` picks an earlier packet; `None` names one that does not exist.
    Claim {
        packet: Option<Index>,
        user: i64,
    },
    Expire {
        packet: Index,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    let user = || 1i64..=USERS;
    prop_oneof![
        3 => (
            user(),
            prop_oneof![1i64..=20, 1i64..=3_000, 4_000i64..=6_000],
            1i32..=6,
            arb_mode(),
            prop::option::weighted(0.3, prop::collection::vec(0i64..=USERS + 1, 0..6)),
            any::<u64>(),
        )
            .prop_map(|(sender, total, count, mode, users, seed)| Op::Create {
                sender, total, count, mode, users, seed,
            }),
        6 => (prop::option::weighted(0.95, any::<Index>()), user())
            .prop_map(|(packet, user)| Op::Claim { packet, user }),
        1 => any::<Index>().prop_map(|packet| Op::Expire { packet }),
    ]
}

/// A packet as the domain's rules keep it (the database's row and shares, in memory).
#[derive(Debug, Clone)]
struct Stored {
    row: LockedPacket,
    shares: Vec<i64>,
    claimers: Vec<i64>,
}

/// The model's packet: what was given, to whom, and whether the expiry came.
#[derive(Debug, Clone)]
struct Modelled {
    sender: i64,
    users: Option<Vec<i64>>,
    shares: Vec<i64>,
    claims: Vec<(i64, i64)>,
    expired: bool,
}

#[derive(Debug, Default)]
struct World {
    ledger: BTreeMap<AccountRef, i64>,
    stored: Vec<Stored>,
    model_wallets: BTreeMap<i64, i64>,
    model: Vec<Modelled>,
}

impl World {
    fn post(&mut self, journal: &Journal) -> Result<(), TestCaseError> {
        prop_assert_eq!(journal.entries().map(|(_, a)| a).sum::<i64>(), 0);
        for (account, amount) in journal.entries() {
            *self.ledger.entry(account).or_default() += amount;
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create {
                sender,
                total,
                count,
                mode,
                users,
                seed,
            } => self.create(*sender, *total, *count, *mode, users.clone(), *seed)?,
            Op::Claim { packet, user } => {
                let index = packet
                    .as_ref()
                    .filter(|_| !self.stored.is_empty())
                    .map(|i| i.index(self.stored.len()));
                self.claim(index, *user)?
            }
            Op::Expire { packet } => {
                if !self.stored.is_empty() {
                    self.expire(packet.index(self.stored.len()))?
                }
            }
        }
        self.check()
    }

    fn create(
        &mut self,
        sender: i64,
        total: i64,
        count: i32,
        mode: Mode,
        users: Option<Vec<i64>>,
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let mut data = json!({"total": total, "count": count, "mode": mode.as_str(),
                              "expires_in": 60});
        if let Some(users) = &users {
            data["users"] = json!(users);
        }
        let balance = self.ledger[&AccountRef::Wallet(sender)];
        let outcome =
            redpacket::parse_create(sender, data.as_object().unwrap()).and_then(|request| {
                redpacket::decide_create(&request, balance.into()).map(|j| (request, j))
            });
        // The model's reading of the contract.
        let users_ok = users.as_ref().is_none_or(|u| {
            let mut distinct = u.clone();
            distinct.sort_unstable();
            distinct.dedup();
            !u.is_empty()
                && distinct.len() == u.len()
                && u.iter().all(|&id| id > 0 && id != sender)
                && u.len() >= count as usize
        });
        let expected = if total < i64::from(count) {
            Err(Code::AmountTooSmall)
        } else if !users_ok {
            Err(Code::InvalidUsers)
        } else if total > self.model_wallets[&sender] {
            Err(Code::InsufficientBalance)
        } else {
            Ok(())
        };
        match (outcome, expected) {
            (Ok((request, journal)), Ok(())) => {
                self.post(&journal)?;
                let shares = redpacket::shares(&request, seed);
                let id = self.stored.len() as i64 + 1;
                self.stored.push(Stored {
                    row: LockedPacket {
                        id,
                        user: sender,
                        total,
                        count,
                        claimed: 0,
                        claimed_amount: 0,
                        status: PacketStatus::Open,
                        users: request.users,
                        past_expiry: false,
                    },
                    shares: shares.clone(),
                    claimers: Vec::new(),
                });
                *self.model_wallets.get_mut(&sender).unwrap() -= total;
                self.model.push(Modelled {
                    sender,
                    users,
                    shares,
                    claims: Vec::new(),
                    expired: false,
                });
            }
            (Err(rejection), Err(code)) => prop_assert_eq!(rejection.code, code),
            (outcome, expected) => {
                return Err(TestCaseError::fail(format!(
                    "create {data} with {balance}: {outcome:?}, expected {expected:?}"
                )))
            }
        }
        Ok(())
    }

    fn claim(&mut self, index: Option<usize>, user: i64) -> Result<(), TestCaseError> {
        let stored = index.map(|i| &self.stored[i]);
        let already = stored.is_some_and(|s| s.claimers.contains(&user));
        let outcome = redpacket::next_share_for(stored.map(|s| &s.row), user, already);
        let expected = match index.map(|i| &self.model[i]) {
            None => Err(Code::RedpacketNotFound),
            Some(m) if m.sender == user => Err(Code::NotAllowed),
            Some(m) if m.users.as_ref().is_some_and(|u| !u.contains(&user)) => {
                Err(Code::NotAllowed)
            }
            Some(m) if m.claims.iter().any(|(u, _)| *u == user) => Err(Code::AlreadyClaimed),
            Some(m) if m.claims.len() == m.shares.len() => Err(Code::RedpacketEmpty),
            Some(m) if m.expired => Err(Code::RedpacketExpired),
            Some(m) => Ok(m.shares[m.claims.len()]),
        };
        match (outcome, expected) {
            (Ok(number), Ok(amount)) => {
                let i = index.unwrap();
                let stored = &self.stored[i];
                let share = stored.shares[(number - 1) as usize];
                prop_assert_eq!(share, amount, "the next share");
                let wallet = self
                    .ledger
                    .get(&AccountRef::Wallet(user))
                    .copied()
                    .unwrap_or(0);
                let claim = redpacket::claim(&stored.row, user, number, share, wallet.into())
                    .map_err(|r| TestCaseError::fail(format!("{r:?}")))?;
                prop_assert_eq!(claim.order.owner_id, user);
                prop_assert_eq!(claim.order.amount, amount);
                self.post(&claim.journal)?;
                // As the database records a claim.
                let stored = &mut self.stored[i];
                stored.claimers.push(user);
                stored.row.claimed += 1;
                stored.row.claimed_amount += share;
                if stored.row.claimed == stored.row.count {
                    stored.row.status = PacketStatus::Finished;
                }
                self.model[i].claims.push((user, amount));
                *self.model_wallets.entry(user).or_default() += amount;
            }
            (Err(rejection), Err(code)) => prop_assert_eq!(rejection.code, code),
            (outcome, expected) => {
                return Err(TestCaseError::fail(format!(
                    "claim of {index:?} by {user}: {outcome:?}, expected {expected:?}"
                )))
            }
        }
        Ok(())
    }

    fn expire(&mut self, i: usize) -> Result<(), TestCaseError> {
        self.stored[i].row.past_expiry = true;
        let refund = redpacket::refund(&self.stored[i].row);
        let model = &mut self.model[i];
        let open = !model.expired && model.claims.len() < model.shares.len();
        let back: i64 = model.shares[model.claims.len()..].iter().sum();
        match refund {
            Some(refund) => {
                prop_assert!(open);
                prop_assert_eq!(refund.amount, back);
                prop_assert_eq!(refund.order.owner_id, model.sender);
                model.expired = true;
                *self.model_wallets.get_mut(&model.sender).unwrap() += back;
                self.post(&refund.journal)?;
                let row = &mut self.stored[i].row;
                row.status = PacketStatus::Expired;
            }
            None => prop_assert!(!open, "an open packet gave nothing back"),
        }
        Ok(())
    }

    /// Money is conserved, no account is negative, every wallet is the model's, and each
    /// sender's packets account holds exactly the unclaimed shares of their open packets.
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.ledger.values().sum::<i64>(), USERS * FUNDING);
        prop_assert!(self.ledger.values().all(|&b| b >= 0), "{:?}", self.ledger);
        for (&user, &balance) in &self.model_wallets {
            let wallet = self
                .ledger
                .get(&AccountRef::Wallet(user))
                .copied()
                .unwrap_or(0);
            prop_assert_eq!(wallet, balance, "wallet {}", user);
            let unclaimed: i64 = self
                .model
                .iter()
                .filter(|m| m.sender == user && !m.expired)
                .map(|m| m.shares[m.claims.len()..].iter().sum::<i64>())
                .sum();
            let packets = self
                .ledger
                .get(&AccountRef::Packets(user))
                .copied()
                .unwrap_or(0);
            prop_assert_eq!(packets, unclaimed, "packets of {}", user);
        }
        Ok(())
    }
}
