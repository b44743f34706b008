//! Entry points for the fuzz targets (fuzz/), which reach what an HTTP exchange with Ping++
//! otherwise hides: the sorting of an answer and each endpoint's check of a 2xx value. Not part
//! of the crate's API.

use reqwest::StatusCode;
use serde_json::Value;

use super::merchant_requests::MerchantKind;
use super::responses;
use super::transport::PingppClient;
use crate::pingpp::error::PingppError;

/// An answer as [`answer`] sorted it.
#[derive(Debug)]
pub enum Sorted {
    Value(Value),
    Failure {
        error: PingppError,
        retry: bool,
        unsent: bool,
    },
}

/// What an answer of `status` (any value `StatusCode` takes, 100 to 999) with `body` becomes,
/// as the retry loop sees it. `None` for a status HTTP cannot carry.
pub fn answer(client: &PingppClient, status: u16, body: &[u8]) -> Option<Sorted> {
    let status = StatusCode::from_u16(status).ok()?;
    Some(match client.classify(status, body, None) {
        Ok(value) => Sorted::Value(value),
        Err(failure) => Sorted::Failure {
            error: failure.error,
            retry: failure.retry,
            unsent: failure.unsent,
        },
    })
}

/// Every endpoint's check of a 2xx value, as the client applies them (their errors scrubbed),
/// expecting `expected_id` where a check takes one; the results in the order called.
pub fn check_all(
    client: &PingppClient,
    value: &Value,
    expected_id: Option<&str>,
) -> Vec<Result<Value, PingppError>> {
    let v = || value.clone();
    let id = expected_id;
    let checks = vec![
        responses::check_charge(v(), id),
        responses::check_withdrawal(v(), id),
        responses::check_recharge(v(), id),
        responses::check_user(v(), id.unwrap_or("user_1")),
        responses::check_cus_application(v(), id, id),
        responses::check_deposit(v(), id, id.map(|o| (o, 100))),
        responses::check_sub_app(v(), id, id),
        responses::check_merchant_application(v(), MerchantKind::Enterprise, id, id),
        responses::check_merchant_application(v(), MerchantKind::Micro, id, None),
        responses::check_settle_account(v()),
        responses::check_order(v(), id, id),
        responses::check_order_refund(v(), id, id.unwrap_or("2017000000001"), id),
        responses::check_order_refund_list(v()),
        responses::check_allocation(v(), id, id.map(|o| ("allocation", o))),
        responses::check_allocation_complete(v(), id, id),
        responses::check_strings(v(), "a card bin", &["card_type", "bank_name", "bank_code"]),
    ];
    // Each verdict through `checked`, as if it were the check: what the client passes on.
    checks
        .into_iter()
        .map(|checked| client.checked(v(), |_| checked))
        .collect()
}
