//! The `pluspay` command line (docs/CONTRACT.md §3).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{LogFormat, Settings};
use crate::domain::outcome::{CommandResult, Status};

#[derive(Parser, Debug)]
#[command(
    name = "pluspay",
    version,
    about = "The money engine behind the Plus Pay wallet"
)]
pub struct Cli {
    /// Settings file [default: config/pluspay.toml, if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Worker and webhook listener in one process (the local default), and the operator
    /// console when `console.listen` is set.
    Run,
    /// The command worker alone.
    Worker,
    /// The Ping++ webhook listener alone.
    Webhooks,
    /// Apply migrations/ to the database (idempotent).
    Migrate,
    /// Publish one command, wait for its result and print it. Exit 0 succeeded, 1 rejected.
    Send {
        /// Command type, e.g. transfer
        #[arg(value_name = "TYPE")]
        kind: String,
        /// The acting user's id
        #[arg(long)]
        user: i64,
        /// The command's data, a JSON object
        #[arg(long)]
        data: Option<String>,
        /// Idempotency key [default: a new UUID]
        #[arg(long)]
        id: Option<String>,
        /// Seconds to wait for the result
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// The operator console on `console.listen` (see docs/OPERATIONS.md).
    Console {
        #[command(subcommand)]
        action: Option<ConsoleAction>,
    },
    /// Cash requests across users.
    Cashes {
        #[command(subcommand)]
        action: CashesAction,
    },
    /// Check the ledger's invariants; print a JSON report; exit 1 if one fails.
    Audit {
        /// Check only what changed since the last check, as the worker does every
        /// `metrics.ledger_check_secs`, and move its point (the report's `scope` says which
        /// check ran: the first one is the full check).
        #[arg(long)]
        incremental: bool,
    },
    /// Recompute every account's hash chain (versions, balances after, hashes, heads); print
    /// a JSON report; exit 1 if one is broken.
    Verify {
        /// Only what was posted since the last incremental verification, from each account's
        /// last verified entry, and move its point (the report's `scope` says which ran: the
        /// first one is the full verification).
        #[arg(long)]
        incremental: bool,
    },
    /// Record the Merkle root of a day that has ended over every user account's head, as the
    /// worker does once a day, and publish `ledger.root`; print it as JSON. Exit 1 if the
    /// day's root was recorded already.
    Root {
        /// The day (UTC), YYYY-MM-DD [default: yesterday]
        #[arg(long)]
        day: Option<String>,
    },
    /// Dead letters: list, show, replay or discard them (docs/OPERATIONS.md).
    Dead {
        #[command(subcommand)]
        action: DeadCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeadCommand {
    /// Print up to N dead letters, oldest first, one JSON object a line, none consumed.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print one dead letter as JSON; exit 1 if there is none with that id.
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Publish it again as a command, wait for its result and print it; exit 1 if there is
    /// none with that id.
    Replay {
        #[arg(value_name = "ID")]
        id: String,
        /// Seconds to wait for the result
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Who replays it [default: $USER, else the broker user]
        #[arg(long)]
        operator: Option<String>,
    },
    /// Remove it, recording who, when and why in the database; exit 1 if there is none with
    /// that id.
    Discard {
        #[arg(value_name = "ID")]
        id: String,
        /// Why it is discarded (required)
        #[arg(long)]
        note: String,
        /// Who discards it [default: $USER, else the broker user]
        #[arg(long)]
        operator: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConsoleAction {
    /// Read a password from standard input (its first line) and print its argon2id hash, for
    /// `console.operators`' `password_hash`.
    HashPassword,
}

#[derive(Subcommand, Debug)]
pub enum CashesAction {
    /// The cash requests waiting for an operator, oldest first, as a JSON array (accounts
    /// masked).
    Pending {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// Exit codes beyond 0 and 1: something went wrong before an answer could be given.
const EXIT_ERROR: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("pluspay: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pluspay: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(dispatch(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            eprintln!("pluspay: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run | Command::Worker | Command::Webhooks => {
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            crate::metrics::install(settings.metrics.listen)?;
            crate::service::spawn_watchdog(shutdown.clone());
            let stopping = shutdown.clone();
            tokio::spawn(async move {
                stopping.cancelled().await;
                crate::service::stopping();
            });
            match command {
                Command::Worker => {
                    info!(?settings, "starting the worker");
                    crate::worker::run_with_readiness(settings, shutdown, crate::service::ready)
                        .await?;
                }
                Command::Webhooks => {
                    info!(?settings, "starting the webhook listener");
                    crate::webhook::run_with_readiness(settings, shutdown, crate::service::ready)
                        .await?;
                }
                _ => {
                    info!(?settings, "starting the worker and the webhook listener");
                    run_all(settings, shutdown).await?;
                }
            }
            info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let mut client = crate::db::connect(&settings.database.url).await?;
            let applied = crate::db::migrate::migrate(&mut client).await?;
            println!("{}", serde_json::json!({ "applied": applied }));
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            kind,
            user,
            data,
            id,
            timeout,
        } => {
            let request = crate::send::SendRequest {
                kind,
                user_id: user,
                data,
                id,
                timeout: Duration::from_secs(timeout),
            };
            let body = crate::send::send(&settings, &request).await?;
            println!("{body}");
            let succeeded = serde_json::from_str::<CommandResult>(&body)
                .map(|r| r.status == Status::Succeeded)
                .unwrap_or(false);
            Ok(if succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Console {
            action: Some(ConsoleAction::HashPassword),
        } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!("no password on standard input");
            }
            println!("{}", crate::console::auth::hash_password(password)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Console { action: None } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            crate::service::spawn_watchdog(shutdown.clone());
            info!(console = ?settings.console, "starting the operator console");
            crate::console::run_with_readiness(settings, shutdown, crate::service::ready).await?;
            crate::service::stopping();
            Ok(ExitCode::SUCCESS)
        }
        Command::Cashes {
            action: CashesAction::Pending { limit },
        } => {
            let pool = crate::db::pool(&settings.database)?;
            let mut client = pool.get().await?;
            let tx = client.build_transaction().read_only(true).start().await?;
            let pending = crate::db::console::pending_cashes(&tx, limit).await?;
            tx.commit().await?;
            let listed: Vec<serde_json::Value> = pending
                .iter()
                .map(|cash| {
                    let mut json = serde_json::to_value(cash).expect("a cash request serializes");
                    json["account"] = crate::domain::cash::mask_account(&cash.account).into();
                    json
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&listed)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { incremental } => {
            let mut client = crate::db::connect(&settings.database.url).await?;
            let started = std::time::Instant::now();
            let report = if incremental {
                crate::db::audit::run_incremental(&mut client).await?
            } else {
                crate::db::audit::run(&mut client).await?
            };
            let took = started.elapsed();
            tracing::info!(
                scope = report.scope,
                ms = took.as_secs_f64() * 1e3,
                "ledger checked"
            );
            if let Err(e) = crate::db::audit::record(&client, &report, took).await {
                tracing::warn!(error = %e, "could not record the check for the console");
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Verify { incremental } => {
            let mut client = crate::db::connect(&settings.database.url).await?;
            let report = if incremental {
                crate::db::chains::verify_incremental(&mut client).await?
            } else {
                crate::db::chains::verify(&mut client).await?
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Root { day } => {
            let pool = crate::db::pool(&settings.database)?;
            let mut client = pool.get().await?;
            let day = match day {
                Some(day) => {
                    let valid = crate::domain::query::proof_day(
                        serde_json::json!({ "day": day })
                            .as_object()
                            .expect("an object"),
                    );
                    if valid.is_err() || !crate::db::chains::day_ended(&client, &day).await? {
                        anyhow::bail!("--day {day}: not a day that has ended (YYYY-MM-DD, UTC)");
                    }
                    day
                }
                None => match crate::db::chains::day_to_record(&client).await? {
                    Some(day) => day,
                    None => {
                        eprintln!("pluspay: yesterday's root is recorded already");
                        return Ok(ExitCode::from(1));
                    }
                },
            };
            match crate::db::chains::record_root(&mut client, &day).await? {
                Some(recorded) => {
                    println!(
                        "{}",
                        serde_json::json!({
                            "day": recorded.day,
                            "root": hex::encode(recorded.root),
                            "leaves": recorded.leaves,
                        })
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("pluspay: the root of {day} is recorded already (or being recorded)");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Dead { action } => dead(action, &settings).await,
    }
}

/// `pluspay dead ...`: exit 0 done, 1 no dead letter with that id, 2 an error.
async fn dead(action: DeadCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let found = |found: bool| {
        if found {
            ExitCode::SUCCESS
        } else {
            eprintln!("pluspay: no such dead letter");
            ExitCode::from(1)
        }
    };
    match action {
        DeadCommand::List { limit } => {
            for letter in crate::dead_letters::list(settings, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadCommand::Show { id } => {
            let letter = crate::dead_letters::show(settings, &id).await?;
            if let Some(letter) = &letter {
                println!("{}", serde_json::to_string_pretty(letter)?);
            }
            Ok(found(letter.is_some()))
        }
        DeadCommand::Replay {
            id,
            timeout,
            operator,
        } => {
            let operator = operator_name(operator, settings)?;
            let result =
                crate::dead_letters::replay(settings, &id, &operator, Duration::from_secs(timeout))
                    .await?;
            if let Some(result) = &result {
                println!("{result}");
            }
            Ok(found(result.is_some()))
        }
        DeadCommand::Discard { id, note, operator } => {
            let operator = operator_name(operator, settings)?;
            let discarded = crate::dead_letters::discard(settings, &id, &operator, &note).await?;
            Ok(found(discarded))
        }
    }
}

/// `--operator`, else the login name ($USER), else the user of the first broker URL.
fn operator_name(given: Option<String>, settings: &Settings) -> anyhow::Result<String> {
    // A name given is used as it is (and refused if blank); only the defaults are skipped.
    if let Some(given) = given {
        return Ok(given);
    }
    std::env::var("USER")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            settings
                .amqp
                .broker_urls()
                .first()
                .and_then(|url| crate::amqp::url_user(url))
        })
        .ok_or_else(|| anyhow::anyhow!("--operator is required (no $USER, no broker user)"))
}

/// The worker and the webhook listener side by side: both stop on `shutdown`, and when either
/// ends (an error at start-up, say) the other is stopped gracefully too. Returns the error of
/// the part that failed (the worker's if both did).
pub async fn run_all(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A child token, so that one part ending stops the other without cancelling the caller's.
    let both = shutdown.child_token();
    let stop_other_on_exit = |part: &'static str, result: anyhow::Result<()>| {
        both.cancel();
        result.map_err(|e| e.context(part))
    };
    // Ready for systemd once both parts are.
    let parts_ready = std::sync::atomic::AtomicUsize::new(0);
    let part_ready = || {
        if parts_ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            crate::service::ready();
        }
    };
    let console = settings.console.listen.is_some();
    let (worker, webhooks, console) = tokio::join!(
        async {
            let result =
                crate::worker::run_with_readiness(settings.clone(), both.clone(), part_ready).await;
            stop_other_on_exit("worker", result)
        },
        async {
            let result =
                crate::webhook::run_with_readiness(settings.clone(), both.clone(), part_ready)
                    .await;
            stop_other_on_exit("webhook listener", result)
        },
        async {
            if !console {
                return Ok(());
            }
            let result = crate::console::run(settings.clone(), both.clone()).await;
            stop_other_on_exit("console", result)
        },
    );
    worker.and(webhooks).and(console)
}

/// SIGTERM (systemd) and SIGINT (a terminal) both ask for a graceful stop.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
