//! The account system, users' side (`/v1/apps/{app}/...`): users, personal account
//! applications (`cus_applications`), the card-binding link (`users/{id}/settle_accounts`),
//! `upload_pic` and `card_bin`, in the shapes of Ping++'s account-system document.
//!
//! An application carries a person's name, ID number and mobile number. The fake keeps only
//! what its answer shows (the name, the ID number masked) and a keyed hash of the whole request,
//! enough to tell a repeat from another application under the same order_no.

use aws_lc_rs::hmac;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hyper::Method;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{
    answer, error, invalid, now, random_alnum, random_digits, Answer, Refusal, Shared, APP_ID,
};

/// `collection` (and what follows it, `tail`) under `/v1/apps/{app}/`: `users`,
/// `cus_applications`, `upload_pic` or `card_bin`.
pub(super) fn accounts_route(
    shared: &Shared,
    method: &Method,
    collection: &str,
    tail: Option<&str>,
    body: &[u8],
) -> Answer {
    let outcome = match (method, collection, tail) {
        (&Method::POST, "users", None) => create_user(shared, body),
        (&Method::GET, "users", Some(id)) if is_plain(id) => match shared.state().users.get(id) {
            Some(user) => Ok(answer(200, user)),
            None => Ok(not_found("user", id)),
        },
        (&Method::POST, "users", Some(tail)) => match tail.strip_suffix("/settle_accounts") {
            Some(user) if is_plain(user) => card_link(shared, user, body),
            _ => Ok(unrecognized(method, collection)),
        },
        (&Method::POST, "cus_applications", None) => create_cus_application(shared, body),
        (&Method::GET, "cus_applications", Some(id)) if is_plain(id) => {
            match shared.state().cus_applications.get(id) {
                Some(application) => Ok(answer(200, application)),
                None => Ok(not_found("cus_application", id)),
            }
        }
        (&Method::POST, "upload_pic", None) => upload_pic(body),
        (&Method::POST, "card_bin", None) => card_bin(body),
        _ => Ok(unrecognized(method, collection)),
    };
    outcome.unwrap_or_else(Refusal::answer)
}

/// One path segment.
pub(super) fn is_plain(segment: &str) -> bool {
    !segment.is_empty() && !segment.contains('/')
}

pub(super) fn not_found(object: &str, id: &str) -> Answer {
    error(
        404,
        "invalid_request_error",
        &format!("未找到 {object} : {id}"),
        Some("id"),
    )
}

pub(super) fn unrecognized(method: &Method, collection: &str) -> Answer {
    error(
        404,
        "invalid_request_error",
        &format!("Unrecognized request URL ({method}: {collection})"),
        None,
    )
}

/// The body as a JSON object with only `allowed` fields.
pub(super) fn json_object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, Refusal> {
    let Ok(Value::Object(request)) = serde_json::from_slice(body) else {
        return Err(Refusal {
            status: 400,
            message: "请求体不是 JSON 对象".into(),
            param: None,
        });
    };
    if let Some(unknown) = request.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!("不支持的参数: {unknown}"), unknown));
    }
    Ok(request)
}

/// A required string that is not empty.
pub(super) fn required<'a>(
    request: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a str, Refusal> {
    match request.get(name) {
        None | Some(Value::Null) => Err(invalid(format!("缺少参数: {name}"), name)),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(invalid(format!("{name} 须为非空字符串"), name)),
    }
}

/// An absolute http(s) URL, as every return page must be.
pub(super) fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// For the `redirectUrl` of the links the fake makes: everything but unreserved characters
/// percent-encoded.
pub(super) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

const USER_FIELDS: &[&str] = &[
    "id", "address", "avatar", "email", "gender", "mobile", "name", "metadata",
];

fn create_user(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, USER_FIELDS)?;
    let id = required(&request, "id")?;
    if id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid("id 须为 64 位以内的字母、数字或下划线", "id"));
    }
    let optional = |name: &str| -> Result<Value, Refusal> {
        match request.get(name) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::String(s)) => Ok(json!(s)),
            Some(_) => Err(invalid(format!("{name} 须为字符串"), name)),
        }
    };
    let gender = optional("gender")?;
    if !matches!(gender.as_str(), None | Some("MALE" | "FEMALE")) {
        return Err(invalid("gender 须为 MALE 或 FEMALE", "gender"));
    }
    let metadata = match request.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => return Err(invalid("metadata 须为对象", "metadata")),
    };
    let user = json!({
        "id": id,
        "object": "user",
        "app": APP_ID,
        "address": optional("address")?,
        "available_balance": 0,
        "available_coupons": 0,
        "avatar": optional("avatar")?,
        "withdrawable_balance": 0,
        "created": now(),
        "disabled": false,
        "email": optional("email")?,
        "gender": gender,
        "identified": false,
        "livemode": true,
        "metadata": metadata,
        "mobile": optional("mobile")?,
        "name": optional("name")?,
        "type": "customer",
        "related_app": null,
        "settle_accounts": [],
        "identity_info": {},
        "extra": {},
        "parent_user_id": null,
    });
    let mut state = shared.state();
    if state.users.contains_key(id) {
        return Err(invalid(format!("用户已存在: {id}"), "id"));
    }
    state.users.insert(id.to_owned(), user.clone());
    Ok(answer(200, &user))
}

const CUS_APPLICATION_FIELDS: &[&str] = &[
    "user",
    "order_no",
    "cert_type",
    "cert_name",
    "cert_number",
    "mobile",
];

