//! Red packets (红包): a sender puts `total` fen into `count` shares that other users claim, one
//! share each, until they are all taken or the packet expires and what is left goes back to the
//! sender.
//!
//! The shares are fixed when the packet is made ([`shares`]) and stored one row per share, so
//! that a claim takes the next unclaimed share and decides nothing about amounts:
//!
//! - `equal`: `total / count` each, the remainder spread one fen at a time over the first shares
//!   (100 fen in 3 shares: 34, 33, 33).
//! - `random`: the "double average" method. Each share but the last is drawn uniformly from
//!   1 fen to twice the average of what is left, less one fen (so its expected value is that
//!   average), and never so much that a later share would get less than 1 fen; the last takes
//!   the rest. The shares are then shuffled, so that the order of claims does not decide who
//!   gets the widest draw. Every share is at least 1 fen and they sum exactly to the total.
//!
//! While a packet is open its unclaimed money is in the sender's `packets` account: out of the
//! wallet, not yet anybody else's. Orders (seed shape): the sender's expense when the packet is
//! made (`redpacket`), each claimer's income (`redpacket_claim`) and the sender's income for what
//! came back at expiry (`redpacket_refund`), each with the packet's id as `target_id`.
//!
//! Who may do what: anyone but the sender may claim a packet without `users`; with `users`, only
//! those users. The sender never claims their own (what they don't give away comes back at
//! expiry). The sender and everyone who may claim it may see it (`redpacket.get`).

use serde_json::{Map, Value};

use super::ledger::{AccountRef, Journal, WalletFigures};
use super::order::{OrderDraft, OrderState};
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{self, AmountMessages, IntField, TextField};

/// The most shares a packet may have, and the most users it may name.
pub const MAX_COUNT: i32 = 1000;
pub const MAX_USERS: usize = 1000;
/// The longest a packet may stay open: seven days.
pub const MAX_EXPIRES_IN_SECS: i64 = 7 * 24 * 3600;

pub const MSG_CREATED: &str = "红包发送成功";
pub const MSG_CLAIMED: &str = "红包领取成功";
pub const MSG_TOTAL_REQUIRED: &str = "请输入红包金额";
pub const MSG_TOTAL_TOO_SMALL: &str = "红包金额不能小于0.01元";
pub const MSG_SHARE_TOO_SMALL: &str = "单个红包金额不能小于0.01元";
pub const MSG_INSUFFICIENT: &str = "红包金额超出账户余额";
pub const MSG_COUNT_REQUIRED: &str = "请输入红包个数";
pub const MSG_BAD_COUNT: &str = "红包个数必须在1到1000之间";
pub const MSG_MODE_REQUIRED: &str = "请选择红包类型";
pub const MSG_BAD_MODE: &str = "你选择的红包类型不支持";
pub const MSG_EXPIRES_IN_REQUIRED: &str = "请设置红包有效期";
pub const MSG_BAD_EXPIRES_IN: &str = "红包有效期必须在1秒到7天之间";
pub const MSG_USERS_EMPTY: &str = "请选择可以领取红包的用户";
pub const MSG_USERS_TOO_MANY: &str = "可以领取红包的用户不能超过1000个";
pub const MSG_USERS_REPEATED: &str = "可以领取红包的用户不能重复";
pub const MSG_USERS_SENDER: &str = "不能把自己设为领取红包的用户";
pub const MSG_USERS_TOO_FEW: &str = "可以领取红包的用户不能少于红包个数";
pub const MSG_REDPACKET_REQUIRED: &str = "请选择红包";
pub const MSG_NOT_FOUND: &str = "红包不存在";
pub const MSG_OWN: &str = "不能领取自己发的红包";
pub const MSG_NOT_ALLOWED: &str = "你不能领取该红包";
pub const MSG_NOT_SHOWN: &str = "你无权查看该红包";
pub const MSG_ALREADY_CLAIMED: &str = "你已领取过该红包";
pub const MSG_EMPTY: &str = "红包已被领完";
pub const MSG_EXPIRED: &str = "红包已过期";

