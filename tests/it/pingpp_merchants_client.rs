//! The Ping++ client's sub-merchant endpoints (sub_apps, enterprise and micro merchant
//! applications, settle accounts) against the fake Ping++: no PostgreSQL or RabbitMQ needed.

use std::time::Duration;

use crate::support::fake_pingpp::{FakePingpp, APP_ID, SECRET_KEY};
use pluspay::pingpp::{
    ClientConfig, MerchantApplicationRequest, MerchantKind, PingppClient, PingppError,
    SettleAccountRequest, SubAppRequest,
};
use serde_json::{json, Map, Value};

/// The application's error as a plain Ping++ error, for the tests that need no more.
trait ApplyPlain {
    async fn apply_plain(&self, req: &MerchantApplicationRequest) -> Result<Value, PingppError>;
}

impl ApplyPlain for PingppClient {
    async fn apply_plain(&self, req: &MerchantApplicationRequest) -> Result<Value, PingppError> {
        self.create_merchant_application(req)
            .await
            .map_err(|sent| sent.error)
    }
}

const RETRIES: u32 = 2;
const LICENSE_NUMBER: &str = "91310000MA1K4QXX7B";
const CERT_NUMBER: &str = "420381199206062220";
const CERT_NAME: &str = "张三";
const MOBILE: &str = "13000000000";
const BANK_ACCOUNT: &str = "6222021234567890123";
const SETTLE_ACCOUNT: &str = "112233445566";
/// Everything personal the tests send, none of which may show anywhere but in request bodies.
const PERSONAL: &[&str] = &[
    LICENSE_NUMBER,
    CERT_NUMBER,
    CERT_NAME,
    MOBILE,
    BANK_ACCOUNT,
    SETTLE_ACCOUNT,
    "42038119",
    "62220212",
];

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

