//! What we ask of Ping++'s account system (users' e-wallets at YeePay): the request types,
//! Ping++'s limits on them and the JSON body each becomes, as `requests.rs` does for charges.
//!
//! Opening an account sends a person's name, ID number and mobile number. None of our own
//! messages (errors, `Debug`) ever shows them, nor a card number or a picture: errors end up in
//! logs and command results.

use std::fmt;

#[cfg(doc)]
use super::PingppClient;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::requests::check_id;
use crate::pingpp::error::PingppError;

/// A personal account to open (`POST /v1/apps/{app}/cus_applications`): the identity of
/// `user` as on their ID card. If the answer is lost, send it again as it was, with the same
/// `order_no` (Ping++'s own advice): Ping++ then answers with the application it has.
///
/// It carries personal data, so it is neither `Debug`-derived nor `Serialize`: its `Debug`
/// shows only `user` and `order_no`, and its body is built field by field.
#[derive(Clone, PartialEq, Eq)]
pub struct CusApplicationRequest {
    /// The Ping++ user id (see [`PingppClient::create_user`]).
    pub user: String,
    /// 1 to 64 letters and digits, unique per application.
    pub order_no: String,
    /// `"1"` for a Chinese ID card, the only kind Ping++ takes for personal accounts.
    pub cert_type: String,
    pub cert_name: String,
    pub cert_number: String,
    pub mobile: String,
}

impl fmt::Debug for CusApplicationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CusApplicationRequest")
            .field("user", &self.user)
            .field("order_no", &self.order_no)
            .finish_non_exhaustive()
    }
}

/// A top-up of a user's own e-wallet (`POST /v1/apps/{app}/deposits`): Ping++ answers with a
/// payment link (`extra.credential`) the user pays on. As for charges, retries send the same
/// `order_no`; a refused repeat is settled by [`PingppClient::find_deposit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepositRequest {
    /// The Ping++ user id, whose personal account is open.
    pub user: String,
    /// 8 to 20 letters and digits, unique per deposit.
    pub order_no: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// `extra[return_url]`: where the payment page returns to, http(s).
    pub return_url: String,
    /// A JSON object stored with the deposit.
    pub metadata: Option<Value>,
}

fn invalid<T>(message: impl Into<String>) -> Result<T, PingppError> {
    Err(PingppError::InvalidInput(message.into()))
}

/// A Ping++ user id: 1 to 64 ASCII letters, digits and `_` (Ping++'s own rule for `id`).
pub(super) fn check_user_id(id: &str) -> Result<(), PingppError> {
    check_id("user", id)
}

pub(super) fn check_cus_application_id(id: &str) -> Result<(), PingppError> {
    check_id("cus_application", id)
}

pub(super) fn check_deposit_id(id: &str) -> Result<(), PingppError> {
    check_id("deposit", id)
}

/// The page a Ping++ flow returns the user to: an absolute http(s) URL.
pub(super) fn check_return_url(name: &str, url: &str) -> Result<(), PingppError> {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => invalid(format!("{name} must be an http(s) URL")),
    }
}

/// Every field is required. The personal ones are checked for presence only, and named (never
/// quoted) when missing.
pub(super) fn validate_cus_application(req: &CusApplicationRequest) -> Result<(), PingppError> {
    check_user_id(&req.user)?;
    let n = req.order_no.len();
    if !(1..=64).contains(&n) || !req.order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid(format!(
            "order_no {:?} must be 1 to 64 letters and digits",
            req.order_no
        ));
    }
    for (name, value) in [
        ("cert_type", &req.cert_type),
        ("cert_name", &req.cert_name),
        ("cert_number", &req.cert_number),
        ("mobile", &req.mobile),
    ] {
        if value.trim().is_empty() {
            return invalid(format!("{name} is required"));
        }
    }
    Ok(())
}

/// The body of `POST /v1/apps/{app}/cus_applications`.
pub(super) fn cus_application_body(req: &CusApplicationRequest) -> Value {
    json!({
        "user": req.user,
        "order_no": req.order_no,
        "cert_type": req.cert_type,
        "cert_name": req.cert_name,
        "cert_number": req.cert_number,
        "mobile": req.mobile,
    })
}

