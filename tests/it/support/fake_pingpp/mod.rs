//! A fake Ping++ API server on 127.0.0.1 for tests: real-shaped charges, Ping++ error bodies,
//! the same authentication and request-signature checks, scripted failures and delays, and
//! webhooks signed with its own key, as Ping++ signs them.
//!
//! It uses aws-lc-rs directly rather than pluspay's signing code, so a bug there cannot hide
//! itself by being on both sides of a test.
//!
//! Here are the handle tests drive it with, the server loop and the routing; `charges`,
//! `recharges` (recharge objects), `withdrawals`, `accounts` (the account system's users and
//! their applications), `merchants` (sub-merchants, their applications and settle accounts),
//! `deposits`, `orders` (orders, their refunds, allocations), `refunds` (refunds of charges)
//! and `lists` answer their
//! endpoints, and `keys` holds the key pairs and the checks of a request's API key and
//! signature.

mod accounts;
mod charges;
mod deposits;
mod keys;
mod lists;
mod merchants;
mod orders;
mod recharges;
mod refunds;
mod withdrawals;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use accounts::accounts_route;
use charges::create_charge;
pub use charges::EXPIRED_CODE;
use deposits::deposits_route;
pub use keys::generate_test_keys;
use keys::{authenticate, check_signature, webhook_keys};
use lists::{list_objects, List};
use merchants::{merchants_route, settle_accounts_route};
use orders::orders_route;
use recharges::recharges_route;
use refunds::charge_refunds_route;

pub const SECRET_KEY: &str = "sk_test_fakeK0mP9aZ1bQ8xW2cN7rT4";
pub const APP_ID: &str = "app_fake5anXP4ezfXvL";

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
    /// Account-system users by id, their balances (in fen) and `identified` included.
    users: HashMap<String, Value>,
    /// Personal account applications by id, as answered (the ID number masked).
    cus_applications: HashMap<String, Value>,
    /// Application ids in creation order.
    cus_application_order: Vec<String>,
    /// order_no → (application id, keyed hash of the request): tells a repeat without keeping
    /// the ID or mobile number.
    cus_application_by_order_no: HashMap<String, (String, Vec<u8>)>,
    deposits: HashMap<String, Value>,
    /// Deposit ids in creation order.
    deposit_order: Vec<String>,
    /// order_no → (deposit id, the request that created it).
    deposit_by_order_no: HashMap<String, (String, Value)>,
    /// Confirmed withdrawals of account-system users, whose amount is held off the balance
    /// until they fail or are canceled: withdrawal id → (user, amount).
    withdrawal_holds: HashMap<String, (String, u64)>,
    /// Sub-merchants by id, their business user kept as its id (see [`State::sub_app`]).
    sub_apps: HashMap<String, Value>,
    /// Sub_app ids in creation order.
    sub_app_order: Vec<String>,
    /// Business user id → their sub_app's id: one sub_app per user.
    sub_app_by_user: HashMap<String, String>,
    /// Enterprise and micro merchant applications by id, as answered (no personal data).
    merchant_applications: HashMap<String, Value>,
    /// Merchant application ids in creation order.
    merchant_application_order: Vec<String>,
    /// Every order_no a merchant application was made under: never taken again.
    merchant_application_order_nos: HashSet<String>,
    /// Sub-merchants' settle accounts, as answered (account numbers masked).
    settle_accounts: Vec<Value>,
    /// Orders by id, as answered: their charges live inside them (`charges.data`), not in
    /// `charges`.
    orders: HashMap<String, Value>,
    /// Order ids in creation order.
    order_order: Vec<String>,
    /// merchant_order_no → (order id, the request that created it).
    order_by_merchant_order_no: HashMap<String, (String, Value)>,
    /// What each paid allocation order holds (fen): paid in and neither allocated, refunded
    /// nor completed yet.
    held: HashMap<String, i64>,
    /// Refunds of orders by id.
    order_refunds: HashMap<String, Value>,
    /// Order refund ids in creation order.
    order_refund_order: Vec<String>,
    /// order_no → (refund id, the request that created it, its order's id included).
    order_refund_by_order_no: HashMap<String, (String, Value)>,
    /// Allocations and allocation refunds (both `allocation` objects, told apart by `type`).
    allocations: HashMap<String, Value>,
    /// Their ids in creation order.
    allocation_order: Vec<String>,
    /// order_no → (allocation id, the request that created it), both types in one space.
    allocation_by_order_no: HashMap<String, (String, Value)>,
    allocation_completes: HashMap<String, Value>,
    /// Allocation complete ids in creation order.
    allocation_complete_order: Vec<String>,
    /// order_no → (allocation complete id, the request that created it).
    allocation_complete_by_order_no: HashMap<String, (String, Value)>,
    /// Refunds of charges by id.
    charge_refunds: HashMap<String, Value>,
    /// Their ids in creation order.
    charge_refund_order: Vec<String>,
    /// `Some(status)`: new charge refunds are decided at once (`succeeded`, or failed), as
    /// some channels answer.
    decide_refunds_at_once: Option<String>,
}

