//! Hiding the passwords of connection strings, for logs, errors and Debug output, in every
//! form PostgreSQL and RabbitMQ accept.

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

#[cfg(test)]
mod tests {
    use super::*;

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
