//! Refunds of paid charges (`/v1/charges/{id}/refunds`): created `pending` (or, when a test
//! asks, decided at once), listed and retrieved as Ping++ shows them, and decided by the test
//! ([`super::FakePingpp::succeed_charge_refund`], [`super::FakePingpp::fail_charge_refund`]).
//! Like Ping++, every create makes a new refund: nothing of the merchant's keys it.

use hyper::Method;
use serde_json::{json, Map, Value};

use super::lists::page;
use super::{answer, error, invalid, now, random_alnum, random_digits, Answer, Shared, State};

const FIELDS: &[&str] = &["amount", "description", "metadata", "funding_source"];

/// `/v1/charges/{charge}/refunds[/{refund}]`; `None` for another path.
pub(super) fn charge_refunds_route(
    shared: &Shared,
    method: &Method,
    path: &str,
    uri: &str,
    body: &[u8],
) -> Option<Answer> {
    let rest = path.strip_prefix("/v1/charges/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    Some(match (method, parts.as_slice()) {
        (&Method::POST, [charge, "refunds"]) => create(shared, charge, body),
        (&Method::GET, [charge, "refunds"]) => {
            let state = shared.state();
            if !state.charges.contains_key(*charge) {
                return Some(no_charge(charge));
            }
            page(uri, refunds_of(&state, charge).into_iter().rev().collect())
        }
        (&Method::GET, [charge, "refunds", id]) => {
            let state = shared.state();
            match state
                .charge_refunds
                .get(*id)
                .filter(|r| r["charge"] == *charge)
            {
                Some(refund) => answer(200, refund),
                None => error(
                    404,
                    "invalid_request_error",
                    &format!("未找到 refund : {id}"),
                    Some("id"),
                ),
            }
        }
        _ => return None,
    })
}

fn no_charge(id: &str) -> Answer {
    error(
        404,
        "invalid_request_error",
        &format!("未找到 charge : {id}"),
        Some("id"),
    )
}

/// The charge's refunds, in creation order.
fn refunds_of(state: &State, charge: &str) -> Vec<Value> {
    state
        .charge_refund_order
        .iter()
        .map(|id| state.charge_refunds[id].clone())
        .filter(|r| r["charge"] == charge)
        .collect()
}

fn create(shared: &Shared, charge_id: &str, body: &[u8]) -> Answer {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return error(400, "invalid_request_error", "请求体不是 JSON 对象", None),
    };
    if let Some(unknown) = request.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return invalid(format!("不支持的参数: {unknown}"), unknown).answer();
    }
    let mut state = shared.state();
    let Some(charge) = state.charges.get(charge_id).cloned() else {
        return no_charge(charge_id);
    };
    if charge["paid"] != true {
        return invalid(format!("charge {charge_id} 未支付，不能退款"), "charge").answer();
    }
    let taken: u64 = refunds_of(&state, charge_id)
        .iter()
        .filter(|r| r["status"] != "failed")
        .map(|r| r["amount"].as_u64().unwrap_or(0))
        .sum();
    let left = charge["amount"].as_u64().unwrap_or(0).saturating_sub(taken);
    let amount = match request.get("amount") {
        None => left,
        Some(a) => match a.as_u64() {
            Some(a) if a >= 1 => a,
            _ => return invalid("amount 须为正整数", "amount").answer(),
        },
    };
    if amount == 0 || amount > left {
        return invalid(format!("退款金额超出可退金额 {left}"), "amount").answer();
    }
    let description = match request.get("description").and_then(Value::as_str) {
        Some(d) if (1..=255).contains(&d.chars().count()) => d.to_owned(),
        _ => return invalid("description 须为 1 到 255 个字符", "description").answer(),
    };
    if request.get("metadata").is_some_and(|m| !m.is_object()) {
        return invalid("metadata 须为对象", "metadata").answer();
    }
    let id = format!("re_{}", random_alnum(24));
    let mut refund = json!({
        "id": id,
        "object": "refund",
        "order_no": random_digits(20),
        "amount": amount,
        "created": now(),
        "succeed": false,
        "status": "pending",
        "time_succeed": null,
        "description": description,
        "failure_code": null,
        "failure_msg": null,
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
        "charge": charge_id,
        "charge_order_no": charge["order_no"],
        "transaction_no": null,
        "funding_source": request.get("funding_source").cloned().unwrap_or(Value::Null),
        "extra": {},
    });
    match state.decide_refunds_at_once.as_deref() {
        Some("succeeded") => succeed(&mut refund),
        Some(_) => fail(&mut refund, "refund_failed", "渠道退款失败 (fake)"),
        None => {}
    }
    state.charge_refund_order.push(id.clone());
    state.charge_refunds.insert(id, refund.clone());
    sync_charge(&mut state, charge_id);
    answer(200, &refund)
}

pub(super) fn succeed(refund: &mut Value) {
    refund["status"] = json!("succeeded");
    refund["succeed"] = json!(true);
    refund["time_succeed"] = json!(now());
    refund["transaction_no"] = json!(random_digits(28));
}

pub(super) fn fail(refund: &mut Value, code: &str, msg: &str) {
    refund["status"] = json!("failed");
    refund["failure_code"] = json!(code);
    refund["failure_msg"] = json!(msg);
}

/// The charge's `refunds`, `amount_refunded` and `refunded` as its refunds are now.
pub(super) fn sync_charge(state: &mut State, charge_id: &str) {
    let refunds = refunds_of(state, charge_id);
    let refunded: u64 = refunds
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["amount"].as_u64().unwrap_or(0))
        .sum();
    if let Some(charge) = state.charges.get_mut(charge_id) {
        let amount = charge["amount"].as_u64().unwrap_or(0);
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded >= amount);
        charge["refunds"]["data"] = Value::Array(refunds.into_iter().rev().collect());
    }
}
