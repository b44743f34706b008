//! A fake Ping++ API server on 127.0.0.1 for tests: real-shaped charges, Ping++ error bodies,
//! the same authentication and request-signature checks, scripted failures and delays, and
//! webhooks signed with its own key, as Ping++ signs them.
//!
//! It uses aws-lc-rs directly rather than pluspay's signing code, so a bug there cannot hide
//! itself by being on both sides of a test.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{
    KeyPair as _, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET_KEY: &str = "sk_test_fakeK0mP9aZ1bQ8xW2cN7rT4";
pub const APP_ID: &str = "app_fake5anXP4ezfXvL";

/// Channels the fake accepts, with the `extra` field each requires (Ping++'s own rules).
const CHANNELS: &[(&str, Option<&str>)] = &[
    ("applepay_upacp", None),
    ("alipay", None),
    ("alipay_wap", Some("success_url")),
    ("alipay_pc_direct", Some("success_url")),
    ("alipay_qr", None),
    ("wx", None),
    ("wx_wap", None),
    ("wx_pub", Some("open_id")),
    ("wx_pub_qr", Some("product_id")),
    ("wx_lite", Some("open_id")),
    ("upacp", None),
    ("upacp_pc", Some("result_url")),
    ("upacp_wap", Some("result_url")),
];

const CHARGE_FIELDS: &[&str] = &[
    "order_no",
    "app",
    "channel",
    "amount",
    "client_ip",
    "currency",
    "subject",
    "body",
    "extra",
    "time_expire",
    "metadata",
    "description",
];

/// What `failure_code` an expired charge shows (the fake's choice; Ping++ documents none).
pub const EXPIRED_CODE: &str = "charge_expired";

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
fn webhook_keys() -> &'static (KeyPair, String) {
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

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn random_alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

fn random_digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// A scripted answer for one coming request.
enum Injection {
    /// Answer this status with an `api_error` body.
    Fail(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Do the work, then answer 502 as a gateway that lost Ping++'s answer would: the
    /// client can't tell whether the request took effect.
    LoseAnswer,
    /// Answer this status with this Ping++ error.
    Error {
        status: u16,
        kind: String,
        message: String,
    },
    /// Answer 200 with a body that is not JSON (a broken proxy): the client can't read it.
    Garble,
    /// Do the work, then wait this long before answering (past the client's timeout, the
    /// answer comes too late).
    LateAnswer(Duration),
}

/// The channels the fake takes for withdrawals (Ping++'s account-system API: 仅支持 yeepay).
pub const WITHDRAWAL_CHANNELS: &[&str] = &["yeepay"];

const WITHDRAWAL_FIELDS: &[&str] = &[
    "user",
    "channel",
    "amount",
    "order_no",
    "extra",
    "user_fee",
    "description",
    "metadata",
    "settle_account",
];

#[derive(Default)]
struct State {
    charges: HashMap<String, Value>,
    /// Charge ids in creation order.
    order: Vec<String>,
    /// order_no → (charge id, the request that created it).
    by_order_no: HashMap<String, (String, Value)>,
    script: VecDeque<Injection>,
    log: Vec<(String, String)>,
    /// Recharge objects by id, without their charge (which lives in `charges`).
    recharges: HashMap<String, Value>,
    /// Recharge ids in creation order.
    recharge_order: Vec<String>,
    /// charge[order_no] → (recharge id, the request that created it).
    recharge_by_order_no: HashMap<String, (String, Value)>,
    /// Scripted answers for the next requests of one method whose path contains a string,
    /// taken before `script`.
    targeted: Vec<(String, String, Injection)>,
    withdrawals: HashMap<String, Value>,
    /// Withdrawal ids in creation order.
    withdrawal_order: Vec<String>,
    /// order_no → (withdrawal id, the request that created it).
    withdrawal_by_order_no: HashMap<String, (String, Value)>,
    /// A create with a used order_no is refused even with the same parameters.
    refuse_reused_order_no: bool,
}

impl State {
    /// A recharge object as Ping++ shows it: with its charge as it is now.
    fn recharge(&self, id: &str) -> Option<Value> {
        let mut recharge = self.recharges.get(id)?.clone();
        let charge_id = recharge["charge"].as_str()?.to_owned();
        recharge["charge"] = self.charges.get(&charge_id)?.clone();
        Some(recharge)
    }
}

struct Shared {
    merchant_key: Option<Vec<u8>>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakePingpp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakePingpp {
    /// Starts on 127.0.0.1 on a free port. With `merchant_public_key_pem`, every request must
    /// carry a valid `Pingplusplus-Signature`, as when a merchant uploads a key to Ping++.
    pub async fn start(merchant_public_key_pem: Option<&str>) -> FakePingpp {
        let merchant_key = merchant_public_key_pem.map(|pem| {
            SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
                .expect("the merchant public key is SPKI PEM")
                .as_ref()
                .to_vec()
        });
        let shared = Arc::new(Shared {
            merchant_key,
            state: Mutex::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, shared.clone(), shutdown.clone()));
        FakePingpp {
            addr,
            shared,
            shutdown,
            server: Mutex::new(Some(server)),
        }
    }

    /// The api_base to give the client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Ping++'s webhook-signing public key (SPKI PEM), to configure the webhook receiver with.
    pub fn public_key_pem(&self) -> String {
        webhook_keys().1.clone()
    }

    /// Base64 signature of `body` with the webhook key, as in `X-Pingplusplus-Signature`.
    pub fn sign_webhook(&self, body: &str) -> String {
        let pair = &webhook_keys().0;
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            body.as_bytes(),
            &mut signature,
        )
        .expect("sign");
        STANDARD.encode(signature)
    }

