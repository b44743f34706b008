//! The dead letters page: what could not be processed, with replay and discard-with-note
//! (`crate::dead_letters` does the work, as for `pluspay dead`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use hyper::StatusCode;
use tracing::{info, warn};

use super::auth::Session;
use super::pages::{self, esc, Viewer};
use super::{html, Reply, State, COMMAND_TIMEOUT};

/// Dead letters shown at most.
const LISTED: usize = 100;

/// Ids this page addresses: the worker's UUIDs and the 16 hex digits of older messages. An id
/// from a message's own headers could be anything; such a message is left to `pluspay dead`.
fn addressable(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

const MAX_NOTE_CHARS: usize = crate::dead_letters::NOTE_MAX;

pub(super) async fn list(state: &State, viewer: &Viewer<'_>) -> Reply {
    let letters = match crate::dead_letters::list(&state.settings, LISTED).await {
        Ok(letters) => letters,
        Err(e) => return super::unavailable(viewer, e),
    };
    if letters.is_empty() {
        return html(
            StatusCode::OK,
            pages::page(
                "Dead letters",
                Some(viewer),
                "<p id=\"no-dead-letters\">No dead letter.</p>",
            ),
        );
    }
    let now = SystemTime::now();
    let mut rows = String::new();
    for letter in &letters {
        let age = letter
            .dead_since
            .and_then(|t| now.duration_since(t).ok())
            .map_or("?".into(), |d| pages::age(d.as_secs() as i64));
        let id = esc(&letter.id);
        let fields = viewer.form_fields();
        // `replay` refuses these (see `DeadLetter::is_operator_command`): no button.
        let replay = if letter.is_operator_command() {
            "<p class=\"muted\">An operator's command: decide the request on the Cash requests page.</p>".to_owned()
        } else {
            format!(
                r#"<form method="post" action="/dead/{id}/replay">{fields}<button type="submit" class="replay">Replay</button></form>"#
            )
        };
        let actions = if addressable(&letter.id) {
            format!(
                r#"{replay}<form method="post" action="/dead/{id}/discard">{fields}<input type="text" name="note" maxlength="{MAX_NOTE_CHARS}" placeholder="why (required)" required> <button type="submit" class="discard">Discard</button></form>"#
            )
        } else {
            "<p class=\"muted\">Its id cannot be used here: use <code>pluspay dead</code>.</p>"
                .to_owned()
        };
        let _ = write!(
            rows,
            r#"<tr class="dead-letter" data-id="{id}"><td><code>{id}</code></td><td>{kind}</td><td>{reason}</td><td>{age}</td><td><pre>{body}</pre></td><td>{actions}</td></tr>"#,
            kind = esc(letter.kind.as_deref().unwrap_or("?")),
            reason = esc(letter.reason.as_deref().unwrap_or("")),
            body = esc(&letter.body_masked),
        );
    }
    html(
        StatusCode::OK,
        pages::page(
            "Dead letters",
            Some(viewer),
            &format!(
                "<p class=\"muted\">Bodies are shown with personal data masked. Replay publishes the message as a command again and shows its result.</p><table id=\"dead-letters\"><tr><th>Id</th><th>Type</th><th>Reason</th><th>Dead for</th><th>Body</th><th></th></tr>{rows}</table>"
            ),
        ),
    )
}

pub(super) async fn replay(
    state: &State,
    session: &Session,
    viewer: &Viewer<'_>,
    id: &str,
) -> Reply {
    if !addressable(id) {
        return not_addressable(viewer);
    }
    match crate::dead_letters::replay(&state.settings, id, &session.operator, COMMAND_TIMEOUT).await
    {
        Ok(Some(result)) => {
            let result: serde_json::Value = serde_json::from_str(&result).unwrap_or_default();
            info!(operator = %session.operator, user_id = session.user_id, dead_letter = id,
                  status = result["status"].as_str().unwrap_or(""), "console: dead letter replayed");
            html(
                StatusCode::OK,
                pages::result(viewer, "Replayed", &result, "/dead"),
            )
        }
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            pages::error(
                Some(viewer),
                "Replay",
                "No such dead letter (handled by someone else already?).",
            ),
        ),
        Err(e) if e.is::<crate::dead_letters::OperatorCommandNotReplayed>() => {
            warn!(operator = %session.operator, dead_letter = id,
                  "console: replay of an operator's command refused");
            html(
                StatusCode::FORBIDDEN,
                pages::error(
                    Some(viewer),
                    "Replay",
                    "An operator's command is not replayed from the console: decide the request on the Cash requests page.",
                ),
            )
        }
        Err(e) => {
            warn!(operator = %session.operator, dead_letter = id, error = %e, "console: replay failed");
            html(
                StatusCode::BAD_GATEWAY,
                pages::error(Some(viewer), "Replay", &format!("{e:#}")),
            )
        }
    }
}

pub(super) async fn discard(
    state: &State,
    session: &Session,
    viewer: &Viewer<'_>,
    id: &str,
    form: &HashMap<String, String>,
) -> Reply {
    if !addressable(id) {
        return not_addressable(viewer);
    }
    let note = form.get("note").map(|n| n.trim()).unwrap_or_default();
    if note.is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error(
                Some(viewer),
                "Discard",
                &format!("A note of 1 to {MAX_NOTE_CHARS} characters says why it is discarded."),
            ),
        );
    }
    match crate::dead_letters::discard(&state.settings, id, &session.operator, note).await {
        Ok(true) => {
            info!(operator = %session.operator, user_id = session.user_id, dead_letter = id, note,
                  "console: dead letter discarded");
            html(
                StatusCode::OK,
                pages::page(
                    "Discarded",
                    Some(viewer),
                    &format!(
                        r#"<p id="discarded">Dead letter <code>{}</code> discarded with your note.</p><p><a href="/dead">Back</a></p>"#,
                        esc(id)
                    ),
                ),
            )
        }
        Ok(false) => html(
            StatusCode::NOT_FOUND,
            pages::error(Some(viewer), "Discard", "No such dead letter."),
        ),
        Err(e) => {
            warn!(operator = %session.operator, dead_letter = id, error = %e, "console: discard failed");
            html(
                StatusCode::BAD_GATEWAY,
                pages::error(Some(viewer), "Discard", &format!("{e:#}")),
            )
        }
    }
}

fn not_addressable(viewer: &Viewer<'_>) -> Reply {
    html(
        StatusCode::BAD_REQUEST,
        pages::error(Some(viewer), "Dead letters", "Not an id this page uses."),
    )
}
