//! One request: route, read the raw body within limits, verify the signature over exactly those
//! bytes, check the event's envelope, publish it unchanged and answer only after the confirm.

use std::convert::Infallible;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{info, warn};

use super::broker::BrokerHandle;
use crate::amqp::publisher::json_properties;
use crate::amqp::topology::PINGPP_ROUTING_KEY;
use crate::amqp::{Names, PublishError};
use crate::pingpp::{PingppPublicKey, WEBHOOK_SIGNATURE_HEADER};

/// The paths Ping++ may be configured to deliver to (docs/CONTRACT.md §2).
pub const WEBHOOK_PATHS: [&str; 2] = ["/webhooks/pingpp", "/api/v2/plus-pay/webhooks"];

/// How long `/readyz` waits for the database.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a request needs; shared by all connections.
pub struct State {
    pub key: PingppPublicKey,
    pub names: Names,
    pub max_body_bytes: usize,
    pub read_timeout: Duration,
    pub broker: BrokerHandle,
    pub db: deadpool_postgres::Pool,
}

/// What became of one webhook delivery (or stray request). Every answer of the listener goes
/// through [`Outcome::record`], the one place that logs and counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified, and confirmed by the broker.
    Accepted,
    MissingSignature,
    /// Not base64, not a valid signature of these bytes, or made with another key.
    BadSignature,
    TooLarge,
    ReadTimeout,
    /// The body could not be read (the client went away mid-body).
    BadBody,
    /// Correctly signed, but not a Ping++ event envelope.
    Malformed,
    /// No connection, a blocked one, or the publish was not confirmed.
    BrokerUnavailable,
    NotFound,
    MethodNotAllowed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::MissingSignature => "missing_signature",
            Outcome::BadSignature => "bad_signature",
            Outcome::TooLarge => "too_large",
            Outcome::ReadTimeout => "read_timeout",
            Outcome::BadBody => "bad_body",
            Outcome::Malformed => "malformed",
            Outcome::BrokerUnavailable => "broker_unavailable",
            Outcome::NotFound => "not_found",
            Outcome::MethodNotAllowed => "method_not_allowed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Accepted => StatusCode::OK,
            Outcome::MissingSignature | Outcome::BadSignature => StatusCode::UNAUTHORIZED,
            Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::ReadTimeout => StatusCode::REQUEST_TIMEOUT,
            Outcome::BadBody | Outcome::Malformed => StatusCode::BAD_REQUEST,
            Outcome::BrokerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::NotFound => StatusCode::NOT_FOUND,
            Outcome::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Logs the outcome (the reason, never the body or the signature) and builds the answer.
    fn record(self, detail: &str) -> Response<Full<Bytes>> {
        crate::metrics::webhook(self.as_str());
        if self == Outcome::Accepted {
            info!(outcome = self.as_str(), "webhook accepted: {detail}");
            return json(self.status(), r#"{"ok":true}"#.into());
        }
        warn!(outcome = self.as_str(), reason = detail, "webhook refused");
        let body = serde_json::json!({ "ok": false, "error": self.as_str() }).to_string();
        let mut response = json(self.status(), body);
        if matches!(
            self,
            Outcome::TooLarge | Outcome::ReadTimeout | Outcome::BadBody
        ) {
            // The rest of the body is still on the wire: this connection cannot serve another
            // request.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub async fn handle(
    state: &State,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = if WEBHOOK_PATHS.contains(&path) {
        if request.method() == Method::POST {
            webhook(state, request).await
        } else {
            with_allow(Outcome::MethodNotAllowed.record(path), "POST")
        }
    } else if path == "/healthz" || path == "/readyz" {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            if path == "/healthz" {
                json(StatusCode::OK, r#"{"ok":true}"#.into())
            } else {
                ready(state).await
            }
        } else {
            with_allow(Outcome::MethodNotAllowed.record(path), "GET, HEAD")
        }
    } else {
        // The path only (no query), cut short: it is whatever the client sent.
        let shown: String = path.chars().take(100).collect();
        Outcome::NotFound.record(&shown)
    };
    Ok(response)
}

fn with_allow(mut response: Response<Full<Bytes>>, allow: &'static str) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

async fn webhook(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    // Refuse what cannot pass before reading a byte of the body.
    let signature = match request.headers().get(WEBHOOK_SIGNATURE_HEADER) {
        None => return Outcome::MissingSignature.record("no signature header"),
        Some(value) => match value.to_str() {
            Ok(signature) => signature.to_owned(),
            Err(_) => return Outcome::BadSignature.record("signature header is not ASCII"),
        },
    };
    if declared_length(&request).is_some_and(|n| n > state.max_body_bytes as u64) {
        return Outcome::TooLarge.record("declared Content-Length over webhook.max_body_bytes");
    }

    let body = Limited::new(request.into_body(), state.max_body_bytes);
    let body = match tokio::time::timeout(state.read_timeout, body.collect()).await {
        Err(_) => return Outcome::ReadTimeout.record("body not received within read_timeout"),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Outcome::TooLarge.record("body over webhook.max_body_bytes")
        }
        Ok(Err(e)) => return Outcome::BadBody.record(&format!("cannot read the body: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };

    // The signature covers exactly these bytes; nothing is parsed before it is checked.
    if !state.key.verify(&body, &signature) {
        let reason = if STANDARD.decode(signature.as_bytes()).is_err() {
            "signature is not base64"
        } else {
            "signature does not verify with pingpp.public_key"
        };
        return Outcome::BadSignature.record(reason);
    }

    // The worker's own reading of an event: what it would refuse is refused here, before
    // Ping++ is told the event arrived.
    let event = match crate::domain::event::decode(&body) {
        Ok(event) => event,
        Err(reason) => return Outcome::Malformed.record(&format!("not a Ping++ event: {reason}")),
    };

    let publisher = match state.broker.publisher() {
        Ok(publisher) => publisher,
        Err(why) => {
            return Outcome::BrokerUnavailable
                .record(&format!("broker connection {}", why.as_str()))
        }
    };
    let properties = json_properties()
        .with_message_id(event.id.as_str().into())
        .with_type(event.kind.as_str().into());
    match publisher
        .publish(
            &state.names.webhooks_exchange,
            PINGPP_ROUTING_KEY,
            &body,
            properties,
            true,
        )
        .await
    {
        Ok(()) => Outcome::Accepted.record(&format!("event {} ({})", event.id, event.kind)),
        Err(e) => {
            if matches!(e, PublishError::Broker(_) | PublishError::Timeout) {
                state.broker.report_failure();
            }
            Outcome::BrokerUnavailable.record(&format!("event {} not enqueued: {e}", event.id))
        }
    }
}

/// The Content-Length the client announced, if any (hyper has already checked its syntax).
fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn ready(state: &State) -> Response<Full<Bytes>> {
    let broker = match state.broker.publisher() {
        Ok(_) => "up",
        Err(why) => why.as_str(),
    };
    let database = match tokio::time::timeout(DB_CHECK_TIMEOUT, async {
        let client = state.db.get().await.map_err(|e| e.to_string())?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Ok(_)) => "up",
        Ok(Err(e)) => {
            warn!(error = %e, "readiness: the database does not answer");
            "down"
        }
        Err(_) => {
            warn!("readiness: the database did not answer in time");
            "down"
        }
    };
    let ok = broker == "up" && database == "up";
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ok": ok, "broker": broker, "database": database });
    json(status, body.to_string())
}
