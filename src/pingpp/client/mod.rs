//! The HTTP client for Ping++'s REST API. Each endpoint here is a path, a body and a check of
//! the answer, sent through one call wrapper; everything else lives beside it:
//!
//! - `transport.rs`: [`ClientConfig`] and [`PingppClient`] itself, how a request travels
//!   (authentication, request signing, timeouts, retries), the sorting of answers into
//!   [`PingppError`]s, the scrubbing of the secret key, and the call wrapper that every endpoint
//!   uses and that counts each call in the metrics.
//! - `requests.rs`: what we ask for ([`ChargeRequest`], [`RechargeObjectRequest`],
//!   [`WithdrawalRequest`], [`WithdrawalUpdate`]), Ping++'s limits on it, checked before
//!   anything is sent, and the JSON body each becomes.
//! - `accounts.rs`: the account system's endpoints for users (Ping++ users, personal account
//!   applications, the card-binding link, picture upload, card bin, deposits); withdrawals out
//!   of a user's e-wallet are the withdrawal endpoints here.
//! - `account_requests.rs`: what we ask of the account system ([`CusApplicationRequest`],
//!   [`DepositRequest`]), checked before sending; personal data is kept out of every message.
//! - `merchants.rs`: the account system's endpoints for sub-merchants (sub_apps, enterprise and
//!   micro merchant applications, settle accounts).
//! - `merchant_requests.rs`: what we ask for them ([`SubAppRequest`],
//!   [`MerchantApplicationRequest`], [`SettleAccountRequest`]), only the shapes sending needs
//!   checked; personal data is kept out of every message.
//! - `orders.rs`: the account system's endpoints for spending from an e-wallet (orders, their
//!   payment and refunds, allocations, allocation refunds and completions).
//! - `order_requests.rs`: what we ask for them ([`OrderRequest`], [`OrderPayRequest`],
//!   [`OrderRefundRequest`], [`AllocationRequest`], [`AllocationRefundRequest`],
//!   [`AllocationCompleteRequest`]), only shapes checked, no value quoted.
//! - `refunds.rs`: refunds of a paid charge ([`ChargeRefundRequest`]), sent once and found
//!   again by our mark in their metadata.
//! - `responses.rs`: whether what Ping++ answered is the object the endpoint promises.

mod account_requests;
mod accounts;
#[doc(hidden)]
pub mod fuzzing;
mod merchant_requests;
mod merchants;
mod order_requests;
mod orders;
mod refunds;
mod requests;
mod responses;
mod transport;

use reqwest::Method;
use serde_json::Value;