    /// A real-shaped event around `object` and its signature: (raw body, signature).
    pub fn signed_event(&self, event_type: &str, object: Value) -> (String, String) {
        let event = json!({
            "id": format!("evt_{}", random_alnum(24)),
            "created": now(),
            "livemode": false,
            "type": event_type,
            "data": { "object": object },
            "object": "event",
            "pending_webhooks": 0,
            "request": format!("iar_{}", random_alnum(24)),
        });
        let body = event.to_string();
        let signature = self.sign_webhook(&body);
        (body, signature)
    }

    /// Delivers a webhook as Ping++ does and returns the receiver's status.
    pub async fn send_webhook(
        &self,
        url: &str,
        body: &str,
        signature: &str,
    ) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json; charset=UTF-8")
            .header("X-Pingplusplus-Signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("deliver the webhook")
            .status()
    }

    /// The next `n` requests get `status` with an `api_error` body.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut state = self.shared.state();
        state.script.extend((0..n).map(|_| Injection::Fail(status)));
    }

    /// The next `n` requests are answered normally, but only after `delay`.
    pub fn delay_next(&self, n: usize, delay: Duration) {
        let mut state = self.shared.state();
        state.script.extend((0..n).map(|_| Injection::Delay(delay)));
    }

    /// From now on a create whose `order_no` was used before is refused (`400`, param
    /// `order_no`) even when its parameters are the same, instead of answered with what the
    /// first made: the Ping++ that answered a black-box review so.
    pub fn refuse_reused_order_no(&self) {
        self.shared.state().refuse_reused_order_no = true;
    }

    /// The next `n` requests with `method` whose path contains `path_part` take effect, and are
    /// answered only after `delay`.
    pub fn answer_late_on(&self, method: &str, path_part: &str, n: usize, delay: Duration) {
        let mut state = self.shared.state();
        state.targeted.extend((0..n).map(|_| {
            (
                method.to_owned(),
                path_part.to_owned(),
                Injection::LateAnswer(delay),
            )
        }));
    }

    /// Forgets every scripted failure still to come, targeted or not: Ping++ is back.
    pub fn heal(&self) {
        let mut state = self.shared.state();
        state.script.clear();
        state.targeted.clear();
    }

    /// The next `n` requests take effect, but their answers are lost (502 instead).
    pub fn lose_next_answers(&self, n: usize) {
        let mut state = self.shared.state();
        state.script.extend((0..n).map(|_| Injection::LoseAnswer));
    }

    /// The next `n` requests get `status` with the Ping++ error `kind` / `message`.
    pub fn error_next(&self, n: usize, status: u16, kind: &str, message: &str) {
        let mut state = self.shared.state();
        state.script.extend((0..n).map(|_| Injection::Error {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
        }));
    }

    /// The next `n` requests with `method` whose path contains `path_part` get `status` with
    /// the Ping++ error `kind` / `message` (before any untargeted script).
    pub fn error_next_on(
        &self,
        method: &str,
        path_part: &str,
        n: usize,
        status: u16,
        kind: &str,
        message: &str,
    ) {
        let mut state = self.shared.state();
        state.targeted.extend((0..n).map(|_| {
            (
                method.to_owned(),
                path_part.to_owned(),
                Injection::Error {
                    status,
                    kind: kind.to_owned(),
                    message: message.to_owned(),
                },
            )
        }));
    }

    /// The next `n` requests with `method` whose path contains `path_part` get `status` with
    /// an `api_error` body (5xx: the client retries).
    pub fn fail_next_on(&self, method: &str, path_part: &str, n: usize, status: u16) {
        let mut state = self.shared.state();
        state.targeted.extend((0..n).map(|_| {
            (
                method.to_owned(),
                path_part.to_owned(),
                Injection::Fail(status),
            )
        }));
    }

    /// The next `n` requests with `method` whose path contains `path_part` take effect, but
    /// their answers are lost (502 instead).
    pub fn lose_next_answers_on(&self, method: &str, path_part: &str, n: usize) {
        let mut state = self.shared.state();
        state.targeted.extend((0..n).map(|_| {
            (
                method.to_owned(),
                path_part.to_owned(),
                Injection::LoseAnswer,
            )
        }));
    }

    /// The next `n` requests with `method` whose path contains `path_part` get a 200 whose body
    /// is not JSON, before they take effect: the client fails without retrying.
    pub fn garble_next_on(&self, method: &str, path_part: &str, n: usize) {
        let mut state = self.shared.state();
        state
            .targeted
            .extend((0..n).map(|_| (method.to_owned(), path_part.to_owned(), Injection::Garble)));
    }

    /// All withdrawals, in creation order.
    pub fn withdrawals(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .withdrawal_order
            .iter()
            .map(|id| state.withdrawals[id].clone())
            .collect()
    }

    pub fn withdrawal(&self, id: &str) -> Option<Value> {
        self.shared.state().withdrawals.get(id).cloned()
    }

    /// The channel paid the user: returns the withdrawal as it is now.
    pub fn succeed_withdrawal(&self, id: &str) -> Value {
        self.update_withdrawal(id, |w| {
            w["status"] = json!("succeeded");
            w["time_succeeded"] = json!(now());
        })
    }

