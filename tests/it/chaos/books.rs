//! The books at the end of a run: the dead letters are exactly the bad messages, and the
//! balances, cash records, orders and events are what an independent model computed from the
//! published results says; `pluspay audit` passes.

use std::collections::{BTreeMap, HashMap, HashSet};

use lapin::options::BasicGetOptions;
use pluspay::amqp::publisher::header_str;
use pluspay::amqp::{self, Names};
use pluspay::worker::ERROR_HEADER;
use serde_json::Value;

use super::board::State;
use super::plan::{HoldEnd, Kind, Scenario, Send};
use super::say;
use super::{FUNDING, USERS};

/// What the books showed, for the summary.
pub(super) struct Books {
    pub(super) dead_letters: usize,
    pub(super) outcomes: BTreeMap<(Kind, String), usize>,
    pub(super) published_results: usize,
    pub(super) credited: usize,
    pub(super) cash_decided: usize,
    pub(super) lost_races: usize,
    /// Holds by how they ended, and follow-ups that came after the expiry.
    pub(super) hold_ends: BTreeMap<&'static str, usize>,
    /// Red packet claims by outcome.
    pub(super) claim_outcomes: BTreeMap<String, usize>,
    /// Refunds of recharges made and refused.
    pub(super) refunds: (i64, i64),
    pub(super) late_follow_ups: usize,
}

