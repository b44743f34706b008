//! The ledger: any sequence of accepted commands conserves money.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

use pluspay::domain::cash::{self, CashStatus, Decision, DecisionEffect};
use pluspay::domain::ledger::{AccountRef, Journal, Unit};
use pluspay::domain::outcome::Code;
use pluspay::domain::policy::{WalletPolicy, CHANNELS_NEEDING_SUCCESS_URL};
use pluspay::domain::recharge::{self, Completion, WaitingRecharge};
use pluspay::domain::transfer::{self, TransferKind};
use pluspay::domain::transform;

use super::config;
use super::expect::{int, journal, CLEARING, ISSUED, PAID_OUT, PENDING, REVENUE};
use super::strategies::{arb_number, arb_policy, arb_text};

const USERS: i64 = 3;

/// An amount for an operation: a share of the balance it draws on (so that both enough and not
/// enough happen often), a fixed amount, or any JSON at all.
#[derive(Debug, Clone)]
enum Amount {
    Share(u8),
    /// The balance give or take a few fen: the edge of enough.
    Near(i64),
    Fixed(i64),
    Odd(Value),
}

impl Amount {
    fn value(&self, balance: i64) -> Value {
        match self {
            Amount::Share(percent) => {
                Value::from((i128::from(balance) * i128::from(*percent) / 100) as i64)
            }
            Amount::Near(delta) => Value::from(balance.saturating_add(*delta)),
            Amount::Fixed(amount) => Value::from(*amount),
            Amount::Odd(value) => value.clone(),
        }
    }
}

fn arb_amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        6 => (0u8..=120).prop_map(Amount::Share),
        2 => (-2i64..=2).prop_map(Amount::Near),
        3 => prop_oneof![-2i64..=1_000, 1i64..=2_000_000].prop_map(Amount::Fixed),
        1 => arb_number().prop_map(Amount::Odd),
    ]
}

/// What a charge says when the order is completed (by `recharge.retrieve` or a webhook).
#[derive(Debug, Clone)]
enum ChargeNews {
    Paid,
    Pending,
    Failed,
    Expired,
    /// Paid, but not the charge of this order as it was created.
    Forged(Forgery),
}

#[derive(Debug, Clone)]
enum Forgery {
    Id,
    OrderNo,
    Amount(i64),
    Currency,
    Livemode,
}

