//! The Ping++ client against the fake Ping++ server: no PostgreSQL or RabbitMQ needed.

use std::time::Duration;

use crate::support::fake_pingpp::{
    generate_test_keys, FakePingpp, APP_ID, EXPIRED_CODE, SECRET_KEY,
};
use pluspay::pingpp::{
    ChargeRequest, ClientConfig, MerchantKey, PingppClient, PingppError, PingppPublicKey,
};
use serde_json::{json, Value};

const RETRIES: u32 = 2;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(api_base: String) -> ClientConfig {
    let mut config = ClientConfig::new(APP_ID, SECRET_KEY);
    config.api_base = api_base;
    config.timeout = Duration::from_secs(10);
    config.max_retries = RETRIES;
    config
}

fn client_with(config: ClientConfig) -> PingppClient {
    PingppClient::new(config)
        .unwrap()
        .with_retry_delays(ms(1), ms(10))
}

fn client(fake: &FakePingpp) -> PingppClient {
    client_with(config(fake.url()))
}

fn merchant_key() -> MerchantKey {
    MerchantKey::from_pem(&generate_test_keys().0).unwrap()
}

/// A fake that requires signed requests, and a client that signs them.
async fn signing_pair() -> (FakePingpp, PingppClient) {
    let fake = FakePingpp::start(Some(&generate_test_keys().1)).await;
    let mut config = config(fake.url());
    config.merchant_key = Some(merchant_key());
    let client = client_with(config);
    (fake, client)
}

fn order_no() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_owned()
}

fn charge(channel: &str) -> ChargeRequest {
    ChargeRequest {
        order_no: order_no(),
        channel: channel.into(),
        amount: 500,
        client_ip: "127.0.0.1".into(),
        subject: "余额充值".into(),
        body: "账户余额充值".into(),
        extra: None,
        time_expire: None,
        metadata: None,
        description: None,
    }
}

fn api_error(result: Result<Value, PingppError>) -> (u16, String, String, Option<String>) {
    match result {
        Err(PingppError::Api {
            status,
            kind,
            message,
            param,
            ..
        }) => (status, kind, message, param),
        other => panic!("expected a Ping++ API error, got {other:?}"),
    }
}

