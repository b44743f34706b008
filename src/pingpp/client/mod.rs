//! The HTTP client for Ping++'s REST API: authentication, optional request signing, timeouts
//! and retries live in one place ([`PingppClient::request`]); endpoints are thin wrappers.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::debug;

use super::error::PingppError;
use super::signing::{sign_request, MerchantKey};

/// Ping++'s production API.
pub const DEFAULT_API_BASE: &str = "https://api.pingxx.com";
/// Request-signing headers, sent only when a merchant key is configured.
pub const TIMESTAMP_HEADER: &str = "Pingplusplus-Request-Timestamp";
pub const SIGNATURE_HEADER: &str = "Pingplusplus-Signature";

const JSON_UTF8: &str = "application/json; charset=UTF-8";
const DEFAULT_MIN_DELAY: Duration = Duration::from_millis(200);
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
/// Looking for what a create made: pages of this many objects, at most this many pages.
const LOOKUP_PAGE_SIZE: usize = 100;
pub const MAX_LOOKUP_PAGES: usize = 20;
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
fn record<T>(
    endpoint: &'static str,
    outcome: &Result<T, PingppError>,
    started: std::time::Instant,
) {
    let outcome = match outcome {
        Ok(_) => "ok",
        Err(PingppError::Api { .. }) => "api_error",
        Err(PingppError::Transient(_)) => "unavailable",
        Err(PingppError::Protocol(_)) => "protocol_error",
        Err(PingppError::InvalidInput(_)) => "invalid_input",
    };
    crate::metrics::pingpp_request(endpoint, outcome, started.elapsed());
}

/// A charge to create (`POST /v1/charges`). Amount in fen; currency is always CNY.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The merchant's order number: 8 to 20 ASCII letters and digits, unique per charge.
    /// Sending the same one with the same parameters again returns the same charge, which is
    /// what makes retries and crash recovery safe.
    pub order_no: String,
    pub channel: String,
    pub amount: u64,
    /// The payer's IPv4 address.
    pub client_ip: String,
    /// At most 32 characters.
    pub subject: String,
    /// At most 128 characters.
    pub body: String,
    /// Channel-specific parameters (e.g. `success_url` for alipay_wap), a JSON object.
    pub extra: Option<Value>,
    /// Unix seconds after which the charge can no longer be paid.
    pub time_expire: Option<i64>,
    /// A JSON object stored with the charge.
    pub metadata: Option<Value>,
    /// At most 255 characters.
    pub description: Option<String>,
}

/// A recharge object to create (`POST /v1/apps/{app}/recharges`): a charge paid by `user`
/// that credits their Ping++ balance, less `user_fee` or plus `balance_bonus` (never both).
/// Only the charge's `order_no`, `channel`, `amount`, `client_ip`, `subject`, `body`, `extra`
/// and `time_expire` are sent, as `charge[...]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RechargeObjectRequest {
    /// The Ping++ user id, at most 64 characters.
    pub user: String,
    pub charge: ChargeRequest,
    /// Fen kept as a fee; at most the charge amount.
    pub user_fee: Option<u64>,
    /// Fen given on top, sent as `balance_bonus[amount]`.
    pub balance_bonus: Option<u64>,
    /// At most 255 characters.
    pub description: Option<String>,
    /// A JSON object stored with the recharge.
    pub metadata: Option<Value>,
}

/// A withdrawal to create (`POST /v1/apps/{app}/withdrawals`): money out of `user`'s wallet
/// through `channel`. Creating it twice with the same `order_no` and parameters returns the one
/// made first, as for charges, which is what makes retries and crash recovery safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithdrawalRequest {
    /// The Ping++ user id, at most 64 characters.
    pub user: String,
    pub channel: String,
    /// Fen, at least 1.
    pub amount: u64,
    /// 8 to 20 letters and digits, unique per withdrawal.
    pub order_no: String,
    /// `extra[return_url]`: where the user's cashier page returns to.
    pub return_url: String,
}

/// What `PUT /v1/apps/{app}/withdrawals/{id}` asks of a created withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawalUpdate {
    /// `{"status": "pending"}`: confirm it.
    Confirm,
    /// `{"status": "canceled"}`: cancel it.
    Cancel,
}

