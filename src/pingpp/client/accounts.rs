//! Ping++'s account system, users' side: a Ping++ user per wallet user, their personal account
//! (a YeePay e-wallet opened with their ID card), the page where they bind bank cards, the
//! helpers for pictures and card numbers, and deposits into the e-wallet. Withdrawals out of it
//! are the endpoints in `mod.rs` (`WithdrawalRequest` with channel `yeepay`).
//!
//! Personal data goes only into request bodies, which are never logged; no message of ours
//! quotes it.

use reqwest::Method;
use serde_json::{json, Value};

use super::account_requests::{
    check_cus_application_id, check_deposit_id, check_return_url, check_user_id,
    cus_application_body, deposit_body, validate_card_account, validate_cus_application,
    validate_deposit, validate_pic, CusApplicationRequest, DepositRequest,
};
use super::responses::{check_cus_application, check_deposit, check_strings, check_user};
use super::PingppClient;
use crate::pingpp::error::PingppError;

impl PingppClient {
    /// `POST /v1/apps/{app}/users`: creates the Ping++ user `user_id` (1 to 64 letters, digits
    /// and `_`). Ping++ refuses an id it already has (`400`, param `id`): then
    /// [`PingppClient::retrieve_user`] reads it.
    pub async fn create_user(&self, user_id: &str) -> Result<Value, PingppError> {
        check_user_id(user_id)?;
        let path = self.app_path("users");
        let body = json!({ "id": user_id });
        self.call("create_user", Method::POST, &path, Some(&body), |u| {
            check_user(u, user_id)
        })
        .await
    }

    /// `GET /v1/apps/{app}/users/{id}`: the user as Ping++ sees it now (balances, `identified`).
    pub async fn retrieve_user(&self, user_id: &str) -> Result<Value, PingppError> {
        check_user_id(user_id)?;
        let path = self.app_path(&format!("users/{user_id}"));
        self.call("retrieve_user", Method::GET, &path, None, |u| {
            check_user(u, user_id)
        })
        .await
    }

    /// `POST /v1/apps/{app}/cus_applications`: applies for the user's personal account. Ping++
    /// asks that a timed-out application be sent again unchanged, same `order_no`: it then
    /// answers with the application it has. The outcome comes later (`status`), by webhook or
    /// [`PingppClient::retrieve_cus_application`].
    pub async fn create_cus_application(
        &self,
        req: &CusApplicationRequest,
    ) -> Result<Value, PingppError> {
        validate_cus_application(req)?;
        let path = self.app_path("cus_applications");
        let body = cus_application_body(req);
        self.call(
            "create_cus_application",
            Method::POST,
            &path,
            Some(&body),
            |a| check_cus_application(a, None, Some(&req.order_no)),
        )
        .await
    }

    /// `GET /v1/apps/{app}/cus_applications/{id}`: the application as Ping++ sees it now.
    pub async fn retrieve_cus_application(&self, id: &str) -> Result<Value, PingppError> {
        check_cus_application_id(id)?;
        let path = self.app_path(&format!("cus_applications/{id}"));
        self.call("retrieve_cus_application", Method::GET, &path, None, |a| {
            check_cus_application(a, Some(id), None)
        })
        .await
    }

    /// `POST /v1/apps/{app}/users/{user}/settle_accounts`: a link (`card_url`, valid for a few
    /// minutes) to the page where the user binds or unbinds bank cards, returning to
    /// `return_url`. Only for a user whose personal account is open. Each call makes a new
    /// link, so repeating it is harmless.
    pub async fn card_link(&self, user_id: &str, return_url: &str) -> Result<Value, PingppError> {
        check_user_id(user_id)?;
        check_return_url("return_url", return_url)?;
        let path = self.app_path(&format!("users/{user_id}/settle_accounts"));
        let body = json!({ "return_url": return_url });
        self.call("card_link", Method::POST, &path, Some(&body), |l| {
            check_strings(l, "a card link", &["card_url"])
        })
        .await
    }

    /// `POST /v1/apps/{app}/upload_pic`: uploads a picture (base64) for a later application;
    /// the answer's `media_url` is what the application then names.
    pub async fn upload_pic(&self, pic_base64: &str) -> Result<Value, PingppError> {
        validate_pic(pic_base64)?;
        let path = self.app_path("upload_pic");
        let body = json!({ "pic": pic_base64 });
        self.call("upload_pic", Method::POST, &path, Some(&body), |p| {
            check_strings(p, "an uploaded picture", &["media_url"])
        })
        .await
    }

    /// `POST /v1/apps/{app}/card_bin`: the kind and bank of a card number.
    pub async fn card_bin(&self, account: &str) -> Result<Value, PingppError> {
        validate_card_account(account)?;
        let path = self.app_path("card_bin");
        let body = json!({ "account": account });
        self.call("card_bin", Method::POST, &path, Some(&body), |b| {
            check_strings(b, "a card bin", &["card_type", "bank_name", "bank_code"])
        })
        .await
    }

    /// `POST /v1/apps/{app}/deposits`: a top-up of the user's e-wallet, paid on the link in
    /// `extra.credential`. A repeat of its `order_no` is answered as for charges. Checks the
    /// request first, so one Ping++ would refuse is not sent at all.
    pub async fn create_deposit(&self, req: &DepositRequest) -> Result<Value, PingppError> {
        validate_deposit(req)?;
        let path = self.app_path("deposits");
        let body = deposit_body(req);
        self.call("create_deposit", Method::POST, &path, Some(&body), |d| {
            check_deposit(d, None, Some((&req.order_no, req.amount)))
        })
        .await
    }

    /// `GET /v1/apps/{app}/deposits/{id}`: the deposit as Ping++ sees it now.
    ///
    /// Ping++'s account-system document gives no deposit query; this is the path Ping++ reads
    /// every other object of an app at (withdrawals, recharges), assumed for deposits too.
    pub async fn retrieve_deposit(&self, id: &str) -> Result<Value, PingppError> {
        check_deposit_id(id)?;
        let path = self.app_path(&format!("deposits/{id}"));
        self.call("retrieve_deposit", Method::GET, &path, None, |d| {
            check_deposit(d, Some(id), None)
        })
        .await
    }

    /// The deposit made for `order_no`, if any, from `GET /v1/apps/{app}/deposits`, as
    /// [`PingppClient::find_charge`] for charges.
    ///
    /// Assumed, as for [`PingppClient::retrieve_deposit`]: the document lists no deposits;
    /// this is how Ping++ lists an app's withdrawals and recharges.
    pub async fn find_deposit(
        &self,
        order_no: &str,
        created_since: i64,
    ) -> Result<Option<Value>, PingppError> {
        let path = self.app_path("deposits?");
        let found = self
            .find_in_list("find_deposit", &path, order_no, created_since, |d| {
                d.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found.map(|d| check_deposit(d, None, None)).transpose()
    }
}
