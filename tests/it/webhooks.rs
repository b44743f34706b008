//! The Ping++ webhook listener against real RabbitMQ and PostgreSQL: what is enqueued, what is
//! refused (and then never enqueued), outages, slow clients, shutdown, load, and the CLI.
//! No worker runs here; a test consumer reads the webhooks queue.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::fake_pingpp::FakePingpp;
use crate::support::{TestEnv, WAIT};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::{Channel, Connection};
use pluspay::amqp;
use pluspay::config::Settings;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pingpp-webhook/"
);
const PATH: &str = "/webhooks/pingpp";
const OTHER_PATH: &str = "/api/v2/plus-pay/webhooks";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}"))
        .unwrap_or_else(|e| panic!("fixture {name} (in {FIXTURES}): {e}"))
}

fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

/// The real `charge.succeeded` event, its signature, and settings with the key that verifies it.
struct RealEvent {
    body: Vec<u8>,
    signature: String,
}

fn real_event() -> RealEvent {
    RealEvent {
        body: fixture("event-charge-succeeded.json"),
        signature: fixture_text("event-charge-succeeded.sig"),
    }
}

fn with_fixture_key(env: &TestEnv) -> Settings {
    let mut settings = env.settings.clone();
    settings.pingpp.public_key = Some(format!("{FIXTURES}pingpp_rsa_public_key.pem").into());
    settings
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{name}_{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, content).expect("write a temporary file");
    path
}

fn with_fake_key(env: &TestEnv, fake: &FakePingpp) -> Settings {
    let mut settings = env.settings.clone();
    settings.pingpp.public_key = Some(temp_file("pingpp_public.pem", &fake.public_key_pem()));
    settings
}

