//! The account system, spending (`/v1/orders`, `/v1/allocations`, `/v1/allocation_refunds`,
//! `/v1/allocation_completes`): a buyer's order to a sub-merchant, its payment, refunds, and
//! for allocation orders the sharing of its takings among users, in the shapes of the
//! account-system document's examples.
//!
//! Money moves between the users the fake already has (`users`, balances in fen) and, for an
//! allocation order, what the order itself holds (`held`) until it is allocated or the
//! allocation completed. Test controls play the channel's part: paying, deciding refunds,
//! allocations and completions.

use std::collections::HashMap;
use std::net::IpAddr;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::accounts::{is_plain, json_object, not_found, required, unrecognized};
use super::lists::page;
use super::{
    answer, invalid, now, random_alnum, random_digits, Answer, FakePingpp, Refusal, Shared, State,
    APP_ID,
};

/// The channels an order may be paid with (the document's list for 消费订单支付).
const CHANNELS: &[&str] = &[
    "balance",
    "yeepay_alipay_lite",
    "yeepay_alipay_pub",
    "yeepay_alipay_qr",
    "yeepay_alipay_scan",
    "yeepay_upacp_qr",
    "yeepay_upacp_scan",
    "yeepay_wx_lite",
    "yeepay_wx_lite_ofl",
    "yeepay_wx_pub",
    "yeepay_wx_pub_ofl",
    "yeepay_wx_pub_qr",
    "yeepay_wx_pub_scan",
    "yeepay_wx_pub_scan_ofl",
];

/// The most users one allocation (or allocation refund) may name.
const MAX_SHARES: usize = 50;
/// Above any real amount, low enough that sums of them never overflow.
const MAX_AMOUNT: u64 = 1_000_000_000_000;
const DAY: i64 = 86_400;

/// `path` if it is one of ours, else `None` (the caller routes it on).
pub(super) fn orders_route(
    shared: &Shared,
    method: &Method,
    path: &str,
    uri: &str,
    body: &[u8],
) -> Option<Answer> {
    let segments: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
    let collection = *segments.first()?;
    if !matches!(
        collection,
        "orders" | "allocations" | "allocation_refunds" | "allocation_completes"
    ) {
        return None;
    }
    if segments.iter().skip(1).any(|s| !is_plain(s)) {
        return Some(unrecognized(method, collection));
    }
    let outcome = match (method, segments.as_slice()) {
        (&Method::POST, ["orders"]) => create_order(shared, body),
        (&Method::GET, ["orders", id]) => Ok(found(shared.state().orders.get(*id), "order", id)),
        (&Method::POST, ["orders", id, "pay"]) => pay(shared, id, body),
        (&Method::POST, ["orders", id, "refunds"]) => create_order_refund(shared, id, body),
        (&Method::GET, ["orders", id, "refunds"]) => Ok(list_order_refunds(shared, id, uri)),
        (&Method::GET, ["orders", id, "refunds", refund]) => {
            let state = shared.state();
            let refund_of_order = state
                .order_refunds
                .get(*refund)
                .filter(|r| r["order"] == *id);
            Ok(found(refund_of_order, "order_refund", refund))
        }
        (&Method::POST, ["allocations"]) => create_allocation(shared, body),
        (&Method::GET, ["allocations", id]) => {
            Ok(found(shared.state().allocations.get(*id), "allocation", id))
        }
        (&Method::POST, ["allocation_refunds"]) => create_allocation_refund(shared, body),
        (&Method::POST, ["allocation_completes"]) => create_allocation_complete(shared, body),
        (&Method::GET, ["allocation_completes", id]) => Ok(found(
            shared.state().allocation_completes.get(*id),
            "allocation_complete",
            id,
        )),
        _ => Ok(unrecognized(method, collection)),
    };
    Some(outcome.unwrap_or_else(Refusal::answer))
}

fn found(object: Option<&Value>, name: &str, id: &str) -> Answer {
    match object {
        Some(object) => answer(200, object),
        None => not_found(name, id),
    }
}

/// An order number or an id: 1 to 64 letters, digits and `_`.
fn token<'a>(request: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refusal> {
    let value = required(request, name)?;
    if value.len() > 64 || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid(
            format!("{name} 须为 64 位以内的字母、数字或下划线"),
            name,
        ));
    }
    Ok(value)
}

/// A positive integer number of fen.
fn amount(request: &Map<String, Value>, name: &str) -> Result<i64, Refusal> {
    match request.get(name).and_then(Value::as_u64) {
        Some(a) if (1..=MAX_AMOUNT).contains(&a) => Ok(a as i64),
        _ => Err(invalid(format!("{name} 须为正整数"), name)),
    }
}

/// A string of at most `max` characters, or nothing.
fn optional_text(
    request: &Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<String>, Refusal> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{name} 须为 {max} 字以内的字符串"), name)),
    }
}

/// A required string of 1 to `max` characters.
fn text<'a>(request: &'a Map<String, Value>, name: &str, max: usize) -> Result<&'a str, Refusal> {
    let value = required(request, name)?;
    if value.chars().count() > max {
        return Err(invalid(format!("{name} 须为 {max} 字以内"), name));
    }
    Ok(value)
}

