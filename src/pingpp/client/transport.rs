//! How a request to Ping++ travels: bearer authentication with the secret key, request signing
//! with the merchant's key when one is configured, a timeout per attempt, retries with
//! exponential backoff and jitter for transient failures only, the sorting of every answer into
//! a value or a [`PingppError`], and the secret key cut out of anything passed on. Endpoints go
//! through [`PingppClient::call`] (or [`PingppClient::call_once`] for the creates Ping++ refuses
//! to see twice), which also counts each call in the metrics.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tracing::debug;

use super::requests::is_id_char;
use crate::pingpp::error::PingppError;
use crate::pingpp::signing::{sign_request, MerchantKey};

/// Ping++'s production API.
pub const DEFAULT_API_BASE: &str = "https://api.pingxx.com";
/// Request-signing headers, sent only when a merchant key is configured.
pub const TIMESTAMP_HEADER: &str = "Pingplusplus-Request-Timestamp";
pub const SIGNATURE_HEADER: &str = "Pingplusplus-Signature";

const JSON_UTF8: &str = "application/json; charset=UTF-8";
const DEFAULT_MIN_DELAY: Duration = Duration::from_millis(200);
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
/// How much of an unexpected response body goes into an error message.
const SNIPPET: usize = 200;

/// How to reach Ping++. `Debug` hides the secret key.
#[derive(Clone)]
pub struct ClientConfig {
    /// `https://api.pingxx.com`, or a fake's address in tests. May carry a path prefix.
    pub api_base: String,
    pub app_id: String,
    /// `sk_live_...` / `sk_test_...`.
    pub secret_key: String,
    /// When set, every request is signed (Ping++ then refuses unsigned ones, if the merchant
    /// enabled signature checking in the dashboard).
    pub merchant_key: Option<MerchantKey>,
    /// Per attempt, connecting and reading the whole answer included.
    pub timeout: Duration,
    /// Retries after the first attempt, for transient failures only.
    pub max_retries: u32,
}

impl ClientConfig {
    /// Production base, no request signing, 30 s per attempt, 3 retries.
    pub fn new(app_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        ClientConfig {
            api_base: DEFAULT_API_BASE.into(),
            app_id: app_id.into(),
            secret_key: secret_key.into(),
            merchant_key: None,
            timeout: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_base", &self.api_base)
            .field("app_id", &self.app_id)
            .field("secret_key", &"<redacted>")
            .field("merchant_key", &self.merchant_key)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// Counts a call (after its retries) by endpoint and outcome, with its latency.
fn record<T>(endpoint: &'static str, outcome: &Result<T, PingppError>, started: Instant) {
    let outcome = match outcome {
        Ok(_) => "ok",
        Err(PingppError::Api { .. }) => "api_error",
        Err(PingppError::Transient(_)) => "unavailable",
        Err(PingppError::Protocol(_)) => "protocol_error",
        Err(PingppError::InvalidInput(_)) => "invalid_input",
    };
    crate::metrics::pingpp_request(endpoint, outcome, started.elapsed());
}

/// Runs `work` (one call, after its retries) and counts it with [`record`].
pub(super) async fn metered<T>(
    endpoint: &'static str,
    work: impl Future<Output = Result<T, PingppError>>,
) -> Result<T, PingppError> {
    let started = Instant::now();
    let outcome = work.await;
    record(endpoint, &outcome, started);
    outcome
}

/// A Ping++ API client. Clones share one connection pool.
#[derive(Clone)]
pub struct PingppClient {
    inner: Arc<Inner>,
    min_delay: Duration,
    max_delay: Duration,
}

struct Inner {
    http: reqwest::Client,
    /// `api_base` without a trailing slash; paths are appended to it.
    base: String,
    app_id: String,
    secret_key: String,
    authorization: HeaderValue,
    merchant_key: Option<MerchantKey>,
    timeout: Duration,
    max_retries: u32,
}

impl fmt::Debug for PingppClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingppClient")
            .field("api_base", &self.inner.base)
            .field("app_id", &self.inner.app_id)
            .field("signing", &self.inner.merchant_key.is_some())
            .finish_non_exhaustive()
    }
}

/// One failed attempt, with what the retry loop needs to know about it.
pub(super) struct Failure {
    pub(super) error: PingppError,
    pub(super) retry: bool,
    retry_after: Option<Duration>,
    /// The request certainly did not take effect (no connection was made, Ping++ turned it
    /// away as rate limited, or refused it): even a request that must not be repeated may be
    /// sent again.
    pub(super) unsent: bool,
}

/// A request that may be sent only once failed: whether Ping++ may have acted on it (an
/// answer lost, late or 5xx) or certainly did not (refused, never reached, rate limited).
#[derive(Debug)]
pub struct SentOnceError {
    pub error: PingppError,
    pub may_have_acted: bool,
}

impl SentOnceError {
    /// Refused before anything was sent.
    pub fn unsent(error: PingppError) -> SentOnceError {
        SentOnceError {
            error,
            may_have_acted: false,
        }
    }
}

/// Boxed: a failure is rare and `PingppError` alone is already large.
pub(super) type Attempt = Result<Value, Box<Failure>>;

impl Failure {
    fn fatal(error: PingppError) -> Box<Self> {
        Box::new(Failure {
            error,
            retry: false,
            retry_after: None,
            unsent: false,
        })
    }

