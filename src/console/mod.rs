//! The operator console (`pluspay console`; part of `pluspay run` when `console.listen` is
//! set): server-rendered pages to decide the waiting cash requests, look at a user's wallet,
//! see the ledger's health and handle dead letters.
//!
//! It decides nothing itself. A decision is the same command anyone sends (`cash.approve`,
//! `cash.reject`), published through `send` with the logged-in operator's `user_id`, and the
//! page shows the worker's result; the rules (two-person control among them) are the engine's.
//! Reads go to the database directly, in read-only transactions.
//!
//! Security: argon2id passwords from `console.operators`; a session cookie that is `HttpOnly`,
//! `SameSite=Strict` and `Secure`; a per-session CSRF token in every form, checked on every
//! POST (the login form has its own, double-submitted in a cookie); failed logins limited per
//! name and per address; a log line naming the operator for each decision.

pub mod auth;
mod dead;
mod pages;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Settings;
use auth::{LoginLimiter, Session, Sessions};
use pages::Viewer;

const SESSION_COOKIE: &str = "pluspay_session";
const LOGIN_COOKIE: &str = "pluspay_login";
/// Forms are small: a remark or a note of at most a few hundred characters.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Password checks (argon2id) running at once.
const MAX_PASSWORD_CHECKS: usize = 2;
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a form's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a decision waits for the worker's result.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct State {
    settings: Settings,
    sessions: Sessions,
    limiter: LoginLimiter,
    /// Password checks running at once, at most.
    verifications: tokio::sync::Semaphore,
    db: deadpool_postgres::Pool,
}

type Reply = Response<Full<Bytes>>;

/// Binds `console.listen` and serves until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_readiness(settings, shutdown, || {}).await
}

/// As `run`, calling `on_ready` once the port is bound (systemd's READY=1).
pub async fn run_with_readiness(
    settings: Settings,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let listen = settings
        .console
        .listen
        .ok_or_else(|| anyhow::anyhow!("console.listen is not set"))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("console: cannot listen on {listen}: {e}"))?;
    on_ready();
    serve(listener, settings, shutdown).await
}

/// Serves on a listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if settings.console.operators.is_empty() {
        anyhow::bail!("console.operators names nobody: no one could log in");
    }
    // Bound to operator ids, the console's broker user must be allowed every account's id, or
    // that operator's decisions would all be refused.
    let broker_user = settings
        .amqp
        .broker_urls()
        .first()
        .and_then(|url| crate::amqp::url_user(url));
    if let Some(ids) = broker_user
        .as_deref()
        .and_then(|user| settings.security.operator_ids.get(user))
    {
        if let Some(operator) = settings
            .console
            .operators
            .iter()
            .find(|o| !ids.contains(&o.user_id))
        {
            anyhow::bail!(
                "console.operators: {}'s user_id {} is not among the ids security.operator_ids allows the console's broker user",
                operator.name,
                operator.user_id
            );
        }
    }
    let mut db_settings = settings.database.clone();
    db_settings.pool_size = db_settings.pool_size.min(4);
    let state = Arc::new(State {
        sessions: Sessions::new(Duration::from_secs(settings.console.session_idle_secs)),
        limiter: LoginLimiter::new(
            settings.console.login_attempts,
            Duration::from_secs(settings.console.login_window_secs),
        ),
        verifications: tokio::sync::Semaphore::new(MAX_PASSWORD_CHECKS),
        db: crate::db::pool(&db_settings)?,
        settings,
    });
    info!(address = %listener.local_addr()?, "console: accepting");
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "console: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, peer, request).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "console connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(state.settings.shutdown_timeout(), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("console: shutdown timeout; dropping requests in hand");
    }
    connections.close();
    info!("console: stopped");
    Ok(())
}

