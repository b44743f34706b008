//! Charges: the channels and fields the fake takes, creating one, and its credential.

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use super::{
    answer, error, invalid, now, random_alnum, random_digits, Answer, Refusal, Shared, APP_ID,
};

/// Channels the fake accepts, with the `extra` field each requires (Ping++'s own rules).
const CHANNELS: &[(&str, Option<&str>)] = &[
    ("applepay_upacp", None),
    ("alipay", None),
    ("alipay_wap", Some("success_url")),
    ("alipay_pc_direct", Some("success_url")),
    ("alipay_qr", None),
    ("wx", None),
    ("wx_wap", None),
    ("wx_pub", Some("open_id")),
    ("wx_pub_qr", Some("product_id")),
    ("wx_lite", Some("open_id")),
    ("upacp", None),
    ("upacp_pc", Some("result_url")),
    ("upacp_wap", Some("result_url")),
];

const CHARGE_FIELDS: &[&str] = &[
    "order_no",
    "app",
    "channel",
    "amount",
    "client_ip",
    "currency",
    "subject",
    "body",
    "extra",
    "time_expire",
    "metadata",
    "description",
];

/// What `failure_code` an expired charge shows (the fake's choice; Ping++ documents none).
pub const EXPIRED_CODE: &str = "charge_expired";

pub(super) fn create_charge(shared: &Shared, body: &[u8]) -> Answer {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return error(400, "invalid_request_error", "请求体不是 JSON 对象", None),
    };
    if let Err(refused) = validate_charge(&request) {
        return refused.answer();
    }
    let order_no = request["order_no"].as_str().unwrap().to_owned();
    let request = Value::Object(request);
    let mut state = shared.state();
    // Like Ping++: the same order_no with the same parameters is the same charge.
    if let Some((id, original)) = state.by_order_no.get(&order_no) {
        if state.refuse_reused_order_no {
            return invalid(format!("order_no {order_no} 已被使用"), "order_no").answer();
        }
        return if *original == request {
            answer(200, &state.charges[id])
        } else {
            invalid(
                format!("订单号 {order_no} 已存在，且参数与已有 charge 不一致"),
                "order_no",
            )
            .answer()
        };
    }
    let charge = new_charge(&request);
    let id = charge["id"].as_str().unwrap().to_owned();
    state.by_order_no.insert(order_no, (id.clone(), request));
    state.order.push(id.clone());
    state.charges.insert(id, charge.clone());
    answer(200, &charge)
}

pub(super) fn validate_charge(request: &Map<String, Value>) -> Result<(), Refusal> {
    if let Some(unknown) = request
        .keys()
        .find(|k| !CHARGE_FIELDS.contains(&k.as_str()))
    {
        return Err(invalid(format!("不支持的参数: {unknown}"), unknown));
    }
    let text = |name: &str| request.get(name).and_then(Value::as_str);
    let missing = |name: &str| invalid(format!("缺少参数: {name}"), name);
    let order_no = text("order_no").ok_or_else(|| missing("order_no"))?;
    if !(8..=20).contains(&order_no.len()) || !order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("order_no 须为 8 到 20 位字母或数字", "order_no"));
    }
    let app = request
        .get("app")
        .and_then(|a| a.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| missing("app"))?;
    if app != APP_ID {
        return Err(invalid(format!("app 不存在: {app}"), "app"));
    }
    let channel = text("channel").ok_or_else(|| missing("channel"))?;
    let Some((_, required_extra)) = CHANNELS.iter().find(|(c, _)| *c == channel) else {
        return Err(invalid(format!("不支持的渠道: {channel}"), "channel"));
    };
    match request.get("amount").and_then(Value::as_u64) {
        Some(1..=1_000_000_000) => {}
        Some(_) => return Err(invalid("amount 须在 1 到 1000000000 之间", "amount")),
        None => return Err(invalid("amount 须为正整数", "amount")),
    }
    let client_ip = text("client_ip").ok_or_else(|| missing("client_ip"))?;
    if client_ip.parse::<Ipv4Addr>().is_err() {
        return Err(invalid("client_ip 须为 IPv4 地址", "client_ip"));
    }
    if text("currency") != Some("cny") {
        return Err(invalid("currency 只支持 cny", "currency"));
    }
    for (name, max) in [("subject", 32), ("body", 128)] {
        let value = text(name).ok_or_else(|| missing(name))?;
        if value.is_empty() || value.chars().count() > max {
            return Err(invalid(
                format!("{name} 长度须在 1 到 {max} 个字符之间"),
                name,
            ));
        }
    }
    let extra = match request.get("extra") {
        None => None,
        Some(Value::Object(extra)) => Some(extra),
        Some(_) => return Err(invalid("extra 须为对象", "extra")),
    };
    if let Some(field) = required_extra {
        if extra
            .and_then(|e| e.get(*field))
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(invalid(
                format!("渠道 {channel} 缺少参数 extra[{field}]"),
                &format!("extra[{field}]"),
            ));
        }
    }
    if let Some(expire) = request.get("time_expire") {
        let max_days = if channel.starts_with("wx") { 7 } else { 15 };
        let created = now();
        match expire.as_i64() {
            Some(t) if t >= created + 60 && t <= created + max_days * 86_400 => {}
            _ => {
                return Err(invalid(
                    format!("time_expire 须在创建后 1 分钟到 {max_days} 天之间"),
                    "time_expire",
                ))
            }
        }
    }
    if request.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(invalid("metadata 须为对象", "metadata"));
    }
    match request.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.chars().count() <= 255 => {}
        Some(_) => return Err(invalid("description 最长 255 个字符", "description")),
    }
    Ok(())
}

