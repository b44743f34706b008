//! The Ping++ client's order endpoints (orders and their payment, order refunds, allocations,
//! allocation refunds and completions) against the fake Ping++, and the fake's balances as
//! they move the money: no PostgreSQL or RabbitMQ needed.

use std::time::Duration;

use crate::support::fake_pingpp::{FakePingpp, APP_ID, SECRET_KEY};
use pluspay::pingpp::{
    AllocationCompleteRequest, AllocationRefundRequest, AllocationRequest, AllocationShare,
    ClientConfig, CusApplicationRequest, DepositRequest, MerchantApplicationRequest, MerchantKind,
    OrderPayRequest, OrderRefundRequest, OrderRequest, PingppClient, PingppError, SubAppRequest,
};
use serde_json::{json, Value};

/// The allocation creates' errors as plain Ping++ errors, for the tests that need no more (the
/// creates are sent once and also say whether Ping++ may have acted).
trait AllocatePlain {
    async fn create_allocation_plain(&self, req: &AllocationRequest) -> Result<Value, PingppError>;
    async fn create_allocation_refund_plain(
        &self,
        req: &AllocationRefundRequest,
    ) -> Result<Value, PingppError>;
    async fn create_allocation_complete_plain(
        &self,
        req: &AllocationCompleteRequest,
    ) -> Result<Value, PingppError>;
}

impl AllocatePlain for PingppClient {
    async fn create_allocation_plain(&self, req: &AllocationRequest) -> Result<Value, PingppError> {
        self.create_allocation(req).await.map_err(|e| e.error)
    }
    async fn create_allocation_refund_plain(
        &self,
        req: &AllocationRefundRequest,
    ) -> Result<Value, PingppError> {
        self.create_allocation_refund(req)
            .await
            .map_err(|e| e.error)
    }
    async fn create_allocation_complete_plain(
        &self,
        req: &AllocationCompleteRequest,
    ) -> Result<Value, PingppError> {
        self.create_allocation_complete(req)
            .await
            .map_err(|e| e.error)
    }
}

const RETRIES: u32 = 2;

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

/// A 400 with `message` about `param`.
fn refused(result: Result<impl std::fmt::Debug, PingppError>, message: &str, param: &str) {
    let (status, got, got_param) = api_error(result);
    assert_eq!(
        (status, got.as_str(), got_param.as_deref()),
        (400, message, Some(param))
    );
}

