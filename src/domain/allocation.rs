//! Split purchases (分账) with the money at Ping++: a split order's payment waits in
//! `allocations_pending` (Ping++ holds it for the order); allocations give shares of it to
//! users' e-wallets, allocation refunds take shares back, and the completion (分账完结, which
//! the document requires of every split order) settles the rest on the seller's sub-merchant.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, SystemAccount};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{int_field, IntField, MSG_BAD_DATA};

pub const TARGET_TYPE: &str = "pingpp_allocation";
pub const TITLE: &str = "分账";
pub const MAX_SHARES: usize = 50;
pub const MSG_SHARES: &str = "请填写 1 到 50 个分账用户";
pub const MSG_NOT_SPLIT: &str = "该订单不是分账订单";
pub const MSG_TOO_MUCH: &str = "分账金额超出可分账金额";
pub const MSG_COMPLETED: &str = "该订单已完结分账";
pub const MSG_UNKNOWN: &str = "分账不存在";
pub const MSG_BACK_TOO_MUCH: &str = "退分账金额超出该用户分得的金额";
pub const MSG_CREATED: &str = "分账已提交";
pub const MSG_IN_PROGRESS: &str = "该订单尚有分账或退款处理中";
pub const MSG_REWARD: &str = "打赏订单由平台结算";

/// The ids of the platform's own commands that settle a reward: `reward-<order>-commission-<n>`
/// and `reward-<order>-complete-<n>`, `n` the attempt (a failed one is tried anew, a few times).
pub fn reward_command_id(order_id: i64, step: &str, attempt: i64) -> String {
    format!("reward-{order_id}-{step}-{attempt}")
}

/// Whether `command_id` is the platform's own `step` of reward `order_id`.
pub fn is_reward_step(command_id: &str, order_id: i64, step: &str) -> bool {
    command_id
        .strip_prefix(&format!("reward-{order_id}-{step}-"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One user's share, in pluspay's user ids.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    pub user: i64,
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Share {
    pub fn total(shares: &[Share]) -> i64 {
        shares.iter().map(|s| s.amount).sum()
    }
}

fn parse_shares(data: &Map<String, Value>, field: &str, errors: &mut FieldErrors) -> Vec<Share> {
    let Some(items) = data
        .get(field)
        .and_then(Value::as_array)
        .filter(|items| (1..=MAX_SHARES).contains(&items.len()))
    else {
        errors.add(Code::InvalidShares, field, MSG_SHARES);
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut shares = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(item) = item.as_object() else {
            errors.add(Code::InvalidShares, &format!("{field}.{i}"), MSG_BAD_DATA);
            continue;
        };
        let user = match int_field(item, "user") {
            IntField::Value(u) if u > 0 && seen.insert(u) => u,
            _ => {
                errors.add(
                    Code::InvalidShares,
                    &format!("{field}.{i}.user"),
                    MSG_BAD_DATA,
                );
                continue;
            }
        };
        let amount = match int_field(item, "amount") {
            IntField::Value(a) if (1..=super::purchase::MAX_ORDER_AMOUNT).contains(&a) => a,
            _ => {
                errors.add(
                    Code::InvalidShares,
                    &format!("{field}.{i}.amount"),
                    MSG_BAD_DATA,
                );
                continue;
            }
        };
        let description = match item.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) if d.chars().count() <= 255 => Some(d.clone()),
            Some(_) => {
                errors.add(
                    Code::InvalidShares,
                    &format!("{field}.{i}.description"),
                    MSG_BAD_DATA,
                );
                continue;
            }
        };
        shares.push(Share {
            user,
            amount,
            description,
        });
    }
    shares
}

fn parse_order(data: &Map<String, Value>, errors: &mut FieldErrors) -> i64 {
    match int_field(data, "order") {
        IntField::Value(v) if v > 0 => v,
        _ => {
            errors.add(Code::InvalidOrder, "order", MSG_BAD_DATA);
            0
        }
    }
}

/// `allocation.create`: `order` and its `recipients`.
pub fn parse_create(data: &Map<String, Value>) -> Result<(i64, Vec<Share>), Rejection> {
    let mut errors = FieldErrors::default();
    let order = parse_order(data, &mut errors);
    let shares = parse_shares(data, "recipients", &mut errors);
    errors.finish(|| (order, shares))
}

/// `allocation.refund`: the allocation (Ping++'s id) and its `senders`.
pub fn parse_refund(data: &Map<String, Value>) -> Result<(String, Vec<Share>), Rejection> {
    let mut errors = FieldErrors::default();
    let allocation = match data.get("allocation").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 64 => id.to_owned(),
        _ => {
            errors.add(Code::UnknownAllocation, "allocation", MSG_UNKNOWN);
            String::new()
        }
    };
    let shares = parse_shares(data, "senders", &mut errors);
    errors.finish(|| (allocation, shares))
}

