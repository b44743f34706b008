//! What can go wrong talking to Ping++, sorted by what the caller should do about it.

/// An error from the Ping++ adapter.
///
/// Callers decide with [`PingppError::is_transient`]: a transient error means "try again later,
/// nothing is known to have failed" (the request may even have taken effect, so a retry must
/// reuse the same `order_no`); every other variant is final for the request as sent.
/// No variant ever carries the secret key: messages that come back from Ping++ are scrubbed.
#[derive(Debug, thiserror::Error)]
pub enum PingppError {
    /// Ping++ refused the request with its error body and a 4xx status (never retried).
    #[error("Ping++ {kind} (HTTP {status}): {message}")]
    Api {
        status: u16,
        /// Ping++'s `error.type`: `invalid_request_error`, `api_error`, `channel_error`.
        kind: String,
        message: String,
        code: Option<String>,
        param: Option<String>,
    },
    /// Ping++ could not be reached or did not answer in time, answered 5xx, or kept rate
    /// limiting us, after all retries.
    #[error("Ping++ unavailable: {0}")]
    Transient(String),
    /// Ping++ answered something we cannot understand.
    #[error("unexpected answer from Ping++: {0}")]
    Protocol(String),
    /// The request or the configuration is wrong before anything is sent.
    #[error("invalid Ping++ input: {0}")]
    InvalidInput(String),
}

impl PingppError {
    /// True only for [`PingppError::Transient`]: worth trying again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, PingppError::Transient(_))
    }
}