fn metadata(request: &Map<String, Value>) -> Result<Value, Refusal> {
    match request.get("metadata") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(m @ Value::Object(_)) => Ok(m.clone()),
        Some(_) => Err(invalid("metadata 须为对象", "metadata")),
    }
}

fn check_app(request: &Map<String, Value>) -> Result<(), Refusal> {
    if required(request, "app")? != APP_ID {
        return Err(invalid("app 不存在", "app"));
    }
    Ok(())
}

/// The object an earlier create under `order_no` made, when this is a repeat: the same
/// request answers it as it is now (as charges are), another (or any, once the fake refuses
/// reused numbers) is refused.
fn repeat(
    refuse_reused: bool,
    param: &str,
    by_order_no: &HashMap<String, (String, Value)>,
    objects: &HashMap<String, Value>,
    order_no: &str,
    request: &Value,
) -> Option<Result<Answer, Refusal>> {
    let (id, original) = by_order_no.get(order_no)?;
    if refuse_reused {
        return Some(Err(invalid(format!("{param} {order_no} 已被使用"), param)));
    }
    Some(match objects.get(id) {
        Some(object) if original == request => Ok(answer(200, object)),
        _ => Err(invalid(
            format!("订单号 {order_no} 已存在，且参数与已有对象不一致"),
            param,
        )),
    })
}

/// One user's part of an allocation or an allocation refund.
struct Share {
    user: String,
    amount: i64,
    description: Value,
}

/// `recipients` or `senders`: 1 to [`MAX_SHARES`] `{user, amount, description?}`.
fn shares(request: &Map<String, Value>, name: &str) -> Result<Vec<Share>, Refusal> {
    let Some(Value::Array(items)) = request.get(name) else {
        return Err(invalid(format!("缺少参数: {name}"), name));
    };
    if items.is_empty() || items.len() > MAX_SHARES {
        return Err(invalid(format!("{name} 须为 1 到 {MAX_SHARES} 个"), name));
    }
    items
        .iter()
        .map(|item| {
            let Value::Object(item) = item else {
                return Err(invalid(format!("{name} 的每一项须为对象"), name));
            };
            let param = |field: &str| format!("{name}[{field}]");
            if let Some(unknown) = item
                .keys()
                .find(|k| !["user", "amount", "description"].contains(&k.as_str()))
            {
                return Err(invalid(format!("不支持的参数: {unknown}"), &param(unknown)));
            }
            let user = required(item, "user")
                .map_err(|_| invalid(format!("缺少参数: {}", param("user")), &param("user")))?;
            let amount = amount(item, "amount").map_err(|_| {
                invalid(format!("{} 须为正整数", param("amount")), &param("amount"))
            })?;
            let description = optional_text(item, "description", 255)
                .map_err(|_| invalid("description 须为 255 字以内", &param("description")))?;
            Ok(Share {
                user: user.to_owned(),
                amount,
                description: json!(description),
            })
        })
        .collect()
}

/// Each user's total in `shares` (a user may be named twice).
fn totals(shares: &[Share]) -> HashMap<&str, i64> {
    let mut totals = HashMap::new();
    for share in shares {
        *totals.entry(share.user.as_str()).or_insert(0) += share.amount;
    }
    totals
}

/// The shares as an allocation shows them, all `processing`.
fn shares_shown(shares: &[Share]) -> Value {
    shares
        .iter()
        .map(|s| {
            json!({
                "user": s.user,
                "amount": s.amount,
                "description": s.description,
                "status": "processing",
                "time_succeeded": null,
                "failure_code": null,
                "failure_msg": null,
            })
        })
        .collect()
}

fn int(value: &Value, field: &str) -> i64 {
    value[field].as_i64().unwrap_or(0)
}

impl State {
    /// The business user of a sub_app whose merchant application completed: who an order to
    /// it is paid to.
    fn merchant_of(&self, receipt_app: &str) -> Option<String> {
        let user = self.sub_apps.get(receipt_app)?["user"].as_str()?;
        self.merchant_applications
            .values()
            .any(|a| a["user"] == user && a["status"] == "completed")
            .then(|| user.to_owned())
    }

    /// The products of the sub-merchant's completed application that are order channels.
    fn merchant_channels(&self, merchant: &str) -> Vec<String> {
        let mut channels = Vec::new();
        for application in self.merchant_applications.values() {
            if application["user"] != merchant || application["status"] != "completed" {
                continue;
            }
            for product in application["products"].as_array().into_iter().flatten() {
                if let Some(p) = product.as_str().filter(|p| CHANNELS.contains(p)) {
                    if !channels.iter().any(|c| c == p) && p != "balance" {
                        channels.push(p.to_owned());
                    }
                }
            }
        }
        channels
    }

    /// Whether the user's personal account (e-wallet) is open: an application succeeded.
    fn has_wallet(&self, user: &str) -> bool {
        self.cus_applications
            .values()
            .any(|a| a["user"] == user && a["status"] == "succeeded")
    }

    fn order_refunds_of<'a>(&'a self, order_id: &'a str) -> impl Iterator<Item = &'a Value> {
        self.order_refund_order
            .iter()
            .filter_map(|id| self.order_refunds.get(id))
            .filter(move |r| r["order"] == order_id)
    }