/// `allocation.complete`: the order.
pub fn parse_complete(data: &Map<String, Value>) -> Result<i64, Rejection> {
    let mut errors = FieldErrors::default();
    let order = parse_order(data, &mut errors);
    errors.finish(|| order)
}

/// The `order_no`s: `l` (an allocation), `b` (an allocation refund), `f` (the completion), and
/// the row id in 19 digits.
pub fn order_no(kind: Kind, id: i64) -> String {
    let prefix = match kind {
        Kind::Allocation => 'l',
        Kind::Refund => 'b',
        Kind::Complete => 'f',
    };
    format!("{prefix}{id:019}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Allocation,
    Refund,
    Complete,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Allocation => "allocation",
            Kind::Refund => "allocation_refund",
            Kind::Complete => "allocation_complete",
        }
    }

    pub fn parse(word: &str) -> Option<Kind> {
        Some(match word {
            "allocation" => Kind::Allocation,
            "allocation_refund" => Kind::Refund,
            "allocation_complete" => Kind::Complete,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Succeeded,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    pub fn parse(word: &str) -> Option<Status> {
        Some(match word {
            "pending" => Status::Pending,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            _ => return None,
        })
    }

    /// Ping++'s words: `succeed` is success, `failure`/`failed` failure, the rest under way.
    pub fn from_pingpp(word: &str) -> Status {
        match word {
            "succeed" | "succeeded" => Status::Succeeded,
            "failure" | "failed" => Status::Failed,
            _ => Status::Pending,
        }
    }
}

/// What an allocation, allocation refund or completion object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub id: String,
    pub order_no: String,
    pub kind: Kind,
    pub status: Status,
    pub reason: Option<String>,
}

pub fn facts(object: &Value) -> Result<Facts, String> {
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    let kind = match (text("object"), text("type")) {
        (Some("allocation"), Some("allocation_refund")) => Kind::Refund,
        (Some("allocation"), _) => Kind::Allocation,
        (Some("allocation_complete"), _) => Kind::Complete,
        _ => return Err("not an allocation object".into()),
    };
    Ok(Facts {
        id: text("id").ok_or("the allocation has no id")?.to_owned(),
        order_no: text("order_no")
            .ok_or("the allocation has no order_no")?
            .to_owned(),
        kind,
        status: Status::from_pingpp(text("status").ok_or("the allocation has no status")?),
        reason: text("failure_msg").map(str::to_owned),
    })
}

/// A share given: from what Ping++ holds for the order to the user's e-wallet.
pub fn give(user: i64, amount: i64) -> Option<Journal> {
    Journal::transfer(
        AccountRef::System(SystemAccount::AllocationsPending),
        AccountRef::Wallet(user),
        amount,
    )
    .ok()
}

/// A share taken back.
pub fn take_back(user: i64, amount: i64) -> Option<Journal> {
    Journal::transfer(
        AccountRef::Wallet(user),
        AccountRef::System(SystemAccount::AllocationsPending),
        amount,
    )
    .ok()
}

/// The rest settled on the seller's sub-merchant.
pub fn settle(seller: i64, amount: i64) -> Option<Journal> {
    Journal::transfer(
        AccountRef::System(SystemAccount::AllocationsPending),
        AccountRef::Merchant(seller),
        amount,
    )
    .ok()
}

/// A share's order: income for the recipient, expense for a sender giving it back; its target
/// is the buyer's order.
pub fn share_order(user: i64, amount: i64, buyer_order: i64, direction: i16) -> OrderDraft {
    OrderDraft {
        owner_id: user,
        target_type: TARGET_TYPE,
        target_id: buyer_order.to_string(),
        title: TITLE,
        body: None,
        direction,
        amount,
        state: OrderState::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shares_are_checked_one_by_one() {
        let data = json!({"order": 5, "recipients": [{"user": 2, "amount": 20}, {"user": 2, "amount": 1},
            {"user": 3, "amount": 0}]});
        let refused = parse_create(data.as_object().unwrap()).unwrap_err();
        assert!(refused.errors.contains_key("recipients.1.user"));
        assert!(refused.errors.contains_key("recipients.2.amount"));
        let ok = json!({"order": 5, "recipients": [{"user": 2, "amount": 20, "description": "平台佣金"}]});
        let (order, shares) = parse_create(ok.as_object().unwrap()).unwrap();
        assert_eq!((order, Share::total(&shares)), (5, 20));
        assert!(parse_create(json!({"order": 5, "recipients": []}).as_object().unwrap()).is_err());
    }

    #[test]
    fn objects_are_read_by_kind() {
        let refund = json!({"object": "allocation", "type": "allocation_refund", "id": "37", "order_no": "b1", "status": "succeed"});
        let facts = facts(&refund).unwrap();
        assert_eq!(
            (facts.kind, facts.status),
            (Kind::Refund, Status::Succeeded)
        );
        let complete = json!({"object": "allocation_complete", "id": "68", "order_no": "f1", "status": "pending"});
        assert_eq!(super::facts(&complete).unwrap().status, Status::Pending);
    }
}

/// What Ping++ holds for a split order, from pluspay's record of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// What is in `allocations_pending` for the order.
    pub ledger: i64,
    /// What pending allocations will take of it.
    pub pending_allocations: i64,
    /// What pending refunds of the order hold.
    pub pending_refunds: i64,
    /// Given to recipients and not given back (succeeded or pending allocations, less
    /// succeeded allocation refunds): what no refund of the order may take.
    pub allocated_out: i64,
    /// Its completion, if one was asked for and did not fail.
    pub completion: Option<Status>,
    /// Allocation refunds under way.
    pub pending_back: i64,
}

impl Held {
    /// From the order's paid amount (0 unpaid), what succeeded refunds took from what was held,
    /// what its pending refunds hold, and its allocations as (kind, status, amount).
    pub fn of(
        paid: i64,
        refunds_from_held: i64,
        pending_refunds: i64,
        rows: &[(Kind, Status, i64)],
    ) -> Held {
        let sum = |kind: Kind, status: Status| {
            rows.iter()
                .filter(|r| r.0 == kind && r.1 == status)
                .map(|r| r.2)
                .sum::<i64>()
        };
        let given = sum(Kind::Allocation, Status::Succeeded);
        let back = sum(Kind::Refund, Status::Succeeded);
        let settled = sum(Kind::Complete, Status::Succeeded);
        let pending_allocations = sum(Kind::Allocation, Status::Pending);
        let completion = rows
            .iter()
            .filter(|r| r.0 == Kind::Complete && r.1 != Status::Failed)
            .map(|r| r.1)
            .max_by_key(|s| *s == Status::Succeeded);
        Held {
            ledger: paid - refunds_from_held - given + back - settled,
            pending_allocations,
            pending_refunds,
            allocated_out: given + pending_allocations - back,
            completion,
            pending_back: sum(Kind::Refund, Status::Pending),
        }
    }

    /// What a new allocation may still take.
    pub fn allocatable(&self) -> i64 {
        self.ledger - self.pending_allocations - self.pending_refunds
    }

    /// Whether anything of the order is under way (an allocation, an allocation refund, a
    /// refund): a completion then waits, since Ping++ settles what it holds when it completes.
    pub fn in_progress(&self) -> bool {
        self.pending_allocations > 0 || self.pending_back > 0 || self.pending_refunds > 0
    }

    /// What the completion settles on the seller (pending allocations keep theirs).
    pub fn settling(&self) -> i64 {
        self.ledger - self.pending_allocations
    }
}

/// How often a failed step of a reward's settlement is tried anew before a person is needed.
pub const MAX_REWARD_ATTEMPTS: i64 = 3;

/// What the worker does next for a paid reward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewardStep {
    /// Ask for (or again, if still on its way) the commission, attempt `n`.
    Commission(i64),
    /// Ask for the completion, attempt `n`.
    Complete(i64),
    /// Pull this allocation or completion (Ping++'s id) whose webhook has not come.
    Poll { kind: Kind, pingpp_id: String },
    /// Wait for what is under way (an answer not recorded yet).
    Wait,
    /// Settled, or given up on: nothing more to ask.
    Done,
}