fn event_id(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A listener served in this process on a port of its own.
struct Listener {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
}

impl Listener {
    async fn start(settings: Settings) -> Listener {
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pluspay::webhook::serve(socket, settings, shutdown.clone()));
        Listener {
            addr,
            shutdown,
            task: Some(task),
            http: http_client(),
        }
    }

    /// Started and connected to the broker (and the database answers).
    async fn ready(settings: Settings) -> Listener {
        let listener = Listener::start(settings).await;
        listener.wait_readiness(200).await;
        listener
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `/readyz` until it answers `status`.
    async fn wait_readiness(&self, status: u16) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (now, body) = self.get("/readyz").await;
            if now == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz still answers {now} {body}, not {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delivers as Ping++ does; `None` leaves the signature header out.
    async fn post(&self, path: &str, body: &[u8], signature: Option<&str>) -> u16 {
        crate::support::post_webhook(&self.http, &self.url(path), body, signature).await
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.take().unwrap().await.expect("the listener task")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// Sends bytes as they are (header names keep their case) on a new connection and returns the
/// answer's status and the whole answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    (status_of(&answer), answer)
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

fn request_head(path: &str, signature_header: &str, signature: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: pluspay\r\nContent-Type: application/json\r\n\
         {signature_header}: {signature}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// A consumer on the webhooks queue, straight on the broker.
struct Queue {
    _connection: Connection,
    channel: Channel,
    name: String,
    consumer: lapin::Consumer,
}

impl Queue {
    async fn open(settings: &Settings) -> Queue {
        let connection = amqp::connect(&settings.amqp.url, "test-webhooks-queue")
            .await
            .unwrap();
        let names = amqp::Names::new(&settings.amqp.namespace);
        amqp::topology::declare(&connection, &names, &settings.amqp)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let consumer = crate::support::no_ack_consumer(&channel, &names.webhooks_queue).await;
        Queue {
            _connection: connection,
            channel,
            name: names.webhooks_queue,
            consumer,
        }
    }

    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(WAIT, self.consumer.next())
            .await
            .expect("a webhook in the queue in time")
            .expect("the consumer is open")
            .expect("a delivery")
    }

    /// Everything enqueued before the event `marker`, which is consumed too. The listener
    /// publishes on one channel and answers after the confirm, so whatever it accepted before
    /// the marker is ahead of it in the queue.
    async fn until(&mut self, marker: &str) -> Vec<Delivery> {
        let mut before = Vec::new();
        loop {
            let delivery = self.next().await;
            if event_id(&delivery.data) == marker {
                return before;
            }
            before.push(delivery);
        }
    }

    /// Messages waiting (and not yet pushed to this consumer).
    async fn waiting(&self) -> u32 {
        crate::support::ready_messages(&self.channel, &self.name).await
    }
}

fn property(value: &Option<lapin::types::ShortString>) -> Option<&str> {
    value.as_ref().map(|v| v.as_str())
}

#[tokio::test]
async fn the_real_event_is_enqueued_byte_for_byte() {
    let env = TestEnv::new().await;
    let mut queue = Queue::open(&env.settings).await;
    let listener = Listener::ready(with_fixture_key(&env)).await;
    let event = real_event();

    assert_eq!(
        listener
            .post(PATH, &event.body, Some(&event.signature))
            .await,
        200
    );

    let delivery = queue.next().await;
    assert_eq!(delivery.data, event.body, "the body exactly as received");
    let properties = &delivery.properties;
    assert_eq!(
        property(properties.message_id()),
        Some(event_id(&event.body).as_str())
    );
    assert_eq!(property(properties.kind()), Some("charge.succeeded"));
    assert_eq!(
        property(properties.content_type()),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(delivery.routing_key.as_str(), "pingpp");
    assert_eq!(queue.waiting().await, 0, "exactly one message");
    listener.stop().await.unwrap();
}

#[tokio::test]
async fn both_paths_accept_and_the_header_name_is_case_insensitive() {
    let env = TestEnv::new().await;
    let mut queue = Queue::open(&env.settings).await;
    let listener = Listener::ready(with_fixture_key(&env)).await;
    let event = real_event();

    let mut sent = 0;
    for path in [PATH, OTHER_PATH] {
        for header in [
            "X-Pingplusplus-Signature",
            "x-pingplusplus-signature",
            "X-PINGPLUSPLUS-SIGNATURE",
        ] {
            let mut request =
                request_head(path, header, &event.signature, event.body.len()).into_bytes();
            request.extend_from_slice(&event.body);
            let (status, answer) = raw(listener.addr, &request).await;
            assert_eq!(status, 200, "{path} with {header}: {answer}");
            sent += 1;
        }
    }
    // Each delivery is enqueued (telling redeliveries apart is the worker's business).
    for _ in 0..sent {
        assert_eq!(queue.next().await.data, event.body);
    }
    assert_eq!(queue.waiting().await, 0);
}

#[tokio::test]
async fn forged_or_unsigned_deliveries_are_refused_and_never_enqueued() {
    let env = TestEnv::new().await;
    let mut queue = Queue::open(&env.settings).await;
    let listener = Listener::ready(with_fixture_key(&env)).await;
    let event = real_event();
    let other_body = fixture("event-account-summary.json");
    let other_signature = fixture_text("event-account-summary.sig");

    let mut refused: Vec<(String, Vec<u8>, Option<String>)> = Vec::new();
    for at in [0, event.body.len() / 2, event.body.len() - 1] {
        let mut body = event.body.clone();
        body[at] ^= 0x01;
        refused.push((
            format!("body byte {at} changed"),
            body,
            Some(event.signature.clone()),
        ));
    }
    let mut body = event.body.clone();
    body.push(b'\n');
    refused.push((
        "trailing newline".into(),
        body,
        Some(event.signature.clone()),
    ));
    for at in [0, event.signature.len() / 2, event.signature.len() - 5] {
        let mut signature = event.signature.clone().into_bytes();
        signature[at] = if signature[at] == b'A' { b'B' } else { b'A' };
        refused.push((
            format!("signature byte {at} changed"),
            event.body.clone(),
            Some(String::from_utf8(signature).unwrap()),
        ));
    }
    refused.push(("no signature".into(), event.body.clone(), None));
    refused.push((
        "empty signature".into(),
        event.body.clone(),
        Some(String::new()),
    ));
    refused.push((
        "signature not base64".into(),
        event.body.clone(),
        Some("not base64 at all!".into()),
    ));
    refused.push((
        "signed with another key".into(),
        other_body.clone(),
        Some(other_signature.clone()),
    ));
    refused.push((
        "another event's signature".into(),
        event.body.clone(),
        Some(other_signature),
    ));
    for (case, body, signature) in &refused {
        let status = listener.post(PATH, body, signature.as_deref()).await;
        assert_eq!(status, 401, "{case}");
    }
    // Neither another path nor another method reaches the queue.
    let signature = Some(event.signature.as_str());
    assert_eq!(
        listener
            .post("/webhooks/other", &event.body, signature)
            .await,
        404
    );
    assert_eq!(listener.post("/", &event.body, signature).await, 404);
    let put = listener
        .http
        .put(listener.url(PATH))
        .header("X-Pingplusplus-Signature", &event.signature)
        .body(event.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(listener.get(PATH).await.0, 405);

    // Then the real one: it must be the first and only message.
    assert_eq!(listener.post(PATH, &event.body, signature).await, 200);
    let before = queue.until(&event_id(&event.body)).await;
    assert!(
        before.is_empty(),
        "{} refused deliveries enqueued",
        before.len()
    );
    assert_eq!(queue.waiting().await, 0);
}

#[tokio::test]
async fn signed_bodies_that_are_not_events_or_too_large_are_refused() {
    let env = TestEnv::new().await;
    let fake = FakePingpp::start(None).await;
    let mut settings = with_fake_key(&env, &fake);
    settings.webhook.max_body_bytes = 4096;
    let mut queue = Queue::open(&settings).await;
    let listener = Listener::ready(settings).await;
    let signed = |body: &str| (body.as_bytes().to_vec(), fake.sign_webhook(body));

    for (case, body) in [
        ("not JSON", "this is not JSON"),
        ("empty", ""),
        ("an array", "[1,2,3]"),
        ("a string", "\"evt_1\""),
        ("no id", r#"{"type":"charge.succeeded","object":"event"}"#),
        ("no type", r#"{"id":"evt_1","object":"event"}"#),
        ("no object", r#"{"id":"evt_1","type":"charge.succeeded"}"#),
        (
            "not an event",
            r#"{"id":"ch_1","type":"charge.succeeded","object":"charge"}"#,
        ),
        (
            "id not a string",
            r#"{"id":1,"type":"charge.succeeded","object":"event"}"#,
        ),
        ("empty id", r#"{"id":"","type":"x","object":"event"}"#),
        (
            "duplicate id",
            r#"{"id":"evt_1","id":"evt_2","type":"x","object":"event"}"#,
        ),
        ("truncated", r#"{"id":"evt_1","type":"x","object":"ev"#),
        (
            "NUL in the id",
            r#"{"id":"evt_1\u0000","type":"x","object":"event"}"#,
        ),
        (
            "NUL in the type",
            r#"{"id":"evt_1","type":"charge\u0000","object":"event"}"#,
        ),
    ] {
        let (body, signature) = signed(body);
        assert_eq!(
            listener.post(PATH, &body, Some(&signature)).await,
            400,
            "{case}"
        );
    }
    let long_id = format!(
        r#"{{"id":"evt_{}","type":"x","object":"event"}}"#,
        "a".repeat(300)
    );
    let (body, signature) = signed(&long_id);
    assert_eq!(listener.post(PATH, &body, Some(&signature)).await, 400);
    // The worker's limits: an id of 129 bytes, and JSON nested deeper than it reads.
    let id_129 = format!(
        r#"{{"id":"{}","type":"x","object":"event"}}"#,
        "e".repeat(129)
    );
    let (body, signature) = signed(&id_129);
    assert_eq!(listener.post(PATH, &body, Some(&signature)).await, 400);
    let deep = format!(
        r#"{{"id":"evt_deep","type":"x","object":"event","data":{}{}}}"#,
        "[".repeat(1_000),
        "]".repeat(1_000)
    );
    let (body, signature) = signed(&deep);
    assert_eq!(listener.post(PATH, &body, Some(&signature)).await, 400);

    // A real-shaped event padded to the limit is accepted; one byte more is not.
    let (event, _) = fake.signed_event("charge.succeeded", json!({ "id": "ch_1" }));
    let mut at_limit: Value = serde_json::from_str(&event).unwrap();
    at_limit["padding"] = json!("");
    let padding = 4096 - at_limit.to_string().len();
    at_limit["padding"] = json!("x".repeat(padding));
    let at_limit = at_limit.to_string();
    assert_eq!(at_limit.len(), 4096);
    let over_limit = at_limit.replacen("\"padding\":\"", "\"padding\":\"x", 1);
    let (body, signature) = signed(&over_limit);
    assert_eq!(listener.post(PATH, &body, Some(&signature)).await, 413);
    // The same without a Content-Length (chunked): refused while reading.
    let mut chunked = format!(
        "POST {PATH} HTTP/1.1\r\nHost: pluspay\r\nX-Pingplusplus-Signature: {signature}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(listener.addr, &chunked).await.0, 413);
    // Far over the limit.
    let huge = format!(
        r#"{{"id":"evt_huge","type":"x","object":"event","p":"{}"}}"#,
        "x".repeat(100_000)
    );
    let (body, signature) = signed(&huge);
    assert_eq!(listener.post(PATH, &body, Some(&signature)).await, 413);

    let (body, signature) = signed(&at_limit);
    assert_eq!(listener.post(PATH, &body, Some(&signature)).await, 200);
    let before = queue.until(&event_id(&body)).await;
    assert!(
        before.is_empty(),
        "{} refused bodies enqueued",
        before.len()
    );
    assert_eq!(queue.waiting().await, 0);
}

/// A TCP proxy in front of the broker that can be cut (listener and every connection closed)
/// and restored on the same port, so an outage hits only this test's listener.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    cut: CancellationToken,
    tasks: TaskTracker,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let socket = Self::bind(0).await;
        let mut proxy = Proxy {
            port: socket.local_addr().unwrap().port(),
            upstream,
            cut: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        proxy.serve(socket);
        proxy
    }

    async fn bind(port: u16) -> TcpListener {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("bind the proxy");
        socket.listen(64).unwrap()
    }

    fn serve(&mut self, socket: TcpListener) {
        let cut = CancellationToken::new();
        self.cut = cut.clone();
        let tasks = self.tasks.clone();
        let upstream = self.upstream;
        self.tasks.spawn(async move {
            loop {
                let mut client = tokio::select! {
                    _ = cut.cancelled() => return,
                    accepted = socket.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let cut = cut.clone();
                tasks.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
    }

    /// Returns once the port is closed and every proxied connection is gone.
    async fn cut(&mut self) {
        self.cut.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks = TaskTracker::new();
    }

    async fn restore(&mut self) {
        let socket = Self::bind(self.port).await;
        self.serve(socket);
    }
}

#[tokio::test]
async fn broker_outage_answers_503_and_a_redelivery_succeeds_after_it() {
    let env = TestEnv::new().await;
    let mut queue = Queue::open(&env.settings).await;
    let broker_url = env.settings.amqp.url.clone();
    let uri: lapin::uri::AMQPUri = broker_url.parse().unwrap();
    let upstream: SocketAddr = format!("{}:{}", uri.authority.host, uri.authority.port)
        .parse()
        .unwrap();
    let mut proxy = Proxy::start(upstream).await;
    let mut settings = with_fixture_key(&env);
    settings.amqp.url = broker_url.replace(
        &format!(":{}/", uri.authority.port),
        &format!(":{}/", proxy.port),
    );
    assert_ne!(settings.amqp.url, broker_url);
    let listener = Listener::ready(settings).await;
    let event = real_event();

    proxy.cut().await;
    let readiness = listener.wait_readiness(503).await;
    assert_eq!(readiness["broker"], "down", "{readiness}");
    assert_eq!(readiness["database"], "up", "{readiness}");
    assert_eq!(listener.get("/healthz").await.0, 200, "alive all the same");
    let started = Instant::now();
    assert_eq!(
        listener
            .post(PATH, &event.body, Some(&event.signature))
            .await,
        503
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "503 at once, not after waiting for the broker ({:?})",
        started.elapsed()
    );

    proxy.restore().await;
    listener.wait_readiness(200).await;
    // Ping++ delivers the same event again.
    assert_eq!(
        listener
            .post(PATH, &event.body, Some(&event.signature))
            .await,
        200
    );
    assert_eq!(queue.next().await.data, event.body);
    assert_eq!(
        queue.waiting().await,
        0,
        "the refused delivery was not enqueued"
    );
    listener.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_readiness() {
    let env = TestEnv::new().await;
    let listener = Listener::ready(with_fixture_key(&env)).await;
    assert_eq!(listener.get("/healthz").await.0, 200);
    let (status, body) = listener.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "ok": true, "broker": "up", "database": "up" })
    );
    assert_eq!(
        listener.post("/readyz", b"", None).await,
        405,
        "probes are GET"
    );

    // Nothing listens on port 1: the broker is up but the database is not.
    let mut settings = with_fixture_key(&env);
    settings.database.url = "postgres://postgres@127.0.0.1:1/nothing".into();
    let no_database = Listener::start(settings).await;
    let body = no_database.wait_readiness(503).await;
    assert_eq!(body["database"], "down", "{body}");
    assert_eq!(no_database.get("/healthz").await.0, 200);
    let deadline = Instant::now() + WAIT;
    while no_database.get("/readyz").await.1["broker"] != "up" {
        assert!(
            Instant::now() < deadline,
            "the broker connection never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Webhooks do not need the database.
    let event = real_event();
    assert_eq!(
        no_database
            .post(PATH, &event.body, Some(&event.signature))
            .await,
        200
    );
}

#[tokio::test]
async fn a_slow_client_does_not_hold_up_others() {
    let env = TestEnv::new().await;
    let mut settings = with_fixture_key(&env);
    settings.webhook.read_timeout_ms = 30_000;
    let mut queue = Queue::open(&settings).await;
    let listener = Listener::ready(settings).await;
    let event = real_event();

    // One stalls halfway through its headers, one halfway through its body.
    let mut slow_headers = TcpStream::connect(listener.addr).await.unwrap();
    slow_headers
        .write_all(b"POST /webhooks/pingpp HTTP/1.1\r\nHost: pluspay\r\nX-Pingplus")
        .await
        .unwrap();
    let mut slow_body = TcpStream::connect(listener.addr).await.unwrap();
    let head = request_head(
        PATH,
        "X-Pingplusplus-Signature",
        &event.signature,
        event.body.len(),
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    slow_body.write_all(&event.body[..100]).await.unwrap();

    let started = Instant::now();
    let status = listener
        .post(PATH, &event.body, Some(&event.signature))
        .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the good delivery waited {:?}",
        started.elapsed()
    );
    assert_eq!(queue.next().await.data, event.body);

    // The stalled body can still be finished and is then accepted.
    slow_body.write_all(&event.body[100..]).await.unwrap();
    let mut answer = String::new();
    slow_body.read_to_string(&mut answer).await.unwrap();
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(queue.next().await.data, event.body);
    drop(slow_headers);
}

#[tokio::test]
async fn clients_that_stall_past_the_read_timeout_are_cut_off() {
    let env = TestEnv::new().await;
    let mut settings = with_fixture_key(&env);
    settings.webhook.read_timeout_ms = 500;
    let queue = Queue::open(&settings).await;
    let listener = Listener::ready(settings).await;
    let event = real_event();

    let mut slow_headers = TcpStream::connect(listener.addr).await.unwrap();
    slow_headers
        .write_all(b"POST /webhooks/pingpp HTTP/1.1\r\nHost: pluspay\r\nX-Pingplus")
        .await
        .unwrap();
    let mut slow_body = TcpStream::connect(listener.addr).await.unwrap();
    let head = request_head(
        PATH,
        "X-Pingplusplus-Signature",
        &event.signature,
        event.body.len(),
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    slow_body.write_all(&event.body[..100]).await.unwrap();

    // The server ends both (EOF or reset; hyper may say 408 first for the headers), well before
    // hyper's own 30 s default would.
    let bound = Duration::from_secs(10);
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(bound, slow_headers.read_to_end(&mut answer)).await;
    assert!(
        ended.is_ok(),
        "the half-sent headers still hold a connection"
    );
    let mut answer = String::new();
    tokio::time::timeout(bound, slow_body.read_to_string(&mut answer))
        .await
        .expect("the stalled body is answered")
        .unwrap();
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(queue.waiting().await, 0);
}

#[tokio::test]
async fn shutdown_lets_a_request_in_hand_finish_and_stops_accepting() {
    let env = TestEnv::new().await;
    let mut queue = Queue::open(&env.settings).await;
    let listener = Listener::ready(with_fixture_key(&env)).await;
    let event = real_event();

    // `Expect: 100-continue`: the "100 Continue" proves the handler is reading the body.
    let mut in_hand = TcpStream::connect(listener.addr).await.unwrap();
    let head = request_head(
        PATH,
        "X-Pingplusplus-Signature",
        &event.signature,
        event.body.len(),
    )
    .replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    in_hand.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    in_hand.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");

    listener.shutdown.cancel();
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(listener.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    in_hand.write_all(&event.body).await.unwrap();
    let mut answer = String::new();
    in_hand.read_to_string(&mut answer).await.unwrap();
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(queue.next().await.data, event.body);
    listener.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_stalled_requests_after_the_timeout() {
    let env = TestEnv::new().await;
    let mut settings = with_fixture_key(&env);
    settings.worker.shutdown_timeout_secs = 1;
    settings.webhook.read_timeout_ms = 60_000;
    let listener = Listener::ready(settings).await;
    let event = real_event();

    let mut stalled = TcpStream::connect(listener.addr).await.unwrap();
    let head = request_head(
        PATH,
        "X-Pingplusplus-Signature",
        &event.signature,
        event.body.len(),
    )
    .replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stalled.read_exact(&mut interim).await.unwrap();

    let started = Instant::now();
    listener.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped after {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "the stalled request was not accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_2000_events_from_32_clients_all_enqueued() {
    const EVENTS: usize = 2_000;
    const CLIENTS: usize = 32;
    let env = TestEnv::new().await;
    let fake = FakePingpp::start(None).await;
    let settings = with_fake_key(&env, &fake);
    let mut queue = Queue::open(&settings).await;
    let listener = Listener::ready(settings).await;

    let events: Vec<(String, String)> = (0..EVENTS)
        .map(|i| fake.signed_event("charge.succeeded", json!({ "id": format!("ch_{i}") })))
        .collect();
    let url = listener.url(PATH);
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let mine: Vec<(String, String)> = events
            .iter()
            .skip(client)
            .step_by(CLIENTS)
            .cloned()
            .collect();
        let url = url.clone();
        clients.spawn(async move {
            let http = http_client();
            let mut answers = Vec::with_capacity(mine.len());
            for (body, signature) in mine {
                let status =
                    crate::support::post_webhook(&http, &url, body.as_bytes(), Some(&signature))
                        .await;
                answers.push((event_id(body.as_bytes()), status));
            }
            answers
        });
    }
    let answers: Vec<(String, u16)> = tokio::time::timeout(Duration::from_secs(300), async {
        let mut all = Vec::new();
        while let Some(answers) = clients.join_next().await {
            all.extend(answers.expect("a client task"));
        }
        all
    })
    .await
    .expect("the load finished within 5 minutes");
    let elapsed = started.elapsed();
    println!(
        "webhook load: {EVENTS} events from {CLIENTS} clients in {elapsed:.2?}: {:.0} events/s",
        EVENTS as f64 / elapsed.as_secs_f64()
    );

    let accepted: HashSet<String> = answers
        .iter()
        .filter(|(_, status)| (200..300).contains(status))
        .map(|(id, _)| id.clone())
        .collect();
    let refused = answers.len() - accepted.len();
    assert_eq!(refused, 0, "non-2xx answers: {refused}");
    assert_eq!(accepted.len(), EVENTS);

    let (marker, signature) = fake.signed_event("charge.succeeded", json!({ "id": "ch_marker" }));
    assert_eq!(
        listener
            .post(PATH, marker.as_bytes(), Some(&signature))
            .await,
        200
    );
    let enqueued = queue.until(&event_id(marker.as_bytes())).await;
    let ids: Vec<String> = enqueued.iter().map(|d| event_id(&d.data)).collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "each accepted event once");
    assert_eq!(
        unique, accepted,
        "the queue holds exactly the accepted events"
    );
    for delivery in &enqueued {
        assert_eq!(
            property(delivery.properties.message_id()),
            Some(event_id(&delivery.data).as_str())
        );
    }
    listener.stop().await.unwrap();
}

#[tokio::test]
async fn start_up_refuses_a_missing_or_bad_public_key() {
    let env = TestEnv::new().await;
    let garbage = temp_file("garbage.pem", "not a key");
    for key in [
        None,
        Some(PathBuf::from("/nonexistent/pingpp.pem")),
        Some(garbage),
    ] {
        let mut settings = env.settings.clone();
        settings.pingpp.public_key = key.clone();
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let served = tokio::time::timeout(
            WAIT,
            pluspay::webhook::serve(socket, settings.clone(), CancellationToken::new()),
        )
        .await
        .expect("fails at once");
        let error = format!("{:#}", served.unwrap_err());
        assert!(error.contains("pingpp.public_key"), "{key:?}: {error}");
        let ran = pluspay::webhook::run(settings, CancellationToken::new()).await;
        assert!(format!("{:#}", ran.unwrap_err()).contains("pingpp.public_key"));
    }
}

/// Settings file for the CLI tests: no public key unless given.
fn config_file(public_key: Option<&str>, listen: SocketAddr) -> PathBuf {
    // Port 0: parallel tests must not fight over the default metrics port.
    let mut toml =
        format!("[webhook]\nlisten = \"{listen}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    if let Some(key) = public_key {
        toml.push_str(&format!("[pingpp]\npublic_key = \"{key}\"\n"));
    }
    temp_file("pluspay.toml", &toml)
}

fn free_port() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[tokio::test]
async fn cli_webhooks_and_run_need_the_public_key() {
    let env = TestEnv::new().await;
    let config = config_file(None, free_port());
    for command in ["webhooks", "run"] {
        let output = crate::support::pluspay(
            &[command, "--config", config.to_str().unwrap()],
            &env.process_env(),
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("pingpp.public_key"), "{command}: {stderr}");
    }
}

#[tokio::test]
async fn cli_run_serves_webhooks_next_to_the_worker_and_stops_on_sigterm() {
    let env = TestEnv::new().await;
    let mut queue = Queue::open(&env.settings).await;
    let listen = free_port();
    let key = format!("{FIXTURES}pingpp_rsa_public_key.pem");
    let config = config_file(Some(&key), listen);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pluspay"));
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PLUSPAY_")) {
        command.env_remove(key);
    }
    command.envs(env.process_env());
    let mut child = command.spawn().expect("start pluspay run");

    let http = http_client();
    let url = format!("http://{listen}");
    let deadline = Instant::now() + WAIT;
    loop {
        match http.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .await
                .unwrap();
            panic!("pluspay run exited with {status}: {stderr}");
        }
        assert!(Instant::now() < deadline, "pluspay run never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let event = real_event();
    assert_eq!(
        crate::support::post_webhook(
            &http,
            &format!("{url}{PATH}"),
            &event.body,
            Some(&event.signature)
        )
        .await,
        200
    );
    assert_eq!(queue.next().await.data, event.body);
    // The worker is there too: a command gets its result.
    let mut client = env.client().await;
    let result = client
        .call(json!({ "id": "cli-run-1", "type": "wallet.get", "user_id": 1, "data": {} }))
        .await;
    assert_eq!(result["status"], "succeeded", "{result}");

    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