fn transient(result: Result<Value, PingppError>) -> String {
    match result {
        Err(e @ PingppError::Transient(_)) => {
            assert!(e.is_transient());
            e.to_string()
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn signed_create_and_retrieve_round_trip() {
    let (fake, client) = signing_pair().await;
    let mut req = charge("alipay_wap");
    req.extra = Some(json!({ "success_url": "https://plus.io/web/recharge" }));
    req.metadata = Some(json!({ "user": 7 }));
    req.description = Some("wallet recharge".into());

    let created = client.create_charge(&req).await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ch_") && id.len() == 27, "{id}");
    assert_eq!(created["object"], "charge");
    assert_eq!(created["app"], APP_ID);
    assert_eq!(created["order_no"], req.order_no.as_str());
    assert_eq!(created["amount"], 500);
    assert_eq!(created["currency"], "cny");
    assert_eq!(created["subject"], "余额充值");
    assert_eq!(created["paid"], false);
    assert_eq!(created["metadata"], json!({ "user": 7 }));
    assert_eq!(created["description"], "wallet recharge");
    assert_eq!(created["credential"]["object"], "credential");
    assert_eq!(
        created["credential"]["alipay_wap"]["return_url"],
        "https://plus.io/web/recharge"
    );

    let retrieved = client.retrieve_charge(&id).await.unwrap();
    assert_eq!(retrieved, created);

    fake.pay(&id);
    let paid = client.retrieve_charge(&id).await.unwrap();
    assert_eq!(paid["paid"], true);
    assert!(paid["time_paid"].is_i64());
    assert!(paid["transaction_no"].is_string());

    assert_eq!(
        fake.request_log(),
        vec![
            ("POST".to_owned(), "/v1/charges".to_owned()),
            ("GET".to_owned(), format!("/v1/charges/{id}")),
            ("GET".to_owned(), format!("/v1/charges/{id}")),
        ]
    );
}

#[tokio::test]
async fn the_signature_covers_a_path_prefix_of_the_api_base() {
    let fake = FakePingpp::start(Some(&generate_test_keys().1)).await;
    let mut config = config(format!("{}/gateway/", fake.url()));
    config.merchant_key = Some(merchant_key());
    let client = client_with(config);
    let created = client.create_charge(&charge("wx")).await.unwrap();
    assert!(created["credential"]["wx"]["prepayId"].is_string());
    assert_eq!(
        fake.request_log(),
        vec![("POST".to_owned(), "/gateway/v1/charges".to_owned())]
    );
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_requests_are_refused() {
    let fake = FakePingpp::start(Some(&generate_test_keys().1)).await;

    let (status, kind, message, _) = api_error(client(&fake).create_charge(&charge("wx")).await);
    assert_eq!((status, kind.as_str()), (401, "invalid_request_error"));
    assert!(message.contains("签名"), "{message}");

    // Another merchant's key: the signature is there but does not verify.
    let mut config = config(fake.url());
    config.merchant_key = Some(
        MerchantKey::from_pem(include_str!("../../src/pingpp/testdata/merchant_pkcs8.pem"))
            .unwrap(),
    );
    let (status, _, message, _) = api_error(client_with(config).create_charge(&charge("wx")).await);
    assert_eq!(status, 401);
    assert!(message.contains("签名验证失败"), "{message}");

    // Refusals are final: one request each, no retries.
    assert_eq!(fake.requests(), 2);
    assert!(fake.charges().is_empty());
}

#[tokio::test]
async fn bearer_and_basic_auth_are_accepted_and_a_wrong_key_is_not_repeated() {
    let fake = FakePingpp::start(None).await;
    // The client sends Bearer.
    client(&fake).create_charge(&charge("upacp")).await.unwrap();

    // Node and Go send Basic with the key as user name.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/charges/ch_missing", fake.url());
    let basic = http
        .get(&url)
        .basic_auth(SECRET_KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 404, "authenticated, then not found");
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // A wrong key: 401, and the key quoted back by the server is not passed on.
    let wrong = "sk_test_wrongWrongWrong1234";
    let mut config = config(fake.url());
    config.secret_key = wrong.into();
    let result = client_with(config).create_charge(&charge("upacp")).await;
    let shown = format!("{result:?} {}", result.as_ref().unwrap_err());
    assert!(!shown.contains(wrong), "{shown}");
    let (status, kind, message, _) = api_error(result);
    assert_eq!((status, kind.as_str()), (401, "invalid_request_error"));
    assert!(message.contains("sk_<redacted>"), "{message}");
    assert_eq!(fake.requests(), 4);
}

#[tokio::test]
async fn a_missing_charge_is_an_api_error() {
    let fake = FakePingpp::start(None).await;
    let (status, kind, message, param) =
        api_error(client(&fake).retrieve_charge("ch_nothingHere").await);
    assert_eq!(status, 404);
    assert_eq!(kind, "invalid_request_error");
    assert_eq!(message, "未找到 charge : ch_nothingHere");
    assert_eq!(param.as_deref(), Some("id"));
    assert_eq!(fake.requests(), 1);

    let bad = client(&fake).retrieve_charge("ch_../../x").await;
    assert!(matches!(bad, Err(PingppError::InvalidInput(_))), "{bad:?}");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let (fake, client) = signing_pair().await;
    fake.fail_next(2, 503);
    let created = client.create_charge(&charge("alipay")).await.unwrap();
    assert_eq!(fake.requests(), 3);
    assert_eq!(fake.charges(), vec![created]);
}

#[tokio::test]
async fn server_errors_forever_are_transient_after_all_retries() {
    let fake = FakePingpp::start(None).await;
    fake.fail_next(100, 500);
    let message = transient(client(&fake).create_charge(&charge("alipay")).await);
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("after 3 attempts"), "{message}");
    assert_eq!(fake.requests(), RETRIES as usize + 1);
}

#[tokio::test]
async fn rate_limits_are_retried() {
    let fake = FakePingpp::start(None).await;
    fake.error_next(1, 429, "rate_limit_error", "请求过于频繁");
    client(&fake).create_charge(&charge("wx")).await.unwrap();
    assert_eq!(fake.requests(), 2);

    fake.error_next(100, 403, "rate_limit_error", "请求过于频繁");
    let message = transient(client(&fake).retrieve_charge("ch_any").await);
    assert!(message.contains("请求过于频繁"), "{message}");
    assert_eq!(fake.requests(), 2 + RETRIES as usize + 1);
}

#[tokio::test]
async fn an_invalid_request_is_an_api_error_and_not_retried() {
    let fake = FakePingpp::start(None).await;
    let (status, kind, message, param) =
        api_error(client(&fake).create_charge(&charge("bitcoin")).await);
    assert_eq!(status, 400);
    assert_eq!(kind, "invalid_request_error");
    assert!(message.contains("bitcoin"), "{message}");
    assert_eq!(param.as_deref(), Some("channel"));
    assert_eq!(fake.requests(), 1);

    // alipay_wap needs extra.success_url.
    let (status, _, _, param) = api_error(client(&fake).create_charge(&charge("alipay_wap")).await);
    assert_eq!(status, 400);
    assert_eq!(param.as_deref(), Some("extra[success_url]"));
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn a_channel_error_is_not_retried() {
    let fake = FakePingpp::start(None).await;
    fake.error_next(1, 402, "channel_error", "渠道请求失败");
    let (status, kind, message, _) =
        api_error(client(&fake).create_charge(&charge("wx_wap")).await);
    assert_eq!(
        (status, kind.as_str(), message.as_str()),
        (402, "channel_error", "渠道请求失败")
    );
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let fake = FakePingpp::start(None).await;
    let mut config = config(fake.url());
    config.timeout = ms(300);
    let client = client_with(config);

    // Too slow every time: transient, one request per attempt.
    fake.delay_next(RETRIES as usize + 1, Duration::from_secs(30));
    let message = transient(client.retrieve_charge("ch_slow").await);
    assert!(message.contains("no answer within"), "{message}");
    assert_eq!(fake.requests(), RETRIES as usize + 1);

    // Too slow once: the retry gets through.
    fake.delay_next(1, Duration::from_secs(30));
    let req = charge("alipay_qr");
    let created = client.create_charge(&req).await.unwrap();
    assert!(created["credential"]["alipay_qr"].is_string());
    assert_eq!(fake.requests(), RETRIES as usize + 3);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    fake.shutdown().await;
    let message = transient(client.create_charge(&charge("wx")).await);
    assert!(message.contains("cannot connect"), "{message}");
    assert!(message.contains("after 3 attempts"), "{message}");
}

#[tokio::test]
async fn the_same_order_no_gives_the_same_charge() {
    let (fake, client) = signing_pair().await;
    let req = charge("upacp");
    let first = client.create_charge(&req).await.unwrap();
    let again = client.create_charge(&req).await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(fake.charges().len(), 1);

    // Same order_no, other parameters: refused, nothing created.
    let mut changed = req.clone();
    changed.amount += 1;
    let (status, _, _, param) = api_error(client.create_charge(&changed).await);
    assert_eq!((status, param.as_deref()), (400, Some("order_no")));
    assert_eq!(fake.charges().len(), 1);
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn invalid_input_is_refused_before_sending() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let mut req = charge("alipay");
    req.subject = "标".repeat(33);
    let result = client.create_charge(&req).await;
    assert!(
        matches!(result, Err(PingppError::InvalidInput(_))),
        "{result:?}"
    );
    let mut req = charge("alipay");
    req.order_no = "short".into();
    let result = client.create_charge(&req).await;
    assert!(
        matches!(result, Err(PingppError::InvalidInput(_))),
        "{result:?}"
    );
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn charge_states_set_on_the_fake_show_in_retrieve() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let mut ids = Vec::new();
    for channel in ["applepay_upacp", "alipay", "wx"] {
        let created = client.create_charge(&charge(channel)).await.unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    fake.pay(&ids[0]);
    fake.fail_charge(&ids[1], "channel_refused", "用户取消");
    fake.expire(&ids[2]);

    let paid = client.retrieve_charge(&ids[0]).await.unwrap();
    assert_eq!(paid["paid"], true);
    assert_eq!(paid["credential"]["applepay_upacp"]["mode"], "01");
    let failed = client.retrieve_charge(&ids[1]).await.unwrap();
    assert_eq!(
        (failed["paid"].clone(), failed["failure_code"].clone()),
        (json!(false), json!("channel_refused"))
    );
    let expired = client.retrieve_charge(&ids[2]).await.unwrap();
    assert_eq!(expired["failure_code"], EXPIRED_CODE);
    assert!(expired["time_expire"].as_i64().unwrap() < expired["created"].as_i64().unwrap() + 60);
    assert_eq!(fake.charges().len(), 3);
    assert_eq!(fake.charge(&ids[0]).unwrap(), paid);
}

#[tokio::test]
async fn fake_webhooks_are_signed_with_the_fakes_own_key() {
    let fake = FakePingpp::start(None).await;
    let key = PingppPublicKey::from_pem(&fake.public_key_pem()).unwrap();
    let merchant = PingppPublicKey::from_pem(&generate_test_keys().1).unwrap();
    let (body, signature) = fake.signed_event(
        "charge.succeeded",
        json!({ "id": "ch_1", "object": "charge" }),
    );
    assert!(key.verify(body.as_bytes(), &signature));
    assert!(!merchant.verify(body.as_bytes(), &signature));
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "charge.succeeded");
    assert_eq!(event["data"]["object"]["id"], "ch_1");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));

    // send_webhook delivers the body and signature as they are.
    let receiver = receiver::start(key).await;
    let status = fake.send_webhook(&receiver.url, &body, &signature).await;
    assert_eq!(status, 200);
    let status = fake
        .send_webhook(&receiver.url, &format!("{body} "), &signature)
        .await;
    assert_eq!(status, 400);
}

/// A minimal webhook receiver, enough to check what `send_webhook` puts on the wire.
mod receiver {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use pluspay::pingpp::{PingppPublicKey, WEBHOOK_SIGNATURE_HEADER};

    pub struct Receiver {
        pub url: String,
    }

    pub async fn start(key: PingppPublicKey) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/pingpp", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let key = key.clone();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let key = key.clone();
                    async move {
                        let signature = req
                            .headers()
                            .get(WEBHOOK_SIGNATURE_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = if key.verify(&body, &signature) {
                            200
                        } else {
                            400
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Receiver { url }
    }
}

#[tokio::test]
async fn a_charge_is_found_by_its_order_no_through_the_pages_of_the_list() {
    let (fake, client) = signing_pair().await;
    let first = charge("alipay");
    let made = client.create_charge(&first).await.unwrap();
    for _ in 0..230 {
        client.create_charge(&charge("wx")).await.unwrap();
    }
    let since = made["created"].as_i64().unwrap() - 60;
    // The oldest is on the third page of 100, newest first.
    let found = client.find_charge(&first.order_no, since).await.unwrap();
    assert_eq!(found.unwrap()["id"], made["id"]);
    let pages = fake
        .request_log()
        .iter()
        .filter(|(m, p)| m == "GET" && p.starts_with("/v1/charges?"))
        .count();
    assert_eq!(pages, 3);
    // Read to the end without it: a definite no.
    assert!(client
        .find_charge("a0000000000000000000", since)
        .await
        .unwrap()
        .is_none());
    // Nothing made since then.
    assert!(client
        .find_charge(&first.order_no, since + 3_600)
        .await
        .unwrap()
        .is_none());
    // A list that can't be read is an error, never a no.
    fake.fail_next(100, 503);
    assert!(client
        .find_charge(&first.order_no, since)
        .await
        .unwrap_err()
        .is_transient());
}
