//! Recharge objects (`/v1/apps/{app}/recharges`): creating one with its charge, retrieving it.

use hyper::Method;
use serde_json::{json, Map, Value};

use super::charges::{new_charge, validate_charge};
use super::withdrawals::withdrawals_route;
use super::{answer, error, invalid, now, random_digits, Answer, Refusal, Shared, APP_ID};

/// `/v1/apps/{app}/recharges` and `/v1/apps/{app}/recharges/{id}`; `rest` follows `/v1/apps/`.
pub(super) fn recharges_route(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Answer {
    let mut parts = rest.splitn(3, '/');
    let (app, collection, id) = (parts.next(), parts.next(), parts.next());
    if collection == Some("withdrawals") && app == Some(APP_ID) {
        return withdrawals_route(shared, method, id, body);
    }
    if collection != Some("recharges") {
        return error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL ({method}: /v1/apps/{rest})"),
            None,
        );
    }
    if app != Some(APP_ID) {
        return error(
            404,
            "invalid_request_error",
            &format!("app 不存在: {}", app.unwrap_or_default()),
            Some("app"),
        );
    }
    match (method, id) {
        (&Method::POST, None) => create_recharge(shared, body),
        (&Method::GET, Some(id)) if !id.is_empty() => match shared.state().recharge(id) {
            Some(recharge) => answer(200, &recharge),
            None => error(
                404,
                "invalid_request_error",
                &format!("未找到 recharge : {id}"),
                Some("id"),
            ),
        },
        _ => error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL ({method}: /v1/apps/{rest})"),
            None,
        ),
    }
}

const RECHARGE_FIELDS: &[&str] = &[
    "user",
    "charge",
    "user_fee",
    "balance_bonus",
    "from_user",
    "description",
    "metadata",
];

const RECHARGE_CHARGE_FIELDS: &[&str] = &[
    "amount",
    "channel",
    "order_no",
    "subject",
    "body",
    "time_expire",
    "client_ip",
    "extra",
];

fn create_recharge(shared: &Shared, body: &[u8]) -> Answer {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return error(400, "invalid_request_error", "请求体不是 JSON 对象", None),
    };
    let charge = match validate_recharge(&request) {
        Ok(charge) => charge,
        Err(refused) => return refused.answer(),
    };
    let order_no = charge["order_no"].as_str().unwrap().to_owned();
    let request = Value::Object(request);
    let mut state = shared.state();
    // The charge's order_no keys the recharge, as it keys a charge.
    if let Some((id, original)) = state.recharge_by_order_no.get(&order_no) {
        if state.refuse_reused_order_no {
            return invalid(format!("order_no {order_no} 已被使用"), "charge[order_no]").answer();
        }
        return if *original == request {
            answer(200, &state.recharge(id).unwrap())
        } else {
            invalid(
                format!("订单号 {order_no} 已存在，且参数与已有 recharge 不一致"),
                "charge[order_no]",
            )
            .answer()
        };
    }
    if state.by_order_no.contains_key(&order_no) {
        return invalid(format!("订单号 {order_no} 已存在"), "charge[order_no]").answer();
    }
    let new = new_charge(&Value::Object(charge.clone()));
    let charge_id = new["id"].as_str().unwrap().to_owned();
    let id = format!("220{}", random_digits(16));
    let user = request["user"].clone();
    let recharge = json!({
        "id": id,
        "object": "recharge",
        "app": APP_ID,
        "created": now(),
        "livemode": false,
        "amount": charge["amount"],
        "succeeded": false,
        "time_succeeded": null,
        "refunded": false,
        "user": user,
        "from_user": request.get("from_user").cloned().unwrap_or(user),
        "user_fee": request.get("user_fee").cloned().unwrap_or(json!(0)),
        "charge": charge_id,
        "balance_bonus": request.get("balance_bonus").cloned().unwrap_or(json!({})),
        "refunds": {},
        "balance_transaction": "",
        "description": request.get("description").cloned().unwrap_or(json!("")),
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
    });
    state
        .by_order_no
        .insert(order_no.clone(), (charge_id.clone(), Value::Object(charge)));
    state.order.push(charge_id.clone());
    state.charges.insert(charge_id, new);
    state
        .recharge_by_order_no
        .insert(order_no, (id.clone(), request));
    state.recharge_order.push(id.clone());
    state.recharges.insert(id.clone(), recharge);
    answer(200, &state.recharge(&id).unwrap())
}

/// Ping++'s limits on a recharge; returns its charge as a charge request (app and currency
/// filled in) once valid.
fn validate_recharge(request: &Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
    if let Some(unknown) = request
        .keys()
        .find(|k| !RECHARGE_FIELDS.contains(&k.as_str()))
    {
        return Err(invalid(format!("不支持的参数: {unknown}"), unknown));
    }
    match request.get("user").and_then(Value::as_str) {
        Some(user) if !user.is_empty() && user.chars().count() <= 64 => {}
        Some(_) => return Err(invalid("user 长度须在 1 到 64 个字符之间", "user")),
        None => return Err(invalid("缺少参数: user", "user")),
    }
    let Some(Value::Object(charge)) = request.get("charge") else {
        return Err(invalid("缺少参数: charge", "charge"));
    };
    if let Some(unknown) = charge
        .keys()
        .find(|k| !RECHARGE_CHARGE_FIELDS.contains(&k.as_str()))
    {
        return Err(invalid(
            format!("不支持的参数: charge[{unknown}]"),
            &format!("charge[{unknown}]"),
        ));
    }
    let mut as_charge = charge.clone();
    as_charge.insert("app".into(), json!({ "id": APP_ID }));
    as_charge.insert("currency".into(), json!("cny"));
    as_charge
        .entry("client_ip")
        .or_insert_with(|| json!("127.0.0.1"));
    validate_charge(&as_charge).map_err(|refusal| Refusal {
        param: refusal.param.map(|p| format!("charge[{p}]")),
        ..refusal
    })?;
    let amount = charge["amount"].as_u64().unwrap();
    let fee = request.get("user_fee");
    let bonus = request.get("balance_bonus");
    if fee.is_some() && bonus.is_some() {
        return Err(invalid(
            "user_fee 和 balance_bonus[amount] 不可同时使用",
            "user_fee",
        ));
    }
    if let Some(fee) = fee {
        match fee.as_u64() {
            Some(fee) if fee <= amount => {}
            _ => {
                return Err(invalid(
                    "user_fee 须为不大于 charge[amount] 的非负整数",
                    "user_fee",
                ))
            }
        }
    }
    if let Some(bonus) = bonus {
        if bonus.get("amount").and_then(Value::as_u64).is_none() {
            return Err(invalid(
                "balance_bonus[amount] 须为非负整数",
                "balance_bonus[amount]",
            ));
        }
    }
    match request.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.chars().count() <= 255 => {}
        Some(_) => return Err(invalid("description 最长 255 个字符", "description")),
    }
    if request.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(invalid("metadata 须为对象", "metadata"));
    }
    Ok(as_charge)
}