    fn allocations_of<'a>(
        &'a self,
        order_id: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a Value> {
        self.allocation_order
            .iter()
            .filter_map(|id| self.allocations.get(id))
            .filter(move |a| a["order"] == order_id && a["type"] == kind)
    }

    /// Refunds of the order not yet decided: their money must stay refundable.
    fn pending_refunds(&self, order_id: &str) -> i64 {
        self.order_refunds_of(order_id)
            .filter(|r| r["status"] == "pending")
            .map(|r| int(r, "amount"))
            .sum()
    }

    /// What may still be refunded of the order: paid, less refunds succeeded or pending, less
    /// (for an allocation order) what went to recipients and did not come back.
    fn refundable(&self, order_id: &str) -> i64 {
        let Some(order) = self.orders.get(order_id) else {
            return 0;
        };
        let refunded: i64 = self
            .order_refunds_of(order_id)
            .filter(|r| matches!(r["status"].as_str(), Some("pending" | "succeeded")))
            .map(|r| int(r, "amount"))
            .sum();
        let mut refundable = int(order, "amount_paid") - refunded;
        if order["allocation"] == true {
            let allocated: i64 = self
                .allocations_of(order_id, "allocation")
                .filter(|a| matches!(a["status"].as_str(), Some("processing" | "succeed")))
                .map(|a| int(a, "amount"))
                .sum();
            let back: i64 = self
                .allocations_of(order_id, "allocation_refund")
                .filter(|a| a["status"] == "succeed")
                .map(|a| int(a, "amount"))
                .sum();
            refundable -= allocated - back;
        }
        refundable
    }

    /// The order's allocation completed: what it gets back from then on is the merchant's.
    fn completed(&self, order_id: &str) -> bool {
        self.allocation_completes
            .values()
            .any(|c| c["order"] == order_id && c["status"] == "succeed")
    }

    /// A completion on its way or done: no allocation, nor another completion, may follow.
    fn completing(&self, order_id: &str) -> bool {
        self.allocation_completes.values().any(|c| {
            c["order"] == order_id && matches!(c["status"].as_str(), Some("pending" | "succeed"))
        })
    }

    /// Money coming back to an allocation order (a failed allocation, a succeeded allocation
    /// refund): held again, or the merchant's if the allocation already completed.
    fn give_back(&mut self, order_id: &str, amount: i64) {
        if self.completed(order_id) {
            let merchant = self
                .orders
                .get(order_id)
                .and_then(|o| o["receipt_app"].as_str())
                .and_then(|app| self.merchant_of(app));
            if let Some(merchant) = merchant {
                self.add_to_balance(&merchant, amount);
            }
        } else {
            *self.held.entry(order_id.to_owned()).or_insert(0) += amount;
        }
    }
}

const ORDER_FIELDS: &[&str] = &[
    "app",
    "merchant_order_no",
    "amount",
    "currency",
    "client_ip",
    "subject",
    "body",
    "uid",
    "time_expire",
    "receipt_app",
    "description",
    "allocation",
    "metadata",
];

/// An order, `created` and unpaid. The fake asks for `uid` and `receipt_app`, which the
/// document lets default (to user "0" and to the app itself): orders here are always a
/// user's to a sub-merchant.
fn create_order(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, ORDER_FIELDS)?;
    check_app(&request)?;
    let merchant_order_no = token(&request, "merchant_order_no")?;
    let amount = amount(&request, "amount")?;
    if required(&request, "currency")? != "cny" {
        return Err(invalid("currency 仅支持 cny", "currency"));
    }
    let client_ip = required(&request, "client_ip")?;
    if client_ip.parse::<IpAddr>().is_err() {
        return Err(invalid("client_ip 须为 IPv4 或 IPv6 地址", "client_ip"));
    }
    let subject = text(&request, "subject", 32)?;
    let order_body = text(&request, "body", 128)?;
    let uid = required(&request, "uid")?;
    let receipt_app = required(&request, "receipt_app")?;
    let description = optional_text(&request, "description", 255)?;
    let allocation = match request.get("allocation") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("allocation 须为布尔值", "allocation")),
    };
    let metadata = metadata(&request)?;
    let created = now();
    // The document: 1 minute to 7 days after creation, 1 day by default.
    let time_expire = match request.get("time_expire") {
        None | Some(Value::Null) => created + DAY,
        Some(t) => match t.as_i64() {
            Some(t) if (created + 60..=created + 7 * DAY).contains(&t) => t,
            _ => {
                return Err(invalid(
                    "time_expire 须在创建后 1 分钟到 7 天之间",
                    "time_expire",
                ))
            }
        },
    };
    let request_value = Value::Object(request.clone());
    let mut state = shared.state();
    if let Some(outcome) = repeat(
        state.refuse_reused_order_no,
        "merchant_order_no",
        &state.order_by_merchant_order_no,
        &state.orders,
        merchant_order_no,
        &request_value,
    ) {
        return outcome;
    }
    if !state.users.contains_key(uid) {
        return Err(invalid("用户不存在", "uid"));
    }
    let Some(merchant) = state.merchant_of(receipt_app) else {
        return Err(invalid("收款方子商户未开户", "receipt_app"));
    };
    let mut methods = vec!["balance".to_owned()];
    methods.extend(state.merchant_channels(&merchant));
    let id = format!("2012{}", random_digits(15));
    let order = json!({
        "id": id,
        "object": "order",
        "created": created,
        "livemode": true,
        "paid": false,
        "refunded": false,
        "status": "created",
        "app": APP_ID,
        "uid": uid,
        "merchant_order_no": merchant_order_no,
        "amount": amount,
        "amount_refunded": 0,
        "amount_paid": 0,
        "currency": "cny",
        "subject": subject,
        "body": order_body,
        "client_ip": client_ip,
        "time_paid": null,
        "time_expire": time_expire,
        "charge": null,
        "description": description,
        "metadata": metadata,
        "charge_essentials": {},
        "receipt_app": receipt_app,
        "available_methods": methods,
        "allocation": allocation,
        "charges": { "object": "list", "url": "/v1/charges", "has_more": false, "data": [] },
    });
    state
        .order_by_merchant_order_no
        .insert(merchant_order_no.to_owned(), (id.clone(), request_value));
    state.order_order.push(id.clone());
    state.orders.insert(id, order.clone());
    Ok(answer(200, &order))
}

