//! The webhook listener's benchmark (its target: at least 5,000 verified webhooks/s accepted
//! with publisher confirms): the release `pluspay webhooks` (the listener alone) as a child
//! process against a real RabbitMQ, fed N distinct validly signed `charge.succeeded` events from
//! C concurrent HTTP/1.1 keep-alive connections; every answer awaited.
//!
//! ```text
//! cargo bench --bench webhooks -- [--webhooks N] [--connections C] [--bad B] [--smoke]
//!     [--broker-only]
//! ```
//!
//! (`-- --help` lists them.)
//!
//! `--broker-only` leaves the listener out: C tasks publish the same events straight to the
//! webhooks exchange on one confirm channel, each awaiting its own confirm, as the listener
//! does. It measures the broker's share, to compare with.
//!
//! `scripts/bench.sh --webhooks [ARGS]` starts throwaway PostgreSQL and RabbitMQ and runs this;
//! by hand it needs PP_TEST_AMQP_URL and PP_TEST_DATABASE_URL (only for the listener's
//! `/readyz`, which checks the database too). Other PLUSPAY_* variables in the environment are
//! passed to the listener, to try settings; PP_BENCH_PLUSPAY=PATH runs another `pluspay` binary
//! than this build's (an older build, for before/after runs interleaved on a noisy machine).
//!
//! Under `cargo test` (which runs a `harness = false` bench without `--bench`) it runs the
//! smoke version when those variables are set, so CI checks that the harness works (every
//! webhook accepted and enqueued exactly once, bad ones refused) without timing anything.

mod support;
use support::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use pluspay::amqp::publisher::json_properties;
use pluspay::amqp::topology::PINGPP_ROUTING_KEY;
use pluspay::amqp::{self, Names, Publisher};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The path Ping++ delivers to (docs/CONTRACT.md §2).
const PATH: &str = "/webhooks/pingpp";
const SIGNATURE_HEADER: &str = "X-Pingplusplus-Signature";
/// The documented answer to a missing or bad signature (docs/CONTRACT.md §2).
const BAD_SIGNATURE_STATUS: u16 = 401;
/// The real `charge.succeeded` event (859 bytes), the template of every event sent.
const TEMPLATE: &str = include_str!("../tests/fixtures/pingpp-webhook/event-charge-succeeded.json");
/// The default `amqp.delivery_limit`, for declaring the same topology as the listener.
const DELIVERY_LIMIT: u32 = 20;

fn amqp_settings() -> pluspay::config::AmqpSettings {
    pluspay::config::AmqpSettings {
        delivery_limit: DELIVERY_LIMIT,
        ..Default::default()
    }
}
/// No answer (or no message from the queue) for this long means the run is stuck.
const STALL: Duration = Duration::from_secs(60);

/// The webhook listener's benchmark.
///
/// N distinct validly signed `charge.succeeded` events sent to the release `pluspay webhooks`
/// from C concurrent HTTP/1.1 keep-alive connections, every answer awaited. Needs
/// PP_TEST_AMQP_URL and PP_TEST_DATABASE_URL (scripts/bench.sh --webhooks starts both
/// services); docs/BENCHMARKS.md explains the options and the output.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "webhooks",
    override_usage = "cargo bench --bench webhooks -- [OPTIONS]"
)]
struct Options {
    /// Distinct validly signed events sent (--smoke: 500).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50_000,
        default_value_if("smoke", "true", "500"),
        value_parser = positive
    )]
    webhooks: usize,
    /// Concurrent HTTP/1.1 keep-alive connections, each sending its next event as soon as the
    /// previous one is answered (--smoke: 8).
    #[arg(
        long,
        value_name = "C",
        default_value_t = 64,
        default_value_if("smoke", "true", "8"),
        value_parser = positive
    )]
    connections: usize,
    /// Badly signed deliveries sent before the load; each must be refused and never enqueued.
    #[arg(long, value_name = "B", default_value_t = 12)]
    bad: usize,
    /// The short version for CI: checks that everything works, measures nothing worth reading.
    #[arg(long)]
    smoke: bool,
    /// No listener: C tasks publish the same events straight to the webhooks exchange on one
    /// confirm channel, each awaiting its own confirm, as the listener does; the broker's share.
    #[arg(long)]
    broker_only: bool,
    /// Added by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

