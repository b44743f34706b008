//! What the commands that call Ping++ share: the client, how its failures become a rejection
//! or a wait, and how an unknown outcome is told.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Engine;
use crate::domain::outcome::{Code, Rejection};
use crate::error::EngineError;
use crate::pingpp::{PingppClient, PingppError};

/// Ping++'s clock and ours may disagree: look this far before a create began for what it made.
pub(super) const LOOKUP_MARGIN_SECS: i64 = 600;

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The Ping++ client; without one the command can't be applied, which is not its fault: it is
/// retried and finally dead-lettered, never rejected.
pub(super) fn client(engine: &Engine) -> Result<&PingppClient, EngineError> {
    engine.pingpp.as_ref().ok_or_else(|| {
        EngineError::Broken(
            "Ping++ is not configured (set pingpp.app_id and pingpp.secret_key): \
             commands that call Ping++ cannot be applied"
                .into(),
        )
    })
}

/// A refusal by Ping++ (an error body) as the command's rejection; `None` for any other
/// failure, which is not the command's fault.
pub(super) fn rejection(error: &PingppError) -> Option<Rejection> {
    match error {
        PingppError::Api {
            kind,
            message,
            param,
            ..
        } => {
            let field = param.as_deref().unwrap_or("type");
            let mut rejection =
                Rejection::field(Code::PaymentProviderError, field, message.as_str());
            rejection
                .errors
                .insert("pingpp".into(), vec![format!("{kind}: {message}")]);
            Some(rejection)
        }
        _ => None,
    }
}

/// A Ping++ failure that is not a refusal: transient ones are retried.
pub(super) fn failure(error: PingppError) -> EngineError {
    EngineError::Pingpp { source: error }
}

/// A refusal as the command's rejection, or any other failure to retry.
pub(super) fn refused_or_retry(error: PingppError) -> Result<Rejection, EngineError> {
    rejection(&error).ok_or_else(|| failure(error))
}

/// Whether Ping++ refused because the `order_no` was used: ours are unique by construction, so
/// only an earlier attempt of the same command can have used it.
pub(super) fn refuses_used_order_no(error: &PingppError) -> bool {
    match error {
        PingppError::Api { message, param, .. } => {
            let about_order_no = param.as_deref().is_some_and(|p| p.contains("order_no"))
                || message.contains("order_no")
                || message.contains("订单号");
            // About the number, and saying it was used: not "missing" or "not supported".
            let used = [
                "已存在",
                "已被使用",
                "已使用",
                "重复",
                "used",
                "exist",
                "duplicate",
            ]
            .iter()
            .any(|word| message.contains(word));
            about_order_no && used
        }
        _ => false,
    }
}

pub(crate) const MSG_OUTCOME_UNKNOWN: &str = "Ping++ 处理结果未知，请人工核实";

/// Ping++ may or may not have acted, it can't be found out, and the request may not be sent
/// again: the command is answered so, for good (`provider_outcome_unknown`), and an operator
/// decides; nothing is resent by itself.
pub(super) fn outcome_unknown_rejection(
    endpoint: &'static str,
    order_no: &str,
    message: &str,
) -> Rejection {
    crate::metrics::pingpp_outcome_unknown(endpoint);
    tracing::warn!(%order_no, endpoint, "Ping++'s outcome is unknown and won't be asked again: an operator decides");
    let mut rejection = Rejection::field(Code::ProviderOutcomeUnknown, "type", message);
    rejection
        .errors
        .insert("order_no".into(), vec![order_no.to_owned()]);
    rejection
}

/// Ping++ may or may not have acted and it can't be found out now: never a rejection; the
/// command waits and is tried again (the worker retries transient errors), and says so.
pub(super) fn outcome_unknown(endpoint: &'static str, order_no: &str) -> EngineError {
    crate::metrics::pingpp_outcome_unknown(endpoint);
    tracing::warn!(
        %order_no,
        endpoint,
        "Ping++ may have acted on this order_no and that can't be found out now: the command waits"
    );
    EngineError::OutcomeUnknown {
        order_no: order_no.to_owned(),
    }
}

/// A Ping++ object as pluspay keeps and passes it on: personal data masked.
pub(super) fn masked(mut object: serde_json::Value) -> serde_json::Value {
    crate::domain::account::mask_personal(&mut object);
    object
}

/// A text field of what Ping++ answered; one missing is a broken answer.
pub(super) fn field<'a>(object: &'a serde_json::Value, name: &str) -> Result<&'a str, EngineError> {
    object
        .get(name)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| EngineError::Broken(format!("Ping++ answered without {name}")))
}
