//! The operator console in a real headless Chromium (Debian's, through its ChromeDriver),
//! against the real worker, broker and database: logging in, a wrong password, a form without
//! its CSRF token, approving and rejecting cash requests, two-person control, a dead letter
//! replayed, and the wallet and health pages. Screenshots of each page go to
//! `target/tmp/console-screenshots/` for a person to look at.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use pluspay::config::ConsoleOperator;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::support::{cash_status, BrokerClient, TestEnv, WorkerHandle, WAIT};

const THRESHOLD: i64 = 10_000;

fn screenshots_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// A ChromeDriver on a free port and a headless Chromium session through it.
struct Browser {
    client: Client,
    _driver: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while http.get(format!("{url}/status")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("pluspay-chromium-{}", uuid::Uuid::new_v4()));
        let mut capabilities = serde_json::Map::new();
        // The flags keep a sandboxed, offline machine's Chromium from reaching out at start.
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
            profile,
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} to click: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn login(&self, base: &str, name: &str, password: &str) {
        self.client.goto(&format!("{base}/login")).await.unwrap();
        self.fill("#name", name).await;
        self.fill("#password", password).await;
        self.click("#login").await;
    }

    async fn logout(&self) {
        self.click("header form button").await;
        self.text("#login").await;
    }

    async fn stop(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

struct Console {
    base: String,
    shutdown: CancellationToken,
    env: TestEnv,
    client: BrokerClient,
    _worker: WorkerHandle,
}

fn operator(name: &str, user_id: i64, password: &str) -> ConsoleOperator {
    ConsoleOperator {
        name: name.into(),
        user_id,
        password_hash: pluspay::console::auth::hash_password(password).unwrap(),
    }
}

async fn start_console() -> Console {
    let mut env = TestEnv::new().await;
    env.settings.wallet.cash_review_threshold = Some(THRESHOLD);
    env.settings.metrics.ledger_check_secs = 1;
    env.settings.console.operators = vec![
        operator("li", 91, "li-password"),
        operator("wang", 92, "wang-password"),
    ];
    let worker = env.start_worker();
    let client = env.client().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // `localhost`: browsers keep Secure cookies for it over plain HTTP.
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let shutdown = CancellationToken::new();
    tokio::spawn(pluspay::console::serve(
        listener,
        env.settings.clone(),
        shutdown.clone(),
    ));
    Console {
        base,
        shutdown,
        env,
        client,
        _worker: worker,
    }
}

async fn request_cash(client: &mut BrokerClient, id: &str, user: i64, value: i64) -> i64 {
    let result = client
        .call(json!({"id": id, "type": "cash", "user_id": user,
                     "data": {"value": value, "type": "alipay", "account": "13812345678"}}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    result["data"]["cash"]["id"].as_i64().unwrap()
}

/// Decides cash request `cash` on the cash requests page.
async fn decide(browser: &Browser, base: &str, cash: i64, decision: &str, remark: &str) {
    browser
        .client
        .goto(&format!("{base}/cashes"))
        .await
        .unwrap();
    browser.fill(&format!("#remark-{cash}"), remark).await;
    browser.click(&format!("#{decision}-{cash}")).await;
    browser.text("#result").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_decide_cash_requests_in_a_real_browser() {
    let Console {
        base,
        shutdown,
        mut env,
        mut client,
        _worker,
    } = start_console().await;
    env.fund(5, 50_000).await;
    env.fund(6, 10_000).await;
    let small = request_cash(&mut client, "c-small", 5, 3_000).await;
    let large = request_cash(&mut client, "c-large", 5, 20_000).await;
    let refused = request_cash(&mut client, "c-refused", 6, 4_000).await;
    let browser = Browser::start().await;

    // Not logged in: the login page. A wrong password is refused.
    browser
        .client
        .goto(&format!("{base}/cashes"))
        .await
        .unwrap();
    assert!(browser
        .client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/login"));
    browser.screenshot("login").await;
    browser.login(&base, "li", "not-the-password").await;
    assert_eq!(
        browser.text("#login-error").await,
        "Wrong name or password."
    );
    browser.screenshot("login-refused").await;

    browser.login(&base, "li", "li-password").await;
    assert_eq!(browser.text("#operator").await, "li");
    let row = browser.text(&format!("#cash-{large}")).await;
    assert!(
        row.contains("¥200.00") && row.contains("138****5678"),
        "{row}"
    );
    assert!(!row.contains("13812345678"), "the account is masked: {row}");
    browser.screenshot("cashes").await;

    // The session cookie is HttpOnly, SameSite=Strict and Secure.
    let session = browser
        .client
        .get_named_cookie("pluspay_session")
        .await
        .unwrap();
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(
        session.same_site().map(|s| s.to_string()),
        Some("Strict".to_owned())
    );

    // A form without its CSRF token, or with another, changes nothing.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = format!("pluspay_session={}", session.value());
    for csrf in [None, Some("0".repeat(64))] {
        let mut form = vec![
            ("decision", "approve".to_owned()),
            ("remark", "forged".to_owned()),
            ("nonce", "a".repeat(64)),
        ];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf));
        }
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let response = http
            .post(format!("{base}/cashes/{small}/decide"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
    }
    // The same in the browser: the page's form with its token taken out.
    browser
        .client
        .goto(&format!("{base}/cashes"))
        .await
        .unwrap();
    browser
        .client
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())",
            vec![],
        )
        .await
        .unwrap();
    browser.fill(&format!("#remark-{small}"), "no token").await;
    browser.click(&format!("#approve-{small}")).await;
    assert!(browser.text("#error").await.contains("CSRF token"));
    browser.screenshot("csrf-refused").await;
    assert_eq!(cash_status(&env, small).await, 0);

    // Approve one: it is paid out.
    decide(&browser, &base, small, "approve", "已核实").await;
    assert_eq!(browser.text("#status").await, "succeeded");
    assert_eq!(browser.text("#cash-status").await, "approved");
    browser.screenshot("approved").await;
    assert_eq!(cash_status(&env, small).await, 1);
    assert_eq!(env.system_balance("paid_out").await, 3_000);

    // Reject one: the money is back.
    decide(&browser, &base, refused, "reject", "账户信息不符").await;
    assert_eq!(browser.text("#cash-status").await, "rejected");
    assert_eq!(cash_status(&env, refused).await, 2);
    assert_eq!(env.balance(6).await, 10_000);

    // Above the threshold: li's approval is the first of two; li again is refused.
    decide(&browser, &base, large, "approve", "第一位审批").await;
    assert_eq!(browser.text("#status").await, "succeeded");
    assert_eq!(browser.text("#approvals").await, "1");
    assert_eq!(browser.text("#cash-status").await, "waiting");
    browser.screenshot("first-approval").await;
    browser
        .client
        .goto(&format!("{base}/cashes"))
        .await
        .unwrap();
    let row = browser.text(&format!("#cash-{large}")).await;
    assert!(row.contains("approved by li (91)"), "{row}");
    assert!(browser
        .client
        .find(Locator::Css(&format!("#cash-{small}")))
        .await
        .is_err());
    decide(&browser, &base, large, "approve", "再次审批").await;
    assert_eq!(browser.text("#status").await, "rejected");
    assert_eq!(browser.text("#code").await, "already_approved");
    assert_eq!(cash_status(&env, large).await, 0);

    // Another operator settles it.
    browser.logout().await;
    browser.login(&base, "wang", "wang-password").await;
    decide(&browser, &base, large, "approve", "第二位审批").await;
    assert_eq!(browser.text("#approvals").await, "2");
    assert_eq!(browser.text("#cash-status").await, "approved");
    assert_eq!(cash_status(&env, large).await, 1);
    assert_eq!(env.system_balance("paid_out").await, 23_000);
    browser
        .client
        .goto(&format!("{base}/cashes"))
        .await
        .unwrap();
    assert_eq!(
        browser.text("#no-cashes").await,
        "No cash request is waiting."
    );

    // The user's wallet and the ledger's health.
    browser.client.goto(&format!("{base}/users")).await.unwrap();
    browser.fill("#user-id", "5").await;
    browser.click("#find-user").await;
    assert_eq!(browser.text("#balance").await, "¥270.00");
    browser.screenshot("wallet").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        browser
            .client
            .goto(&format!("{base}/health"))
            .await
            .unwrap();
        if browser
            .client
            .find(Locator::Css("#check-incremental"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ledger check shown"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(browser.text("#check-incremental").await, "ok");
    let accounts = browser.text("#system-accounts").await;
    assert!(
        accounts.contains("paid_out") && accounts.contains("¥230.00"),
        "{accounts}"
    );
    browser.screenshot("health").await;

    // A broken ledger shows as a failed check with its violations, until it is repaired.
    let break_balance =
        "UPDATE accounts SET balance = balance + 1 WHERE kind = 'wallet' AND user_id = 5";
    env.db.batch_execute(break_balance).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        browser
            .client
            .goto(&format!("{base}/health"))
            .await
            .unwrap();
        if browser.text("#check-incremental").await == "FAILED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken ledger is not shown"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let violations = browser.text("table.violations").await;
    assert!(
        violations.contains("balance_equals_entries"),
        "{violations}"
    );
    browser.screenshot("health-failed").await;
    env.db
        .batch_execute(&break_balance.replace("+ 1", "- 1"))
        .await
        .unwrap();

    browser.stop().await;
    shutdown.cancel();
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_replay_and_discard_dead_letters_in_a_real_browser() {
    let Console {
        base,
        shutdown,
        mut env,
        client,
        _worker,
    } = start_console().await;
    env.fund(5, 1_000).await;
    // A transfer that failed every delivery, and a message that was never a command.
    let transfer = crate::support::transfer("t-dead", 5, 7, 400);
    crate::dead_letters::dead_letter_directly(&env, &client, &transfer, "failed 20 times: boom")
        .await;
    client.raw(b"not a command 13812345678", None).await;
    // An operator's command among the dead letters is never replayed from the console.
    let approval = json!({"id": "a-dead", "type": "cash.approve", "user_id": 92,
                          "data": {"cash": 1, "remark": "planted"}});
    crate::dead_letters::dead_letter_directly(&env, &client, &approval, "failed 20 times: boom")
        .await;
    let browser = Browser::start().await;
    browser.login(&base, "li", "li-password").await;
    browser.text("#operator").await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let rows = loop {
        browser.client.goto(&format!("{base}/dead")).await.unwrap();
        let rows = browser
            .client
            .find_all(Locator::Css("tr.dead-letter"))
            .await
            .unwrap();
        if rows.len() == 3 {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} dead letters",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut transfer_row = None;
    let mut garbage_row = None;
    let mut approval_row = None;
    for row in rows {
        let text = row.text().await.unwrap();
        assert!(
            !text.contains("13812345678"),
            "personal data is masked: {text}"
        );
        let id = row.attr("data-id").await.unwrap().unwrap();
        if text.contains("cash.approve") {
            assert!(text.contains("An operator's command"), "{text}");
            assert!(row.find(Locator::Css("button.replay")).await.is_err());
            approval_row = Some(id);
        } else if text.contains("failed 20 times") {
            transfer_row = Some(id);
        } else {
            garbage_row = Some(id);
        }
    }
    let (transfer_row, garbage_row) = (transfer_row.unwrap(), garbage_row.unwrap());
    // Posted by hand, the replay of the operator's command is refused too.
    let csrf = browser
        .client
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let session = browser
        .client
        .get_named_cookie("pluspay_session")
        .await
        .unwrap();
    let nonce = "b".repeat(64);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("csrf", csrf.as_str()), ("nonce", nonce.as_str())])
        .finish();
    let refused = reqwest::Client::new()
        .post(format!("{base}/dead/{}/replay", approval_row.unwrap()))
        .header("cookie", format!("pluspay_session={}", session.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    browser.screenshot("dead-letters").await;

    // Replayed: applied once, its result shown.
    browser
        .click(&format!("tr[data-id=\"{transfer_row}\"] button.replay"))
        .await;
    assert_eq!(browser.text("#status").await, "succeeded");
    browser.screenshot("dead-letter-replayed").await;
    assert_eq!(env.balance(5).await, 600);
    assert_eq!(env.balance(7).await, 400);

    // Discarded with a note, which is kept.
    browser.client.goto(&format!("{base}/dead")).await.unwrap();
    browser
        .fill(
            &format!("tr[data-id=\"{garbage_row}\"] input[name=note]"),
            "测试垃圾消息",
        )
        .await;
    browser
        .click(&format!("tr[data-id=\"{garbage_row}\"] button.discard"))
        .await;
    browser.text("#discarded").await;
    let (operator, note): (String, String) = {
        let row = env
            .db
            .query_one("SELECT operator, note FROM dead_letter_discards", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((operator.as_str(), note.as_str()), ("li", "测试垃圾消息"));
    browser.client.goto(&format!("{base}/dead")).await.unwrap();
    let left = browser.text("#dead-letters").await;
    assert!(
        left.contains("cash.approve") && !left.contains("transfer"),
        "{left}"
    );

    browser.stop().await;
    shutdown.cancel();
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}
