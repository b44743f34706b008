//! The user's e-wallet at Ping++ (`wallet.custody = "pingpp"`): opening it (a Ping++ user and a
//! personal account application, 个人用户开户), the card-binding link, and the onboarding
//! helpers (picture upload, card BIN). Every field is checked here before Ping++ is asked, and
//! no message ever repeats what was sent: it may be an ID number.

use serde_json::{Map, Value};

use super::cash::check_return_url;
use super::outcome::{Code, FieldErrors, Rejection};
use super::validate::{text_field, TextField};

pub const MSG_CERT_TYPE: &str = "证件类型错误，仅支持身份证";
pub const MSG_CERT_NAME: &str = "请输入正确的姓名";
pub const MSG_CERT_NUMBER: &str = "请输入正确的身份证号";
pub const MSG_MOBILE: &str = "请输入正确的手机号";
pub const MSG_RETURN_URL: &str = "请输入正确的跳转地址";
pub const MSG_PIC: &str = "请上传正确的图片";
pub const MSG_PIC_TOO_LARGE: &str = "图片过大";
pub const MSG_CARD_NUMBER: &str = "请输入正确的银行卡号";
pub const MSG_NOT_OPEN: &str = "钱包账户未开通";
pub const MSG_ALREADY_OPEN: &str = "钱包账户已开通";
pub const MSG_APPLICATION_PENDING: &str = "开户申请正在审核中";
pub const MSG_APPLIED: &str = "开户申请已提交";

/// The only certificate the personal application takes (仅支持使用个人身份证实名创建钱包账户):
/// a resident ID card, `"1"` in the document's example.
pub const CERT_TYPE_ID_CARD: &str = "1";
pub const MAX_NAME_CHARS: usize = 64;
/// The card-binding link lives 5 minutes (the document says 5 in one place and 15 in another:
/// the shorter is promised).
pub const CARD_URL_LIFETIME_SECS: i64 = 300;
/// The largest `wallet.pic_max_bytes` allowed (decoded bytes).
pub const MAX_PIC_BYTES: usize = 3 * 1024 * 1024;

/// What `account.open` sends Ping++. Personal data: no Debug that shows it, never stored.
pub struct OpenRequest {
    pub cert_type: String,
    pub cert_name: String,
    pub cert_number: String,
    pub mobile: String,
}

impl std::fmt::Debug for OpenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRequest").finish_non_exhaustive()
    }
}

fn text(data: &Map<String, Value>, name: &str) -> Option<String> {
    match text_field(data, name) {
        TextField::Value(v) => Some(v),
        _ => None,
    }
}

pub fn parse_open(data: &Map<String, Value>) -> Result<OpenRequest, Rejection> {
    let mut errors = FieldErrors::default();
    let cert_type = match data.get("cert_type") {
        Some(Value::String(t)) if t == CERT_TYPE_ID_CARD => t.clone(),
        // The number 1 is the same choice, sent as the document's "1".
        Some(Value::Number(n)) if n.as_i64() == Some(1) => CERT_TYPE_ID_CARD.into(),
        _ => {
            errors.add(Code::InvalidCertType, "cert_type", MSG_CERT_TYPE);
            String::new()
        }
    };
    let cert_name = match text(data, "cert_name") {
        Some(name) if valid_name(&name) => name,
        _ => {
            errors.add(Code::InvalidCertName, "cert_name", MSG_CERT_NAME);
            String::new()
        }
    };
    let cert_number = match text(data, "cert_number") {
        Some(number) if valid_id_number(&number) => number.to_ascii_uppercase(),
        _ => {
            errors.add(Code::InvalidCertNumber, "cert_number", MSG_CERT_NUMBER);
            String::new()
        }
    };
    let mobile = match text(data, "mobile") {
        Some(mobile) if valid_mobile(&mobile) => mobile,
        _ => {
            errors.add(Code::InvalidMobile, "mobile", MSG_MOBILE);
            String::new()
        }
    };
    errors.finish(|| OpenRequest {
        cert_type,
        cert_name,
        cert_number,
        mobile,
    })
}

/// A name as an ID card holds it: letters (Chinese or not), with `·` or spaces between the parts
/// of a minority or foreign name, no digits.
fn valid_name(name: &str) -> bool {
    let count = name.chars().count();
    (2..=MAX_NAME_CHARS).contains(&count)
        && name == name.trim()
        && name
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, '·' | '•' | ' ' | '.'))
}