pub const TARGET_REDPACKET: &str = "redpacket";
pub const TARGET_CLAIM: &str = "redpacket_claim";
pub const TARGET_REFUND: &str = "redpacket_refund";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Equal,
    Random,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Equal => "equal",
            Mode::Random => "random",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        [Mode::Equal, Mode::Random]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// `open` while shares are left and the expiry has not closed it; `finished` once every share
/// is claimed; `expired` once the expiry gave the rest back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketStatus {
    Open,
    Finished,
    Expired,
}

impl PacketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PacketStatus::Open => "open",
            PacketStatus::Finished => "finished",
            PacketStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<PacketStatus> {
        [
            PacketStatus::Open,
            PacketStatus::Finished,
            PacketStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub user: i64,
    pub total: i64,
    pub count: i32,
    pub mode: Mode,
    pub expires_in: i64,
    /// Who may claim; `None`: anyone but the sender.
    pub users: Option<Vec<i64>>,
}

/// A packet as locked for a claim or its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPacket {
    pub id: i64,
    /// The sender.
    pub user: i64,
    pub total: i64,
    pub count: i32,
    pub claimed: i32,
    pub claimed_amount: i64,
    pub status: PacketStatus,
    pub users: Option<Vec<i64>>,
    /// Whether its expiry has come (by the database's clock).
    pub past_expiry: bool,
}

impl LockedPacket {
    /// Whether `user` may claim it: not the sender, and one of its users when it names them.
    pub fn claimable_by(&self, user: i64) -> bool {
        user != self.user
            && self
                .users
                .as_ref()
                .is_none_or(|users| users.contains(&user))
    }

    /// Whether `user` may see it and who claimed what: the sender, and whoever may claim it.
    pub fn visible_to(&self, user: i64) -> bool {
        user == self.user || self.claimable_by(user)
    }

    /// What is still in the packet: neither claimed nor given back.
    pub fn remaining(&self) -> i64 {
        match self.status {
            PacketStatus::Open => self.total - self.claimed_amount,
            PacketStatus::Finished | PacketStatus::Expired => 0,
        }
    }
}

/// A claim's movement: the share out of the sender's `packets` account into the claimer's
/// wallet, with the claimer's income order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub number: i32,
    pub amount: i64,
    pub journal: Journal,
    pub order: OrderDraft,
}

/// What the expiry gives back to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub amount: i64,
    pub journal: Journal,
    pub order: OrderDraft,
}

pub fn parse_create(user: i64, data: &Map<String, Value>) -> Result<CreateRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let total = validate::amount(
        &mut errors,
        data,
        "total",
        &AmountMessages {
            required: MSG_TOTAL_REQUIRED,
            too_small: MSG_TOTAL_TOO_SMALL,
        },
    );
    let count = count(&mut errors, data);
    if total > 0 && count > 0 && total < i64::from(count) {
        errors.add(Code::AmountTooSmall, "total", MSG_SHARE_TOO_SMALL);
    }
    let mode = match validate::text_field(data, "mode") {
        TextField::Missing => {
            errors.add(Code::ModeRequired, "mode", MSG_MODE_REQUIRED);
            None
        }
        TextField::Value(text) if Mode::parse(&text).is_some() => Mode::parse(&text),
        _ => {
            errors.add(Code::InvalidMode, "mode", MSG_BAD_MODE);
            None
        }
    };
    let expires_in = expires_in(&mut errors, data);
    let users = users(&mut errors, data, user, count);
    errors.finish(|| CreateRequest {
        user,
        total,
        count,
        mode: mode.expect("a mode when no error was found"),
        expires_in,
        users,
    })
}