/// One attempt of a reward's step as recorded: its command's outcome (`None` while it has no
/// result) and its allocation row (kind, status, Ping++ id), if it made one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardAttempt {
    pub step: &'static str,
    pub attempt: i64,
    pub command_succeeded: Option<bool>,
    pub row: Option<(Status, Option<String>)>,
}

impl RewardAttempt {
    fn failed(&self) -> bool {
        self.command_succeeded == Some(false) && self.row.is_none()
            || matches!(self.row, Some((Status::Failed, _)))
    }
}

/// The next step of a paid reward with `commission`, from its attempts so far: the commission
/// first (tried anew up to [`MAX_REWARD_ATTEMPTS`] times; then the creator keeps it all), then
/// the completion (the same; then a person is needed).
pub fn next_reward_step(commission: i64, attempts: &[RewardAttempt]) -> RewardStep {
    let of = |step: &str| {
        let mut these: Vec<&RewardAttempt> = attempts.iter().filter(|a| a.step == step).collect();
        these.sort_by_key(|a| a.attempt);
        these
    };
    let step_state = |these: &[&RewardAttempt], kind: Kind| -> Option<RewardStep> {
        let last = these.last()?;
        match &last.row {
            Some((Status::Succeeded, _)) => Some(RewardStep::Done),
            Some((Status::Pending, Some(id))) => Some(RewardStep::Poll {
                kind,
                pingpp_id: id.clone(),
            }),
            Some((Status::Pending, None)) => Some(RewardStep::Wait),
            _ if last.command_succeeded.is_none() && last.row.is_none() => Some(RewardStep::Wait),
            _ if last.failed() => None,
            _ => Some(RewardStep::Wait),
        }
    };
    let commissions = of("commission");
    if commission > 0 {
        match step_state(&commissions, Kind::Allocation) {
            Some(RewardStep::Done) => {}
            Some(other) => return other,
            None => {
                let next = commissions.last().map_or(1, |a| a.attempt + 1);
                if next <= MAX_REWARD_ATTEMPTS {
                    return RewardStep::Commission(next);
                }
            }
        }
    }
    let completions = of("complete");
    match step_state(&completions, Kind::Complete) {
        Some(state) => state,
        None => {
            let next = completions.last().map_or(1, |a| a.attempt + 1);
            if next <= MAX_REWARD_ATTEMPTS {
                RewardStep::Complete(next)
            } else {
                RewardStep::Done
            }
        }
    }
}