impl State {
    /// A sub_app as Ping++ shows it: with its business user as it is now.
    fn sub_app(&self, id: &str) -> Option<Value> {
        let mut sub_app = self.sub_apps.get(id)?.clone();
        let user = sub_app["user"].as_str()?.to_owned();
        sub_app["user"] = self.users.get(&user)?.clone();
        Some(sub_app)
    }

    /// A recharge object as Ping++ shows it: with its charge as it is now.
    fn recharge(&self, id: &str) -> Option<Value> {
        let mut recharge = self.recharges.get(id)?.clone();
        let charge_id = recharge["charge"].as_str()?.to_owned();
        recharge["charge"] = self.charges.get(&charge_id)?.clone();
        Some(recharge)
    }

    /// Adds `delta` fen to both balances of an account-system user (a no-op for others).
    fn add_to_balance(&mut self, user: &str, delta: i64) {
        if let Some(user) = self.users.get_mut(user) {
            for balance in ["available_balance", "withdrawable_balance"] {
                let now = user[balance].as_i64().unwrap_or(0);
                user[balance] = json!(now + delta);
            }
        }
    }

    /// A withdrawal came to an end: a failed or canceled one gives back what it held, a
    /// succeeded one keeps it spent.
    fn settle_hold(&mut self, withdrawal_id: &str, status: &str) {
        if !matches!(status, "succeeded" | "failed" | "canceled") {
            return;
        }
        if let Some((user, amount)) = self.withdrawal_holds.remove(withdrawal_id) {
            if status != "succeeded" {
                self.add_to_balance(&user, amount as i64);
            }
        }
    }
}

