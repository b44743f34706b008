//! Two-person control of cash requests (`wallet.cash_review_threshold`), through the real
//! broker and database: a request above the threshold waits after the first approval and is
//! settled by a second operator's; the same operator twice and an operator approving their own
//! request are refused and change nothing; a rejection needs one operator. With Ping++
//! withdrawals, no withdrawal is made before the second approval.

use crate::support::fake_pingpp::APP_ID;
use crate::support::{cash_status, BrokerClient, TestEnv};
use pluspay::config::{PayoutMode, Settings};
use serde_json::{json, Value};

const THRESHOLD: i64 = 10_000;

fn with_threshold(s: &mut Settings) {
    s.wallet.cash_review_threshold = Some(THRESHOLD);
}

async fn request_cash(client: &mut BrokerClient, id: &str, user: i64, value: i64) -> i64 {
    let result = client
        .call(json!({"id": id, "type": "cash", "user_id": user,
                     "data": {"value": value, "type": "alipay", "account": "u@example.com"}}))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");
    result["data"]["cash"]["id"].as_i64().unwrap()
}

fn approve(id: &str, operator: i64, cash: i64) -> Value {
    json!({"id": id, "type": "cash.approve", "user_id": operator,
           "data": {"cash": cash, "remark": "同意"}})
}

