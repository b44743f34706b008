//! Ping++'s account system, spending: orders a buyer pays a sub-merchant (from their e-wallet
//! with `balance`, or through one of YeePay's channels), refunds of paid orders, and for
//! allocation orders the sharing of the takings among users (allocations, allocation refunds)
//! until the allocation is completed and the rest goes to the sub-merchant.
//!
//! Every create is keyed by its order number, so it goes through the ordinary call with its
//! retries: Ping++ answers a repeat with the same content with the object it made (a Ping++
//! that refuses the used number instead leaves the caller to look: see
//! [`PingppClient::find_order_refund`] for refunds, the retrieves for the rest).

use reqwest::Method;
use serde_json::Value;

use super::order_requests::{
    allocation_body, allocation_complete_body, allocation_refund_body, check_token, order_body,
    order_refund_body, pay_body, validate_allocation, validate_allocation_complete,
    validate_allocation_refund, validate_order, validate_order_refund, validate_pay,
    AllocationCompleteRequest, AllocationRefundRequest, AllocationRequest, OrderPayRequest,
    OrderRefundRequest, OrderRequest,
};
use super::responses::{
    check_allocation, check_allocation_complete, check_order, check_order_refund,
    check_order_refund_list,
};
use super::{PingppClient, SentOnceError};
use crate::pingpp::error::PingppError;

impl PingppClient {
    /// `POST /v1/orders`: creates an order of our app, `created` and unpaid until
    /// [`PingppClient::pay_order`] and the payment.
    pub async fn create_order(&self, req: &OrderRequest) -> Result<Value, PingppError> {
        validate_order(req)?;
        let body = order_body(req, self.app_id());
        self.call(
            "create_order",
            Method::POST,
            "/v1/orders",
            Some(&body),
            |o| check_order(o, None, Some(&req.merchant_order_no)),
        )
        .await
    }

    /// `GET /v1/orders/{id}`: the order as Ping++ sees it now, its charges included.
    pub async fn retrieve_order(&self, id: &str) -> Result<Value, PingppError> {
        check_token("order id", id)?;
        let path = format!("/v1/orders/{id}");
        self.call("retrieve_order", Method::GET, &path, None, |o| {
            check_order(o, Some(id), None)
        })
        .await
    }

    /// `POST /v1/orders/{id}/pay`: a charge for what is unpaid of the order; the answer is the
    /// order, with what the payer needs in `charge_essentials` (for `balance`, the e-wallet's
    /// payment page in its `credential`). Each call makes a new charge, of which only one can
    /// be paid, so a retry costs nothing but an unused charge.
    pub async fn pay_order(&self, id: &str, req: &OrderPayRequest) -> Result<Value, PingppError> {
        check_token("order id", id)?;
        validate_pay(req)?;
        let path = format!("/v1/orders/{id}/pay");
        self.call(
            "pay_order",
            Method::POST,
            &path,
            Some(&pay_body(req)),
            |o| check_order(o, Some(id), None),
        )
        .await
    }

    /// `POST /v1/orders/{id}/refunds`: refunds part or all of the order's paid charge. It is
    /// decided later (`status`), by webhook or [`PingppClient::retrieve_order_refund`].
    pub async fn create_order_refund(
        &self,
        order_id: &str,
        req: &OrderRefundRequest,
    ) -> Result<Value, PingppError> {
        check_token("order id", order_id)?;
        validate_order_refund(req)?;
        let path = format!("/v1/orders/{order_id}/refunds");
        let body = order_refund_body(req);
        self.call(
            "create_order_refund",
            Method::POST,
            &path,
            Some(&body),
            |r| check_order_refund(r, None, order_id, Some(&req.order_no)),
        )
        .await
    }

    /// `GET /v1/orders/{id}/refunds/{refund_id}`: the refund as Ping++ sees it now.
    pub async fn retrieve_order_refund(
        &self,
        order_id: &str,
        refund_id: &str,
    ) -> Result<Value, PingppError> {
        check_token("order id", order_id)?;
        check_token("order_refund id", refund_id)?;
        let path = format!("/v1/orders/{order_id}/refunds/{refund_id}");
        self.call("retrieve_order_refund", Method::GET, &path, None, |r| {
            check_order_refund(r, Some(refund_id), order_id, None)
        })
        .await
    }