fn id(object: &Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

fn balance(fake: &FakePingpp, user: &str) -> i64 {
    let user = fake.user(user).unwrap();
    let available = user["available_balance"].as_i64().unwrap();
    assert_eq!(user["withdrawable_balance"].as_i64().unwrap(), available);
    available
}

/// A sub-merchant whose account is open: (sub_app id, its business user).
async fn merchant(fake: &FakePingpp, client: &PingppClient) -> (String, String) {
    let user = unique("biz_");
    let sub_app = client
        .create_sub_app(&SubAppRequest {
            display_name: "旺仔商城".into(),
            user: user.clone(),
            description: None,
            metadata: None,
        })
        .await
        .unwrap();
    let fields = json!({
        "business_license": { "number": "91310000MA1K4QXX7B" },
        "settle_account": { "account": "6222021234567890123", "type": "b2b" },
        "products": ["yeepay_wx_pub", "not_a_channel"],
    });
    let application = client
        .create_merchant_application(&MerchantApplicationRequest {
            kind: MerchantKind::Enterprise,
            user: user.clone(),
            order_no: unique("MCH"),
            fields: fields.as_object().unwrap().clone(),
        })
        .await
        .unwrap();
    fake.complete_merchant_application(&id(&application));
    (id(&sub_app), user)
}

/// A user whose e-wallet is open and holds `amount` fen.
async fn buyer(fake: &FakePingpp, client: &PingppClient, amount: u64) -> String {
    let user = unique("cus_");
    client.create_user(&user).await.unwrap();
    let application = client
        .create_cus_application(&CusApplicationRequest {
            user: user.clone(),
            order_no: unique("CUS"),
            cert_type: "1".into(),
            cert_name: "张三".into(),
            cert_number: "420381199206062220".into(),
            mobile: "13000000000".into(),
        })
        .await
        .unwrap();
    fake.succeed_cus_application(&id(&application));
    if amount > 0 {
        let deposit = client
            .create_deposit(&DepositRequest {
                user: user.clone(),
                order_no: unique("CZ"),
                amount,
                return_url: "https://plus.io/wallet".into(),
                metadata: None,
            })
            .await
            .unwrap();
        fake.pay_deposit(&id(&deposit));
    }
    user
}

fn order(uid: &str, receipt_app: &str, amount: u64, allocation: bool) -> OrderRequest {
    OrderRequest {
        merchant_order_no: unique("PO_"),
        amount,
        client_ip: "24.168.179.226".into(),
        subject: "旺仔牛奶".into(),
        body: "旺仔商城".into(),
        uid: uid.into(),
        receipt_app: receipt_app.into(),
        time_expire: None,
        description: None,
        allocation,
        metadata: None,
    }
}

fn balance_pay(amount: u64) -> OrderPayRequest {
    OrderPayRequest {
        channel: "balance".into(),
        charge_amount: amount,
        extra: Some(json!({ "return_url": "https://plus.io/paid" })),
        charge_order_no: None,
        time_expire: None,
    }
}

fn refund(charge: &str, amount: u64) -> OrderRefundRequest {
    OrderRefundRequest {
        order_no: unique("TK_"),
        amount,
        charge: charge.into(),
        description: "退货".into(),
    }
}

fn share(user: &str, amount: u64) -> AllocationShare {
    AllocationShare {
        user: user.into(),
        amount,
        description: None,
    }
}

fn allocation(order: &str, recipients: Vec<AllocationShare>) -> AllocationRequest {
    AllocationRequest {
        order: order.into(),
        order_no: unique("FZ_"),
        recipients,
    }
}

/// A paid order of `amount` from a new buyer holding `funds`, to a new merchant:
/// (order, buyer, merchant's business user).
async fn paid_order(
    fake: &FakePingpp,
    client: &PingppClient,
    funds: u64,
    amount: u64,
    allocation: bool,
) -> (Value, String, String) {
    let (sub_app, merchant_user) = merchant(fake, client).await;
    let uid = buyer(fake, client, funds).await;
    let made = client
        .create_order(&order(&uid, &sub_app, amount, allocation))
        .await
        .unwrap();
    client
        .pay_order(&id(&made), &balance_pay(amount))
        .await
        .unwrap();
    (fake.pay_order(&id(&made)), uid, merchant_user)
}

#[tokio::test]
async fn an_order_is_created_retrieved_and_paid_from_the_e_wallet() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (sub_app, merchant_user) = merchant(&fake, &client).await;
    let uid = buyer(&fake, &client, 500).await;
    let mut req = order(&uid, &sub_app, 300, false);
    req.description = Some("两箱".into());
    req.metadata = Some(json!({ "cart": "7" }));

    // Scripted failures work here too: retried, one order made.
    fake.fail_next_on("POST", "/v1/orders", 1, 503);
    let made = client.create_order(&req).await.unwrap();
    assert_eq!(fake.orders(), vec![made.clone()]);
    let order_id = id(&made);
    assert!(
        order_id.len() == 19 && order_id.chars().all(|c| c.is_ascii_digit()),
        "{made}"
    );
    let created = made["created"].as_i64().unwrap();
    assert_eq!(
        made,
        json!({
            "id": order_id, "object": "order", "created": created, "livemode": true,
            "paid": false, "refunded": false, "status": "created", "app": APP_ID, "uid": uid,
            "merchant_order_no": req.merchant_order_no, "amount": 300, "amount_refunded": 0,
            "amount_paid": 0, "currency": "cny", "subject": "旺仔牛奶", "body": "旺仔商城",
            "client_ip": "24.168.179.226", "time_paid": null, "time_expire": created + 86400,
            "charge": null, "description": "两箱", "metadata": { "cart": "7" },
            "charge_essentials": {}, "receipt_app": sub_app,
            "available_methods": ["balance", "yeepay_wx_pub"], "allocation": false,
            "charges": { "object": "list", "url": "/v1/charges", "has_more": false, "data": [] },
        })
    );
    // Keyed by merchant_order_no: the same request is the same order.
    assert_eq!(client.create_order(&req).await.unwrap(), made);
    let mut other = req.clone();
    other.amount = 301;
    let (status, _, param) = api_error(client.create_order(&other).await);
    assert_eq!((status, param.as_deref()), (400, Some("merchant_order_no")));
    assert_eq!(client.retrieve_order(&order_id).await.unwrap(), made);
    let (status, message, _) = api_error(client.retrieve_order("2012000").await);
    assert_eq!((status, message.as_str()), (404, "未找到 order : 2012000"));

    // Paying: what is unpaid, by a channel the document lists, from enough balance.
    let mut wrong = balance_pay(300);
    wrong.channel = "alipay".into();
    refused(
        client.pay_order(&order_id, &wrong).await,
        "不支持的支付渠道",
        "channel",
    );
    refused(
        client.pay_order(&order_id, &balance_pay(299)).await,
        "支付金额须等于订单待付金额",
        "charge_amount",
    );
    let poor = buyer(&fake, &client, 299).await;
    let poor_order = client
        .create_order(&order(&poor, &sub_app, 300, false))
        .await
        .unwrap();
    refused(
        client.pay_order(&id(&poor_order), &balance_pay(300)).await,
        "余额不足",
        "charge_amount",
    );

    let paying = client
        .pay_order(&order_id, &balance_pay(300))
        .await
        .unwrap();
    assert_eq!(paying["status"], "created");
    assert_eq!(paying["paid"], false);
    assert_eq!(paying["service_app"], APP_ID);
    let charge = &paying["charges"]["data"][0];
    let charge_id = id(charge);
    assert!(
        charge_id.starts_with("ch_") && charge_id.len() == 27,
        "{charge}"
    );
    assert_eq!(paying["charge"], charge_id.as_str());
    for (field, value) in [
        ("object", json!("charge")),
        ("paid", json!(false)),
        ("channel", json!("balance")),
        ("order_no", json!(req.merchant_order_no)),
        ("amount", json!(300)),
        ("amount_settle", json!(300)),
        ("app", json!(APP_ID)),
        (
            "extra",
            json!({ "return_url": "https://plus.io/paid", "user": uid }),
        ),
        ("time_paid", Value::Null),
        ("refunds", Value::Null),
    ] {
        assert_eq!(charge[field], value, "{field}: {charge}");
    }
    let essentials = &paying["charge_essentials"];
    assert_eq!(essentials["channel"], "balance");
    assert_eq!(essentials["transaction_no"], charge["transaction_no"]);
    assert_eq!(essentials["extra"], charge["extra"]);
    assert!(essentials["credential"]["balance"]
        .as_str()
        .unwrap()
        .starts_with("https://member.yeepay.com/yeepay-std-wallet/wallet.html#/wallet?token="));
    assert_eq!(
        balance(&fake, &uid),
        500,
        "nothing moves before the payment"
    );

    let paid = fake.pay_order(&order_id);
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["paid"], true);
    assert_eq!(paid["amount_paid"], 300);
    assert!(paid["time_paid"].is_i64());
    assert_eq!(paid["charges"]["data"][0]["paid"], true);
    assert!(paid["charges"]["data"][0]["time_paid"].is_i64());
    assert_eq!(fake.pay_order(&order_id), paid, "paid once");
    assert_eq!(balance(&fake, &uid), 200);
    assert_eq!(balance(&fake, &merchant_user), 300);
    assert_eq!(fake.held(&order_id), 0);
    assert_eq!(client.retrieve_order(&order_id).await.unwrap(), paid);
    refused(
        client.pay_order(&order_id, &balance_pay(300)).await,
        "订单状态不可支付",
        "order_id",
    );

    // Another channel: its own credential; the buyer's e-wallet is not touched.
    let by_wx = client
        .create_order(&order(&poor, &sub_app, 50, false))
        .await
        .unwrap();
    let mut wx = balance_pay(50);
    wx.channel = "yeepay_wx_pub".into();
    wx.extra = None;
    wx.charge_order_no = Some("WX_1".into());
    let paying = client.pay_order(&id(&by_wx), &wx).await.unwrap();
    assert!(paying["charge_essentials"]["credential"]["yeepay_wx_pub"].is_string());
    assert_eq!(paying["charges"]["data"][0]["order_no"], "WX_1");
    fake.pay_order(&id(&by_wx));
    assert_eq!(balance(&fake, &poor), 299);
    assert_eq!(balance(&fake, &merchant_user), 350);
}

