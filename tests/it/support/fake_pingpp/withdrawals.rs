//! Withdrawals (`/v1/apps/{app}/withdrawals`): creating, confirming or canceling, retrieving.
//!
//! For a user of the account system (made by `POST /v1/apps/{app}/users`) a withdrawal needs
//! an open account and the money: confirming one holds its amount off the user's balance, and
//! failing or canceling it gives the amount back. Withdrawals for other users are not checked.

use hyper::Method;
use serde_json::{json, Map, Value};

use super::{answer, error, invalid, now, random_digits, Answer, Shared, APP_ID};

/// The channels the fake takes for withdrawals (Ping++'s account-system API: 仅支持 yeepay).
const WITHDRAWAL_CHANNELS: &[&str] = &["yeepay"];

const WITHDRAWAL_FIELDS: &[&str] = &[
    "user",
    "channel",
    "amount",
    "order_no",
    "extra",
    "user_fee",
    "description",
    "metadata",
    "settle_account",
];

/// `/v1/apps/{app}/withdrawals[/{id}]`: create, confirm or cancel (PUT), retrieve.
pub(super) fn withdrawals_route(
    shared: &Shared,
    method: &Method,
    id: Option<&str>,
    body: &[u8],
) -> Answer {
    match (method, id) {
        (&Method::POST, None) => create_withdrawal(shared, body),
        (&Method::GET, Some(id)) if !id.is_empty() => match shared.state().withdrawals.get(id) {
            Some(withdrawal) => answer(200, withdrawal),
            None => not_found_withdrawal(id),
        },
        (&Method::PUT, Some(id)) if !id.is_empty() => update_withdrawal(shared, id, body),
        _ => error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL ({method}: withdrawals)"),
            None,
        ),
    }
}

fn not_found_withdrawal(id: &str) -> Answer {
    error(
        404,
        "invalid_request_error",
        &format!("未找到 withdrawal : {id}"),
        Some("id"),
    )
}

fn create_withdrawal(shared: &Shared, body: &[u8]) -> Answer {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return error(400, "invalid_request_error", "请求体不是 JSON 对象", None),
    };
    if let Some(unknown) = request
        .keys()
        .find(|k| !WITHDRAWAL_FIELDS.contains(&k.as_str()))
    {
        return invalid(format!("不支持的参数: {unknown}"), unknown).answer();
    }
    let text = |name: &str| request.get(name).and_then(Value::as_str);
    match text("user") {
        Some(user) if !user.is_empty() && user.chars().count() <= 64 => {}
        _ => return invalid("缺少参数: user", "user").answer(),
    }
    match text("channel") {
        Some(channel) if WITHDRAWAL_CHANNELS.contains(&channel) => {}
        Some(channel) => {
            return invalid(format!("不支持的提现渠道: {channel}"), "channel").answer()
        }
        None => return invalid("缺少参数: channel", "channel").answer(),
    }
    match request.get("amount").and_then(Value::as_u64) {
        Some(1..=1_000_000_000) => {}
        _ => return invalid("amount 须为正整数", "amount").answer(),
    }
    let Some(order_no) = text("order_no").map(str::to_owned) else {
        return invalid("缺少参数: order_no", "order_no").answer();
    };
    if !(8..=20).contains(&order_no.len()) || !order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid("order_no 须为 8 到 20 位字母或数字", "order_no").answer();
    }
    if request
        .get("extra")
        .and_then(|e| e.get("return_url"))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return invalid("缺少参数: extra[return_url]", "extra[return_url]").answer();
    }
    let request = Value::Object(request);
    let mut state = shared.state();
    // Like a charge: the same order_no with the same parameters is the same withdrawal.
    if let Some((id, original)) = state.withdrawal_by_order_no.get(&order_no) {
        if state.refuse_reused_order_no {
            return invalid(format!("order_no {order_no} 已被使用"), "order_no").answer();
        }
        return if *original == request {
            answer(200, &state.withdrawals[id])
        } else {
            invalid(
                format!("订单号 {order_no} 已存在，且参数与已有 withdrawal 不一致"),
                "order_no",
            )
            .answer()
        };
    }
    if let Some(known) = state
        .users
        .get(request["user"].as_str().unwrap_or_default())
    {
        if known["identified"] != true {
            return invalid("用户未开户", "user").answer();
        }
        if request["amount"].as_i64() > known["withdrawable_balance"].as_i64() {
            return invalid("余额不足", "amount").answer();
        }
    }
    let id = format!("1712{}", random_digits(15));
    let withdrawal = json!({
        "id": id,
        "object": "withdrawal",
        "app": APP_ID,
        "amount": request["amount"],
        "channel": request["channel"],
        "created": now(),
        "description": request.get("description").cloned().unwrap_or(Value::Null),
        "extra": request["extra"],
        "failure_msg": null,
        "fee": 0,
        "livemode": false,
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
        "operation_url": null,
        "order_no": order_no,
        "source": null,
        "status": "created",
        "time_canceled": null,
        "time_succeeded": null,
        "user": request["user"],
        "user_fee": request.get("user_fee").cloned().unwrap_or(json!(0)),
        "settle_account": request.get("settle_account").cloned().unwrap_or(Value::Null),
    });
    state
        .withdrawal_by_order_no
        .insert(order_no, (id.clone(), request));
    state.withdrawal_order.push(id.clone());
    state.withdrawals.insert(id, withdrawal.clone());
    answer(200, &withdrawal)
}