    fn transient(message: String, retry_after: Option<Duration>) -> Box<Self> {
        Box::new(Failure {
            error: PingppError::Transient(message),
            retry: true,
            retry_after,
            unsent: false,
        })
    }

    fn unsent(mut self: Box<Self>) -> Box<Self> {
        self.unsent = true;
        self
    }
}

impl PingppClient {
    pub fn new(config: ClientConfig) -> Result<Self, PingppError> {
        let invalid = |m: &str| PingppError::InvalidInput(m.to_owned());
        let url = Url::parse(&config.api_base)
            .map_err(|e| PingppError::InvalidInput(format!("api_base: {e}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(invalid(
                "api_base must be an http(s) URL without query or fragment",
            ));
        }
        if config.app_id.is_empty() || !config.app_id.chars().all(is_id_char) {
            return Err(invalid("app_id must be letters, digits and _"));
        }
        if config.secret_key.is_empty() {
            return Err(invalid("the secret key is empty"));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", config.secret_key))
            .map_err(|_| invalid("the secret key has characters not allowed in a header"))?;
        // Keeps it out of reqwest's and our own Debug output.
        authorization.set_sensitive(true);
        if config.timeout.is_zero() {
            return Err(invalid("timeout must be positive"));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // A redirect would change the signed URI and is never part of Ping++'s API.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pluspay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PingppError::InvalidInput(format!("cannot build the HTTP client: {e}")))?;
        Ok(PingppClient {
            inner: Arc::new(Inner {
                http,
                base: url.as_str().trim_end_matches('/').to_owned(),
                app_id: config.app_id,
                secret_key: config.secret_key,
                authorization,
                merchant_key: config.merchant_key,
                timeout: config.timeout,
                max_retries: config.max_retries,
            }),
            min_delay: DEFAULT_MIN_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
        })
    }

    /// Sets the bounds of the exponential backoff between retries (jitter is added on top).
    pub fn with_retry_delays(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// How long one attempt may take before it is given up.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// One call of an endpoint: sends the request, hands a 2xx answer to `check` (which says
    /// whether it is what the endpoint promises) and counts the call as `endpoint` in the
    /// metrics. `path` and `body` are as for [`PingppClient::request`].
    pub(super) async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        check: impl FnOnce(Value) -> Result<Value, PingppError>,
    ) -> Result<Value, PingppError> {
        metered(endpoint, async {
            self.request(method, path, body)
                .await
                .and_then(|answer| self.checked(answer, check))
        })
        .await
    }

    /// `check`'s verdict on a 2xx answer, with the secret key cut out of its error: a check
    /// quotes the answer's `id` and `object`, and Ping++ may echo what it was sent.
    pub(super) fn checked(
        &self,
        answer: Value,
        check: impl FnOnce(Value) -> Result<Value, PingppError>,
    ) -> Result<Value, PingppError> {
        // The checks refuse only with Protocol errors.
        check(answer).map_err(|error| match error {
            PingppError::Protocol(message) => PingppError::Protocol(self.scrub(&message)),
            other => other,
        })
    }

    /// As [`PingppClient::call`], for a request Ping++ forbids sending twice (an application
    /// whose `order_no` may not be reused): tried again only while it certainly has not
    /// reached Ping++; any other failure says whether Ping++ may have acted.
    pub(super) async fn call_once(
        &self,
        endpoint: &'static str,
        path: &str,
        body: &Value,
        check: impl FnOnce(Value) -> Result<Value, PingppError>,
    ) -> Result<Value, SentOnceError> {
        let mut may_have_acted = false;
        let outcome = metered(endpoint, async {
            match self.send(Method::POST, path, Some(body), true).await {
                Ok(answer) => self
                    .checked(answer, check)
                    .inspect_err(|_| may_have_acted = true),
                Err(failure) => {
                    may_have_acted = !failure.unsent;
                    Err(failure.error)
                }
            }
        })
        .await;
        outcome.map_err(|error| SentOnceError {
            error,
            may_have_acted,
        })
    }

    /// Sends one API request and returns Ping++'s JSON answer: authenticates, signs (with a
    /// fresh timestamp each attempt) when a merchant key is set, and retries with exponential
    /// backoff and jitter on connection errors, timeouts, 5xx and rate limiting (429, 403).
    /// `path` starts with `/` and may carry a `?query`.
    ///
    /// A request that timed out may still have taken effect, so only send requests that are
    /// safe to repeat: Ping++'s creates are keyed by `order_no`, updates set a state.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, PingppError> {
        self.send(method, path, body, false)
            .await
            .map_err(|failure| failure.error)
    }

    /// Sends a request, retrying as [`PingppClient::request`] says; with `once`, only the
    /// attempts that certainly did not reach Ping++ are tried again.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        once: bool,
    ) -> Result<Value, Box<Failure>> {
        if !path.starts_with('/') {
            return Err(Failure::fatal(PingppError::InvalidInput(format!(
                "path {path:?} must start with /"
            ))));
        }
        let url = Url::parse(&format!("{}{path}", self.inner.base)).map_err(|e| {
            Failure::fatal(PingppError::InvalidInput(format!("path {path:?}: {e}"))).unsent()
        })?;
        // Ping++ signs the request URI as it arrives: the base's path prefix, if any, included.
        let uri = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let body = match body {
            Some(value) => serde_json::to_vec(value).map_err(|e| {
                Failure::fatal(PingppError::InvalidInput(format!("request body: {e}"))).unsent()
            })?,
            None => Vec::new(),
        };
        let attempts = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .with_max_times(self.inner.max_retries as usize);
        let max_delay = self.max_delay;
        let result = (|| self.attempt(&method, &url, &uri, &body, &attempts))
            .retry(backoff)
            .when(|failure| failure.retry && (!once || failure.unsent))
            // Honour Ping++'s Retry-After, within our own ceiling.
            .adjust(|failure, delay| {
                delay.map(|d| match failure.retry_after {
                    Some(after) => d.max(after.min(max_delay)),
                    None => d,
                })
            })
            .notify(|failure, delay| {
                debug!(%method, %uri, error = %failure.error, ?delay, "Ping++ request will be retried");
            })
            .await;
        result.map_err(|mut failure| {
            if let PingppError::Transient(message) = &failure.error {
                failure.error = PingppError::Transient(format!(
                    "{message} (after {} attempts)",
                    attempts.load(Ordering::Relaxed)
                ));
            }
            failure
        })
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        uri: &str,
        body: &[u8],
        attempts: &AtomicU32,
    ) -> Attempt {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.inner.authorization.clone());
        if !body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
        }
        if let Some(key) = &self.inner.merchant_key {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let signature =
                sign_request(key, body, uri, timestamp).map_err(|e| Failure::fatal(e).unsent())?;
            headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
            headers.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
            );
        }
        debug!(%method, %uri, attempt, signed = self.inner.merchant_key.is_some(), "Ping++ request");
        let started = Instant::now();
        let response = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| self.send_failure(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|e| self.send_failure(&e))?;
        debug!(%method, %uri, attempt, status = status.as_u16(), elapsed = ?started.elapsed(), "Ping++ answered");
        self.classify(status, &bytes, retry_after)
    }

    /// Anything that went wrong on the wire: worth another try.
    fn send_failure(&self, error: &reqwest::Error) -> Box<Failure> {
        if error.is_builder() {
            return Failure::fatal(PingppError::InvalidInput(self.scrub(&chain(error)))).unsent();
        }
        let what = if error.is_timeout() {
            format!("no answer within {:?}", self.inner.timeout)
        } else if error.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        let failure = Failure::transient(format!("{what}: {}", self.scrub(&chain(error))), None);
        // A connection never made carried nothing; anything later may have.
        if error.is_connect() {
            failure.unsent()
        } else {
            failure
        }
    }

    pub(super) fn classify(
        &self,
        status: StatusCode,
        bytes: &[u8],
        retry_after: Option<Duration>,
    ) -> Attempt {
        let json = serde_json::from_slice::<Value>(bytes).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                Failure::fatal(PingppError::Protocol(format!(
                    "HTTP {status} with a body that is not JSON: {}",
                    self.snippet(bytes)
                )))
            });
        }
        let error = json.as_ref().and_then(|v| self.api_error(status, v));
        let rate_limited = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::FORBIDDEN
        );
        if status.is_server_error() || rate_limited {
            let detail = match &error {
                Some(PingppError::Api { kind, message, .. }) => format!("{kind}: {message}"),
                _ => self.snippet(bytes),
            };
            let failure =
                Failure::transient(format!("HTTP {} {detail}", status.as_u16()), retry_after);
            // Rate limiting turns a request away before it is acted on; a 5xx may come after.
            return Err(if rate_limited {
                failure.unsent()
            } else {
                failure
            });
        }
        match error {
            // A refusal with Ping++'s error body: it did not act.
            Some(error) if status.is_client_error() => Err(Failure::fatal(error).unsent()),
            _ => Err(Failure::fatal(PingppError::Protocol(format!(
                "HTTP {status} without a Ping++ error body: {}",
                self.snippet(bytes)
            )))),
        }
    }

    /// Ping++'s `{"error": {"type", "message", "code"?, "param"?}}`, if that is what `body` is.
    fn api_error(&self, status: StatusCode, body: &Value) -> Option<PingppError> {
        let error = body.get("error")?;
        let text = |name: &str| match error.get(name) {
            Some(Value::String(s)) => Some(self.scrub(s)),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Some(PingppError::Api {
            status: status.as_u16(),
            kind: text("type")?,
            message: text("message").unwrap_or_default(),
            code: text("code"),
            param: text("param"),
        })
    }

    fn snippet(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        let mut snippet: String = text.chars().take(SNIPPET).collect();
        if snippet.len() < text.len() {
            snippet.push('…');
        }
        self.scrub(&snippet)
    }

    /// Ping++ may quote the key it was given back to us ("no such API key: sk_..."); our
    /// errors end up in logs and results, so the key is cut out of anything we pass on.
    fn scrub(&self, text: &str) -> String {
        text.replace(&self.inner.secret_key, "sk_<redacted>")
    }
}