    /// The channel could not pay the user.
    pub fn fail_withdrawal(&self, id: &str, msg: &str) -> Value {
        self.update_withdrawal(id, |w| {
            w["status"] = json!("failed");
            w["failure_msg"] = json!(msg);
        })
    }

    /// Ping++ canceled it (the user let the cashier page expire).
    pub fn cancel_withdrawal(&self, id: &str) -> Value {
        self.update_withdrawal(id, |w| {
            w["status"] = json!("canceled");
            w["time_canceled"] = json!(now());
        })
    }

    fn update_withdrawal(&self, id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut state = self.shared.state();
        let withdrawal = state
            .withdrawals
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no withdrawal {id}"));
        change(withdrawal);
        withdrawal.clone()
    }

    /// The payer paid: returns the charge as it is now.
    pub fn pay(&self, charge_id: &str) -> Value {
        self.update(charge_id, |charge| {
            charge["paid"] = json!(true);
            charge["time_paid"] = json!(now());
            charge["transaction_no"] = json!(random_digits(28));
        })
    }

    /// The channel refused the payment.
    pub fn fail_charge(&self, charge_id: &str, code: &str, msg: &str) -> Value {
        self.update(charge_id, |charge| {
            charge["failure_code"] = json!(code);
            charge["failure_msg"] = json!(msg);
        })
    }

    /// The charge ran out of time unpaid: `time_expire` in the past, failed with [`EXPIRED_CODE`].
    pub fn expire(&self, charge_id: &str) -> Value {
        self.update(charge_id, |charge| {
            charge["time_expire"] = json!(now() - 1);
            charge["failure_code"] = json!(EXPIRED_CODE);
            charge["failure_msg"] = json!("订单已过期");
        })
    }

    fn update(&self, charge_id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut state = self.shared.state();
        let charge = state
            .charges
            .get_mut(charge_id)
            .unwrap_or_else(|| panic!("the fake has no charge {charge_id}"));
        change(charge);
        charge.clone()
    }

    /// The payer paid a recharge object's charge: returns the recharge as it is now.
    pub fn pay_recharge(&self, recharge_id: &str) -> Value {
        let charge_id = {
            let state = self.shared.state();
            let recharge = state
                .recharges
                .get(recharge_id)
                .unwrap_or_else(|| panic!("the fake has no recharge {recharge_id}"));
            recharge["charge"].as_str().unwrap().to_owned()
        };
        self.pay(&charge_id);
        let mut state = self.shared.state();
        let recharge = state.recharges.get_mut(recharge_id).unwrap();
        recharge["succeeded"] = json!(true);
        recharge["time_succeeded"] = json!(now());
        recharge["balance_transaction"] = json!(format!("bt_{}", random_alnum(24)));
        state.recharge(recharge_id).unwrap()
    }

    /// All recharge objects, in creation order.
    pub fn recharges(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .recharge_order
            .iter()
            .map(|id| state.recharge(id).unwrap())
            .collect()
    }

    pub fn charge(&self, id: &str) -> Option<Value> {
        self.shared.state().charges.get(id).cloned()
    }

    /// All charges, in creation order.
    pub fn charges(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .order
            .iter()
            .map(|id| state.charges[id].clone())
            .collect()
    }

    /// How many API requests arrived (counted on arrival, whatever the answer).
    pub fn requests(&self) -> usize {
        self.shared.state().log.len()
    }

    /// (method, path with query) of every request, in arrival order.
    pub fn request_log(&self) -> Vec<(String, String)> {
        self.shared.state().log.clone()
    }

    /// Stops accepting and ends open connections; returns once the port is closed.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}

impl Drop for FakePingpp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, body: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: u16, kind: &str, message: &str, param: Option<&str>) -> Answer {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    answer(status, &json!({ "error": error }))
}

/// An `invalid_request_error`, kept small until it becomes an answer.
struct Refusal {
    status: u16,
    message: String,
    param: Option<String>,
}

impl Refusal {
    fn answer(self) -> Answer {
        error(
            self.status,
            "invalid_request_error",
            &self.message,
            self.param.as_deref(),
        )
    }
}

/// 400 for a bad parameter.
fn invalid(message: impl Into<String>, param: &str) -> Refusal {
    Refusal {
        status: 400,
        message: message.into(),
        param: Some(param.to_owned()),
    }
}