const PAY_FIELDS: &[&str] = &[
    "app",
    "charge_amount",
    "channel",
    "extra",
    "charge_order_no",
    "time_expire",
];

/// A charge for what is unpaid of a `created` order; the order stays `created` until the
/// [`FakePingpp::pay_order`] control. Each call makes a new charge, the order's `charge`.
fn pay(shared: &Shared, order_id: &str, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, PAY_FIELDS)?;
    let channel = required(&request, "channel")?;
    if !CHANNELS.contains(&channel) {
        return Err(invalid("不支持的支付渠道", "channel"));
    }
    let charge_amount = amount(&request, "charge_amount")?;
    let mut extra = match request.get("extra") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(extra)) => extra.clone(),
        Some(_) => return Err(invalid("extra 须为对象", "extra")),
    };
    let charge_order_no = match request.get("charge_order_no") {
        None | Some(Value::Null) => None,
        Some(_) => Some(token(&request, "charge_order_no")?.to_owned()),
    };
    let created = now();
    let time_expire = match request.get("time_expire") {
        None | Some(Value::Null) => created + DAY,
        Some(t) => match t.as_i64() {
            Some(t) if t > created => t,
            _ => return Err(invalid("time_expire 须为将来的时间", "time_expire")),
        },
    };
    let mut state = shared.state();
    let Some(order) = state.orders.get(order_id) else {
        return Ok(not_found("order", order_id));
    };
    if order["status"] != "created" {
        return Err(invalid("订单状态不可支付", "order_id"));
    }
    if charge_amount != int(order, "amount") - int(order, "amount_paid") {
        return Err(invalid("支付金额须等于订单待付金额", "charge_amount"));
    }
    let uid = order["uid"].as_str().unwrap_or_default().to_owned();
    if channel == "balance" {
        let balance = state
            .users
            .get(&uid)
            .map_or(0, |u| int(u, "available_balance"));
        if !state.has_wallet(&uid) || balance < charge_amount {
            return Err(invalid("余额不足", "charge_amount"));
        }
        extra.insert("user".into(), json!(uid));
    }
    let charge_id = format!("ch_1012{}", random_digits(20));
    let transaction_no = format!("1013{}", random_digits(24));
    let token = random_alnum(20);
    let credential = if channel == "balance" {
        json!({ "balance": format!("https://member.yeepay.com/yeepay-std-wallet/wallet.html#/wallet?token={token}") })
    } else {
        // The fake's stand-in for a channel's credential: a cashier page to open.
        json!({ channel: format!("https://cash.yeepay.com/cashier/std?token={token}") })
    };
    let charge = json!({
        "id": charge_id,
        "object": "charge",
        "created": created,
        "livemode": true,
        "paid": false,
        "refunded": false,
        "reversed": false,
        "app": APP_ID,
        "channel": channel,
        "order_no": charge_order_no.as_deref().or(order["merchant_order_no"].as_str()),
        "client_ip": order["client_ip"],
        "amount": charge_amount,
        "amount_settle": charge_amount,
        "currency": "cny",
        "subject": order["subject"],
        "body": order["body"],
        "extra": extra,
        "time_paid": null,
        "time_expire": time_expire,
        "time_settle": null,
        "transaction_no": transaction_no,
        "refunds": null,
        "amount_refunded": 0,
        "failure_code": null,
        "failure_msg": null,
        "metadata": {},
        "credential": credential,
        "description": null,
    });
    let Some(order) = state.orders.get_mut(order_id) else {
        return Ok(not_found("order", order_id));
    };
    order["charge"] = json!(charge_id);
    order["charge_essentials"] = json!({
        "channel": channel,
        "transaction_no": transaction_no,
        "failure_code": null,
        "failure_msg": null,
        "extra": extra,
        "credential": credential,
    });
    order["service_app"] = json!(APP_ID);
    if let Some(charges) = order["charges"]["data"].as_array_mut() {
        charges.push(charge);
    }
    Ok(answer(200, order))
}

/// The order's charge `charge_id`, if it has it.
fn order_charge<'a>(order: &'a Value, charge_id: &str) -> Option<&'a Value> {
    order["charges"]["data"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == charge_id)
}