/// An error with its causes, which reqwest's own Display leaves out.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_client_hide_the_secret() {
        let mut config = ClientConfig::new("app_1", "sk_test_verysecret");
        config.api_base = "http://127.0.0.1:1/prefix/".into();
        assert!(!format!("{config:?}").contains("verysecret"));
        let client = PingppClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("verysecret"));
        assert_eq!(
            client.scrub("no such key sk_test_verysecret"),
            "no such key sk_<redacted>"
        );
    }

    #[test]
    fn a_checked_answer_that_echoes_the_secret_key_does_not_pass_it_on() {
        // Found by the pingpp_answer fuzz target: a 2xx answer whose id quotes the key.
        let client =
            PingppClient::new(ClientConfig::new("app_fuzz", "sk_test_fuzzSecretKey0123")).unwrap();
        let body = br#"{"id":"@sserest.fuzzSecretKe@y0123NN.NNNNNNJNsk_test_fuzzSecretKey0123NNNNNNNNJNNNNNNNNNNNNNNNNNNerNNNNNNNN2NNer."}"#;
        let answer = client.classify(StatusCode::OK, body, None).ok().unwrap();
        let error = client
            .checked(answer, |c| super::super::responses::check_charge(c, None))
            .unwrap_err();
        assert!(matches!(&error, PingppError::Protocol(m) if m.contains("sk_<redacted>")));
        assert!(!format!("{error:?}").contains("sk_test_fuzzSecretKey0123"));
    }

    #[test]
    fn bad_configs_are_refused() {
        for (base, app, key) in [
            ("ftp://x", "app_1", "sk"),
            ("not a url", "app_1", "sk"),
            ("http://x?a=1", "app_1", "sk"),
            ("http://x", "", "sk"),
            ("http://x", "app/1", "sk"),
            ("http://x", "app_1", ""),
            ("http://x", "app_1", "sk\n"),
        ] {
            let mut config = ClientConfig::new(app, key);
            config.api_base = base.into();
            assert!(
                matches!(PingppClient::new(config), Err(PingppError::InvalidInput(_))),
                "{base} {app} {key:?}"
            );
        }
    }

    #[test]
    fn responses_are_classified() {
        let client = PingppClient::new(ClientConfig::new("app_1", "sk_test_x")).unwrap();
        let body = br#"{"error":{"type":"invalid_request_error","message":"bad sk_test_x","param":"amount","code":12}}"#;
        let failure = client
            .classify(StatusCode::BAD_REQUEST, body, None)
            .unwrap_err();
        assert!(!failure.retry);
        match failure.error {
            PingppError::Api {
                status,
                kind,
                message,
                code,
                param,
            } => {
                assert_eq!(status, 400);
                assert_eq!(kind, "invalid_request_error");
                assert_eq!(message, "bad sk_<redacted>");
                assert_eq!(code.as_deref(), Some("12"));
                assert_eq!(param.as_deref(), Some("amount"));
            }
            other => panic!("{other:?}"),
        }
        for status in [500, 502, 503, 429, 403] {
            let status = StatusCode::from_u16(status).unwrap();
            let failure = client
                .classify(status, b"<html>", Some(Duration::from_secs(1)))
                .unwrap_err();
            assert!(failure.retry && failure.error.is_transient(), "{status}");
            // Only a rate-limited request is known not to have taken effect.
            assert_eq!(
                failure.unsent,
                matches!(status.as_u16(), 429 | 403),
                "{status}"
            );
            assert_eq!(failure.retry_after, Some(Duration::from_secs(1)));
        }
        for (status, body) in [(404, &b"<html>"[..]), (200, b"not json"), (302, b"")] {
            let status = StatusCode::from_u16(status).unwrap();
            let failure = client.classify(status, body, None).unwrap_err();
            assert!(!failure.retry);
            assert!(
                matches!(failure.error, PingppError::Protocol(_)),
                "{status}"
            );
        }
    }
}
