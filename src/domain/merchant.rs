//! Sub-merchants (子商户) with the money at Ping++: a creator or seller is a Ping++ sub-app with
//! its own business user, opened by an enterprise (企业开户) or micro-enterprise (小微企业开户)
//! application and paid out to a bound settle account. Every field of the applications is
//! checked here against the document's lengths and enums before Ping++ is asked, and no
//! message repeats a value: the fields hold ID numbers, names, mobiles and bank accounts.

use serde_json::{Map, Value};

use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::MSG_BAD_DATA;

pub const MSG_DISPLAY_NAME: &str = "子商户名称须为 2 到 50 个字符";
pub const MSG_NOT_A_MERCHANT: &str = "该用户不是子商户";
pub const MSG_ALREADY_A_MERCHANT: &str = "该用户已是子商户";
pub const MSG_KIND: &str = "开户类型须为 enterprise 或 micro";
pub const MSG_FIELD_REQUIRED: &str = "缺少必填字段";
pub const MSG_FIELD_INVALID: &str = "字段格式错误";
pub const MSG_UNKNOWN_FIELD: &str = "不支持的字段";
pub const MSG_MICRO_B2C_ONLY: &str = "小微商户仅支持 b2c 结算账户";
pub const MSG_APPLICATION_PENDING: &str = "子商户开户申请正在审核中";
pub const MSG_NOT_OPEN: &str = "子商户未开户";
pub const MSG_ALREADY_OPEN: &str = "子商户已开户";
pub const MSG_UNKNOWN_APPLICATION: &str = "开户申请不存在";
pub const MSG_OUTCOME_UNKNOWN: &str = "开户申请结果未知，请人工核实后以新的请求重新申请";
pub const MSG_CREATED: &str = "子商户创建成功";
pub const MSG_APPLIED: &str = "开户申请已提交";

pub const MAX_DESCRIPTION_CHARS: usize = 255;

/// Which application opens the sub-merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 企业开户 (`mch_applications`).
    Enterprise,
    /// 小微企业开户 (`micro_applications`): an individual's ID card and debit card.
    Micro,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Enterprise => "enterprise",
            Kind::Micro => "micro",
        }
    }

    pub fn parse(word: &str) -> Option<Kind> {
        match word {
            "enterprise" => Some(Kind::Enterprise),
            "micro" => Some(Kind::Micro),
            _ => None,
        }
    }

    fn spec(self) -> &'static [Field] {
        match self {
            Kind::Enterprise => ENTERPRISE,
            Kind::Micro => MICRO,
        }
    }
}

/// What one field of an application may hold.
struct Field {
    /// `group.name`, or `name` at the top.
    path: &'static str,
    required: bool,
    rule: Rule,
}

enum Rule {
    /// Text of `min..=max` characters.
    Text(usize, usize),
    OneOf(&'static [&'static str]),
    /// A list of payment products (支付产品枚举).
    Products,
}

const fn req(path: &'static str, rule: Rule) -> Field {
    Field {
        path,
        required: true,
        rule,
    }
}

const fn opt(path: &'static str, rule: Rule) -> Field {
    Field {
        path,
        required: false,
        rule,
    }
}

const SIGN_TYPES: &[&str] = &["individual", "enterprise", "institution", "community"];
const ID_CARD_TYPES: &[&str] = &[
    "id_card",
    "passport",
    "hm_visitorpass",
    "taiwan",
    "soldier",
    "officers",
    "overseas_card",
    "other",
];
pub const SETTLE_ACCOUNT_TYPES: &[&str] = &["b2b", "b2c"];
const PRODUCTS: &[&str] = &[
    "yeepay_wx_pub_qr",
    "yeepay_wx_pub",
    "yeepay_wx_pub_ofl",
    "yeepay_wx_lite",
    "yeepay_wx_lite_ofl",
    "yeepay_wx_pub_scan",
    "yeepay_wx_pub_scan_ofl",
    "yeepay_alipay_qr",
    "yeepay_alipay_lite",
    "yeepay_alipay_pub",
    "yeepay_alipay_scan",
    "yeepay_upacp_qr",
    "yeepay_upacp_scan",
];