fn sub_app(user: &str) -> SubAppRequest {
    SubAppRequest {
        display_name: "简米旗舰店".into(),
        user: user.into(),
        description: None,
        metadata: None,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// A company's application, nested as in Ping++'s document.
fn enterprise(user: &str) -> MerchantApplicationRequest {
    MerchantApplicationRequest {
        kind: MerchantKind::Enterprise,
        user: user.into(),
        order_no: unique("MCH"),
        fields: object(json!({
            "business_license": {
                "copy": "http://staticres.yeepay.com/license.jpg",
                "number": LICENSE_NUMBER,
                "account_opening_license": "J2900000000001",
                "account_opening_license_copy": "http://staticres.yeepay.com/opening.jpg",
                "company_name": "简米网络科技有限公司",
                "short_name": "简米",
                "sign_type": "enterprise",
            },
            "legal_person_id_card": {
                "type": "id_card",
                "copy": "http://staticres.yeepay.com/front.jpg",
                "national": "http://staticres.yeepay.com/back.jpg",
                "number": CERT_NUMBER,
                "name": CERT_NAME,
            },
            "contact_id_card": {
                "number": CERT_NUMBER,
                "name": CERT_NAME,
                "mobile": MOBILE,
                "email": "ops@plus.io",
                "service_phone": "02100000000",
            },
            "merchant_address": {
                "province": "上海市", "city": "上海市", "district": "浦东新区", "address": "世纪大道 1 号",
            },
            "settle_account": { "account": BANK_ACCOUNT, "type": "b2b", "bank_code": "ICBC" },
            "products": ["yepay_wx_pub", "yepay_alipay_qr"],
        })),
    }
}

/// A small merchant's application, with a settle account of `settle_type`.
fn micro(user: &str, settle_type: &str) -> MerchantApplicationRequest {
    MerchantApplicationRequest {
        kind: MerchantKind::Micro,
        user: user.into(),
        order_no: unique("MIC"),
        fields: object(json!({
            "business_license": { "sign_name": CERT_NAME, "short_name": "张三小店" },
            "merchant_address": {
                "province": "上海市", "city": "上海市", "district": "浦东新区", "address": "世纪大道 2 号",
            },
            "legal_person_id_card": {
                "type": "id_card",
                "number": CERT_NUMBER,
                "copy": "http://staticres.yeepay.com/front.jpg",
                "national": "http://staticres.yeepay.com/back.jpg",
                "name": CERT_NAME,
                "mobile": MOBILE,
            },
            "settle_account": { "account": BANK_ACCOUNT, "type": settle_type, "bank_code": "ICBC" },
        })),
    }
}

fn settle_account(kind: &str) -> SettleAccountRequest {
    SettleAccountRequest {
        account: SETTLE_ACCOUNT.into(),
        kind: kind.into(),
        open_bank: Some("ICBC".into()),
        open_bank_code: None,
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

fn all_digits(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
}

/// A sub-merchant: (sub_app id, its business user).
async fn sub_merchant(client: &PingppClient) -> (String, String) {
    let user = unique("biz_");
    let made = client.create_sub_app(&sub_app(&user)).await.unwrap();
    (id(&made), user)
}

/// Nothing the fake holds or logged shows a personal value in clear.
fn assert_fake_keeps_nothing_personal(fake: &FakePingpp) {
    let held = format!(
        "{:?} {:?} {:?} {:?}",
        fake.merchant_applications(),
        fake.sub_apps(),
        fake.settle_accounts(),
        fake.request_log()
    );
    for personal in PERSONAL {
        assert!(!held.contains(personal), "{personal}: {held}");
    }
}

#[tokio::test]
async fn a_sub_app_comes_with_its_business_user_once_per_user() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let mut req = sub_app("biz_003");
    req.description = Some("旗舰店".into());
    req.metadata = Some(json!({"shop": "1"}));
    let made = client.create_sub_app(&req).await.unwrap();
    let sub_app_id = id(&made);
    assert!(
        sub_app_id.starts_with("app_") && sub_app_id.len() == 20,
        "{made}"
    );
    assert!(sub_app_id[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(made["object"], "sub_app");
    assert_eq!(made["display_name"], "简米旗舰店");
    assert_eq!(made["description"], "旗舰店");
    assert_eq!(made["metadata"], json!({"shop": "1"}));
    assert!(made["account"].as_str().unwrap().starts_with("acct_"));
    assert_eq!(made["available_methods"], json!([]));
    assert_eq!(made["parent_app"], APP_ID);
    assert!(made["created"].is_i64());
    let user = &made["user"];
    assert_eq!(user["id"], "biz_003");
    assert_eq!(user["object"], "user");
    assert_eq!(user["type"], "business");
    assert_eq!(user["related_app"], sub_app_id.as_str());

    // The business user is one of the app's users, as the users' endpoints see it.
    let registered = fake.user("biz_003").unwrap();
    assert_eq!(&registered, user);
    assert_eq!(registered["available_balance"], 0);
    assert_eq!(registered["withdrawable_balance"], 0);
    assert_eq!(client.retrieve_user("biz_003").await.unwrap(), registered);

    let (status, message, param) = api_error(client.create_sub_app(&sub_app("biz_003")).await);
    assert_eq!((status, message.as_str()), (400, "该用户已关联子商户"));
    assert_eq!(param.as_deref(), Some("user"));
    assert_eq!(fake.sub_apps(), vec![made.clone()]);

    assert_eq!(client.retrieve_sub_app(&sub_app_id).await.unwrap(), made);
    let (status, message, param) = api_error(client.retrieve_sub_app("app_nobody").await);
    assert_eq!(
        (status, message.as_str()),
        (404, "未找到 sub_app : app_nobody")
    );
    assert_eq!(param.as_deref(), Some("id"));

    let sub_apps = format!("/v1/apps/{APP_ID}/sub_apps");
    assert_eq!(
        fake.request_log(),
        vec![
            ("POST".to_owned(), sub_apps.clone()),
            ("GET".to_owned(), format!("/v1/apps/{APP_ID}/users/biz_003")),
            ("POST".to_owned(), sub_apps.clone()),
            ("GET".to_owned(), format!("{sub_apps}/{sub_app_id}")),
            ("GET".to_owned(), format!("{sub_apps}/app_nobody")),
        ]
    );
}

#[tokio::test]
async fn an_enterprise_application_is_pending_until_yeepay_decides() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (_, user) = sub_merchant(&client).await;
    let req = enterprise(&user);
    let made = client.apply_plain(&req).await.unwrap();
    assert!(all_digits(&made["id"]), "{made}");
    assert_eq!(made["object"], "mch_application");
    assert_eq!(made["app"], APP_ID);
    assert_eq!(made["user"], user.as_str());
    assert_eq!(made["order_no"], req.order_no.as_str());
    assert_eq!(made["extra"], json!({}));
    assert!(made["transaction_no"].is_string());
    assert_eq!(made["mch_id"], Value::Null);
    assert_eq!(made["status"], "pending");
    assert_eq!(made["failure_msg"], Value::Null);
    assert!(made["created"].is_i64());
    assert_eq!(made["time_finished"], Value::Null);
    assert_eq!(made["products"], json!(["yepay_wx_pub", "yepay_alipay_qr"]));
    assert_eq!(fake.merchant_applications(), vec![made.clone()]);
    assert_eq!(
        client
            .retrieve_merchant_application(MerchantKind::Enterprise, &id(&made))
            .await
            .unwrap(),
        made
    );

    let completed = fake.complete_merchant_application(&id(&made));
    assert_eq!(completed["status"], "completed");
    assert!(all_digits(&completed["mch_id"]), "{completed}");
    assert!(completed["time_finished"].is_i64());
    assert_eq!(
        client
            .retrieve_merchant_application(MerchantKind::Enterprise, &id(&made))
            .await
            .unwrap(),
        completed
    );
    // Each collection has only its own kind.
    let (status, _, _) = api_error(
        client
            .retrieve_merchant_application(MerchantKind::Micro, &id(&made))
            .await,
    );
    assert_eq!(status, 404);

    // Refused, another application (a new order_no) may follow.
    let (_, other_user) = sub_merchant(&client).await;
    let refused = client.apply_plain(&enterprise(&other_user)).await.unwrap();
    let failed = fake.fail_merchant_application(&id(&refused), "营业执照信息不一致");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure_msg"], "营业执照信息不一致");
    client.apply_plain(&enterprise(&other_user)).await.unwrap();
    assert_eq!(fake.merchant_applications().len(), 3);

    let shown = format!("{:?}", fake.merchant_applications());
    assert!(!shown.contains("legal_person"), "{shown}");
    assert_fake_keeps_nothing_personal(&fake);
}

#[tokio::test]
async fn a_used_order_no_is_refused_even_for_the_same_application() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (_, user) = sub_merchant(&client).await;
    let req = enterprise(&user);
    let made = client.apply_plain(&req).await.unwrap();
    let (status, message, param) = api_error(client.apply_plain(&req).await);
    assert_eq!((status, message.as_str()), (400, "开户申请订单号已存在"));
    assert_eq!(param.as_deref(), Some("order_no"));
    // Nor under the other kind.
    let mut as_micro = micro(&user, "b2c");
    as_micro.order_no = req.order_no.clone();
    let (status, _, param) = api_error(client.apply_plain(&as_micro).await);
    assert_eq!((status, param.as_deref()), (400, Some("order_no")));
    assert_eq!(fake.merchant_applications(), vec![made]);
}

/// A retry of an application whose answer was lost would be refused as a used order_no: the
/// client sends it once, and says the outcome is unknown.
#[tokio::test]
async fn an_application_is_sent_once_unless_it_certainly_did_not_arrive() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (_, user) = sub_merchant(&client).await;
    let path = "/micro_applications";

    let before = fake.requests();
    fake.lose_next_answers_on("POST", path, 1);
    let outcome = client
        .create_merchant_application(&micro(&user, "b2c"))
        .await;
    assert!(
        outcome
            .as_ref()
            .is_err_and(|e| e.may_have_acted && e.error.is_transient()),
        "{outcome:?}"
    );
    assert_eq!(fake.requests(), before + 1);
    assert_eq!(fake.merchant_applications().len(), 1);

    fake.fail_next_on("POST", path, 1, 503);
    let outcome = client
        .create_merchant_application(&micro(&user, "b2c"))
        .await;
    assert!(
        outcome
            .as_ref()
            .is_err_and(|e| e.may_have_acted && e.error.is_transient()),
        "{outcome:?}"
    );
    assert_eq!(fake.requests(), before + 2);

    // Rate limited: turned away before it took effect, so sent again.
    fake.fail_next_on("POST", path, 1, 429);
    client
        .create_merchant_application(&micro(&user, "b2c"))
        .await
        .unwrap();
    assert_eq!(fake.requests(), before + 4);
    assert_eq!(fake.merchant_applications().len(), 2);
}

#[tokio::test]
async fn only_a_sub_merchant_applies_and_a_micro_one_is_paid_to_b2c_only() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (status, message, param) = api_error(client.apply_plain(&enterprise("nobody")).await);
    assert_eq!((status, message.as_str()), (400, "用户不是子商户"));
    assert_eq!(param.as_deref(), Some("user"));
    client.create_user("cus_1").await.unwrap();
    let (status, _, param) = api_error(client.apply_plain(&micro("cus_1", "b2c")).await);
    assert_eq!((status, param.as_deref()), (400, Some("user")));

    let (sub_app_id, user) = sub_merchant(&client).await;
    let (status, message, param) = api_error(client.apply_plain(&micro(&user, "b2b")).await);
    assert_eq!(
        (status, message.as_str()),
        (400, "小微商户仅支持 b2c 结算账户")
    );
    assert_eq!(param.as_deref(), Some("settle_account[type]"));
    assert!(fake.merchant_applications().is_empty());

    let made = client.apply_plain(&micro(&user, "b2c")).await.unwrap();
    assert_eq!(made["object"], "micro_application");
    assert_eq!(made["status"], "pending");
    assert_eq!(made["products"], json!([]));
    assert_eq!(
        client
            .retrieve_merchant_application(MerchantKind::Micro, &id(&made))
            .await
            .unwrap(),
        made
    );
    fake.complete_merchant_application(&id(&made));
    let (status, message, param) = api_error(
        client
            .create_settle_account(&sub_app_id, &settle_account("b2b"))
            .await,
    );
    assert_eq!(
        (status, message.as_str()),
        (400, "小微商户仅支持 b2c 结算账户")
    );
    assert_eq!(param.as_deref(), Some("recipient[type]"));
    let bound = client
        .create_settle_account(&sub_app_id, &settle_account("b2c"))
        .await
        .unwrap();
    assert_eq!(bound["recipient"]["type"], "b2c");
    assert_eq!(fake.settle_accounts(), vec![bound]);
    assert_fake_keeps_nothing_personal(&fake);
}

#[tokio::test]
async fn a_settle_account_needs_a_completed_application_and_comes_back_masked() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (sub_app_id, user) = sub_merchant(&client).await;
    let not_open = |outcome| {
        let (status, message, param) = api_error(outcome);
        assert_eq!((status, message.as_str()), (400, "子商户未开户"));
        assert_eq!(param.as_deref(), Some("app"));
    };
    not_open(
        client
            .create_settle_account(&sub_app_id, &settle_account("b2b"))
            .await,
    );
    let first = client.apply_plain(&enterprise(&user)).await.unwrap();
    not_open(
        client
            .create_settle_account(&sub_app_id, &settle_account("b2b"))
            .await,
    );
    fake.fail_merchant_application(&id(&first), "法人证件信息不一致");
    not_open(
        client
            .create_settle_account(&sub_app_id, &settle_account("b2b"))
            .await,
    );
    let second = client.apply_plain(&enterprise(&user)).await.unwrap();
    fake.complete_merchant_application(&id(&second));
    assert!(fake.settle_accounts().is_empty());

    let mut req = settle_account("b2b");
    req.open_bank_code = Some("102100099996".into());
    let bound = client
        .create_settle_account(&sub_app_id, &req)
        .await
        .unwrap();
    assert!(all_digits(&bound["id"]), "{bound}");
    assert_eq!(bound["object"], "settle_account");
    assert!(bound["created"].is_i64());
    assert_eq!(bound["livemode"], true);
    assert_eq!(bound["channel"], "bank_account");
    let recipient = &bound["recipient"];
    assert_eq!(recipient["account"], "112233**5566");
    assert_eq!(recipient["type"], "b2b");
    assert_eq!(recipient["open_bank"], "ICBC");
    assert_eq!(recipient["open_bank_code"], "102100099996");
    assert!(all_digits(&recipient["extra"]["card_id"]), "{bound}");
    assert_eq!(recipient["extra"]["bank_card_status"], "succeeded");
    assert_eq!(fake.settle_accounts(), vec![bound.clone()]);
    assert_eq!(
        fake.request_log().last().unwrap(),
        &(
            "POST".to_owned(),
            format!("/v1/apps/{sub_app_id}/settle_accounts")
        )
    );

    // Only a sub_app has settle accounts.
    let (status, _, param) = api_error(
        client
            .create_settle_account("app_nobody", &settle_account("b2b"))
            .await,
    );
    assert_eq!((status, param.as_deref()), (404, Some("app")));
    assert_fake_keeps_nothing_personal(&fake);
}

