//! The plan, all from the seed: the commands, their copies, the bad messages and the chaos.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::{BASE_COMMANDS, DUPLICATED_PERCENT, PUBLISHERS, USERS};
use crate::support::fake_pingpp::FakePingpp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Kind {
    Transfer,
    Reward,
    Recharge,
    Cash,
    Transform,
    Hold,
    Redpacket,
    Read,
}

/// What happens after a recharge's result: the payer pays (or the channel fails), and the
/// signed event arrives, maybe more than once, maybe racing a `recharge.retrieve`.
#[derive(Clone, Debug)]
pub(super) struct RechargePlan {
    pub(super) pay: bool,
    pub(super) event_copies: usize,
    /// Copies of a `recharge.retrieve` sent too, if any.
    pub(super) retrieve_copies: Option<usize>,
    pub(super) retrieve_first: bool,
    /// Fen to refund once the recharge is seen paid, if any (Ping++ decides at once: the
    /// refund ends in its command, which may be killed between its steps).
    pub(super) refund: Option<i64>,
}

/// How a hold ends: captured (all or part) to another user, released, or left to expire. Its
/// expiry is seconds away, so under the chaos a follow-up may come too late (`hold_closed`).
#[derive(Clone, Debug)]
pub(super) enum HoldEnd {
    Capture { receiver: i64, amount: i64 },
    Release,
    Expire,
}

#[derive(Clone, Debug)]
pub(super) struct HoldPlan {
    pub(super) end: HoldEnd,
    pub(super) copies: usize,
}

/// Who claims a red packet once it is made (a user may be named twice: the second claim of
/// theirs is `already_claimed`); more claimers than shares, so some find it empty, and an
/// expiry seconds away, so under the chaos some come too late.
#[derive(Clone, Debug)]
pub(super) struct RedpacketPlan {
    pub(super) claimers: Vec<i64>,
}

/// The operator's decisions on a cash request: usually one, sometimes both racing.
#[derive(Clone, Debug)]
pub(super) struct CashPlan {
    pub(super) decisions: Vec<(&'static str, usize)>,
}

#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) id: String,
    pub(super) kind: Kind,
    pub(super) command: Value,
    pub(super) recharge: Option<RechargePlan>,
    pub(super) cash: Option<CashPlan>,
    pub(super) hold: Option<HoldPlan>,
    pub(super) redpacket: Option<RedpacketPlan>,
}