#[tokio::test]
async fn an_order_needs_a_known_buyer_and_an_open_merchant() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (sub_app, _) = merchant(&fake, &client).await;
    let uid = buyer(&fake, &client, 0).await;
    refused(
        client
            .create_order(&order("nobody", &sub_app, 1, false))
            .await,
        "用户不存在",
        "uid",
    );
    refused(
        client
            .create_order(&order(&uid, "app_nobody", 1, false))
            .await,
        "收款方子商户未开户",
        "receipt_app",
    );
    // A sub_app whose application has not completed yet.
    let pending = client
        .create_sub_app(&SubAppRequest {
            display_name: "新店".into(),
            user: "biz_new".into(),
            description: None,
            metadata: None,
        })
        .await
        .unwrap();
    refused(
        client
            .create_order(&order(&uid, &id(&pending), 1, false))
            .await,
        "收款方子商户未开户",
        "receipt_app",
    );
    // An e-wallet not open: nothing to pay with.
    client.create_user("cus_closed").await.unwrap();
    let made = client
        .create_order(&order("cus_closed", &sub_app, 1, false))
        .await
        .unwrap();
    refused(
        client.pay_order(&id(&made), &balance_pay(1)).await,
        "余额不足",
        "charge_amount",
    );
    assert_eq!(fake.orders().len(), 1);
}

