//! The console's HTML, rendered on the server: no script, one inline style sheet. Everything
//! that comes from the database or a message is escaped with [`esc`].

use std::fmt::Write as _;

use serde_json::Value;

use crate::db::console::{LastCheck, PendingCash, SystemAccount, WalletView};
use crate::domain::cash::mask_account;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{display:flex;gap:1.5em;align-items:center;background:#1f3a5f;color:#fff;padding:.6em 1em}
header a{color:#fff}header form{margin-left:auto}main{padding:1em}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#eef}.ok{color:#176617}.bad{color:#a01010;font-weight:bold}
.muted{color:#666;font-size:12px}textarea,input[type=text],input[type=password]{width:14em}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;max-width:60em}
#result{border:2px solid #888;padding:.7em;margin:.5em 0}
#result[data-status=succeeded]{border-color:#176617}#result[data-status=rejected]{border-color:#a01010}";

/// HTML-escapes text for element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Fen as yuan: `¥12.34`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}¥{}.{:02}", abs / 100, abs % 100)
}

pub fn age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Who is logged in, for the page's header and its forms.
pub struct Viewer<'a> {
    pub operator: &'a str,
    pub csrf: &'a str,
}

impl Viewer<'_> {
    /// The hidden fields every form of the session carries: its CSRF token, and a fresh nonce
    /// that names the command the form sends, so that sending the same form twice (a reload)
    /// is the same command and applies once.
    pub fn form_fields(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}"><input type="hidden" name="nonce" value="{}">"#,
            esc(self.csrf),
            super::auth::random_token()
        )
    }
}

pub fn page(title: &str, viewer: Option<&Viewer>, body: &str) -> String {
    let header = match viewer {
        Some(viewer) => format!(
            r#"<header><strong>pluspay console</strong><nav>
<a href="/cashes">Cash requests</a> · <a href="/users">Wallets</a> · <a href="/health">Ledger health</a> · <a href="/dead">Dead letters</a></nav>
<form method="post" action="/logout"><span id="operator">{}</span> {}<button type="submit">Log out</button></form></header>"#,
            esc(viewer.operator),
            viewer.form_fields()
        ),
        None => "<header><strong>pluspay console</strong></header>".into(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pluspay · {}</title><style>{STYLE}</style></head><body>{header}<main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

pub fn login(csrf: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p id="login-error" class="bad">{}</p>"#, esc(e))
    });
    page(
        "Log in",
        None,
        &format!(
            r#"{error}<form method="post" action="/login"><input type="hidden" name="csrf" value="{}">
<p><label>Name <input type="text" name="name" id="name" autocomplete="username" required></label></p>
<p><label>Password <input type="password" name="password" id="password" autocomplete="current-password" required></label></p>
<p><button type="submit" id="login">Log in</button></p></form>"#,
            esc(csrf)
        ),
    )
}

fn orders_table(orders: &Value) -> String {
    let Some(orders) = orders.as_array().filter(|o| !o.is_empty()) else {
        return "<p class=\"muted\">No orders.</p>".into();
    };
    let mut out = String::from(
        "<table><tr><th>Order</th><th>Title</th><th>Type</th><th>Amount</th><th>State</th><th>Created</th></tr>",
    );
    for order in orders {
        let state = match order["state"].as_i64() {
            Some(0) => "waiting",
            Some(1) => "succeeded",
            Some(-1) => "failed",
            _ => "?",
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td><td>{}</td></tr>",
            esc(&order["id"].to_string()),
            esc(order["title"].as_str().unwrap_or("")),
            esc(order["target_type"].as_str().unwrap_or("")),
            order_amount(order),
            esc(order["created_at"].as_str().unwrap_or("")),
        );
    }
    out.push_str("</table>");
    out
}

/// An order's amount in yuan, negative for an expense (`type` -1).
fn order_amount(order: &Value) -> String {
    let sign = if order["type"].as_i64() == Some(-1) {
        -1
    } else {
        1
    };
    yuan(sign * order["amount"].as_i64().unwrap_or(0))
}

/// A cash record's `status` in words.
fn cash_status(cash: &Value) -> &'static str {
    use crate::domain::cash::CashStatus;
    match cash["status"]
        .as_i64()
        .and_then(|code| i16::try_from(code).ok())
        .and_then(CashStatus::from_code)
    {
        Some(CashStatus::Waiting) => "waiting",
        Some(CashStatus::Approved) => "approved",
        Some(CashStatus::Rejected) => "rejected",
        None => "?",
    }
}