#[tokio::test]
async fn invalid_input_is_refused_before_sending_and_quotes_no_field_value() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let mut errors = Vec::new();

    let bad_sub_apps: Vec<fn(&mut SubAppRequest)> = vec![
        |s| s.display_name = "张".into(),
        |s| s.display_name = "店".repeat(51),
        |s| s.display_name = "  ".into(),
        |s| s.user = String::new(),
        |s| s.user = "biz-1".into(),
        |s| s.user = "a/b".into(),
        |s| s.description = Some(" ".into()),
        |s| s.metadata = Some(json!([])),
    ];
    for change in bad_sub_apps {
        let mut req = sub_app("biz_1");
        change(&mut req);
        errors.push(client.create_sub_app(&req).await.unwrap_err());
    }
    for id in ["", "app/1", "../x", "app 1"] {
        errors.push(client.retrieve_sub_app(id).await.unwrap_err());
        errors.push(
            client
                .retrieve_merchant_application(MerchantKind::Micro, id)
                .await
                .unwrap_err(),
        );
        errors.push(
            client
                .create_settle_account(id, &settle_account("b2b"))
                .await
                .unwrap_err(),
        );
    }
    let bad_applications: Vec<fn(&mut MerchantApplicationRequest)> = vec![
        |a| a.user = "biz 1".into(),
        |a| a.order_no = String::new(),
        |a| a.order_no = "MCH-1".into(),
        |a| a.order_no = "M".repeat(65),
        |a| a.fields.clear(),
        |a| {
            a.fields.insert("order_no".into(), json!("MCH2"));
        },
        |a| {
            a.fields.insert("user".into(), json!("biz_2"));
        },
    ];
    for change in bad_applications {
        let mut req = enterprise("biz_1");
        change(&mut req);
        errors.push(client.apply_plain(&req).await.unwrap_err());
    }
    let bad_accounts: Vec<fn(&mut SettleAccountRequest)> = vec![
        |s| s.account = "12345".into(),
        |s| s.account = "1".repeat(35),
        |s| s.account = "1122 3344 5566".into(),
        |s| s.account = "11223344556x".into(),
        |s| s.kind = "b2x".into(),
        |s| s.kind = String::new(),
        |s| s.open_bank = Some(String::new()),
        |s| s.open_bank_code = Some(" ".into()),
    ];
    for change in bad_accounts {
        let mut req = settle_account("b2b");
        change(&mut req);
        errors.push(
            client
                .create_settle_account("app_fDizzTlSabD05K4a", &req)
                .await
                .unwrap_err(),
        );
    }

    assert_eq!(fake.requests(), 0);
    for error in &errors {
        assert!(matches!(error, PingppError::InvalidInput(_)), "{error:?}");
        let shown = format!("{error} {error:?}");
        for value in PERSONAL.iter().chain(&["简米", "11223344", "ICBC"]) {
            assert!(!shown.contains(value), "{shown}");
        }
    }
}