const REFUND_FIELDS: &[&str] = &["order_no", "amount", "charge", "description", "metadata"];

/// A refund of a paid order's charge, `pending` until a control decides it. The check of the
/// amount and the refund's creation happen under one lock: of two refunds racing for the last
/// fen, one is refused.
fn create_order_refund(shared: &Shared, order_id: &str, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, REFUND_FIELDS)?;
    let order_no = token(&request, "order_no")?;
    let amount = amount(&request, "amount")?;
    let charge = required(&request, "charge")?;
    let description = text(&request, "description", 255)?;
    let metadata = metadata(&request)?;
    // Refund numbers are unique across orders: the order is part of what a repeat repeats.
    let mut keyed = request.clone();
    keyed.insert("order".into(), json!(order_id));
    let request_value = Value::Object(keyed);
    let mut state = shared.state();
    let Some(order) = state.orders.get(order_id) else {
        return Ok(not_found("order", order_id));
    };
    if let Some(outcome) = repeat(
        state.refuse_reused_order_no,
        "order_no",
        &state.order_refund_by_order_no,
        &state.order_refunds,
        order_no,
        &request_value,
    ) {
        return outcome;
    }
    let paid_charge = order_charge(order, charge).filter(|c| c["paid"] == true);
    let Some(paid_charge) = paid_charge else {
        return Err(invalid("charge 不是该订单已支付的 charge", "charge"));
    };
    let channel = paid_charge["channel"].clone();
    if amount > state.refundable(order_id) {
        return Err(invalid("退款金额超出可退金额", "amount"));
    }
    let id = format!("2112{}", random_digits(20));
    let refund = json!({
        "id": id,
        "object": "order_refund",
        "app": APP_ID,
        "created": now(),
        "livemode": true,
        "order_no": order_no,
        "amount": amount,
        "channel": channel,
        "order": order_id,
        "charge": charge,
        "refund": null,
        "transaction_no": id,
        "status": "pending",
        "description": description,
        "extra": {},
        "metadata": metadata,
        "failure_msg": null,
    });
    state
        .order_refund_by_order_no
        .insert(order_no.to_owned(), (id.clone(), request_value));
    state.order_refund_order.push(id.clone());
    state.order_refunds.insert(id, refund.clone());
    Ok(answer(200, &refund))
}

fn list_order_refunds(shared: &Shared, order_id: &str, uri: &str) -> Answer {
    let state = shared.state();
    if !state.orders.contains_key(order_id) {
        return not_found("order", order_id);
    }
    let mut refunds: Vec<Value> = state.order_refunds_of(order_id).cloned().collect();
    refunds.reverse();
    page(uri, refunds)
}

const ALLOCATION_FIELDS: &[&str] = &["app", "order", "order_no", "recipients", "metadata"];

/// The order's paid charge as an allocation names it.
fn charge_summary(order: &Value) -> Value {
    let charge = order["charge"]
        .as_str()
        .and_then(|id| order_charge(order, id));
    match charge {
        Some(c) => {
            json!({ "id": c["id"], "order_no": c["order_no"], "transaction_no": c["transaction_no"] })
        }
        None => json!({}),
    }
}

/// An allocation of a paid allocation order's takings, `processing`; its amount leaves what
/// the order holds at once, so two allocations cannot spend the same fen. What pending
/// refunds of the order need is not allocatable.
fn create_allocation(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, ALLOCATION_FIELDS)?;
    check_app(&request)?;
    let order_id = token(&request, "order")?;
    let order_no = token(&request, "order_no")?;
    let recipients = shares(&request, "recipients")?;
    let metadata = metadata(&request)?;
    let request_value = Value::Object(request.clone());
    let mut state = shared.state();
    if let Some(outcome) = repeat(
        state.refuse_reused_order_no,
        "order_no",
        &state.allocation_by_order_no,
        &state.allocations,
        order_no,
        &request_value,
    ) {
        return outcome;
    }
    let Some(order) = state.orders.get(order_id) else {
        return Err(invalid("订单不存在", "order"));
    };
    if order["allocation"] != true || order["paid"] != true {
        return Err(invalid("订单不支持分账", "order"));
    }
    if state.completing(order_id) {
        return Err(invalid("订单已完结分账", "order"));
    }
    if recipients
        .iter()
        .any(|r| !state.users.contains_key(&r.user))
    {
        return Err(invalid("用户不存在", "recipients"));
    }
    let total: i64 = recipients.iter().map(|r| r.amount).sum();
    let held = state.held.get(order_id).copied().unwrap_or(0);
    if total > held - state.pending_refunds(order_id) {
        return Err(invalid("分账金额超出可分账金额", "recipients"));
    }
    let id = format!("3712{}", random_digits(20));
    let allocation = json!({
        "id": id,
        "object": "allocation",
        "livemode": true,
        "app": APP_ID,
        "order_no": order_no,
        "recipients": shares_shown(&recipients),
        "senders": [],
        "order": order_id,
        "status": "processing",
        "created": now(),
        "time_succeeded": null,
        "metadata": metadata,
        "type": "allocation",
        "amount": total,
        "extra": { "charge": charge_summary(order) },
    });
    state.held.insert(order_id.to_owned(), held - total);
    state
        .allocation_by_order_no
        .insert(order_no.to_owned(), (id.clone(), request_value));
    state.allocation_order.push(id.clone());
    state.allocations.insert(id, allocation.clone());
    Ok(answer(200, &allocation))
}