pub use account_requests::{CusApplicationRequest, DepositRequest};
pub use merchant_requests::{
    MerchantApplicationRequest, MerchantKind, SettleAccountRequest, SubAppRequest,
};
pub use order_requests::{
    AllocationCompleteRequest, AllocationRefundRequest, AllocationRequest, AllocationShare,
    OrderPayRequest, OrderRefundRequest, OrderRequest, MAX_ALLOCATION_SHARES,
};
pub use refunds::ChargeRefundRequest;
pub use requests::{ChargeRequest, RechargeObjectRequest, WithdrawalRequest, WithdrawalUpdate};
pub use transport::{
    ClientConfig, PingppClient, SentOnceError, DEFAULT_API_BASE, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

use super::error::PingppError;
use requests::{
    charge_body, check_charge_id, check_withdrawal_id, is_id_char, recharge_body, validate_charge,
    validate_recharge, validate_withdrawal, withdrawal_body,
};
use responses::{check_charge, check_recharge, check_withdrawal};
use transport::metered;

/// Looking for what a create made: pages of this many objects, at most this many pages.
const LOOKUP_PAGE_SIZE: usize = 100;
pub const MAX_LOOKUP_PAGES: usize = 20;

impl PingppClient {
    /// `POST /v1/charges`: creates a charge (a repeat with the same `order_no` and parameters
    /// is answered with that charge or refused as a used number, depending on Ping++). Checks Ping++'s limits first, so a request
    /// Ping++ would refuse is not sent at all.
    pub async fn create_charge(&self, req: &ChargeRequest) -> Result<Value, PingppError> {
        validate_charge(req)?;
        let body = charge_body(req, self.app_id());
        self.call(
            "create_charge",
            Method::POST,
            "/v1/charges",
            Some(&body),
            |c| check_charge(c, None),
        )
        .await
    }

    /// `GET /v1/charges/{id}`: the charge as Ping++ sees it now.
    pub async fn retrieve_charge(&self, id: &str) -> Result<Value, PingppError> {
        check_charge_id(id)?;
        let path = format!("/v1/charges/{id}");
        self.call("retrieve_charge", Method::GET, &path, None, |c| {
            check_charge(c, Some(id))
        })
        .await
    }

    /// `POST /v1/apps/{app}/recharges`: creates a recharge object (with its charge and
    /// credential); a repeat of its charge's `order_no` is answered as for charges. Checks Ping++'s limits first, so a request Ping++ would refuse
    /// is not sent at all.
    pub async fn create_recharge(&self, req: &RechargeObjectRequest) -> Result<Value, PingppError> {
        validate_recharge(req)?;
        let path = self.app_path("recharges");
        let body = recharge_body(req);
        self.call("create_recharge", Method::POST, &path, Some(&body), |r| {
            check_recharge(r, None)
        })
        .await
    }

    /// `POST /v1/apps/{app}/withdrawals`: creates a withdrawal; a repeat of its `order_no` is
    /// answered as for charges. Checks the request first,
    /// so one Ping++ would refuse is not sent at all.
    pub async fn create_withdrawal(&self, req: &WithdrawalRequest) -> Result<Value, PingppError> {
        validate_withdrawal(req)?;
        let path = self.app_path("withdrawals");
        let body = withdrawal_body(req);
        self.call("create_withdrawal", Method::POST, &path, Some(&body), |w| {
            check_withdrawal(w, None)
        })
        .await
    }

    /// `PUT /v1/apps/{app}/withdrawals/{id}`: confirms (`pending`) or cancels (`canceled`) a
    /// created withdrawal. Setting a state is safe to repeat.
    pub async fn update_withdrawal(
        &self,
        id: &str,
        update: WithdrawalUpdate,
    ) -> Result<Value, PingppError> {
        check_withdrawal_id(id)?;
        let endpoint = match update {
            WithdrawalUpdate::Confirm => "confirm_withdrawal",
            WithdrawalUpdate::Cancel => "cancel_withdrawal",
        };
        let path = self.app_path(&format!("withdrawals/{id}"));
        self.call(endpoint, Method::PUT, &path, Some(&update.body()), |w| {
            check_withdrawal(w, Some(id))
        })
        .await
    }

    /// `GET /v1/apps/{app}/withdrawals/{id}`: the withdrawal as Ping++ sees it now.
    pub async fn retrieve_withdrawal(&self, id: &str) -> Result<Value, PingppError> {
        check_withdrawal_id(id)?;
        let path = self.app_path(&format!("withdrawals/{id}"));
        self.call("retrieve_withdrawal", Method::GET, &path, None, |w| {
            check_withdrawal(w, Some(id))
        })
        .await
    }

    /// The charge Ping++ made for `order_no`, if any, from `GET /v1/charges` (newest first)
    /// back to `created_since` (unix s). For a create whose outcome is unknown (its answer lost
    /// or late) that a repeat can't settle: a Ping++ that refuses a used `order_no` instead of
    /// returning the charge it made.
    pub async fn find_charge(
        &self,
        order_no: &str,
        created_since: i64,
    ) -> Result<Option<Value>, PingppError> {
        let path = format!("/v1/charges?app[id]={}", self.app_id());
        let found = self
            .find_in_list("find_charge", &path, order_no, created_since, |c| {
                c.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found
            .map(|charge| self.checked(charge, |c| check_charge(c, None)))
            .transpose()
    }

    /// The recharge object whose charge has `order_no`, if any, from
    /// `GET /v1/apps/{app}/recharges`, as [`PingppClient::find_charge`] for charges.
    pub async fn find_recharge(
        &self,
        order_no: &str,
        created_since: i64,
    ) -> Result<Option<Value>, PingppError> {
        let path = self.app_path("recharges?");
        let found = self
            .find_in_list("find_recharge", &path, order_no, created_since, |r| {
                r.get("charge")?.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found
            .map(|r| self.checked(r, |r| check_recharge(r, None)))
            .transpose()
    }

    /// The withdrawal made for `order_no`, if any, from `GET /v1/apps/{app}/withdrawals`, as
    /// [`PingppClient::find_charge`] for charges.
    pub async fn find_withdrawal(
        &self,
        order_no: &str,
        created_since: i64,
    ) -> Result<Option<Value>, PingppError> {
        let path = self.app_path("withdrawals?");
        let found = self
            .find_in_list("find_withdrawal", &path, order_no, created_since, |w| {
                w.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found
            .map(|w| self.checked(w, |w| check_withdrawal(w, None)))
            .transpose()
    }

    /// `/v1/apps/{app}/{rest}`: where the app's own objects (recharges, withdrawals, users,
    /// deposits, sub_apps, merchant applications) live.
    fn app_path(&self, rest: &str) -> String {
        format!("/v1/apps/{}/{rest}", self.app_id())
    }

    /// Pages through a Ping++ list (`{"object": "list", "has_more", "data"}`, newest first) for
    /// the object whose order number (as `order_no_of` reads it) is `order_no`, back to
    /// `created_since`. `Ok(None)`: the list was read back that far without it. A list longer
    /// than [`MAX_LOOKUP_PAGES`] pages in that time can't be read to the end: that is an error,
    /// not a "no". All the pages together count as one call of `endpoint` in the metrics.
    async fn find_in_list(
        &self,
        endpoint: &'static str,
        path: &str,
        order_no: &str,
        created_since: i64,
        order_no_of: fn(&Value) -> Option<&str>,
    ) -> Result<Option<Value>, PingppError> {
        metered(endpoint, async {
            let separator = if path.ends_with('?') { "" } else { "&" };
            let mut starting_after: Option<String> = None;
            for _ in 0..MAX_LOOKUP_PAGES {
                let mut page_path = format!(
                    "{path}{separator}limit={LOOKUP_PAGE_SIZE}&created[gte]={created_since}"
                );
                if let Some(after) = &starting_after {
                    page_path.push_str(&format!("&starting_after={after}"));
                }
                let page = self.request(Method::GET, &page_path, None).await?;
                let (Some("list"), Some(data)) = (
                    page.get("object").and_then(Value::as_str),
                    page.get("data").and_then(Value::as_array),
                ) else {
                    return Err(PingppError::Protocol(format!(
                        "{endpoint}: the answer is not a list"
                    )));
                };
                if let Some(found) = data.iter().find(|o| order_no_of(o) == Some(order_no)) {
                    return Ok(Some(found.clone()));
                }
                let last_id = data
                    .last()
                    .and_then(|o| o.get("id"))
                    .and_then(Value::as_str);
                let has_more = page.get("has_more").and_then(Value::as_bool) == Some(true);
                match last_id {
                    Some(id) if has_more && id.chars().all(is_id_char) => {
                        starting_after = Some(id.to_owned())
                    }
                    _ => return Ok(None),
                }
            }
            Err(PingppError::Transient(format!(
                "{endpoint}: more than {MAX_LOOKUP_PAGES} pages since {created_since}"
            )))
        })
        .await
    }
}