/// 企业开户's fields, with the document's lengths.
const ENTERPRISE: &[Field] = &[
    req("business_license.copy", Rule::Text(1, 255)),
    req("business_license.number", Rule::Text(15, 18)),
    req(
        "business_license.account_opening_license",
        Rule::Text(10, 64),
    ),
    req(
        "business_license.account_opening_license_copy",
        Rule::Text(1, 255),
    ),
    req("business_license.company_name", Rule::Text(2, 64)),
    req("business_license.short_name", Rule::Text(1, 128)),
    req("business_license.sign_type", Rule::OneOf(SIGN_TYPES)),
    opt("business_license.hand_license", Rule::Text(1, 255)),
    req("legal_person_id_card.type", Rule::OneOf(ID_CARD_TYPES)),
    req("legal_person_id_card.copy", Rule::Text(1, 255)),
    req("legal_person_id_card.national", Rule::Text(1, 255)),
    req("legal_person_id_card.number", Rule::Text(1, 255)),
    req("legal_person_id_card.name", Rule::Text(1, 255)),
    req("contact_id_card.number", Rule::Text(1, 255)),
    req("contact_id_card.name", Rule::Text(1, 255)),
    opt("contact_id_card.person_name", Rule::Text(1, 255)),
    req("contact_id_card.mobile", Rule::Text(1, 255)),
    req("contact_id_card.email", Rule::Text(1, 255)),
    req("contact_id_card.service_phone", Rule::Text(1, 255)),
    req("merchant_address.province", Rule::Text(1, 16)),
    req("merchant_address.city", Rule::Text(1, 16)),
    req("merchant_address.district", Rule::Text(1, 16)),
    req("merchant_address.address", Rule::Text(1, 128)),
    req("settle_account.account", Rule::Text(6, 34)),
    req("settle_account.type", Rule::OneOf(SETTLE_ACCOUNT_TYPES)),
    req("settle_account.bank_code", Rule::Text(1, 64)),
    opt(
        "industry_category.primary_industry_category",
        Rule::Text(1, 16),
    ),
    opt(
        "industry_category.secondary_industry_category",
        Rule::Text(1, 16),
    ),
    opt(
        "industry_category.industry_qualification_copy",
        Rule::Text(1, 255),
    ),
    opt("merchant_logo", Rule::Text(1, 255)),
    opt("function_qualification.share_scene", Rule::Text(1, 64)),
    opt(
        "function_qualification.share_certificate",
        Rule::Text(1, 255),
    ),
    opt("products", Rule::Products),
];

/// 小微企业开户's fields: a settle account of `b2c` only.
const MICRO: &[Field] = &[
    req("business_license.sign_name", Rule::Text(1, 128)),
    req("business_license.short_name", Rule::Text(1, 128)),
    req("merchant_address.province", Rule::Text(1, 16)),
    req("merchant_address.city", Rule::Text(1, 16)),
    req("merchant_address.district", Rule::Text(1, 16)),
    req("merchant_address.address", Rule::Text(1, 128)),
    req("legal_person_id_card.type", Rule::OneOf(ID_CARD_TYPES)),
    req("legal_person_id_card.number", Rule::Text(1, 255)),
    req("legal_person_id_card.copy", Rule::Text(1, 255)),
    req("legal_person_id_card.national", Rule::Text(1, 255)),
    req("legal_person_id_card.name", Rule::Text(1, 255)),
    req("legal_person_id_card.mobile", Rule::Text(1, 255)),
    req("settle_account.account", Rule::Text(6, 34)),
    req("settle_account.type", Rule::OneOf(&["b2c"])),
    req("settle_account.bank_code", Rule::Text(1, 64)),
    opt("function_qualification.share_scene", Rule::Text(1, 64)),
    opt(
        "function_qualification.share_certificate",
        Rule::Text(1, 255),
    ),
    opt("products", Rule::Products),
];

/// The groups an application nests its fields in, as the document does.
const GROUPS: &[&str] = &[
    "business_license",
    "legal_person_id_card",
    "contact_id_card",
    "merchant_address",
    "settle_account",
    "industry_category",
    "function_qualification",
];

