//! Dead letters for operators: listing and showing without consuming, replaying, discarding
//! with a record (pluspay::dead_letters), and `pluspay dead ...`.

use std::time::{Duration, SystemTime};

use lapin::types::{AMQPValue, FieldTable};
use pluspay::amqp::publisher::json_properties;
use pluspay::dead_letters::{self, DeadLetter};
use serde_json::{json, Value};

use crate::support::{broker_user, pluspay, ready_messages, transfer, BrokerClient, TestEnv, WAIT};

const ACCOUNT: &str = "6222021234567890123";
const MOBILE: &str = "13800138000";

/// Waits until the dead queue holds exactly `n` messages ready (requeues reach a quorum queue
/// through its log, a moment after the nack).
async fn wait_dead_depth(client: &BrokerClient, n: u32) {
    let channel = client.connection.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let depth = ready_messages(&channel, &client.names.dead_queue).await;
        if depth == n {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead queue holds {depth} messages, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = channel.close(200, "".into()).await;
}

/// Puts `body` in the dead letters as the worker's `fail` leaves a command that failed every
/// delivery: with its reason and a delivery count, but from before dead letters had ids.
pub(crate) async fn dead_letter_directly(
    env: &TestEnv,
    client: &BrokerClient,
    body: &Value,
    reason: &str,
) {
    let mut headers = FieldTable::default();
    headers.insert(
        pluspay::worker::ERROR_HEADER.into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(19));
    let properties = json_properties()
        .with_headers(headers)
        .with_user_id(broker_user(&env.settings.amqp.url).as_str().into())
        .with_timestamp(1_700_000_000);
    client
        .publisher
        .publish(
            &client.names.dead_exchange,
            body["type"].as_str().unwrap_or(""),
            body.to_string().as_bytes(),
            properties,
            true,
        )
        .await
        .expect("the dead exchange takes it");
}

fn personal_command(id: &str, kind: &str) -> Value {
    json!({ "id": id, "type": kind, "user_id": 1,
            "data": { "value": 500, "account": ACCOUNT, "mobile": MOBILE,
                      "remark": format!("call me on {MOBILE}") } })
}

fn assert_masked(letter: &DeadLetter) {
    for secret in [ACCOUNT, MOBILE] {
        assert!(
            !letter.body_masked.contains(secret),
            "{secret} shown: {}",
            letter.body_masked
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_shows_reason_type_and_masked_body_and_consumes_nothing() {
    let env = TestEnv::new().await;
    let _worker = env.start_worker();
    let client = env.client().await;
    let before = SystemTime::now();
    client
        .raw(
            personal_command("dl-1", "teleport").to_string().as_bytes(),
            None,
        )
        .await;
    client.raw(b"\xff not json", None).await;
    wait_dead_depth(&client, 2).await;

    let listed = dead_letters::list(&env.settings, 10).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let letter = listed
        .iter()
        .find(|l| l.command_id.as_deref() == Some("dl-1"))
        .expect("the JSON one is listed");
    assert!(
        letter
            .reason
            .as_deref()
            .unwrap()
            .contains("unknown command type"),
        "{letter:?}"
    );
    assert_eq!(letter.kind.as_deref(), Some("teleport"));
    assert_masked(letter);
    assert!(letter.body_masked.contains(r#""value":500"#), "{letter:?}");
    // The worker gave it an id and the time it dead-lettered it.
    assert!(uuid::Uuid::parse_str(&letter.id).is_ok(), "{letter:?}");
    let since = letter.dead_since.expect("dead-at recorded");
    assert!(since >= before - Duration::from_secs(1) && since <= SystemTime::now());
    let garbage = listed.iter().find(|l| l.id != letter.id).unwrap();
    assert_eq!(garbage.command_id, None);
    assert!(garbage.reason.as_deref().unwrap().contains("not JSON"));

    // A limit is a limit, and listing consumed nothing: the same two, the queue as deep.
    assert_eq!(dead_letters::list(&env.settings, 1).await.unwrap().len(), 1);
    wait_dead_depth(&client, 2).await;
    let again = dead_letters::list(&env.settings, 10).await.unwrap();
    let ids = |letters: &[DeadLetter]| {
        let mut ids: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&again), ids(&listed));
    wait_dead_depth(&client, 2).await;

    // Shown by id, unconsumed; an unknown id is none.
    let shown = dead_letters::show(&env.settings, &letter.id).await.unwrap();
    assert_eq!(shown.as_ref().map(|s| &s.id), Some(&letter.id));
    assert_eq!(shown.unwrap().body_masked, letter.body_masked);
    assert_eq!(
        dead_letters::show(&env.settings, "no-such-id")
            .await
            .unwrap(),
        None
    );
    wait_dead_depth(&client, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_transfer_is_applied_once_and_leaves_the_dead_letters() {
    let env = TestEnv::new().await;
    env.fund(1, 500).await;
    let _worker = env.start_worker();
    let client = env.client().await;
    dead_letter_directly(
        &env,
        &client,
        &transfer("replay-1", 1, 2, 100),
        "failed 20 times: the database schema is broken",
    )
    .await;
    wait_dead_depth(&client, 1).await;
    let listed = dead_letters::list(&env.settings, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let letter = &listed[0];
    // From before dead letters had ids: one derived from body and reason, the AMQP timestamp.
    assert_eq!(letter.id.len(), 16, "{letter:?}");
    assert_eq!(letter.kind.as_deref(), Some("transfer"));
    assert_eq!(
        letter.dead_since,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );

    assert_eq!(
        dead_letters::replay(&env.settings, "no-such-id", "alice", WAIT)
            .await
            .unwrap(),
        None
    );
    let result = dead_letters::replay(&env.settings, &letter.id, "alice", WAIT)
        .await
        .unwrap()
        .expect("found");
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["id"], "replay-1");
    assert_eq!(env.balance(2).await, 100);
    assert_eq!(env.balance(1).await, 400);
    assert_eq!(
        env.count("SELECT count(*) FROM commands WHERE id = 'replay-1'")
            .await,
        1
    );
    wait_dead_depth(&client, 0).await;
    // Gone: a second replay finds nothing and moves no money.
    assert_eq!(
        dead_letters::replay(&env.settings, &letter.id, "alice", WAIT)
            .await
            .unwrap(),
        None
    );
    assert_eq!(env.balance(2).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_undecodable_message_answers_malformed_and_is_dead_again() {
    let env = TestEnv::new().await;
    let _worker = env.start_worker();
    let client = env.client().await;
    client
        .raw(
            personal_command("dl-2", "teleport").to_string().as_bytes(),
            None,
        )
        .await;
    wait_dead_depth(&client, 1).await;
    let first = dead_letters::list(&env.settings, 10)
        .await
        .unwrap()
        .remove(0);
    let result = dead_letters::replay(&env.settings, &first.id, "alice", WAIT)
        .await
        .unwrap()
        .expect("found");
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["status"], "rejected", "{result}");
    assert_eq!(result["code"], "malformed", "{result}");
    // Dead-lettered again, as a new dead letter: the replayed one is gone.
    wait_dead_depth(&client, 1).await;
    let now = dead_letters::list(&env.settings, 10).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, first.id);
    assert_eq!(now[0].command_id.as_deref(), Some("dl-2"));
    assert_eq!(
        now[0].published_by.as_deref(),
        Some(broker_user(&env.settings.amqp.url).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discard_is_recorded_before_the_message_goes() {
    let env = TestEnv::new().await;
    let client = env.client().await;
    dead_letter_directly(
        &env,
        &client,
        &personal_command("dl-3", "cash"),
        "failed 20 times: x",
    )
    .await;
    wait_dead_depth(&client, 1).await;
    let letter = dead_letters::list(&env.settings, 10)
        .await
        .unwrap()
        .remove(0);

    for (operator, note) in [
        ("bob", ""),
        ("bob", "   "),
        ("", "a note"),
        ("bob", &"x".repeat(1001)),
    ] {
        let refused = dead_letters::discard(&env.settings, &letter.id, operator, note).await;
        assert!(refused.is_err(), "{operator:?} {note:?}");
    }
    wait_dead_depth(&client, 1).await;
    assert!(
        !dead_letters::discard(&env.settings, "no-such-id", "bob", "gone")
            .await
            .unwrap()
    );
    assert!(dead_letters::discard(
        &env.settings,
        &letter.id,
        "bob",
        "publisher bug, fixed upstream"
    )
    .await
    .unwrap());
    wait_dead_depth(&client, 0).await;
    let row = env
        .db
        .query_one(
            "SELECT dead_id, operator, note, kind, command_id, reason, body_masked, dead_since IS NOT NULL,
                    discarded_at > now() - interval '1 minute'
             FROM dead_letter_discards",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), letter.id);
    assert_eq!(row.get::<_, String>(1), "bob");
    assert_eq!(row.get::<_, String>(2), "publisher bug, fixed upstream");
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("cash"));
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("dl-3"));
    assert_eq!(
        row.get::<_, Option<String>>(5).as_deref(),
        Some("failed 20 times: x")
    );
    let body: String = row.get(6);
    assert!(!body.contains(ACCOUNT) && !body.contains(MOBILE), "{body}");
    assert!(row.get::<_, bool>(7) && row.get::<_, bool>(8));
    assert!(
        !dead_letters::discard(&env.settings, &letter.id, "bob", "again")
            .await
            .unwrap()
    );
    assert_eq!(
        env.count("SELECT count(*) FROM dead_letter_discards").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_discards_with_its_exit_codes() {
    let env = TestEnv::new().await;
    let client = env.client().await;
    dead_letter_directly(
        &env,
        &client,
        &personal_command("dl-4", "cash"),
        "failed 20 times: y",
    )
    .await;
    dead_letter_directly(
        &env,
        &client,
        &personal_command("dl-5", "cash"),
        "failed 20 times: y",
    )
    .await;
    wait_dead_depth(&client, 2).await;
    let vars = env.process_env();

    let listed = pluspay(&["dead", "list"], &vars).await;
    assert!(listed.status.success(), "{listed:?}");
    let stdout = String::from_utf8(listed.stdout).unwrap();
    assert!(
        !stdout.contains(MOBILE) && !stdout.contains(ACCOUNT),
        "{stdout}"
    );
    let letters: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    assert_eq!(letters.len(), 2, "{stdout}");
    assert_eq!(letters[0]["reason"], "failed 20 times: y");
    assert_eq!(letters[0]["dead_since"], 1_700_000_000_000u64);
    let limited = pluspay(&["dead", "list", "--limit", "1"], &vars).await;
    assert_eq!(
        String::from_utf8(limited.stdout).unwrap().lines().count(),
        1
    );
    let id = letters[0]["id"].as_str().unwrap().to_owned();

    let shown = pluspay(&["dead", "show", &id], &vars).await;
    assert!(shown.status.success(), "{shown:?}");
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["id"], id.as_str());
    let missing = pluspay(&["dead", "show", "no-such-id"], &vars).await;
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let missing = pluspay(&["dead", "replay", "no-such-id", "--timeout", "5"], &vars).await;
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");

    // The note is required.
    let no_note = pluspay(&["dead", "discard", &id], &vars).await;
    assert_eq!(no_note.status.code(), Some(2), "{no_note:?}");
    let discarded = pluspay(
        &[
            "dead",
            "discard",
            &id,
            "--note",
            "test data",
            "--operator",
            "carol",
        ],
        &vars,
    )
    .await;
    assert!(discarded.status.success(), "{discarded:?}");
    let again = pluspay(&["dead", "discard", &id, "--note", "test data"], &vars).await;
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let gone = pluspay(&["dead", "show", &id], &vars).await;
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    wait_dead_depth(&client, 1).await;
    assert_eq!(
        env.count("SELECT count(*) FROM dead_letter_discards WHERE operator = 'carol'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_another_operator_holds_is_not_replayed_twice() {
    let env = TestEnv::new().await;
    env.fund(1, 500).await;
    let _worker = env.start_worker();
    let client = env.client().await;
    dead_letter_directly(
        &env,
        &client,
        &transfer("held-1", 1, 2, 100),
        "failed 20 times: z",
    )
    .await;
    wait_dead_depth(&client, 1).await;
    let id = dead_letters::list(&env.settings, 1).await.unwrap()[0]
        .id
        .clone();

    // Another operator's scan holds it, unacknowledged, on its own channel.
    let other = client.connection.create_channel().await.unwrap();
    let held = other
        .basic_get(
            client.names.dead_queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("the dead letter");
    assert_eq!(DeadLetter::of(&held.delivery).id, id);
    assert_eq!(
        dead_letters::replay(&env.settings, &id, "alice", WAIT)
            .await
            .unwrap(),
        None
    );
    assert_eq!(env.balance(2).await, 0);

    // Given back, it is there again and replays once.
    other.close(200, "".into()).await.unwrap();
    wait_dead_depth(&client, 1).await;
    let result = dead_letters::replay(&env.settings, &id, "alice", WAIT)
        .await
        .unwrap()
        .expect("found once given back");
    assert!(result.contains("succeeded"), "{result}");
    assert_eq!(env.balance(2).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_nobody_answers_is_an_error_and_stays_in_the_commands_queue() {
    let env = TestEnv::new().await;
    let client = env.client().await;
    dead_letter_directly(
        &env,
        &client,
        &transfer("late-1", 1, 2, 100),
        "failed 20 times: w",
    )
    .await;
    wait_dead_depth(&client, 1).await;
    let id = dead_letters::list(&env.settings, 1).await.unwrap()[0]
        .id
        .clone();
    // No worker runs: the copy waits in the commands queue, and it is no longer a dead letter.
    let error = dead_letters::replay(&env.settings, &id, "alice", Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no result within"), "{error}");
    assert!(error.contains("commands queue"), "{error}");
    wait_dead_depth(&client, 0).await;
    let channel = client.connection.create_channel().await.unwrap();
    assert_eq!(
        ready_messages(&channel, &client.names.commands_queue).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_and_events_not_from_the_listener_are_not_replayed_as_such() {
    let env = TestEnv::new().await;
    let _worker = env.start_worker();
    let client = env.client().await;
    // An operator's command: replayed, it would be published as the replaying operator.
    let approval = json!({"id": "planted", "type": "cash.approve", "user_id": 91,
                          "data": {"cash": 1, "remark": "x"}});
    dead_letter_directly(&env, &client, &approval, "failed 20 times: boom").await;
    wait_dead_depth(&client, 1).await;
    let letter = dead_letters::list(&env.settings, 10)
        .await
        .unwrap()
        .remove(0);
    let refused = dead_letters::replay(&env.settings, &letter.id, "alice", WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("operator's command"), "{refused}");
    wait_dead_depth(&client, 1).await;
    assert!(
        dead_letters::discard(&env.settings, &letter.id, "alice", "planted")
            .await
            .unwrap()
    );
    wait_dead_depth(&client, 0).await;

    // A "Ping++ event" that never came through the listener (routing key pingpp, but no
    // worker's record of the webhooks exchange) does not go to the webhooks queue: it is
    // replayed as what it is, garbage for the commands queue.
    let event = json!({"id": "evt_forged", "object": "event", "type": "charge.succeeded",
                       "data": {"object": {"id": "ch_forged", "paid": true, "amount": 100}}});
    let mut headers = FieldTable::default();
    headers.insert(
        pluspay::worker::ERROR_HEADER.into(),
        AMQPValue::LongString("misrouted".into()),
    );
    headers.insert(
        dead_letters::DEAD_FROM_HEADER.into(),
        AMQPValue::LongString(client.names.results_exchange.as_str().into()),
    );
    client
        .publisher
        .publish(
            &client.names.dead_exchange,
            "pingpp",
            event.to_string().as_bytes(),
            json_properties().with_headers(headers),
            true,
        )
        .await
        .unwrap();
    wait_dead_depth(&client, 1).await;
    let letter = dead_letters::list(&env.settings, 10)
        .await
        .unwrap()
        .remove(0);
    let result = dead_letters::replay(&env.settings, &letter.id, "alice", WAIT)
        .await
        .unwrap()
        .expect("found");
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["code"], "malformed", "{result}");
    assert_eq!(client.webhooks_queue_depth().await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM pingpp_events").await,
        0,
        "the forged event was never applied"
    );
}
