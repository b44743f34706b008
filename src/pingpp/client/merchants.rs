//! Ping++'s account system, merchants' side: a sub-merchant (a `sub_app` under our app, with
//! the business user Ping++ makes for it), its account application at YeePay (a company's or a
//! small merchant's), and the bank account its takings are paid out to.
//!
//! Applications carry ID numbers, names, mobiles and bank accounts. They go only into request
//! bodies, which are never logged; no message of ours quotes them.

use reqwest::Method;
use serde_json::Value;

use super::merchant_requests::{
    check_merchant_application_id, check_sub_app_id, merchant_application_body,
    settle_account_body, sub_app_body, validate_merchant_application, validate_settle_account,
    validate_sub_app, MerchantApplicationRequest, MerchantKind, SettleAccountRequest,
    SubAppRequest,
};
use super::responses::{check_merchant_application, check_settle_account, check_sub_app};
use super::{PingppClient, SentOnceError};
use crate::pingpp::error::PingppError;

impl PingppClient {
    /// `POST /v1/apps/{app}/sub_apps`: creates a sub-merchant and its business user
    /// `req.user`. Ping++ refuses a second sub_app for a user (`400`, param `user`): after a
    /// lost answer, the sub_app made is the user's `related_app`
    /// ([`PingppClient::retrieve_user`]).
    pub async fn create_sub_app(&self, req: &SubAppRequest) -> Result<Value, PingppError> {
        validate_sub_app(req)?;
        let path = self.app_path("sub_apps");
        let body = sub_app_body(req);
        self.call("create_sub_app", Method::POST, &path, Some(&body), |s| {
            check_sub_app(s, None, Some(&req.user))
        })
        .await
    }

    /// `GET /v1/apps/{app}/sub_apps/{id}`: the sub-merchant as Ping++ sees it now.
    pub async fn retrieve_sub_app(&self, sub_app_id: &str) -> Result<Value, PingppError> {
        check_sub_app_id(sub_app_id)?;
        let path = self.app_path(&format!("sub_apps/{sub_app_id}"));
        self.call("retrieve_sub_app", Method::GET, &path, None, |s| {
            check_sub_app(s, Some(sub_app_id), None)
        })
        .await
    }

    /// `POST /v1/apps/{app}/{kind.path()}`: applies for a sub-merchant's account (only its
    /// sub_app's business user may). The outcome comes later (`status`), by webhook or
    /// [`PingppClient::retrieve_merchant_application`].
    ///
    /// Ping++ refuses an `order_no` it has seen, even for the same application sent again, so
    /// this is sent once (again only if it certainly did not arrive). The error says whether
    /// Ping++ may have acted: if so the application may exist, and sending it again under the
    /// same `order_no` is refused as a used number, under a new one may make a second.
    pub async fn create_merchant_application(
        &self,
        req: &MerchantApplicationRequest,
    ) -> Result<Value, SentOnceError> {
        validate_merchant_application(req).map_err(|error| SentOnceError {
            error,
            may_have_acted: false,
        })?;
        let path = self.app_path(req.kind.path());
        let body = merchant_application_body(req);
        self.call_once("create_merchant_application", &path, &body, |a| {
            check_merchant_application(a, req.kind, None, Some(&req.order_no))
        })
        .await
    }

    /// `GET /v1/apps/{app}/{kind.path()}/{id}`: the application as Ping++ sees it now.
    pub async fn retrieve_merchant_application(
        &self,
        kind: MerchantKind,
        id: &str,
    ) -> Result<Value, PingppError> {
        check_merchant_application_id(kind, id)?;
        let path = self.app_path(&format!("{}/{id}", kind.path()));
        self.call(
            "retrieve_merchant_application",
            Method::GET,
            &path,
            None,
            |a| check_merchant_application(a, kind, Some(id), None),
        )
        .await
    }

    /// `POST /v1/apps/{sub_app}/settle_accounts`: binds the bank account a sub-merchant whose
    /// application completed is paid out to. The answer shows the account masked.
    ///
    /// Ping++'s document says nothing of a repeat; this is retried like any call, so a lost
    /// answer may leave the same account bound twice.
    pub async fn create_settle_account(
        &self,
        sub_app_id: &str,
        req: &SettleAccountRequest,
    ) -> Result<Value, PingppError> {
        check_sub_app_id(sub_app_id)?;
        validate_settle_account(req)?;
        let path = format!("/v1/apps/{sub_app_id}/settle_accounts");
        let body = settle_account_body(req);
        self.call(
            "create_settle_account",
            Method::POST,
            &path,
            Some(&body),
            check_settle_account,
        )
        .await
    }
}
