//! An answer from Ping++: the first two bytes are the HTTP status (big-endian, taken modulo
//! 900 from 100), the rest the body. Sorted as the client's retry loop sorts it, then, when it
//! is a value, checked by every endpoint's check of what it asked for.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use pluspay::pingpp::client::fuzzing::{answer, check_all, Sorted};
use pluspay::pingpp::{ClientConfig, PingppClient};

const SECRET_KEY: &str = "sk_test_fuzzSecretKey0123";

fn client() -> &'static PingppClient {
    static CLIENT: OnceLock<PingppClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        PingppClient::new(ClientConfig::new("app_fuzz", SECRET_KEY)).expect("a client")
    })
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let status = 100 + u16::from_be_bytes([input[0], input[1]]) % 900;
    let body = &input[2..];
    let Some(sorted) = answer(client(), status, body) else {
        return;
    };
    match sorted {
        Sorted::Value(value) => {
            assert!((200..300).contains(&status));
            let id = value
                .get("id")
                .and_then(|id| id.as_str())
                .map(str::to_owned);
            for checked in check_all(client(), &value, None)
                .into_iter()
                .chain(check_all(client(), &value, id.as_deref()))
                .chain(check_all(client(), &value, Some("ch_other")))
            {
                if let Err(error) = checked {
                    assert!(!error.is_transient());
                    assert!(!format!("{error:?}").contains(SECRET_KEY));
                }
            }
        }
        Sorted::Failure {
            error,
            retry,
            unsent,
        } => {
            // Only the errors worth another try are retried; the secret key is never passed on.
            assert_eq!(retry, error.is_transient(), "{status} {error:?}");
            assert_eq!(
                retry,
                (500..600).contains(&status) || status == 429 || status == 403
            );
            if unsent && !retry {
                assert!((400..500).contains(&status));
            }
            assert!(!format!("{error:?} {error}").contains(SECRET_KEY));
        }
    }
});
