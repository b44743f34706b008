//! What the test sees (results and events, as they arrive) and the publishers that fill it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use pluspay::amqp::publisher::json_properties;
use pluspay::amqp::topology::PINGPP_ROUTING_KEY;
use pluspay::amqp::{self, Names};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::broker::RobustPublisher;
use super::plan::{Bad, HoldEnd, Kind, Plan, Scenario, Send, Target};
use super::{BASE_COMMANDS, BROKER_CALL, FOLLOW_UP_PUBLISHERS, OPERATOR, WINDOW};
use crate::support::fake_pingpp::FakePingpp;

#[derive(Clone, Debug)]
pub(super) enum Job {
    Cash {
        index: usize,
        cash: i64,
    },
    Recharge {
        index: usize,
        order: i64,
        charge: String,
    },
    Hold {
        index: usize,
        hold: i64,
    },
    Redpacket {
        index: usize,
        redpacket: i64,
    },
    Refund {
        index: usize,
        order: i64,
    },
}

#[derive(Default)]
pub(super) struct State {
    /// Every command id that must get a result, with the command.
    pub(super) expected: HashMap<String, Value>,
    /// Every result published, by command id, in arrival order.
    pub(super) results: HashMap<String, Vec<Value>>,
    pub(super) base_seen: usize,
    /// Follow-up jobs queued and not yet sent.
    pending_jobs: usize,
    /// Recharge order → (base index, paid?), once its follow-up was sent.
    pub(super) recharges: HashMap<i64, (usize, bool)>,
    /// Recharge order → the states seen for it on the events exchange and in retrieve results.
    pub(super) order_states: HashMap<i64, Vec<i64>>,
    /// Cash id → base index of its request.
    pub(super) cashes: HashMap<i64, usize>,
    /// Hold id → base index of its `hold.create`.
    pub(super) holds: HashMap<i64, usize>,
    /// Holds a `hold.expired` event was seen for (copies included).
    pub(super) expired_holds: HashMap<i64, usize>,
    /// Recharge orders whose refund was asked for.
    pub(super) refunds_asked: HashSet<i64>,
    /// Red packet id → base index of its `redpacket.create`, once its claims were sent.
    pub(super) redpackets: HashMap<i64, usize>,
    /// Red packets a `redpacket.expired` event was seen for, with the event's packet.
    pub(super) expired_redpackets: HashMap<i64, Value>,
    /// Ids of the genuine events enqueued.
    pub(super) event_ids: HashSet<String>,
    pub(super) events: Vec<Value>,
    /// `wallet.changed` by event id: the first copy's body, and how many copies came.
    pub(super) wallet_changed: HashMap<String, (Vec<u8>, usize)>,
    /// `ledger.root` events, apart from the money's.
    pub(super) ledger_roots: Vec<Value>,
    /// `wallet.changed` copies whose bytes differ from the first one's.
    pub(super) wallet_changed_differing: Vec<String>,
    /// Per (user, unit), the versions in the order their first copies arrived.
    pub(super) wallet_changed_order: HashMap<(i64, String), Vec<i64>>,
    /// Messages published, all copies and retries included.
    pub(super) publishes: usize,
    pub(super) collector_connects: usize,
    /// When each result (copies included) arrived: the gaps are the unavailability.
    pub(super) result_times: Vec<Instant>,
    /// Signed webhooks a listener accepted (200), and deliveries that failed (another status
    /// or no answer) and were made again, as Ping++ does.
    pub(super) webhooks_accepted: usize,
    pub(super) webhook_failures: usize,
}

pub(super) struct Board {
    pub(super) state: Mutex<State>,
    pub(super) window: Semaphore,
    pub(super) plans: Vec<Plan>,
    pub(super) jobs: mpsc::UnboundedSender<Job>,
}

/// A hold has ended as far as the test can see: its follow-up succeeded, or its expiry's event
/// came (a follow-up then answers `hold_closed`).
fn hold_settled(state: &State, hold: i64, index: usize, plan: &Plan) -> bool {
    if state.expired_holds.contains_key(&hold) {
        return true;
    }
    let follow_up = plan
        .hold
        .as_ref()
        .is_some_and(|h| !matches!(h.end, HoldEnd::Expire));
    follow_up
        && state
            .results
            .get(&format!("f-{index}-h"))
            .is_some_and(|r| r.iter().any(|r| r["status"] == "succeeded"))
}