/// `count`: 1 to [`MAX_COUNT`] shares; 0 after an error.
fn count(errors: &mut FieldErrors, data: &Map<String, Value>) -> i32 {
    match validate::int_field(data, "count") {
        IntField::Missing => {
            errors.add(Code::CountRequired, "count", MSG_COUNT_REQUIRED);
            0
        }
        IntField::Value(v) if (1..=i64::from(MAX_COUNT)).contains(&v) => v as i32,
        IntField::Value(_) | IntField::Overflow => {
            errors.add(Code::InvalidCount, "count", MSG_BAD_COUNT);
            0
        }
        IntField::NotInteger => {
            errors.add(Code::InvalidCount, "count", validate::MSG_BAD_DATA);
            0
        }
    }
}

/// `expires_in`: whole seconds from 1 to [`MAX_EXPIRES_IN_SECS`]; 0 after an error.
fn expires_in(errors: &mut FieldErrors, data: &Map<String, Value>) -> i64 {
    match validate::int_field(data, "expires_in") {
        IntField::Missing => {
            errors.add(
                Code::ExpiresInRequired,
                "expires_in",
                MSG_EXPIRES_IN_REQUIRED,
            );
            0
        }
        IntField::Value(v) if (1..=MAX_EXPIRES_IN_SECS).contains(&v) => v,
        IntField::Value(_) | IntField::Overflow => {
            errors.add(Code::InvalidExpiresIn, "expires_in", MSG_BAD_EXPIRES_IN);
            0
        }
        IntField::NotInteger => {
            errors.add(Code::InvalidExpiresIn, "expires_in", validate::MSG_BAD_DATA);
            0
        }
    }
}

/// `users` (optional): 1 to [`MAX_USERS`] distinct user ids, not the sender, at least as many as
/// there are shares (fewer could never take them all). `None` when absent or after an error.
fn users(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    sender: i64,
    count: i32,
) -> Option<Vec<i64>> {
    let items = match data.get("users") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.add(Code::InvalidUsers, "users", validate::MSG_BAD_DATA);
            return None;
        }
    };
    let ids: Option<Vec<i64>> = items
        .iter()
        .map(|item| item.as_i64().filter(|&id| id > 0))
        .collect();
    let Some(ids) = ids else {
        errors.add(Code::InvalidUsers, "users", validate::MSG_BAD_DATA);
        return None;
    };
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let problem = if ids.is_empty() {
        Some(MSG_USERS_EMPTY)
    } else if ids.len() > MAX_USERS {
        Some(MSG_USERS_TOO_MANY)
    } else if distinct.len() != ids.len() {
        Some(MSG_USERS_REPEATED)
    } else if ids.contains(&sender) {
        Some(MSG_USERS_SENDER)
    } else if count > 0 && ids.len() < count as usize {
        Some(MSG_USERS_TOO_FEW)
    } else {
        None
    };
    match problem {
        Some(message) => {
            errors.add(Code::InvalidUsers, "users", message);
            None
        }
        None => Some(ids),
    }
}

/// The decision on the sender's side: the whole total out of their wallet into their `packets`
/// account, when the balance has it.
pub fn decide_create(request: &CreateRequest, sender: WalletFigures) -> Result<Journal, Rejection> {
    let into = AccountRef::Packets(request.user);
    let refusal = ("total", MSG_INSUFFICIENT);
    super::ledger::set_aside(request.user, into, request.total, sender, refusal)
}

pub fn create_order(request: &CreateRequest, packet_id: i64) -> OrderDraft {
    OrderDraft {
        owner_id: request.user,
        target_type: TARGET_REDPACKET,
        target_id: packet_id.to_string(),
        title: "发红包",
        body: None,
        direction: -1,
        amount: request.total,
        state: OrderState::Succeeded,
    }
}

/// The shares of a new packet, in claim order: `seed` drives the random mode (the engine takes it
/// from the operating system; tests choose it).
pub fn shares(request: &CreateRequest, seed: u64) -> Vec<i64> {
    match request.mode {
        Mode::Equal => equal_shares(request.total, request.count),
        Mode::Random => random_shares(request.total, request.count, &mut ShareRng::new(seed)),
    }
}