/// One allocation order paid from the e-wallet, followed through every step: who holds the
/// money after each.
#[tokio::test]
async fn a_balance_paid_allocation_order_moves_the_money_step_by_step() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (paid, uid, merchant_user) = paid_order(&fake, &client, 10_000, 1_000, true).await;
    let order_id = id(&paid);
    let charge = paid["charge"].as_str().unwrap().to_owned();
    let r1 = buyer(&fake, &client, 0).await;
    let r2 = unique("u_");
    client.create_user(&r2).await.unwrap();
    let balances = |held: i64, buyer: i64, one: i64, two: i64, merchant: i64| {
        assert_eq!(
            (
                fake.held(&order_id),
                balance(&fake, &uid),
                balance(&fake, &r1),
                balance(&fake, &r2),
                balance(&fake, &merchant_user)
            ),
            (held, buyer, one, two, merchant),
            "(held, buyer, r1, r2, merchant)"
        );
    };
    assert_eq!(paid["allocation"], true);
    balances(1_000, 9_000, 0, 0, 0);

    // A partial refund: pending, then succeeded, back to the e-wallet out of what is held.
    let req = refund(&charge, 100);
    let pending = client.create_order_refund(&order_id, &req).await.unwrap();
    assert_eq!(pending["status"], "pending");
    balances(1_000, 9_000, 0, 0, 0);
    let done = fake.succeed_order_refund(&order_id, &id(&pending));
    assert_eq!(done["status"], "succeeded");
    assert_eq!(
        client
            .retrieve_order_refund(&order_id, &id(&pending))
            .await
            .unwrap(),
        done
    );
    let order_now = client.retrieve_order(&order_id).await.unwrap();
    assert_eq!(
        (
            &order_now["amount_refunded"],
            &order_now["refunded"],
            &order_now["status"]
        ),
        (&json!(100), &json!(true), &json!("paid"))
    );
    balances(900, 9_100, 0, 0, 0);

    // An allocation: reserved at once, paid to the recipients when it succeeds.
    refused(
        client
            .create_allocation_plain(&allocation(&order_id, vec![share(&r1, 901)]))
            .await,
        "分账金额超出可分账金额",
        "recipients",
    );
    refused(
        client
            .create_allocation_plain(&allocation(&order_id, vec![share("nobody", 1)]))
            .await,
        "用户不存在",
        "recipients",
    );
    let mut with_description = share(&r2, 200);
    with_description.description = Some("佣金".into());
    let req = allocation(&order_id, vec![share(&r1, 300), with_description]);
    let made = client.create_allocation_plain(&req).await.unwrap();
    let allocation_id = id(&made);
    let created = made["created"].as_i64().unwrap();
    let recipient = |user: &str, amount: i64, description: Value| {
        json!({
            "user": user, "amount": amount, "description": description, "status": "processing",
            "time_succeeded": null, "failure_code": null, "failure_msg": null,
        })
    };
    assert_eq!(
        made,
        json!({
            "id": allocation_id, "object": "allocation", "livemode": true, "app": APP_ID,
            "order_no": req.order_no,
            "recipients": [recipient(&r1, 300, Value::Null), recipient(&r2, 200, json!("佣金"))],
            "senders": [], "order": order_id, "status": "processing", "created": created,
            "time_succeeded": null, "metadata": {}, "type": "allocation", "amount": 500,
            "extra": { "charge": {
                "id": charge, "order_no": paid["merchant_order_no"],
                "transaction_no": paid["charges"]["data"][0]["transaction_no"],
            } },
        })
    );
    balances(400, 9_100, 0, 0, 0);
    // What went to recipients is no longer refundable: 1000 - 100 - 500.
    refused(
        client
            .create_order_refund(&order_id, &refund(&charge, 401))
            .await,
        "退款金额超出可退金额",
        "amount",
    );
    let succeeded = fake.succeed_allocation(&allocation_id);
    assert_eq!(succeeded["status"], "succeed");
    assert!(succeeded["time_succeeded"].is_i64());
    for r in succeeded["recipients"].as_array().unwrap() {
        assert_eq!(r["status"], "succeed");
        assert!(r["time_succeeded"].is_i64());
    }
    assert_eq!(fake.succeed_allocation(&allocation_id), succeeded, "once");
    assert_eq!(
        client.retrieve_allocation(&allocation_id).await.unwrap(),
        succeeded
    );
    balances(400, 9_100, 300, 200, 0);

    // A failed allocation gives its reservation back.
    let failing = client
        .create_allocation_plain(&allocation(&order_id, vec![share(&r2, 400)]))
        .await
        .unwrap();
    balances(0, 9_100, 300, 200, 0);
    let failed = fake.fail_allocation(&id(&failing), "分账失败");
    assert_eq!(failed["status"], "failure");
    assert_eq!(failed["recipients"][0]["status"], "failure");
    assert_eq!(failed["recipients"][0]["failure_msg"], "分账失败");
    balances(400, 9_100, 300, 200, 0);

    // An allocation refund: r1 gives back 100 of its 300, into what the order holds.
    let give_back = |senders: Vec<AllocationShare>, allocation: &str| AllocationRefundRequest {
        order: order_id.clone(),
        order_no: unique("TFZ"),
        allocation: allocation.to_owned(),
        senders,
    };
    refused(
        client
            .create_allocation_refund_plain(&give_back(vec![share(&r1, 301)], &allocation_id))
            .await,
        "退分账金额超出可退金额",
        "senders",
    );
    refused(
        client
            .create_allocation_refund_plain(&give_back(vec![share(&r1, 1)], &id(&failing)))
            .await,
        "原分账不存在或未成功",
        "extra[allocation]",
    );
    let req = give_back(vec![share(&r1, 100)], &allocation_id);
    let back = client.create_allocation_refund_plain(&req).await.unwrap();
    assert_eq!(back["object"], "allocation");
    assert_eq!(back["type"], "allocation_refund");
    assert_eq!(back["status"], "processing");
    assert_eq!(back["order_no"], req.order_no.as_str());
    assert_eq!(back["recipients"], json!([]));
    assert_eq!(back["senders"], json!([recipient(&r1, 100, Value::Null)]));
    assert_eq!(back["amount"], 100);
    assert_eq!(
        back["extra"],
        json!({ "allocation": allocation_id, "charge": charge })
    );
    // What is being given back can't be given back twice.
    refused(
        client
            .create_allocation_refund_plain(&give_back(vec![share(&r1, 201)], &allocation_id))
            .await,
        "退分账金额超出可退金额",
        "senders",
    );
    balances(400, 9_100, 300, 200, 0);
    let back = fake.succeed_allocation_refund(&id(&back));
    assert_eq!(back["status"], "succeed");
    assert_eq!(back["senders"][0]["status"], "succeed");
    assert_eq!(client.retrieve_allocation(&id(&back)).await.unwrap(), back);
    balances(500, 9_100, 200, 200, 0);
    assert_eq!(fake.allocations().len(), 3);

    // Completion: what is still held goes to the merchant.
    let req = AllocationCompleteRequest {
        order: order_id.clone(),
        order_no: unique("FI_"),
        description: Some("完结分账".into()),
    };
    let complete = client.create_allocation_complete_plain(&req).await.unwrap();
    let created = complete["created"].as_i64().unwrap();
    assert!(id(&complete).starts_with("6812") && id(&complete).len() == 19);
    assert_eq!(
        complete,
        json!({
            "id": id(&complete), "object": "allocation_complete", "livemode": true, "app": APP_ID,
            "order_no": req.order_no, "order": order_id, "status": "pending", "created": created,
            "time_succeeded": null, "extra": {}, "failure_msg": null, "metadata": {},
        })
    );
    refused(
        client
            .create_allocation_complete_plain(&AllocationCompleteRequest {
                order_no: unique("FI_"),
                ..req.clone()
            })
            .await,
        "订单已完结分账",
        "order",
    );
    refused(
        client
            .create_allocation_plain(&allocation(&order_id, vec![share(&r1, 1)]))
            .await,
        "订单已完结分账",
        "order",
    );
    balances(500, 9_100, 200, 200, 0);
    let completed = fake.complete_allocation_complete(&id(&complete));
    assert_eq!(completed["status"], "succeed");
    assert!(completed["time_succeeded"].is_i64());
    assert_eq!(
        client
            .retrieve_allocation_complete(&id(&complete))
            .await
            .unwrap(),
        completed
    );
    assert_eq!(fake.allocation_completes(), vec![completed]);
    balances(0, 9_100, 200, 200, 500);
    // Every fen is somewhere: 10000 in, 10000 out.
    assert_eq!(9_100 + 200 + 200 + 500, 10_000);
}

