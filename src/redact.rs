//! Hiding the passwords of connection strings, for logs, errors and Debug output, in every
//! form PostgreSQL and RabbitMQ accept; and masking personal data in message bodies shown to
//! operators (`mask_body`).

/// Connection-string keys whose values are secrets (PostgreSQL's `password` and `sslpassword`).
const SECRET_KEYS: [&str; 2] = ["password", "sslpassword"];

/// Hides the passwords of a connection string, for logs, errors and Debug output. Handles every
/// form PostgreSQL and RabbitMQ accept: `scheme://user:password@host`, a `password=` query
/// parameter, and PostgreSQL's `key=value` strings (`host=h password='a b'`).
pub fn redact_url(url: &str) -> String {
    if url.contains("://") {
        redact_query(&redact_userinfo(url))
    } else {
        redact_key_values(url)
    }
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    // The authority ends at the path or the query; an unescaped '@' in the password still
    // belongs to it, so the last '@' before that end closes the user information.
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..authority_start],
                    &userinfo[..colon],
                    &url[authority_start + at..]
                ),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn redact_query(url: &str) -> String {
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (base, query) = url.split_at(query_start + 1);
    let (query, fragment) = match query.find('#') {
        Some(i) => query.split_at(i),
        None => (query, ""),
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((key, _)) if SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str()) => {
                format!("{key}=***")
            }
            _ => parameter.to_owned(),
        })
        .collect();
    format!("{base}{}{fragment}", parameters.join("&"))
}

/// `key=value` pairs separated by blanks; a value may be single-quoted with `\'` and `\\`
/// escapes, and blanks may surround the `=`, as libpq reads them.
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return out;
        }
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        out.push_str(key);
        rest = &rest[key_len..];
        let after_key = rest.trim_start();
        let Some(after_equals) = after_key.strip_prefix('=') else {
            // Not a key=value string after all: keep the rest as it is.
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..rest.len() - after_key.len()]);
        out.push('=');
        let value_start = after_equals.trim_start();
        out.push_str(&after_equals[..after_equals.len() - value_start.len()]);
        let value_len = key_value_len(value_start);
        if SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
            out.push_str("***");
        } else {
            out.push_str(&value_start[..value_len]);
        }
        rest = &value_start[value_len..];
    }
}

/// The length in bytes of a `key=value` string's value at the start of `text`.
fn key_value_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    if text.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return i + 1,
                _ => {}
            }
        }
        return text.len();
    }
    let mut escaped = false;
    for (i, c) in chars {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c.is_whitespace() => return i,
            _ => {}
        }
    }
    text.len()
}

/// What a masked value is shown as.
const MASK: &str = "***";

/// Object keys whose scalar values are personal or bank data, matched as parts of the
/// lower-cased key (`settle_account`, `cert_number`, `legal_person_name`...). Broad on purpose:
/// an operator loses a display name now and then, never sees a card number.
const PERSONAL_KEYS: [&str; 13] = [
    "account",
    "card",
    "cert",
    "mobile",
    "phone",
    "tel",
    "email",
    "name",
    "address",
    "id_card",
    "id_number",
    "bank",
    "pic",
];

/// Keys that look personal by the rule above but are not, kept so that a listing still says
/// what a message is.
const PLAIN_KEYS: [&str; 4] = ["type", "id", "user_id", "user"];

/// Runs of at least this many digits are masked wherever they are (phone numbers have 11,
/// card and bank account numbers 12 to 19); amounts and ids are shorter.
const LONG_DIGITS: usize = 11;

/// At most this many characters of a body are shown.
pub const BODY_SHOWN: usize = 4096;

/// A message body as text for an operator, personal data masked: in JSON, the values of
/// personal keys (`account`, `mobile`, `cert_number`, `card`, names...) and, everywhere, runs
/// of 11 or more digits (phone, card and account numbers) but their last 4 digits; a body that
/// is not JSON is shown as text with the digit runs masked. At most `BODY_SHOWN` characters.
pub fn mask_body(body: &[u8]) -> String {
    let masked = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            mask_value(&mut value, false);
            value.to_string()
        }
        Err(_) => mask_digit_runs(&String::from_utf8_lossy(body)),
    };
    match masked.char_indices().nth(BODY_SHOWN) {
        Some((end, _)) => format!("{}...", &masked[..end]),
        None => masked,
    }
}

fn is_personal_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !PLAIN_KEYS.contains(&key.as_str()) && PERSONAL_KEYS.iter().any(|part| key.contains(part))
}

fn mask_value(value: &mut serde_json::Value, personal: bool) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                mask_value(inner, personal || is_personal_key(key));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| mask_value(item, personal)),
        Value::String(_) | Value::Number(_) if personal => *value = Value::String(MASK.into()),
        Value::String(text) => *text = mask_digit_runs(text),
        Value::Number(number) if number.to_string().len() >= LONG_DIGITS => {
            *value = Value::String(mask_digit_runs(&number.to_string()))
        }
        _ => {}
    }
}

/// Masks each run of `LONG_DIGITS` or more ASCII digits but its last 4.
fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= LONG_DIGITS {
            out.push_str(MASK);
            out.push_str(&run[run.len() - 4..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_in_bodies_is_masked() {
        let body = br#"{"id":"c-1","type":"cash","user_id":7,"data":{"value":500,"type":"alipay",
            "account":"alice@example.com","mobile":"13800138000","cert_name":"Zhang San",
            "settle_account":{"recipient":{"account":"6222021234567890123","open_bank":"ICBC"}},
            "remark":"call 13912345678"}}"#;
        let shown = mask_body(body);
        for secret in [
            "alice",
            "13800138000",
            "Zhang",
            "6222021234567890123",
            "ICBC",
            "13912345678",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for kept in [
            r#""id":"c-1""#,
            r#""type":"cash""#,
            r#""user_id":7"#,
            r#""value":500"#,
            "call ***5678",
        ] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
        let text = mask_body(b"not json, card 6222021234567890123, amount 100");
        assert_eq!(text, "not json, card ***0123, amount 100");
        let long = mask_body(&vec![b'x'; BODY_SHOWN + 10]);
        assert_eq!(long.chars().count(), BODY_SHOWN + 3);
    }

    #[test]
    fn every_form_of_password_is_redacted() {
        let cases = [
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?sslmode=require&password=hunter2",
                "postgres://u@h/db?sslmode=require&password=***",
            ),
            (
                "postgresql:///db?host=/run&PASSWORD=hunter2#x",
                "postgresql:///db?host=/run&PASSWORD=***#x",
            ),
            (
                "host=h user=u password=hunter2 dbname=db",
                "host=h user=u password=*** dbname=db",
            ),
            (
                "host=h password = 'hunter 2\\' x' dbname=db",
                "host=h password = *** dbname=db",
            ),
            ("password=hun\\ ter2 host=h", "password=*** host=h"),
            ("host=h sslpassword=hunter2", "host=h sslpassword=***"),
            ("host=h dbname=db", "host=h dbname=db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("hunter") && !redact_url(url).contains("ter2"));
        }
    }
}