/// `total / count` each, the first `total % count` shares one fen more. Needs
/// `1 <= count <= total`.
pub fn equal_shares(total: i64, count: i32) -> Vec<i64> {
    let count = i64::from(count);
    let (base, rest) = (total / count, total % count);
    (0..count).map(|i| base + i64::from(i < rest)).collect()
}

/// The double average method (module docs), shuffled. Needs `1 <= count <= total`.
pub fn random_shares(total: i64, count: i32, rng: &mut ShareRng) -> Vec<i64> {
    let mut shares = Vec::with_capacity(count as usize);
    let mut left = total;
    for still_to_make in (2..=i64::from(count)).rev() {
        // `left >= still_to_make` throughout, so twice the average is at least 2 and leaving
        // 1 fen for each later share leaves at least 1 fen for this one.
        let double_average = (i128::from(left) * 2 / i128::from(still_to_make)) as i64;
        let most = (double_average - 1).min(left - (still_to_make - 1)).max(1);
        let share = 1 + rng.below(most as u64) as i64;
        shares.push(share);
        left -= share;
    }
    shares.push(left);
    for i in (1..shares.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shares.swap(i, j);
    }
    shares
}

/// SplitMix64: small, fast, and seedable, which is all a share split needs (it protects no
/// secret: the shares are stored and shown).
#[derive(Debug, Clone)]
pub struct ShareRng(u64);

impl ShareRng {
    pub fn new(seed: u64) -> Self {
        ShareRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), without the bias of a bare modulo.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let span = 1u128 << 64;
        let zone = span - span % u128::from(n);
        loop {
            let v = u128::from(self.next_u64());
            if v < zone {
                return (v % u128::from(n)) as u64;
            }
        }
    }
}

/// The packet a `redpacket.claim` or `redpacket.get` names.
pub fn parse_packet(data: &Map<String, Value>) -> Result<i64, Rejection> {
    let mut errors = FieldErrors::default();
    let id = validate::id(
        &mut errors,
        data,
        "redpacket",
        (Code::RedpacketRequired, Code::InvalidRedpacket),
        MSG_REDPACKET_REQUIRED,
    );
    errors.finish(|| id)
}

/// The packet a claim names, if it names one that can be: for locking its sender's wallet with
/// the batch's other wallets, before the claim is decided.
pub fn packet_named(data: &Map<String, Value>) -> Option<i64> {
    match validate::int_field(data, "redpacket") {
        IntField::Value(id) if id > 0 => Some(id),
        _ => None,
    }
}

/// The number of the share `claimer` gets (the next unclaimed one), or why none.
/// `already_claimed`: whether `claimer` holds a share of it already.
pub fn next_share_for(
    packet: Option<&LockedPacket>,
    claimer: i64,
    already_claimed: bool,
) -> Result<i32, Rejection> {
    let refuse = |code, message| Err(Rejection::field(code, "redpacket", message));
    let Some(packet) = packet else {
        return refuse(Code::RedpacketNotFound, MSG_NOT_FOUND);
    };
    if claimer == packet.user {
        return refuse(Code::NotAllowed, MSG_OWN);
    }
    if !packet.claimable_by(claimer) {
        return refuse(Code::NotAllowed, MSG_NOT_ALLOWED);
    }
    if already_claimed {
        return refuse(Code::AlreadyClaimed, MSG_ALREADY_CLAIMED);
    }
    // All taken is what happened to a packet whose time has also run out since.
    if packet.status == PacketStatus::Finished || packet.claimed >= packet.count {
        return refuse(Code::RedpacketEmpty, MSG_EMPTY);
    }
    if packet.status == PacketStatus::Expired || packet.past_expiry {
        return refuse(Code::RedpacketExpired, MSG_EXPIRED);
    }
    Ok(packet.claimed + 1)
}