/// 401 for bad credentials or a bad request signature.
fn unauthorized(message: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        status: 401,
        message: message.into(),
        param: None,
    })
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let method = req.method().clone();
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(error(400, "invalid_request_error", "请求体读取失败", None)),
    };
    let mut lose_answer = false;
    let mut late_by = None;
    let injection = {
        let mut state = shared.state();
        state.log.push((method.to_string(), uri.clone()));
        let targeted = state
            .targeted
            .iter()
            .position(|(m, part, _)| *m == method.as_str() && uri.contains(part.as_str()));
        match targeted {
            Some(i) => Some(state.targeted.remove(i).2),
            None => state.script.pop_front(),
        }
    };
    match injection {
        Some(Injection::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Injection::Fail(status)) => {
            return Ok(error(status, "api_error", "服务器内部错误 (fake)", None))
        }
        Some(Injection::Error {
            status,
            kind,
            message,
        }) => return Ok(error(status, &kind, &message, None)),
        Some(Injection::LoseAnswer) => lose_answer = true,
        Some(Injection::LateAnswer(delay)) => late_by = Some(delay),
        Some(Injection::Garble) => {
            return Ok(Response::builder()
                .status(200)
                .header("Content-Type", "text/html")
                .body(Full::new(Bytes::from_static(b"<html>gateway</html>")))
                .unwrap())
        }
        None => {}
    }
    if let Err(refused) = authenticate(&headers) {
        return Ok(refused.answer());
    }
    if let Some(key) = &shared.merchant_key {
        if let Err(refused) = check_signature(key, &headers, &uri, &body) {
            return Ok(refused.answer());
        }
    }
    // The client promises JSON bodies; form-encoded ones (which Ping++ also takes) would
    // mean it broke that promise.
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (method == Method::POST || method == Method::PUT) && !json_body {
        return Ok(error(
            400,
            "invalid_request_error",
            "Content-Type 须为 application/json",
            None,
        ));
    }
    // Whatever comes before /v1/ is taken as a gateway prefix, so clients with a prefixed
    // api_base can be tested (their signature must cover the prefix).
    let path = req_path(&uri);
    let answer = route(&shared, &method, &path, &uri, &body);
    if lose_answer {
        return Ok(error(502, "api_error", "Bad Gateway (fake)", None));
    }
    if let Some(delay) = late_by {
        tokio::time::sleep(delay).await;
    }
    Ok(answer)
}

fn route(shared: &Shared, method: &Method, path: &str, uri: &str, body: &[u8]) -> Answer {
    if method == Method::GET {
        let lists = [
            ("/v1/charges".to_owned(), List::Charges),
            (format!("/v1/apps/{APP_ID}/recharges"), List::Recharges),
            (format!("/v1/apps/{APP_ID}/withdrawals"), List::Withdrawals),
        ];
        if let Some((_, list)) = lists.iter().find(|(p, _)| p == path) {
            return list_objects(shared, *list, uri);
        }
    }
    if let Some(rest) = path.strip_prefix("/v1/apps/") {
        return recharges_route(shared, method, rest, body);
    }
    match (method, path.strip_prefix("/v1/charges")) {
        (&Method::POST, Some("")) => create_charge(shared, body),
        (&Method::GET, Some(rest)) if rest.starts_with('/') && rest.len() > 1 => {
            let id = &rest[1..];
            match shared.state().charges.get(id) {
                Some(charge) => answer(200, charge),
                None => error(
                    404,
                    "invalid_request_error",
                    &format!("未找到 charge : {id}"),
                    Some("id"),
                ),
            }
        }
        _ => error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL ({method}: {path})"),
            None,
        ),
    }
}

#[derive(Debug, Clone, Copy)]
enum List {
    Charges,
    Recharges,
    Withdrawals,
}

/// `GET` of a collection, as Ping++ pages its lists: newest first, `limit` (1 to 100, 10 by
/// default), `starting_after` an id, `created[gte]` / `created[lte]` unix seconds; charges
/// need `app[id]`.
fn list_objects(shared: &Shared, list: List, uri: &str) -> Answer {
    let url = reqwest::Url::parse(&format!("http://fake{uri}")).expect("a request URI");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if matches!(list, List::Charges) && query.get("app[id]").map(String::as_str) != Some(APP_ID) {
        return invalid("缺少参数: app[id]", "app[id]").answer();
    }
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        _ => return invalid("limit 须为 1 到 100", "limit").answer(),
    };
    let bound = |name: &str| query.get(name).and_then(|v| v.parse::<i64>().ok());
    let (gte, lte) = (bound("created[gte]"), bound("created[lte]"));
    let state = shared.state();
    let ids = match list {
        List::Charges => &state.order,
        List::Recharges => &state.recharge_order,
        List::Withdrawals => &state.withdrawal_order,
    };
    let object = |id: &str| match list {
        List::Charges => state.charges[id].clone(),
        List::Recharges => state.recharge(id).unwrap(),
        List::Withdrawals => state.withdrawals[id].clone(),
    };
    let newest_first: Vec<Value> = ids
        .iter()
        .rev()
        .map(|id| object(id))
        .filter(|o| {
            let created = o["created"]
                .as_i64()
                .or_else(|| o["created"].as_str().and_then(|c| c.parse().ok()))
                .unwrap_or(0);
            gte.is_none_or(|t| created >= t) && lte.is_none_or(|t| created <= t)
        })
        .collect();
    let start = match query.get("starting_after") {
        None => 0,
        Some(after) => match newest_first.iter().position(|o| o["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => {
                return invalid(format!("starting_after 不存在: {after}"), "starting_after")
                    .answer()
            }
        },
    };
    let page: Vec<Value> = newest_first
        .iter()
        .skip(start)
        .take(limit)
        .cloned()
        .collect();
    let has_more = start + page.len() < newest_first.len();
    answer(
        200,
        &json!({ "object": "list", "url": url.path(), "has_more": has_more, "data": page }),
    )
}

/// The path from `/v1/` on, without the query.
fn req_path(uri: &str) -> String {
    let path = uri.split('?').next().unwrap_or_default();
    match path.find("/v1/") {
        Some(start) => path[start..].to_owned(),
        None => path.to_owned(),
    }
}