/// As Ping++ shows an ID number: the first 6 and last 2 characters around `*****`; a number
/// too short for that is all stars.
fn mask_cert_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() < 9 {
        return "*****".into();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}*****{tail}")
}

/// What tells a repeated application from another: every field, each length-prefixed so no
/// two requests hash alike, under the fake's own key.
fn application_digest(key: &hmac::Key, request: &Map<String, Value>) -> Vec<u8> {
    let mut context = hmac::Context::with_key(key);
    for field in CUS_APPLICATION_FIELDS {
        let value = request.get(*field).and_then(Value::as_str).unwrap_or("");
        context.update(&(value.len() as u64).to_be_bytes());
        context.update(value.as_bytes());
    }
    context.sign().as_ref().to_vec()
}

/// An application is created `pending`; a repeat of its order_no with the same fields answers
/// it as it is now (Ping++'s advice for a timed-out one), with other fields is refused.
fn create_cus_application(shared: &Shared, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, CUS_APPLICATION_FIELDS)?;
    for field in CUS_APPLICATION_FIELDS {
        required(&request, field)?;
    }
    let user = required(&request, "user")?;
    let order_no = required(&request, "order_no")?;
    if order_no.len() > 64 || !order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("order_no 须为 64 位以内的字母或数字", "order_no"));
    }
    let digest = application_digest(&shared.request_key, &request);
    let mut state = shared.state();
    if let Some((id, original)) = state.cus_application_by_order_no.get(order_no) {
        return match state.cus_applications.get(id) {
            Some(application) if *original == digest => Ok(answer(200, application)),
            _ => Err(invalid("开户申请订单号已存在", "order_no")),
        };
    }
    match state.users.get(user) {
        None => return Err(invalid(format!("用户不存在: {user}"), "user")),
        Some(u) if u["identified"] == true => {
            return Err(invalid(format!("用户已开户: {user}"), "user"))
        }
        Some(_) => {}
    }
    let (cert_name, cert_number) = (
        required(&request, "cert_name")?,
        required(&request, "cert_number")?,
    );
    let id = format!("1112{}", random_digits(15));
    let application = json!({
        "id": id,
        "object": "cus_application",
        "app": APP_ID,
        "livemode": true,
        "user": user,
        "order_no": order_no,
        "cert_name": cert_name,
        "cert_number": mask_cert_number(cert_number),
        "transaction_no": random_hex(32),
        "status": "pending",
        "created": now(),
    });
    state
        .cus_application_by_order_no
        .insert(order_no.to_owned(), (id.clone(), digest));
    state.cus_application_order.push(id.clone());
    state.cus_applications.insert(id, application.clone());
    Ok(answer(200, &application))
}

/// The card-binding page of a user whose personal account is open.
fn card_link(shared: &Shared, user: &str, body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, &["return_url"])?;
    let return_url = required(&request, "return_url")?;
    if !is_http_url(return_url) {
        return Err(invalid("return_url 须为 http(s) 地址", "return_url"));
    }
    let identified = shared
        .state()
        .users
        .get(user)
        .is_some_and(|u| u["identified"] == true);
    if !identified {
        return Err(invalid("用户未开户", "user"));
    }
    Ok(answer(
        200,
        &json!({
            "app": APP_ID,
            "user": user,
            "card_url": format!(
                "https://member.yeepay.com/yeepay-std-wallet/operateCard.html#/bankCardList?token={}&redirectUrl={}",
                random_alnum(20),
                percent_encode(return_url)
            ),
        }),
    ))
}

/// Base64 with or without its padding (the document's own example has none).
const PIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Checks the picture decodes and keeps nothing of it.
fn upload_pic(body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, &["pic"])?;
    let valid = request
        .get("pic")
        .and_then(Value::as_str)
        .is_some_and(|pic| !pic.is_empty() && PIC_BASE64.decode(pic).is_ok());
    if !valid {
        return Err(invalid("图片格式错误", "pic"));
    }
    Ok(answer(
        200,
        &json!({
            "app": APP_ID,
            "livemode": true,
            "media_url": format!(
                "http://staticres.yeepay.com/jcptb-merchant-netinj05/fake/merchant-{}-{}",
                now(),
                random_alnum(9)
            ),
        }),
    ))
}

/// Card number prefixes the fake knows: (prefix, card_type, bank_name, bank_code). Any other
/// number of the right length is a 招商银行 debit card, as in the document's example.
const CARD_BINS: &[(&str, &str, &str, &str)] = &[
    ("621485", "DEBIT", "招商银行", "CMBCHINA"),
    ("622202", "DEBIT", "中国工商银行", "ICBC"),
    ("621700", "DEBIT", "中国建设银行", "CCB"),
    ("622575", "CREDIT", "招商银行", "CMBCHINA"),
];

fn card_bin(body: &[u8]) -> Result<Answer, Refusal> {
    let request = json_object(body, &["account"])?;
    let Some(account) = request
        .get("account")
        .and_then(Value::as_str)
        .filter(|a| (12..=19).contains(&a.len()) && a.chars().all(|c| c.is_ascii_digit()))
    else {
        return Err(invalid("银行卡号格式错误", "account"));
    };
    let (_, card_type, bank_name, bank_code) = CARD_BINS
        .iter()
        .find(|(prefix, ..)| account.starts_with(prefix))
        .unwrap_or(&CARD_BINS[0]);
    Ok(answer(
        200,
        &json!({ "card_type": card_type, "bank_name": bank_name, "bank_code": bank_code }),
    ))
}