/// `{"status":"pending"}` confirms a created withdrawal (it then shows `processing` and its
/// `operation_url`, as in Ping++'s account-system API's example); `{"status":"canceled"}` cancels a created one.
/// Asking again for the state it is in answers it unchanged.
fn update_withdrawal(shared: &Shared, id: &str, body: &[u8]) -> Answer {
    let wanted = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v.get("status").and_then(Value::as_str).map(str::to_owned),
        Err(_) => None,
    };
    let mut state = shared.state();
    let Some(withdrawal) = state.withdrawals.get(id) else {
        return not_found_withdrawal(id);
    };
    let current = withdrawal["status"].as_str().unwrap_or_default().to_owned();
    let user = withdrawal["user"].as_str().unwrap_or_default().to_owned();
    let amount = withdrawal["amount"].as_u64().unwrap_or(0);
    // Confirming holds the money of an account-system user: it must still be there.
    let holds = wanted.as_deref() == Some("pending")
        && current == "created"
        && state.users.contains_key(&user);
    if holds {
        let balance = state.users[&user]["withdrawable_balance"].as_u64();
        if balance.is_none_or(|b| b < amount) {
            return invalid("余额不足", "amount").answer();
        }
        state.add_to_balance(&user, -(amount as i64));
        state.withdrawal_holds.insert(id.to_owned(), (user, amount));
    }
    let withdrawal = state.withdrawals.get_mut(id).expect("looked up above");
    match (wanted.as_deref(), current.as_str()) {
        (Some("pending"), "created") => {
            withdrawal["status"] = json!("processing");
            withdrawal["operation_url"] = json!(format!(
                "https://member.yeepay.com/yeepay-std-wallet/wallet.html#/wallet?order={}",
                withdrawal["order_no"].as_str().unwrap_or_default()
            ));
        }
        (Some("canceled"), "created") => {
            withdrawal["status"] = json!("canceled");
            withdrawal["time_canceled"] = json!(now());
        }
        (Some("pending"), "pending" | "processing") | (Some("canceled"), "canceled") => {}
        (Some("pending" | "canceled"), _) => {
            return invalid(
                format!("提现状态为 {current}，不能改为 {}", wanted.unwrap()),
                "status",
            )
            .answer()
        }
        _ => return invalid("status 须为 pending 或 canceled", "status").answer(),
    }
    answer(200, withdrawal)
}