/// Share `number` (of `amount` fen) to `claimer`: refused only when it would take the claimer's
/// wallet past the ceiling.
pub fn claim(
    packet: &LockedPacket,
    claimer: i64,
    number: i32,
    amount: i64,
    wallet: WalletFigures,
) -> Result<Claim, Rejection> {
    if wallet.moved(amount).is_none() {
        return Err(Rejection::field(
            Code::AmountOverflow,
            "redpacket",
            validate::MSG_BAD_DATA,
        ));
    }
    let journal = Journal::transfer(
        AccountRef::Packets(packet.user),
        AccountRef::Wallet(claimer),
        amount,
    )
    .expect("a share is positive and goes to another user");
    Ok(Claim {
        number,
        amount,
        journal,
        order: OrderDraft {
            owner_id: claimer,
            target_type: TARGET_CLAIM,
            target_id: packet.id.to_string(),
            title: "领红包",
            body: None,
            direction: 1,
            amount,
            state: OrderState::Succeeded,
        },
    })
}

/// What an open packet gives back to its sender at expiry: everything not claimed. Never
/// refused: the money was the sender's. `None` when nothing is left (it is then finished).
pub fn refund(packet: &LockedPacket) -> Option<Refund> {
    let amount = packet.total - packet.claimed_amount;
    if packet.status != PacketStatus::Open || amount <= 0 {
        return None;
    }
    Some(Refund {
        amount,
        journal: Journal::transfer(
            AccountRef::Packets(packet.user),
            AccountRef::Wallet(packet.user),
            amount,
        )
        .expect("a positive remainder"),
        order: OrderDraft {
            owner_id: packet.user,
            target_type: TARGET_REFUND,
            target_id: packet.id.to_string(),
            title: "红包退款",
            body: None,
            direction: 1,
            amount,
            state: OrderState::Succeeded,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn create(v: Value) -> Result<CreateRequest, Rejection> {
        parse_create(1, &data(v))
    }

    fn open(total: i64, count: i32) -> LockedPacket {
        LockedPacket {
            id: 9,
            user: 1,
            total,
            count,
            claimed: 0,
            claimed_amount: 0,
            status: PacketStatus::Open,
            users: None,
            past_expiry: false,
        }
    }

    #[test]
    fn create_reads_every_field() {
        let ok = create(
            json!({"total": 100, "count": 3, "mode": "random", "expires_in": 60,
                               "users": [2, 3, 4]}),
        )
        .unwrap();
        assert_eq!(
            ok,
            CreateRequest {
                user: 1,
                total: 100,
                count: 3,
                mode: Mode::Random,
                expires_in: 60,
                users: Some(vec![2, 3, 4]),
            }
        );
        let anyone =
            create(json!({"total": 1, "count": 1, "mode": "equal", "expires_in": 1})).unwrap();
        assert_eq!(anyone.users, None);
    }

    #[test]
    fn create_names_every_bad_field() {
        let bad = create(json!({})).unwrap_err();
        assert_eq!(bad.code, Code::AmountRequired);
        assert_eq!(
            bad.errors.keys().collect::<Vec<_>>(),
            vec!["count", "expires_in", "mode", "total"]
        );
        assert_eq!(bad.errors["count"], vec![MSG_COUNT_REQUIRED]);
        let cases = [
            (json!({"total": 0}), "total", Code::AmountTooSmall),
            (json!({"total": "1"}), "total", Code::InvalidAmount),
            (json!({"total": 1e30}), "total", Code::AmountOverflow),
            (json!({"count": 0}), "count", Code::InvalidCount),
            (json!({"count": MAX_COUNT + 1}), "count", Code::InvalidCount),
            (json!({"count": 1.5}), "count", Code::InvalidCount),
            (json!({"mode": "lucky"}), "mode", Code::InvalidMode),
            (json!({"mode": 1}), "mode", Code::InvalidMode),
            (
                json!({"expires_in": 0}),
                "expires_in",
                Code::InvalidExpiresIn,
            ),
            (
                json!({"expires_in": MAX_EXPIRES_IN_SECS + 1}),
                "expires_in",
                Code::InvalidExpiresIn,
            ),
            (json!({"users": "2"}), "users", Code::InvalidUsers),
            (json!({"users": []}), "users", Code::InvalidUsers),
            (json!({"users": [2, 0]}), "users", Code::InvalidUsers),
            (json!({"users": [2, "3"]}), "users", Code::InvalidUsers),
            (json!({"users": [2, 2]}), "users", Code::InvalidUsers),
            (json!({"users": [1, 2]}), "users", Code::InvalidUsers),
            (
                json!({"count": 3, "users": [2, 3]}),
                "users",
                Code::InvalidUsers,
            ),
        ];
        for (bad, field, code) in cases {
            let mut fields = data(json!({"total": 100, "count": 2, "mode": "equal",
                                         "expires_in": 60}));
            fields.extend(data(bad.clone()));
            let refused = parse_create(1, &fields).unwrap_err();
            assert_eq!(refused.code, code, "{bad}");
            assert_eq!(
                refused.errors.keys().collect::<Vec<_>>(),
                vec![field],
                "{bad}"
            );
        }
        let many: Vec<i64> = (2..=MAX_USERS as i64 + 2).collect();
        let too_many = create(json!({"total": 100, "count": 2, "mode": "equal",
                                     "expires_in": 60, "users": many}))
        .unwrap_err();
        assert_eq!(too_many.errors["users"], vec![MSG_USERS_TOO_MANY]);
    }

    #[test]
    fn every_share_needs_a_fen() {
        let refused =
            create(json!({"total": 2, "count": 3, "mode": "equal", "expires_in": 5})).unwrap_err();
        assert_eq!(refused.code, Code::AmountTooSmall);
        assert_eq!(refused.errors["total"], vec![MSG_SHARE_TOO_SMALL]);
        assert!(create(json!({"total": 3, "count": 3, "mode": "random", "expires_in": 5})).is_ok());
    }

    #[test]
    fn create_needs_the_balance() {
        let request =
            create(json!({"total": 100, "count": 2, "mode": "equal", "expires_in": 5})).unwrap();
        assert_eq!(
            decide_create(&request, 99.into()).unwrap_err().code,
            Code::InsufficientBalance
        );
        assert_eq!(
            decide_create(&request, 100.into())
                .unwrap()
                .entries()
                .collect::<Vec<_>>(),
            vec![(AccountRef::Wallet(1), -100), (AccountRef::Packets(1), 100)]
        );
    }

    #[test]
    fn equal_shares_spread_the_remainder_over_the_first() {
        assert_eq!(equal_shares(100, 3), vec![34, 33, 33]);
        assert_eq!(equal_shares(7, 7), vec![1; 7]);
        assert_eq!(equal_shares(5, 1), vec![5]);
        assert_eq!(equal_shares(1003, 1000)[..4], [2, 2, 2, 1]);
    }

    #[test]
    fn random_shares_depend_on_the_seed_only() {
        let a = random_shares(10_000, 10, &mut ShareRng::new(7));
        assert_eq!(a, random_shares(10_000, 10, &mut ShareRng::new(7)));
        assert_ne!(a, random_shares(10_000, 10, &mut ShareRng::new(8)));
        assert_eq!(a.iter().sum::<i64>(), 10_000);
        assert_eq!(random_shares(5, 5, &mut ShareRng::new(1)), vec![1; 5]);
        assert_eq!(
            random_shares(i64::MAX, 2, &mut ShareRng::new(3))
                .iter()
                .map(|&s| i128::from(s))
                .sum::<i128>(),
            i128::from(i64::MAX)
        );
    }

    #[test]
    fn random_shares_average_out() {
        // Each position's mean over many packets is near the average: the shuffle leaves no
        // position favoured.
        let (total, count, runs) = (1_000i64, 5, 4_000);
        let mut sums = vec![0i64; count as usize];
        let mut rng = ShareRng::new(42);
        for _ in 0..runs {
            for (sum, share) in sums.iter_mut().zip(random_shares(total, count, &mut rng)) {
                *sum += share;
            }
        }
        for sum in sums {
            let mean = sum as f64 / f64::from(runs);
            assert!((mean - 200.0).abs() < 15.0, "{mean}");
        }
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = ShareRng::new(0);
        for n in [1u64, 2, 3, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(rng.below(n) < n);
            }
        }
    }

    #[test]
    fn claims_follow_the_rules_in_order() {
        let packet = open(100, 2);
        assert_eq!(next_share_for(Some(&packet), 2, false), Ok(1));
        let code = |p: Option<&LockedPacket>, who, already| {
            next_share_for(p, who, already).unwrap_err().code
        };
        assert_eq!(code(None, 2, false), Code::RedpacketNotFound);
        assert_eq!(code(Some(&packet), 1, false), Code::NotAllowed);
        assert_eq!(code(Some(&packet), 2, true), Code::AlreadyClaimed);
        let only_3 = LockedPacket {
            users: Some(vec![3]),
            ..open(100, 1)
        };
        assert_eq!(code(Some(&only_3), 2, false), Code::NotAllowed);
        assert_eq!(next_share_for(Some(&only_3), 3, false), Ok(1));
        let taken = LockedPacket {
            claimed: 2,
            claimed_amount: 100,
            status: PacketStatus::Finished,
            past_expiry: true,
            ..open(100, 2)
        };
        assert_eq!(code(Some(&taken), 2, false), Code::RedpacketEmpty);
        assert_eq!(code(Some(&taken), 2, true), Code::AlreadyClaimed);
        let late = LockedPacket {
            past_expiry: true,
            ..open(100, 2)
        };
        assert_eq!(code(Some(&late), 2, false), Code::RedpacketExpired);
        let expired = LockedPacket {
            status: PacketStatus::Expired,
            ..open(100, 2)
        };
        assert_eq!(code(Some(&expired), 2, false), Code::RedpacketExpired);
        let second = LockedPacket {
            claimed: 1,
            claimed_amount: 50,
            ..open(100, 2)
        };
        assert_eq!(next_share_for(Some(&second), 3, false), Ok(2));
    }

    #[test]
    fn who_may_see() {
        let packet = LockedPacket {
            users: Some(vec![3, 4]),
            ..open(10, 2)
        };
        assert!(packet.visible_to(1));
        assert!(packet.visible_to(4));
        assert!(!packet.visible_to(2));
        assert!(open(10, 2).visible_to(2));
    }

    #[test]
    fn a_claim_moves_the_share_from_the_packets_account() {
        let claimed = claim(&open(100, 2), 2, 1, 60, 0.into()).unwrap();
        assert_eq!(
            claimed.journal.entries().collect::<Vec<_>>(),
            vec![(AccountRef::Wallet(2), 60), (AccountRef::Packets(1), -60)]
        );
        assert_eq!(
            (
                claimed.order.owner_id,
                claimed.order.direction,
                claimed.order.amount
            ),
            (2, 1, 60)
        );
        assert_eq!(claimed.order.target_type, TARGET_CLAIM);
        let full = WalletFigures::from(crate::domain::ledger::WALLET_CEILING);
        assert_eq!(
            claim(&open(100, 2), 2, 1, 60, full).unwrap_err().code,
            Code::AmountOverflow
        );
    }

    #[test]
    fn the_refund_is_what_was_not_claimed() {
        let packet = LockedPacket {
            claimed: 1,
            claimed_amount: 34,
            ..open(100, 3)
        };
        let refund = refund(&packet).unwrap();
        assert_eq!(refund.amount, 66);
        assert_eq!(
            refund.journal.entries().collect::<Vec<_>>(),
            vec![(AccountRef::Wallet(1), 66), (AccountRef::Packets(1), -66)]
        );
        assert_eq!(refund.order.target_type, TARGET_REFUND);
        let finished = LockedPacket {
            claimed: 3,
            claimed_amount: 100,
            status: PacketStatus::Finished,
            ..open(100, 3)
        };
        assert_eq!(super::refund(&finished), None);
        assert_eq!(finished.remaining(), 0);
        assert_eq!(packet.remaining(), 66);
    }
}
