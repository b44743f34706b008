//! The Ping++ client's account-system endpoints (users, personal account applications, card
//! link, picture upload, card bin, deposits) against the fake Ping++, and the fake's balances
//! as deposits and withdrawals move them: no PostgreSQL or RabbitMQ needed.

use std::time::Duration;

use crate::support::fake_pingpp::{FakePingpp, APP_ID, SECRET_KEY};
use pluspay::pingpp::{
    ClientConfig, CusApplicationRequest, DepositRequest, PingppClient, PingppError,
    WithdrawalRequest, WithdrawalUpdate,
};
use serde_json::{json, Value};

const RETRIES: u32 = 2;
const CERT_NUMBER: &str = "420381199206062220";
const MOBILE: &str = "13000000000";
const CERT_NAME: &str = "张三";

fn client(fake: &FakePingpp) -> PingppClient {
    let mut config = ClientConfig::new(APP_ID, SECRET_KEY);
    config.api_base = fake.url();
    config.timeout = Duration::from_secs(10);
    config.max_retries = RETRIES;
    PingppClient::new(config)
        .unwrap()
        .with_retry_delays(Duration::from_millis(1), Duration::from_millis(10))
}

fn unique(prefix: &str) -> String {
    let n = 20 - prefix.len();
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..n]
    )
}

fn application(user: &str) -> CusApplicationRequest {
    CusApplicationRequest {
        user: user.into(),
        order_no: unique("CUS"),
        cert_type: "1".into(),
        cert_name: CERT_NAME.into(),
        cert_number: CERT_NUMBER.into(),
        mobile: MOBILE.into(),
    }
}

fn deposit(user: &str, amount: u64) -> DepositRequest {
    DepositRequest {
        user: user.into(),
        order_no: unique("CZ"),
        amount,
        return_url: "https://plus.io/wallet".into(),
        metadata: None,
    }
}

fn withdrawal(user: &str, amount: u64) -> WithdrawalRequest {
    WithdrawalRequest {
        user: user.into(),
        channel: "yeepay".into(),
        amount,
        order_no: unique("TX"),
        return_url: "https://plus.io/wallet".into(),
    }
}

fn api_error(result: Result<impl std::fmt::Debug, PingppError>) -> (u16, String, Option<String>) {
    match result {
        Err(PingppError::Api {
            status,
            kind,
            message,
            param,
            ..
        }) => {
            assert_eq!(kind, "invalid_request_error");
            (status, message, param)
        }
        other => panic!("expected a Ping++ API error, got {other:?}"),
    }
}