const ALLOCATION_REFUND_FIELDS: &[&str] =
    &["app", "order", "order_no", "senders", "extra", "metadata"];

/// Taking back from a succeeded allocation's recipients, `processing`: each sender at most
/// what it received there and has not given back (or is giving back), and no more than its
/// balance.
fn create_allocation_refund(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, ALLOCATION_REFUND_FIELDS)?;
    check_app(&request)?;
    let order_id = token(&request, "order")?;
    let order_no = token(&request, "order_no")?;
    let senders = shares(&request, "senders")?;
    let metadata = metadata(&request)?;
    const ALLOCATION: &str = "extra[allocation]";
    let allocation_id = match request.get("extra") {
        Some(Value::Object(extra)) if extra.keys().all(|k| k == "allocation") => extra
            .get("allocation")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("缺少参数: {ALLOCATION}"), ALLOCATION))?,
        _ => return Err(invalid(format!("缺少参数: {ALLOCATION}"), ALLOCATION)),
    };
    let request_value = Value::Object(request.clone());
    let mut state = shared.state();
    if let Some(outcome) = repeat(
        state.refuse_reused_order_no,
        "order_no",
        &state.allocation_by_order_no,
        &state.allocations,
        order_no,
        &request_value,
    ) {
        return outcome;
    }
    let allocation = state.allocations.get(allocation_id).filter(|a| {
        a["type"] == "allocation" && a["order"] == order_id && a["status"] == "succeed"
    });
    let Some(allocation) = allocation else {
        return Err(invalid("原分账不存在或未成功", ALLOCATION));
    };
    let charge = allocation["extra"]["charge"]["id"].clone();
    for (user, asked) in totals(&senders) {
        let received: i64 = allocation["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["user"] == user)
            .map(|r| int(r, "amount"))
            .sum();
        let given_back: i64 = state
            .allocations_of(order_id, "allocation_refund")
            .filter(|a| {
                a["extra"]["allocation"] == allocation_id
                    && matches!(a["status"].as_str(), Some("processing" | "succeed"))
            })
            .flat_map(|a| a["senders"].as_array().into_iter().flatten())
            .filter(|s| s["user"] == user)
            .map(|s| int(s, "amount"))
            .sum();
        if asked > received - given_back {
            return Err(invalid("退分账金额超出可退金额", "senders"));
        }
        let balance = state
            .users
            .get(user)
            .map_or(0, |u| int(u, "available_balance"));
        if asked > balance {
            return Err(invalid("余额不足", "senders"));
        }
    }
    let id = format!("3712{}", random_digits(20));
    let refund = json!({
        "id": id,
        "object": "allocation",
        "livemode": true,
        "app": APP_ID,
        "order_no": order_no,
        "recipients": [],
        "senders": shares_shown(&senders),
        "order": order_id,
        "status": "processing",
        "created": now(),
        "time_succeeded": null,
        "metadata": metadata,
        "type": "allocation_refund",
        "amount": senders.iter().map(|s| s.amount).sum::<i64>(),
        "extra": { "allocation": allocation_id, "charge": charge },
    });
    state
        .allocation_by_order_no
        .insert(order_no.to_owned(), (id.clone(), request_value));
    state.allocation_order.push(id.clone());
    state.allocations.insert(id, refund.clone());
    Ok(answer(200, &refund))
}

const ALLOCATION_COMPLETE_FIELDS: &[&str] =
    &["app", "order_no", "order", "description", "metadata"];

/// The end of an allocation order's allocation, `pending` until a control decides it; one
/// per order (unless the first failed).
fn create_allocation_complete(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, ALLOCATION_COMPLETE_FIELDS)?;
    check_app(&request)?;
    let order_id = token(&request, "order")?;
    let order_no = token(&request, "order_no")?;
    optional_text(&request, "description", 255)?;
    let metadata = metadata(&request)?;
    let request_value = Value::Object(request.clone());
    let mut state = shared.state();
    if let Some(outcome) = repeat(
        state.refuse_reused_order_no,
        "order_no",
        &state.allocation_complete_by_order_no,
        &state.allocation_completes,
        order_no,
        &request_value,
    ) {
        return outcome;
    }
    if !state
        .orders
        .get(order_id)
        .is_some_and(|o| o["allocation"] == true)
    {
        return Err(invalid("订单不支持分账", "order"));
    }
    if state.completing(order_id) {
        return Err(invalid("订单已完结分账", "order"));
    }
    let id = format!("6812{}", random_digits(15));
    let complete = json!({
        "id": id,
        "object": "allocation_complete",
        "livemode": true,
        "app": APP_ID,
        "order_no": order_no,
        "order": order_id,
        "status": "pending",
        "created": now(),
        "time_succeeded": null,
        "extra": {},
        "failure_msg": null,
        "metadata": metadata,
    });
    state
        .allocation_complete_by_order_no
        .insert(order_no.to_owned(), (id.clone(), request_value));
    state.allocation_complete_order.push(id.clone());
    state.allocation_completes.insert(id, complete.clone());
    Ok(answer(200, &complete))
}

