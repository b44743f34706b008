//! Lists of charges, recharge objects, withdrawals and deposits, paged as Ping++ pages them.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{answer, invalid, Answer, Shared, APP_ID};

#[derive(Debug, Clone, Copy)]
pub(super) enum List {
    Charges,
    Recharges,
    Withdrawals,
    Deposits,
}

/// `GET` of a collection, as Ping++ pages its lists: newest first, `limit` (1 to 100, 10 by
/// default), `starting_after` an id, `created[gte]` / `created[lte]` unix seconds; charges
/// need `app[id]`.
pub(super) fn list_objects(shared: &Shared, list: List, uri: &str) -> Answer {
    let url = reqwest::Url::parse(&format!("http://fake{uri}")).expect("a request URI");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if matches!(list, List::Charges) && query.get("app[id]").map(String::as_str) != Some(APP_ID) {
        return invalid("缺少参数: app[id]", "app[id]").answer();
    }
    let state = shared.state();
    let ids = match list {
        List::Charges => &state.order,
        List::Recharges => &state.recharge_order,
        List::Withdrawals => &state.withdrawal_order,
        List::Deposits => &state.deposit_order,
    };
    let object = |id: &str| match list {
        List::Charges => state.charges[id].clone(),
        List::Recharges => state.recharge(id).unwrap(),
        List::Withdrawals => state.withdrawals[id].clone(),
        List::Deposits => state.deposits[id].clone(),
    };
    let newest_first: Vec<Value> = ids.iter().rev().map(|id| object(id)).collect();
    page(uri, newest_first)
}

/// One page of `newest_first`, as `limit`, `starting_after`, `created[gte]` and
/// `created[lte]` in `uri` ask.
pub(super) fn page(uri: &str, newest_first: Vec<Value>) -> Answer {
    let url = reqwest::Url::parse(&format!("http://fake{uri}")).expect("a request URI");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        _ => return invalid("limit 须为 1 到 100", "limit").answer(),
    };
    let bound = |name: &str| query.get(name).and_then(|v| v.parse::<i64>().ok());
    let (gte, lte) = (bound("created[gte]"), bound("created[lte]"));
    let newest_first: Vec<Value> = newest_first
        .into_iter()
        .filter(|o| {
            let created = o["created"]
                .as_i64()
                .or_else(|| o["created"].as_str().and_then(|c| c.parse().ok()))
                .unwrap_or(0);
            gte.is_none_or(|t| created >= t) && lte.is_none_or(|t| created <= t)
        })
        .collect();
    let start = match query.get("starting_after") {
        None => 0,
        Some(after) => match newest_first.iter().position(|o| o["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => {
                return invalid(format!("starting_after 不存在: {after}"), "starting_after")
                    .answer()
            }
        },
    };
    let page: Vec<Value> = newest_first
        .iter()
        .skip(start)
        .take(limit)
        .cloned()
        .collect();
    let has_more = start + page.len() < newest_first.len();
    answer(
        200,
        &json!({ "object": "list", "url": url.path(), "has_more": has_more, "data": page }),
    )
}