/// One message a publisher sends, in its order.
#[derive(Clone, Debug)]
pub(super) enum Send {
    /// The first copy of base command `i`: takes a window permit.
    First(usize),
    /// Another copy of base command `i`.
    Copy(usize),
    /// Bad message `i`.
    Bad(usize),
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    /// Straight into the commands queue, where no exchange would route it.
    CommandsQueue,
    CommandsExchange(&'static str),
    Webhooks,
}

/// A message meant for the dead letters.
#[derive(Clone, Debug)]
pub(super) struct Bad {
    pub(super) id: String,
    pub(super) target: Target,
    pub(super) body: Vec<u8>,
    /// What the dead letter's reason must mention.
    pub(super) reason: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chaos {
    KillMain,
    StartSecond,
    KillSecond,
    StopSecond,
    RestartRabbitmq,
    RestartPostgres,
    PingppHiccup,
}

pub(super) struct Scenario {
    pub(super) plans: Vec<Plan>,
    pub(super) sends: Vec<Vec<Send>>,
    pub(super) bad: Vec<Bad>,
    /// (base results seen, what to do then), in order.
    pub(super) schedule: Vec<(usize, Chaos)>,
    pub(super) duplicated: usize,
}

fn other_user(rng: &mut StdRng, user: i64) -> i64 {
    (user + rng.random_range(1..USERS) - 1) % USERS + 1
}

pub(super) fn scenario(rng: &mut StdRng, fake: &FakePingpp) -> Scenario {
    let mut plans = Vec::with_capacity(BASE_COMMANDS);
    for i in 0..BASE_COMMANDS {
        let id = format!("c-{i}");
        let user = rng.random_range(1..=USERS);
        let roll = rng.random_range(0..100);
        let (kind, data) = match roll {
            0..30 => (
                Kind::Transfer,
                json!({ "user": other_user(rng, user), "amount": rng.random_range(1..=2_500) }),
            ),
            30..46 => (
                Kind::Reward,
                json!({ "user": other_user(rng, user), "amount": rng.random_range(1..=1_500),
                        "body": "打赏" }),
            ),
            46..62 => (
                Kind::Recharge,
                json!({ "type": if rng.random_bool(0.5) { "wx" } else { "alipay" },
                        "amount": rng.random_range(100..=4_000) }),
            ),
            62..76 => (
                Kind::Cash,
                json!({ "value": rng.random_range(100..=3_000),
                        "type": if rng.random_bool(0.5) { "alipay" } else { "wechat" },
                        "account": format!("u{user}@example.com") }),
            ),
            76..86 => (
                Kind::Transform,
                json!({ "amount": rng.random_range(100..=2_000) }),
            ),
            86..91 => (
                Kind::Hold,
                json!({ "amount": rng.random_range(1..=1_500), "reason": "chaos 悬赏",
                        "expires_in": rng.random_range(2..=5) }),
            ),
            91..96 => (
                Kind::Redpacket,
                json!({ "total": rng.random_range(10..=2_000), "count": rng.random_range(1..=5),
                        "mode": if rng.random_bool(0.5) { "random" } else { "equal" },
                        "expires_in": rng.random_range(3..=6) }),
            ),
            _ => (Kind::Read, json!({ "limit": 5 })),
        };
        let command_type = match kind {
            Kind::Transfer => "transfer",
            Kind::Reward => "reward",
            Kind::Recharge => "recharge",
            Kind::Cash => "cash",
            Kind::Transform => "transform",
            Kind::Hold => "hold.create",
            Kind::Redpacket => "redpacket.create",
            Kind::Read if roll % 2 == 0 => "wallet.get",
            Kind::Read => "orders.list",
        };
        let recharge = (kind == Kind::Recharge).then(|| RechargePlan {
            pay: rng.random_bool(0.85),
            event_copies: match rng.random_range(0..100) {
                0..65 => 1,
                65..90 => 2,
                _ => 3,
            },
            retrieve_copies: rng
                .random_bool(0.25)
                .then(|| if rng.random_bool(0.2) { 2 } else { 1 }),
            retrieve_first: rng.random_bool(0.5),
            refund: rng
                .random_bool(0.3)
                .then(|| rng.random_range(1..=data["amount"].as_i64().unwrap())),
        });
        let cash = (kind == Kind::Cash).then(|| {
            let first = if rng.random_bool(0.5) {
                "cash.approve"
            } else {
                "cash.reject"
            };
            let copies = if rng.random_bool(0.15) { 2 } else { 1 };
            let mut decisions = vec![(first, copies)];
            if rng.random_bool(0.1) {
                let other = if first == "cash.approve" {
                    "cash.reject"
                } else {
                    "cash.approve"
                };
                decisions.push((other, 1));
            }
            CashPlan { decisions }
        });
        let hold = (kind == Kind::Hold).then(|| {
            let amount = data["amount"].as_i64().unwrap();
            let end = match rng.random_range(0..100) {
                0..55 => HoldEnd::Capture {
                    receiver: other_user(rng, user),
                    amount: rng.random_range(1..=amount),
                },
                55..80 => HoldEnd::Release,
                _ => HoldEnd::Expire,
            };
            HoldPlan {
                end,
                copies: if rng.random_bool(0.15) { 2 } else { 1 },
            }
        });
        let redpacket = (kind == Kind::Redpacket).then(|| {
            let count = data["count"].as_i64().unwrap();
            let mut claimers: Vec<i64> = (0..count + rng.random_range(0..=2))
                .map(|_| other_user(rng, user))
                .collect();
            claimers.sort_unstable();
            claimers.dedup();
            if rng.random_bool(0.2) {
                claimers.push(claimers[0]);
            }
            RedpacketPlan { claimers }
        });
        plans.push(Plan {
            command: json!({ "id": id, "type": command_type, "user_id": user, "data": data }),
            id,
            kind,
            recharge,
            cash,
            hold,
            redpacket,
        });
    }

    // Which base commands are sent again, and how much later (in that publisher's sends).
    let mut indices: Vec<usize> = (0..BASE_COMMANDS).collect();
    for i in (1..indices.len()).rev() {
        indices.swap(i, rng.random_range(0..=i));
    }
    let duplicated = BASE_COMMANDS * DUPLICATED_PERCENT / 100;
    let mut copies: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in &indices[..duplicated] {
        let n = if rng.random_bool(0.3) { 2 } else { 1 };
        let delays = (0..n)
            .map(|_| {
                if rng.random_bool(0.3) {
                    0
                } else {
                    rng.random_range(1..=150)
                }
            })
            .collect();
        copies.insert(i, delays);
    }

    let mut paid = fake_unknown_charge();
    paid["paid"] = json!(true);
    let (unknown_event, _) = fake.signed_event("charge.succeeded", paid);
    let bad = vec![
        Bad {
            id: "bad-0".into(),
            target: Target::CommandsQueue,
            body: b"not json at all (chaos bad-0)".to_vec(),
            reason: "not JSON",
        },
        Bad {
            id: "bad-1".into(),
            target: Target::CommandsExchange("transfer"),
            body: br#"{"type":"transfer","user_id":1,"data":{"user":2,"amount":1}}"#.to_vec(),
            reason: "id is missing",
        },
        Bad {
            id: "bad-2".into(),
            target: Target::CommandsQueue,
            body: br#"{"id":"chaos-bad-2","type":"no.such.type","user_id":1,"data":{}}"#.to_vec(),
            reason: "unknown command type",
        },
        Bad {
            id: "bad-3".into(),
            target: Target::Webhooks,
            body: b"{{{ not an event (chaos bad-3)".to_vec(),
            reason: "not JSON",
        },
        Bad {
            id: "bad-4".into(),
            target: Target::Webhooks,
            body: unknown_event.into_bytes(),
            reason: "no recharge order",
        },
    ];

    // Each publisher's sends: its base commands in order, the copies some sends later, and the
    // bad messages at random places.
    let mut keyed: Vec<Vec<(usize, Send)>> = vec![Vec::new(); PUBLISHERS];
    for i in 0..BASE_COMMANDS {
        let (p, k) = (i % PUBLISHERS, i / PUBLISHERS);
        keyed[p].push((k * 1_000, Send::First(i)));
        for (c, delay) in copies.get(&i).into_iter().flatten().enumerate() {
            keyed[p].push(((k + delay) * 1_000 + 1 + c, Send::Copy(i)));
        }
    }
    let per_publisher = BASE_COMMANDS / PUBLISHERS;
    for (b, _) in bad.iter().enumerate() {
        let p = rng.random_range(0..PUBLISHERS);
        let k = rng.random_range(per_publisher / 20..per_publisher * 9 / 10);
        keyed[p].push((k * 1_000 + 500, Send::Bad(b)));
    }
    let sends = keyed
        .into_iter()
        .map(|mut sends| {
            sends.sort_by_key(|(key, _)| *key);
            sends.into_iter().map(|(_, send)| send).collect()
        })
        .collect();

    // The chaos, at moments counted in base results seen.
    let at = |rng: &mut StdRng, from: f64, to: f64| {
        (BASE_COMMANDS as f64 * rng.random_range(from..to)) as usize
    };
    let mut schedule = Vec::new();
    for _ in 0..3 {
        schedule.push((at(rng, 0.05, 0.90), Chaos::KillMain));
    }
    let second_start = at(rng, 0.10, 0.25);
    let second_stop = at(rng, 0.60, 0.80);
    schedule.push((second_start, Chaos::StartSecond));
    schedule.push((
        rng.random_range(second_start + 100..second_stop - 100),
        Chaos::KillSecond,
    ));
    schedule.push((second_stop, Chaos::StopSecond));
    schedule.push((at(rng, 0.25, 0.50), Chaos::RestartRabbitmq));
    schedule.push((at(rng, 0.50, 0.75), Chaos::RestartPostgres));
    schedule.push((at(rng, 0.10, 0.90), Chaos::PingppHiccup));
    schedule.sort_by_key(|(n, _)| *n);

    Scenario {
        plans,
        sends,
        bad,
        schedule,
        duplicated,
    }
}

/// A charge no recharge order knows: its event must be refused and dead-lettered.
fn fake_unknown_charge() -> Value {
    json!({
        "id": "ch_chaosUnknown0000000000000", "object": "charge", "livemode": false,
        "paid": false, "app": crate::support::fake_pingpp::APP_ID, "channel": "wx",
        "order_no": "a0000000000099999999", "amount": 100, "currency": "cny",
        "time_paid": null, "time_expire": 4_102_444_800i64, "failure_code": null,
        "failure_msg": null,
    })
}