    /// `GET /v1/orders/{id}/refunds`: the list object of the order's refunds (its first page,
    /// as Ping++ pages it).
    pub async fn list_order_refunds(&self, order_id: &str) -> Result<Value, PingppError> {
        check_token("order id", order_id)?;
        let path = format!("/v1/orders/{order_id}/refunds");
        self.call(
            "list_order_refunds",
            Method::GET,
            &path,
            None,
            check_order_refund_list,
        )
        .await
    }

    /// The order's refund made for `order_no`, if any, paging through
    /// `GET /v1/orders/{id}/refunds`: for a create whose answer was lost and whose repeat
    /// Ping++ refused as a used number. An order has few refunds, so the whole list is read.
    pub async fn find_order_refund(
        &self,
        order_id: &str,
        order_no: &str,
    ) -> Result<Option<Value>, PingppError> {
        check_token("order id", order_id)?;
        let path = format!("/v1/orders/{order_id}/refunds?");
        let found = self
            .find_in_list("find_order_refund", &path, order_no, 0, |r| {
                r.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found
            .map(|r| check_order_refund(r, None, order_id, Some(order_no)))
            .transpose()
    }

    /// `POST /v1/allocations`: shares part of a paid allocation order's takings among users.
    /// It is decided later (`status`: `processing`, then `succeed` or `failure`).
    ///
    /// Sent once (again only while it certainly did not arrive), as every allocation create:
    /// no list shows what a lost answer made, and a repeat refused for what the first one did
    /// (the amount it took) would look like a refusal of something never made.
    pub async fn create_allocation(&self, req: &AllocationRequest) -> Result<Value, SentOnceError> {
        validate_allocation(req).map_err(SentOnceError::unsent)?;
        let body = allocation_body(req, self.app_id());
        self.call_once("create_allocation", "/v1/allocations", &body, |a| {
            check_allocation(a, None, Some(("allocation", &req.order_no)))
        })
        .await
    }

    /// `GET /v1/allocations/{id}`: the allocation (or allocation refund, the same kind of
    /// object) as Ping++ sees it now.
    pub async fn retrieve_allocation(&self, id: &str) -> Result<Value, PingppError> {
        check_token("allocation id", id)?;
        let path = format!("/v1/allocations/{id}");
        self.call("retrieve_allocation", Method::GET, &path, None, |a| {
            check_allocation(a, Some(id), None)
        })
        .await
    }

    /// `POST /v1/allocation_refunds`: takes back from users part of what a succeeded
    /// allocation gave them, into the order. Ping++ answers with an allocation object of type
    /// `allocation_refund`.
    pub async fn create_allocation_refund(
        &self,
        req: &AllocationRefundRequest,
    ) -> Result<Value, SentOnceError> {
        validate_allocation_refund(req).map_err(SentOnceError::unsent)?;
        let body = allocation_refund_body(req, self.app_id());
        self.call_once(
            "create_allocation_refund",
            "/v1/allocation_refunds",
            &body,
            |a| check_allocation(a, None, Some(("allocation_refund", &req.order_no))),
        )
        .await
    }

    /// `POST /v1/allocation_completes`: ends an allocation order's allocation; what it still
    /// holds goes to the sub-merchant once it succeeds.
    pub async fn create_allocation_complete(
        &self,
        req: &AllocationCompleteRequest,
    ) -> Result<Value, SentOnceError> {
        validate_allocation_complete(req).map_err(SentOnceError::unsent)?;
        let body = allocation_complete_body(req, self.app_id());
        self.call_once(
            "create_allocation_complete",
            "/v1/allocation_completes",
            &body,
            |c| check_allocation_complete(c, None, Some(&req.order_no)),
        )
        .await
    }

    /// `GET /v1/allocation_completes/{id}`: the completion as Ping++ sees it now.
    pub async fn retrieve_allocation_complete(&self, id: &str) -> Result<Value, PingppError> {
        check_token("allocation_complete id", id)?;
        let path = format!("/v1/allocation_completes/{id}");
        self.call(
            "retrieve_allocation_complete",
            Method::GET,
            &path,
            None,
            |c| check_allocation_complete(c, Some(id), None),
        )
        .await
    }
}
