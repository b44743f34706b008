//! A wallet at a time and its statements: `wallet.get` with `at` and `wallet.statement` answer
//! what a model of the postings says, consecutive statements meet, and bad periods are refused
//! by name.

use pluspay::engine::Engine;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{apply_checked, transfer, TestEnv};

/// Every journal is given a time 10 s after the one before, from this one on, so the test's
/// times fall between postings without waiting for the clock.
const START: &str = "2026-11-01 00:00:00";
const STEP_SECS: i64 = 10;

/// `START` plus `secs`, as the wallet API writes a time (the test stays within one day).
fn time_at(secs: i64) -> String {
    assert!((0..86_400).contains(&secs));
    format!(
        "2026-11-01 {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The order a statement must show beside an entry.
#[derive(Clone, Copy)]
enum OrderOf {
    /// The test's funding writes none.
    None,
    /// The sender's, as the transfer's result named it.
    Expense(i64),
    /// The receiver's own order of the journal.
    Income,
}

/// One posting of the model: when it was posted and what it moved in each user's wallet.
struct Posting {
    at_secs: i64,
    moves: Vec<(i64, i64, OrderOf)>,
}

struct Model {
    postings: Vec<Posting>,
}

impl Model {
    /// A user's entries posted in `[from, to)` seconds, as (version, amount, balance after,
    /// order), and the balances at both ends.
    fn statement(&self, user: i64, from: i64, to: i64) -> (i64, Vec<(i64, i64, i64)>, i64) {
        let (mut version, mut balance) = (0, 0);
        let (mut opening, mut entries) = (None, Vec::new());
        for posting in &self.postings {
            if posting.at_secs >= to {
                break;
            }
            if posting.at_secs >= from && opening.is_none() {
                opening = Some(balance);
            }
            for &(who, amount, _) in &posting.moves {
                if who == user {
                    version += 1;
                    balance += amount;
                    if posting.at_secs >= from {
                        entries.push((version, amount, balance));
                    }
                }
            }
        }
        (opening.unwrap_or(balance), entries, balance)
    }

    /// A user's (balance, version) after every posting before `at`.
    fn at(&self, user: i64, at: i64) -> (i64, i64) {
        let (_, entries, closing) = self.statement(user, 0, at);
        (closing, entries.last().map_or(0, |e| e.0))
    }

    fn order_of(&self, user: i64, version: i64) -> OrderOf {
        self.postings
            .iter()
            .flat_map(|p| p.moves.iter().filter(|m| m.0 == user))
            .nth(usize::try_from(version - 1).unwrap())
            .unwrap()
            .2
    }
}

fn statement(id: &str, user: i64, from: &str, to: &str) -> Value {
    json!({"id": id, "type": "wallet.statement", "user_id": user,
           "data": {"from": from, "to": to}})
}

fn wallet_at(id: &str, user: i64, at: &str) -> Value {
    json!({"id": id, "type": "wallet.get", "user_id": user, "data": {"at": at}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_at_a_time_and_statements_equal_a_model_of_the_postings() {
    let env = TestEnv::new().await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    let mut postings = vec![
        Posting {
            at_secs: 0,
            moves: vec![(1, 1_000, OrderOf::None)],
        },
        Posting {
            at_secs: 0,
            moves: vec![(2, 300, OrderOf::None)],
        },
    ];
    env.fund(1, 1_000).await;
    env.fund(2, 300).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    for i in 0..40 {
        let from = rng.random_range(1..=3);
        let to = [1, 2, 3]
            .into_iter()
            .filter(|u| *u != from)
            .nth(rng.random_range(0..2));
        let amount = rng.random_range(1..=400);
        let result = apply_checked(
            &engine,
            &transfer(&format!("t-{i}"), from, to.unwrap(), amount),
        )
        .await;
        if result["status"] == "succeeded" {
            let order = result["data"]["order"]["id"].as_i64().unwrap();
            postings.push(Posting {
                at_secs: 0,
                moves: vec![
                    (from, -amount, OrderOf::Expense(order)),
                    (to.unwrap(), amount, OrderOf::Income),
                ],
            });
        } else {
            assert_eq!(result["code"], "insufficient_balance", "{result}");
        }
    }
    // Journals in id order are the postings in the model's order (applied one by one).
    assert_eq!(
        env.count("SELECT count(*) FROM journal").await,
        i64::try_from(postings.len()).unwrap()
    );
    env.db
        .execute(
            "UPDATE journal j SET created_at =
                 ($1::text::timestamp AT TIME ZONE 'UTC') + n * make_interval(secs => $2)
             FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM journal) o
             WHERE o.id = j.id",
            &[&START, &(STEP_SECS as f64)],
        )
        .await
        .unwrap();
    for (n, posting) in (0..).zip(postings.iter_mut()) {
        posting.at_secs = n * STEP_SECS;
    }
    let model = Model { postings };
    let end = i64::try_from(model.postings.len()).unwrap() * STEP_SECS;

    // At every posting's time (which leaves it out), a second after it (which takes it in),
    // before the first and after the last.
    let mut times: Vec<i64> = (0..=end).step_by(5).collect();
    times.push(1);
    for (i, at) in times.iter().enumerate() {
        for user in 1..=4 {
            let got = apply_checked(
                &engine,
                &wallet_at(&format!("g-{i}-{user}"), user, &time_at(*at)),
            )
            .await;
            assert_eq!(got["status"], "succeeded", "{got}");
            let (balance, version) = model.at(user, *at);
            assert_eq!(
                (&got["data"]["balance"], &got["data"]["version"]),
                (&json!(balance), &json!(version)),
                "user {user} at {at} s: {got}"
            );
            assert_eq!(got["data"]["at"], time_at(*at));
            assert_eq!(
                (&got["data"]["held"], &got["data"]["points"]),
                (&json!(0), &json!(0))
            );
        }
    }

    // Statements over random periods, and consecutive ones that must meet.
    let mut periods: Vec<(i64, i64)> = (0..25)
        .map(|_| {
            let a = rng.random_range(0..end);
            (a, rng.random_range(a + 1..=end + 20))
        })
        .collect();
    let (third, two_thirds) = (end / 3, end * 2 / 3);
    periods.extend([
        (0, 1),
        (0, end + 1),
        (0, third),
        (third, two_thirds),
        (two_thirds, end + 5),
    ]);
    for (i, &(from, to)) in periods.iter().enumerate() {
        for user in 1..=3 {
            let got = apply_checked(
                &engine,
                &statement(&format!("s-{i}-{user}"), user, &time_at(from), &time_at(to)),
            )
            .await;
            assert_eq!(got["status"], "succeeded", "{got}");
            let data = &got["data"];
            let (opening, entries, closing) = model.statement(user, from, to);
            assert_eq!(
                (&data["opening"], &data["closing"]),
                (&json!(opening), &json!(closing)),
                "user {user} from {from} to {to}: {got}"
            );
            let listed = data["entries"].as_array().unwrap();
            let summary: Vec<(i64, i64, i64)> = listed
                .iter()
                .map(|e| {
                    let field = |name: &str| e[name].as_i64().unwrap();
                    (field("version"), field("amount"), field("balance"))
                })
                .collect();
            assert_eq!(summary, entries, "user {user} from {from} to {to}");
            for entry in listed {
                let version = entry["version"].as_i64().unwrap();
                let amount = entry["amount"].as_i64().unwrap();
                let order = &entry["order"];
                match model.order_of(user, version) {
                    OrderOf::Expense(id) => assert_eq!(order["id"], id, "{entry}"),
                    OrderOf::Income => {
                        assert_eq!(order["type"], 1, "{entry}");
                        assert_eq!(order["amount"], amount, "{entry}");
                        assert_eq!(order["owner_id"], user, "{entry}");
                    }
                    OrderOf::None => assert_eq!(*order, Value::Null, "{entry}"),
                }
                let posted = entry["time"].as_str().unwrap();
                assert!(time_at(from).as_str() <= posted && posted < time_at(to).as_str());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_times_and_periods_are_refused_by_name_and_long_periods_asked_in_parts() {
    let env = TestEnv::new().await;
    let engine = Engine::from_settings(&env.settings).unwrap();
    let refusals = [
        (json!({}), "time_required", "from"),
        (
            json!({"from": "2026-11-01 00:00:00"}),
            "time_required",
            "to",
        ),
        (
            json!({"from": "2026-11-01", "to": "2026-11-02 00:00:00"}),
            "invalid_time",
            "from",
        ),
        (
            json!({"from": "2026-11-01 00:00:00", "to": 1_764_547_200}),
            "invalid_time",
            "to",
        ),
        (
            json!({"from": "2026-02-30 00:00:00", "to": "2026-11-02 00:00:00"}),
            "invalid_time",
            "from",
        ),
        (
            json!({"from": "2026-11-02 00:00:00", "to": "2026-11-02 00:00:00"}),
            "invalid_period",
            "to",
        ),
        (
            json!({"from": "2026-11-02 00:00:01", "to": "2026-11-02 00:00:00"}),
            "invalid_period",
            "to",
        ),
    ];
    for (i, (data, code, field)) in refusals.into_iter().enumerate() {
        let got = apply_checked(
            &engine,
            &json!({"id": format!("r-{i}"), "type": "wallet.statement", "user_id": 1, "data": data}),
        )
        .await;
        assert_eq!(
            (&got["status"], &got["code"]),
            (&json!("rejected"), &json!(code)),
            "{got}"
        );
        assert!(got["errors"][field].is_array(), "{got}");
    }
    let got = apply_checked(&engine, &wallet_at("g-bad", 1, "now")).await;
    assert_eq!(got["code"], "invalid_time", "{got}");

    // Nothing yet: zeros, no entries.
    let empty = apply_checked(
        &engine,
        &statement("s-empty", 7, "2000-01-01 00:00:00", "9999-12-31 23:59:59"),
    )
    .await;
    assert_eq!(
        empty["data"],
        json!({"opening": 0, "entries": [], "closing": 0})
    );

    // One entry more than a statement lists: refused, and the two halves answer it.
    for _ in 0..1_001 {
        env.fund(1, 1).await;
    }
    let whole = apply_checked(
        &engine,
        &statement("s-long", 1, "2000-01-01 00:00:00", "9999-12-31 23:59:59"),
    )
    .await;
    assert_eq!(whole["code"], "statement_too_long", "{whole}");
    env.db
        .execute(
            "UPDATE journal SET created_at = timestamptz '2026-01-01 00:00:00+00'
             WHERE id <= (SELECT min(id) + 499 FROM journal)",
            &[],
        )
        .await
        .unwrap();
    let first = apply_checked(
        &engine,
        &statement("s-1", 1, "2000-01-01 00:00:00", "2026-06-01 00:00:00"),
    )
    .await;
    let second = apply_checked(
        &engine,
        &statement("s-2", 1, "2026-06-01 00:00:00", "9999-12-31 23:59:59"),
    )
    .await;
    let listed = |r: &Value| r["data"]["entries"].as_array().unwrap().len();
    assert_eq!((listed(&first), listed(&second)), (500, 501));
    assert_eq!(first["data"]["closing"], second["data"]["opening"]);
    assert_eq!(
        (&first["data"]["opening"], &second["data"]["closing"]),
        (&json!(0), &json!(1_001))
    );
}