impl Options {
    /// `args` without the program's name.
    fn parse_args(args: &[String]) -> anyhow::Result<Options> {
        Ok(Options::try_parse_from(
            std::iter::once("webhooks").chain(args.iter().map(String::as_str)),
        )?)
    }
}

fn main() -> ExitCode {
    bench_main(
        "webhooks",
        "scripts/bench.sh --webhooks",
        Options::parse_args,
        run,
    )
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run scripts/bench.sh --webhooks, which starts RabbitMQ and PostgreSQL")
    })
}

async fn run(options: Options) -> anyhow::Result<()> {
    let db_url = env("PP_TEST_DATABASE_URL")?;
    let amqp_url = env("PP_TEST_AMQP_URL")?;
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let log_dir = std::env::temp_dir().join(format!("pluspay-bench-webhooks-{run_tag}"));
    std::fs::create_dir_all(&log_dir)?;
    if options.broker_only {
        println!(
            "webhooks: run {run_tag}, BROKER ONLY (no listener): {} events published by {} \
             tasks on one confirm channel",
            options.webhooks, options.connections
        );
    } else {
        println!(
            "webhooks: run {run_tag}, {} webhooks from {} connections, {} badly signed; \
             listener log in {}",
            options.webhooks,
            options.connections,
            options.bad,
            log_dir.display()
        );
    }
    let passed: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PLUSPAY_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !passed.is_empty() {
        println!("webhooks: passed to the listener: {}", passed.join(" "));
    }
    if let Some(binary) = std::env::var_os("PP_BENCH_PLUSPAY") {
        println!("webhooks: listener binary {}", Path::new(&binary).display());
    }

    // The test key pair: Ping++'s role is played by this process.
    let key = KeyPair::generate(KeySize::Rsa2048).context("generate an RSA key")?;
    let key_file = log_dir.join("pingpp_public.pem");
    std::fs::write(
        &key_file,
        pem("PUBLIC KEY", key.public_key().as_der()?.as_ref()),
    )?;
    let signing = Instant::now();
    let sign = !options.broker_only;
    let events = Arc::new(sign_all(&key, &run_tag, options.webhooks, sign)?);
    let bad = if sign {
        bad_deliveries(&key, &run_tag, options.bad)?
    } else {
        Vec::new()
    };
    println!(
        "webhooks: {} events of {} bytes signed in {:.1} s (before the clock starts)",
        events.len(),
        events[0].body.len(),
        signing.elapsed().as_secs_f64()
    );

    let namespace = format!("bench_webhooks_{}", uuid::Uuid::new_v4().simple());
    let names = Names::new(&namespace);
    let connection = amqp::connect(&amqp_url, "pluspay-bench-webhooks").await?;
    amqp::topology::declare(&connection, &names, &amqp_settings()).await?;
    let channel = connection.create_channel().await?;

    if options.broker_only {
        let result = measure_broker(&options, &events, &amqp_url, &channel, &names).await;
        delete_namespace(&connection, &names).await;
        let _ = connection.close(200, "bye".into()).await;
        result?.print(&options);
        let _ = std::fs::remove_dir_all(&log_dir);
        return Ok(());
    }
    let addr = free_port()?;
    let log = log_dir.join("listener.log");
    let mut listener = Listener::start(&db_url, &amqp_url, &namespace, &key_file, addr, &log)?;
    let result = measure(&options, &mut listener, &events, &bad, &channel, &names).await;
    let stopped = listener.stop().await;
    // Also after a failure: nothing of this run stays on the broker.
    delete_namespace(&connection, &names).await;
    let _ = connection.close(200, "bye".into()).await;
    let measured = match (result, stopped) {
        (Ok(measured), Ok(())) => measured,
        (Err(e), _) | (Ok(_), Err(e)) => {
            let _ = listener.child.kill().await;
            return Err(e.context(format!("listener log: {}", log.display())));
        }
    };
    measured.print(&options);
    if options.smoke {
        // Nothing to read after a smoke run that passed (CI runs it on every test run).
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    Ok(())
}

// ---------------------------------------------------------------- the events

/// One delivery: its raw body, the signature header's value, its event id.
struct Event {
    id: String,
    body: Bytes,
    signature: Option<String>,
}

/// The fixture's event with every id made distinct (same length, so every body has the
/// fixture's size): event `i` of this run.
fn event_body(run_tag: &str, i: usize) -> String {
    let unique = format!("{run_tag}{i:016}");
    TEMPLATE
        .replace("evt_eYa58Wd44Glerl8AgfYfd1sL", &format!("evt_{unique}"))
        .replace("ch_bq9IHKnn6GnLzsS0swOujr4x", &format!("ch_{unique}"))
        .replace("2015d019f7cf6c0d", &format!("{:016}", i))
        .replace("iar_Xc2SGjrbdmT0eeKWeCsvLhbL", &format!("iar_{unique}"))
}

fn sign_body(key: &KeyPair, body: &[u8]) -> anyhow::Result<String> {
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        body,
        &mut signature,
    )
    .map_err(|_| anyhow::anyhow!("signing failed"))?;
    Ok(STANDARD.encode(signature))
}

