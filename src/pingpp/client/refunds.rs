//! Refunds of a paid charge (`/v1/charges/{id}/refunds`): what we ask for, its checks and body,
//! and the endpoints.
//!
//! A charge refund carries no order number of ours, and Ping++ makes a new one for every
//! create it receives: the create is sent once ([`PingppClient::call_once`]: again only while
//! it certainly did not arrive), marked with `metadata.refund_no`, and a create whose answer
//! was lost is looked for in the charge's refund list by that mark
//! ([`PingppClient::find_charge_refund`]).

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::requests::check_charge_id;
use super::responses::check_charge_refund;
use super::{PingppClient, SentOnceError};
use crate::pingpp::error::PingppError;

/// A refund of part or all of a paid charge (`POST /v1/charges/{id}/refunds`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRefundRequest {
    /// Fen, at least 1 and at most what the charge has left to refund (Ping++ checks that).
    pub amount: u64,
    /// 1 to 255 characters: Ping++ requires one.
    pub description: String,
    /// Our mark, sent as `metadata.refund_no` (1 to 64 letters, digits and `_`).
    pub refund_no: String,
}

fn validate(req: &ChargeRefundRequest) -> Result<(), PingppError> {
    let invalid = |m: &str| Err(PingppError::InvalidInput(m.to_owned()));
    if req.amount == 0 {
        return invalid("amount must be at least 1 fen");
    }
    if !(1..=255).contains(&req.description.chars().count()) {
        return invalid("description must be 1 to 255 characters");
    }
    let n = req.refund_no.len();
    if !(1..=64).contains(&n) || !req.refund_no.chars().all(super::requests::is_id_char) {
        return invalid("refund_no must be 1 to 64 letters, digits and _");
    }
    Ok(())
}

fn body(req: &ChargeRefundRequest) -> Value {
    json!({
        "amount": req.amount,
        "description": req.description,
        "metadata": { "refund_no": req.refund_no },
    })
}

fn refund_no_of(refund: &Value) -> Option<&str> {
    refund.get("metadata")?.get("refund_no")?.as_str()
}

impl PingppClient {
    /// `POST /v1/charges/{id}/refunds`: a refund of the charge, `pending` until Ping++ reports
    /// it `succeeded` or `failed` (webhook `refund.succeeded`, or
    /// [`PingppClient::retrieve_charge_refund`]). Sent once: `may_have_acted` says whether a
    /// failure may hide a refund made.
    pub async fn create_charge_refund(
        &self,
        charge_id: &str,
        req: &ChargeRefundRequest,
    ) -> Result<Value, SentOnceError> {
        check_charge_id(charge_id).map_err(SentOnceError::unsent)?;
        validate(req).map_err(SentOnceError::unsent)?;
        let path = format!("/v1/charges/{charge_id}/refunds");
        self.call_once("create_charge_refund", &path, &body(req), |r| {
            check_charge_refund(r, None, charge_id, Some(&req.refund_no))
        })
        .await
    }

    /// `GET /v1/charges/{id}/refunds/{refund_id}`: the refund as Ping++ sees it now.
    pub async fn retrieve_charge_refund(
        &self,
        charge_id: &str,
        refund_id: &str,
    ) -> Result<Value, PingppError> {
        check_charge_id(charge_id)?;
        super::requests::check_id("refund", refund_id)?;
        let path = format!("/v1/charges/{charge_id}/refunds/{refund_id}");
        self.call("retrieve_charge_refund", Method::GET, &path, None, |r| {
            check_charge_refund(r, Some(refund_id), charge_id, None)
        })
        .await
    }

    /// The charge's refund marked `refund_no`, if any, paging through
    /// `GET /v1/charges/{id}/refunds` (a charge has few refunds: the whole list is read).
    pub async fn find_charge_refund(
        &self,
        charge_id: &str,
        refund_no: &str,
    ) -> Result<Option<Value>, PingppError> {
        check_charge_id(charge_id)?;
        let path = format!("/v1/charges/{charge_id}/refunds?");
        let found = self
            .find_in_list("find_charge_refund", &path, refund_no, 0, refund_no_of)
            .await?;
        found
            .map(|r| {
                self.checked(r, |r| {
                    check_charge_refund(r, None, charge_id, Some(refund_no))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChargeRefundRequest {
        ChargeRefundRequest {
            amount: 300,
            description: "退回".into(),
            refund_no: "f0000000000000000001".into(),
        }
    }

    #[test]
    fn a_refund_request_is_checked_before_it_is_sent() {
        assert!(validate(&request()).is_ok());
        let bad = [
            ChargeRefundRequest {
                amount: 0,
                ..request()
            },
            ChargeRefundRequest {
                description: String::new(),
                ..request()
            },
            ChargeRefundRequest {
                description: "x".repeat(256),
                ..request()
            },
            ChargeRefundRequest {
                refund_no: "f/1".into(),
                ..request()
            },
        ];
        for req in bad {
            assert!(
                matches!(validate(&req), Err(PingppError::InvalidInput(_))),
                "{req:?}"
            );
        }
        assert_eq!(
            body(&request()),
            json!({"amount": 300, "description": "退回", "metadata": {"refund_no": "f0000000000000000001"}})
        );
        assert_eq!(
            refund_no_of(&json!({"metadata": {"refund_no": "f1"}})),
            Some("f1")
        );
        assert_eq!(refund_no_of(&json!({"metadata": {}})), None);
    }
}
