//! The account system, merchants' side: sub-merchants (`/v1/apps/{app}/sub_apps`), their
//! account applications (`mch_applications` for companies, `micro_applications` for small
//! merchants) and the bank accounts they are paid out to (`/v1/apps/{sub_app}/settle_accounts`),
//! in the shapes of Ping++'s account-system document.
//!
//! Applications carry ID numbers, names, mobiles and bank accounts; settle accounts a bank
//! account. The fake keeps none of them: an application is kept as answered (which echoes none
//! of its fields), a settle account with its number masked. As Ping++'s document says, an
//! application's order_no is never taken twice, so no trace of the request is needed to tell a
//! repeat either.

use hyper::Method;
use serde_json::{json, Map, Value};

use super::accounts::{is_plain, json_object, not_found, required, unrecognized};
use super::{answer, invalid, now, random_alnum, random_digits, Answer, Refusal, Shared};
use super::{FakePingpp, APP_ID};

/// `collection` (and what follows it, `tail`) under `/v1/apps/{APP_ID}/`: `sub_apps`,
/// `mch_applications` or `micro_applications`.
pub(super) fn merchants_route(
    shared: &Shared,
    method: &Method,
    collection: &str,
    tail: Option<&str>,
    body: &[u8],
) -> Answer {
    let outcome = match (method, collection, tail) {
        (&Method::POST, "sub_apps", None) => create_sub_app(shared, body),
        (&Method::GET, "sub_apps", Some(id)) if is_plain(id) => match shared.state().sub_app(id) {
            Some(sub_app) => Ok(answer(200, &sub_app)),
            None => Ok(not_found("sub_app", id)),
        },
        (&Method::POST, "mch_applications", None) => {
            create_application(shared, Kind::Enterprise, body)
        }
        (&Method::POST, "micro_applications", None) => {
            create_application(shared, Kind::Micro, body)
        }
        (&Method::GET, "mch_applications" | "micro_applications", Some(id)) if is_plain(id) => {
            let object = collection.trim_end_matches('s');
            // Each collection shows only its own kind.
            match shared.state().merchant_applications.get(id) {
                Some(application) if application["object"] == object => {
                    Ok(answer(200, application))
                }
                _ => Ok(not_found(object, id)),
            }
        }
        _ => Ok(unrecognized(method, collection)),
    };
    outcome.unwrap_or_else(Refusal::answer)
}

/// `POST /v1/apps/{app}/settle_accounts` where `app` is a sub_app (the document's `APP_ID`).
pub(super) fn settle_accounts_route(
    shared: &Shared,
    method: &Method,
    app: &str,
    body: &[u8],
) -> Answer {
    if method != Method::POST {
        return unrecognized(method, "settle_accounts");
    }
    create_settle_account(shared, app, body).unwrap_or_else(Refusal::answer)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Enterprise,
    Micro,
}

impl Kind {
    fn object(self) -> &'static str {
        match self {
            Kind::Enterprise => "mch_application",
            Kind::Micro => "micro_application",
        }
    }

    /// The body's top-level fields in the document.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Enterprise => &[
                "user",
                "order_no",
                "business_license",
                "legal_person_id_card",
                "contact_id_card",
                "merchant_address",
                "settle_account",
                "industry_category",
                "merchant_logo",
                "function_qualification",
                "products",
            ],
            Kind::Micro => &[
                "user",
                "order_no",
                "business_license",
                "merchant_address",
                "legal_person_id_card",
                "settle_account",
                "function_qualification",
                "products",
            ],
        }
    }
}

const MICRO_B2C_ONLY: &str = "小微商户仅支持 b2c 结算账户";

const SUB_APP_FIELDS: &[&str] = &["display_name", "user", "description", "metadata"];