/// A resident ID number (GB 11643): 17 digits, then a check digit or `X`, whose checksum holds,
/// with a plausible date of birth.
pub fn valid_id_number(number: &str) -> bool {
    let bytes = number.as_bytes();
    if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let sum: u32 = bytes[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let digits = |range: std::ops::Range<usize>| number[range].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (digits(6..10), digits(10..12), digits(12..14));
    (1900..=2100).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && bytes[17].to_ascii_uppercase() == CHECK[(sum % 11) as usize]
}

/// A mainland mobile number: 11 digits starting 13 to 19.
pub fn valid_mobile(mobile: &str) -> bool {
    let bytes = mobile.as_bytes();
    bytes.len() == 11
        && bytes.iter().all(u8::is_ascii_digit)
        && bytes[0] == b'1'
        && (b'3'..=b'9').contains(&bytes[1])
}

/// `return_url` of `account.cards`, `recharge` and `cash` in this mode: an http(s) link.
pub fn parse_return_url(data: &Map<String, Value>) -> Result<String, Rejection> {
    match text(data, "return_url") {
        Some(url) if check_return_url(&url).is_ok() => Ok(url),
        _ => Err(Rejection::field(
            Code::InvalidReturnUrl,
            "return_url",
            MSG_RETURN_URL,
        )),
    }
}

/// `upload_pic`'s `pic`: standard base64 of at most `max_bytes` decoded bytes.
pub fn parse_pic(data: &Map<String, Value>, max_bytes: usize) -> Result<String, Rejection> {
    use base64::Engine as _;
    let Some(pic) = text(data, "pic") else {
        return Err(Rejection::field(Code::InvalidPic, "pic", MSG_PIC));
    };
    // Checked before decoding, so an oversized picture costs no decoding.
    if pic.len() / 4 * 3 > max_bytes + 3 {
        return Err(Rejection::field(
            Code::PicTooLarge,
            "pic",
            MSG_PIC_TOO_LARGE,
        ));
    }
    match base64::engine::general_purpose::STANDARD.decode(pic.as_bytes()) {
        Ok(bytes) if bytes.len() > max_bytes => Err(Rejection::field(
            Code::PicTooLarge,
            "pic",
            MSG_PIC_TOO_LARGE,
        )),
        Ok(bytes) if !bytes.is_empty() => Ok(pic),
        _ => Err(Rejection::field(Code::InvalidPic, "pic", MSG_PIC)),
    }
}

/// `card_bin`'s `account`: a bank card number, 12 to 19 digits.
pub fn parse_card_number(data: &Map<String, Value>) -> Result<String, Rejection> {
    match text(data, "account") {
        Some(number)
            if (12..=19).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(number)
        }
        _ => Err(Rejection::field(
            Code::InvalidAccount,
            "account",
            MSG_CARD_NUMBER,
        )),
    }
}

/// The `order_no` of a personal account application: `c` and 19 digits of its row id.
pub fn application_order_no(application_id: i64) -> String {
    format!("c{application_id:019}")
}

/// A personal account application's status, as Ping++ words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationStatus {
    /// Sent (or about to be), not decided yet.
    Pending,
    Succeeded,
    Failed,
}

impl ApplicationStatus {
    /// Ping++'s word; anything but a final one is still pending.
    pub fn from_pingpp(status: &str) -> ApplicationStatus {
        match status {
            "succeeded" | "completed" => ApplicationStatus::Succeeded,
            "failed" | "canceled" | "cancelled" | "rejected" => ApplicationStatus::Failed,
            _ => ApplicationStatus::Pending,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationStatus::Pending => "pending",
            ApplicationStatus::Succeeded => "succeeded",
            ApplicationStatus::Failed => "failed",
        }
    }

    pub fn parse(word: &str) -> Option<ApplicationStatus> {
        Some(match word {
            "pending" => ApplicationStatus::Pending,
            "succeeded" => ApplicationStatus::Succeeded,
            "failed" => ApplicationStatus::Failed,
            _ => return None,
        })
    }
}

/// What a user may do with their e-wallet, by their latest application.
pub fn require_open(status: Option<ApplicationStatus>) -> Result<(), Rejection> {
    match status {
        Some(ApplicationStatus::Succeeded) => Ok(()),
        _ => Err(Rejection::field(
            Code::AccountNotOpen,
            "user_id",
            MSG_NOT_OPEN,
        )),
    }
}

/// Whether a new application may be made beside the latest one: not while one is pending, not
/// once one succeeded.
pub fn may_apply(latest: Option<ApplicationStatus>) -> Result<(), Rejection> {
    match latest {
        None | Some(ApplicationStatus::Failed) => Ok(()),
        Some(ApplicationStatus::Pending) => Err(Rejection::field(
            Code::AccountApplicationPending,
            "user_id",
            MSG_APPLICATION_PENDING,
        )),
        Some(ApplicationStatus::Succeeded) => Err(Rejection::field(
            Code::AccountAlreadyOpen,
            "user_id",
            MSG_ALREADY_OPEN,
        )),
    }
}

/// Fields of Ping++'s objects that hold personal data.
const PERSONAL_FIELDS: [&str; 8] = [
    "cert_name",
    "cert_number",
    "mobile",
    "name",
    "account",
    "id_number",
    "email",
    "address",
];

/// Masks the personal data in a Ping++ object before pluspay keeps or passes it on: Ping++
/// masks ID numbers (`420381*****20`) but returns names in full. A value with a `*` in it is
/// taken as masked already and kept as Ping++ sent it. `identity_info` is masked throughout.
pub fn mask_personal(value: &mut Value) {
    mask_within(value, false);
}