/// N distinct events, signed on every core (RSA signing is slow: about 1 ms each).
fn sign_all(key: &KeyPair, run_tag: &str, n: usize, sign: bool) -> anyhow::Result<Vec<Event>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(n))
                        .map(|i| {
                            let body = event_body(run_tag, i);
                            let signature = if sign {
                                Some(sign_body(key, body.as_bytes())?)
                            } else {
                                None
                            };
                            Ok(Event {
                                id: format!("evt_{run_tag}{i:016}"),
                                body: Bytes::from(body),
                                signature,
                            })
                        })
                        .collect::<anyhow::Result<Vec<Event>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for part in parts {
            all.extend(part.join().expect("a signing thread")?);
        }
        Ok(all)
    })
}

/// Badly signed deliveries, in turn: another event's signature, a body changed after signing,
/// a signature that is not base64, an empty one, a truncated one, and no header at all.
fn bad_deliveries(key: &KeyPair, run_tag: &str, n: usize) -> anyhow::Result<Vec<Event>> {
    let other = sign_body(key, event_body(run_tag, usize::MAX).as_bytes())?;
    (0..n)
        .map(|j| {
            // Ids no good event has.
            let i = usize::MAX - 1 - j;
            let body = event_body(run_tag, i);
            let good = sign_body(key, body.as_bytes())?;
            let (body, signature) = match j % 6 {
                0 => (body, Some(other.clone())),
                1 => (
                    body.replacen("\"amount\":100", "\"amount\":900", 1),
                    Some(good),
                ),
                2 => (body, Some("not base64!".to_owned())),
                3 => (body, Some(String::new())),
                4 => (body, Some(good[..good.len() - 4].to_owned())),
                _ => (body, None),
            };
            Ok(Event {
                id: format!("evt_{run_tag}{i:016}"),
                body: Bytes::from(body),
                signature,
            })
        })
        .collect()
}

fn pem(label: &str, der: &[u8]) -> String {
    let base64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------- HTTP

/// One HTTP/1.1 keep-alive connection (hyper's client, no pool: one request at a time).
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request on the connection and reads the whole answer; returns its status.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: Bytes,
    signature: Option<&str>,
) -> anyhow::Result<u16> {
    sender.ready().await.context("the connection closed")?;
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "pluspay");
    if !body.is_empty() {
        request = request.header(
            hyper::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        );
    }
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
    let response = tokio::time::timeout(STALL, async {
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok::<_, anyhow::Error>(status)
    })
    .await
    .context("no answer within a minute")??;
    Ok(response)
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?)
}

// ---------------------------------------------------------------- the listener

struct Listener {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
}