/// Bearer with the secret key (most SDKs) or Basic with it as the user name (Node, Go).
fn authenticate(headers: &HeaderMap) -> Result<(), Refusal> {
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

fn check_signature(key: &[u8], headers: &HeaderMap, uri: &str, body: &[u8]) -> Result<(), Refusal> {
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

fn create_charge(shared: &Shared, body: &[u8]) -> Answer {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return error(400, "invalid_request_error", "请求体不是 JSON 对象", None),
    };
    if let Err(refused) = validate_charge(&request) {
        return refused.answer();
    }
    let order_no = request["order_no"].as_str().unwrap().to_owned();
    let request = Value::Object(request);
    let mut state = shared.state();
    // Like Ping++: the same order_no with the same parameters is the same charge.
    if let Some((id, original)) = state.by_order_no.get(&order_no) {
        if state.refuse_reused_order_no {
            return invalid(format!("order_no {order_no} 已被使用"), "order_no").answer();
        }
        return if *original == request {
            answer(200, &state.charges[id])
        } else {
            invalid(
                format!("订单号 {order_no} 已存在，且参数与已有 charge 不一致"),
                "order_no",
            )
            .answer()
        };
    }
    let charge = new_charge(&request);
    let id = charge["id"].as_str().unwrap().to_owned();
    state.by_order_no.insert(order_no, (id.clone(), request));
    state.order.push(id.clone());
    state.charges.insert(id, charge.clone());
    answer(200, &charge)
}

fn validate_charge(request: &Map<String, Value>) -> Result<(), Refusal> {
    if let Some(unknown) = request
        .keys()
        .find(|k| !CHARGE_FIELDS.contains(&k.as_str()))
    {
        return Err(invalid(format!("不支持的参数: {unknown}"), unknown));
    }
    let text = |name: &str| request.get(name).and_then(Value::as_str);
    let missing = |name: &str| invalid(format!("缺少参数: {name}"), name);
    let order_no = text("order_no").ok_or_else(|| missing("order_no"))?;
    if !(8..=20).contains(&order_no.len()) || !order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("order_no 须为 8 到 20 位字母或数字", "order_no"));
    }
    let app = request
        .get("app")
        .and_then(|a| a.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| missing("app"))?;
    if app != APP_ID {
        return Err(invalid(format!("app 不存在: {app}"), "app"));
    }
    let channel = text("channel").ok_or_else(|| missing("channel"))?;
    let Some((_, required_extra)) = CHANNELS.iter().find(|(c, _)| *c == channel) else {
        return Err(invalid(format!("不支持的渠道: {channel}"), "channel"));
    };
    match request.get("amount").and_then(Value::as_u64) {
        Some(1..=1_000_000_000) => {}
        Some(_) => return Err(invalid("amount 须在 1 到 1000000000 之间", "amount")),
        None => return Err(invalid("amount 须为正整数", "amount")),
    }
    let client_ip = text("client_ip").ok_or_else(|| missing("client_ip"))?;
    if client_ip.parse::<Ipv4Addr>().is_err() {
        return Err(invalid("client_ip 须为 IPv4 地址", "client_ip"));
    }
    if text("currency") != Some("cny") {
        return Err(invalid("currency 只支持 cny", "currency"));
    }
    for (name, max) in [("subject", 32), ("body", 128)] {
        let value = text(name).ok_or_else(|| missing(name))?;
        if value.is_empty() || value.chars().count() > max {
            return Err(invalid(
                format!("{name} 长度须在 1 到 {max} 个字符之间"),
                name,
            ));
        }
    }
    let extra = match request.get("extra") {
        None => None,
        Some(Value::Object(extra)) => Some(extra),
        Some(_) => return Err(invalid("extra 须为对象", "extra")),
    };
    if let Some(field) = required_extra {
        if extra
            .and_then(|e| e.get(*field))
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(invalid(
                format!("渠道 {channel} 缺少参数 extra[{field}]"),
                &format!("extra[{field}]"),
            ));
        }
    }
    if let Some(expire) = request.get("time_expire") {
        let max_days = if channel.starts_with("wx") { 7 } else { 15 };
        let created = now();
        match expire.as_i64() {
            Some(t) if t >= created + 60 && t <= created + max_days * 86_400 => {}
            _ => {
                return Err(invalid(
                    format!("time_expire 须在创建后 1 分钟到 {max_days} 天之间"),
                    "time_expire",
                ))
            }
        }
    }
    if request.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(invalid("metadata 须为对象", "metadata"));
    }
    match request.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.chars().count() <= 255 => {}
        Some(_) => return Err(invalid("description 最长 255 个字符", "description")),
    }
    Ok(())
}

fn new_charge(request: &Value) -> Value {
    let id = format!("ch_{}", random_alnum(24));
    let created = now();
    let channel = request["channel"].as_str().unwrap();
    let amount = request["amount"].as_u64().unwrap();
    // Ping++'s defaults: one day, two hours for WeChat.
    let default_expiry = if channel.starts_with("wx") {
        7_200
    } else {
        86_400
    };
    let extra = request.get("extra").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": id,
        "object": "charge",
        "created": created,
        "livemode": false,
        "paid": false,
        "refunded": false,
        "reversed": false,
        "app": APP_ID,
        "channel": channel,
        "order_no": request["order_no"],
        "client_ip": request["client_ip"],
        "amount": amount,
        "amount_settle": amount,
        "currency": "cny",
        "subject": request["subject"],
        "body": request["body"],
        "extra": extra,
        "time_paid": null,
        "time_expire": request.get("time_expire").cloned().unwrap_or(json!(created + default_expiry)),
        "time_settle": null,
        "transaction_no": null,
        "refunds": {
            "object": "list",
            "url": format!("/v1/charges/{id}/refunds"),
            "has_more": false,
            "data": [],
        },
        "amount_refunded": 0,
        "failure_code": null,
        "failure_msg": null,
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
        "credential": {
            "object": "credential",
            channel: credential(channel, request, amount, &extra),
        },
        "description": request.get("description").cloned().unwrap_or(Value::Null),
    })
}