fn id(object: &Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

/// A user whose personal account is open.
async fn open_user(fake: &FakePingpp, client: &PingppClient) -> String {
    let user = unique("u_");
    client.create_user(&user).await.unwrap();
    let made = client
        .create_cus_application(&application(&user))
        .await
        .unwrap();
    fake.succeed_cus_application(&id(&made));
    user
}

/// (available_balance, withdrawable_balance) of a fake user.
fn balances(fake: &FakePingpp, user: &str) -> (i64, i64) {
    let user = fake.user(user).unwrap();
    (
        user["available_balance"].as_i64().unwrap(),
        user["withdrawable_balance"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn a_user_is_created_once_and_retrieved() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let created = client.create_user("test_001").await.unwrap();
    assert_eq!(created["object"], "user");
    assert_eq!(created["id"], "test_001");
    assert_eq!(created["app"], APP_ID);
    assert_eq!(created["type"], "customer");
    assert_eq!(created["available_balance"], 0);
    assert_eq!(created["withdrawable_balance"], 0);
    assert_eq!(created["identified"], false);
    assert_eq!(created["livemode"], true);
    assert_eq!(created["settle_accounts"], json!([]));

    let (status, message, param) = api_error(client.create_user("test_001").await);
    assert_eq!(status, 400);
    assert_eq!(message, "用户已存在: test_001");
    assert_eq!(param.as_deref(), Some("id"));

    assert_eq!(client.retrieve_user("test_001").await.unwrap(), created);
    let (status, message, param) = api_error(client.retrieve_user("nobody").await);
    assert_eq!((status, message.as_str()), (404, "未找到 user : nobody"));
    assert_eq!(param.as_deref(), Some("id"));
    assert_eq!(
        fake.request_log(),
        vec![
            ("POST".to_owned(), format!("/v1/apps/{APP_ID}/users")),
            ("POST".to_owned(), format!("/v1/apps/{APP_ID}/users")),
            (
                "GET".to_owned(),
                format!("/v1/apps/{APP_ID}/users/test_001")
            ),
            ("GET".to_owned(), format!("/v1/apps/{APP_ID}/users/nobody")),
        ]
    );
}

#[tokio::test]
async fn an_application_repeated_under_its_order_no_is_the_same_application() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    client.create_user("cus_003").await.unwrap();
    let req = application("cus_003");
    let made = client.create_cus_application(&req).await.unwrap();
    assert_eq!(made["object"], "cus_application");
    assert_eq!(made["status"], "pending");
    assert_eq!(made["user"], "cus_003");
    assert_eq!(made["order_no"], req.order_no.as_str());
    assert_eq!(made["cert_name"], CERT_NAME);
    assert_eq!(made["cert_number"], "420381*****20");
    assert!(made["id"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_digit()));
    assert!(made["transaction_no"].is_string());
    assert!(made["created"].is_i64());

    // Ping++'s advice for a timed-out application: the same again, same order_no.
    let again = client.create_cus_application(&req).await.unwrap();
    assert_eq!(again, made);
    assert_eq!(fake.cus_applications(), vec![made.clone()]);
    assert_eq!(
        client.retrieve_cus_application(&id(&made)).await.unwrap(),
        made
    );

    // Another application under that order_no: refused, nothing made.
    let mut other = req.clone();
    other.mobile = "13100000000".into();
    let (status, message, param) = api_error(client.create_cus_application(&other).await);
    assert_eq!((status, message.as_str()), (400, "开户申请订单号已存在"));
    assert_eq!(param.as_deref(), Some("order_no"));
    assert_eq!(fake.cus_applications().len(), 1);

    let (status, message, _) = api_error(client.retrieve_cus_application("1112000").await);
    assert_eq!(
        (status, message.as_str()),
        (404, "未找到 cus_application : 1112000")
    );
}

#[tokio::test]
async fn an_application_needs_a_user_and_the_fake_keeps_no_id_number() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (status, _, param) = api_error(client.create_cus_application(&application("nobody")).await);
    assert_eq!((status, param.as_deref()), (400, Some("user")));

    client.create_user("u_1").await.unwrap();
    let made = client
        .create_cus_application(&application("u_1"))
        .await
        .unwrap();
    let failed = fake.fail_cus_application(&id(&made), "身份证信息不一致");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure_msg"], "身份证信息不一致");
    assert_eq!(
        client.retrieve_cus_application(&id(&made)).await.unwrap(),
        failed
    );
    assert_eq!(fake.user("u_1").unwrap()["identified"], false);
    // Refused once, the user may apply again.
    let retried = client
        .create_cus_application(&application("u_1"))
        .await
        .unwrap();
    let succeeded = fake.succeed_cus_application(&id(&retried));
    assert_eq!(succeeded["status"], "succeeded");
    assert_eq!(fake.user("u_1").unwrap()["identified"], true);
    assert_eq!(
        client.retrieve_user("u_1").await.unwrap()["identified"],
        true
    );

    // Nothing the fake holds or logged has the ID or mobile number in clear.
    let held = format!(
        "{:?} {:?} {:?}",
        fake.cus_applications(),
        fake.user("u_1"),
        fake.request_log()
    );
    for personal in [CERT_NUMBER, MOBILE] {
        assert!(!held.contains(personal), "{held}");
    }
}

#[tokio::test]
async fn the_card_link_needs_an_open_account() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    client.create_user("cus_003").await.unwrap();
    let (status, message, param) =
        api_error(client.card_link("cus_003", "https://www.pingxx.com/").await);
    assert_eq!((status, message.as_str()), (400, "用户未开户"));
    assert_eq!(param.as_deref(), Some("user"));

    let made = client
        .create_cus_application(&application("cus_003"))
        .await
        .unwrap();
    let (status, ..) = api_error(client.card_link("cus_003", "https://www.pingxx.com/").await);
    assert_eq!(status, 400, "pending is not open yet");
    fake.succeed_cus_application(&id(&made));

    let link = client
        .card_link("cus_003", "https://www.pingxx.com/")
        .await
        .unwrap();
    assert_eq!(link["app"], APP_ID);
    assert_eq!(link["user"], "cus_003");
    let url = link["card_url"].as_str().unwrap();
    assert!(
        url.starts_with(
            "https://member.yeepay.com/yeepay-std-wallet/operateCard.html#/bankCardList?token="
        ),
        "{url}"
    );
    assert!(
        url.ends_with("&redirectUrl=https%3A%2F%2Fwww.pingxx.com%2F"),
        "{url}"
    );
    // A fresh link each time.
    let again = client
        .card_link("cus_003", "https://www.pingxx.com/")
        .await
        .unwrap();
    assert_ne!(again["card_url"], link["card_url"]);
    assert_eq!(
        fake.request_log().last().unwrap(),
        &(
            "POST".to_owned(),
            format!("/v1/apps/{APP_ID}/users/cus_003/settle_accounts")
        )
    );
}