fn html(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // No script, no frames, no third parties; forms post only here.
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn redirect(to: &str) -> Reply {
    let mut response = html(StatusCode::SEE_OTHER, String::new());
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

fn set_cookie(
    response: &mut Reply,
    state: &State,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
) {
    let secure = if state.settings.console.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
}

fn cookie<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A form body, or `None` when it is too large or unreadable.
async fn form(request: Request<Incoming>) -> Option<HashMap<String, String>> {
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(request.into_body(), MAX_FORM_BYTES).collect(),
    )
    .await
    .ok()?
    .ok()?
    .to_bytes();
    Some(form_urlencoded::parse(&body).into_owned().collect())
}

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn handle(state: &State, peer: SocketAddr, request: Request<Incoming>) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => return html(StatusCode::OK, "ok".into()),
        (&Method::GET, ["login"]) => {
            let token = cookie(&request, LOGIN_COOKIE).map(str::to_owned);
            return login_page(state, token, None, StatusCode::OK);
        }
        // Browsers ask for it on their own; it must not be sent to the login page.
        (&Method::GET, ["favicon.ico"]) => {
            return html(StatusCode::NOT_FOUND, String::new());
        }
        (&Method::POST, ["login"]) => return login(state, peer, request).await,
        _ => {}
    }
    let now = Instant::now();
    let session_id = cookie(&request, SESSION_COOKIE).map(str::to_owned);
    let Some(session) = session_id
        .as_deref()
        .and_then(|id| state.sessions.get(id, now))
    else {
        return if method == Method::GET {
            redirect("/login")
        } else {
            html(
                StatusCode::FORBIDDEN,
                pages::error(None, "Not logged in", "Log in first."),
            )
        };
    };
    let viewer = Viewer {
        operator: &session.operator,
        csrf: &session.csrf,
    };
    if method == Method::POST {
        let Some(form) = form(request).await else {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                pages::error(
                    Some(&viewer),
                    "Refused",
                    "The form is too large, or came too slowly.",
                ),
            );
        };
        if !auth::tokens_match(&session.csrf, form.get("csrf").map(String::as_str)) {
            warn!(operator = %session.operator, path, "console: a form without its CSRF token refused");
            return html(
                StatusCode::FORBIDDEN,
                pages::error(
                    Some(&viewer),
                    "Refused",
                    "The form's CSRF token is missing or wrong: reload the page and try again.",
                ),
            );
        }
        return match segments.as_slice() {
            ["logout"] => {
                if let Some(id) = &session_id {
                    state.sessions.close(id);
                }
                info!(operator = %session.operator, "console: logout");
                let mut response = redirect("/login");
                set_cookie(&mut response, state, SESSION_COOKIE, "", "/", 0);
                response
            }
            ["cashes", id, "decide"] => decide(state, &session, &viewer, id, &form).await,
            ["dead", id, "replay"] => dead::replay(state, &session, &viewer, id).await,
            ["dead", id, "discard"] => dead::discard(state, &session, &viewer, id, &form).await,
            _ => not_found(&viewer),
        };
    }
    if method != Method::GET {
        return html(
            StatusCode::METHOD_NOT_ALLOWED,
            pages::error(Some(&viewer), "Not allowed", "GET or POST only."),
        );
    }
    match segments.as_slice() {
        [""] => redirect("/cashes"),
        ["cashes"] => cashes(state, &viewer).await,
        ["users"] => match query(&request).get("id").map(|id| id.trim().parse::<i64>()) {
            Some(Ok(id)) if id > 0 => redirect(&format!("/users/{id}")),
            Some(_) => html(
                StatusCode::BAD_REQUEST,
                pages::error(Some(&viewer), "Wallets", "A user id is a positive integer."),
            ),
            None => html(StatusCode::OK, pages::find_user(&viewer)),
        },
        ["users", id] => user(state, &viewer, id).await,
        ["health"] => health(state, &viewer).await,
        ["dead"] => dead::list(state, &viewer).await,
        _ => not_found(&viewer),
    }
}

fn not_found(viewer: &Viewer) -> Reply {
    html(
        StatusCode::NOT_FOUND,
        pages::error(Some(viewer), "Not found", "No such page."),
    )
}

fn unavailable(viewer: &Viewer, e: impl std::fmt::Display) -> Reply {
    warn!(error = %e, "console: a page could not be made");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::error(
            Some(viewer),
            "Unavailable",
            &format!("The page could not be made: {e}"),
        ),
    )
}

