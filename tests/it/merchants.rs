//! Sub-merchants with the money at Ping++, through real PostgreSQL and RabbitMQ and the fake
//! Ping++: one sub-app per user whatever the redeliveries and lost answers, applications sent
//! at most once (an unknown outcome is said, never resent), settle accounts for opened
//! sub-merchants only, and no bank or personal data kept.

use crate::custody::{code, command, custody_mode, succeeded};
use crate::support::fake_pingpp::FakePingpp;
use crate::support::{BrokerClient, TestEnv, WorkerHandle};
use serde_json::{json, Value};

const ID_NUMBER: &str = "110101199003074514";
const BANK_ACCOUNT: &str = "6214850213609784";

async fn start() -> (TestEnv, FakePingpp, BrokerClient, WorkerHandle) {
    crate::support::with_fake_pingpp_and_worker(custody_mode).await
}

fn micro(account_type: &str) -> Value {
    json!({
        "kind": "micro",
        "business_license": {"sign_name": "张三丰", "short_name": "三丰小店"},
        "merchant_address": {"province": "四川省", "city": "成都市", "district": "高新区", "address": "天府大道 1 号"},
        "legal_person_id_card": {"type": "id_card", "number": ID_NUMBER, "copy": "http://m/1",
                                 "national": "http://m/2", "name": "张三丰", "mobile": "13912345678"},
        "settle_account": {"account": BANK_ACCOUNT, "type": account_type, "bank_code": "CMBCHINA"},
        "products": ["yeepay_wx_pub"]
    })
}

fn posts(fake: &FakePingpp, path_end: &str) -> usize {
    fake.request_log()
        .iter()
        .filter(|(m, p)| m == "POST" && p.ends_with(path_end))
        .count()
}