#[tokio::test]
async fn pictures_are_uploaded_and_card_numbers_read() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let uploaded = client.upload_pic("/9j/4AAQSkZJRgABAgEAAA==").await.unwrap();
    assert_eq!(uploaded["app"], APP_ID);
    assert_eq!(uploaded["livemode"], true);
    assert!(uploaded["media_url"]
        .as_str()
        .unwrap()
        .starts_with("http://staticres.yeepay.com/"));
    // Looks like base64 to the client, does not decode at Ping++.
    let (status, message, param) = api_error(client.upload_pic("A").await);
    assert_eq!((status, message.as_str()), (400, "图片格式错误"));
    assert_eq!(param.as_deref(), Some("pic"));

    let bin = client.card_bin("6214850213609784").await.unwrap();
    assert_eq!(
        bin,
        json!({ "card_type": "DEBIT", "bank_name": "招商银行", "bank_code": "CMBCHINA" })
    );
    let icbc = client.card_bin("6222020200112233445").await.unwrap();
    assert_eq!(icbc["bank_code"], "ICBC");
    let (status, message, param) = api_error(client.card_bin("62148502").await);
    assert_eq!((status, message.as_str()), (400, "银行卡号格式错误"));
    assert_eq!(param.as_deref(), Some("account"));
    assert_eq!(fake.requests(), 5);
}

#[tokio::test]
async fn a_deposit_is_created_retrieved_and_found_after_a_lost_answer() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let user = open_user(&fake, &client).await;
    let mut req = deposit(&user, 1_234);
    req.metadata = Some(json!({ "order": 7 }));
    let made = client.create_deposit(&req).await.unwrap();
    assert_eq!(made["object"], "deposit");
    assert_eq!(made["app"], APP_ID);
    assert_eq!(made["livemode"], true);
    assert_eq!(made["user"], user.as_str());
    assert_eq!(made["amount"], 1_234);
    assert_eq!(made["status"], "created");
    assert_eq!(made["time_succeeded"], Value::Null);
    assert_eq!(made["metadata"], json!({ "order": 7 }));
    assert_eq!(made["extra"]["return_url"], "https://plus.io/wallet");
    let credential = made["extra"]["credential"].as_str().unwrap();
    assert!(
        credential.starts_with(
            "https://member.yeepay.com/yeepay-std-wallet/wallet.html#/wallet?amount=12.34&token="
        ),
        "{credential}"
    );
    assert_eq!(client.retrieve_deposit(&id(&made)).await.unwrap(), made);
    // A repeat of its order_no is that deposit.
    assert_eq!(client.create_deposit(&req).await.unwrap(), made);
    assert_eq!(fake.deposits(), vec![made.clone()]);
    let since = made["created"].as_i64().unwrap() - 60;
    let found = client.find_deposit(&req.order_no, since).await.unwrap();
    assert_eq!(found, Some(made.clone()));

    // Every answer lost: the client can't tell, the list can.
    let lost = deposit(&user, 500);
    fake.lose_next_answers_on("POST", "/deposits", RETRIES as usize + 1);
    let outcome = client.create_deposit(&lost).await;
    assert!(
        outcome.as_ref().is_err_and(PingppError::is_transient),
        "{outcome:?}"
    );
    let found = client
        .find_deposit(&lost.order_no, since)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found["amount"], 500);
    assert_eq!(fake.deposits().len(), 2);
    assert_eq!(fake.deposit(&id(&found)).unwrap(), found);
    assert!(client
        .find_deposit("CZ000000000000000000", since)
        .await
        .unwrap()
        .is_none());

    let failed = fake.fail_deposit(&id(&made), "用户取消支付");
    assert_eq!(
        (failed["status"].clone(), failed["failure_msg"].clone()),
        (json!("failed"), json!("用户取消支付"))
    );
    let expired = fake.expire_deposit(&id(&found));
    assert_eq!(expired["status"], "canceled");
    assert_eq!(expired["failure_msg"], "充值链接已过期");
    assert_eq!(client.retrieve_deposit(&id(&found)).await.unwrap(), expired);
    assert_eq!(balances(&fake, &user), (0, 0));

    let (status, message, _) = api_error(client.retrieve_deposit("6012000").await);
    assert_eq!(
        (status, message.as_str()),
        (404, "未找到 deposit : 6012000")
    );
}

