//! The users' money held at Ping++ (`wallet.custody = "pingpp"`), through real PostgreSQL and
//! RabbitMQ and the fake Ping++: opening an e-wallet, binding a card, depositing, withdrawing,
//! each exactly once whatever the redeliveries, races, outages and crashes, with the ledger the
//! exact mirror of the e-wallets at Ping++.

use std::time::Duration;

use crate::support::fake_pingpp::{FakePingpp, APP_ID};
use crate::support::{next_event, BrokerClient, TestEnv, WorkerHandle, WAIT};
use pluspay::domain::custody::Custody;
use serde_json::{json, Value};

pub const FINGERPRINT_KEY: &str = "a test fingerprint key of more than 32 bytes";
pub const NAME: &str = "张三丰";
pub const ID_NUMBER: &str = "110101199003074514";
pub const MOBILE: &str = "13912345678";
pub const CARD: &str = "6214850213609784";
const RETURN_URL: &str = "https://example.com/wallet";

pub fn custody_mode(settings: &mut pluspay::config::Settings) {
    settings.wallet.custody = Custody::Pingpp;
    settings.pingpp.fingerprint_key = FINGERPRINT_KEY.into();
}

async fn start() -> (TestEnv, FakePingpp, BrokerClient, WorkerHandle) {
    crate::support::with_fake_pingpp_and_worker(custody_mode).await
}

pub fn open(id: &str, user: i64) -> Value {
    json!({"id": id, "type": "account.open", "user_id": user, "data": {
        "cert_type": "1", "cert_name": NAME, "cert_number": ID_NUMBER, "mobile": MOBILE}})
}

pub fn deposit(id: &str, user: i64, amount: i64) -> Value {
    json!({"id": id, "type": "recharge", "user_id": user,
           "data": {"amount": amount, "return_url": RETURN_URL}})
}

pub fn cash(id: &str, user: i64, value: i64) -> Value {
    json!({"id": id, "type": "cash", "user_id": user,
           "data": {"value": value, "return_url": RETURN_URL}})
}

/// A command of `kind` by `user`.
pub fn command(id: &str, kind: &str, user: i64, data: Value) -> Value {
    json!({"id": id, "type": kind, "user_id": user, "data": data})
}

/// The data of a result that must have succeeded.
pub fn succeeded(result: &Value) -> &Value {
    assert_eq!(result["status"], "succeeded", "{result}");
    &result["data"]
}

/// The code of a result that must have been rejected.
pub fn code(result: &Value) -> &str {
    assert_eq!(result["status"], "rejected", "{result}");
    result["code"].as_str().unwrap()
}

fn requests_to(fake: &FakePingpp, method: &str, path_end: &str) -> usize {
    fake.request_log()
        .iter()
        .filter(|(m, p)| m == method && p.ends_with(path_end))
        .count()
}

