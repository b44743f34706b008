//! What we ask of Ping++'s account system for sub-merchants (a sub_app per merchant, the
//! merchant's account application at YeePay, the bank account its takings are paid out to):
//! the request types, the few shapes the client checks before sending, and the JSON bodies.
//!
//! The application's fields (ID numbers, names, mobiles, bank accounts) are checked field by
//! field by the domain, which knows Ping++'s full list; the client only makes sure the request
//! can be sent. None of our own messages (errors, `Debug`) ever quotes a field's value: errors
//! end up in logs and command results.

use std::fmt;

#[cfg(doc)]
use super::PingppClient;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::account_requests::check_user_id;
use super::requests::check_id;
use crate::pingpp::error::PingppError;

/// A sub-merchant to create (`POST /v1/apps/{app}/sub_apps`): an app of its own under ours,
/// tied to the business user `user`, whom Ping++ creates with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubAppRequest {
    /// 2 to 50 characters.
    pub display_name: String,
    /// The id of the business user Ping++ makes for the sub-merchant (letters, digits, `_`),
    /// sent as `user: {"id": ...}`.
    pub user: String,
    pub description: Option<String>,
    /// A JSON object stored with the sub_app.
    pub metadata: Option<Value>,
}

/// Which account a sub-merchant applies for: a company's (`mch_applications`) or a small
/// merchant's opened with a person's ID card (`micro_applications`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantKind {
    Enterprise,
    Micro,
}

impl MerchantKind {
    /// The collection under `/v1/apps/{app}/`.
    pub fn path(self) -> &'static str {
        match self {
            MerchantKind::Enterprise => "mch_applications",
            MerchantKind::Micro => "micro_applications",
        }
    }

    /// The `object` of Ping++'s answer.
    pub fn object(self) -> &'static str {
        match self {
            MerchantKind::Enterprise => "mch_application",
            MerchantKind::Micro => "micro_application",
        }
    }
}

/// A sub-merchant's account application (`POST /v1/apps/{app}/{kind.path()}`). Ping++ never
/// takes an `order_no` twice, not even for the same application sent again: see
/// [`PingppClient::create_merchant_application`].
///
/// `fields` are the application's own, nested as Ping++ names them (`business_license`,
/// `legal_person_id_card`, `settle_account`, ...), and sent as they are. They hold ID numbers,
/// names, mobiles and bank accounts, so `Debug` shows only `kind`, `user` and `order_no`.
#[derive(Clone)]
pub struct MerchantApplicationRequest {
    pub kind: MerchantKind,
    /// The sub_app's business user.
    pub user: String,
    /// 1 to 64 letters and digits, never used before.
    pub order_no: String,
    /// Everything else in the body; neither `user` nor `order_no`.
    pub fields: Map<String, Value>,
}

impl fmt::Debug for MerchantApplicationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantApplicationRequest")
            .field("kind", &self.kind)
            .field("user", &self.user)
            .field("order_no", &self.order_no)
            .finish_non_exhaustive()
    }
}

/// The bank account a sub-merchant is paid out to (`POST /v1/apps/{sub_app}/settle_accounts`,
/// channel `bank_account`). `Debug` masks the account number.
#[derive(Clone)]
pub struct SettleAccountRequest {
    /// 6 to 34 digits.
    pub account: String,
    /// `recipient[type]`: `b2b` (a company's account) or `b2c` (a person's debit card; the
    /// only kind for micro merchants).
    pub kind: String,
    /// `recipient[open_bank]`: the bank's code, e.g. `ICBC`.
    pub open_bank: Option<String>,
    /// `recipient[open_bank_code]`: the branch's code.
    pub open_bank_code: Option<String>,
}

impl fmt::Debug for SettleAccountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleAccountRequest")
            .field("account", &mask_account(&self.account))
            .field("kind", &self.kind)
            .field("open_bank", &self.open_bank)
            .field("open_bank_code", &self.open_bank_code)
            .finish()
    }
}

/// An account number as `Debug` shows it: its last 4 digits, when it is long enough that
/// they say little, else nothing.
fn mask_account(account: &str) -> String {
    let chars: Vec<char> = account.chars().collect();
    if chars.len() < 12 {
        return "****".into();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("****{tail}")
}

fn invalid<T>(message: impl Into<String>) -> Result<T, PingppError> {
    Err(PingppError::InvalidInput(message.into()))
}

/// A sub_app id (`app_` and letters and digits): it goes into paths.
pub(super) fn check_sub_app_id(id: &str) -> Result<(), PingppError> {
    check_id("sub_app", id)
}

pub(super) fn check_merchant_application_id(
    kind: MerchantKind,
    id: &str,
) -> Result<(), PingppError> {
    check_id(kind.object(), id)
}

/// A display name may be a person's, so it is never quoted.
pub(super) fn validate_sub_app(req: &SubAppRequest) -> Result<(), PingppError> {
    let n = req.display_name.chars().count();
    if !(2..=50).contains(&n) || req.display_name.trim().is_empty() {
        return invalid("display_name must be 2 to 50 characters");
    }
    check_user_id(&req.user)?;
    if req
        .description
        .as_deref()
        .is_some_and(|d| d.trim().is_empty())
    {
        return invalid("description, when given, must not be empty");
    }
    if req.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return invalid("metadata must be a JSON object");
    }
    Ok(())
}