#[tokio::test]
async fn a_refused_repeat_of_a_deposit_is_settled_by_the_list() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let user = open_user(&fake, &client).await;
    fake.refuse_reused_order_no();
    let req = deposit(&user, 100);
    fake.lose_next_answers_on("POST", "/deposits", 1);
    let (status, _, param) = api_error(client.create_deposit(&req).await);
    assert_eq!((status, param.as_deref()), (400, Some("order_no")));
    let found = client
        .find_deposit(&req.order_no, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.deposits(), vec![found]);
}

#[tokio::test]
async fn deposits_and_withdrawals_need_an_open_account() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    client.create_user("u_closed").await.unwrap();
    for user in ["u_closed", "u_unknown"] {
        let (status, message, param) = api_error(client.create_deposit(&deposit(user, 1)).await);
        assert_eq!((status, message.as_str()), (400, "用户未开户"));
        assert_eq!(param.as_deref(), Some("user"));
    }
    let (status, message, param) =
        api_error(client.create_withdrawal(&withdrawal("u_closed", 1)).await);
    assert_eq!((status, message.as_str()), (400, "用户未开户"));
    assert_eq!(param.as_deref(), Some("user"));
    assert!(fake.deposits().is_empty() && fake.withdrawals().is_empty());
    // A user the account system does not know withdraws as before.
    client
        .create_withdrawal(&withdrawal("u_unknown", 1))
        .await
        .unwrap();
}

#[tokio::test]
async fn balances_follow_paid_deposits_and_confirmed_withdrawals() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let user = open_user(&fake, &client).await;
    let made = client.create_deposit(&deposit(&user, 1_000)).await.unwrap();
    assert_eq!(balances(&fake, &user), (0, 0));
    let paid = fake.pay_deposit(&id(&made));
    assert_eq!(paid["status"], "succeeded");
    assert!(paid["time_succeeded"].is_i64());
    assert_eq!(balances(&fake, &user), (1_000, 1_000));
    fake.pay_deposit(&id(&made));
    assert_eq!(balances(&fake, &user), (1_000, 1_000), "paid once");
    let seen = client.retrieve_user(&user).await.unwrap();
    assert_eq!(
        (
            seen["available_balance"].clone(),
            seen["withdrawable_balance"].clone()
        ),
        (json!(1_000), json!(1_000))
    );

    // More than there is: refused at create.
    let (status, message, param) =
        api_error(client.create_withdrawal(&withdrawal(&user, 1_001)).await);
    assert_eq!((status, message.as_str()), (400, "余额不足"));
    assert_eq!(param.as_deref(), Some("amount"));

    // Confirmed, the amount is held; canceled by Ping++, it comes back.
    let w = client
        .create_withdrawal(&withdrawal(&user, 300))
        .await
        .unwrap();
    assert_eq!(
        balances(&fake, &user),
        (1_000, 1_000),
        "created holds nothing"
    );
    client
        .update_withdrawal(&id(&w), WithdrawalUpdate::Confirm)
        .await
        .unwrap();
    assert_eq!(balances(&fake, &user), (700, 700));
    fake.cancel_withdrawal(&id(&w));
    assert_eq!(balances(&fake, &user), (1_000, 1_000));

    // Failed, it comes back too.
    let w = client
        .create_withdrawal(&withdrawal(&user, 400))
        .await
        .unwrap();
    client
        .update_withdrawal(&id(&w), WithdrawalUpdate::Confirm)
        .await
        .unwrap();
    assert_eq!(balances(&fake, &user), (600, 600));
    fake.fail_withdrawal(&id(&w), "银行卡信息有误");
    assert_eq!(balances(&fake, &user), (1_000, 1_000));

    // Canceled before confirming: nothing was held.
    let w = client
        .create_withdrawal(&withdrawal(&user, 100))
        .await
        .unwrap();
    client
        .update_withdrawal(&id(&w), WithdrawalUpdate::Cancel)
        .await
        .unwrap();
    assert_eq!(balances(&fake, &user), (1_000, 1_000));

    // Two created within the balance, confirmed beyond it: the second is refused.
    let first = client
        .create_withdrawal(&withdrawal(&user, 600))
        .await
        .unwrap();
    let second = client
        .create_withdrawal(&withdrawal(&user, 600))
        .await
        .unwrap();
    client
        .update_withdrawal(&id(&first), WithdrawalUpdate::Confirm)
        .await
        .unwrap();
    let (status, message, _) = api_error(
        client
            .update_withdrawal(&id(&second), WithdrawalUpdate::Confirm)
            .await,
    );
    assert_eq!((status, message.as_str()), (400, "余额不足"));
    assert_eq!(balances(&fake, &user), (400, 400));

    // Succeeded: spent, and nothing more changes.
    fake.succeed_withdrawal(&id(&first));
    assert_eq!(balances(&fake, &user), (400, 400));
    fake.cancel_withdrawal(&id(&second));
    assert_eq!(balances(&fake, &user), (400, 400));
}