#[test]
fn the_debug_of_a_request_shows_no_field_value() {
    for req in [enterprise("biz_1"), micro("biz_1", "b2c")] {
        let shown = format!("{req:?} {req:#?}");
        assert!(
            shown.contains("biz_1") && shown.contains(&req.order_no),
            "{shown}"
        );
        for value in PERSONAL
            .iter()
            .chain(&["简米", "上海", "staticres", "ICBC"])
        {
            assert!(!shown.contains(value), "{shown}");
        }
    }
    let shown = format!("{:?} {:#?}", settle_account("b2b"), settle_account("b2c"));
    assert!(shown.contains("****5566"), "{shown}");
    for value in [SETTLE_ACCOUNT, "112233", "223344"] {
        assert!(!shown.contains(value), "{shown}");
    }
}

#[tokio::test]
async fn scripted_failures_work_on_the_merchant_paths() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    fake.fail_next_on("POST", "/sub_apps", 2, 503);
    let (sub_app_id, user) = sub_merchant(&client).await;
    assert_eq!(fake.requests(), 3);

    // A lost sub_app answer: the retry is refused, and the user's related_app names it.
    fake.lose_next_answers_on("POST", "/sub_apps", 1);
    let (status, _, param) = api_error(client.create_sub_app(&sub_app("biz_lost")).await);
    assert_eq!((status, param.as_deref()), (400, Some("user")));
    let related = client.retrieve_user("biz_lost").await.unwrap()["related_app"].clone();
    let lost = client
        .retrieve_sub_app(related.as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(lost["user"]["id"], "biz_lost");

    fake.answer_late_on("GET", "/sub_apps/", 1, Duration::from_millis(50));
    client.retrieve_sub_app(&sub_app_id).await.unwrap();

    fake.error_next_on(
        "POST",
        "/mch_applications",
        1,
        402,
        "channel_error",
        "渠道请求失败",
    );
    let outcome = client.apply_plain(&enterprise(&user)).await;
    assert!(
        matches!(&outcome, Err(PingppError::Api { status: 402, kind, .. }) if kind == "channel_error"),
        "{outcome:?}"
    );
    assert!(fake.merchant_applications().is_empty());
    let made = client.apply_plain(&enterprise(&user)).await.unwrap();
    fake.complete_merchant_application(&id(&made));

    fake.fail_next_on("GET", "/mch_applications/", 100, 500);
    let outcome = client
        .retrieve_merchant_application(MerchantKind::Enterprise, &id(&made))
        .await;
    assert!(outcome.is_err_and(|e| e.is_transient()));
    fake.heal();
    fake.fail_next_on("POST", "/settle_accounts", 1, 502);
    client
        .create_settle_account(&sub_app_id, &settle_account("b2b"))
        .await
        .unwrap();
    assert_eq!(fake.settle_accounts().len(), 1);
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
            let made = client.create_sub_app(&sub_app("biz_1")).await.unwrap();
            client.retrieve_sub_app(&id(&made)).await.unwrap();
            let req = enterprise("biz_1");
            let application = client.apply_plain(&req).await.unwrap();
            client
                .retrieve_merchant_application(MerchantKind::Enterprise, &id(&application))
                .await
                .unwrap();
            fake.complete_merchant_application(&id(&application));
            client
                .create_settle_account(&id(&made), &settle_account("b2b"))
                .await
                .unwrap();
            client.apply_plain(&req).await.unwrap_err();
        })
    });
    let text = handle.render();
    for endpoint in [
        "create_sub_app",
        "retrieve_sub_app",
        "create_merchant_application",
        "retrieve_merchant_application",
        "create_settle_account",
    ] {
        let ok = format!("pluspay_pingpp_requests_total{{endpoint=\"{endpoint}\",outcome=\"ok\"}}");
        let count = text.lines().find(|l| l.starts_with(&ok));
        assert_eq!(
            count.and_then(|l| l.rsplit(' ').next()),
            Some("1"),
            "{endpoint}: {text}"
        );
    }
    let refused = "pluspay_pingpp_requests_total{endpoint=\"create_merchant_application\",outcome=\"api_error\"} 1";
    assert!(text.contains(refused), "{text}");
}