/// A picture to upload: base64 text, not empty (what it holds is never quoted).
pub(super) fn validate_pic(pic: &str) -> Result<(), PingppError> {
    let base64_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if pic.is_empty() || !pic.chars().all(base64_char) {
        return invalid("pic must be non-empty base64");
    }
    Ok(())
}

/// A bank card number: digits only (it is never quoted).
pub(super) fn validate_card_account(account: &str) -> Result<(), PingppError> {
    if account.is_empty() || account.len() > 34 || !account.chars().all(|c| c.is_ascii_digit()) {
        return invalid("account must be 1 to 34 digits");
    }
    Ok(())
}

/// The same limits as a withdrawal's, and an http(s) return page.
pub(super) fn validate_deposit(req: &DepositRequest) -> Result<(), PingppError> {
    let n = req.order_no.len();
    if !(8..=20).contains(&n) || !req.order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid(format!(
            "order_no {:?} must be 8 to 20 letters and digits",
            req.order_no
        ));
    }
    if req.user.is_empty() || req.user.chars().count() > 64 {
        return invalid("user must be 1 to 64 characters");
    }
    if req.amount == 0 {
        return invalid("amount must be at least 1 fen");
    }
    check_return_url("extra[return_url]", &req.return_url)?;
    if req.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return invalid("metadata must be a JSON object");
    }
    Ok(())
}

/// The body of `POST /v1/apps/{app}/deposits`, `metadata` only when set.
pub(super) fn deposit_body(req: &DepositRequest) -> Value {
    let mut body = json!({
        "user": req.user,
        "order_no": req.order_no,
        "amount": req.amount,
        "extra": { "return_url": req.return_url },
    });
    if let Some(metadata) = &req.metadata {
        body["metadata"] = metadata.clone();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn application() -> CusApplicationRequest {
        CusApplicationRequest {
            user: "u_1".into(),
            order_no: "CUS202208250000003".into(),
            cert_type: "1".into(),
            cert_name: "张三".into(),
            cert_number: "420381199206062220".into(),
            mobile: "13000000000".into(),
        }
    }

    #[test]
    fn application_limits_never_quote_personal_data() {
        assert!(validate_cus_application(&application()).is_ok());
        let bad: Vec<fn(&mut CusApplicationRequest)> = vec![
            |a| a.user = "u-1".into(),
            |a| a.order_no = String::new(),
            |a| a.order_no = "CUS_1".into(),
            |a| a.cert_type = String::new(),
            |a| a.cert_name = " ".into(),
            |a| a.cert_number = String::new(),
            |a| a.mobile = String::new(),
        ];
        for change in bad {
            let mut a = application();
            change(&mut a);
            let error = validate_cus_application(&a).unwrap_err().to_string();
            for personal in ["张三", "420381199206062220", "13000000000"] {
                assert!(!error.contains(personal), "{error}");
            }
        }
        let shown = format!("{:?}", application());
        assert!(shown.contains("CUS202208250000003"), "{shown}");
        for personal in ["张三", "420381", "13000000000"] {
            assert!(!shown.contains(personal), "{shown}");
        }
    }

    #[test]
    fn deposit_limits() {
        let ok = DepositRequest {
            user: "u_1".into(),
            order_no: "CZ1663573797".into(),
            amount: 1,
            return_url: "https://plus.io/wallet".into(),
            metadata: None,
        };
        assert!(validate_deposit(&ok).is_ok());
        let bad: Vec<fn(&mut DepositRequest)> = vec![
            |d| d.order_no = "CZ1".into(),
            |d| d.user = String::new(),
            |d| d.amount = 0,
            |d| d.return_url = "ftp://plus.io".into(),
            |d| d.return_url = "/wallet".into(),
            |d| d.metadata = Some(json!([])),
        ];
        for change in bad {
            let mut d = ok.clone();
            change(&mut d);
            assert!(
                matches!(validate_deposit(&d), Err(PingppError::InvalidInput(_))),
                "{d:?}"
            );
        }
    }
}