impl Listener {
    fn start(
        db_url: &str,
        amqp_url: &str,
        namespace: &str,
        key_file: &Path,
        addr: SocketAddr,
        log: &Path,
    ) -> anyhow::Result<Listener> {
        let log = std::fs::File::create(log).context("create the listener log")?;
        let binary = std::env::var_os("PP_BENCH_PLUSPAY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_pluspay").into());
        let child = tokio::process::Command::new(binary)
            .arg("webhooks")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PLUSPAY_DATABASE_URL", db_url)
            .env("PLUSPAY_AMQP_URL", amqp_url)
            .env("PLUSPAY_AMQP_NAMESPACE", namespace)
            .env("PLUSPAY_PINGPP_PUBLIC_KEY", key_file)
            .env("PLUSPAY_WEBHOOK_LISTEN", addr.to_string())
            .env("PLUSPAY_METRICS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start `pluspay webhooks`")?;
        let pid = child.id().context("the listener's pid")?;
        Ok(Listener { child, pid, addr })
    }

    /// Waits until `/readyz` answers 200 (broker connected, database answering).
    async fn ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STALL;
        loop {
            if let Ok(mut sender) = connect(self.addr).await {
                let status = send(&mut sender, Method::GET, "/readyz", Bytes::new(), None).await;
                if matches!(status, Ok(200)) {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the listener exited at start-up ({status}); see its log");
            }
            if Instant::now() > deadline {
                bail!("the listener's /readyz did not answer 200 within {STALL:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for a graceful exit (a kill after 30 s).
    async fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            bail!("the listener exited before it was stopped");
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the listener exited with {status}");
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the listener did not stop within 30 s of SIGTERM");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the run

struct Measured {
    webhooks: usize,
    accepted: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// None with `--broker-only`.
    listener: Option<ListenerUse>,
    /// This process's (the clients') and RabbitMQ's CPU time over the same span.
    bench_cpu: Option<Duration>,
    rabbitmq_cpu: Option<Duration>,
    bad: usize,
    load_before: String,
    load_after: String,
}

/// The listener's memory and CPU over the load.
struct ListenerUse {
    idle_rss_kib: u64,
    sampled_rss_kib: u64,
    hwm_kib: u64,
    cpu: Duration,
}

impl Measured {
    fn throughput(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, options: &Options) {
        let per = |d: Duration| ms(d) / self.webhooks as f64;
        println!(
            "\n  {} webhooks accepted (2xx) in {:.2} s = {:.0} webhooks/s from {} connections; \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            self.accepted,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            options.connections,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        );
        match &self.listener {
            Some(l) => println!(
                "  listener: RSS idle {:.1} MiB, sampled peak {:.1} MiB, VmHWM {:.1} MiB; CPU \
                 {:.2} s = {:.3} ms per webhook ({:.0}% of one core over the run)",
                l.idle_rss_kib as f64 / 1024.0,
                l.sampled_rss_kib as f64 / 1024.0,
                l.hwm_kib as f64 / 1024.0,
                l.cpu.as_secs_f64(),
                per(l.cpu),
                100.0 * l.cpu.as_secs_f64() / self.elapsed.as_secs_f64()
            ),
            None => println!("  broker only: no listener; \"accepted\" = confirmed by RabbitMQ"),
        }
        let others: Vec<String> = [
            ("RabbitMQ", self.rabbitmq_cpu),
            ("bench client", self.bench_cpu),
        ]
        .into_iter()
        .filter_map(|(name, d)| Some(format!("{name} {:.3}", per(d?))))
        .collect();
        println!("  CPU ms per webhook, others: {}", others.join(", "));
        println!(
            "  queue: exactly the {} accepted events, each once, message_id = event id; {} badly \
             signed refused with {BAD_SIGNATURE_STATUS} and not enqueued",
            self.accepted, self.bad
        );
        let (peak_rss, listener_cpu) = match &self.listener {
            Some(l) => (
                format!("{:.1}", l.sampled_rss_kib.max(l.hwm_kib) as f64 / 1024.0),
                format!("{:.3}", per(l.cpu)),
            ),
            None => ("-".to_owned(), "- (broker only)".to_owned()),
        };
        println!(
            "  load average before {} / after {}\n",
            self.load_before, self.load_after
        );
        println!(
            "| webhooks | connections | webhooks/s | p50 ms | p99 ms | max ms | peak RSS MiB \
             | listener CPU ms/webhook | load before | load after |"
        );
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} |",
            self.webhooks,
            options.connections,
            self.throughput(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            peak_rss,
            listener_cpu,
            self.load_before,
            self.load_after
        );
    }
}

async fn measure(
    options: &Options,
    listener: &mut Listener,
    events: &Arc<Vec<Event>>,
    bad: &[Event],
    channel: &lapin::Channel,
    names: &Names,
) -> anyhow::Result<Measured> {
    listener.ready().await?;
    let n = events.len();

    // Badly signed first: each must get the documented 4xx (checked again in the queue below).
    let mut sender = connect(listener.addr).await?;
    for event in bad {
        let status = send(
            &mut sender,
            Method::POST,
            PATH,
            event.body.clone(),
            event.signature.as_deref(),
        )
        .await?;
        if status != BAD_SIGNATURE_STATUS {
            bail!(
                "a badly signed delivery (signature {:?}) got {status}, not {BAD_SIGNATURE_STATUS}",
                event.signature
            );
        }
    }
    drop(sender);

    // Connections are opened before the clock starts.
    let mut senders = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        senders.push(connect(listener.addr).await?);
    }
    let idle_rss_kib = proc_status_kib(listener.pid, "VmRSS:").unwrap_or(0);
    let cpu_before = cpu_time(listener.pid).unwrap_or_default();
    let rabbitmq = service_pids().1;
    let rabbitmq_before = rabbitmq.and_then(server_cpu_time);
    let bench_before = cpu_time(std::process::id());
    let load_before = load_average();
    let stop_sampling = CancellationToken::new();
    let sampler = sample_rss(listener.pid, stop_sampling.clone());

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let (events, next) = (events.clone(), next.clone());
            tokio::spawn(async move {
                // (event index, status, latency)
                let mut answers = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(i) else {
                        return Ok::<_, anyhow::Error>(answers);
                    };
                    let sent = Instant::now();
                    let status = send(
                        &mut sender,
                        Method::POST,
                        PATH,
                        event.body.clone(),
                        event.signature.as_deref(),
                    )
                    .await
                    .with_context(|| format!("webhook {}", event.id))?;
                    answers.push((i, status, sent.elapsed()));
                }
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for client in clients {
        answers.extend(client.await??);
    }
    let elapsed = start.elapsed();
    let hwm_kib = proc_status_kib(listener.pid, "VmHWM:").unwrap_or(0);
    let cpu = cpu_time(listener.pid)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let rabbitmq_cpu = rabbitmq
        .and_then(server_cpu_time)
        .zip(rabbitmq_before)
        .map(|(after, before)| after.saturating_sub(before));
    let bench_cpu = cpu_time(std::process::id())
        .zip(bench_before)
        .map(|(after, before)| after.saturating_sub(before));
    let load_after = load_average();
    stop_sampling.cancel();
    let sampled_rss_kib = sampler.await?;

    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (_, status, _) in &answers {
        *statuses.entry(*status).or_default() += 1;
    }
    let accepted = answers
        .iter()
        .filter(|(_, s, _)| (200..300).contains(s))
        .count();
    if answers.len() != n || accepted != n {
        bail!(
            "{} answers for {n} webhooks, {accepted} of them 2xx; statuses: {statuses:?}",
            answers.len()
        );
    }
    let mut latencies: Vec<Duration> = answers.iter().map(|(_, _, d)| *d).collect();
    latencies.sort_unstable();

    check_queue(channel, names, events, bad).await?;
    Ok(Measured {
        webhooks: n,
        accepted,
        elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().expect("n > 0"),
        listener: Some(ListenerUse {
            idle_rss_kib,
            sampled_rss_kib,
            hwm_kib,
            cpu,
        }),
        bench_cpu,
        rabbitmq_cpu,
        bad: bad.len(),
        load_before,
        load_after,
    })
}

/// `--broker-only`: what the listener does after verifying, without the listener: C tasks
/// publish the events on one confirm channel of one connection (the listener's set-up), each
/// awaiting its own confirm before taking the next event.
async fn measure_broker(
    options: &Options,
    events: &Arc<Vec<Event>>,
    amqp_url: &str,
    channel: &lapin::Channel,
    names: &Names,
) -> anyhow::Result<Measured> {
    let n = events.len();
    let connection =
        std::sync::Arc::new(amqp::connect(amqp_url, "pluspay-bench-broker-only").await?);
    let publisher = Publisher::open(connection.clone()).await?;
    let exchange: Arc<str> = names.webhooks_exchange.as_str().into();
    let rabbitmq = service_pids().1;
    let rabbitmq_before = rabbitmq.and_then(server_cpu_time);
    let bench_before = cpu_time(std::process::id());
    let load_before = load_average();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..options.connections)
        .map(|_| {
            let (events, next) = (events.clone(), next.clone());
            let (publisher, exchange) = (publisher.clone(), exchange.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(i) else {
                        return Ok::<_, anyhow::Error>(latencies);
                    };
                    let sent = Instant::now();
                    let properties = json_properties()
                        .with_message_id(event.id.as_str().into())
                        .with_type("charge.succeeded".into());
                    publisher
                        .publish(&exchange, PINGPP_ROUTING_KEY, &event.body, properties, true)
                        .await
                        .with_context(|| format!("publish {}", event.id))?;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    let rabbitmq_cpu = rabbitmq
        .and_then(server_cpu_time)
        .zip(rabbitmq_before)
        .map(|(after, before)| after.saturating_sub(before));
    let bench_cpu = cpu_time(std::process::id())
        .zip(bench_before)
        .map(|(after, before)| after.saturating_sub(before));
    let load_after = load_average();
    let _ = connection.close(200, "bye".into()).await;
    latencies.sort_unstable();
    check_queue(channel, names, events, &[]).await?;
    Ok(Measured {
        webhooks: n,
        accepted: latencies.len(),
        elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().expect("n > 0"),
        listener: None,
        bench_cpu,
        rabbitmq_cpu,
        bad: 0,
        load_before,
        load_after,
    })
}

/// The webhooks queue must hold exactly the accepted events, each once, and none of the badly
/// signed ones; it is emptied by consuming it.
async fn check_queue(
    channel: &lapin::Channel,
    names: &Names,
    events: &[Event],
    bad: &[Event],
) -> anyhow::Result<()> {
    let depth = queue_depth(channel, names).await?;
    if depth as usize != events.len() {
        bail!(
            "the webhooks queue holds {depth} messages for {} accepted webhooks",
            events.len()
        );
    }
    let wanted: HashMap<&str, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    let refused: HashMap<&str, usize> = bad
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    let mut consumer = channel
        .basic_consume(
            names.webhooks_queue.as_str().into(),
            "pluspay-bench-check".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut seen = vec![false; events.len()];
    let mut received = 0;
    while received < events.len() {
        let delivery = match tokio::time::timeout(STALL, consumer.next()).await {
            Err(_) => bail!("{received} of {} events read from the queue", events.len()),
            Ok(None) => bail!("the queue's consumer closed"),
            Ok(Some(delivery)) => delivery?,
        };
        received += 1;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default();
        if refused.contains_key(id.as_str()) {
            bail!("a badly signed event was enqueued: {id}");
        }
        let Some(&i) = wanted.get(id.as_str()) else {
            bail!("an unknown message in the webhooks queue: message_id {id:?}");
        };
        if seen[i] {
            bail!("event {id} was enqueued twice");
        }
        if delivery.data != events[i].body.as_ref() {
            bail!("event {id} was not enqueued byte for byte");
        }
        seen[i] = true;
    }
    // A straggler would be a duplicate or a refused event.
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        let extra = extra?;
        bail!(
            "a message beyond the accepted events: message_id {:?}",
            extra.properties.message_id()
        );
    }
    channel
        .basic_cancel(
            "pluspay-bench-check".into(),
            lapin::options::BasicCancelOptions::default(),
        )
        .await?;
    let left = queue_depth(channel, names).await?;
    if left != 0 {
        bail!("{left} messages left in the webhooks queue after reading every accepted one");
    }
    Ok(())
}

async fn queue_depth(channel: &lapin::Channel, names: &Names) -> anyhow::Result<u32> {
    let queue = channel
        .queue_declare(
            names.webhooks_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue.message_count())
}

/// The run's queues and exchanges, so that repeated runs leave nothing behind on the broker.
/// Each on a channel of its own: a failed delete closes its channel, not the others'. Failures
/// are reported, not fatal.
async fn delete_namespace(connection: &lapin::Connection, names: &Names) {
    let queues = [
        &names.webhooks_queue,
        &names.commands_queue,
        &names.dead_queue,
    ];
    let exchanges = [
        &names.webhooks_exchange,
        &names.commands_exchange,
        &names.results_exchange,
        &names.events_exchange,
        &names.dead_exchange,
    ];
    for (name, is_queue) in queues
        .into_iter()
        .map(|q| (q, true))
        .chain(exchanges.into_iter().map(|e| (e, false)))
    {
        let deleted = tokio::time::timeout(STALL, async {
            let channel = connection.create_channel().await?;
            if is_queue {
                channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            } else {
                channel
                    .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
            }
            let _ = channel.close(200, "bye".into()).await;
            Ok::<_, lapin::Error>(())
        })
        .await;
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("webhooks: WARNING: cannot delete {name}: {e}"),
            Err(_) => eprintln!("webhooks: WARNING: deleting {name} timed out"),
        }
    }
}

// ---------------------------------------------------------------- /proc
