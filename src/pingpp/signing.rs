//! RSA signatures both ways: we sign our requests with the merchant's private key (optional in
//! Ping++, on when a key is configured), and we verify webhooks with Ping++'s public key.
//! Both are RSA PKCS#1 v1.5 with SHA-256, base64 (standard alphabet, padded) on the wire.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ParsedPublicKey, RsaKeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use sha2::{Digest, Sha256};

use super::error::PingppError;

/// The merchant's private key, used to sign requests to Ping++.
///
/// Cheap to clone (shared). Its `Debug` shows only the key size, never key material.
#[derive(Clone)]
pub struct MerchantKey {
    key: Arc<RsaKeyPair>,
}

impl MerchantKey {
    /// Reads an unencrypted RSA private key, PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
    /// `openssl genrsa` wrote for years and what Ping++'s guide shows) or PKCS#8
    /// (`BEGIN PRIVATE KEY`). aws-lc-rs signs only with keys of 2048 bits or more.
    pub fn from_pem(pem: &str) -> Result<Self, PingppError> {
        // The PEM parser's own errors are not passed on: they could quote bits of the key.
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            PingppError::InvalidInput(
                "the merchant key is not an unencrypted PEM private key \
                 (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)"
                    .into(),
            )
        })?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => {
                return Err(PingppError::InvalidInput(
                    "the merchant key is not an RSA key".into(),
                ))
            }
        }
        .map_err(|e| {
            PingppError::InvalidInput(format!(
                "the merchant key is not a usable RSA key (2048 to 8192 bits): {e}"
            ))
        })?;
        Ok(MerchantKey { key: Arc::new(key) })
    }

    /// Base64 of the RSA PKCS#1 v1.5 SHA-256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, PingppError> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| {
                PingppError::InvalidInput("signing with the merchant key failed".into())
            })?;
        Ok(STANDARD.encode(signature))
    }
}

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MerchantKey(RSA {} bits)",
            self.key.public_modulus_len() * 8
        )
    }
}

/// The `Pingplusplus-Signature` header value for a request: the signature of
/// body + request URI (path and `?query`) + timestamp (decimal Unix seconds, the same value as
/// `Pingplusplus-Request-Timestamp`). GET and DELETE requests have an empty body.
pub fn sign_request(
    key: &MerchantKey,
    body: &[u8],
    uri: &str,
    timestamp: u64,
) -> Result<String, PingppError> {
    let timestamp = timestamp.to_string();
    let mut message = Vec::with_capacity(body.len() + uri.len() + timestamp.len());
    message.extend_from_slice(body);
    message.extend_from_slice(uri.as_bytes());
    message.extend_from_slice(timestamp.as_bytes());
    key.sign(&message)
}

/// Ping++'s public key, which verifies the `X-Pingplusplus-Signature` of webhooks.
#[derive(Clone)]
pub struct PingppPublicKey {
    key: Arc<ParsedPublicKey>,
    /// First bytes of the SHA-256 of the DER, so logs can tell which key is loaded.
    fingerprint: String,
}

impl PingppPublicKey {
    /// Reads an RSA public key: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, what the Ping++
    /// dashboard gives) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, PingppError> {
        let der = match SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
            Ok(spki) => spki.as_ref().to_vec(),
            // rustls-pki-types skips labels it does not know, such as RSA PUBLIC KEY.
            Err(pem::Error::NoItemsFound) => {
                pem_block(pem, "RSA PUBLIC KEY")?.ok_or_else(|| {
                    PingppError::InvalidInput(
                    "the Ping++ public key is not PEM (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)"
                        .into(),
                )
                })?
            }
            Err(e) => {
                return Err(PingppError::InvalidInput(format!(
                    "the Ping++ public key is not valid PEM: {e:?}"
                )))
            }
        };
        // Both DER forms are accepted by aws-lc-rs's RSA key parser.
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &der).map_err(|e| {
            PingppError::InvalidInput(format!(
                "the Ping++ public key is not a usable RSA key (2048 to 8192 bits): {e}"
            ))
        })?;
        let fingerprint = hex::encode(&Sha256::digest(&der)[..8]);
        Ok(PingppPublicKey {
            key: Arc::new(key),
            fingerprint,
        })
    }

    /// True when `signature_b64` (standard base64, padded) is a valid signature of exactly
    /// `message`; false for anything else, including malformed base64.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> bool {
        match STANDARD.decode(signature_b64) {
            Ok(signature) => self.key.verify_sig(message, &signature).is_ok(),
            Err(_) => false,
        }
    }
}