/// Opens user `user`'s e-wallet: the application, then Ping++'s approval and its event.
pub async fn open_account(client: &mut BrokerClient, fake: &FakePingpp, user: i64) {
    let opened = client.call(open(&format!("open-{user}"), user)).await;
    let id = succeeded(&opened)["cus_application"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (event, _) = fake.signed_event(
        "cus_application.succeeded",
        fake.succeed_cus_application(&id),
    );
    client.enqueue_pingpp_event(&event).await;
    wait_for_application(client, user, "succeeded").await;
}

/// Asks `account.get` until the user's application has `status`.
async fn wait_for_application(client: &mut BrokerClient, user: i64, status: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while client_get(client, user).await["cus_application"]["status"] != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} application in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client_get(client: &mut BrokerClient, user: i64) -> Value {
    let id = format!("get-{}", uuid::Uuid::new_v4().simple());
    let result = client
        .call(command(&id, "account.get", user, json!({})))
        .await;
    succeeded(&result).clone()
}

async fn order_state(env: &TestEnv, order: i64) -> i16 {
    env.db
        .query_one("SELECT state FROM wallet_orders WHERE id = $1", &[&order])
        .await
        .unwrap()
        .get(0)
}

async fn fake_balance(fake: &FakePingpp, user: i64) -> i64 {
    fake.user(&format!("user_{user}")).unwrap()["available_balance"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_opens_binds_deposits_and_withdraws_once_and_the_ledger_mirrors_ping_plus_plus()
{
    let (mut env, fake, mut client, _worker) = start().await;
    let mut accounts = client
        .watch(&client.names.events_exchange, "account.#")
        .await;
    let mut deposits = client
        .watch(&client.names.events_exchange, "deposit.#")
        .await;

    // Nothing can be done with an e-wallet that is not open.
    assert_eq!(
        code(&client.call(deposit("d0", 1, 500)).await),
        "account_not_open"
    );
    let cards = command("k0", "account.cards", 1, json!({"return_url": RETURN_URL}));
    assert_eq!(code(&client.call(cards).await), "account_not_open");
    assert_eq!(
        code(&client.call(cash("w-1", 1, 100)).await),
        "account_not_open"
    );

    // Open: a Ping++ user and one pending application, personal data masked.
    let opened = client.call(open("open-1", 1)).await;
    let data = succeeded(&opened);
    assert_eq!(data["user"]["id"], "user_1");
    let application = &data["cus_application"];
    assert_eq!(application["status"], "pending");
    assert!(!opened.to_string().contains(ID_NUMBER) && !opened.to_string().contains(NAME));
    assert!(application["cert_number"].as_str().unwrap().contains('*'));
    let application_id = application["id"].as_str().unwrap().to_owned();
    // A redelivery answers the same and makes nothing more.
    assert_eq!(client.call(open("open-1", 1)).await["data"], opened["data"]);
    assert_eq!(fake.cus_applications().len(), 1);
    // A second application while one is pending is refused.
    assert_eq!(
        code(&client.call(open("open-1b", 1)).await),
        "account_application_pending"
    );

    let pending = client_get(&mut client, 1).await;
    assert_eq!(pending["cus_application"]["status"], "pending");
    assert_eq!(pending["ledger_balance"], 0);

    let (event, _) = fake.signed_event(
        "cus_application.succeeded",
        fake.succeed_cus_application(&application_id),
    );
    client.enqueue_pingpp_event(&event).await;
    let account_opened = next_event(&mut accounts).await;
    assert_eq!(account_opened["type"], "account.opened");
    assert_eq!(account_opened["user_id"], 1);
    assert!(!account_opened.to_string().contains(NAME));
    let got = client_get(&mut client, 1).await;
    assert_eq!(got["cus_application"]["status"], "succeeded");
    assert_eq!(got["user"]["identified"], true);
    assert_eq!(got["difference"], 0);

    // Bind a card: a link, marked with when it expires.
    let cards = client
        .call(command(
            "k1",
            "account.cards",
            1,
            json!({"return_url": RETURN_URL}),
        ))
        .await;
    let link = succeeded(&cards);
    assert!(link["card_url"].as_str().unwrap().starts_with("https://"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(link["expires_at"].as_i64().unwrap() > now);

    // Deposit: a waiting order and a payment link; nothing is credited yet.
    let made = client.call(deposit("d1", 1, 500)).await;
    let data = succeeded(&made);
    let order = data["order"]["id"].as_i64().unwrap();
    assert_eq!(data["order"]["state"], 0);
    assert_eq!(data["order"]["target_type"], "recharge_ping_p_p");
    assert!(data["deposit"]["extra"]["credential"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    let deposit_id = data["deposit"]["id"].as_str().unwrap().to_owned();
    assert_eq!(data["order"]["target_id"], deposit_id.as_str());
    assert_eq!(env.balance(1).await, 0);
    assert_eq!(
        client.call(deposit("d1", 1, 500)).await["data"],
        made["data"]
    );
    assert_eq!(fake.deposits().len(), 1);

    // Paid: the webhook (delivered twice) and a retrieve race; credited once.
    let paid = fake.pay_deposit(&deposit_id);
    let (event, _) = fake.signed_event("deposit.succeeded", paid);
    let retrieve = command("r1", "recharge.retrieve", 1, json!({"order": order}));
    client.enqueue_pingpp_event(&event).await;
    client.enqueue_pingpp_event(&event).await;
    let retrieved = client.call(retrieve).await;
    assert_eq!(succeeded(&retrieved)["order"]["state"], 1);
    env.wait_for_count(
        "SELECT count(*) FROM pingpp_events WHERE outcome <> 'waiting'",
        2,
    )
    .await;
    assert_eq!(env.balance(1).await, 500);
    assert_eq!(order_state(&env, order).await, 1);
    assert_eq!(
        env.count("SELECT count(*) FROM journal WHERE kind = 'deposit'")
            .await,
        1
    );
    assert_eq!(env.system_balance("ewallet_outside").await, -500);
    assert_eq!(fake_balance(&fake, 1).await, 500);
    // The webhook got there first, or the retrieve did: either way one deposit.succeeded at most.
    let published = env
        .count("SELECT count(*) FROM pingpp_events WHERE routing_key = 'deposit.succeeded'")
        .await;
    assert!(published <= 1);
    if published == 1 {
        assert_eq!(next_event(&mut deposits).await["type"], "deposit.succeeded");
    }

    // More than the e-wallet holds is refused before Ping++ is asked.
    let before = fake.withdrawals().len();
    assert_eq!(
        code(&client.call(cash("w0", 1, 501)).await),
        "insufficient_balance"
    );
    assert_eq!(fake.withdrawals().len(), before);

    // Withdraw: created and confirmed at Ping++, the user's link inside, no operator review.
    let asked = client.call(cash("w1", 1, 200)).await;
    let data = succeeded(&asked);
    let withdrawal = &data["pingpp_withdrawal"];
    assert!(withdrawal["operation_url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert_eq!(withdrawal["channel"], "yeepay");
    assert_eq!(data["cash"]["status"], 1);
    assert_eq!(data["order"]["state"], 0);
    let withdrawal_id = withdrawal["id"].as_str().unwrap().to_owned();
    let cash_order = data["order"]["id"].as_i64().unwrap();
    assert_eq!(client.call(cash("w1", 1, 200)).await["data"], asked["data"]);
    assert_eq!(fake.withdrawals().len(), before + 1);
    assert_eq!(env.balance(1).await, 300);
    assert_eq!(env.system_balance("ewallet_withdrawals").await, 200);
    // An operator's decision does not exist here.
    let approve = command(
        "a1",
        "cash.approve",
        99,
        json!({"cash": data["cash"]["id"], "remark": "x"}),
    );
    assert_eq!(code(&client.call(approve).await), "custody_mode");

    let (event, _) = fake.signed_event(
        "withdrawal.succeeded",
        fake.succeed_withdrawal(&withdrawal_id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        &format!("SELECT count(*) FROM wallet_orders WHERE id = {cash_order} AND state = 1"),
        1,
    )
    .await;
    assert_eq!(env.balance(1).await, 300);
    assert_eq!(env.system_balance("ewallet_withdrawals").await, 0);
    assert_eq!(env.system_balance("ewallet_outside").await, -300);

    // The ledger is the exact record of what Ping++ holds.
    assert_eq!(fake_balance(&fake, 1).await, 300);
    let got = client_get(&mut client, 1).await;
    assert_eq!(got["ledger_balance"], 300);
    assert_eq!(got["user"]["available_balance"], 300);
    assert_eq!(got["difference"], 0);

    // The older wallet's charge records show the deposit and the withdrawal.
    let charges = client
        .call(command("c1", "charges.list", 1, json!({})))
        .await;
    let records = succeeded(&charges).as_array().unwrap().clone();
    assert_eq!(records.len(), 2, "{charges}");
    let deposit_record = records.iter().find(|r| r["action"] == 1).unwrap();
    assert_eq!(deposit_record["channel"], "yeepay");
    assert_eq!(deposit_record["charge_id"], deposit_id.as_str());
    assert_eq!(deposit_record["status"], 1);
    let cash_record = records.iter().find(|r| r["action"] == 2).unwrap();
    assert_eq!(cash_record["charge_id"], withdrawal_id.as_str());
    assert_eq!(cash_record["account"], "user_1");

    assert!(env.audit().await.ok);
    let audit = crate::support::pluspay(&["audit"], &env.process_env()).await;
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_applications_expired_deposits_and_canceled_withdrawals_move_nothing() {
    let (mut env, fake, mut client, _worker) = start().await;
    let mut accounts = client
        .watch(&client.names.events_exchange, "account.#")
        .await;

    // Refused: account.refused, and the user may apply again with a new command.
    let first = client.call(open("open-2", 2)).await;
    let id = succeeded(&first)["cus_application"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (event, _) = fake.signed_event(
        "cus_application.failed",
        fake.fail_cus_application(&id, "身份信息校验失败"),
    );
    client.enqueue_pingpp_event(&event).await;
    let refused = next_event(&mut accounts).await;
    assert_eq!(refused["type"], "account.refused");
    assert_eq!(refused["data"]["cus_application"]["status"], "failed");
    assert_eq!(
        code(&client.call(deposit("d2", 2, 100)).await),
        "account_not_open"
    );
    let again = client.call(open("open-2b", 2)).await;
    let second = succeeded(&again)["cus_application"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, id);
    assert_eq!(fake.cus_applications().len(), 2);
    let (event, _) = fake.signed_event(
        "cus_application.succeeded",
        fake.succeed_cus_application(&second),
    );
    client.enqueue_pingpp_event(&event).await;
    assert_eq!(next_event(&mut accounts).await["type"], "account.opened");

    // An expired deposit fails its order and credits nothing.
    let made = client.call(deposit("d3", 2, 700)).await;
    let data = succeeded(&made);
    let order = data["order"]["id"].as_i64().unwrap();
    let expired = fake.expire_deposit(data["deposit"]["id"].as_str().unwrap());
    let (event, _) = fake.signed_event("deposit.canceled", expired);
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        &format!("SELECT count(*) FROM wallet_orders WHERE id = {order} AND state = -1"),
        1,
    )
    .await;
    assert_eq!(env.balance(2).await, 0);

    // A deposit that failed (retrieved) and one that succeeded.
    let made = client.call(deposit("d4", 2, 900)).await;
    let data = succeeded(&made);
    let paid_order = data["order"]["id"].as_i64().unwrap();
    fake.pay_deposit(data["deposit"]["id"].as_str().unwrap());
    let retrieved = client
        .call(command(
            "r4",
            "recharge.retrieve",
            2,
            json!({"order": paid_order}),
        ))
        .await;
    assert_eq!(succeeded(&retrieved)["order"]["state"], 1);
    assert_eq!(env.balance(2).await, 900);

    // A canceled withdrawal gives the money back, and the cash record says why.
    let asked = client.call(cash("w2", 2, 400)).await;
    let data = succeeded(&asked);
    assert_eq!(env.balance(2).await, 500);
    assert_eq!(fake_balance(&fake, 2).await, 500);
    let withdrawal_id = data["pingpp_withdrawal"]["id"].as_str().unwrap().to_owned();
    let cash_id = data["cash"]["id"].as_i64().unwrap();
    let (event, _) = fake.signed_event(
        "withdrawal.canceled",
        fake.cancel_withdrawal(&withdrawal_id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        &format!("SELECT count(*) FROM cashes WHERE id = {cash_id} AND status = 2"),
        1,
    )
    .await;
    assert_eq!(env.balance(2).await, 900);
    assert_eq!(env.system_balance("ewallet_withdrawals").await, 0);
    assert_eq!(fake_balance(&fake, 2).await, 900);
    let got = client_get(&mut client, 2).await;
    assert_eq!(got["difference"], 0);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_plus_plus_down_at_each_step_delays_and_never_doubles() {
    let (mut env, fake, mut client, _worker) = start().await;
    let apps = format!("/v1/apps/{APP_ID}");
    // More failures than the client's own retries: the command itself waits and is retried.
    fake.fail_next_on("POST", &format!("{apps}/users"), 4, 503);
    fake.lose_next_answers_on("POST", "cus_applications", 1);
    let opened = client.call(open("open-3", 3)).await;
    let id = succeeded(&opened)["cus_application"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        fake.cus_applications().len(),
        1,
        "a lost answer is retried with the same order_no"
    );
    let (event, _) = fake.signed_event(
        "cus_application.succeeded",
        fake.succeed_cus_application(&id),
    );
    client.enqueue_pingpp_event(&event).await;
    wait_for_application(&mut client, 3, "succeeded").await;

    fake.fail_next_on("POST", "deposits", 4, 500);
    fake.lose_next_answers_on("POST", "deposits", 1);
    let made = client.call(deposit("d5", 3, 800)).await;
    let data = succeeded(&made);
    assert_eq!(fake.deposits().len(), 1);
    let (event, _) = fake.signed_event(
        "deposit.succeeded",
        fake.pay_deposit(data["deposit"]["id"].as_str().unwrap()),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count("SELECT count(*) FROM journal WHERE kind = 'deposit'", 1)
        .await;

    fake.fail_next_on("PUT", "withdrawals", 4, 502);
    fake.lose_next_answers_on("POST", "withdrawals", 1);
    let asked = client.call(cash("w3", 3, 300)).await;
    let data = succeeded(&asked);
    assert_eq!(fake.withdrawals().len(), 1);
    assert!(data["pingpp_withdrawal"]["operation_url"].is_string());
    // A Ping++ that is down for account.get is not the command's fault either.
    fake.fail_next_on("GET", "users/user_3", 4, 503);
    assert_eq!(client_get(&mut client, 3).await["ledger_balance"], 500);
    assert_eq!(env.balance(3).await, 500);
    assert!(env.audit().await.ok);
    assert!(requests_to(&fake, "POST", "/users") >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_recording_and_sending_resumes_with_the_same_order_no() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    custody_mode(&mut env.settings);
    let worker = env.start_worker();
    let mut client = env.client().await;
    open_account(&mut client, &fake, 4).await;
    worker.stop().await;

    // Ping++ unreachable: the worker records each command's progress, then dies.
    fake.fail_next_on("POST", "deposits", 1000, 503);
    fake.fail_next_on("POST", "withdrawals", 1000, 503);
    let worker = env.start_worker();
    client.command(&deposit("d6", 4, 600)).await;
    env.wait_for_count("SELECT count(*) FROM deposits", 1).await;
    worker.stop().await;
    assert_eq!(fake.deposits().len(), 0);
    let order_no: String = env
        .db
        .query_one("SELECT order_no FROM deposits", &[])
        .await
        .unwrap()
        .get(0);

    // A new worker takes the redelivered command up where it was.
    fake.heal();
    let _worker = env.start_worker();
    env.wait_for_count(
        "SELECT count(*) FROM commands WHERE id = 'd6' AND status = 'succeeded'",
        1,
    )
    .await;
    assert_eq!(fake.deposits().len(), 1);
    assert_eq!(fake.deposits()[0]["order_no"], order_no.as_str());
    assert_eq!(env.count("SELECT count(*) FROM wallet_orders").await, 1);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_field_by_field_before_any_call() {
    let (_env, fake, mut client, _worker) = start().await;
    let before = fake.requests();
    let bad = client
        .call(command("b1", "account.open", 5, json!({
            "cert_type": "2", "cert_name": "Z3", "cert_number": "110101199003074515", "mobile": "2391234567"})))
        .await;
    assert_eq!(code(&bad), "invalid_cert_type");
    let errors = bad["errors"].as_object().unwrap();
    for field in ["cert_type", "cert_name", "cert_number", "mobile"] {
        assert!(errors.contains_key(field), "{bad}");
    }
    assert!(!bad.to_string().contains("110101199003074515"));
    let link = command(
        "b2",
        "account.cards",
        5,
        json!({"return_url": "ftp://example.com"}),
    );
    assert_eq!(code(&client.call(link).await), "invalid_return_url");
    let pic = command("b3", "upload_pic", 5, json!({"pic": "not base64!"}));
    assert_eq!(code(&client.call(pic).await), "invalid_pic");
    let large = command(
        "b4",
        "upload_pic",
        5,
        json!({"pic": "A".repeat(3 * 1024 * 1024)}),
    );
    assert_eq!(code(&client.call(large).await), "pic_too_large");
    let card = command("b5", "card_bin", 5, json!({"account": "1234"}));
    assert_eq!(code(&client.call(card).await), "invalid_account");
    let no_url = command("b6", "recharge", 5, json!({"amount": 100}));
    assert_eq!(code(&client.call(no_url).await), "invalid_return_url");
    assert_eq!(fake.requests(), before);
    // Commands of the platform's custody do not exist here.
    let transfer = crate::support::transfer("b7", 5, 6, 1);
    assert_eq!(code(&client.call(transfer).await), "custody_mode");

    // The helpers answer in Ping++'s words.
    let uploaded = client
        .call(command(
            "h1",
            "upload_pic",
            5,
            json!({"pic": "aGVsbG8gcGljdHVyZQ=="}),
        ))
        .await;
    assert!(succeeded(&uploaded)["media_url"]
        .as_str()
        .unwrap()
        .starts_with("http"));
    let bin = client
        .call(command("h2", "card_bin", 5, json!({"account": CARD})))
        .await;
    assert_eq!(succeeded(&bin)["card_type"], "DEBIT");
    assert!(bin["data"]["bank_name"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_custody_has_no_e_wallet_commands() {
    let (_env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    assert_eq!(code(&client.call(open("p1", 1)).await), "custody_mode");
    let cards = command("p2", "account.cards", 1, json!({"return_url": RETURN_URL}));
    assert_eq!(code(&client.call(cards).await), "custody_mode");
    assert_eq!(fake.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_keeps_the_custody_it_was_started_with() {
    let mut env = TestEnv::new().await;
    let _fake = env.with_fake_pingpp().await;
    let platform = env.start_worker();
    let mut client = env.client().await;
    let got = client.call(command("c1", "wallet.get", 1, json!({}))).await;
    succeeded(&got);
    platform.stop().await;
    custody_mode(&mut env.settings);
    let refused = pluspay::worker::run(env.settings.clone(), Default::default()).await;
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("wallet.custody = \"platform\""), "{error}");
}

/// Every text column of every table, as one string.
async fn everything_stored(env: &TestEnv) -> String {
    let tables: Vec<String> = env
        .db
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut all = String::new();
    for table in tables {
        let rows = env
            .db
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .unwrap();
        for row in rows {
            all.push_str(row.get::<_, &str>(0));
            all.push('\n');
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_reaches_no_log_table_header_or_message() {
    let mut env = TestEnv::new().await;
    let fake = env.with_fake_pingpp().await;
    custody_mode(&mut env.settings);
    let log_path =
        std::env::temp_dir().join(format!("custody-{}.log", uuid::Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut process_env = env.process_env();
    let pingpp = &env.settings.pingpp;
    process_env.extend([
        ("PLUSPAY_WALLET_CUSTODY", "pingpp".to_owned()),
        ("PLUSPAY_PINGPP_FINGERPRINT_KEY", FINGERPRINT_KEY.to_owned()),
        ("PLUSPAY_PINGPP_API_BASE", pingpp.api_base.clone()),
        ("PLUSPAY_PINGPP_APP_ID", pingpp.app_id.clone()),
        ("PLUSPAY_PINGPP_SECRET_KEY", pingpp.secret_key.clone()),
        ("PLUSPAY_PINGPP_TIMEOUT_MS", "1000".to_owned()),
        (
            "PLUSPAY_PINGPP_PRIVATE_KEY",
            pingpp.private_key.as_ref().unwrap().display().to_string(),
        ),
        ("PLUSPAY_LOG_FILTER", "debug".to_owned()),
        ("PLUSPAY_LOG_FORMAT", "json".to_owned()),
    ]);
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"))
        .arg("worker")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(process_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");
    let mut client = env.client().await;

    // Every path a personal field can take: an outage and a lost answer (retried and logged),
    // a refused application, bad input, the helpers, a malformed command, a deposit.
    fake.fail_next_on("POST", "cus_applications", 4, 503);
    fake.lose_next_answers_on("POST", "cus_applications", 1);
    let opened = client.call(open("open-6", 6)).await;
    let id = succeeded(&opened)["cus_application"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.error_next_on(
        "POST",
        "cus_applications",
        1,
        400,
        "invalid_request_error",
        "证件信息有误",
    );
    let refused = client.call(open("open-7", 7)).await;
    assert_eq!(code(&refused), "payment_provider_error");
    let wrong_mobile = json!({"id": "open-8", "type": "account.open", "user_id": 8, "data": {
        "cert_type": "1", "cert_name": NAME, "cert_number": ID_NUMBER, "mobile": "12"}});
    assert_eq!(code(&client.call(wrong_mobile).await), "invalid_mobile");
    let bin = client
        .call(command("bin-6", "card_bin", 6, json!({"account": CARD})))
        .await;
    succeeded(&bin);
    fake.fail_next_on("POST", "card_bin", 4, 500);
    let bin = client
        .call(command("bin-7", "card_bin", 7, json!({"account": CARD})))
        .await;
    succeeded(&bin);
    let (event, _) = fake.signed_event(
        "cus_application.succeeded",
        fake.succeed_cus_application(&id),
    );
    client.enqueue_pingpp_event(&event).await;
    wait_for_application(&mut client, 6, "succeeded").await;
    succeeded(&client.call(deposit("d-6", 6, 100)).await);
    let garbage = format!(
        r#"{{"id":"bad-1","type":"account.open","user_id":6,"data":{{"cert_number":"{ID_NUMBER}"}},}}"#
    );
    client.raw(garbage.as_bytes(), None).await;
    let dead = client.dead_letters(1).await;
    let headers = format!("{:?}", dead[0].properties.headers());
    assert!(headers.contains("x-pluspay-error"));

    worker.kill().await.unwrap();
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logged.contains("cus_application") || logged.contains("account.open"),
        "the log is the worker's"
    );
    let stored = everything_stored(&env).await;
    for secret in [ID_NUMBER, NAME, MOBILE, CARD] {
        assert!(!logged.contains(secret), "{secret} in the worker's log");
        assert!(!stored.contains(secret), "{secret} in the database");
        assert!(
            !headers.contains(secret),
            "{secret} in a dead letter's headers"
        );
    }
    // The fingerprints are keyed: a plain SHA-256 of the command, which a list of every
    // possible ID number would find, is not what is stored.
    use sha2::Digest;
    let canonical =
        json!({"type": "account.open", "user_id": 6, "data": open("open-6", 6)["data"]});
    let plain = sha2::Sha256::digest(canonical.to_string().as_bytes()).to_vec();
    let stored: Vec<u8> = env
        .db
        .query_one("SELECT fingerprint FROM commands WHERE id = 'open-6'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.len(), 32);
    assert_ne!(stored, plain);
    let _ = std::fs::remove_file(&log_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_held_by_a_command_in_progress_begins_nothing_else() {
    let (env, fake, mut client, _worker) = start().await;
    open_account(&mut client, &fake, 12).await;
    // A deposit that can't reach Ping++ holds its id while it waits.
    fake.fail_next_on("POST", "deposits", 1000, 503);
    client.command(&deposit("same-id", 12, 300)).await;
    env.wait_for_count("SELECT count(*) FROM deposits", 1).await;
    let withdrawals = fake.withdrawals().len();
    let other = client.call(cash("same-id", 12, 100)).await;
    assert_eq!(code(&other), "idempotency_conflict");
    let other = client.call(open("same-id", 12)).await;
    assert_eq!(code(&other), "idempotency_conflict");
    assert_eq!(fake.withdrawals().len(), withdrawals);
    assert_eq!(env.count("SELECT count(*) FROM cashes").await, 0);
    assert_eq!(env.system_balance("ewallet_withdrawals").await, 0);
    fake.heal();
    env.wait_for_count(
        "SELECT count(*) FROM commands WHERE id = 'same-id' AND status = 'succeeded'",
        1,
    )
    .await;
    assert_eq!(fake.deposits().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_refused_or_unknowable_end_and_the_webhook_completes_an_unknown_one() {
    let (mut env, fake, mut client, _worker) = start().await;
    open_account(&mut client, &fake, 13).await;
    // Refused for what it asks: rejected at once, the order failed, no list read.
    fake.error_next_on(
        "POST",
        "deposits",
        1,
        400,
        "invalid_request_error",
        "账户已冻结",
    );
    let refused = client.call(deposit("d-r", 13, 100)).await;
    assert_eq!(code(&refused), "payment_provider_error");
    assert_eq!(requests_to(&fake, "GET", "/deposits"), 0);

    // Made, its answer lost, the repeat refused as a used order_no, and the list not served:
    // the outcome can't be known, and the command says so once instead of waiting forever.
    fake.refuse_reused_order_no();
    fake.lose_next_answers_on("POST", "deposits", 1);
    fake.error_next_on(
        "GET",
        "/deposits",
        100,
        404,
        "invalid_request_error",
        "Unrecognized request URL",
    );
    let unknown = client.call(deposit("d-u", 13, 400)).await;
    assert_eq!(code(&unknown), "provider_outcome_unknown");
    assert_eq!(fake.deposits().len(), 1, "the refused deposit made nothing");
    fake.heal();
    // Paid: its webhook finds the order by order_no, records the deposit and credits it.
    let made = fake.deposits()[0].clone();
    let (event, _) = fake.signed_event(
        "deposit.succeeded",
        fake.pay_deposit(made["id"].as_str().unwrap()),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count("SELECT count(*) FROM journal WHERE kind = 'deposit'", 1)
        .await;
    assert_eq!(env.balance(13).await, 400);
    assert_eq!(fake_balance(&fake, 13).await, 400);
    assert!(env.audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_refused_as_a_repeat_stays_pending_until_its_webhook() {
    let (_env, fake, mut client, _worker) = start().await;
    fake.lose_next_answers_on("POST", "cus_applications", 1);
    fake.error_next_on(
        "POST",
        "cus_applications",
        1,
        400,
        "invalid_request_error",
        "开户申请订单号已存在",
    );
    let unknown = client.call(open("open-14", 14)).await;
    assert_eq!(code(&unknown), "provider_outcome_unknown");
    assert_eq!(fake.cus_applications().len(), 1);
    // It may be live at Ping++: no second application meanwhile.
    assert_eq!(
        code(&client.call(open("open-14b", 14)).await),
        "account_application_pending"
    );
    let id = fake.cus_applications()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (event, _) = fake.signed_event(
        "cus_application.succeeded",
        fake.succeed_cus_application(&id),
    );
    client.enqueue_pingpp_event(&event).await;
    wait_for_application(&mut client, 14, "succeeded").await;
}