/// A red packet has ended as far as the test can see: every claim answered, and either every
/// share claimed or its expiry's event seen.
fn redpacket_settled(state: &State, packet: i64, index: usize, plan: &Plan) -> bool {
    let claimers = &plan
        .redpacket
        .as_ref()
        .expect("a red packet's plan")
        .claimers;
    let claims: Vec<&Value> = (0..claimers.len())
        .filter_map(|c| {
            state
                .results
                .get(&format!("f-{index}-p{c}"))
                .and_then(|r| r.first())
        })
        .collect();
    if claims.len() < claimers.len() {
        return false;
    }
    let count = plan.command["data"]["count"].as_i64().unwrap_or(0) as usize;
    let claimed = claims.iter().filter(|r| r["status"] == "succeeded").count();
    claimed == count || state.expired_redpackets.contains_key(&packet)
}

fn base_index(id: &str) -> Option<usize> {
    id.strip_prefix("c-")?.parse().ok()
}

fn order_state(order: &Value) -> Option<(i64, i64)> {
    Some((order["id"].as_i64()?, order["state"].as_i64()?))
}

impl Board {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_result(&self, body: &[u8]) {
        let result: Value = serde_json::from_slice(body).expect("a result is JSON");
        let id = result["id"]
            .as_str()
            .expect("a result has an id")
            .to_owned();
        let mut state = self.state();
        state.result_times.push(Instant::now());
        if !state.results.contains_key(&id) {
            if let Some(index) = base_index(&id) {
                state.base_seen += 1;
                self.window.add_permits(1);
                if let Some(job) = self.job_for(index, &result) {
                    // Counted before the result is recorded, so that whoever sees the result
                    // also sees its follow-up as pending.
                    state.pending_jobs += 1;
                    self.jobs.send(job).expect("the follow-up queue is open");
                }
            }
            if id.ends_with("-r") && result["status"] == "succeeded" {
                if let Some((order, s)) = order_state(&result["data"]["order"]) {
                    state.order_states.entry(order).or_default().push(s);
                    self.seen_paid(&mut state, order, s);
                }
            }
        }
        state.results.entry(id).or_default().push(result);
    }

    fn job_for(&self, index: usize, result: &Value) -> Option<Job> {
        if result["status"] != "succeeded" {
            return None;
        }
        let data = &result["data"];
        match self.plans[index].kind {
            Kind::Cash => Some(Job::Cash {
                index,
                cash: data["cash"]["id"].as_i64().expect("a cash result's id"),
            }),
            Kind::Recharge => Some(Job::Recharge {
                index,
                order: data["order"]["id"].as_i64().expect("a recharge's order id"),
                charge: data["pingpp_order"]["id"]
                    .as_str()
                    .expect("a recharge's charge id")
                    .to_owned(),
            }),
            Kind::Hold => Some(Job::Hold {
                index,
                hold: data["hold"]["id"].as_i64().expect("a hold's id"),
            }),
            Kind::Redpacket => Some(Job::Redpacket {
                index,
                redpacket: data["redpacket"]["id"].as_i64().expect("a red packet's id"),
            }),
            _ => None,
        }
    }

    fn on_event(&self, body: &[u8]) {
        let event: Value = serde_json::from_slice(body).expect("an event is JSON");
        let mut state = self.state();
        if event["type"] == "wallet.changed" {
            let id = event["event_id"].as_str().expect("an event id").to_owned();
            match state.wallet_changed.get_mut(&id) {
                Some((first, copies)) => {
                    *copies += 1;
                    if first.as_slice() != body {
                        state.wallet_changed_differing.push(id);
                    }
                }
                None => {
                    let data = &event["data"];
                    let account = (
                        data["user"].as_i64().expect("a user"),
                        data["unit"].as_str().expect("a unit").to_owned(),
                    );
                    let version = data["version"].as_i64().expect("a version");
                    state.wallet_changed.insert(id, (body.to_vec(), 1));
                    state
                        .wallet_changed_order
                        .entry(account)
                        .or_default()
                        .push(version);
                }
            }
            return;
        }
        // The workers look for yesterday's root when they start: one of them records it, once
        // however many start and die (books.rs checks).
        if event["type"] == "ledger.root" {
            state.ledger_roots.push(event);
            return;
        }
        if event["type"] == "redpacket.expired" {
            let packet = &event["data"]["redpacket"];
            let id = packet["id"].as_i64().expect("a red packet's id");
            state.expired_redpackets.insert(id, packet.clone());
            state.events.push(event);
            return;
        }
        if event["type"] == "hold.expired" {
            let hold = event["data"]["hold"]["id"].as_i64().expect("a hold's id");
            *state.expired_holds.entry(hold).or_default() += 1;
            state.events.push(event);
            return;
        }
        if let Some((order, s)) = order_state(&event["data"]["order"]) {
            state.order_states.entry(order).or_default().push(s);
            self.seen_paid(&mut state, order, s);
        }
        state.events.push(event);
    }