#[tokio::test]
async fn invalid_input_is_refused_before_sending_and_quotes_no_personal_data() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let mut errors = Vec::new();
    let long = "u".repeat(65);
    for user in ["", "bad-id", "a/b", long.as_str()] {
        errors.push(client.create_user(user).await.unwrap_err());
        errors.push(client.retrieve_user(user).await.unwrap_err());
        errors.push(client.card_link(user, "https://plus.io").await.unwrap_err());
    }
    let bad_applications: Vec<fn(&mut CusApplicationRequest)> = vec![
        |a| a.user = "u 1".into(),
        |a| a.order_no = "CUS-1".into(),
        |a| a.cert_type = String::new(),
        |a| a.cert_name = String::new(),
        |a| a.cert_number = " ".into(),
        |a| a.mobile = String::new(),
    ];
    for change in bad_applications {
        let mut req = application("u_1");
        change(&mut req);
        errors.push(client.create_cus_application(&req).await.unwrap_err());
    }
    errors.push(client.retrieve_cus_application("../1").await.unwrap_err());
    errors.push(client.card_link("u_1", "javascript:x").await.unwrap_err());
    errors.push(client.upload_pic("").await.unwrap_err());
    errors.push(client.upload_pic("not base64!").await.unwrap_err());
    errors.push(client.card_bin("").await.unwrap_err());
    errors.push(client.card_bin("6214 8502 1360 9784").await.unwrap_err());
    let bad_deposits: Vec<fn(&mut DepositRequest)> = vec![
        |d| d.order_no = "CZ1".into(),
        |d| d.order_no = "CZ-0000000000".into(),
        |d| d.user = String::new(),
        |d| d.amount = 0,
        |d| d.return_url = "ftp://plus.io".into(),
        |d| d.metadata = Some(json!("x")),
    ];
    for change in bad_deposits {
        let mut req = deposit("u_1", 1);
        change(&mut req);
        errors.push(client.create_deposit(&req).await.unwrap_err());
    }
    errors.push(client.retrieve_deposit("60 12").await.unwrap_err());

    assert_eq!(fake.requests(), 0);
    for error in &errors {
        assert!(matches!(error, PingppError::InvalidInput(_)), "{error:?}");
        let shown = format!("{error} {error:?}");
        for personal in [CERT_NUMBER, MOBILE, CERT_NAME, "6214"] {
            assert!(!shown.contains(personal), "{shown}");
        }
    }
}

#[test]
fn the_debug_of_an_application_shows_no_personal_data() {
    let req = application("u_1");
    let shown = format!("{req:?} {req:#?}");
    assert!(
        shown.contains("u_1") && shown.contains(&req.order_no),
        "{shown}"
    );
    for personal in [CERT_NUMBER, "420381", MOBILE, CERT_NAME] {
        assert!(!shown.contains(personal), "{shown}");
    }
}

#[tokio::test]
async fn scripted_failures_work_on_the_account_paths() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    fake.fail_next_on("POST", "/users", 2, 503);
    client.create_user("u_1").await.unwrap();
    assert_eq!(fake.requests(), 3);

    fake.error_next_on(
        "POST",
        "/cus_applications",
        1,
        402,
        "channel_error",
        "渠道请求失败",
    );
    let outcome = client.create_cus_application(&application("u_1")).await;
    assert!(
        matches!(&outcome, Err(PingppError::Api { status: 402, kind, .. }) if kind == "channel_error"),
        "{outcome:?}"
    );
    assert!(fake.cus_applications().is_empty());

    // A lost answer of an application: sent again unchanged, it is the one made.
    let req = application("u_1");
    fake.lose_next_answers_on("POST", "/cus_applications", 1);
    let made = client.create_cus_application(&req).await.unwrap();
    assert_eq!(fake.cus_applications(), vec![made]);

    fake.answer_late_on("GET", "/users/u_1", 1, Duration::from_millis(50));
    client.retrieve_user("u_1").await.unwrap();
    fake.fail_next_on("POST", "/card_bin", 100, 500);
    let outcome = client.card_bin("6214850213609784").await;
    assert!(outcome.is_err_and(|e| e.is_transient()));
    fake.heal();
    client.card_bin("6214850213609784").await.unwrap();
}