impl WithdrawalUpdate {
    pub fn status(self) -> &'static str {
        match self {
            WithdrawalUpdate::Confirm => "pending",
            WithdrawalUpdate::Cancel => "canceled",
        }
    }
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
struct Failure {
    error: PingppError,
    retry: bool,
    retry_after: Option<Duration>,
}

/// Boxed: a failure is rare and `PingppError` alone is already large.
type Attempt = Result<Value, Box<Failure>>;

impl Failure {
    fn fatal(error: PingppError) -> Box<Self> {
        Box::new(Failure {
            error,
            retry: false,
            retry_after: None,
        })
    }

    fn transient(message: String, retry_after: Option<Duration>) -> Box<Self> {
        Box::new(Failure {
            error: PingppError::Transient(message),
            retry: true,
            retry_after,
        })
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

    /// `POST /v1/charges`: creates a charge, or returns the existing one when a charge with
    /// the same `order_no` and parameters exists. Checks Ping++'s limits first, so a request
    /// Ping++ would refuse is not sent at all.
    pub async fn create_charge(&self, req: &ChargeRequest) -> Result<Value, PingppError> {
        validate_charge(req)?;
        let mut body = json!({
            "order_no": req.order_no,
            "app": { "id": self.inner.app_id },
            "channel": req.channel,
            "amount": req.amount,
            "client_ip": req.client_ip,
            "currency": "cny",
            "subject": req.subject,
            "body": req.body,
        });
        let optional = [
            ("extra", req.extra.clone()),
            ("time_expire", req.time_expire.map(Value::from)),
            ("metadata", req.metadata.clone()),
            ("description", req.description.clone().map(Value::from)),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        let started = std::time::Instant::now();
        let charge = self
            .request(Method::POST, "/v1/charges", Some(&body))
            .await
            .and_then(|charge| check_charge(charge, None));
        record("create_charge", &charge, started);
        charge
    }

    /// `GET /v1/charges/{id}`: the charge as Ping++ sees it now.
    pub async fn retrieve_charge(&self, id: &str) -> Result<Value, PingppError> {
        // Ids are `ch_` + letters and digits; checking them keeps the path (and what is
        // signed) free of anything needing percent-encoding.
        if id.is_empty() || id.len() > 64 || !id.chars().all(is_id_char) {
            return Err(PingppError::InvalidInput(format!(
                "charge id {id:?} is not letters, digits and _"
            )));
        }
        let started = std::time::Instant::now();
        let charge = self
            .request(Method::GET, &format!("/v1/charges/{id}"), None)
            .await
            .and_then(|charge| check_charge(charge, Some(id)));
        record("retrieve_charge", &charge, started);
        charge
    }

    /// `POST /v1/apps/{app}/recharges`: creates a recharge object (with its charge and
    /// credential), or returns the existing one when its charge's `order_no` was used before
    /// with the same parameters. Checks Ping++'s limits first, so a request Ping++ would refuse
    /// is not sent at all.
    pub async fn create_recharge(&self, req: &RechargeObjectRequest) -> Result<Value, PingppError> {
        validate_recharge(req)?;
        let c = &req.charge;
        let mut charge = json!({
            "amount": c.amount,
            "channel": c.channel,
            "order_no": c.order_no,
            "subject": c.subject,
            "body": c.body,
            "client_ip": c.client_ip,
        });
        if let Some(extra) = &c.extra {
            charge["extra"] = extra.clone();
        }
        if let Some(time_expire) = c.time_expire {
            charge["time_expire"] = json!(time_expire);
        }
        let mut body = json!({ "user": req.user, "charge": charge });
        if let Some(fee) = req.user_fee {
            body["user_fee"] = json!(fee);
        }
        if let Some(bonus) = req.balance_bonus {
            body["balance_bonus"] = json!({ "amount": bonus });
        }
        if let Some(description) = &req.description {
            body["description"] = json!(description);
        }
        if let Some(metadata) = &req.metadata {
            body["metadata"] = metadata.clone();
        }
        let path = format!("/v1/apps/{}/recharges", self.inner.app_id);
        let started = std::time::Instant::now();
        let recharge = self
            .request(Method::POST, &path, Some(&body))
            .await
            .and_then(|recharge| check_recharge(recharge, None));
        record("create_recharge", &recharge, started);
        recharge
    }

    /// `POST /v1/apps/{app}/withdrawals`: creates a withdrawal, or returns the existing one
    /// when its `order_no` was used before with the same parameters. Checks the request first,
    /// so one Ping++ would refuse is not sent at all.
    pub async fn create_withdrawal(&self, req: &WithdrawalRequest) -> Result<Value, PingppError> {
        validate_withdrawal(req)?;
        let body = json!({
            "user": req.user,
            "channel": req.channel,
            "amount": req.amount,
            "order_no": req.order_no,
            "extra": { "return_url": req.return_url },
        });
        let path = format!("/v1/apps/{}/withdrawals", self.inner.app_id);
        let started = std::time::Instant::now();
        let withdrawal = self
            .request(Method::POST, &path, Some(&body))
            .await
            .and_then(|w| check_withdrawal(w, None));
        record("create_withdrawal", &withdrawal, started);
        withdrawal
    }

    /// `PUT /v1/apps/{app}/withdrawals/{id}`: confirms (`pending`) or cancels (`canceled`) a
    /// created withdrawal. Setting a state is safe to repeat.
    pub async fn update_withdrawal(
        &self,
        id: &str,
        update: WithdrawalUpdate,
    ) -> Result<Value, PingppError> {
        check_withdrawal_id(id)?;
        let path = format!("/v1/apps/{}/withdrawals/{id}", self.inner.app_id);
        let body = json!({ "status": update.status() });
        let started = std::time::Instant::now();
        let withdrawal = self
            .request(Method::PUT, &path, Some(&body))
            .await
            .and_then(|w| check_withdrawal(w, Some(id)));
        let endpoint = match update {
            WithdrawalUpdate::Confirm => "confirm_withdrawal",
            WithdrawalUpdate::Cancel => "cancel_withdrawal",
        };
        record(endpoint, &withdrawal, started);
        withdrawal
    }

    /// `GET /v1/apps/{app}/withdrawals/{id}`: the withdrawal as Ping++ sees it now.
    pub async fn retrieve_withdrawal(&self, id: &str) -> Result<Value, PingppError> {
        check_withdrawal_id(id)?;
        let path = format!("/v1/apps/{}/withdrawals/{id}", self.inner.app_id);
        let started = std::time::Instant::now();
        let withdrawal = self
            .request(Method::GET, &path, None)
            .await
            .and_then(|w| check_withdrawal(w, Some(id)));
        record("retrieve_withdrawal", &withdrawal, started);
        withdrawal
    }

    /// The charge Ping++ made for `order_no`, if any, from `GET /v1/charges` (newest first)
    /// back to `created_since` (unix s). For a create whose outcome is unknown (its answer lost
    /// or late) that a repeat can't settle: a Ping++ that refuses a used `order_no` instead of
    /// returning the charge it made.
    pub async fn find_charge(
        &self,
        order_no: &str,
        created_since: i64,
    ) -> Result<Option<Value>, PingppError> {
        let path = format!("/v1/charges?app[id]={}", self.inner.app_id);
        let found = self
            .find_in_list("find_charge", &path, order_no, created_since, |c| {
                c.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found.map(|charge| check_charge(charge, None)).transpose()
    }

    /// The recharge object whose charge has `order_no`, if any, from
    /// `GET /v1/apps/{app}/recharges`, as [`PingppClient::find_charge`] for charges.
    pub async fn find_recharge(
        &self,
        order_no: &str,
        created_since: i64,
    ) -> Result<Option<Value>, PingppError> {
        let path = format!("/v1/apps/{}/recharges?", self.inner.app_id);
        let found = self
            .find_in_list("find_recharge", &path, order_no, created_since, |r| {
                r.get("charge")?.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found.map(|r| check_recharge(r, None)).transpose()
    }

    /// The withdrawal made for `order_no`, if any, from `GET /v1/apps/{app}/withdrawals`, as
    /// [`PingppClient::find_charge`] for charges.
    pub async fn find_withdrawal(
        &self,
        order_no: &str,
        created_since: i64,
    ) -> Result<Option<Value>, PingppError> {
        let path = format!("/v1/apps/{}/withdrawals?", self.inner.app_id);
        let found = self
            .find_in_list("find_withdrawal", &path, order_no, created_since, |w| {
                w.get("order_no").and_then(Value::as_str)
            })
            .await?;
        found.map(|w| check_withdrawal(w, None)).transpose()
    }

    /// Pages through a Ping++ list (`{"object": "list", "has_more", "data"}`, newest first) for
    /// the object whose order number (as `order_no_of` reads it) is `order_no`, back to
    /// `created_since`. `Ok(None)`: the list was read back that far without it. A list longer
    /// than [`MAX_LOOKUP_PAGES`] pages in that time can't be read to the end: that is an error,
    /// not a "no".
    async fn find_in_list(
        &self,
        endpoint: &'static str,
        path: &str,
        order_no: &str,
        created_since: i64,
        order_no_of: fn(&Value) -> Option<&str>,
    ) -> Result<Option<Value>, PingppError> {
        let started = std::time::Instant::now();
        let separator = if path.ends_with('?') { "" } else { "&" };
        let mut starting_after: Option<String> = None;
        let mut outcome = Err(PingppError::Transient(format!(
            "{endpoint}: more than {MAX_LOOKUP_PAGES} pages since {created_since}"
        )));
        for _ in 0..MAX_LOOKUP_PAGES {
            let mut page_path =
                format!("{path}{separator}limit={LOOKUP_PAGE_SIZE}&created[gte]={created_since}");
            if let Some(after) = &starting_after {
                page_path.push_str(&format!("&starting_after={after}"));
            }
            let page = match self.request(Method::GET, &page_path, None).await {
                Ok(page) => page,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            let (Some("list"), Some(data)) = (
                page.get("object").and_then(Value::as_str),
                page.get("data").and_then(Value::as_array),
            ) else {
                outcome = Err(PingppError::Protocol(format!(
                    "{endpoint}: the answer is not a list"
                )));
                break;
            };
            if let Some(found) = data.iter().find(|o| order_no_of(o) == Some(order_no)) {
                outcome = Ok(Some(found.clone()));
                break;
            }
            let last_id = data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str);
            let has_more = page.get("has_more").and_then(Value::as_bool) == Some(true);
            match last_id {
                Some(id) if has_more && id.chars().all(is_id_char) => {
                    starting_after = Some(id.to_owned())
                }
                _ => {
                    outcome = Ok(None);
                    break;
                }
            }
        }
        record(endpoint, &outcome, started);
        outcome
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
        if !path.starts_with('/') {
            return Err(PingppError::InvalidInput(format!(
                "path {path:?} must start with /"
            )));
        }
        let url = Url::parse(&format!("{}{path}", self.inner.base))
            .map_err(|e| PingppError::InvalidInput(format!("path {path:?}: {e}")))?;
        // Ping++ signs the request URI as it arrives: the base's path prefix, if any, included.
        let uri = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let body = match body {
            Some(value) => serde_json::to_vec(value)
                .map_err(|e| PingppError::InvalidInput(format!("request body: {e}")))?,
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
            .when(|failure| failure.retry)
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
        result.map_err(|failure| match failure.error {
            PingppError::Transient(message) => PingppError::Transient(format!(
                "{message} (after {} attempts)",
                attempts.load(Ordering::Relaxed)
            )),
            other => other,
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
            let signature = sign_request(key, body, uri, timestamp).map_err(Failure::fatal)?;
            headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
            headers.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
            );
        }
        debug!(%method, %uri, attempt, signed = self.inner.merchant_key.is_some(), "Ping++ request");
        let started = std::time::Instant::now();
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
            return Failure::fatal(PingppError::InvalidInput(self.scrub(&chain(error))));
        }
        let what = if error.is_timeout() {
            format!("no answer within {:?}", self.inner.timeout)
        } else if error.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        Failure::transient(format!("{what}: {}", self.scrub(&chain(error))), None)
    }

    fn classify(&self, status: StatusCode, bytes: &[u8], retry_after: Option<Duration>) -> Attempt {
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
            return Err(Failure::transient(
                format!("HTTP {} {detail}", status.as_u16()),
                retry_after,
            ));
        }
        Err(Failure::fatal(match error {
            Some(error) if status.is_client_error() => error,
            _ => PingppError::Protocol(format!(
                "HTTP {status} without a Ping++ error body: {}",
                self.snippet(bytes)
            )),
        }))
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

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Ping++'s own limits, so a request it would refuse is not sent (nor retried).
fn validate_charge(req: &ChargeRequest) -> Result<(), PingppError> {
    let invalid = |m: String| Err(PingppError::InvalidInput(m));
    let n = req.order_no.len();
    if !(8..=20).contains(&n) || !req.order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid(format!(
            "order_no {:?} must be 8 to 20 letters and digits",
            req.order_no
        ));
    }
    if req.channel.is_empty() || !req.channel.chars().all(is_id_char) {
        return invalid(format!("channel {:?} is not a channel name", req.channel));
    }
    if req.amount == 0 {
        return invalid("amount must be at least 1 fen".into());
    }
    if req.client_ip.parse::<Ipv4Addr>().is_err() {
        return invalid(format!(
            "client_ip {:?} is not an IPv4 address",
            req.client_ip
        ));
    }
    let chars = |s: &str| s.chars().count();
    if req.subject.is_empty() || chars(&req.subject) > 32 {
        return invalid(format!(
            "subject must be 1 to 32 characters, not {}",
            chars(&req.subject)
        ));
    }
    if req.body.is_empty() || chars(&req.body) > 128 {
        return invalid(format!(
            "body must be 1 to 128 characters, not {}",
            chars(&req.body)
        ));
    }
    if let Some(description) = &req.description {
        if chars(description) > 255 {
            return invalid("description must be at most 255 characters".into());
        }
    }
    for (name, value) in [("extra", &req.extra), ("metadata", &req.metadata)] {
        if value.as_ref().is_some_and(|v| !v.is_object()) {
            return invalid(format!("{name} must be a JSON object"));
        }
    }
    if req.time_expire.is_some_and(|t| t <= 0) {
        return invalid("time_expire must be a Unix time".into());
    }
    Ok(())
}

/// Ping++'s limits on a recharge object (the charge part is checked as a charge).
fn validate_recharge(req: &RechargeObjectRequest) -> Result<(), PingppError> {
    let invalid = |m: String| Err(PingppError::InvalidInput(m));
    validate_charge(&req.charge)?;
    if req.user.is_empty() || req.user.chars().count() > 64 {
        return invalid("user must be 1 to 64 characters".into());
    }
    if req.user_fee.is_some() && req.balance_bonus.is_some() {
        return invalid("user_fee and balance_bonus cannot be sent together".into());
    }
    if req.user_fee.is_some_and(|fee| fee > req.charge.amount) {
        return invalid("user_fee must not exceed charge[amount]".into());
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 255)
    {
        return invalid("description must be at most 255 characters".into());
    }
    if req.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return invalid("metadata must be a JSON object".into());
    }
    Ok(())
}

fn check_withdrawal_id(id: &str) -> Result<(), PingppError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(is_id_char) {
        return Err(PingppError::InvalidInput(format!(
            "withdrawal id {id:?} is not letters, digits and _"
        )));
    }
    Ok(())
}

/// What Ping++ asks of a withdrawal request.
fn validate_withdrawal(req: &WithdrawalRequest) -> Result<(), PingppError> {
    let invalid = |m: String| Err(PingppError::InvalidInput(m));
    let n = req.order_no.len();
    if !(8..=20).contains(&n) || !req.order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid(format!(
            "order_no {:?} must be 8 to 20 letters and digits",
            req.order_no
        ));
    }
    if req.user.is_empty() || req.user.chars().count() > 64 {
        return invalid("user must be 1 to 64 characters".into());
    }
    if req.channel.is_empty() || !req.channel.chars().all(is_id_char) {
        return invalid(format!("channel {:?} is not a channel name", req.channel));
    }
    if req.amount == 0 {
        return invalid("amount must be at least 1 fen".into());
    }
    if req.return_url.is_empty() {
        return invalid("extra[return_url] is required".into());
    }
    Ok(())
}

/// A 2xx answer that should be a withdrawal (with `expected_id`, when we asked for one).
fn check_withdrawal(withdrawal: Value, expected_id: Option<&str>) -> Result<Value, PingppError> {
    check_object(withdrawal, "withdrawal", "a withdrawal", expected_id, |w| {
        w.get("status").and_then(Value::as_str).is_some()
    })
}

/// A 2xx answer that should be a recharge object carrying its charge.
fn check_recharge(recharge: Value, expected_id: Option<&str>) -> Result<Value, PingppError> {
    check_object(
        recharge,
        "recharge",
        "a recharge with its charge",
        expected_id,
        |r| r.get("charge").is_some_and(is_charge),
    )
}

/// A 2xx answer that should be a charge (with `expected_id`, when we asked for one).
fn check_charge(charge: Value, expected_id: Option<&str>) -> Result<Value, PingppError> {
    check_object(charge, "charge", "a charge", expected_id, |_| true)
}

fn is_charge(value: &Value) -> bool {
    value.get("object").and_then(Value::as_str) == Some("charge")
        && value
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty())
}

/// A 2xx answer that should be a Ping++ object of type `object` with a non-empty id (that id,
/// when we asked for one) and `complete`; `what` names it in the error.
fn check_object(
    value: Value,
    object: &str,
    what: &str,
    expected_id: Option<&str>,
    complete: impl Fn(&Value) -> bool,
) -> Result<Value, PingppError> {
    let id = value.get("id").and_then(Value::as_str);
    let is_object = value.get("object").and_then(Value::as_str) == Some(object);
    match id {
        Some(id)
            if is_object
                && !id.is_empty()
                && expected_id.is_none_or(|e| e == id)
                && complete(&value) =>
        {
            Ok(value)
        }
        _ => Err(PingppError::Protocol(format!(
            "expected {what}{}, got object {} with id {}",
            expected_id.map(|e| format!(" {e}")).unwrap_or_default(),
            value.get("object").unwrap_or(&Value::Null),
            value.get("id").unwrap_or(&Value::Null),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge() -> ChargeRequest {
        ChargeRequest {
            order_no: "a0000000000000000008".into(),
            channel: "alipay".into(),
            amount: 500,
            client_ip: "127.0.0.1".into(),
            subject: "余额充值".into(),
            body: "账户余额充值".into(),
            extra: None,
            time_expire: None,
            metadata: None,
            description: None,
        }
    }

    #[test]
    fn charge_limits() {
        assert!(validate_charge(&charge()).is_ok());
        let bad: Vec<fn(&mut ChargeRequest)> = vec![
            |c| c.order_no = "1234567".into(),
            |c| c.order_no = "123456789012345678901".into(),
            |c| c.order_no = "1234-5678".into(),
            |c| c.amount = 0,
            |c| c.client_ip = "::1".into(),
            |c| c.subject = "字".repeat(33),
            |c| c.subject = String::new(),
            |c| c.body = "b".repeat(129),
            |c| c.channel = "ali pay".into(),
            |c| c.extra = Some(json!([1])),
            |c| c.metadata = Some(json!("x")),
            |c| c.description = Some("d".repeat(256)),
        ];
        for change in bad {
            let mut c = charge();
            change(&mut c);
            assert!(
                matches!(validate_charge(&c), Err(PingppError::InvalidInput(_))),
                "{c:?}"
            );
        }
        // Limits count characters, not bytes.
        let mut c = charge();
        c.subject = "字".repeat(32);
        c.body = "字".repeat(128);
        assert!(validate_charge(&c).is_ok());
    }

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

    #[test]
    fn a_charge_is_checked() {
        let ok = json!({"object": "charge", "id": "ch_1"});
        assert!(check_charge(ok.clone(), None).is_ok());
        assert!(check_charge(ok.clone(), Some("ch_1")).is_ok());
        for bad in [
            (ok.clone(), Some("ch_2")),
            (json!({"object": "refund", "id": "re_1"}), None),
            (json!({"object": "charge"}), None),
            (json!([]), None),
        ] {
            assert!(matches!(
                check_charge(bad.0, bad.1),
                Err(PingppError::Protocol(_))
            ));
        }
    }
}