fn compact_orders(orders: &Value) -> String {
    let Some(orders) = orders.as_array().filter(|o| !o.is_empty()) else {
        return "<span class=\"muted\">none</span>".into();
    };
    orders
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                esc(o["title"].as_str().unwrap_or("")),
                order_amount(o)
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// The waiting cash requests with their decision forms. `names` gives operators' names by id.
pub fn cashes(
    viewer: &Viewer,
    pending: &[PendingCash],
    threshold: Option<i64>,
    names: &dyn Fn(i64) -> String,
) -> String {
    let rule = match threshold {
        Some(t) => format!(
            "<p class=\"muted\">Requests above {} need the approvals of two different operators.</p>",
            yuan(t)
        ),
        None => String::new(),
    };
    if pending.is_empty() {
        return page(
            "Cash requests",
            Some(viewer),
            &format!("{rule}<p id=\"no-cashes\">No cash request is waiting.</p>"),
        );
    }
    let mut rows = String::new();
    for cash in pending {
        let approvals = if cash.approved_by.is_empty() {
            String::new()
        } else {
            let who: Vec<String> = cash.approved_by.iter().map(|id| esc(&names(*id))).collect();
            format!(
                "<div class=\"approvals\">approved by {} — waiting for a second operator</div>",
                who.join(", ")
            )
        };
        let payout = if cash.payout_in_progress {
            "<div class=\"muted\">Ping++ withdrawal under way</div>"
        } else {
            ""
        };
        let _ = write!(
            rows,
            r#"<tr id="cash-{id}"><td>{id}</td><td><a href="/users/{user}">{user}</a></td><td class="amount">{value}</td><td>{kind}</td><td>{account}</td><td>{age}<div class="muted">{created}</div></td><td>{balance}</td><td class="muted">{orders}</td>
<td>{approvals}{payout}<form method="post" action="/cashes/{id}/decide">{fields}<textarea name="remark" id="remark-{id}" rows="2" maxlength="255" placeholder="remark (required)"></textarea><br>
<button type="submit" name="decision" value="approve" id="approve-{id}">Approve</button> <button type="submit" name="decision" value="reject" id="reject-{id}">Reject</button></form></td></tr>"#,
            id = cash.id,
            user = cash.user_id,
            value = yuan(cash.value),
            kind = esc(&cash.kind),
            account = esc(&mask_account(&cash.account)),
            age = age(cash.age_secs),
            created = esc(&cash.created_at),
            balance = yuan(cash.balance),
            orders = compact_orders(&cash.last_orders),
            fields = viewer.form_fields(),
        );
    }
    page(
        "Cash requests",
        Some(viewer),
        &format!(
            "{rule}<table id=\"cashes\"><tr><th>Cash</th><th>User</th><th>Amount</th><th>Method</th><th>Account</th><th>Waiting</th><th>Balance</th><th>Last orders</th><th>Decision</th></tr>{rows}</table>"
        ),
    )
}

/// A command's result, as the worker answered it.
pub fn result(viewer: &Viewer, what: &str, result: &Value, back: &str) -> String {
    let status = result["status"].as_str().unwrap_or("unknown");
    let messages: Vec<String> = result["message"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m.as_str()).map(esc).collect())
        .unwrap_or_default();
    let code = result["code"].as_str().map_or(String::new(), |c| {
        format!(" <code id=\"code\">{}</code>", esc(c))
    });
    let mut details = String::new();
    if let Some(cash) = result["data"].get("cash") {
        let state = cash_status(cash);
        let _ = write!(
            details,
            "<p>Cash request {} of {}: <strong id=\"cash-status\">{state}</strong></p>",
            esc(&cash["id"].to_string()),
            yuan(cash["value"].as_i64().unwrap_or(0))
        );
    }
    if let Some(approvals) = result["data"]["approvals"].as_i64() {
        let _ = write!(
            details,
            "<p>Approvals: <span id=\"approvals\">{approvals}</span></p>"
        );
    }
    page(
        what,
        Some(viewer),
        &format!(
            r#"<div id="result" data-status="{}"><strong id="status">{}</strong>{code}<p id="message">{}</p>{details}</div><p><a href="{}">Back</a></p>"#,
            esc(status),
            esc(status),
            messages.join("<br>"),
            esc(back)
        ),
    )
}