/// What the client needs to open the channel's payment UI, in each channel's shape.
fn credential(channel: &str, request: &Value, amount: u64, extra: &Value) -> Value {
    let order_no = request["order_no"].as_str().unwrap();
    let subject = request["subject"].as_str().unwrap();
    let yuan = format!("{}.{:02}", amount / 100, amount % 100);
    let prepay_id = format!("wx{}", random_digits(30));
    let nonce = random_alnum(32);
    let timestamp = now().to_string();
    let sign = random_alnum(32);
    match channel {
        "applepay_upacp" => {
            json!({ "tn": random_digits(21), "mode": "01", "merchant_id": "merchant.com.example.fake" })
        }
        "upacp" => json!({ "tn": random_digits(21), "mode": "01" }),
        "upacp_pc" | "upacp_wap" => json!({
            "version": "5.1.0", "encoding": "UTF-8", "txnType": "01", "txnSubType": "01",
            "channelType": if channel == "upacp_pc" { "07" } else { "08" },
            "merId": "777290058110048", "orderId": order_no, "txnAmt": amount.to_string(),
            "currencyCode": "156", "frontUrl": extra["result_url"],
            "signature": sign,
        }),
        "alipay" => json!({
            "orderInfo": format!(
                "_input_charset=\"utf-8\"&body=\"{}\"&out_trade_no=\"{order_no}\"&partner=\"2088000000000000\"&payment_type=\"1\"&service=\"mobile.securitypay.pay\"&subject=\"{subject}\"&total_fee=\"{yuan}\"&sign=\"{sign}\"&sign_type=\"RSA\"",
                request["body"].as_str().unwrap()
            ),
        }),
        "alipay_wap" | "alipay_pc_direct" => json!({
            "channel_url": "https://mapi.alipay.com/gateway.do",
            "service": if channel == "alipay_wap" { "alipay.wap.create.direct.pay.by.user" } else { "create_direct_pay_by_user" },
            "_input_charset": "utf-8",
            "partner": "2088000000000000",
            "out_trade_no": order_no,
            "subject": subject,
            "total_fee": yuan,
            "payment_type": "1",
            "return_url": extra["success_url"],
            "sign": sign,
            "sign_type": "RSA",
        }),
        "alipay_qr" => json!(format!("https://qr.alipay.com/bax0{}", random_alnum(20))),
        "wx" => json!({
            "appId": "wxfake0000000000", "partnerId": "1230000000", "prepayId": prepay_id,
            "nonceStr": nonce, "timeStamp": timestamp, "packageValue": "Sign=WXPay", "sign": sign,
        }),
        "wx_pub" | "wx_lite" => json!({
            "appId": "wxfake0000000000", "timeStamp": timestamp, "nonceStr": nonce,
            "package": format!("prepay_id={prepay_id}"), "signType": "MD5", "paySign": sign,
        }),
        "wx_pub_qr" => json!(format!("weixin://wxpay/bizpayurl?pr={}", random_alnum(7))),
        "wx_wap" => json!(format!(
            "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay_id}&package={}",
            random_digits(10)
        )),
        _ => json!({}),
    }
}

/// `/v1/apps/{app}/recharges` and `/v1/apps/{app}/recharges/{id}`; `rest` follows `/v1/apps/`.
fn recharges_route(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Answer {
    let mut parts = rest.splitn(3, '/');
    let (app, collection, id) = (parts.next(), parts.next(), parts.next());
    if collection == Some("withdrawals") && app == Some(APP_ID) {
        return withdrawals_route(shared, method, id, body);
    }
    if collection != Some("recharges") {
        return error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL ({method}: /v1/apps/{rest})"),
            None,
        );
    }
    if app != Some(APP_ID) {
        return error(
            404,
            "invalid_request_error",
            &format!("app 不存在: {}", app.unwrap_or_default()),
            Some("app"),
        );
    }
    match (method, id) {
        (&Method::POST, None) => create_recharge(shared, body),
        (&Method::GET, Some(id)) if !id.is_empty() => match shared.state().recharge(id) {
            Some(recharge) => answer(200, &recharge),
            None => error(
                404,
                "invalid_request_error",
                &format!("未找到 recharge : {id}"),
                Some("id"),
            ),
        },
        _ => error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL ({method}: /v1/apps/{rest})"),
            None,
        ),
    }
}

const RECHARGE_FIELDS: &[&str] = &[
    "user",
    "charge",
    "user_fee",
    "balance_bonus",
    "from_user",
    "description",
    "metadata",
];

const RECHARGE_CHARGE_FIELDS: &[&str] = &[
    "amount",
    "channel",
    "order_no",
    "subject",
    "body",
    "time_expire",
    "client_ip",
    "extra",
];