#[tokio::test]
async fn allocations_are_only_for_paid_allocation_orders() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (plain, uid, merchant_user) = paid_order(&fake, &client, 100, 100, false).await;
    assert_eq!(balance(&fake, &merchant_user), 100);
    refused(
        client
            .create_allocation_plain(&allocation(&id(&plain), vec![share(&uid, 1)]))
            .await,
        "订单不支持分账",
        "order",
    );
    let complete = AllocationCompleteRequest {
        order: id(&plain),
        order_no: unique("FI_"),
        description: None,
    };
    refused(
        client.create_allocation_complete_plain(&complete).await,
        "订单不支持分账",
        "order",
    );
    let sub_app = fake.orders()[0]["receipt_app"].as_str().unwrap().to_owned();
    let unpaid = client
        .create_order(&order(&uid, &sub_app, 5, true))
        .await
        .unwrap();
    refused(
        client
            .create_allocation_plain(&allocation(&id(&unpaid), vec![share(&uid, 1)]))
            .await,
        "订单不支持分账",
        "order",
    );
    // A failed completion leaves the order holding its money, and may be tried again.
    let (held_order, _, merchant_user) = paid_order(&fake, &client, 100, 100, true).await;
    let complete = AllocationCompleteRequest {
        order: id(&held_order),
        order_no: unique("FI_"),
        description: None,
    };
    let first = client
        .create_allocation_complete_plain(&complete)
        .await
        .unwrap();
    let failed = fake.fail_allocation_complete(&id(&first), "可分账金额为0，不能进行完结分账");
    assert_eq!(failed["status"], "failed");
    assert_eq!(fake.held(&id(&held_order)), 100);
    let again = AllocationCompleteRequest {
        order_no: unique("FI_"),
        ..complete
    };
    let second = client
        .create_allocation_complete_plain(&again)
        .await
        .unwrap();
    fake.complete_allocation_complete(&id(&second));
    assert_eq!(
        (fake.held(&id(&held_order)), balance(&fake, &merchant_user)),
        (0, 100)
    );
    assert!(fake.allocations().is_empty());
}