fn mask_within(value: &mut Value, everything: bool) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                let personal = everything || PERSONAL_FIELDS.contains(&key.as_str());
                match field {
                    Value::String(text) if personal => *text = masked(text),
                    Value::Number(_) if personal => *field = Value::String("***".into()),
                    _ => mask_within(field, everything || key == "identity_info"),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_within(v, everything)),
        _ => {}
    }
}

/// Ping++'s words with every value of `personal` in them masked: a refusal may quote what was
/// sent (a name, an ID or card number), and it is kept and passed on.
pub fn scrub(text: &str, personal: &[&str]) -> String {
    let mut text = text.to_owned();
    for value in personal.iter().filter(|v| v.chars().count() >= 2) {
        text = text.replace(value, &masked(value));
    }
    text
}

/// Masks the messages of a rejection as [`scrub`] does.
pub fn scrub_rejection(rejection: &mut super::outcome::Rejection, personal: &[&str]) {
    for messages in rejection.errors.values_mut() {
        for message in messages.iter_mut() {
            *message = scrub(message, personal);
        }
    }
}

/// Keeps what identifies nobody: a name's first character, a number's first 3 and last 2.
pub fn masked(text: &str) -> String {
    if text.contains('*') || text.is_empty() {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 8 && chars.iter().all(|c| c.is_ascii_alphanumeric()) {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 2..].iter().collect();
        return format!("{head}{}{tail}", "*".repeat(chars.len() - 5));
    }
    format!(
        "{}{}",
        chars[0],
        "*".repeat(chars.len().saturating_sub(1).max(1))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const ID: &str = "11010519491231002X";

    #[test]
    fn id_numbers_are_checked_by_their_checksum() {
        assert!(valid_id_number(ID));
        assert!(valid_id_number("110101199003074514"));
        assert!(!valid_id_number("110105194912310029"), "wrong check digit");
        assert!(
            !valid_id_number("420381199206062220"),
            "the document's example fails its check"
        );
        assert!(!valid_id_number("11010519491331002X"), "month 13");
        assert!(!valid_id_number("1101051949123100"));
        assert!(!valid_id_number("abcdefghijklmnopqr"));
    }

    #[test]
    fn an_application_is_checked_field_by_field_without_echoing_it() {
        let ok = parse_open(&data(json!({
            "cert_type": "1", "cert_name": "张三", "cert_number": ID, "mobile": "13800138000"
        })))
        .unwrap();
        assert_eq!(ok.cert_number, ID);
        assert!(!format!("{ok:?}").contains(ID));
        let refused = parse_open(&data(json!({
            "cert_type": "2", "cert_name": "张3", "cert_number": "123", "mobile": "12345"
        })))
        .unwrap_err();
        assert_eq!(refused.code, Code::InvalidCertType);
        assert_eq!(
            refused.errors.keys().collect::<Vec<_>>(),
            ["cert_name", "cert_number", "cert_type", "mobile"]
        );
        assert!(!refused.messages().iter().any(|m| m.contains("123")));
    }

    #[test]
    fn pictures_and_card_numbers() {
        let policy_max = 16;
        assert!(parse_pic(&data(json!({"pic": "aGVsbG8="})), policy_max).is_ok());
        assert_eq!(
            parse_pic(&data(json!({"pic": "not base64!"})), policy_max)
                .unwrap_err()
                .code,
            Code::InvalidPic
        );
        assert_eq!(
            parse_pic(
                &data(json!({"pic": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ="})),
                policy_max
            )
            .unwrap_err()
            .code,
            Code::PicTooLarge
        );
        assert!(parse_card_number(&data(json!({"account": "6214850213609784"}))).is_ok());
        assert!(parse_card_number(&data(json!({"account": "6214-8502"}))).is_err());
    }

    #[test]
    fn personal_data_is_masked_and_masks_are_kept() {
        let mut application = json!({
            "cert_name": "张三", "cert_number": "420381*****20", "mobile": "13800138000",
            "identity_info": {"real_name": "李四"}, "status": "pending"
        });
        mask_personal(&mut application);
        assert_eq!(application["cert_name"], "张*");
        assert_eq!(application["cert_number"], "420381*****20");
        assert_eq!(application["mobile"], "138******00");
        assert_eq!(application["identity_info"]["real_name"], "李*");
        assert_eq!(application["status"], "pending");
    }

    #[test]
    fn refusals_quoting_what_was_sent_are_scrubbed() {
        let said = scrub(
            "证件号 110101199003074514 与姓名 张三丰 不符",
            &[ID_OK, "张三丰"],
        );
        assert!(!said.contains(ID_OK) && !said.contains("张三丰"), "{said}");
        assert!(said.contains("110"), "{said}");
    }

    const ID_OK: &str = "110101199003074514";

    #[test]
    fn one_application_at_a_time() {
        assert!(may_apply(None).is_ok());
        assert!(may_apply(Some(ApplicationStatus::Failed)).is_ok());
        assert_eq!(
            may_apply(Some(ApplicationStatus::Pending))
                .unwrap_err()
                .code,
            Code::AccountApplicationPending
        );
        assert_eq!(
            require_open(Some(ApplicationStatus::Pending))
                .unwrap_err()
                .code,
            Code::AccountNotOpen
        );
    }
}