async fn create(client: &mut BrokerClient, id: &str, user: i64) -> Value {
    client
        .call(command(
            id,
            "merchant.create",
            user,
            json!({"display_name": "三丰小店"}),
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_onboards_once_and_keeps_no_bank_or_personal_data() {
    let (env, fake, mut client, _worker) = start().await;
    let not_yet = command("g0", "merchant.get", 10, json!({}));
    assert_eq!(code(&client.call(not_yet).await), "not_a_merchant");

    let made = create(&mut client, "m1", 10).await;
    let sub_app = &succeeded(&made)["sub_app"];
    assert_eq!(sub_app["object"], "sub_app");
    assert_eq!(sub_app["user"]["id"], "biz_10");
    assert_eq!(create(&mut client, "m1", 10).await["data"], made["data"]);
    assert_eq!(
        code(&create(&mut client, "m1b", 10).await),
        "already_a_merchant"
    );
    assert_eq!(fake.sub_apps().len(), 1);

    let settle = json!({"recipient": {"account": BANK_ACCOUNT, "type": "b2c"}});
    let early = command("s0", "merchant.settle_account", 10, settle.clone());
    assert_eq!(code(&client.call(early).await), "merchant_not_open");

    let applied = client
        .call(command("a1", "merchant.apply", 10, micro("b2c")))
        .await;
    let application = succeeded(&applied)["application"].clone();
    assert_eq!(application["object"], "micro_application");
    assert_eq!(application["status"], "pending");
    assert_eq!(
        client
            .call(command("a1", "merchant.apply", 10, micro("b2c")))
            .await,
        applied
    );
    let again = client
        .call(command("a2", "merchant.apply", 10, micro("b2c")))
        .await;
    assert_eq!(code(&again), "merchant_application_pending");
    assert_eq!(fake.merchant_applications().len(), 1);

    // Ping++ decides; the webhook records it, and merchant.get shows it.
    let id = application["id"].as_str().unwrap();
    let (event, _) = fake.signed_event(
        "micro_application.succeeded",
        fake.complete_merchant_application(id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM merchant_applications WHERE status = 'completed'",
        1,
    )
    .await;
    let got = client
        .call(command("g1", "merchant.get", 10, json!({})))
        .await;
    let data = succeeded(&got);
    assert_eq!(data["applications"][0]["status"], "completed");
    assert_eq!(data["sub_app"]["id"], sub_app["id"]);
    let fetched = client
        .call(command(
            "g2",
            "merchant.application.get",
            10,
            json!({"application": id}),
        ))
        .await;
    assert_eq!(succeeded(&fetched)["application"]["status"], "completed");
    let someone_else = command(
        "g3",
        "merchant.application.get",
        11,
        json!({"application": id}),
    );
    assert_eq!(
        code(&client.call(someone_else).await),
        "unknown_application"
    );

    // A micro merchant is paid to a personal card only.
    let b2b = json!({"recipient": {"account": BANK_ACCOUNT, "type": "b2b"}});
    let refused = client
        .call(command("s1", "merchant.settle_account", 10, b2b))
        .await;
    assert_eq!(code(&refused), "invalid_account");
    assert!(refused["errors"]["recipient.type"][0]
        .as_str()
        .unwrap()
        .contains("b2c"));
    let bound = client
        .call(command("s2", "merchant.settle_account", 10, settle))
        .await;
    let account = &succeeded(&bound)["settle_account"];
    assert_eq!(account["object"], "settle_account");
    assert!(account["recipient"]["account"]
        .as_str()
        .unwrap()
        .contains('*'));

    // Nothing of the application's fields or the card is kept.
    let stored = env
        .db
        .query_one(
            "SELECT (SELECT string_agg(t::text, ' ') FROM commands t) || ' ' ||
                    (SELECT string_agg(t::text, ' ') FROM merchant_applications t) || ' ' ||
                    (SELECT string_agg(t::text, ' ') FROM merchant_settle_accounts t) || ' ' ||
                    (SELECT string_agg(t::text, ' ') FROM sub_merchants t)",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    for secret in [ID_NUMBER, BANK_ACCOUNT, "13912345678"] {
        assert!(!stored.contains(secret), "{secret} kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_sub_app_answer_makes_no_second_sub_app() {
    let (_env, fake, mut client, _worker) = start().await;
    fake.lose_next_answers_on("POST", "/sub_apps", 1);
    let made = create(&mut client, "m2", 20).await;
    assert_eq!(succeeded(&made)["sub_app"]["user"]["id"], "biz_20");
    // The repeat was refused (the user has its sub-app); the one made was found through the
    // business user's related_app.
    assert!(posts(&fake, "/sub_apps") >= 2);
    assert_eq!(fake.sub_apps().len(), 1);
    assert_eq!(made["data"]["sub_app"]["id"], fake.sub_apps()[0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_whose_outcome_is_unknown_is_never_sent_again() {
    let (env, fake, mut client, _worker) = start().await;
    succeeded(&create(&mut client, "m3", 30).await);

    // The answer is lost: Ping++ has the application, pluspay can't know it.
    fake.lose_next_answers_on("POST", "/micro_applications", 1);
    let lost = client
        .call(command("a3", "merchant.apply", 30, micro("b2c")))
        .await;
    assert_eq!(code(&lost), "provider_outcome_unknown");
    let order_no = lost["errors"]["order_no"][0].as_str().unwrap().to_owned();
    assert_eq!(fake.merchant_applications().len(), 1);
    assert_eq!(posts(&fake, "/micro_applications"), 1);
    // A redelivery answers the same and sends nothing.
    assert_eq!(
        client
            .call(command("a3", "merchant.apply", 30, micro("b2c")))
            .await,
        lost
    );
    assert_eq!(posts(&fake, "/micro_applications"), 1);

    // Ping++'s webhook tells what became of it.
    let made = fake.merchant_applications()[0].clone();
    assert_eq!(made["order_no"], order_no.as_str());
    let id = made["id"].as_str().unwrap();
    let (event, _) = fake.signed_event(
        "micro_application.succeeded",
        fake.complete_merchant_application(id),
    );
    client.enqueue_pingpp_event(&event).await;
    env.wait_for_count(
        "SELECT count(*) FROM merchant_applications WHERE status = 'completed'",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_rate_limits_may_be_sent_again_but_a_5xx_may_not() {
    let (_env, fake, mut client, _worker) = start().await;
    succeeded(&create(&mut client, "m4", 40).await);

    // Rate limited: turned away before Ping++ acted, so sent again at once.
    fake.fail_next_on("POST", "/micro_applications", 1, 429);
    let applied = client
        .call(command("a4", "merchant.apply", 40, micro("b2c")))
        .await;
    let id = succeeded(&applied)["application"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fake.merchant_applications().len(), 1);

    // Refused by Ping++: a rejection in Ping++'s words; a new command applies again.
    let (event, _) = fake.signed_event(
        "micro_application.failed",
        fake.fail_merchant_application(&id, "结算卡信息有误"),
    );
    client.enqueue_pingpp_event(&event).await;
    let mut got = Value::Null;
    for i in 0..200 {
        got = client
            .call(command(&format!("g4-{i}"), "merchant.get", 40, json!({})))
            .await;
        if got["data"]["applications"][0]["status"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got["data"]["applications"][0]["status"], "failed", "{got}");
    fake.error_next_on(
        "POST",
        "/micro_applications",
        1,
        400,
        "invalid_request_error",
        "商户简称重复",
    );
    let refused = client
        .call(command("a5", "merchant.apply", 40, micro("b2c")))
        .await;
    assert_eq!(code(&refused), "payment_provider_error");

    // A 5xx may come after Ping++ acted: unknown, not resent.
    fake.fail_next_on("POST", "/micro_applications", 1, 503);
    let unsure = client
        .call(command("a6", "merchant.apply", 40, micro("b2c")))
        .await;
    assert_eq!(code(&unsure), "provider_outcome_unknown");
    let sent = posts(&fake, "/micro_applications");
    let ok = client
        .call(command("a7", "merchant.apply", 40, micro("b2c")))
        .await;
    succeeded(&ok);
    assert_eq!(posts(&fake, "/micro_applications"), sent + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_are_checked_field_by_field_before_any_call() {
    let (_env, fake, mut client, _worker) = start().await;
    succeeded(&create(&mut client, "m5", 50).await);
    let before = fake.requests();
    let mut bad = micro("b2b");
    bad["legal_person_id_card"]["type"] = json!("driver");
    bad["business_license"]["short_name"] = json!("x".repeat(129));
    bad["merchant_address"]
        .as_object_mut()
        .unwrap()
        .remove("city");
    let refused = client.call(command("a8", "merchant.apply", 50, bad)).await;
    assert_eq!(code(&refused), "invalid_application");
    let errors = refused["errors"].as_object().unwrap();
    for field in [
        "settle_account.type",
        "legal_person_id_card.type",
        "business_license.short_name",
        "merchant_address.city",
    ] {
        assert!(errors.contains_key(field), "{field}: {refused}");
    }
    assert!(!refused.to_string().contains(BANK_ACCOUNT));
    let kind = client
        .call(command("a9", "merchant.apply", 50, json!({"kind": "big"})))
        .await;
    assert_eq!(code(&kind), "invalid_merchant_kind");
    let name = command("m6", "merchant.create", 51, json!({"display_name": "x"}));
    assert_eq!(code(&client.call(name).await), "invalid_display_name");
    assert_eq!(fake.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_custody_has_no_sub_merchants() {
    let (_env, fake, mut client, _worker) =
        crate::support::with_fake_pingpp_and_worker(|_| {}).await;
    assert_eq!(code(&create(&mut client, "m7", 1).await), "custody_mode");
    assert_eq!(fake.requests(), 0);
}