impl fmt::Debug for PingppPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PingppPublicKey(sha256:{}…)", self.fingerprint)
    }
}

/// The DER inside the first `-----BEGIN {label}-----` block, if there is one.
fn pem_block(pem: &str, label: &str) -> Result<Option<Vec<u8>>, PingppError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = pem.find(&begin) else {
        return Ok(None);
    };
    let rest = &pem[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| PingppError::InvalidInput(format!("PEM block {label} has no end line")))?;
    let base64: String = rest[..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(base64)
        .map(Some)
        .map_err(|e| PingppError::InvalidInput(format!("PEM block {label} is not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pingpp-webhook/"
    );

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}"))
            .unwrap_or_else(|e| panic!("fixture {name} (in {FIXTURES}): {e}"))
    }

    fn fixture_text(name: &str) -> String {
        String::from_utf8(fixture(name)).unwrap()
    }

    /// (event body, signature, Ping++ key) as the fixtures' README pairs them.
    fn fixtures() -> Vec<(&'static str, Vec<u8>, String, PingppPublicKey)> {
        [
            ("event-charge-succeeded", "pingpp_rsa_public_key.pem"),
            ("event-account-summary", "pingpp_rsa_public_key_2.pem"),
            (
                "event-charge-succeeded-wx-pub",
                "pingpp_rsa_public_key_3.pem",
            ),
        ]
        .into_iter()
        .map(|(event, key)| {
            (
                event,
                fixture(&format!("{event}.json")),
                fixture_text(&format!("{event}.sig")),
                PingppPublicKey::from_pem(&fixture_text(key)).expect(key),
            )
        })
        .collect()
    }

    const PKCS1: &str = include_str!("testdata/merchant_pkcs1.pem");
    const PKCS8: &str = include_str!("testdata/merchant_pkcs8.pem");
    const PUBLIC_SPKI: &str = include_str!("testdata/merchant_public.pem");
    const PUBLIC_PKCS1: &str = include_str!("testdata/merchant_rsa_public.pem");
    /// Made by `openssl dgst -sha256 -sign`: an independent implementation to agree with.
    const OPENSSL_REQUEST_SIGNATURE: &str = include_str!("testdata/request.sig");

    #[test]
    fn real_webhooks_verify_with_their_keys() {
        for (event, body, signature, key) in fixtures() {
            assert!(key.verify(&body, &signature), "{event} must verify");
        }
    }

    #[test]
    fn a_webhook_does_not_verify_with_another_events_key() {
        let all = fixtures();
        for (event, body, signature, _) in &all {
            for (other, _, _, key) in &all {
                if event != other {
                    assert!(!key.verify(body, signature), "{event} with {other}'s key");
                }
            }
        }
    }

    #[test]
    fn any_one_byte_change_of_a_body_fails() {
        for (event, body, signature, key) in fixtures() {
            for i in 0..body.len() {
                let mut changed = body.clone();
                changed[i] ^= 0x01;
                assert!(
                    !key.verify(&changed, &signature),
                    "{event}: byte {i} changed"
                );
            }
            let mut newline = body.clone();
            newline.push(b'\n');
            assert!(
                !key.verify(&newline, &signature),
                "{event}: trailing newline"
            );
            assert!(
                !key.verify(&body[..body.len() - 1], &signature),
                "{event}: truncated"
            );
        }
    }

    #[test]
    fn any_one_byte_change_of_a_signature_fails() {
        for (event, body, signature, key) in fixtures() {
            for i in 0..signature.len() {
                for replacement in ['A', 'B', '/', '=', ' '] {
                    let mut changed = signature.clone().into_bytes();
                    if changed[i] == replacement as u8 {
                        continue;
                    }
                    changed[i] = replacement as u8;
                    let changed = String::from_utf8(changed).unwrap();
                    assert!(!key.verify(&body, &changed), "{event}: signature {changed}");
                }
            }
            assert!(!key.verify(&body, &format!("{signature}\n")), "{event}");
            assert!(!key.verify(&body, ""), "{event}: empty signature");
            assert!(!key.verify(&body, "not base64!"), "{event}: garbage");
        }
    }

    #[test]
    fn pkcs1_and_pkcs8_keys_sign_alike_and_agree_with_openssl() {
        let pkcs1 = MerchantKey::from_pem(PKCS1).unwrap();
        let pkcs8 = MerchantKey::from_pem(PKCS8).unwrap();
        let body = br#"{"order_no":"123456789","amount":100}"#;
        // PKCS#1 v1.5 signatures are deterministic, so all three must be byte-identical.
        let a = sign_request(&pkcs1, body, "/v1/charges", 1496728534).unwrap();
        let b = sign_request(&pkcs8, body, "/v1/charges", 1496728534).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, OPENSSL_REQUEST_SIGNATURE.trim());
    }

    #[test]
    fn signatures_verify_with_spki_and_pkcs1_public_keys() {
        let key = MerchantKey::from_pem(PKCS8).unwrap();
        let signature = key.sign(b"hello").unwrap();
        for pem in [PUBLIC_SPKI, PUBLIC_PKCS1] {
            let public = PingppPublicKey::from_pem(pem).unwrap();
            assert!(public.verify(b"hello", &signature));
            assert!(!public.verify(b"hellO", &signature));
        }
    }

    #[test]
    fn request_signature_covers_body_uri_and_timestamp() {
        let key = MerchantKey::from_pem(PKCS1).unwrap();
        let public = PingppPublicKey::from_pem(PUBLIC_SPKI).unwrap();
        let signature = sign_request(&key, b"{}", "/v1/charges?x=1", 42).unwrap();
        assert!(public.verify(b"{}/v1/charges?x=142", &signature));
        assert!(!public.verify(b"{}/v1/charges?x=143", &signature));
        // GET: empty body.
        let get = sign_request(&key, b"", "/v1/charges/ch_1", 7).unwrap();
        assert!(public.verify(b"/v1/charges/ch_17", &get));
    }

    #[test]
    fn pem_with_crlf_and_surrounding_text_is_read() {
        let crlf = PKCS1.replace('\n', "\r\n");
        MerchantKey::from_pem(&format!("merchant key:\r\n{crlf}")).unwrap();
        PingppPublicKey::from_pem(&PUBLIC_PKCS1.replace('\n', "\r\n")).unwrap();
        // pingpp_rsa_public_key_2.pem has no final newline.
        PingppPublicKey::from_pem(&fixture_text("pingpp_rsa_public_key_2.pem")).unwrap();
    }

    #[test]
    fn bad_keys_are_invalid_input() {
        for bad in [
            "",
            "not a key",
            PUBLIC_SPKI,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = MerchantKey::from_pem(bad).unwrap_err();
            assert!(matches!(err, PingppError::InvalidInput(_)), "{err:?}");
        }
        for bad in [
            "",
            PKCS1,
            "-----BEGIN RSA PUBLIC KEY-----\n!!\n-----END RSA PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            let err = PingppPublicKey::from_pem(bad).unwrap_err();
            assert!(matches!(err, PingppError::InvalidInput(_)), "{err:?}");
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = MerchantKey::from_pem(PKCS1).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "MerchantKey(RSA 2048 bits)");
        let body: String = PKCS1.lines().nth(1).unwrap().chars().take(16).collect();
        assert!(!shown.contains(&body));
        let public = format!("{:?}", PingppPublicKey::from_pem(PUBLIC_SPKI).unwrap());
        assert!(public.starts_with("PingppPublicKey(sha256:"), "{public}");
    }
}
