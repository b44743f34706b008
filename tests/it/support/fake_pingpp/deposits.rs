//! Deposits into a user's e-wallet (`/v1/apps/{app}/deposits`): creating one with its payment
//! link, retrieving it. Paying it (a test control) raises the user's balance.

use hyper::Method;
use serde_json::{json, Value};

use super::accounts::{is_http_url, json_object, not_found, percent_encode, unrecognized};
use super::{answer, invalid, now, random_alnum, random_digits, Answer, Refusal, Shared, APP_ID};

const DEPOSIT_FIELDS: &[&str] = &["user", "order_no", "amount", "extra", "metadata"];

/// `/v1/apps/{app}/deposits[/{id}]`: create, retrieve (the list is in `lists`).
pub(super) fn deposits_route(
    shared: &Shared,
    method: &Method,
    id: Option<&str>,
    body: &[u8],
) -> Answer {
    match (method, id) {
        (&Method::POST, None) => create_deposit(shared, body).unwrap_or_else(Refusal::answer),
        (&Method::GET, Some(id)) if !id.is_empty() && !id.contains('/') => {
            match shared.state().deposits.get(id) {
                Some(deposit) => answer(200, deposit),
                None => not_found("deposit", id),
            }
        }
        _ => unrecognized(method, "deposits"),
    }
}

fn create_deposit(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, DEPOSIT_FIELDS)?;
    let Some(user) = request
        .get("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && u.chars().count() <= 64)
    else {
        return Err(invalid("缺少参数: user", "user"));
    };
    let Some(amount) = request
        .get("amount")
        .and_then(Value::as_u64)
        .filter(|a| (1..=1_000_000_000).contains(a))
    else {
        return Err(invalid("amount 须为正整数", "amount"));
    };
    let Some(order_no) = request.get("order_no").and_then(Value::as_str) else {
        return Err(invalid("缺少参数: order_no", "order_no"));
    };
    if !(8..=20).contains(&order_no.len()) || !order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("order_no 须为 8 到 20 位字母或数字", "order_no"));
    }
    let Some(Value::Object(extra)) = request.get("extra") else {
        return Err(invalid("缺少参数: extra[return_url]", "extra[return_url]"));
    };
    if let Some(unknown) = extra.keys().find(|k| *k != "return_url") {
        return Err(invalid(
            format!("不支持的参数: extra[{unknown}]"),
            &format!("extra[{unknown}]"),
        ));
    }
    let Some(return_url) = extra.get("return_url").and_then(Value::as_str) else {
        return Err(invalid("缺少参数: extra[return_url]", "extra[return_url]"));
    };
    if !is_http_url(return_url) {
        return Err(invalid(
            "extra[return_url] 须为 http(s) 地址",
            "extra[return_url]",
        ));
    }
    let metadata = match request.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => return Err(invalid("metadata 须为对象", "metadata")),
    };
    let request_value = Value::Object(request.clone());
    let mut state = shared.state();
    // Like a charge: the same order_no with the same parameters is the same deposit.
    if let Some((id, original)) = state.deposit_by_order_no.get(order_no) {
        if state.refuse_reused_order_no {
            return Err(invalid(format!("order_no {order_no} 已被使用"), "order_no"));
        }
        return match state.deposits.get(id) {
            Some(deposit) if *original == request_value => Ok(answer(200, deposit)),
            _ => Err(invalid(
                format!("订单号 {order_no} 已存在，且参数与已有 deposit 不一致"),
                "order_no",
            )),
        };
    }
    if !state
        .users
        .get(user)
        .is_some_and(|u| u["identified"] == true)
    {
        return Err(invalid("用户未开户", "user"));
    }
    let id = format!("6012{}", random_digits(15));
    let credential = format!(
        "https://member.yeepay.com/yeepay-std-wallet/wallet.html#/wallet?amount={}.{:02}&token={}&redirectUrl={}",
        amount / 100,
        amount % 100,
        random_alnum(20),
        percent_encode(return_url)
    );
    let deposit = json!({
        "id": id,
        "object": "deposit",
        "app": APP_ID,
        "livemode": true,
        "user": user,
        "amount": amount,
        "order_no": order_no,
        "status": "created",
        "created": now(),
        "time_succeeded": null,
        "extra": { "return_url": return_url, "credential": credential },
        "metadata": metadata,
    });
    state
        .deposit_by_order_no
        .insert(order_no.to_owned(), (id.clone(), request_value));
    state.deposit_order.push(id.clone());
    state.deposits.insert(id, deposit.clone());
    Ok(answer(200, &deposit))
}