pub fn error(viewer: Option<&Viewer>, title: &str, text: &str) -> String {
    page(
        title,
        viewer,
        &format!(r#"<p id="error" class="bad">{}</p>"#, esc(text)),
    )
}

pub fn find_user(viewer: &Viewer) -> String {
    page(
        "Wallets",
        Some(viewer),
        r#"<form method="get" action="/users"><label>User id <input type="text" name="id" id="user-id" inputmode="numeric"></label> <button type="submit" id="find-user">Show</button></form>"#,
    )
}

pub fn wallet(viewer: &Viewer, wallet: &WalletView) -> String {
    let mut cashes = String::from(
        "<table><tr><th>Cash</th><th>Amount</th><th>Method</th><th>Account</th><th>Status</th><th>Remark</th><th>Created</th></tr>",
    );
    for cash in wallet.cashes.as_array().into_iter().flatten() {
        let status = cash_status(cash);
        let _ = write!(
            cashes,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td></tr>",
            esc(&cash["id"].to_string()),
            yuan(cash["value"].as_i64().unwrap_or(0)),
            esc(cash["type"].as_str().unwrap_or("")),
            esc(&mask_account(cash["account"].as_str().unwrap_or(""))),
            esc(cash["remark"].as_str().unwrap_or("")),
            esc(cash["created_at"].as_str().unwrap_or("")),
        );
    }
    cashes.push_str("</table>");
    let mut charges = String::from(
        "<table><tr><th>Charge</th><th>Channel</th><th>Action</th><th>Amount</th><th>Subject</th><th>Status</th><th>Created</th></tr>",
    );
    for charge in wallet.charges.as_array().into_iter().flatten() {
        let _ = write!(
            charges,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&charge["id"].to_string()),
            esc(charge["channel"].as_str().unwrap_or("")),
            if charge["action"].as_i64() == Some(1) { "income" } else { "expense" },
            yuan(charge["amount"].as_i64().unwrap_or(0)),
            esc(charge["subject"].as_str().unwrap_or("")),
            esc(&charge["status"].to_string()),
            esc(charge["created_at"].as_str().unwrap_or("")),
        );
    }
    charges.push_str("</table>");
    page(
        &format!("Wallet of user {}", wallet.user_id),
        Some(viewer),
        &format!(
            r#"<table id="figures"><tr><th>Balance</th><th>Income</th><th>Expenses</th><th>Points</th></tr>
<tr><td id="balance">{}</td><td>{}</td><td>{}</td><td id="points">{}</td></tr></table>
<h2>Orders</h2>{}<h2>Cash records</h2>{cashes}<h2>Charges</h2>{charges}"#,
            yuan(wallet.balance),
            yuan(wallet.total_income),
            yuan(wallet.total_expenses),
            wallet.points,
            orders_table(&wallet.orders),
        ),
    )
}

pub fn health(viewer: &Viewer, checks: &[LastCheck], accounts: &[SystemAccount]) -> String {
    let mut body = String::new();
    if checks.is_empty() {
        body.push_str("<p id=\"no-check\" class=\"bad\">No ledger check has run yet.</p>");
    }
    for check in checks {
        let verdict = if check.ok {
            "<span class=\"ok\">ok</span>"
        } else {
            "<span class=\"bad\">FAILED</span>"
        };
        let _ = write!(
            body,
            "<h2>Last {} check: <span id=\"check-{}\">{verdict}</span></h2><p>{} UTC ({} ago), {:.0} ms</p>",
            esc(&check.scope),
            esc(&check.scope),
            esc(&check.checked_at),
            age(check.age_secs),
            check.millis
        );
        let failing: Vec<&Value> = check.report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["ok"] == false)
            .collect();
        if !failing.is_empty() {
            body.push_str("<table class=\"violations\"><tr><th>Check</th><th>Violations</th><th>Examples</th></tr>");
            for c in failing {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                    esc(c["name"].as_str().unwrap_or("")),
                    esc(&c["violations"].to_string()),
                    esc(&serde_json::to_string_pretty(&c["examples"]).unwrap_or_default())
                );
            }
            body.push_str("</table>");
        }
    }
    body.push_str("<h2>System accounts</h2><table id=\"system-accounts\"><tr><th>Account</th><th>Balance</th></tr>");
    for account in accounts {
        let balance = if account.unit == "fen" {
            yuan(account.balance)
        } else {
            format!("{} points", account.balance)
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{balance}</td></tr>",
            esc(&account.name)
        );
    }
    body.push_str("</table>");
    page("Ledger health", Some(viewer), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_cannot_become_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        let page = login("tok\"en", Some("<b>no</b>"));
        assert!(page.contains("value=\"tok&quot;en\""));
        assert!(!page.contains("<b>no</b>"));
    }

    #[test]
    fn money_and_ages_read_naturally() {
        assert_eq!(yuan(0), "¥0.00");
        assert_eq!(yuan(12_345), "¥123.45");
        assert_eq!(yuan(-5), "-¥0.05");
        assert_eq!(yuan(i64::MIN), "-¥92233720368547758.08");
        assert_eq!(age(59), "59 s");
        assert_eq!(age(3_700), "1 h 1 min");
        assert_eq!(age(90_000), "1 d 1 h");
    }
}