/// `merchant.create`: the sub-app's name and what Ping++ keeps with it.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    pub display_name: String,
    pub description: Option<String>,
    pub metadata: Option<Value>,
}

pub fn parse_create(data: &Map<String, Value>) -> Result<CreateRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let display_name = match data.get("display_name").and_then(Value::as_str) {
        Some(name) if (2..=50).contains(&name.trim().chars().count()) => name.trim().to_owned(),
        _ => {
            errors.add(Code::InvalidDisplayName, "display_name", MSG_DISPLAY_NAME);
            String::new()
        }
    };
    let description = match data.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION_CHARS => Some(d.clone()),
        Some(_) => {
            errors.add(Code::InvalidDescription, "description", MSG_BAD_DATA);
            None
        }
    };
    let metadata = match data.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(Value::Object(m.clone())),
        Some(_) => {
            errors.add(Code::InvalidMetadata, "metadata", MSG_BAD_DATA);
            None
        }
    };
    errors.finish(|| CreateRequest {
        display_name,
        description,
        metadata,
    })
}

/// `merchant.apply`: the kind and the application's fields, checked, nested as the document
/// nests them (never stored: they are sent once).
pub struct ApplyRequest {
    pub kind: Kind,
    pub fields: Map<String, Value>,
}

impl std::fmt::Debug for ApplyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyRequest")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

pub fn parse_apply(data: &Map<String, Value>) -> Result<ApplyRequest, Rejection> {
    let Some(kind) = data
        .get("kind")
        .and_then(Value::as_str)
        .and_then(Kind::parse)
    else {
        return Err(Rejection::field(
            Code::InvalidMerchantKind,
            "kind",
            MSG_KIND,
        ));
    };
    let spec = kind.spec();
    let mut errors = FieldErrors::default();
    // Nothing that is not in the document is sent: an unknown field is an error, not ignored.
    for (key, value) in data {
        if key == "kind" {
            continue;
        }
        match value {
            Value::Object(group) if GROUPS.contains(&key.as_str()) => {
                for name in group.keys() {
                    let path = format!("{key}.{name}");
                    if !spec.iter().any(|f| f.path == path) {
                        errors.add(Code::InvalidApplication, &path, MSG_UNKNOWN_FIELD);
                    }
                }
            }
            _ if spec.iter().any(|f| f.path == key) => {}
            _ => errors.add(Code::InvalidApplication, key, MSG_UNKNOWN_FIELD),
        }
    }
    let mut fields = Map::new();
    for field in spec {
        let value = lookup(data, field.path);
        match value {
            None | Some(Value::Null) => {
                if field.required {
                    errors.add(Code::InvalidApplication, field.path, MSG_FIELD_REQUIRED);
                }
            }
            Some(value) => {
                if !field.rule.allows(value) {
                    let message = if kind == Kind::Micro && field.path == "settle_account.type" {
                        MSG_MICRO_B2C_ONLY
                    } else {
                        MSG_FIELD_INVALID
                    };
                    errors.add(Code::InvalidApplication, field.path, message);
                } else {
                    insert(&mut fields, field.path, value.clone());
                }
            }
        }
    }
    errors.finish(|| ApplyRequest { kind, fields })
}

fn lookup<'a>(data: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        Some((group, name)) => data.get(group)?.get(name),
        None => data.get(path),
    }
}

fn insert(fields: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        Some((group, name)) => {
            let group = fields
                .entry(group.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(group) = group {
                group.insert(name.to_owned(), value);
            }
        }
        None => {
            fields.insert(path.to_owned(), value);
        }
    }
}

impl Rule {
    fn allows(&self, value: &Value) -> bool {
        match self {
            Rule::Text(min, max) => value.as_str().is_some_and(|text| {
                let count = text.chars().count();
                (*min..=*max).contains(&count)
                    && text.trim() == text
                    && !text.chars().any(char::is_control)
            }),
            Rule::OneOf(words) => value.as_str().is_some_and(|w| words.contains(&w)),
            Rule::Products => value.as_array().is_some_and(|items| {
                items
                    .iter()
                    .all(|p| p.as_str().is_some_and(|p| PRODUCTS.contains(&p)))
            }),
        }
    }
}