async fn approvals(env: &TestEnv, cash: i64) -> Vec<i64> {
    env.db
        .query(
            "SELECT operator FROM cash_approvals WHERE cash_id = $1 ORDER BY operator",
            &[&cash],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_needs_two_different_operators() {
    let mut env = TestEnv::new().await;
    with_threshold(&mut env.settings);
    let _worker = env.start_worker();
    let mut client = env.client().await;
    env.fund(5, 50_000).await;
    let cash = request_cash(&mut client, "c-large", 5, 20_000).await;

    let first = client.call(approve("a-1", 91, cash)).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["data"]["approvals"], 1, "{first}");
    assert_eq!(first["data"]["cash"]["status"], 0, "{first}");
    assert_eq!(
        first["message"][0],
        pluspay::domain::cash::MSG_FIRST_APPROVAL
    );
    assert_eq!(cash_status(&env, cash).await, 0);
    assert_eq!(env.system_balance("pending_payouts").await, 20_000);
    assert_eq!(env.system_balance("paid_out").await, 0);
    // The first approval's answer is kept under its id like any other.
    assert_eq!(client.call(approve("a-1", 91, cash)).await, first);

    let twice = client.call(approve("a-1-again", 91, cash)).await;
    assert_eq!(twice["status"], "rejected", "{twice}");
    assert_eq!(twice["code"], "already_approved", "{twice}");
    let own = client.call(approve("a-own", 5, cash)).await;
    assert_eq!(own["code"], "own_cash_request", "{own}");
    assert_eq!(approvals(&env, cash).await, vec![91]);
    assert_eq!(cash_status(&env, cash).await, 0);

    let second = client.call(approve("a-2", 92, cash)).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["data"]["approvals"], 2, "{second}");
    assert_eq!(second["data"]["cash"]["status"], 1, "{second}");
    assert_eq!(cash_status(&env, cash).await, 1);
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    assert_eq!(env.system_balance("paid_out").await, 20_000);
    assert_eq!(env.balance(5).await, 30_000);
    assert_eq!(approvals(&env, cash).await, vec![91, 92]);
    // A third operator finds it approved: nothing moves again.
    let third = client.call(approve("a-3", 93, cash)).await;
    assert_eq!(third["status"], "succeeded", "{third}");
    assert_eq!(env.system_balance("paid_out").await, 20_000);

    // At the threshold, one operator settles; nobody approves their own, whatever the size.
    let small = request_cash(&mut client, "c-small", 5, THRESHOLD).await;
    let own_small = client.call(approve("s-own", 5, small)).await;
    assert_eq!(own_small["code"], "own_cash_request", "{own_small}");
    let settled = client.call(approve("s-1", 91, small)).await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert!(settled["data"].get("approvals").is_none(), "{settled}");
    assert_eq!(cash_status(&env, small).await, 1);
    assert_eq!(env.system_balance("paid_out").await, 20_000 + THRESHOLD);

    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_rejects_a_large_request_after_a_first_approval() {
    let mut env = TestEnv::new().await;
    with_threshold(&mut env.settings);
    let _worker = env.start_worker();
    let mut client = env.client().await;
    env.fund(6, 30_000).await;
    let cash = request_cash(&mut client, "c", 6, 25_000).await;
    let first = client.call(approve("a-1", 91, cash)).await;
    assert_eq!(first["data"]["approvals"], 1, "{first}");

    let rejected = client
        .call(json!({"id": "r-1", "type": "cash.reject", "user_id": 92,
                     "data": {"cash": cash, "remark": "账户信息不符"}}))
        .await;
    assert_eq!(rejected["status"], "succeeded", "{rejected}");
    assert_eq!(cash_status(&env, cash).await, 2);
    assert_eq!(env.balance(6).await, 30_000);
    let late = client.call(approve("a-2", 93, cash)).await;
    assert_eq!(late["code"], "cash_already_decided", "{late}");
    assert_eq!(env.system_balance("paid_out").await, 0);
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_withdrawals_the_second_approval_makes_the_only_withdrawal() {
    let (mut env, fake, mut client, _worker) = crate::support::with_fake_pingpp_and_worker(|s| {
        s.pingpp.payout = PayoutMode::Withdrawals;
        s.pingpp.withdrawal_return_url = "https://example.com/wallet/cash".into();
        with_threshold(s);
    })
    .await;
    let withdrawals = format!("/v1/apps/{APP_ID}/withdrawals");
    let creates = || {
        fake.request_log()
            .iter()
            .filter(|(m, p)| m == "POST" && *p == withdrawals)
            .count()
    };
    env.fund(7, 40_000).await;
    let cash = request_cash(&mut client, "c", 7, 40_000).await;

    let own = client.call(approve("a-own", 7, cash)).await;
    assert_eq!(own["code"], "own_cash_request", "{own}");
    let first = client.call(approve("a-1", 91, cash)).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["data"]["approvals"], 1, "{first}");
    assert!(first["data"].get("pingpp_withdrawal").is_none(), "{first}");
    let twice = client.call(approve("a-1-again", 91, cash)).await;
    assert_eq!(twice["code"], "already_approved", "{twice}");
    assert_eq!(creates(), 0, "no withdrawal before the second approval");

    let second = client.call(approve("a-2", 92, cash)).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["data"]["approvals"], 2, "{second}");
    assert!(
        second["data"]["pingpp_withdrawal"]["id"].is_string(),
        "{second}"
    );
    assert_eq!(creates(), 1);
    assert_eq!(approvals(&env, cash).await, vec![91, 92]);
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_the_waiting_requests_with_their_approvals() {
    let mut env = TestEnv::new().await;
    with_threshold(&mut env.settings);
    let _worker = env.start_worker();
    let mut client = env.client().await;
    env.fund(8, 50_000).await;
    let decided = client
        .call(json!({"id": "c-0", "type": "cash", "user_id": 8,
                     "data": {"value": 1_000, "type": "alipay", "account": "13812345678"}}))
        .await["data"]["cash"]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        client.call(approve("a-0", 91, decided)).await["status"],
        "succeeded"
    );
    let first = request_cash(&mut client, "c-1", 8, 20_000).await;
    let second = request_cash(&mut client, "c-2", 8, 500).await;
    assert_eq!(
        client.call(approve("a-1", 91, first)).await["data"]["approvals"],
        1
    );

    let output = crate::support::pluspay(&["cashes", "pending"], &env.process_env()).await;
    assert!(output.status.success(), "{output:?}");
    let pending: Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids: Vec<i64> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![first, second],
        "oldest first, decided ones left out"
    );
    assert_eq!(pending[0]["approved_by"], json!([91]));
    assert_eq!(pending[0]["value"], 20_000);
    assert_eq!(pending[0]["account"], "u***@example.com");
    assert_eq!(pending[0]["balance"], 50_000 - 1_000 - 20_000 - 500);
    assert_eq!(pending[1]["approved_by"], json!([]));
    assert_eq!(pending[1]["last_orders"].as_array().unwrap().len(), 3);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("13812345678"));

    let limited =
        crate::support::pluspay(&["cashes", "pending", "--limit", "1"], &env.process_env()).await;
    let limited: Value = serde_json::from_slice(&limited.stdout).unwrap();
    assert_eq!(limited.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_password_makes_a_hash_the_console_accepts_and_run_serves_the_console() {
    use tokio::io::AsyncWriteExt;
    let mut child = crate::support::pluspay_command(&["console", "hash-password"], &[])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret phrase\n")
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(pluspay::console::auth::is_argon2id_hash(&hash), "{hash}");
    let operators = [pluspay::config::ConsoleOperator {
        name: "li".into(),
        user_id: 91,
        password_hash: hash.clone(),
    }];
    assert!(pluspay::console::auth::verify(&operators, "li", "s3cret phrase").is_some());
    assert!(pluspay::console::auth::verify(&operators, "li", "s3cret").is_none());

    // `pluspay run` with console.listen serves the console beside the worker.
    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("pluspay-console-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pluspay.toml");
    std::fs::write(
        &config,
        format!(
            "[console]\nlisten = \"127.0.0.1:{port}\"\noperators = [{{ name = \"li\", user_id = 91, password_hash = \"{hash}\" }}]\n"
        ),
    )
    .unwrap();
    let mut vars = env.process_env();
    vars.push(("PLUSPAY_WEBHOOK_LISTEN", "127.0.0.1:0".into()));
    vars.push((
        "PLUSPAY_PINGPP_PUBLIC_KEY",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pingpp-webhook/pingpp_rsa_public_key.pem"
        )
        .into(),
    ));
    let _run = crate::support::spawn_pluspay(&["--config", config.to_str().unwrap(), "run"], &vars);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    let login = loop {
        if let Ok(response) = http
            .get(format!("http://127.0.0.1:{port}/login"))
            .send()
            .await
        {
            break response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the console did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    let page = http
        .get(format!("http://127.0.0.1:{port}/cashes"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303, "pages need a login");
    assert_eq!(page.headers()["location"], "/login");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_approvals_of_two_operators_pay_out_once() {
    let mut env = TestEnv::new().await;
    with_threshold(&mut env.settings);
    let _worker = env.start_worker();
    let mut client = env.client().await;
    env.fund(9, 60_000).await;
    let cash = request_cash(&mut client, "c", 9, 60_000).await;
    // Five approvals from each of two operators at once, in whatever batches the worker makes.
    for i in 0..10 {
        client
            .command(&approve(&format!("race-{i}"), 91 + i % 2, cash))
            .await;
    }
    client.wait_results(11).await;
    let mut approvals_seen = Vec::new();
    for i in 0..10 {
        let result = &client.received[&format!("race-{i}")][0];
        match result["status"].as_str() {
            Some("succeeded") => {
                if let Some(n) = result["data"]["approvals"].as_i64() {
                    approvals_seen.push(n);
                }
            }
            _ => assert_eq!(result["code"], "already_approved", "{result}"),
        }
    }
    assert!(
        approvals_seen.contains(&1) && approvals_seen.contains(&2),
        "{approvals_seen:?}"
    );
    assert_eq!(cash_status(&env, cash).await, 1);
    assert_eq!(approvals(&env, cash).await, vec![91, 92]);
    assert_eq!(env.system_balance("paid_out").await, 60_000);
    assert_eq!(env.system_balance("pending_payouts").await, 0);
    let report = env.audit().await;
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_user_bound_to_operator_ids_approves_only_as_them() {
    let mut env = TestEnv::new().await;
    with_threshold(&mut env.settings);
    let broker_user = env.settings.security.operator_users[0].clone();
    env.settings.security.operator_ids =
        std::collections::BTreeMap::from([(broker_user, vec![91])]);
    let _worker = env.start_worker();
    let mut client = env.client().await;
    env.fund(4, 30_000).await;
    let cash = request_cash(&mut client, "c", 4, 20_000).await;
    // One login cannot be both operators of the two-person rule.
    let first = client.call(approve("a-91", 91, cash)).await;
    assert_eq!(first["data"]["approvals"], 1, "{first}");
    let other = client.call(approve("a-92", 92, cash)).await;
    assert_eq!(other["code"], "forbidden", "{other}");
    assert_eq!(cash_status(&env, cash).await, 0);
    assert_eq!(approvals(&env, cash).await, vec![91]);
    assert_eq!(env.system_balance("paid_out").await, 0);

    // Start-up refuses a binding of a user that is no operator, and a console whose accounts
    // its broker user may not act as.
    let mut bad = env.settings.clone();
    bad.security.operator_ids.insert("nobody".into(), vec![5]);
    assert!(bad.security.operators().is_err());
    let mut console = env.settings.clone();
    console.console.operators = vec![pluspay::config::ConsoleOperator {
        name: "wang".into(),
        user_id: 92,
        password_hash: pluspay::console::auth::hash_password("pw").unwrap(),
    }];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = pluspay::console::serve(
        listener,
        console,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("wang's user_id 92"), "{refused}");
}