fn arb_news() -> impl Strategy<Value = ChargeNews> {
    prop_oneof![
        4 => Just(ChargeNews::Paid),
        2 => Just(ChargeNews::Pending),
        1 => Just(ChargeNews::Failed),
        1 => Just(ChargeNews::Expired),
        2 => prop_oneof![
            Just(Forgery::Id),
            Just(Forgery::OrderNo),
            prop_oneof![Just(1i64), Just(-1), any::<i64>()].prop_map(Forgery::Amount),
            Just(Forgery::Currency),
            Just(Forgery::Livemode),
        ]
        .prop_map(ChargeNews::Forged),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        reward: bool,
        from: i64,
        to: i64,
        amount: Amount,
        body: Option<String>,
    },
    Cash {
        user: i64,
        value: Amount,
        method: &'static str,
        account: String,
    },
    /// `cash` picks an earlier cash request; `None` names one that does not exist.
    Decide {
        approve: bool,
        cash: Option<Index>,
        remark: String,
    },
    Transform {
        user: i64,
        amount: Amount,
    },
    Recharge {
        user: i64,
        amount: Amount,
        channel: &'static str,
        success_url: bool,
        livemode: bool,
        news: ChargeNews,
    },
    /// Completes an earlier recharge order again, as a later retrieve or webhook does.
    Complete {
        order: Index,
        news: ChargeNews,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    let user = || 1i64..=USERS;
    let remark = prop_oneof![
        4 => Just("ok".to_owned()),
        1 => Just(String::new()),
        1 => arb_text(),
    ];
    let method = prop::sample::select(vec!["alipay", "wechat", "alipay", "wechat", "bank", ""]);
    let account = prop_oneof![4 => Just("a@b.c".to_owned()), 1 => arb_text()];
    prop_oneof![
        4 => (any::<bool>(), user(), 0..=USERS + 1, arb_amount(), prop::option::of(arb_text()))
            .prop_map(|(reward, from, to, amount, body)| Op::Transfer {
                reward, from, to, amount, body,
            }),
        2 => (user(), arb_amount(), method, account)
            .prop_map(|(user, value, method, account)| Op::Cash { user, value, method, account }),
        2 => (any::<bool>(), prop::option::weighted(0.9, any::<Index>()), remark)
            .prop_map(|(approve, cash, remark)| Op::Decide { approve, cash, remark }),
        2 => (user(), arb_amount()).prop_map(|(user, amount)| Op::Transform { user, amount }),
        3 => (
            user(),
            prop_oneof![4 => (1i64..=100_000).prop_map(Amount::Fixed), 1 => arb_amount()],
            prop::sample::select(vec!["alipay", "wx", "alipay_wap", "wx_pub"]),
            prop::bool::weighted(0.8),
            any::<bool>(),
            arb_news(),
        )
            .prop_map(|(user, amount, channel, success_url, livemode, news)| Op::Recharge {
                user, amount, channel, success_url, livemode, news,
            }),
        2 => (any::<Index>(), arb_news()).prop_map(|(order, news)| Op::Complete { order, news }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct CashRecord {
    owner: i64,
    value: i64,
    status: CashStatus,
}

#[derive(Debug, Clone, PartialEq)]
struct RechargeOrder {
    waiting: WaitingRecharge,
    /// As the order's state: 0 waiting, 1 credited, -1 failed.
    state: i16,
}

/// The ledger in memory, changed only by the journals the rules make, and what the tests
/// remember to check it against.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    policy: WalletPolicy,
    now: i64,
    balances: BTreeMap<AccountRef, i64>,
    cashes: Vec<CashRecord>,
    orders: Vec<RechargeOrder>,
    transformed_fen: i64,
    issued_points: i64,
}

impl Model {
    fn new(policy: WalletPolicy) -> Self {
        Model {
            policy,
            now: 1_700_000_000,
            balances: BTreeMap::new(),
            cashes: Vec::new(),
            orders: Vec::new(),
            transformed_fen: 0,
            issued_points: 0,
        }
    }

    fn balance(&self, account: AccountRef) -> i64 {
        self.balances.get(&account).copied().unwrap_or(0)
    }

    /// Applies an accepted journal, after checking that it balances.
    fn post(&mut self, journal: &Journal) -> Result<(), TestCaseError> {
        let mut sums: BTreeMap<Unit, i128> = BTreeMap::new();
        for (account, amount) in journal.entries() {
            prop_assert_ne!(amount, 0);
            *sums.entry(account.unit()).or_default() += i128::from(amount);
        }
        prop_assert!(!sums.is_empty());
        prop_assert!(sums.values().all(|&s| s == 0), "unbalanced {:?}", journal);
        for (account, amount) in journal.entries() {
            let balance = self.balances.entry(account).or_default();
            *balance = balance
                .checked_add(amount)
                .ok_or_else(|| TestCaseError::fail(format!("{account:?} overflows")))?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mut totals: BTreeMap<Unit, i128> = BTreeMap::new();
        for (&account, &balance) in &self.balances {
            *totals.entry(account.unit()).or_default() += i128::from(balance);
            let may_go_negative = matches!(account, CLEARING | ISSUED);
            prop_assert!(
                may_go_negative || balance >= 0,
                "{:?} went negative: {}",
                account,
                balance
            );
        }
        prop_assert!(
            totals.values().all(|&t| t == 0),
            "money was made or lost: {:?}",
            totals
        );
        // The system accounts hold exactly what the records say they do.
        let sum = |status: CashStatus| -> i64 {
            self.cashes
                .iter()
                .filter(|c| c.status == status)
                .map(|c| c.value)
                .sum()
        };
        prop_assert_eq!(self.balance(PENDING), sum(CashStatus::Waiting));
        prop_assert_eq!(self.balance(PAID_OUT), sum(CashStatus::Approved));
        let credited: i64 = self
            .orders
            .iter()
            .filter(|o| o.state == 1)
            .map(|o| o.waiting.amount)
            .sum();
        prop_assert_eq!(self.balance(CLEARING), -credited);
        prop_assert_eq!(self.balance(REVENUE), self.transformed_fen);
        prop_assert_eq!(self.balance(ISSUED), -self.issued_points);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.clone();
        let changed = match op {
            Op::Transfer {
                reward,
                from,
                to,
                amount,
                body,
            } => self.transfer(*reward, *from, *to, amount, body.as_deref())?,
            Op::Cash {
                user,
                value,
                method,
                account,
            } => self.cash(*user, value, method, account)?,
            Op::Decide {
                approve,
                cash,
                remark,
            } => self.decide(*approve, cash.as_ref(), remark)?,
            Op::Transform { user, amount } => self.transform(*user, amount)?,
            Op::Recharge {
                user,
                amount,
                channel,
                success_url,
                livemode,
                news,
            } => self.recharge(*user, amount, channel, *success_url, *livemode, news)?,
            Op::Complete { order, news } => {
                if self.orders.is_empty() {
                    false
                } else {
                    let i = order.index(self.orders.len());
                    self.complete(i, news)?
                }
            }
        };
        if !changed {
            prop_assert_eq!(&*self, &before, "a refused operation changed something");
        }
        self.now += 60;
        self.check()
    }

    fn transfer(
        &mut self,
        reward: bool,
        from: i64,
        to: i64,
        amount: &Amount,
        body: Option<&str>,
    ) -> Result<bool, TestCaseError> {
        let kind = if reward {
            TransferKind::Reward
        } else {
            TransferKind::Transfer
        };
        let balance = self.balance(AccountRef::Wallet(from));
        let mut data = json!({"user": to, "amount": amount.value(balance)});
        if let Some(body) = body {
            data["body"] = Value::from(body);
        }
        let data = data.as_object().unwrap();
        let body_ok =
            !reward || body.is_none_or(|b| b.trim().is_empty() || b.chars().count() <= 255);
        let expected = int(data, "amount")
            .at_least(1)
            .filter(|&a| a <= balance && to > 0 && to != from && body_ok);
        let outcome = transfer::parse(kind, from, data).and_then(|request| {
            transfer::decide(
                &request,
                self.balance(AccountRef::Wallet(request.from)),
                self.balance(AccountRef::Wallet(request.to)),
            )
        });
        match (outcome, expected) {
            (Ok(j), Some(a)) => {
                let wanted =
                    journal(&[(AccountRef::Wallet(from), -a), (AccountRef::Wallet(to), a)]);
                prop_assert_eq!(&j, &wanted);
                self.post(&j)?;
                Ok(true)
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                Ok(false)
            }
            (outcome, expected) => Err(TestCaseError::fail(format!(
                "transfer {data:?} from {from} with {balance}: {outcome:?}, expected {expected:?}"
            ))),
        }
    }

    fn cash(
        &mut self,
        user: i64,
        value: &Amount,
        method: &str,
        account: &str,
    ) -> Result<bool, TestCaseError> {
        let wallet = AccountRef::Wallet(user);
        let balance = self.balance(wallet);
        let data = json!({"value": value.value(balance), "type": method, "account": account});
        let data = data.as_object().unwrap();
        let account_ok = !account.trim().is_empty() && account.chars().count() <= 255;
        let expected = int(data, "value")
            .at_least(self.policy.cash_min)
            .filter(|&v| {
                v <= balance && self.policy.cash_types.iter().any(|t| t == method) && account_ok
            });
        let outcome = cash::parse_request(user, data, &self.policy)
            .and_then(|request| cash::decide_request(&request, balance).map(|j| (request, j)));
        match (outcome, expected) {
            (Ok((request, j)), Some(v)) => {
                prop_assert_eq!(&j, &journal(&[(wallet, -v), (PENDING, v)]));
                self.post(&j)?;
                self.cashes.push(CashRecord {
                    owner: request.user,
                    value: request.value,
                    status: CashStatus::Waiting,
                });
                Ok(true)
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                Ok(false)
            }
            (outcome, expected) => Err(TestCaseError::fail(format!(
                "cash {data:?} with {balance}: {outcome:?}, expected {expected:?}"
            ))),
        }
    }

    fn decide(
        &mut self,
        approve: bool,
        pick: Option<&Index>,
        remark: &str,
    ) -> Result<bool, TestCaseError> {
        let decision = if approve {
            Decision::Approve
        } else {
            Decision::Reject
        };
        // Cash ids are 1-based positions; an unknown one is past the end.
        let index = pick
            .filter(|_| !self.cashes.is_empty())
            .map(|i| i.index(self.cashes.len()));
        let cash_id = index.map_or(self.cashes.len() as i64 + 1, |i| i as i64 + 1);
        let data = json!({"cash": cash_id, "remark": remark});
        let request = match cash::parse_decision(decision, data.as_object().unwrap()) {
            Ok(request) => request,
            Err(rejection) => {
                let remark_ok = !remark.trim().is_empty() && remark.chars().count() <= 255;
                prop_assert!(!remark_ok, "refused {:?}: {:?}", data, rejection);
                return Ok(false);
            }
        };
        prop_assert_eq!(request.cash_id, cash_id);
        // The engine answers unknown_cash for an id it does not find; the rules are not asked.
        let Some(index) = index else {
            return Ok(false);
        };
        let record = self.cashes[index].clone();
        let effect = cash::decide(decision, record.status, record.owner, record.value);
        match effect {
            Ok(DecisionEffect::Apply(j)) => {
                prop_assert_eq!(record.status, CashStatus::Waiting);
                let to = match decision {
                    Decision::Approve => PAID_OUT,
                    Decision::Reject => AccountRef::Wallet(record.owner),
                };
                prop_assert_eq!(
                    &j,
                    &journal(&[(PENDING, -record.value), (to, record.value)])
                );
                self.post(&j)?;
                self.cashes[index].status = decision.status();
                // Deciding it again the same way does nothing more; the other way is refused.
                let other = match decision {
                    Decision::Approve => Decision::Reject,
                    Decision::Reject => Decision::Approve,
                };
                let status = decision.status();
                prop_assert_eq!(
                    cash::decide(decision, status, record.owner, record.value),
                    Ok(DecisionEffect::AlreadyDone)
                );
                prop_assert_eq!(
                    cash::decide(other, status, record.owner, record.value)
                        .unwrap_err()
                        .code,
                    Code::CashAlreadyDecided
                );
                Ok(true)
            }
            Ok(DecisionEffect::AlreadyDone) => {
                prop_assert_eq!(record.status, decision.status());
                Ok(false)
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.code, Code::CashAlreadyDecided);
                prop_assert!(
                    record.status != CashStatus::Waiting && record.status != decision.status()
                );
                Ok(false)
            }
        }
    }

    fn transform(&mut self, user: i64, amount: &Amount) -> Result<bool, TestCaseError> {
        let wallet = AccountRef::Wallet(user);
        let points = AccountRef::Points(user);
        let balance = self.balance(wallet);
        let points_balance = self.balance(points);
        let data = json!({"amount": amount.value(balance)});
        let data = data.as_object().unwrap();
        let expected = int(data, "amount")
            .at_least(self.policy.transform_min)
            .filter(|&a| a <= balance)
            .and_then(|a| a.checked_mul(self.policy.ratio).map(|p| (a, p)))
            .filter(|&(_, p)| points_balance.checked_add(p).is_some());
        let outcome = transform::parse(user, data, &self.policy)
            .and_then(|request| transform::decide(&request, balance, points_balance));
        match (outcome, expected) {
            (Ok(j), Some((a, p))) => {
                let wanted = journal(&[(wallet, -a), (REVENUE, a), (ISSUED, -p), (points, p)]);
                prop_assert_eq!(&j, &wanted);
                self.post(&j)?;
                self.transformed_fen += a;
                self.issued_points += p;
                Ok(true)
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                Ok(false)
            }
            (outcome, expected) => Err(TestCaseError::fail(format!(
                "transform {data:?} with {balance}: {outcome:?}, expected {expected:?}"
            ))),
        }
    }

    fn recharge(
        &mut self,
        user: i64,
        amount: &Amount,
        channel: &str,
        success_url: bool,
        livemode: bool,
        news: &ChargeNews,
    ) -> Result<bool, TestCaseError> {
        let mut data = json!({"type": channel, "amount": amount.value(self.policy.recharge_max)});
        if success_url {
            data["extra"] = json!({"success_url": "https://plus.io/paid"});
        }
        let data = data.as_object().unwrap();
        let expected = int(data, "amount")
            .at_least(self.policy.recharge_min)
            .filter(|&a| {
                a <= self.policy.recharge_max
                    && self.policy.recharge_types.iter().any(|t| t == channel)
                    && (success_url || !CHANNELS_NEEDING_SUCCESS_URL.contains(&channel))
            });
        let request = match (recharge::parse(user, data, &self.policy), expected) {
            (Ok(request), Some(a)) => {
                prop_assert_eq!(request.amount, a);
                request
            }
            (Err(rejection), None) => {
                prop_assert!(!rejection.messages().is_empty());
                return Ok(false);
            }
            (outcome, expected) => {
                return Err(TestCaseError::fail(format!(
                    "recharge {data:?}: {outcome:?}, expected {expected:?}"
                )))
            }
        };
        // The engine stores a waiting order, then the charge Ping++ made for it.
        let order_id = self.orders.len() as i64 + 1;
        self.orders.push(RechargeOrder {
            waiting: WaitingRecharge {
                order_id,
                owner: request.user,
                amount: request.amount,
                charge_id: format!("ch_{order_id:020}"),
                livemode,
                user_fee: 0,
                bonus: 0,
            },
            state: 0,
        });
        self.complete(self.orders.len() - 1, news)?;
        // A new waiting order is a change even when no money moved.
        Ok(true)
    }

    fn complete(&mut self, index: usize, news: &ChargeNews) -> Result<bool, TestCaseError> {
        let order = self.orders[index].clone();
        let waiting = &order.waiting;
        let mut charge = json!({
            "id": waiting.charge_id,
            "object": "charge",
            "order_no": recharge::order_no(waiting.order_id),
            "amount": waiting.amount,
            "currency": "cny",
            "livemode": waiting.livemode,
            "paid": false,
            "failure_code": null,
            "failure_msg": null,
            "time_expire": self.now + 7_200,
        });
        match news {
            ChargeNews::Paid => charge["paid"] = json!(true),
            ChargeNews::Pending => {}
            ChargeNews::Failed => {
                charge["failure_code"] = json!("card_declined");
                charge["failure_msg"] = json!("declined");
            }
            ChargeNews::Expired => charge["time_expire"] = json!(self.now - 1),
            ChargeNews::Forged(forgery) => {
                charge["paid"] = json!(true);
                match forgery {
                    Forgery::Id => charge["id"] = json!("ch_forged"),
                    Forgery::OrderNo => {
                        charge["order_no"] = json!(recharge::order_no(waiting.order_id + 1))
                    }
                    Forgery::Amount(delta) => {
                        let other = waiting.amount.wrapping_add(*delta);
                        charge["amount"] = json!(if other == waiting.amount {
                            other + 1
                        } else {
                            other
                        });
                    }
                    Forgery::Currency => charge["currency"] = json!("usd"),
                    Forgery::Livemode => charge["livemode"] = json!(!waiting.livemode),
                }
            }
        }
        let facts = recharge::charge_facts(&charge, self.now)
            .map_err(|e| TestCaseError::fail(format!("a whole charge is readable: {e}")))?;
        let completion = match recharge::complete(waiting, &facts) {
            Ok(completion) => completion,
            Err(mismatch) => {
                prop_assert!(matches!(news, ChargeNews::Forged(_)), "{}", mismatch);
                return Ok(false);
            }
        };
        prop_assert!(
            !matches!(news, ChargeNews::Forged(_)),
            "forged charge {:?} taken",
            news
        );
        // The engine locks the order and leaves a credited one alone; a failed one that was
        // paid after all is credited (a late payment).
        match (order.state, news) {
            (0, _) | (-1, ChargeNews::Paid) => {}
            _ => return Ok(false),
        }
        match (completion, news) {
            (Completion::Credit(j), ChargeNews::Paid) => {
                prop_assert_eq!(
                    &j,
                    &journal(&[
                        (CLEARING, -waiting.amount),
                        (AccountRef::Wallet(waiting.owner), waiting.amount)
                    ])
                );
                self.post(&j)?;
                self.orders[index].state = 1;
                Ok(true)
            }
            (Completion::Fail { .. }, ChargeNews::Failed | ChargeNews::Expired) => {
                self.orders[index].state = -1;
                Ok(true)
            }
            (Completion::Wait, ChargeNews::Pending) => Ok(false),
            (completion, news) => Err(TestCaseError::fail(format!(
                "charge news {news:?} completed as {completion:?}"
            ))),
        }
    }
}

/// Settings for the ledger runs: any the settings allow, with a ratio a real wallet might use
/// (points are issued from one account, so an absurd ratio overflows it, not the rules).
fn arb_ledger_policy() -> impl Strategy<Value = WalletPolicy> {
    (arb_policy(), 1i64..=10_000, prop::bool::weighted(0.8)).prop_map(
        |(mut policy, ratio, open)| {
            policy.ratio = ratio;
            if open {
                // Mostly open channels and payout methods, so that money flows.
                policy.recharge_types = vec!["alipay".into(), "wx".into(), "alipay_wap".into()];
                policy.cash_types = vec!["alipay".into(), "wechat".into()];
                policy.recharge_max = policy.recharge_max.max(100_000);
            }
            policy
        },
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// Any sequence of commands, each decided by the rules against the balances of the moment:
    /// every journal balances per unit, no wallet, points or payout account goes below zero,
    /// the fen and the points of all accounts sum to zero after every step, refused commands
    /// change nothing, and cash decisions follow their state machine.
    #[test]
    fn ledger_conserves_money(
        policy in arb_ledger_policy(),
        funding in prop::collection::vec(
            prop::option::weighted(0.8, 1i64..=100_000),
            USERS as usize,
        ),
        ops in prop::collection::vec(arb_op(), 1..80),
    ) {
        let mut model = Model::new(policy);
        // Most users first recharge (through the rules, like any recharge), so that money flows.
        let recharges = (1..).zip(funding).filter_map(|(user, amount)| {
            amount.map(|amount| Op::Recharge {
                user,
                amount: Amount::Fixed(amount),
                channel: "alipay",
                success_url: false,
                livemode: false,
                news: ChargeNews::Paid,
            })
        });
        for op in recharges.chain(ops) {
            model.step(&op)?;
        }
    }
}