/// The body of `POST /v1/apps/{app}/sub_apps`: the user nested as `{"id": ...}`, as in
/// Ping++'s example; `description` and `metadata` only when set.
pub(super) fn sub_app_body(req: &SubAppRequest) -> Value {
    let mut body = json!({
        "display_name": req.display_name,
        "user": { "id": req.user },
    });
    if let Some(description) = &req.description {
        body["description"] = json!(description);
    }
    if let Some(metadata) = &req.metadata {
        body["metadata"] = metadata.clone();
    }
    body
}

/// Only what sending needs: the user, the order number, and fields that neither clash with
/// them nor are empty. The fields themselves are the domain's to check.
pub(super) fn validate_merchant_application(
    req: &MerchantApplicationRequest,
) -> Result<(), PingppError> {
    check_user_id(&req.user)?;
    let n = req.order_no.len();
    if !(1..=64).contains(&n) || !req.order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid(format!(
            "order_no {:?} must be 1 to 64 letters and digits",
            req.order_no
        ));
    }
    if req.fields.is_empty() {
        return invalid("the application has no fields");
    }
    // Sent in the same body: one of the fields would silently replace them.
    if let Some(clash) = ["user", "order_no"]
        .into_iter()
        .find(|k| req.fields.contains_key(*k))
    {
        return invalid(format!("fields must not carry {clash}"));
    }
    Ok(())
}

/// The body of `POST /v1/apps/{app}/{kind}`: the fields as given, with `user` and `order_no`.
pub(super) fn merchant_application_body(req: &MerchantApplicationRequest) -> Value {
    let mut body = req.fields.clone();
    body.insert("user".into(), json!(req.user));
    body.insert("order_no".into(), json!(req.order_no));
    Value::Object(body)
}

/// The account's digits and kind, and bank codes that are not empty (none of them quoted).
pub(super) fn validate_settle_account(req: &SettleAccountRequest) -> Result<(), PingppError> {
    let n = req.account.len();
    if !(6..=34).contains(&n) || !req.account.chars().all(|c| c.is_ascii_digit()) {
        return invalid("recipient[account] must be 6 to 34 digits");
    }
    if !matches!(req.kind.as_str(), "b2b" | "b2c") {
        return invalid("recipient[type] must be b2b or b2c");
    }
    for (name, code) in [
        ("recipient[open_bank]", &req.open_bank),
        ("recipient[open_bank_code]", &req.open_bank_code),
    ] {
        if code.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return invalid(format!("{name}, when given, must not be empty"));
        }
    }
    Ok(())
}

/// The body of `POST /v1/apps/{sub_app}/settle_accounts`; bank codes only when set.
pub(super) fn settle_account_body(req: &SettleAccountRequest) -> Value {
    let mut recipient = json!({ "account": req.account, "type": req.kind });
    if let Some(open_bank) = &req.open_bank {
        recipient["open_bank"] = json!(open_bank);
    }
    if let Some(open_bank_code) = &req.open_bank_code {
        recipient["open_bank_code"] = json!(open_bank_code);
    }
    json!({ "channel": "bank_account", "recipient": recipient })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_nested_as_ping_plus_plus_names_them() {
        let sub_app = SubAppRequest {
            display_name: "简米旗舰店".into(),
            user: "biz_003".into(),
            description: None,
            metadata: None,
        };
        assert_eq!(
            sub_app_body(&sub_app),
            json!({"display_name": "简米旗舰店", "user": {"id": "biz_003"}})
        );
        let mut fields = Map::new();
        fields.insert("business_license".into(), json!({"number": "x"}));
        let application = MerchantApplicationRequest {
            kind: MerchantKind::Enterprise,
            user: "biz_003".into(),
            order_no: "MCH1".into(),
            fields,
        };
        assert_eq!(
            merchant_application_body(&application),
            json!({"business_license": {"number": "x"}, "user": "biz_003", "order_no": "MCH1"})
        );
        let account = SettleAccountRequest {
            account: "112233445566".into(),
            kind: "b2b".into(),
            open_bank: Some("ICBC".into()),
            open_bank_code: None,
        };
        assert_eq!(
            settle_account_body(&account),
            json!({"channel": "bank_account", "recipient": {"account": "112233445566", "type": "b2b", "open_bank": "ICBC"}})
        );
        assert_eq!(mask_account("112233445566"), "****5566");
        assert_eq!(mask_account("1122334"), "****");
    }
}