/// The login form, with the token of the login cookie the browser has (so that two login pages
/// open at once both work), or a new one.
fn login_page(
    state: &State,
    token: Option<String>,
    error: Option<&str>,
    status: StatusCode,
) -> Reply {
    let csrf = token
        .filter(|t| t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(auth::random_token);
    let mut response = html(status, pages::login(&csrf, error));
    set_cookie(&mut response, state, LOGIN_COOKIE, &csrf, "/login", 600);
    response
}

async fn login(state: &State, peer: SocketAddr, request: Request<Incoming>) -> Reply {
    let login_csrf = cookie(&request, LOGIN_COOKIE).map(str::to_owned);
    let Some(form) = form(request).await else {
        return login_page(
            state,
            None,
            Some("The form is too large, or came too slowly."),
            StatusCode::PAYLOAD_TOO_LARGE,
        );
    };
    if !auth::tokens_match(
        login_csrf.as_deref().unwrap_or(""),
        form.get("csrf").map(String::as_str),
    ) {
        return login_page(
            state,
            None,
            Some("The login form's CSRF token is missing or wrong: try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let name = form.get("name").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let client = peer.ip().to_string();
    let now = Instant::now();
    if !state.limiter.begin(&name, &client, now) {
        warn!(
            name,
            client, "console: login refused, too many failed attempts"
        );
        return login_page(
            state,
            login_csrf,
            Some("Too many failed logins: wait a few minutes and try again."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let operators = state.settings.console.operators.clone();
    let checked_name = name.clone();
    // Each check takes 19 MiB and a core for a while: a few at a time, whoever asks.
    let Ok(_permit) = state.verifications.acquire().await else {
        return login_page(
            state,
            None,
            Some("The console is stopping."),
            StatusCode::SERVICE_UNAVAILABLE,
        );
    };
    let verified = tokio::task::spawn_blocking(move || {
        auth::verify(&operators, &checked_name, &password).cloned()
    })
    .await
    .ok()
    .flatten();
    let Some(operator) = verified else {
        warn!(name, client, "console: failed login");
        return login_page(
            state,
            login_csrf,
            Some("Wrong name or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    state.limiter.succeeded(&name, &client, now);
    let id = state.sessions.open(&operator, now);
    info!(operator = %operator.name, user_id = operator.user_id, client, "console: login");
    let mut response = redirect("/cashes");
    set_cookie(
        &mut response,
        state,
        SESSION_COOKIE,
        &id,
        "/",
        state.settings.console.session_idle_secs,
    );
    set_cookie(&mut response, state, LOGIN_COOKIE, "", "/login", 0);
    response
}

/// The operator's name for an id, for "approved by".
fn operator_name(state: &State, id: i64) -> String {
    state
        .settings
        .console
        .operators
        .iter()
        .find(|o| o.user_id == id)
        .map_or_else(
            || format!("operator {id}"),
            |o| format!("{} ({id})", o.name),
        )
}

async fn cashes(state: &State, viewer: &Viewer<'_>) -> Reply {
    let read = async {
        let mut client = state.db.get().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let pending =
            crate::db::console::pending_cashes(&tx, crate::db::console::MAX_PENDING).await?;
        tx.commit().await?;
        anyhow::Ok(pending)
    };
    match read.await {
        Ok(pending) => html(
            StatusCode::OK,
            pages::cashes(
                viewer,
                &pending,
                state.settings.wallet.cash_review_threshold,
                &|id| operator_name(state, id),
            ),
        ),
        Err(e) => unavailable(viewer, e),
    }
}

async fn user(state: &State, viewer: &Viewer<'_>, id: &str) -> Reply {
    let Some(user) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error(Some(viewer), "Wallets", "A user id is a positive integer."),
        );
    };
    let read = async {
        let mut client = state.db.get().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let wallet = crate::db::console::wallet(&tx, user).await?;
        tx.commit().await?;
        anyhow::Ok(wallet)
    };
    match read.await {
        Ok(wallet) => html(StatusCode::OK, pages::wallet(viewer, &wallet)),
        Err(e) => unavailable(viewer, e),
    }
}

async fn health(state: &State, viewer: &Viewer<'_>) -> Reply {
    let read = async {
        let mut client = state.db.get().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let health = crate::db::console::health(&tx).await?;
        tx.commit().await?;
        anyhow::Ok(health)
    };
    match read.await {
        Ok((checks, accounts)) => html(StatusCode::OK, pages::health(viewer, &checks, &accounts)),
        Err(e) => unavailable(viewer, e),
    }
}

/// The command id a form sends: its nonce, so that the same form sent twice is one command.
fn command_id(form: &HashMap<String, String>) -> Option<String> {
    form.get("nonce")
        .filter(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|n| format!("console.{n}"))
}

/// Publishes an operator's command and waits for its result (as `pluspay send` does).
pub(crate) async fn send_as(
    state: &State,
    session: &Session,
    kind: &str,
    id: String,
    data: Value,
) -> anyhow::Result<Value> {
    let request = crate::send::SendRequest {
        kind: kind.into(),
        user_id: session.user_id,
        data: Some(data.to_string()),
        id: Some(id),
        timeout: COMMAND_TIMEOUT,
    };
    let body = crate::send::send(&state.settings, &request).await?;
    Ok(serde_json::from_str(&body)?)
}

async fn decide(
    state: &State,
    session: &Session,
    viewer: &Viewer<'_>,
    cash: &str,
    form: &HashMap<String, String>,
) -> Reply {
    let Some(cash) = cash.parse::<i64>().ok().filter(|id| *id > 0) else {
        return not_found(viewer);
    };
    let kind = match form.get("decision").map(String::as_str) {
        Some("approve") => "cash.approve",
        Some("reject") => "cash.reject",
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error(Some(viewer), "Refused", "Approve or reject?"),
            )
        }
    };
    let Some(id) = command_id(form) else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error(
                Some(viewer),
                "Refused",
                "The form is not one this console made.",
            ),
        );
    };
    let remark = form.get("remark").map(|r| r.trim()).unwrap_or_default();
    let mut data = json!({ "cash": cash });
    // No remark: the engine answers `remark_required`, in the wallet API's words.
    if !remark.is_empty() {
        data["remark"] = remark.into();
    }
    match send_as(state, session, kind, id.clone(), data).await {
        Ok(result) => {
            info!(
                operator = %session.operator,
                user_id = session.user_id,
                command = %id,
                cash,
                decision = kind,
                status = result["status"].as_str().unwrap_or(""),
                code = result["code"].as_str().unwrap_or(""),
                "console: cash decision"
            );
            html(
                StatusCode::OK,
                pages::result(viewer, "Decision", &result, "/cashes"),
            )
        }
        Err(e) => {
            warn!(operator = %session.operator, command = %id, cash, decision = kind, error = %e,
                  "console: no result for a cash decision");
            html(
                StatusCode::GATEWAY_TIMEOUT,
                pages::error(
                    Some(viewer),
                    "No result yet",
                    &format!(
                        "The decision was sent as command {id} but no result came: {e}. Sending the same form again is safe."
                    ),
                ),
            )
        }
    }
}