#[tokio::test]
async fn of_two_refunds_racing_for_the_last_fen_one_is_refused() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (paid, uid, merchant_user) = paid_order(&fake, &client, 100, 100, false).await;
    let order_id = id(&paid);
    let charge = paid["charge"].as_str().unwrap().to_owned();
    let most = client
        .create_order_refund(&order_id, &refund(&charge, 99))
        .await
        .unwrap();
    // Pending refunds count: only 1 fen is left.
    let (first, second) = (refund(&charge, 1), refund(&charge, 1));
    let (a, b) = tokio::join!(
        client.create_order_refund(&order_id, &first),
        client.create_order_refund(&order_id, &second),
    );
    let (won, lost) = match (a, b) {
        (Ok(won), lost @ Err(_)) | (lost @ Err(_), Ok(won)) => (won, lost),
        other => panic!("exactly one refund must win: {other:?}"),
    };
    refused(lost, "退款金额超出可退金额", "amount");
    fake.succeed_order_refund(&order_id, &id(&most));
    fake.succeed_order_refund(&order_id, &id(&won));
    let order_now = fake.order(&order_id).unwrap();
    assert_eq!(order_now["status"], "refunded");
    assert_eq!(order_now["amount_refunded"], 100);
    assert_eq!(order_now["charges"]["data"][0]["amount_refunded"], 100);
    assert_eq!(
        (balance(&fake, &uid), balance(&fake, &merchant_user)),
        (100, 0)
    );
    refused(
        client
            .create_order_refund(&order_id, &refund(&charge, 1))
            .await,
        "退款金额超出可退金额",
        "amount",
    );
    // Only the order's paid charge is refunded.
    refused(
        client
            .create_order_refund(&order_id, &refund("ch_other", 1))
            .await,
        "charge 不是该订单已支付的 charge",
        "charge",
    );
    assert_eq!(fake.order_refunds().len(), 2);
}

