//! The Ping++ adapter: an HTTP client for Ping++'s REST API and the RSA signatures around it.
//!
//! - [`PingppClient`] (`client/`) sends API requests: bearer authentication with the secret
//!   key, request signing with the merchant's private key when one is configured, a timeout per
//!   attempt, and retries with exponential backoff and jitter for transient failures only
//!   (`client/transport.rs`). Endpoints (charges, recharge objects, withdrawals, in
//!   `client/mod.rs`; the account system's users, applications and deposits, in
//!   `client/accounts.rs`; its sub-merchants, in `client/merchants.rs`; orders, refunds and
//!   allocations, in `client/orders.rs`) are a few lines each over one call wrapper: a request
//!   type checked and turned into a body (`client/requests.rs`, `client/account_requests.rs`,
//!   `client/merchant_requests.rs`, `client/order_requests.rs`), a path, and a check of the
//!   answer (`client/responses.rs`).
//! - [`PingppPublicKey`] verifies the `X-Pingplusplus-Signature` of incoming webhooks.
//! - [`PingppError`] tells callers whether to try again later ([`PingppError::is_transient`])
//!   or to treat the answer as final.
//!
//! Facts about Ping++ come from its official SDKs and its API documents.

pub mod client;
pub mod error;
pub mod signing;

pub use client::{
    AllocationCompleteRequest, AllocationRefundRequest, AllocationRequest, AllocationShare,
    ChargeRefundRequest, ChargeRequest, ClientConfig, CusApplicationRequest, DepositRequest,
    MerchantApplicationRequest, MerchantKind, OrderPayRequest, OrderRefundRequest, OrderRequest,
    PingppClient, RechargeObjectRequest, SentOnceError, SettleAccountRequest, SubAppRequest,
    WithdrawalRequest, WithdrawalUpdate, DEFAULT_API_BASE, MAX_ALLOCATION_SHARES, SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
};
pub use error::PingppError;
pub use signing::{sign_request, MerchantKey, PingppPublicKey};

/// The header that carries Ping++'s signature of a webhook body (match it case-insensitively).
pub const WEBHOOK_SIGNATURE_HEADER: &str = "X-Pingplusplus-Signature";