#[cfg(test)]
mod reward_tests {
    use super::*;

    fn attempt(step: &'static str, n: i64, ok: Option<bool>, row: Option<Status>) -> RewardAttempt {
        RewardAttempt {
            step,
            attempt: n,
            command_succeeded: ok,
            row: row.map(|s| (s, Some(format!("37{n}")))),
        }
    }

    #[test]
    fn a_reward_is_settled_commission_first_then_completed() {
        assert_eq!(next_reward_step(100, &[]), RewardStep::Commission(1));
        assert_eq!(next_reward_step(0, &[]), RewardStep::Complete(1));
        let asked = [attempt("commission", 1, None, None)];
        assert_eq!(next_reward_step(100, &asked), RewardStep::Wait);
        let pending = [attempt("commission", 1, Some(true), Some(Status::Pending))];
        assert!(matches!(
            next_reward_step(100, &pending),
            RewardStep::Poll { .. }
        ));
        let given = [attempt(
            "commission",
            1,
            Some(true),
            Some(Status::Succeeded),
        )];
        assert_eq!(next_reward_step(100, &given), RewardStep::Complete(1));
        let refused = [attempt("commission", 1, Some(false), None)];
        assert_eq!(next_reward_step(100, &refused), RewardStep::Commission(2));
        let done = [
            attempt("commission", 1, Some(true), Some(Status::Succeeded)),
            attempt("complete", 1, Some(true), Some(Status::Succeeded)),
        ];
        assert_eq!(next_reward_step(100, &done), RewardStep::Done);
    }

    #[test]
    fn failures_are_tried_anew_a_few_times_then_left_to_a_person() {
        let failed: Vec<RewardAttempt> = (1..=MAX_REWARD_ATTEMPTS)
            .map(|n| attempt("commission", n, Some(true), Some(Status::Failed)))
            .collect();
        // The commission given up: the creator keeps it all.
        assert_eq!(next_reward_step(100, &failed), RewardStep::Complete(1));
        let mut all = failed.clone();
        all.extend((1..=MAX_REWARD_ATTEMPTS).map(|n| attempt("complete", n, Some(false), None)));
        assert_eq!(next_reward_step(100, &all), RewardStep::Done);
    }
}