/// Every share of `allocation[field]` decided as `status`.
fn decide_shares(allocation: &mut Value, field: &str, status: &str, msg: Option<&str>) {
    let time = now();
    for share in allocation[field].as_array_mut().into_iter().flatten() {
        share["status"] = json!(status);
        match msg {
            Some(msg) => share["failure_msg"] = json!(msg),
            None => share["time_succeeded"] = json!(time),
        }
    }
}

/// (user, amount) of each share in `allocation[field]`.
fn share_amounts(allocation: &Value, field: &str) -> Vec<(String, i64)> {
    allocation[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["user"].as_str().unwrap_or_default().to_owned(),
                int(s, "amount"),
            )
        })
        .collect()
}

impl FakePingpp {
    /// All orders, in creation order, as they are now.
    pub fn orders(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .order_order
            .iter()
            .map(|id| state.orders[id].clone())
            .collect()
    }

    pub fn order(&self, id: &str) -> Option<Value> {
        self.shared.state().orders.get(id).cloned()
    }

    /// What the allocation order holds now (fen): paid, not allocated, refunded or completed.
    pub fn held(&self, order_id: &str) -> i64 {
        self.shared.state().held.get(order_id).copied().unwrap_or(0)
    }

    /// The payer paid the order's charge: the charge and the order are `paid` (the order
    /// `status: "paid"`, `amount_paid` its amount). For `balance` the buyer's e-wallet pays;
    /// the money goes to the sub-merchant's business user, or for an allocation order stays
    /// held by the order. Once however often it is paid. Returns the order as it is now.
    pub fn pay_order(&self, id: &str) -> Value {
        let mut state = self.shared.state();
        let order = state
            .orders
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no order {id}"));
        if order["paid"] == true {
            return order.clone();
        }
        let charge_id = order["charge"]
            .as_str()
            .unwrap_or_else(|| panic!("order {id} has no charge: pay it through the API first"))
            .to_owned();
        let time = now();
        let amount = int(order, "amount");
        order["status"] = json!("paid");
        order["paid"] = json!(true);
        order["amount_paid"] = json!(amount);
        order["time_paid"] = json!(time);
        let mut channel = String::new();
        for charge in order["charges"]["data"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if charge["id"] == charge_id.as_str() {
                charge["paid"] = json!(true);
                charge["time_paid"] = json!(time);
                channel = charge["channel"].as_str().unwrap_or_default().to_owned();
            }
        }
        let order = order.clone();
        let uid = order["uid"].as_str().unwrap_or_default();
        if channel == "balance" {
            let balance = state
                .users
                .get(uid)
                .map_or(0, |u| int(u, "available_balance"));
            assert!(
                balance >= amount,
                "the buyer {uid} can no longer pay {amount}"
            );
            state.add_to_balance(uid, -amount);
        }
        if order["allocation"] == true {
            *state.held.entry(id.to_owned()).or_insert(0) += amount;
        } else {
            let merchant = state
                .merchant_of(order["receipt_app"].as_str().unwrap_or_default())
                .unwrap_or_else(|| panic!("order {id} has no merchant"));
            state.add_to_balance(&merchant, amount);
        }
        order
    }

    /// All order refunds, in creation order.
    pub fn order_refunds(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .order_refund_order
            .iter()
            .map(|id| state.order_refunds[id].clone())
            .collect()
    }

    /// The channel refunded: the refund `succeeded`, the order's `amount_refunded` rises
    /// (`refunded: true`, `status: "refunded"` once all is refunded). The money leaves the
    /// sub-merchant's business user (for an allocation order, what it holds, then the merchant
    /// for what completion already paid out) and, for `balance`, returns to the buyer's
    /// e-wallet. Only a pending refund is decided. Returns the refund as it is now.
    pub fn succeed_order_refund(&self, order_id: &str, refund_id: &str) -> Value {
        let mut state = self.shared.state();
        let refund = state
            .order_refunds
            .get_mut(refund_id)
            .filter(|r| r["order"] == order_id)
            .unwrap_or_else(|| panic!("the fake has no refund {refund_id} of order {order_id}"));
        if refund["status"] != "pending" {
            return refund.clone();
        }
        refund["status"] = json!("succeeded");
        let refund = refund.clone();
        let amount = int(&refund, "amount");
        let order = state.orders.get_mut(order_id).expect("the refund's order");
        let refunded = int(order, "amount_refunded") + amount;
        order["amount_refunded"] = json!(refunded);
        order["refunded"] = json!(true);
        if refunded >= int(order, "amount_paid") {
            order["status"] = json!("refunded");
        }
        for charge in order["charges"]["data"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if charge["id"] == refund["charge"] {
                charge["amount_refunded"] = json!(int(charge, "amount_refunded") + amount);
                charge["refunded"] = json!(true);
            }
        }
        let order = order.clone();
        let merchant = state
            .merchant_of(order["receipt_app"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let from_merchant = if order["allocation"] == true {
            let held = state.held.entry(order_id.to_owned()).or_insert(0);
            let from_held = amount.min(*held);
            *held -= from_held;
            amount - from_held
        } else {
            amount
        };
        state.add_to_balance(&merchant, -from_merchant);
        if refund["channel"] == "balance" {
            state.add_to_balance(order["uid"].as_str().unwrap_or_default(), amount);
        }
        refund
    }

    /// The channel could not refund: `failed` with `failure_msg`; nothing moves.
    pub fn fail_order_refund(&self, order_id: &str, refund_id: &str, msg: &str) -> Value {
        let mut state = self.shared.state();
        let refund = state
            .order_refunds
            .get_mut(refund_id)
            .filter(|r| r["order"] == order_id)
            .unwrap_or_else(|| panic!("the fake has no refund {refund_id} of order {order_id}"));
        if refund["status"] == "pending" {
            refund["status"] = json!("failed");
            refund["failure_msg"] = json!(msg);
        }
        refund.clone()
    }

    /// All allocations and allocation refunds, in creation order.
    pub fn allocations(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .allocation_order
            .iter()
            .map(|id| state.allocations[id].clone())
            .collect()
    }

    /// A processing allocation (or allocation refund) of `kind`, for a control to decide.
    fn processing<'a>(state: &'a mut State, id: &str, kind: &str) -> Option<&'a mut Value> {
        let allocation = state
            .allocations
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no allocation {id}"));
        assert_eq!(allocation["type"], kind, "allocation {id}");
        (allocation["status"] == "processing").then_some(allocation)
    }