pub(super) async fn check_the_books(
    scenario: &Scenario,
    state: &State,
    db_url: &str,
    amqp_urls: &[String],
    names: &Names,
    ratio: i64,
) -> Books {
    // The dead letters are exactly the bad messages (a worker killed between dead-lettering
    // one and acknowledging it may have dead-lettered it twice, which is at-least-once).
    let dead = {
        let connection = amqp::connect(&amqp_urls[0], "chaos-dead").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut dead = Vec::new();
        while let Some(message) = channel
            .basic_get(
                names.dead_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            dead.push(message.delivery);
        }
        connection.close(200, "bye".into()).await.unwrap();
        dead
    };
    let mut dead_ids = HashSet::new();
    for letter in &dead {
        let id = letter
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let reason = header_str(letter.properties.headers(), ERROR_HEADER).unwrap_or_default();
        let Some(meant) = scenario.bad.iter().find(|b| b.id == id) else {
            panic!(
                "an unexpected dead letter (message id {id:?}, reason {reason:?}): {}",
                String::from_utf8_lossy(&letter.data)
            );
        };
        assert_eq!(letter.data, meant.body, "dead letter {id}");
        assert!(
            reason.contains(meant.reason),
            "dead letter {id}: reason {reason:?}, expected it to mention {:?}",
            meant.reason
        );
        dead_ids.insert(id);
    }
    let meant: HashSet<String> = scenario.bad.iter().map(|b| b.id.clone()).collect();
    assert_eq!(dead_ids, meant, "the dead letters");

    // ---- the model, from the results alone
    // Every task that wrote to the board has ended.
    let db = pluspay::db::connect(db_url).await.unwrap();
    let stored: HashMap<String, Value> = db
        .query("SELECT id, result::text FROM commands", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let result: Option<&str> = row.get(1);
            let result =
                result.unwrap_or_else(|| panic!("{}: no stored result", row.get::<_, &str>(0)));
            (row.get(0), serde_json::from_str(result).unwrap())
        })
        .collect();
    let expected_ids: HashSet<&String> = state.expected.keys().collect();
    let stored_ids: HashSet<&String> = stored.keys().collect();
    assert_eq!(
        stored_ids, expected_ids,
        "the commands table holds one row per command sent"
    );
    for id in state.results.keys() {
        assert!(
            state.expected.contains_key(id),
            "a result for {id}, never sent"
        );
    }
    let mut published_results = 0;
    for (id, command) in &state.expected {
        let results = &state.results[id];
        published_results += results.len();
        for result in results {
            assert_eq!(
                result, &stored[id],
                "{id}: a published result differs from the stored one"
            );
        }
        assert_eq!(stored[id]["type"], command["type"], "{id}");
    }

    let mut wallets: BTreeMap<i64, i64> = (1..=USERS).map(|u| (u, FUNDING)).collect();
    let mut points: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut pending_payouts, mut paid_out, mut revenue, mut clearing) = (0i64, 0i64, 0i64, 0i64);
    let mut outcomes: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    let mut cash_values: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut recharge_orders: HashMap<i64, (i64, i64, bool)> = HashMap::new();
    // Hold id → (base index, owner, amount).
    let mut holds: HashMap<i64, (usize, i64, i64)> = HashMap::new();
    // Red packet id → (base index, sender, total, count).
    let mut packets: HashMap<i64, (usize, i64, i64, i64)> = HashMap::new();
    for plan in &scenario.plans {
        let result = &stored[&plan.id];
        let user = plan.command["user_id"].as_i64().unwrap();
        let data = &plan.command["data"];
        let status = result["status"].as_str().unwrap();
        let outcome = match status {
            "succeeded" => "succeeded".to_owned(),
            _ => result["code"].as_str().unwrap_or("?").to_owned(),
        };
        *outcomes.entry((plan.kind, outcome.clone())).or_default() += 1;
        if status != "succeeded" {
            assert!(
                matches!(
                    plan.kind,
                    Kind::Transfer
                        | Kind::Reward
                        | Kind::Cash
                        | Kind::Transform
                        | Kind::Hold
                        | Kind::Redpacket
                ) && outcome == "insufficient_balance",
                "{}: {result}",
                plan.id
            );
            continue;
        }
        match plan.kind {
            Kind::Transfer | Kind::Reward => {
                let amount = data["amount"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= amount;
                *wallets.get_mut(&data["user"].as_i64().unwrap()).unwrap() += amount;
            }
            Kind::Cash => {
                let value = data["value"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= value;
                pending_payouts += value;
                cash_values.insert(
                    result["data"]["cash"]["id"].as_i64().unwrap(),
                    (user, value),
                );
            }
            Kind::Transform => {
                let amount = data["amount"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= amount;
                *points.entry(user).or_default() += amount * ratio;
                revenue += amount;
            }
            Kind::Recharge => {
                let order = result["data"]["order"]["id"].as_i64().unwrap();
                let paid = state.recharges[&order].1;
                recharge_orders.insert(order, (user, data["amount"].as_i64().unwrap(), paid));
            }
            Kind::Hold => {
                let amount = data["amount"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= amount;
                let index = scenario.plans.iter().position(|p| p.id == plan.id).unwrap();
                holds.insert(
                    result["data"]["hold"]["id"].as_i64().unwrap(),
                    (index, user, amount),
                );
            }
            Kind::Redpacket => {
                let total = data["total"].as_i64().unwrap();
                *wallets.get_mut(&user).unwrap() -= total;
                let index = scenario.plans.iter().position(|p| p.id == plan.id).unwrap();
                packets.insert(
                    result["data"]["redpacket"]["id"].as_i64().unwrap(),
                    (index, user, total, data["count"].as_i64().unwrap()),
                );
            }
            Kind::Read => {}
        }
    }
    // Red packets: every claim answered once, at most `count` of them given a share, each user
    // at most once; what was not claimed back to the sender at expiry, once.
    let mut packet_ends: HashMap<i64, (&str, i64, i64)> = HashMap::new();
    let mut claim_outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (&packet, &(index, sender, total, count)) in &packets {
        let claimers = &scenario.plans[index].redpacket.as_ref().unwrap().claimers;
        let mut claimed = 0;
        let mut claimed_amount = 0;
        let mut winners = HashSet::new();
        for (c, claimer) in claimers.iter().enumerate() {
            let result = &stored[&format!("f-{index}-p{c}")];
            let outcome = if result["status"] == "succeeded" {
                let amount = result["data"]["share"]["amount"].as_i64().unwrap();
                assert!(amount >= 1, "{result}");
                assert!(
                    winners.insert(*claimer),
                    "user {claimer} claimed twice: {result}"
                );
                *wallets.get_mut(claimer).unwrap() += amount;
                claimed += 1;
                claimed_amount += amount;
                "succeeded".to_owned()
            } else {
                let code = result["code"].as_str().unwrap().to_owned();
                assert!(
                    matches!(
                        code.as_str(),
                        "redpacket_empty" | "redpacket_expired" | "already_claimed"
                    ),
                    "red packet {packet}: {result}"
                );
                code
            };
            *claim_outcomes.entry(outcome).or_default() += 1;
        }
        assert!(
            claimed <= count,
            "red packet {packet}: {claimed} of {count} shares"
        );
        let expired = state.expired_redpackets.get(&packet);
        let end = if claimed == count {
            assert_eq!(
                claimed_amount, total,
                "red packet {packet}: its shares sum to its total"
            );
            assert!(
                expired.is_none(),
                "red packet {packet} finished, and expired"
            );
            ("finished", claimed_amount, 0)
        } else {
            let event =
                expired.unwrap_or_else(|| panic!("red packet {packet} expired without its event"));
            let refunded = total - claimed_amount;
            assert_eq!(event["refunded"], refunded, "red packet {packet}: {event}");
            *wallets.get_mut(&sender).unwrap() += refunded;
            ("expired", claimed_amount, refunded)
        };
        packet_ends.insert(packet, end);
    }
    for packet in state.expired_redpackets.keys() {
        assert!(
            packets.contains_key(packet),
            "redpacket.expired for {packet}, never made"
        );
    }
    // Holds: each ended once, as its follow-up's result or its expiry's event says.
    let mut hold_ends: HashMap<i64, (&str, i64, i64, Option<i64>)> = HashMap::new();
    let mut late_follow_ups = 0;
    for (&hold, &(index, owner, amount)) in &holds {
        let plan = scenario.plans[index].hold.as_ref().unwrap();
        let follow_up = stored.get(&format!("f-{index}-h"));
        let expired = state.expired_holds.contains_key(&hold);
        let end = match (&plan.end, follow_up) {
            (HoldEnd::Expire, _) => ("expired", 0, amount, None),
            (_, Some(result)) if result["status"] == "succeeded" => {
                assert!(
                    !expired,
                    "hold {hold} captured or released, and expired: {result}"
                );
                match plan.end {
                    HoldEnd::Capture {
                        receiver,
                        amount: paid,
                    } => {
                        *wallets.get_mut(&receiver).unwrap() += paid;
                        ("captured", paid, amount - paid, Some(receiver))
                    }
                    _ => ("released", 0, amount, None),
                }
            }
            (_, Some(result)) => {
                assert_eq!(result["code"], "hold_closed", "hold {hold}: {result}");
                late_follow_ups += 1;
                ("expired", 0, amount, None)
            }
            (_, None) => panic!("hold {hold}: its follow-up has no result"),
        };
        if end.0 == "expired" {
            assert!(expired, "hold {hold} expired without its event");
        }
        *wallets.get_mut(&owner).unwrap() += end.2;
        hold_ends.insert(hold, end);
    }
    for (hold, copies) in &state.expired_holds {
        assert!(
            holds.contains_key(hold),
            "hold.expired for hold {hold}, never made"
        );
        assert!(*copies >= 1);
    }
    // Cash decisions: each request ends approved or rejected, whichever decision won.
    let mut cash_status: HashMap<i64, i64> = HashMap::new();
    let mut lost_races = 0;
    for (&cash, &index) in &state.cashes {
        let plan = scenario.plans[index].cash.as_ref().unwrap();
        let mut finals = HashSet::new();
        for (d, (kind, _)) in plan.decisions.iter().enumerate() {
            let result = &stored[&format!("f-{index}-d{d}")];
            if result["status"] == "succeeded" {
                finals.insert(result["data"]["cash"]["status"].as_i64().unwrap());
                let want = if *kind == "cash.approve" { 1 } else { 2 };
                assert_eq!(result["data"]["cash"]["status"], want, "{result}");
            } else {
                assert_eq!(result["code"], "cash_already_decided", "{result}");
                assert_eq!(
                    plan.decisions.len(),
                    2,
                    "only a racing decision may lose: {result}"
                );
                lost_races += 1;
            }
        }
        assert_eq!(finals.len(), 1, "cash {cash}: decided as {finals:?}");
        let status = *finals.iter().next().unwrap();
        let (user, value) = cash_values[&cash];
        pending_payouts -= value;
        if status == 2 {
            *wallets.get_mut(&user).unwrap() += value;
        } else {
            paid_out += value;
        }
        cash_status.insert(cash, status);
    }
    assert_eq!(
        cash_status.len(),
        cash_values.len(),
        "every cash request was decided"
    );
    // Recharges: credited once when paid, failed otherwise, as the events and retrieves say.
    let mut credited = 0;
    for (&order, &(user, amount, paid)) in &recharge_orders {
        let seen = &state.order_states[&order];
        let want = if paid { 1 } else { -1 };
        assert!(
            seen.iter().all(|&s| s == want),
            "recharge order {order}: states {seen:?}, expected {want}"
        );
        if paid {
            *wallets.get_mut(&user).unwrap() += amount;
            clearing -= amount;
            credited += 1;
        }
    }
    // Refunds of paid recharges, decided by Ping++ at once: each ended in its command, once.
    let mut refunds_made = 0;
    let mut refunds_refused = 0;
    for (&order, &(index, paid)) in &state.recharges {
        let Some(amount) = scenario.plans[index].recharge.as_ref().unwrap().refund else {
            continue;
        };
        let result = stored.get(&format!("f-{index}-f"));
        if !paid {
            assert!(result.is_none(), "a refund of unpaid recharge {order}");
            continue;
        }
        let result = result.unwrap_or_else(|| panic!("recharge {order}: its refund has no result"));
        if result["status"] == "succeeded" {
            assert_eq!(result["data"]["refund"]["status"], "succeeded", "{result}");
            assert_eq!(result["data"]["refund"]["amount"], amount, "{result}");
            let user = scenario.plans[index].command["user_id"].as_i64().unwrap();
            *wallets.get_mut(&user).unwrap() -= amount;
            clearing += amount;
            refunds_made += 1;
        } else {
            assert_eq!(
                result["code"], "insufficient_balance",
                "recharge {order}: {result}"
            );
            refunds_refused += 1;
        }
    }
    for event in state.events.iter().filter(|e| {
        !matches!(
            e["type"].as_str(),
            Some("hold.expired" | "redpacket.expired")
        )
    }) {
        let order = event["data"]["order"]["id"].as_i64().unwrap();
        assert!(
            recharge_orders.contains_key(&order),
            "an event for order {order}: {event}"
        );
    }

    // ---- ledger.root: yesterday's, recorded once whatever the workers' deaths (copies of
    // the one event allowed: the outbox publishes at least once)
    let roots: std::collections::HashSet<&str> = state
        .ledger_roots
        .iter()
        .map(|e| e["event_id"].as_str().expect("an event id"))
        .collect();
    assert!(roots.len() <= 1, "more than one day's root: {roots:?}");
    let recorded = db
        .query_one("SELECT count(*) FROM ledger_roots", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        recorded,
        i64::try_from(roots.len()).unwrap(),
        "roots recorded and published"
    );

    // ---- wallet.changed: every version of every wallet and points account once (copies
    // identical), in order, the last one at the account's balance
    assert!(
        state.wallet_changed_differing.is_empty(),
        "wallet.changed copies that differ from the first: {:?}",
        state.wallet_changed_differing
    );
    // Up to the cursor as the stopped workers left it: the test awaited it at the end of the
    // traffic, and what the drain posted after that (a parked Ping++ event put back) is
    // published by the next worker to start, which this run doesn't have.
    let accounts = db
        .query(
            "SELECT a.user_id, a.unit, count(*), (array_agg(e.balance_after ORDER BY e.version DESC))[1]
             FROM accounts a JOIN ledger_entries e ON e.account_id = a.id
             WHERE a.kind IN ('wallet', 'points')
               AND e.journal_id <= (SELECT journal_id FROM wallet_changed_cursor)
             GROUP BY a.user_id, a.unit",
            &[],
        )
        .await
        .unwrap();
    let mut last_balances = 0;
    for row in &accounts {
        let (user, unit, count, balance): (i64, String, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let versions = state
            .wallet_changed_order
            .get(&(user, unit.clone()))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            versions,
            (1..=count).collect::<Vec<_>>(),
            "wallet.changed of user {user}'s {unit}: first copies in arrival order"
        );
        let last = &state.wallet_changed[&format!("wallet.changed.{user}.{unit}.{count}")].0;
        let last: Value = serde_json::from_slice(last).unwrap();
        assert_eq!(last["data"]["balance"], balance, "user {user}'s {unit}");
        // Nothing beyond the cursor went out either.
        assert!(
            !state
                .wallet_changed
                .contains_key(&format!("wallet.changed.{user}.{unit}.{}", count + 1)),
            "user {user}'s {unit}: a version published beyond the cursor"
        );
        last_balances += 1;
    }
    assert_eq!(
        state.wallet_changed_order.len(),
        accounts.len(),
        "wallet.changed for accounts that never moved"
    );
    let wallet_changed_copies: usize = state.wallet_changed.values().map(|(_, n)| n - 1).sum();
    say(format!(
        "wallet.changed: {} versions of {last_balances} accounts, {wallet_changed_copies} copies \
         (all identical)",
        state.wallet_changed.len()
    ));

    // ---- the database agrees with the model
    let rows = db
        .query(
            "SELECT kind, coalesce(user_id, 0), coalesce(name, ''), balance FROM accounts",
            &[],
        )
        .await
        .unwrap();
    let mut db_wallets = BTreeMap::new();
    let mut db_points = BTreeMap::new();
    let mut system = HashMap::new();
    for row in rows {
        let (kind, user, name, balance): (String, i64, String, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        match kind.as_str() {
            "wallet" => {
                assert!(balance >= 0, "wallet {user} is negative: {balance}");
                db_wallets.insert(user, balance);
            }
            "points" => {
                db_points.insert(user, balance);
            }
            "held" => assert_eq!(balance, 0, "user {user}'s held account, every hold closed"),
            "packets" => assert_eq!(
                balance, 0,
                "user {user}'s packets account, every packet ended"
            ),
            _ => {
                system.insert(name, balance);
            }
        }
    }
    assert_eq!(db_wallets, wallets, "the wallets against the model");
    points.retain(|_, p| *p != 0);
    db_points.retain(|_, p| *p != 0);
    assert_eq!(db_points, points, "the points against the model");
    let issued: i64 = points.values().sum();
    for (name, want) in [
        ("pending_payouts", pending_payouts),
        ("paid_out", paid_out),
        ("transform_revenue", revenue),
        ("pingpp_clearing", clearing),
        ("points_issued", -issued),
        ("pending_refunds", 0),
        ("test_funding", -USERS * FUNDING),
    ] {
        assert_eq!(
            system.get(name).copied().unwrap_or(0),
            want,
            "system account {name}"
        );
    }
    for row in db
        .query("SELECT id, status FROM cashes", &[])
        .await
        .unwrap()
    {
        let (id, status): (i64, i16) = (row.get(0), row.get(1));
        assert_eq!(
            cash_status.get(&id).copied(),
            Some(i64::from(status)),
            "cash {id}"
        );
    }
    let refunds_stored = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM recharge_refunds",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            refunds_stored.get::<_, i64>(0),
            refunds_stored.get::<_, i64>(1)
        ),
        (refunds_made, refunds_made),
        "every refund recorded once, succeeded"
    );
    let rows = db
        .query(
            "SELECT id, status, claimed_amount, refunded FROM redpackets",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), packets.len(), "one row per red packet made");
    for row in rows {
        let id: i64 = row.get(0);
        assert_eq!(
            (
                row.get::<_, &str>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3)
            ),
            packet_ends[&id],
            "red packet {id}"
        );
    }
    let rows = db
        .query(
            "SELECT id, status, captured, released, receiver FROM holds",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), holds.len(), "one row per hold made");
    for row in rows {
        let id: i64 = row.get(0);
        let (status, captured, released, receiver) = hold_ends[&id];
        assert_eq!(
            (
                row.get::<_, &str>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3),
                row.get::<_, Option<i64>>(4)
            ),
            (status, captured, released, receiver),
            "hold {id}"
        );
    }
    let rows = db
        .query(
            "SELECT id, state FROM wallet_orders WHERE target_type = 'recharge_ping_p_p'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), recharge_orders.len(), "one order per recharge");
    for row in rows {
        let (id, db_state): (i64, i16) = (row.get(0), row.get(1));
        let paid = recharge_orders[&id].2;
        assert_eq!(db_state, if paid { 1 } else { -1 }, "recharge order {id}");
    }
    let recorded: HashSet<String> = db
        .query("SELECT id FROM pingpp_events", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        recorded, state.event_ids,
        "every genuine event recorded once"
    );
    let audit =
        crate::support::pluspay(&["audit"], &[("PLUSPAY_DATABASE_URL", db_url.to_owned())]).await;
    assert!(
        audit.status.success(),
        "pluspay audit: {}\n{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );

    // Both paths of the rules were exercised.
    let count = |kind: Kind, outcome: &str| {
        outcomes
            .get(&(kind, outcome.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let moved: usize = [
        Kind::Transfer,
        Kind::Reward,
        Kind::Cash,
        Kind::Transform,
        Kind::Hold,
    ]
    .iter()
    .map(|&k| count(k, "succeeded"))
    .sum();
    let refused: usize = [
        Kind::Transfer,
        Kind::Reward,
        Kind::Cash,
        Kind::Transform,
        Kind::Hold,
    ]
    .iter()
    .map(|&k| count(k, "insufficient_balance"))
    .sum();
    assert!(
        moved > 2 * refused && refused > 0,
        "{moved} moved money, {refused} refused"
    );
    Books {
        dead_letters: dead.len(),
        outcomes,
        published_results,
        credited,
        cash_decided: cash_status.len(),
        lost_races,
        claim_outcomes,
        refunds: (refunds_made, refunds_refused),
        hold_ends: hold_ends.values().fold(BTreeMap::new(), |mut ends, end| {
            *ends.entry(end.0).or_default() += 1;
            ends
        }),
        late_follow_ups,
    }
}

impl Books {
    /// Prints what was sent and what came of it.
    pub(super) fn summarize(&self, scenario: &Scenario, state: &State) {
        let duplicates_sent: usize = scenario
            .sends
            .iter()
            .flatten()
            .filter(|s| matches!(s, Send::Copy(_)))
            .count();
        say(format!(
            "{} base commands ({} of them sent more than once, {duplicates_sent} extra copies), \
             {} follow-up commands, {} genuine events ({} enqueued in all), {} bad messages",
            super::BASE_COMMANDS,
            scenario.duplicated,
            state.expected.len() - super::BASE_COMMANDS,
            state.event_ids.len(),
            scenario
                .plans
                .iter()
                .filter_map(|p| p.recharge.as_ref())
                .map(|r| r.event_copies)
                .sum::<usize>(),
            scenario.bad.len(),
        ));
        say(format!(
            "outcomes: {}",
            self.outcomes
                .iter()
                .map(|((kind, outcome), n)| format!("{kind:?} {outcome} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        say(format!(
            "{} results published for {} ids; {} recharges credited; {} cash requests \
             decided ({} racing decisions lost); {} dead letters for {} bad messages",
            self.published_results,
            state.expected.len(),
            self.credited,
            self.cash_decided,
            self.lost_races,
            self.dead_letters,
            scenario.bad.len()
        ));
        say(format!(
            "holds: {:?}; {} captures or releases came after the expiry (hold_closed)",
            self.hold_ends, self.late_follow_ups
        ));
        say(format!("red packet claims: {:?}", self.claim_outcomes));
        say(format!(
            "refunds of recharges: {} made, {} refused for the balance",
            self.refunds.0, self.refunds.1
        ));
    }
}
