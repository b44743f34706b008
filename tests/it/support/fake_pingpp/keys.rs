//! Keys and signing: the test key pairs, and checking a request's API key and signature.

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::HeaderMap;

use super::{now, unauthorized, Refusal, SECRET_KEY};

/// A merchant key pair for tests: (private PKCS#8 PEM, public SPKI PEM). Made once per test
/// binary, since RSA key generation is slow.
pub fn generate_test_keys() -> (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (pair, private, public) = new_key_pair();
        drop(pair);
        (private, public)
    })
    .clone()
}

/// The fake's own webhook-signing key pair (distinct from the merchant's), and its public PEM.
pub(super) fn webhook_keys() -> &'static (KeyPair, String) {
    static KEYS: OnceLock<(KeyPair, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (pair, _, public) = new_key_pair();
        (pair, public)
    })
}

fn new_key_pair() -> (KeyPair, String, String) {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate an RSA key");
    let private = pem("PRIVATE KEY", pair.as_der().expect("PKCS#8").as_ref());
    let public = pem(
        "PUBLIC KEY",
        pair.public_key().as_der().expect("SPKI").as_ref(),
    );
    (pair, private, public)
}

fn pem(label: &str, der: &[u8]) -> String {
    let base64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Bearer with the secret key (most SDKs) or Basic with it as the user name (Node, Go).
pub(super) fn authenticate(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return unauthorized("No API key provided (use Authorization: Bearer <key>)");
    };
    let presented = if let Some(key) = value.strip_prefix("Bearer ") {
        key.to_owned()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = STANDARD.decode(basic.trim()).unwrap_or_default();
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        decoded.split(':').next().unwrap_or_default().to_owned()
    } else {
        return unauthorized("Authorization must be Bearer or Basic");
    };
    if presented == SECRET_KEY {
        Ok(())
    } else {
        // Quotes the key back, as APIs do: clients must not pass that on unscrubbed.
        unauthorized(format!("无效的 API Key: {presented}"))
    }
}

pub(super) fn check_signature(
    key: &[u8],
    headers: &HeaderMap,
    uri: &str,
    body: &[u8],
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (
        header("pingplusplus-request-timestamp"),
        header("pingplusplus-signature"),
    ) else {
        return unauthorized(
            "缺少请求签名 (Pingplusplus-Signature, Pingplusplus-Request-Timestamp)",
        );
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return unauthorized("请求时间戳无效");
    };
    if (now() - seconds).abs() > 300 {
        return unauthorized("请求时间戳已过期");
    }
    let Ok(signature) = STANDARD.decode(signature) else {
        return unauthorized("请求签名不是 base64");
    };
    let mut message = body.to_vec();
    message.extend_from_slice(uri.as_bytes());
    message.extend_from_slice(timestamp.as_bytes());
    match UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key).verify(&message, &signature) {
        Ok(()) => Ok(()),
        Err(_) => unauthorized("请求签名验证失败"),
    }
}