/// A sub_app and the business user it comes with (created with it, its `related_app` the
/// sub_app). One sub_app per user.
fn create_sub_app(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, SUB_APP_FIELDS)?;
    let display_name = required(&request, "display_name")?;
    if !(2..=50).contains(&display_name.chars().count()) {
        return Err(invalid("display_name 须为 2~50 位", "display_name"));
    }
    // The document's example nests the user as {"id": ...}.
    let Some(user) = request
        .get("user")
        .and_then(|u| u.get("id"))
        .and_then(Value::as_str)
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    else {
        return Err(invalid(
            "user[id] 须为 64 位以内的字母、数字或下划线",
            "user",
        ));
    };
    let description = match request.get("description") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(d)) => json!(d),
        Some(_) => return Err(invalid("description 须为字符串", "description")),
    };
    let metadata = match request.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => return Err(invalid("metadata 须为对象", "metadata")),
    };
    let mut state = shared.state();
    if state.sub_app_by_user.contains_key(user) {
        return Err(invalid("该用户已关联子商户", "user"));
    }
    if state.users.contains_key(user) {
        return Err(invalid(format!("用户已存在: {user}"), "user"));
    }
    let id = format!("app_{}", random_alnum(16));
    let created = now();
    let business_user = json!({
        "id": user,
        "object": "user",
        "app": APP_ID,
        "address": null,
        "available_balance": 0,
        "available_coupons": 0,
        "avatar": null,
        "withdrawable_balance": 0,
        "created": created,
        "disabled": false,
        "email": null,
        "gender": null,
        "identified": false,
        "livemode": true,
        "metadata": {},
        "mobile": null,
        "name": null,
        "type": "business",
        "related_app": id,
        "settle_accounts": null,
        "identity_info": {},
        "extra": {},
        "parent_user_id": null,
    });
    // Kept with the user's id; answers embed the user as it is then.
    let sub_app = json!({
        "id": id,
        "object": "sub_app",
        "created": created,
        "display_name": display_name,
        "account": format!("acct_{}", random_alnum(16)),
        "description": description,
        "metadata": metadata,
        "available_methods": [],
        "user": user,
        "parent_app": APP_ID,
    });
    state.users.insert(user.to_owned(), business_user);
    state.sub_app_by_user.insert(user.to_owned(), id.clone());
    state.sub_app_order.push(id.clone());
    state.sub_apps.insert(id.clone(), sub_app);
    let shown = state.sub_app(&id).unwrap_or_default();
    Ok(answer(200, &shown))
}

/// `outer[inner]`, a non-empty string (the param named as Ping++ names it).
fn nested<'a>(
    request: &'a Map<String, Value>,
    outer: &str,
    inner: &str,
) -> Result<&'a str, Refusal> {
    let param = format!("{outer}[{inner}]");
    match request.get(outer).and_then(|o| o.get(inner)) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        None | Some(Value::Null) => Err(invalid(format!("缺少参数: {param}"), &param)),
        Some(_) => Err(invalid(format!("{param} 须为非空字符串"), &param)),
    }
}

/// An application of a sub_app's business user, created `pending`. A used order_no is refused
/// whatever comes with it: the document forbids sending an application again under it.
fn create_application(shared: &Shared, kind: Kind, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, kind.fields())?;
    let user = required(&request, "user")?;
    let order_no = required(&request, "order_no")?;
    if order_no.chars().count() > 64 {
        return Err(invalid("order_no 须为 1~64 位", "order_no"));
    }
    // A few of the required fields, enough to catch a body nested the wrong way; the rest of
    // Ping++'s checks are the domain's to mirror.
    match kind {
        Kind::Enterprise => nested(&request, "business_license", "number")?,
        Kind::Micro => nested(&request, "business_license", "sign_name")?,
    };
    let account = nested(&request, "settle_account", "account")?;
    if !(6..=34).contains(&account.len()) || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "settle_account[account] 须为 6~34 位数字",
            "settle_account[account]",
        ));
    }
    match nested(&request, "settle_account", "type")? {
        "b2c" => {}
        "b2b" if kind == Kind::Enterprise => {}
        "b2b" => return Err(invalid(MICRO_B2C_ONLY, "settle_account[type]")),
        _ => {
            return Err(invalid(
                "settle_account[type] 须为 b2b 或 b2c",
                "settle_account[type]",
            ))
        }
    }
    let products = match request.get("products") {
        None | Some(Value::Null) => json!([]),
        Some(Value::Array(p)) if p.iter().all(Value::is_string) => json!(p),
        Some(_) => return Err(invalid("products 须为字符串数组", "products")),
    };
    let mut state = shared.state();
    if state.merchant_application_order_nos.contains(order_no) {
        return Err(invalid("开户申请订单号已存在", "order_no"));
    }
    if !state.sub_app_by_user.contains_key(user) {
        return Err(invalid("用户不是子商户", "user"));
    }
    let id = format!("1212{}", random_digits(15));
    let application = json!({
        "id": id,
        "object": kind.object(),
        "app": APP_ID,
        "user": user,
        "order_no": order_no,
        "extra": {},
        "transaction_no": format!("TYSHRW{}", random_digits(20)),
        "mch_id": null,
        "status": "pending",
        "failure_msg": null,
        "created": now(),
        "time_finished": null,
        "products": products,
    });
    state
        .merchant_application_order_nos
        .insert(order_no.to_owned());
    state.merchant_application_order.push(id.clone());
    state.merchant_applications.insert(id, application.clone());
    Ok(answer(200, &application))
}