struct Shared {
    merchant_key: Option<Vec<u8>>,
    /// The fake's own key for hashing requests it must recognize but not keep.
    request_key: hmac::Key,
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
        let request_key =
            hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
                .expect("an HMAC key");
        let shared = Arc::new(Shared {
            merchant_key,
            request_key,
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
        let status = crate::support::post_webhook(
            &reqwest::Client::new(),
            url,
            body.as_bytes(),
            Some(signature),
        )
        .await;
        reqwest::StatusCode::from_u16(status).expect("deliver the webhook")
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

    /// All refunds of charges, in creation order.
    pub fn charge_refunds(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .charge_refund_order
            .iter()
            .map(|id| state.charge_refunds[id].clone())
            .collect()
    }

    /// The channel gave the payer the money back: returns the refund as it is now.
    pub fn succeed_charge_refund(&self, id: &str) -> Value {
        self.update_charge_refund(id, refunds::succeed)
    }

    /// The channel could not give it back.
    pub fn fail_charge_refund(&self, id: &str, code: &str, msg: &str) -> Value {
        self.update_charge_refund(id, |r| refunds::fail(r, code, msg))
    }

    /// From now on a new charge refund is answered already decided: `succeeded`, or failed
    /// for any other word; `None` goes back to `pending`.
    pub fn decide_charge_refunds_at_once(&self, status: Option<&str>) {
        self.shared.state().decide_refunds_at_once = status.map(str::to_owned);
    }

    fn update_charge_refund(&self, id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut state = self.shared.state();
        let refund = state
            .charge_refunds
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no charge refund {id}"));
        change(refund);
        let refund = refund.clone();
        refunds::sync_charge(&mut state, refund["charge"].as_str().unwrap_or_default());
        refund
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
        let withdrawal = withdrawal.clone();
        state.settle_hold(id, withdrawal["status"].as_str().unwrap_or_default());
        withdrawal
    }

    /// An account-system user (made by `POST /v1/apps/{app}/users`) as it is now: balances,
    /// `identified`.
    pub fn user(&self, id: &str) -> Option<Value> {
        self.shared.state().users.get(id).cloned()
    }

    /// All personal account applications, in creation order.
    pub fn cus_applications(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .cus_application_order
            .iter()
            .map(|id| state.cus_applications[id].clone())
            .collect()
    }

    /// YeePay opened the account: the application `succeeded` and its user is `identified`.
    /// Returns the application as it is now.
    pub fn succeed_cus_application(&self, id: &str) -> Value {
        let mut state = self.shared.state();
        let application = state
            .cus_applications
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no cus_application {id}"));
        application["status"] = json!("succeeded");
        let application = application.clone();
        let user = application["user"].as_str().unwrap_or_default();
        if let Some(user) = state.users.get_mut(user) {
            user["identified"] = json!(true);
        }
        application
    }

    /// YeePay refused to open the account.
    pub fn fail_cus_application(&self, id: &str, msg: &str) -> Value {
        let mut state = self.shared.state();
        let application = state
            .cus_applications
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no cus_application {id}"));
        application["status"] = json!("failed");
        application["failure_msg"] = json!(msg);
        application.clone()
    }

    /// All deposits, in creation order.
    pub fn deposits(&self) -> Vec<Value> {
        let state = self.shared.state();
        state
            .deposit_order
            .iter()
            .map(|id| state.deposits[id].clone())
            .collect()
    }

    pub fn deposit(&self, id: &str) -> Option<Value> {
        self.shared.state().deposits.get(id).cloned()
    }

    /// The user paid the deposit: it `succeeded` and their balance rises by its amount, once
    /// however often it is paid. Returns the deposit as it is now.
    pub fn pay_deposit(&self, id: &str) -> Value {
        let mut state = self.shared.state();
        let deposit = state
            .deposits
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no deposit {id}"));
        if deposit["status"] == "succeeded" {
            return deposit.clone();
        }
        deposit["status"] = json!("succeeded");
        deposit["time_succeeded"] = json!(now());
        let deposit = deposit.clone();
        let amount = deposit["amount"].as_i64().unwrap_or(0);
        state.add_to_balance(deposit["user"].as_str().unwrap_or_default(), amount);
        deposit
    }

    /// The payment failed (the balance is not touched, even for a deposit paid before).
    pub fn fail_deposit(&self, id: &str, msg: &str) -> Value {
        self.update_deposit(id, |d| {
            d["status"] = json!("failed");
            d["failure_msg"] = json!(msg);
        })
    }

    /// The payment link ran out unpaid.
    pub fn expire_deposit(&self, id: &str) -> Value {
        self.update_deposit(id, |d| {
            d["status"] = json!("canceled");
            d["failure_msg"] = json!("充值链接已过期");
        })
    }

    fn update_deposit(&self, id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut state = self.shared.state();
        let deposit = state
            .deposits
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no deposit {id}"));
        change(deposit);
        deposit.clone()
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
            (format!("/v1/apps/{APP_ID}/deposits"), List::Deposits),
        ];
        if let Some((_, list)) = lists.iter().find(|(p, _)| p == path) {
            return list_objects(shared, *list, uri);
        }
    }
    if let Some(rest) = path.strip_prefix("/v1/apps/") {
        let mut parts = rest.splitn(3, '/');
        let (app, collection, tail) = (parts.next(), parts.next(), parts.next());
        match collection {
            Some(c @ ("users" | "cus_applications" | "upload_pic" | "card_bin"))
                if app == Some(APP_ID) =>
            {
                return accounts_route(shared, method, c, tail, body)
            }
            Some("deposits") if app == Some(APP_ID) => {
                return deposits_route(shared, method, tail, body)
            }
            Some(c @ ("sub_apps" | "mch_applications" | "micro_applications"))
                if app == Some(APP_ID) =>
            {
                return merchants_route(shared, method, c, tail, body)
            }
            // A sub-merchant's own: `app` is its sub_app.
            Some("settle_accounts") if tail.is_none() => {
                return settle_accounts_route(shared, method, app.unwrap_or_default(), body)
            }
            _ => return recharges_route(shared, method, rest, body),
        }
    }
    if let Some(answer) = orders_route(shared, method, path, uri, body) {
        return answer;
    }
    if let Some(answer) = charge_refunds_route(shared, method, path, uri, body) {
        return answer;
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

/// The path from `/v1/` on, without the query.
fn req_path(uri: &str) -> String {
    let path = uri.split('?').next().unwrap_or_default();
    match path.find("/v1/") {
        Some(start) => path[start..].to_owned(),
        None => path.to_owned(),
    }
}