fn create_recharge(shared: &Shared, body: &[u8]) -> Answer {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return error(400, "invalid_request_error", "请求体不是 JSON 对象", None),
    };
    let charge = match validate_recharge(&request) {
        Ok(charge) => charge,
        Err(refused) => return refused.answer(),
    };
    let order_no = charge["order_no"].as_str().unwrap().to_owned();
    let request = Value::Object(request);
    let mut state = shared.state();
    // The charge's order_no keys the recharge, as it keys a charge.
    if let Some((id, original)) = state.recharge_by_order_no.get(&order_no) {
        if state.refuse_reused_order_no {
            return invalid(format!("order_no {order_no} 已被使用"), "charge[order_no]").answer();
        }
        return if *original == request {
            answer(200, &state.recharge(id).unwrap())
        } else {
            invalid(
                format!("订单号 {order_no} 已存在，且参数与已有 recharge 不一致"),
                "charge[order_no]",
            )
            .answer()
        };
    }
    if state.by_order_no.contains_key(&order_no) {
        return invalid(format!("订单号 {order_no} 已存在"), "charge[order_no]").answer();
    }
    let new = new_charge(&Value::Object(charge.clone()));
    let charge_id = new["id"].as_str().unwrap().to_owned();
    let id = format!("220{}", random_digits(16));
    let user = request["user"].clone();
    let recharge = json!({
        "id": id,
        "object": "recharge",
        "app": APP_ID,
        "created": now(),
        "livemode": false,
        "amount": charge["amount"],
        "succeeded": false,
        "time_succeeded": null,
        "refunded": false,
        "user": user,
        "from_user": request.get("from_user").cloned().unwrap_or(user),
        "user_fee": request.get("user_fee").cloned().unwrap_or(json!(0)),
        "charge": charge_id,
        "balance_bonus": request.get("balance_bonus").cloned().unwrap_or(json!({})),
        "refunds": {},
        "balance_transaction": "",
        "description": request.get("description").cloned().unwrap_or(json!("")),
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
    });
    state
        .by_order_no
        .insert(order_no.clone(), (charge_id.clone(), Value::Object(charge)));
    state.order.push(charge_id.clone());
    state.charges.insert(charge_id, new);
    state
        .recharge_by_order_no
        .insert(order_no, (id.clone(), request));
    state.recharge_order.push(id.clone());
    state.recharges.insert(id.clone(), recharge);
    answer(200, &state.recharge(&id).unwrap())
}

/// Ping++'s limits on a recharge; returns its charge as a charge request (app and currency
/// filled in) once valid.
fn validate_recharge(request: &Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
    if let Some(unknown) = request
        .keys()
        .find(|k| !RECHARGE_FIELDS.contains(&k.as_str()))
    {
        return Err(invalid(format!("不支持的参数: {unknown}"), unknown));
    }
    match request.get("user").and_then(Value::as_str) {
        Some(user) if !user.is_empty() && user.chars().count() <= 64 => {}
        Some(_) => return Err(invalid("user 长度须在 1 到 64 个字符之间", "user")),
        None => return Err(invalid("缺少参数: user", "user")),
    }
    let Some(Value::Object(charge)) = request.get("charge") else {
        return Err(invalid("缺少参数: charge", "charge"));
    };
    if let Some(unknown) = charge
        .keys()
        .find(|k| !RECHARGE_CHARGE_FIELDS.contains(&k.as_str()))
    {
        return Err(invalid(
            format!("不支持的参数: charge[{unknown}]"),
            &format!("charge[{unknown}]"),
        ));
    }
    let mut as_charge = charge.clone();
    as_charge.insert("app".into(), json!({ "id": APP_ID }));
    as_charge.insert("currency".into(), json!("cny"));
    as_charge
        .entry("client_ip")
        .or_insert_with(|| json!("127.0.0.1"));
    validate_charge(&as_charge).map_err(|refusal| Refusal {
        param: refusal.param.map(|p| format!("charge[{p}]")),
        ..refusal
    })?;
    let amount = charge["amount"].as_u64().unwrap();
    let fee = request.get("user_fee");
    let bonus = request.get("balance_bonus");
    if fee.is_some() && bonus.is_some() {
        return Err(invalid(
            "user_fee 和 balance_bonus[amount] 不可同时使用",
            "user_fee",
        ));
    }
    if let Some(fee) = fee {
        match fee.as_u64() {
            Some(fee) if fee <= amount => {}
            _ => {
                return Err(invalid(
                    "user_fee 须为不大于 charge[amount] 的非负整数",
                    "user_fee",
                ))
            }
        }
    }
    if let Some(bonus) = bonus {
        if bonus.get("amount").and_then(Value::as_u64).is_none() {
            return Err(invalid(
                "balance_bonus[amount] 须为非负整数",
                "balance_bonus[amount]",
            ));
        }
    }
    match request.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.chars().count() <= 255 => {}
        Some(_) => return Err(invalid("description 最长 255 个字符", "description")),
    }
    if request.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(invalid("metadata 须为对象", "metadata"));
    }
    Ok(as_charge)
}

/// `/v1/apps/{app}/withdrawals[/{id}]`: create, confirm or cancel (PUT), retrieve.
fn withdrawals_route(shared: &Shared, method: &Method, id: Option<&str>, body: &[u8]) -> Answer {
    match (method, id) {
        (&Method::POST, None) => create_withdrawal(shared, body),
        (&Method::GET, Some(id)) if !id.is_empty() => match shared.state().withdrawals.get(id) {
            Some(withdrawal) => answer(200, withdrawal),
            None => not_found_withdrawal(id),
        },
        (&Method::PUT, Some(id)) if !id.is_empty() => update_withdrawal(shared, id, body),
        _ => error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL ({method}: withdrawals)"),
            None,
        ),
    }
}