/// Whatever arrives, the fake answers a Ping++ error (never a panic, which would drop the
/// connection).
#[tokio::test]
async fn the_fake_answers_bad_requests_with_ping_plus_plus_errors() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (sub_app_id, user) = sub_merchant(&client).await;
    let made = client.apply_plain(&enterprise(&user)).await.unwrap();
    fake.complete_merchant_application(&id(&made));
    let http = reqwest::Client::new();
    let app = format!("{}/v1/apps/{APP_ID}", fake.url());
    let bodies = [
        "".to_owned(),
        "not json".to_owned(),
        "[]".to_owned(),
        "null".to_owned(),
        r#"{"unknown": true}"#.to_owned(),
        r#"{"display_name": 5, "user": {"id": "biz_x"}}"#.to_owned(),
        r#"{"display_name": "简米", "user": "biz_x"}"#.to_owned(),
        r#"{"display_name": "简米", "user": {"id": 1}}"#.to_owned(),
        format!(r#"{{"user": "{user}", "order_no": 7}}"#),
        format!(r#"{{"user": "{user}", "order_no": "A1", "business_license": "x"}}"#),
        format!(
            r#"{{"user": "{user}", "order_no": "A2", "business_license": {{"number": "1", "sign_name": "x"}}, "settle_account": {{"account": 6222, "type": "b2c"}}}}"#
        ),
        format!(
            r#"{{"user": "{user}", "order_no": "A3", "business_license": {{"number": "1", "sign_name": "x"}}, "settle_account": {{"account": "622202123456", "type": "b2c"}}, "products": "all"}}"#
        ),
        r#"{"channel": "alipay", "recipient": {"account": "112233445566", "type": "b2b"}}"#
            .to_owned(),
        r#"{"channel": "bank_account", "recipient": "112233445566"}"#.to_owned(),
        r#"{"channel": "bank_account", "recipient": {"account": "112233445566", "type": "b2b", "x": 1}}"#.to_owned(),
        r#"{"channel": "bank_account", "recipient": {"account": "112233445566", "type": "b2b", "open_bank": 1}}"#.to_owned(),
    ];
    for path in [
        format!("{app}/sub_apps"),
        format!("{app}/mch_applications"),
        format!("{app}/micro_applications"),
        format!("{}/v1/apps/{sub_app_id}/settle_accounts", fake.url()),
    ] {
        for body in &bodies {
            let response = http
                .post(&path)
                .bearer_auth(SECRET_KEY)
                .header("Content-Type", "application/json")
                .body(body.clone())
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
    for path in [
        "sub_apps/",
        "sub_apps/a/b",
        "mch_applications/",
        "micro_applications/1/x",
    ] {
        let response = http
            .get(format!("{app}/{path}"))
            .bearer_auth(SECRET_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    assert_eq!(fake.merchant_applications().len(), 1);
    assert!(fake.settle_accounts().is_empty());
}