    /// The allocation `succeed`ed: each recipient `succeed` with `time_succeeded`, its
    /// balance raised by its amount. Returns the allocation as it is now.
    pub fn succeed_allocation(&self, id: &str) -> Value {
        let mut state = self.shared.state();
        let Some(allocation) = Self::processing(&mut state, id, "allocation") else {
            return state.allocations[id].clone();
        };
        allocation["status"] = json!("succeed");
        allocation["time_succeeded"] = json!(now());
        decide_shares(allocation, "recipients", "succeed", None);
        let allocation = allocation.clone();
        for (user, amount) in share_amounts(&allocation, "recipients") {
            state.add_to_balance(&user, amount);
        }
        allocation
    }

    /// The allocation (or allocation refund) failed: `failure`, each share `failure` with
    /// `failure_msg`. A failed allocation's amount goes back to the order.
    pub fn fail_allocation(&self, id: &str, msg: &str) -> Value {
        let mut state = self.shared.state();
        let allocation = state
            .allocations
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no allocation {id}"));
        if allocation["status"] != "processing" {
            return allocation.clone();
        }
        allocation["status"] = json!("failure");
        let field = if allocation["type"] == "allocation" {
            "recipients"
        } else {
            "senders"
        };
        decide_shares(allocation, field, "failure", Some(msg));
        let allocation = allocation.clone();
        if field == "recipients" {
            let order = allocation["order"].as_str().unwrap_or_default();
            state.give_back(order, int(&allocation, "amount"));
        }
        allocation
    }

    /// The allocation refund `succeed`ed: each sender's balance lowered by its amount, the
    /// total back with the order. Returns it as it is now.
    pub fn succeed_allocation_refund(&self, id: &str) -> Value {
        let mut state = self.shared.state();
        let Some(refund) = Self::processing(&mut state, id, "allocation_refund") else {
            return state.allocations[id].clone();
        };
        refund["status"] = json!("succeed");
        refund["time_succeeded"] = json!(now());
        decide_shares(refund, "senders", "succeed", None);
        let refund = refund.clone();
        for (user, amount) in share_amounts(&refund, "senders") {
            state.add_to_balance(&user, -amount);
        }
        let order = refund["order"].as_str().unwrap_or_default();
        state.give_back(order, int(&refund, "amount"));
        refund
    }

    /// All allocation completes, in creation order.
    pub fn allocation_completes(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .allocation_complete_order
            .iter()
            .map(|id| state.allocation_completes[id].clone())
            .collect()
    }

    /// The completion `succeed`ed (`time_succeeded`): whatever the order still holds goes to
    /// the sub-merchant's business user. Returns it as it is now.
    pub fn complete_allocation_complete(&self, id: &str) -> Value {
        let mut state = self.shared.state();
        let complete = state
            .allocation_completes
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no allocation_complete {id}"));
        if complete["status"] != "pending" {
            return complete.clone();
        }
        complete["status"] = json!("succeed");
        complete["time_succeeded"] = json!(now());
        let complete = complete.clone();
        let order_id = complete["order"].as_str().unwrap_or_default();
        let held = state.held.insert(order_id.to_owned(), 0).unwrap_or(0);
        let merchant = state
            .orders
            .get(order_id)
            .and_then(|o| o["receipt_app"].as_str())
            .and_then(|app| state.merchant_of(app))
            .unwrap_or_default();
        state.add_to_balance(&merchant, held);
        complete
    }

    /// The completion failed (`failed`, `failure_msg`): the order keeps what it holds.
    pub fn fail_allocation_complete(&self, id: &str, msg: &str) -> Value {
        let mut state = self.shared.state();
        let complete = state
            .allocation_completes
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no allocation_complete {id}"));
        if complete["status"] == "pending" {
            complete["status"] = json!("failed");
            complete["failure_msg"] = json!(msg);
        }
        complete.clone()
    }
}