/// `merchant.settle_account`'s `recipient`: the bank account the sub-merchant is paid out to.
pub struct SettleAccount {
    pub account: String,
    pub kind: String,
    pub open_bank: Option<String>,
    pub open_bank_code: Option<String>,
}

impl std::fmt::Debug for SettleAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleAccount")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

pub fn parse_settle_account(
    data: &Map<String, Value>,
    kind: Kind,
) -> Result<SettleAccount, Rejection> {
    let Some(recipient) = data.get("recipient").and_then(Value::as_object) else {
        return Err(Rejection::field(
            Code::InvalidAccount,
            "recipient",
            MSG_FIELD_REQUIRED,
        ));
    };
    let mut errors = FieldErrors::default();
    let text = |name: &str| {
        recipient
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let account = match text("account") {
        Some(a) if (6..=34).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_digit()) => a,
        _ => {
            errors.add(Code::InvalidAccount, "recipient.account", MSG_FIELD_INVALID);
            String::new()
        }
    };
    let account_kind = match text("type") {
        Some(t) if kind == Kind::Micro && t == "b2b" => {
            errors.add(Code::InvalidAccount, "recipient.type", MSG_MICRO_B2C_ONLY);
            t
        }
        Some(t) if SETTLE_ACCOUNT_TYPES.contains(&t.as_str()) => t,
        _ => {
            errors.add(Code::InvalidAccount, "recipient.type", MSG_FIELD_INVALID);
            String::new()
        }
    };
    let mut optional = |name: &str| match recipient.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if (1..=64).contains(&s.chars().count()) => Some(s.clone()),
        Some(_) => {
            errors.add(
                Code::InvalidAccount,
                &format!("recipient.{name}"),
                MSG_FIELD_INVALID,
            );
            None
        }
    };
    let open_bank = optional("open_bank");
    let open_bank_code = optional("open_bank_code");
    errors.finish(|| SettleAccount {
        account,
        kind: account_kind,
        open_bank,
        open_bank_code,
    })
}

/// A merchant application's status as Ping++ words it (`completed` is its success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationStatus {
    /// Being sent: if that is all that is known, the outcome is unknown.
    Sending,
    /// Certainly never reached Ping++ (refused before acting, or no connection): it may be
    /// sent again with its `order_no`.
    Unsent,
    Pending,
    Completed,
    Failed,
    /// Sent, but whether Ping++ took it can't be known, and the document forbids sending it
    /// again: an operator decides.
    Unknown,
}

impl ApplicationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationStatus::Sending => "sending",
            ApplicationStatus::Unsent => "unsent",
            ApplicationStatus::Pending => "pending",
            ApplicationStatus::Completed => "completed",
            ApplicationStatus::Failed => "failed",
            ApplicationStatus::Unknown => "unknown",
        }
    }

    pub fn parse(word: &str) -> Option<ApplicationStatus> {
        Some(match word {
            "sending" => ApplicationStatus::Sending,
            "unsent" => ApplicationStatus::Unsent,
            "pending" => ApplicationStatus::Pending,
            "completed" => ApplicationStatus::Completed,
            "failed" => ApplicationStatus::Failed,
            "unknown" => ApplicationStatus::Unknown,
            _ => return None,
        })
    }

    /// Ping++'s word: `completed` (or `succeeded`) opened it, `failed` refused it, anything
    /// else is still under review.
    pub fn from_pingpp(word: &str) -> ApplicationStatus {
        match word {
            "completed" | "succeeded" => ApplicationStatus::Completed,
            "failed" | "canceled" | "rejected" => ApplicationStatus::Failed,
            _ => ApplicationStatus::Pending,
        }
    }
}

/// The `order_no` of a merchant application: `m` and 19 digits of its row id.
pub fn application_order_no(id: i64) -> String {
    format!("m{id:019}")
}

pub fn not_a_merchant() -> Rejection {
    Rejection::field(Code::NotAMerchant, "user_id", MSG_NOT_A_MERCHANT)
}