/// Every endpoint is counted under its own name. The client runs on a thread of its own with
/// a recorder local to it, so other tests' calls do not count here.
#[test]
fn each_endpoint_is_metered_under_its_own_name() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakePingpp::start(None));
    let client = client(&fake);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let local = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        local.block_on(async {
            client.create_user("u_1").await.unwrap();
            client.retrieve_user("u_1").await.unwrap();
            let made = client
                .create_cus_application(&application("u_1"))
                .await
                .unwrap();
            client.retrieve_cus_application(&id(&made)).await.unwrap();
            fake.succeed_cus_application(&id(&made));
            client.card_link("u_1", "https://plus.io").await.unwrap();
            client.upload_pic("AAAA").await.unwrap();
            client.card_bin("6214850213609784").await.unwrap();
            let req = deposit("u_1", 1);
            let made = client.create_deposit(&req).await.unwrap();
            client.retrieve_deposit(&id(&made)).await.unwrap();
            client
                .find_deposit(&req.order_no, 0)
                .await
                .unwrap()
                .unwrap();
            client.create_user("u_1").await.unwrap_err();
        })
    });
    let text = handle.render();
    for endpoint in [
        "create_user",
        "retrieve_user",
        "create_cus_application",
        "retrieve_cus_application",
        "card_link",
        "upload_pic",
        "card_bin",
        "create_deposit",
        "retrieve_deposit",
        "find_deposit",
    ] {
        let ok = format!("pluspay_pingpp_requests_total{{endpoint=\"{endpoint}\",outcome=\"ok\"}}");
        let count = text.lines().find(|l| l.starts_with(&ok));
        assert_eq!(
            count.and_then(|l| l.rsplit(' ').next()),
            Some("1"),
            "{endpoint}: {text}"
        );
    }
    let refused = "pluspay_pingpp_requests_total{endpoint=\"create_user\",outcome=\"api_error\"} 1";
    assert!(text.contains(refused), "{text}");
}

/// Whatever arrives, the fake answers a Ping++ error (never a panic, which would drop the
/// connection).
#[tokio::test]
async fn the_fake_answers_bad_requests_with_ping_plus_plus_errors() {
    let fake = FakePingpp::start(None).await;
    client(&fake).create_user("u_1").await.unwrap();
    let http = reqwest::Client::new();
    let app = format!("{}/v1/apps/{APP_ID}", fake.url());
    let bodies = [
        "",
        "not json",
        "[]",
        "null",
        r#"{"id": 1}"#,
        r#"{"id": ""}"#,
        r#"{"user": "u_1", "order_no": 7}"#,
        r#"{"user": "u_1", "order_no": "A1", "cert_type": "1", "cert_name": "x", "cert_number": null, "mobile": "1"}"#,
        r#"{"user": "u_1", "amount": -1, "order_no": "CZ0000000001", "extra": {"return_url": "https://x"}}"#,
        r#"{"user": "u_1", "amount": 1, "order_no": "CZ0000000001", "extra": "https://x"}"#,
        r#"{"user": "u_1", "amount": 1, "order_no": "CZ0000000001", "extra": {"return_url": 5}}"#,
        r#"{"pic": 5, "account": ["6214850213609784"], "return_url": {}}"#,
        r#"{"unknown": true}"#,
    ];
    for path in [
        "users",
        "cus_applications",
        "users/u_1/settle_accounts",
        "upload_pic",
        "card_bin",
        "deposits",
    ] {
        for body in bodies {
            let response = http
                .post(format!("{app}/{path}"))
                .bearer_auth(SECRET_KEY)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap();
            assert_eq!(status, 400, "{path} {body}: {answer}");
            assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
            assert!(answer["error"]["message"].is_string(), "{answer}");
        }
    }
    for path in ["users/", "users/u_1/x", "deposits/a/b", "cus_applications/"] {
        let response = http
            .get(format!("{app}/{path}"))
            .bearer_auth(SECRET_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}