fn not_found_withdrawal(id: &str) -> Answer {
    error(
        404,
        "invalid_request_error",
        &format!("未找到 withdrawal : {id}"),
        Some("id"),
    )
}

fn create_withdrawal(shared: &Shared, body: &[u8]) -> Answer {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return error(400, "invalid_request_error", "请求体不是 JSON 对象", None),
    };
    if let Some(unknown) = request
        .keys()
        .find(|k| !WITHDRAWAL_FIELDS.contains(&k.as_str()))
    {
        return invalid(format!("不支持的参数: {unknown}"), unknown).answer();
    }
    let text = |name: &str| request.get(name).and_then(Value::as_str);
    match text("user") {
        Some(user) if !user.is_empty() && user.chars().count() <= 64 => {}
        _ => return invalid("缺少参数: user", "user").answer(),
    }
    match text("channel") {
        Some(channel) if WITHDRAWAL_CHANNELS.contains(&channel) => {}
        Some(channel) => {
            return invalid(format!("不支持的提现渠道: {channel}"), "channel").answer()
        }
        None => return invalid("缺少参数: channel", "channel").answer(),
    }
    match request.get("amount").and_then(Value::as_u64) {
        Some(1..=1_000_000_000) => {}
        _ => return invalid("amount 须为正整数", "amount").answer(),
    }
    let Some(order_no) = text("order_no").map(str::to_owned) else {
        return invalid("缺少参数: order_no", "order_no").answer();
    };
    if !(8..=20).contains(&order_no.len()) || !order_no.chars().all(|c| c.is_ascii_alphanumeric()) {
        return invalid("order_no 须为 8 到 20 位字母或数字", "order_no").answer();
    }
    if request
        .get("extra")
        .and_then(|e| e.get("return_url"))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return invalid("缺少参数: extra[return_url]", "extra[return_url]").answer();
    }
    let request = Value::Object(request);
    let mut state = shared.state();
    // Like a charge: the same order_no with the same parameters is the same withdrawal.
    if let Some((id, original)) = state.withdrawal_by_order_no.get(&order_no) {
        if state.refuse_reused_order_no {
            return invalid(format!("order_no {order_no} 已被使用"), "order_no").answer();
        }
        return if *original == request {
            answer(200, &state.withdrawals[id])
        } else {
            invalid(
                format!("订单号 {order_no} 已存在，且参数与已有 withdrawal 不一致"),
                "order_no",
            )
            .answer()
        };
    }
    let id = format!("1712{}", random_digits(15));
    let withdrawal = json!({
        "id": id,
        "object": "withdrawal",
        "app": APP_ID,
        "amount": request["amount"],
        "channel": request["channel"],
        "created": now(),
        "description": request.get("description").cloned().unwrap_or(Value::Null),
        "extra": request["extra"],
        "failure_msg": null,
        "fee": 0,
        "livemode": false,
        "metadata": request.get("metadata").cloned().unwrap_or(json!({})),
        "operation_url": null,
        "order_no": order_no,
        "source": null,
        "status": "created",
        "time_canceled": null,
        "time_succeeded": null,
        "user": request["user"],
        "user_fee": request.get("user_fee").cloned().unwrap_or(json!(0)),
        "settle_account": request.get("settle_account").cloned().unwrap_or(Value::Null),
    });
    state
        .withdrawal_by_order_no
        .insert(order_no, (id.clone(), request));
    state.withdrawal_order.push(id.clone());
    state.withdrawals.insert(id, withdrawal.clone());
    answer(200, &withdrawal)
}

/// `{"status":"pending"}` confirms a created withdrawal (it then shows `processing` and its
/// `operation_url`, as in Ping++'s account-system API's example); `{"status":"canceled"}` cancels a created one.
/// Asking again for the state it is in answers it unchanged.
fn update_withdrawal(shared: &Shared, id: &str, body: &[u8]) -> Answer {
    let wanted = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v.get("status").and_then(Value::as_str).map(str::to_owned),
        Err(_) => None,
    };
    let mut state = shared.state();
    let Some(withdrawal) = state.withdrawals.get_mut(id) else {
        return not_found_withdrawal(id);
    };
    let current = withdrawal["status"].as_str().unwrap_or_default().to_owned();
    match (wanted.as_deref(), current.as_str()) {
        (Some("pending"), "created") => {
            withdrawal["status"] = json!("processing");
            withdrawal["operation_url"] = json!(format!(
                "https://member.yeepay.com/yeepay-std-wallet/wallet.html#/wallet?order={}",
                withdrawal["order_no"].as_str().unwrap_or_default()
            ));
        }
        (Some("canceled"), "created") => {
            withdrawal["status"] = json!("canceled");
            withdrawal["time_canceled"] = json!(now());
        }
        (Some("pending"), "pending" | "processing") | (Some("canceled"), "canceled") => {}
        (Some("pending" | "canceled"), _) => {
            return invalid(
                format!("提现状态为 {current}，不能改为 {}", wanted.unwrap()),
                "status",
            )
            .answer()
        }
        _ => return invalid("status 须为 pending 或 canceled", "status").answer(),
    }
    answer(200, withdrawal)
}