    /// A recharge seen paid: its refund, if its plan has one, is asked for once.
    fn seen_paid(&self, state: &mut State, order: i64, order_state: i64) {
        let Some(&(index, _)) = state.recharges.get(&order) else {
            return;
        };
        let planned = self.plans[index].recharge.as_ref().and_then(|r| r.refund);
        if order_state == 1 && planned.is_some() && state.refunds_asked.insert(order) {
            state.pending_jobs += 1;
            self.jobs
                .send(Job::Refund { index, order })
                .expect("the follow-up queue is open");
        }
    }

    /// Registers a command id before it is first sent.
    fn expect(&self, command: &Value) {
        let id = command["id"].as_str().unwrap().to_owned();
        self.state().expected.insert(id, command.clone());
    }

    /// Everything sent has its result, every follow-up was sent, every recharge completed.
    pub(super) fn complete(&self) -> bool {
        let state = self.state();
        state.pending_jobs == 0
            && state.base_seen == BASE_COMMANDS
            && state
                .expected
                .keys()
                .all(|id| state.results.contains_key(id))
            && state
                .holds
                .iter()
                .all(|(hold, index)| hold_settled(&state, *hold, *index, &self.plans[*index]))
            && state.redpackets.iter().all(|(packet, index)| {
                redpacket_settled(&state, *packet, *index, &self.plans[*index])
            })
            && state.recharges.keys().all(|order| {
                state
                    .order_states
                    .get(order)
                    .is_some_and(|s| s.iter().any(|&s| s != 0))
            })
    }

    /// A few command ids without a result and recharges not completed yet.
    pub(super) fn stragglers(&self) -> (Vec<String>, Vec<i64>) {
        let state = self.state();
        let missing = state
            .expected
            .keys()
            .filter(|id| !state.results.contains_key(*id))
            .take(10)
            .cloned()
            .collect();
        let incomplete = state
            .recharges
            .keys()
            .filter(|order| {
                !state
                    .order_states
                    .get(order)
                    .is_some_and(|s| s.iter().any(|&s| s != 0))
            })
            .take(10)
            .copied()
            .collect();
        (missing, incomplete)
    }

    pub(super) fn progress(&self) -> String {
        let state = self.state();
        let answered = state
            .expected
            .keys()
            .filter(|id| state.results.contains_key(*id))
            .count();
        format!(
            "{}/{BASE_COMMANDS} base results, {answered}/{} ids answered, {} follow-ups pending, \
             {} events out",
            state.base_seen,
            state.expected.len(),
            state.pending_jobs,
            state.events.len()
        )
    }
}