pub(super) fn new_charge(request: &Value) -> Value {
    let id = format!("ch_{}", random_alnum(24));
    let created = now();
    let channel = request["channel"].as_str().unwrap();
    let amount = request["amount"].as_u64().unwrap();
    // Ping++'s defaults: one day, two hours for WeChat.
    let default_expiry = if channel.starts_with("wx") {
        7_200
    } else {
        86_400
    };
    let extra = request.get("extra").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": id,
        "object": "charge",
        "created": created,
        "livemode": false,
        "paid": false,
        "refunded": false,
        "reversed": false,
        "app": APP_ID,
        "channel": channel,
        "order_no": request["order_no"],
        "client_ip": request["client_ip"],
        "amount": amount,
        "amount_settle": amount,
        "currency": "cny",
        "subject": request["subject"],
        "body": request["body"],
        "extra": extra,
        "time_paid": null,
        "time_expire": request.get("time_expire").cloned().unwrap_or(json!(created + default_expiry)),
        "time_settle": null,
        "transaction_no": null,
        "refunds": {
            "object": "list",
            "url": format!("/v1/charges/{id}/refunds"),
            "has_more": false,
            "data": [],
        },
        "amount_refunded": 0,
        "failure_code": null,
        "failure_msg": null,
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
        "credential": {
            "object": "credential",
            channel: credential(channel, request, amount, &extra),
        },
        "description": request.get("description").cloned().unwrap_or(Value::Null),
    })
}

/// What the client needs to open the channel's payment UI, in each channel's shape.
fn credential(channel: &str, request: &Value, amount: u64, extra: &Value) -> Value {
    let order_no = request["order_no"].as_str().unwrap();
    let subject = request["subject"].as_str().unwrap();
    let yuan = format!("{}.{:02}", amount / 100, amount % 100);
    let prepay_id = format!("wx{}", random_digits(30));
    let nonce = random_alnum(32);
    let timestamp = now().to_string();
    let sign = random_alnum(32);
    match channel {
        "applepay_upacp" => {
            json!({ "tn": random_digits(21), "mode": "01", "merchant_id": "merchant.com.example.fake" })
        }
        "upacp" => json!({ "tn": random_digits(21), "mode": "01" }),
        "upacp_pc" | "upacp_wap" => json!({
            "version": "5.1.0", "encoding": "UTF-8", "txnType": "01", "txnSubType": "01",
            "channelType": if channel == "upacp_pc" { "07" } else { "08" },
            "merId": "777290058110048", "orderId": order_no, "txnAmt": amount.to_string(),
            "currencyCode": "156", "frontUrl": extra["result_url"],
            "signature": sign,
        }),
        "alipay" => json!({
            "orderInfo": format!(
                "_input_charset=\"utf-8\"&body=\"{}\"&out_trade_no=\"{order_no}\"&partner=\"2088000000000000\"&payment_type=\"1\"&service=\"mobile.securitypay.pay\"&subject=\"{subject}\"&total_fee=\"{yuan}\"&sign=\"{sign}\"&sign_type=\"RSA\"",
                request["body"].as_str().unwrap()
            ),
        }),
        "alipay_wap" | "alipay_pc_direct" => json!({
            "channel_url": "https://mapi.alipay.com/gateway.do",
            "service": if channel == "alipay_wap" { "alipay.wap.create.direct.pay.by.user" } else { "create_direct_pay_by_user" },
            "_input_charset": "utf-8",
            "partner": "2088000000000000",
            "out_trade_no": order_no,
            "subject": subject,
            "total_fee": yuan,
            "payment_type": "1",
            "return_url": extra["success_url"],
            "sign": sign,
            "sign_type": "RSA",
        }),
        "alipay_qr" => json!(format!("https://qr.alipay.com/bax0{}", random_alnum(20))),
        "wx" => json!({
            "appId": "wxfake0000000000", "partnerId": "1230000000", "prepayId": prepay_id,
            "nonceStr": nonce, "timeStamp": timestamp, "packageValue": "Sign=WXPay", "sign": sign,
        }),
        "wx_pub" | "wx_lite" => json!({
            "appId": "wxfake0000000000", "timeStamp": timestamp, "nonceStr": nonce,
            "package": format!("prepay_id={prepay_id}"), "signType": "MD5", "paySign": sign,
        }),
        "wx_pub_qr" => json!(format!("weixin://wxpay/bizpayurl?pr={}", random_alnum(7))),
        "wx_wap" => json!(format!(
            "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay_id}&package={}",
            random_digits(10)
        )),
        _ => json!({}),
    }
}