/// Whether a new application may be made beside the latest: not while one is under way, not
/// once one completed; after a refusal or an unknown outcome, yes.
pub fn may_apply(latest: Option<ApplicationStatus>) -> Result<(), Rejection> {
    match latest {
        None | Some(ApplicationStatus::Failed | ApplicationStatus::Unknown) => Ok(()),
        Some(ApplicationStatus::Completed) => Err(Rejection::field(
            Code::MerchantAlreadyOpen,
            "user_id",
            MSG_ALREADY_OPEN,
        )),
        Some(_) => Err(Rejection::field(
            Code::MerchantApplicationPending,
            "user_id",
            MSG_APPLICATION_PENDING,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn micro() -> Value {
        json!({
            "kind": "micro",
            "business_license": {"sign_name": "张三", "short_name": "三丰小店"},
            "merchant_address": {"province": "四川省", "city": "成都市", "district": "高新区", "address": "天府大道 1 号"},
            "legal_person_id_card": {"type": "id_card", "number": "110101199003074514", "copy": "http://m/1", "national": "http://m/2", "name": "张三", "mobile": "13912345678"},
            "settle_account": {"account": "6214850213609784", "type": "b2c", "bank_code": "CMBCHINA"},
            "products": ["yeepay_wx_pub"]
        })
    }

    #[test]
    fn a_micro_application_is_checked_and_nested_as_sent() {
        let request = parse_apply(micro().as_object().unwrap()).unwrap();
        assert_eq!(request.kind, Kind::Micro);
        assert_eq!(request.fields["settle_account"]["type"], "b2c");
        assert!(!request.fields.contains_key("kind"));
        assert!(!format!("{request:?}").contains("110101"));
    }

    #[test]
    fn every_field_is_held_to_the_document() {
        let mut data = micro();
        data["settle_account"]["type"] = json!("b2b");
        data["business_license"]["short_name"] = json!("x".repeat(129));
        data["legal_person_id_card"]["type"] = json!("driver");
        data["legal_person_id_card"]["extra"] = json!("?");
        data["merchant_address"]
            .as_object_mut()
            .unwrap()
            .remove("city");
        data["products"] = json!(["wx"]);
        let refused = parse_apply(data.as_object().unwrap()).unwrap_err();
        let fields: Vec<&String> = refused.errors.keys().collect();
        for field in [
            "settle_account.type",
            "business_license.short_name",
            "legal_person_id_card.type",
            "legal_person_id_card.extra",
            "merchant_address.city",
            "products",
        ] {
            assert!(fields.iter().any(|f| *f == field), "{field}: {fields:?}");
        }
        assert!(refused.errors["settle_account.type"][0].contains("b2c"));
        assert!(!refused
            .messages()
            .iter()
            .any(|m| m.contains("6214850213609784")));
        let bad_kind = parse_apply(json!({"kind": "big"}).as_object().unwrap()).unwrap_err();
        assert_eq!(bad_kind.code, Code::InvalidMerchantKind);
    }

    #[test]
    fn an_enterprise_needs_its_licence_numbers() {
        let data = json!({"kind": "enterprise", "business_license": {"number": "123"}});
        let refused = parse_apply(data.as_object().unwrap()).unwrap_err();
        assert!(refused.errors.contains_key("business_license.number"));
        assert!(refused.errors.contains_key("contact_id_card.email"));
    }

    #[test]
    fn settle_accounts_of_micro_merchants_are_b2c() {
        let data = json!({"recipient": {"account": "6214850213609784", "type": "b2b"}});
        let refused = parse_settle_account(data.as_object().unwrap(), Kind::Micro).unwrap_err();
        assert_eq!(refused.errors["recipient.type"][0], MSG_MICRO_B2C_ONLY);
        assert!(parse_settle_account(data.as_object().unwrap(), Kind::Enterprise).is_ok());
        assert!(!format!(
            "{:?}",
            parse_settle_account(data.as_object().unwrap(), Kind::Enterprise).unwrap()
        )
        .contains("6214"));
    }

    #[test]
    fn a_sub_app_needs_a_name_of_two_to_fifty() {
        assert!(parse_create(json!({"display_name": "三丰小店"}).as_object().unwrap()).is_ok());
        let refused = parse_create(json!({"display_name": "x"}).as_object().unwrap()).unwrap_err();
        assert_eq!(refused.code, Code::InvalidDisplayName);
    }
}