/// Consumes the results and events watch queues, reconnecting whenever the broker goes away.
/// Messages are acknowledged after they are recorded, so none is lost with a connection.
pub(super) async fn collect(
    urls: Vec<String>,
    queues: (String, String),
    board: Arc<Board>,
    stop: CancellationToken,
) {
    let mut next = 0;
    while !stop.is_cancelled() {
        let url = &urls[next % urls.len()];
        next += 1;
        let Ok(connection) = amqp::connect(url, "chaos-collector").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        board.state().collector_connects += 1;
        let session = async {
            let setup = async {
                let channel = connection.create_channel().await?;
                channel.basic_qos(1_000, BasicQosOptions::default()).await?;
                let mut streams = Vec::new();
                for queue in [&queues.0, &queues.1] {
                    streams.push(
                        channel
                            .basic_consume(
                                queue.as_str().into(),
                                "".into(),
                                BasicConsumeOptions::default(),
                                FieldTable::default(),
                            )
                            .await?,
                    );
                }
                Ok::<_, lapin::Error>((channel, streams))
            };
            let (_channel, mut streams) = tokio::time::timeout(BROKER_CALL, setup)
                .await
                .map_err(|_| "setting up the consumers timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let mut events = streams.pop().unwrap();
            let mut results = streams.pop().unwrap();
            loop {
                let (delivery, is_result) = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    next = results.next() => (next, true),
                    next = events.next() => (next, false),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {
                        if connection.status().connected() {
                            continue;
                        }
                        return Err("the connection is gone".to_owned());
                    }
                };
                let delivery = delivery
                    .ok_or_else(|| "the consumer ended".to_owned())?
                    .map_err(|e| e.to_string())?;
                if is_result {
                    board.on_result(&delivery.data);
                } else {
                    board.on_event(&delivery.data);
                }
                // lapin has been seen never to answer an ack racing the connection's loss:
                // bounded, so the collector reconnects instead of waiting forever.
                tokio::time::timeout(BROKER_CALL, delivery.ack(BasicAckOptions::default()))
                    .await
                    .map_err(|_| "an ack timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
            }
        };
        let ended: Result<(), String> = session.await;
        let _ =
            tokio::time::timeout(Duration::from_secs(2), connection.close(200, "bye".into())).await;
        if ended.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// As upstream and operators publish: the broker user of the test's URLs (`guest`, an
/// operator in config/pluspay.toml) as `user_id`.
fn command_properties(id: &str) -> BasicProperties {
    json_properties()
        .with_message_id(id.into())
        .with_user_id("guest".into())
}

async fn send_command(publisher: &mut RobustPublisher, names: &Names, command: &Value) {
    let kind = command["type"].as_str().unwrap();
    let id = command["id"].as_str().unwrap();
    publisher
        .publish(
            &names.commands_exchange,
            kind,
            command.to_string().as_bytes(),
            command_properties(id),
        )
        .await;
}

async fn send_copies(
    publisher: &mut RobustPublisher,
    names: &Names,
    command: &Value,
    copies: usize,
) -> usize {
    for _ in 0..copies {
        send_command(publisher, names, command).await;
    }
    copies
}

pub(super) async fn publish_base(
    p: usize,
    sends: Vec<Send>,
    bad: Arc<Vec<Bad>>,
    board: Arc<Board>,
    urls: Vec<String>,
    names: Names,
) -> (usize, usize, usize) {
    let mut publisher = RobustPublisher::new(&urls, p, format!("chaos-publisher-{p}"));
    let mut published = 0;
    for send in sends {
        match send {
            Send::First(i) => {
                board.window.acquire().await.unwrap().forget();
                let command = &board.plans[i].command;
                board.expect(command);
                send_command(&mut publisher, &names, command).await;
            }
            Send::Copy(i) => send_command(&mut publisher, &names, &board.plans[i].command).await,
            Send::Bad(b) => {
                let bad = &bad[b];
                let (exchange, key) = match bad.target {
                    Target::CommandsQueue => ("", names.commands_queue.as_str()),
                    Target::CommandsExchange(key) => (names.commands_exchange.as_str(), key),
                    Target::Webhooks => (names.webhooks_exchange.as_str(), PINGPP_ROUTING_KEY),
                };
                publisher
                    .publish(exchange, key, &bad.body, command_properties(&bad.id))
                    .await;
            }
        }
        published += 1;
    }
    board.state().publishes += published + publisher.retries;
    (published, publisher.connects, publisher.retries)
}

/// Where follow-ups go: commands to the brokers, webhooks to the listeners (or, with none, as
/// verified events straight to the webhooks exchange).
#[derive(Clone)]
pub(super) struct Routes {
    pub(super) brokers: Vec<String>,
    pub(super) listeners: Arc<Vec<String>>,
    pub(super) names: Names,
}

pub(super) async fn follow_ups(
    n: usize,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    board: Arc<Board>,
    fake: Arc<FakePingpp>,
    routes: Routes,
    stop: CancellationToken,
) -> (usize, usize) {
    let Routes {
        brokers: urls,
        listeners,
        names,
    } = routes;
    let mut publisher = RobustPublisher::new(&urls, n, format!("chaos-follow-up-{n}"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut published = 0;
    loop {
        let job = tokio::select! {
            _ = stop.cancelled() => break,
            job = async { jobs.lock().await.recv().await } => match job {
                Some(job) => job,
                None => break,
            },
        };
        match job {
            Job::Cash { index, cash } => {
                board.state().cashes.insert(cash, index);
                let plan = board.plans[index].cash.clone().unwrap();
                for (d, (kind, copies)) in plan.decisions.iter().enumerate() {
                    let command = json!({
                        "id": format!("f-{index}-d{d}"), "type": kind, "user_id": OPERATOR,
                        "data": { "cash": cash, "remark": format!("chaos {kind}") },
                    });
                    board.expect(&command);
                    published += send_copies(&mut publisher, &names, &command, *copies).await;
                }
            }
            Job::Recharge {
                index,
                order,
                charge,
            } => {
                let plan = board.plans[index].recharge.clone().unwrap();
                let user = board.plans[index].command["user_id"].clone();
                let (kind, charge) = if plan.pay {
                    ("charge.succeeded", fake.pay(&charge))
                } else {
                    (
                        "charge.failed",
                        fake.fail_charge(&charge, "channel_declined", "支付失败"),
                    )
                };
                let (event, signature) = fake.signed_event(kind, charge);
                let event_id: Value = serde_json::from_str::<Value>(&event).unwrap()["id"].clone();
                {
                    let mut state = board.state();
                    state.recharges.insert(order, (index, plan.pay));
                    state
                        .event_ids
                        .insert(event_id.as_str().unwrap().to_owned());
                }
                let retrieve = plan.retrieve_copies.map(|copies| {
                    let command = json!({
                        "id": format!("f-{index}-r"), "type": "recharge.retrieve",
                        "user_id": user, "data": { "order": order },
                    });
                    board.expect(&command);
                    (command, copies)
                });
                if plan.retrieve_first {
                    if let Some((command, copies)) = &retrieve {
                        published += send_copies(&mut publisher, &names, command, *copies).await;
                    }
                }
                for copy in 0..plan.event_copies {
                    if listeners.is_empty() {
                        publisher
                            .publish(
                                &names.webhooks_exchange,
                                PINGPP_ROUTING_KEY,
                                event.as_bytes(),
                                json_properties(),
                            )
                            .await;
                    } else {
                        deliver(&http, &listeners, n + copy, &event, &signature, &board).await;
                    }
                    published += 1;
                }
                if !plan.retrieve_first {
                    if let Some((command, copies)) = &retrieve {
                        published += send_copies(&mut publisher, &names, command, *copies).await;
                    }
                }
            }
            Job::Hold { index, hold } => {
                let plan = board.plans[index].hold.clone().unwrap();
                let user = board.plans[index].command["user_id"].clone();
                let data = match plan.end {
                    HoldEnd::Capture { receiver, amount } => Some((
                        "hold.capture",
                        json!({ "hold": hold, "user": receiver, "amount": amount }),
                    )),
                    HoldEnd::Release => Some(("hold.release", json!({ "hold": hold }))),
                    HoldEnd::Expire => None,
                };
                board.state().holds.insert(hold, index);
                if let Some((kind, data)) = data {
                    let command = json!({
                        "id": format!("f-{index}-h"), "type": kind, "user_id": user, "data": data,
                    });
                    board.expect(&command);
                    published += send_copies(&mut publisher, &names, &command, plan.copies).await;
                }
            }
            Job::Refund { index, order } => {
                let plan = board.plans[index].recharge.clone().unwrap();
                let command = json!({
                    "id": format!("f-{index}-f"), "type": "recharge.refund",
                    "user_id": board.plans[index].command["user_id"],
                    "data": { "order": order, "amount": plan.refund.unwrap(),
                              "description": "chaos 退款" },
                });
                board.expect(&command);
                published += send_copies(&mut publisher, &names, &command, 1).await;
            }
            Job::Redpacket { index, redpacket } => {
                let plan = board.plans[index].redpacket.clone().unwrap();
                board.state().redpackets.insert(redpacket, index);
                for (c, claimer) in plan.claimers.iter().enumerate() {
                    let command = json!({
                        "id": format!("f-{index}-p{c}"), "type": "redpacket.claim",
                        "user_id": claimer, "data": { "redpacket": redpacket },
                    });
                    board.expect(&command);
                    published += send_copies(&mut publisher, &names, &command, 1).await;
                }
            }
        }
        board.state().pending_jobs -= 1;
    }
    board.state().publishes += published + publisher.retries;
    (published, publisher.retries)
}

/// Delivers a signed webhook as Ping++ does: to a listener, and again (to the next one) until
/// one accepts it.
async fn deliver(
    http: &reqwest::Client,
    listeners: &[String],
    first: usize,
    body: &str,
    signature: &str,
    board: &Board,
) {
    let deadline = Instant::now() + super::PUBLISH_DEADLINE;
    for attempt in first.. {
        let url = &listeners[attempt % listeners.len()];
        let status =
            crate::support::post_webhook(http, url, body.as_bytes(), Some(signature)).await;
        if status == 200 {
            board.state().webhooks_accepted += 1;
            return;
        }
        board.state().webhook_failures += 1;
        assert!(
            Instant::now() < deadline,
            "no listener accepted a webhook for {:?} (last: {url} answered {status})",
            super::PUBLISH_DEADLINE
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The test's side of a run once started: the board, the collector of results and events, the
/// follow-up publishers and the base publishers (publisher p starts on broker p of `routes`).
pub(super) struct Traffic {
    pub(super) board: Arc<Board>,
    pub(super) started: Instant,
    pub(super) publishers: Vec<tokio::task::JoinHandle<(usize, usize, usize)>>,
    last_progress: Instant,
    stop: CancellationToken,
    collector: tokio::task::JoinHandle<()>,
    follow_ups: Vec<tokio::task::JoinHandle<(usize, usize)>>,
}

impl Traffic {
    /// `watch`: the queues bound to the results and the events exchanges.
    pub(super) fn start(
        scenario: &Scenario,
        fake: Arc<FakePingpp>,
        routes: Routes,
        watch: (String, String),
    ) -> Traffic {
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let board = Arc::new(Board {
            state: Mutex::default(),
            window: Semaphore::new(WINDOW),
            plans: scenario.plans.clone(),
            jobs: jobs_tx,
        });
        let stop = CancellationToken::new();
        let collector = tokio::spawn(collect(
            routes.brokers.clone(),
            watch,
            board.clone(),
            stop.clone(),
        ));
        let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
        let follow_ups = (0..FOLLOW_UP_PUBLISHERS)
            .map(|n| {
                tokio::spawn(follow_ups(
                    n,
                    jobs_rx.clone(),
                    board.clone(),
                    fake.clone(),
                    routes.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let bad = Arc::new(scenario.bad.clone());
        let started = Instant::now();
        let publishers = scenario
            .sends
            .iter()
            .enumerate()
            .map(|(p, sends)| {
                tokio::spawn(publish_base(
                    p,
                    sends.clone(),
                    bad.clone(),
                    board.clone(),
                    routes.brokers.clone(),
                    routes.names.clone(),
                ))
            })
            .collect();
        Traffic {
            board,
            started,
            publishers,
            last_progress: started,
            stop,
            collector,
            follow_ups,
        }
    }

    /// One look at the run while it goes: true once every command sent is answered, every
    /// follow-up sent and the database holds exactly the commands and events sent (and
    /// `more_to_come` is false). Fails the test after `deadline`, with `story`; says the
    /// progress every 10 s, each line starting with `prefix`.
    pub(super) async fn answered(
        &mut self,
        more_to_come: bool,
        db_url: &str,
        deadline: Duration,
        prefix: &str,
        story: &[String],
    ) -> bool {
        if !more_to_come && self.publishers.iter().all(|p| p.is_finished()) && self.board.complete()
        {
            let (commands, events) = super::db_counts(db_url).await.unwrap_or((-1, -1));
            let state = self.board.state();
            if commands == state.expected.len() as i64 && events == state.event_ids.len() as i64 {
                drop(state);
                super::say(format!(
                    "{prefix}{:>5.1}s: every command answered: {}",
                    self.started.elapsed().as_secs_f64(),
                    self.board.progress()
                ));
                return true;
            }
        }
        if self.started.elapsed() > deadline {
            let (missing, incomplete) = self.board.stragglers();
            panic!(
                "not done after {deadline:?}: {}; db (commands with a result, events): {:?}; no \
                 result yet for {missing:?}; recharges not completed: {incomplete:?}; so far: \
                 {story:#?}",
                self.board.progress(),
                super::db_counts(db_url).await,
            );
        }
        if self.last_progress.elapsed() > Duration::from_secs(10) {
            self.last_progress = Instant::now();
            super::say(format!(
                "{prefix}{:>5.1}s: {}",
                self.started.elapsed().as_secs_f64(),
                self.board.progress()
            ));
        }
        false
    }

    /// Waits for the base publishers: (connections made, messages published again).
    pub(super) async fn publishers_done(&mut self) -> (usize, usize) {
        let (mut connects, mut retries) = (0, 0);
        for publisher in self.publishers.drain(..) {
            let (_, c, r) = publisher.await.unwrap();
            connects += c;
            retries += r;
        }
        (connects, retries)
    }

    /// Stops the collector and the follow-up publishers: (follow-ups published, published
    /// again).
    pub(super) async fn finish(self) -> (usize, usize) {
        self.stop.cancel();
        self.collector.await.unwrap();
        let (mut published, mut retries) = (0, 0);
        for task in self.follow_ups {
            let (p, r) = task.await.unwrap();
            published += p;
            retries += r;
        }
        (published, retries)
    }
}