#[tokio::test]
async fn a_repeated_refund_is_the_same_refund_and_a_refused_one_is_found() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (paid, uid, _) = paid_order(&fake, &client, 100, 100, false).await;
    let order_id = id(&paid);
    let charge = paid["charge"].as_str().unwrap().to_owned();
    let req = refund(&charge, 10);

    // The first answer is lost: the retry is answered with the refund it made.
    fake.lose_next_answers_on("POST", "/refunds", 1);
    let made = client.create_order_refund(&order_id, &req).await.unwrap();
    assert_eq!(fake.order_refunds(), vec![made.clone()]);
    let refund_id = id(&made);
    assert!(refund_id.starts_with("2112") && refund_id.len() == 24);
    assert_eq!(
        made,
        json!({
            "id": refund_id, "object": "order_refund", "app": APP_ID,
            "created": made["created"], "livemode": true, "order_no": req.order_no,
            "amount": 10, "channel": "balance", "order": order_id, "charge": charge,
            "refund": null, "transaction_no": refund_id, "status": "pending",
            "description": "退货", "extra": {}, "metadata": {}, "failure_msg": null,
        })
    );
    assert_eq!(
        client.create_order_refund(&order_id, &req).await.unwrap(),
        made
    );
    let mut other = req.clone();
    other.amount = 11;
    let (status, _, param) = api_error(client.create_order_refund(&order_id, &other).await);
    assert_eq!((status, param.as_deref()), (400, Some("order_no")));

    let list = client.list_order_refunds(&order_id).await.unwrap();
    assert_eq!(
        list,
        json!({
            "object": "list", "url": format!("/v1/orders/{order_id}/refunds"),
            "has_more": false, "data": [made],
        })
    );
    // A Ping++ that refuses the repeat: the list finds what the first made.
    fake.refuse_reused_order_no();
    refused(
        client.create_order_refund(&order_id, &req).await,
        &format!("order_no {} 已被使用", req.order_no),
        "order_no",
    );
    assert_eq!(
        client
            .find_order_refund(&order_id, &req.order_no)
            .await
            .unwrap(),
        Some(made.clone())
    );
    assert_eq!(
        client
            .find_order_refund(&order_id, "TK_unknown")
            .await
            .unwrap(),
        None
    );

    let failed = fake.fail_order_refund(&order_id, &refund_id, "渠道退款失败");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure_msg"], "渠道退款失败");
    assert_eq!(
        client
            .retrieve_order_refund(&order_id, &refund_id)
            .await
            .unwrap(),
        failed
    );
    assert_eq!(balance(&fake, &uid), 0, "a failed refund moves nothing");
    // A refund is found only under its own order.
    let (status, _, _) = api_error(client.retrieve_order_refund("2012000", &refund_id).await);
    assert_eq!(status, 404);
    // The failed refund no longer counts against what is refundable.
    client
        .create_order_refund(&order_id, &refund(&charge, 100))
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_input_is_refused_before_sending_and_quotes_no_value() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let mut errors = Vec::new();
    let good = order("cus_1", "app_1", 1, true);
    let bad_orders: Vec<fn(&mut OrderRequest)> = vec![
        |o| o.merchant_order_no = String::new(),
        |o| o.merchant_order_no = "PO-secret".into(),
        |o| o.merchant_order_no = "P".repeat(65),
        |o| o.amount = 0,
        |o| o.client_ip = "300.1.1.1".into(),
        |o| o.client_ip = "secret".into(),
        |o| o.subject = String::new(),
        |o| o.subject = "秘".repeat(33),
        |o| o.body = "秘".repeat(129),
        |o| o.description = Some("秘".repeat(256)),
        |o| o.uid = "cus secret".into(),
        |o| o.receipt_app = "app/secret".into(),
        |o| o.time_expire = Some(0),
        |o| o.metadata = Some(json!(["secret"])),
    ];
    for change in bad_orders {
        let mut req = good.clone();
        change(&mut req);
        errors.push(client.create_order(&req).await.unwrap_err());
    }
    let bad_pays: Vec<fn(&mut OrderPayRequest)> = vec![
        |p| p.channel = String::new(),
        |p| p.channel = "bal secret".into(),
        |p| p.charge_amount = 0,
        |p| p.extra = Some(json!("secret")),
        |p| p.charge_order_no = Some("secret-1".into()),
        |p| p.time_expire = Some(-1),
    ];
    for change in bad_pays {
        let mut req = balance_pay(1);
        change(&mut req);
        errors.push(client.pay_order("2012", &req).await.unwrap_err());
    }
    let bad_refunds: Vec<fn(&mut OrderRefundRequest)> = vec![
        |r| r.order_no = "TK secret".into(),
        |r| r.amount = 0,
        |r| r.charge = "ch/secret".into(),
        |r| r.description = String::new(),
        |r| r.description = "秘".repeat(256),
    ];
    for change in bad_refunds {
        let mut req = refund("ch_1", 1);
        change(&mut req);
        errors.push(client.create_order_refund("2012", &req).await.unwrap_err());
    }
    let bad_allocations: Vec<fn(&mut AllocationRequest)> = vec![
        |a| a.order = "20/secret".into(),
        |a| a.order_no = "FZ secret".into(),
        |a| a.recipients.clear(),
        |a| a.recipients = (0..51).map(|_| share("u_1", 1)).collect(),
        |a| a.recipients[0].user = "u secret".into(),
        |a| a.recipients[0].amount = 0,
        |a| a.recipients[0].description = Some("秘".repeat(256)),
    ];
    for change in bad_allocations {
        let mut req = allocation("2012", vec![share("u_1", 1)]);
        change(&mut req);
        errors.push(client.create_allocation_plain(&req).await.unwrap_err());
    }
    let good_back = AllocationRefundRequest {
        order: "2012".into(),
        order_no: "TFZ_1".into(),
        allocation: "3712".into(),
        senders: vec![share("u_1", 1)],
    };
    let bad_backs: Vec<fn(&mut AllocationRefundRequest)> = vec![
        |a| a.allocation = "secret!".into(),
        |a| a.order_no = String::new(),
        |a| a.senders.clear(),
        |a| a.senders[0].amount = 0,
    ];
    for change in bad_backs {
        let mut req = good_back.clone();
        change(&mut req);
        errors.push(
            client
                .create_allocation_refund_plain(&req)
                .await
                .unwrap_err(),
        );
    }
    let good_complete = AllocationCompleteRequest {
        order: "2012".into(),
        order_no: "FI_1".into(),
        description: None,
    };
    let bad_completes: Vec<fn(&mut AllocationCompleteRequest)> = vec![
        |c| c.order = String::new(),
        |c| c.order_no = "FI secret".into(),
        |c| c.description = Some("秘".repeat(256)),
    ];
    for change in bad_completes {
        let mut req = good_complete.clone();
        change(&mut req);
        errors.push(
            client
                .create_allocation_complete_plain(&req)
                .await
                .unwrap_err(),
        );
    }
    for bad_id in ["", "20/12", "../secret", "2012 secret"] {
        errors.push(client.retrieve_order(bad_id).await.unwrap_err());
        errors.push(
            client
                .retrieve_order_refund(bad_id, "2112")
                .await
                .unwrap_err(),
        );
        errors.push(
            client
                .retrieve_order_refund("2012", bad_id)
                .await
                .unwrap_err(),
        );
        errors.push(client.list_order_refunds(bad_id).await.unwrap_err());
        errors.push(client.find_order_refund(bad_id, "TK_1").await.unwrap_err());
        errors.push(client.retrieve_allocation(bad_id).await.unwrap_err());
        errors.push(
            client
                .retrieve_allocation_complete(bad_id)
                .await
                .unwrap_err(),
        );
    }
    assert_eq!(fake.requests(), 0);
    for error in &errors {
        assert!(matches!(error, PingppError::InvalidInput(_)), "{error:?}");
        let shown = format!("{error} {error:?}");
        for value in ["secret", "秘", "300.1"] {
            assert!(!shown.contains(value), "{shown}");
        }
    }
}