/// As Ping++ shows a bank account: the first 6 and last 4 digits around `**`; one too short
/// for that is `**` alone.
fn mask_account(account: &str) -> String {
    if account.len() < 11 {
        return "**".into();
    }
    format!("{}**{}", &account[..6], &account[account.len() - 4..])
}

const RECIPIENT_FIELDS: &[&str] = &["account", "type", "open_bank", "open_bank_code"];

/// A bank account of a sub-merchant whose application completed, kept masked.
fn create_settle_account(shared: &Shared, app: &str, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, &["channel", "recipient"])?;
    if required(&request, "channel")? != "bank_account" {
        return Err(invalid("channel 仅支持 bank_account", "channel"));
    }
    let recipient = match request.get("recipient") {
        Some(Value::Object(r)) => r,
        _ => return Err(invalid("缺少参数: recipient", "recipient")),
    };
    if let Some(unknown) = recipient
        .keys()
        .find(|k| !RECIPIENT_FIELDS.contains(&k.as_str()))
    {
        let param = format!("recipient[{unknown}]");
        return Err(invalid(format!("不支持的参数: {param}"), &param));
    }
    let account = nested(&request, "recipient", "account")?;
    if !(6..=34).contains(&account.len()) || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "recipient[account] 须为 6~34 位数字",
            "recipient[account]",
        ));
    }
    let kind = nested(&request, "recipient", "type")?;
    if !matches!(kind, "b2b" | "b2c") {
        return Err(invalid(
            "recipient[type] 须为 b2b 或 b2c",
            "recipient[type]",
        ));
    }
    let optional = |name: &str| -> Result<Option<&str>, Refusal> {
        match recipient.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => nested(&request, "recipient", name).map(Some),
        }
    };
    let (open_bank, open_bank_code) = (optional("open_bank")?, optional("open_bank_code")?);
    let mut state = shared.state();
    let Some(sub_app) = state.sub_apps.get(app) else {
        return Err(Refusal {
            status: 404,
            message: format!("app 不存在: {app}"),
            param: Some("app".into()),
        });
    };
    let user = sub_app["user"].as_str().unwrap_or_default().to_owned();
    let completed = state
        .merchant_application_order
        .iter()
        .filter_map(|id| state.merchant_applications.get(id))
        .find(|a| a["user"] == user.as_str() && a["status"] == "completed");
    let Some(completed) = completed else {
        return Err(invalid("子商户未开户", "app"));
    };
    if completed["object"] == Kind::Micro.object() && kind != "b2c" {
        return Err(invalid(MICRO_B2C_ONLY, "recipient[type]"));
    }
    let mut shown_recipient = json!({
        "account": mask_account(account),
        "type": kind,
        "open_bank": open_bank,
        "extra": {
            "card_id": random_digits(18),
            "bank_card_status": "succeeded",
        },
    });
    if let Some(code) = open_bank_code {
        shown_recipient["open_bank_code"] = json!(code);
    }
    let settle_account = json!({
        "id": format!("3202{}", random_digits(20)),
        "object": "settle_account",
        "created": now(),
        "livemode": true,
        "channel": "bank_account",
        "recipient": shown_recipient,
    });
    state.settle_accounts.push(settle_account.clone());
    Ok(answer(200, &settle_account))
}

impl FakePingpp {
    /// All sub_apps, in creation order, each with its business user as it is now.
    pub fn sub_apps(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .sub_app_order
            .iter()
            .filter_map(|id| state.sub_app(id))
            .collect()
    }

    /// All merchant applications, both kinds, in creation order.
    pub fn merchant_applications(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .merchant_application_order
            .iter()
            .map(|id| state.merchant_applications[id].clone())
            .collect()
    }

    /// YeePay opened the merchant's account: the application is `completed`, with the
    /// channel's merchant number (`mch_id`) and `time_finished`. Returns it as it is now.
    pub fn complete_merchant_application(&self, id: &str) -> Value {
        self.update_merchant_application(id, |a| {
            a["status"] = json!("completed");
            a["mch_id"] = json!(format!("1008{}", random_digits(7)));
            a["time_finished"] = json!(now());
        })
    }

    /// YeePay refused the application.
    pub fn fail_merchant_application(&self, id: &str, msg: &str) -> Value {
        self.update_merchant_application(id, |a| {
            a["status"] = json!("failed");
            a["failure_msg"] = json!(msg);
        })
    }

    fn update_merchant_application(&self, id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut state = self.shared.state();
        let application = state
            .merchant_applications
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no merchant application {id}"));
        change(application);
        application.clone()
    }

    /// All settle accounts bound, in creation order, as answered (account numbers masked).
    pub fn settle_accounts(&self) -> Vec<Value> {
        self.shared.state().settle_accounts.clone()
    }
}