/// Every endpoint is counted under its own name. The client runs on a thread of its own with
/// a recorder local to it, so other tests' calls do not count here.
#[test]
fn each_endpoint_is_metered_under_its_own_name() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakePingpp::start(None));
    let setup = client(&fake);
    let (paid, uid, _) = runtime.block_on(paid_order(&fake, &setup, 10, 10, true));
    let client = client(&fake);
    let order_id = id(&paid);
    let charge = paid["charge"].as_str().unwrap().to_owned();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let local = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        local.block_on(async {
            let sub_app = paid["receipt_app"].as_str().unwrap();
            let unpaid = client
                .create_order(&order(&uid, sub_app, 1, false))
                .await
                .unwrap();
            client.retrieve_order(&id(&unpaid)).await.unwrap();
            client
                .pay_order(&id(&unpaid), &balance_pay(1))
                .await
                .unwrap_err();
            let req = refund(&charge, 1);
            let made = client.create_order_refund(&order_id, &req).await.unwrap();
            client
                .retrieve_order_refund(&order_id, &id(&made))
                .await
                .unwrap();
            client.list_order_refunds(&order_id).await.unwrap();
            client
                .find_order_refund(&order_id, &req.order_no)
                .await
                .unwrap();
            let shared = client
                .create_allocation_plain(&allocation(&order_id, vec![share(&uid, 2)]))
                .await
                .unwrap();
            client.retrieve_allocation(&id(&shared)).await.unwrap();
            fake.succeed_allocation(&id(&shared));
            client
                .create_allocation_refund_plain(&AllocationRefundRequest {
                    order: order_id.clone(),
                    order_no: unique("TFZ"),
                    allocation: id(&shared),
                    senders: vec![share(&uid, 1)],
                })
                .await
                .unwrap();
            let complete = client
                .create_allocation_complete_plain(&AllocationCompleteRequest {
                    order: order_id.clone(),
                    order_no: unique("FI_"),
                    description: None,
                })
                .await
                .unwrap();
            client
                .retrieve_allocation_complete(&id(&complete))
                .await
                .unwrap();
        })
    });
    let text = handle.render();
    for endpoint in [
        "create_order",
        "retrieve_order",
        "create_order_refund",
        "retrieve_order_refund",
        "list_order_refunds",
        "find_order_refund",
        "create_allocation",
        "retrieve_allocation",
        "create_allocation_refund",
        "create_allocation_complete",
        "retrieve_allocation_complete",
    ] {
        let ok = format!("pluspay_pingpp_requests_total{{endpoint=\"{endpoint}\",outcome=\"ok\"}}");
        let count = text.lines().find(|l| l.starts_with(&ok));
        assert_eq!(
            count.and_then(|l| l.rsplit(' ').next()),
            Some("1"),
            "{endpoint}: {text}"
        );
    }
    // The buyer spent everything on the first order.
    let refused = "pluspay_pingpp_requests_total{endpoint=\"pay_order\",outcome=\"api_error\"} 1";
    assert!(text.contains(refused), "{text}");
}

/// Whatever arrives, the fake answers a Ping++ error (never a panic, which would drop the
/// connection).
#[tokio::test]
async fn the_fake_answers_bad_requests_with_ping_plus_plus_errors() {
    let fake = FakePingpp::start(None).await;
    let client = client(&fake);
    let (paid, _, _) = paid_order(&fake, &client, 10, 10, true).await;
    let order_id = id(&paid);
    let http = reqwest::Client::new();
    let base = format!("{}/v1", fake.url());
    let bodies = [
        "",
        "not json",
        "[]",
        "null",
        r#"{"unknown": true}"#,
        r#"{"app": 1}"#,
        r#"{"app": "app_other"}"#,
        r#"{"order_no": 7, "amount": -1, "charge": null}"#,
        r#"{"order_no": "TK1", "amount": 1.5, "charge": "ch_1", "description": "x"}"#,
        r#"{"channel": "balance", "charge_amount": "10"}"#,
        r#"{"channel": 1, "charge_amount": 10}"#,
        r#"{"channel": "balance", "charge_amount": 10, "extra": []}"#,
    ];
    let with_app =
        |extra: &str| format!(r#"{{"app": "{APP_ID}", "order": "{order_id}", {extra}}}"#);
    let app_bodies = [
        with_app(r#""order_no": "X1", "recipients": "all""#),
        with_app(r#""order_no": "X2", "recipients": [1]"#),
        with_app(r#""order_no": "X3", "recipients": [{"user": "u", "amount": 0}]"#),
        with_app(r#""order_no": "X4", "recipients": [{"user": "u", "amount": 1, "x": 1}]"#),
        with_app(r#""order_no": "X5", "senders": [], "extra": {"allocation": 1}"#),
        with_app(r#""order_no": "X6", "senders": [{"user": "u", "amount": 1}], "extra": "x""#),
        with_app(r#""order_no": "X 7", "description": 5"#),
        with_app(r#""order_no": "X8", "description": 5"#),
    ];
    let all: Vec<String> = bodies
        .iter()
        .map(|b| b.to_string())
        .chain(app_bodies)
        .collect();
    for path in [
        format!("{base}/orders"),
        format!("{base}/orders/{order_id}/pay"),
        format!("{base}/orders/{order_id}/refunds"),
        format!("{base}/allocations"),
        format!("{base}/allocation_refunds"),
        format!("{base}/allocation_completes"),
    ] {
        for body in &all {
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
        "orders/",
        "orders/1/x",
        "orders//refunds",
        "orders/1/refunds/2/3",
        "allocations/",
        "allocation_completes/a/b",
        "allocation_refunds/1",
    ] {
        let response = http
            .get(format!("{base}/{path}"))
            .bearer_auth(SECRET_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    assert_eq!(fake.orders().len(), 1);
    assert!(fake.order_refunds().is_empty());
    assert!(fake.allocations().is_empty());
    assert!(fake.allocation_completes().is_empty());
}
