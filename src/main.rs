//! The `switchboard` binary: parse the command line, load settings, run.

use std::process::ExitCode;

/// mimalloc: less memory kept after bursts and cheaper small allocations on
/// the token path than glibc's malloc (docs/BENCHMARKS.md, "Allocator").
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use switchboard::{
    app::{self, App},
    config::Config,
    import::pinecone as import,
    telemetry,
};

/// Called by each runtime worker as it goes idle. mimalloc takes back memory
/// freed on another thread (a socket's buffers, dropped by whichever worker
/// closed it) only when the thread that allocated it collects, and an idle
/// worker does not: after 19,000 sockets closed, ~70 MiB stayed resident
/// (docs/BENCHMARKS.md, "Issue 19, fourth pass"). At most once a second each.
#[cfg(not(feature = "system-alloc"))]
#[expect(unsafe_code, reason = "mimalloc's collect has no safe binding")]
fn on_worker_park() {
    use std::{
        cell::Cell,
        time::{Duration, Instant},
    };
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect takes no pointer; it walks this thread's heap and
    // mimalloc's own arenas under mimalloc's locks.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

#[cfg(feature = "system-alloc")]
fn on_worker_park() {}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(on_worker_park)
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Parser)]
#[command(version, about = "Real-time AI chat server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and WebSocket on one port (migrates first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Check the settings, print every problem, exit non-zero if there is one.
    ValidateConfig,
    /// Administration: admin rights, plans, disabling users (docs/OPERATIONS.md).
    Admin {
        #[command(subcommand)]
        cmd: switchboard::admin::AdminCommand,
    },
    /// Run a background worker.
    Worker {
        #[command(subcommand)]
        kind: WorkerKind,
    },
    /// Import vectors from another store into a workspace (docs/RAG.md).
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// Pinecone vectors from a JSONL export or the REST API; safe to re-run.
    Pinecone {
        /// The workspace the vectors become documents of.
        #[arg(long)]
        workspace: uuid::Uuid,
        /// A JSONL export, one `{id, values, metadata}` per line.
        #[arg(long, conflicts_with = "api_url")]
        file: Option<std::path::PathBuf>,
        /// The index host, e.g. https://my-index-abc.svc.pinecone.io
        #[arg(long, required_unless_present = "file")]
        api_url: Option<String>,
        #[arg(long, env = "PINECONE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
    },
}

#[derive(Subcommand)]
enum WorkerKind {
    /// Consume the email queue and send over SMTP (docs/EMAIL.md).
    Email,
}

/// `validate-config`: every problem, even past a value that cannot be read,
/// and a warning for each `SWITCHBOARD_*` variable that names no setting.
fn validate_config() -> ExitCode {
    let env = match switchboard::config::AppEnv::from_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("1 configuration problem(s):\n  - {e}");
            return ExitCode::FAILURE;
        }
    };
    let (problems, warnings) = switchboard::config::check::report(
        std::path::Path::new("config"),
        env,
        std::env::vars().collect(),
    );
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if problems.is_empty() {
        println!("configuration OK ({})", env.as_str());
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{} configuration problem(s) ({}):",
        problems.len(),
        env.as_str()
    );
    for p in problems {
        eprintln!("  - {p}");
    }
    ExitCode::FAILURE
}

async fn run() -> ExitCode {
    // `.env` as `.env.example` implies; variables already set win (dotenvy
    // never overrides), so the shell and the service manager keep the last word.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("warning: .env not loaded: {e}");
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::ValidateConfig) {
        return validate_config();
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::ValidateConfig => validate_config(),
        Command::Migrate => {
            telemetry::init_tracing(config.server.log_format);
            let result = async { app::migrate(&app::db_pool(&config)?).await }.await;
            match result {
                Ok(()) => {
                    tracing::info!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "migration failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin { cmd } => admin(&config, cmd).await,
        Command::Worker {
            kind: WorkerKind::Email,
        } => {
            telemetry::init_tracing(config.server.log_format);
            match switchboard::email::run_worker(config, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("email worker failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Import { from } => {
            telemetry::init_tracing(config.server.log_format);
            run_import(&config, from).await
        }
        Command::Serve => {
            let traces = telemetry::init_with_traces(&config);
            // Held to the end: dropping it sends the reports still queued.
            let _reports = switchboard::error_reports::init(&config);
            let result = match App::build(config).await {
                Ok(app) => {
                    tracing::info!("Switchboard listening on http://{}", app.local_addr());
                    app.run_until(shutdown_signal())
                        .await
                        .map_err(|e| format!("server failed: {e}"))
                }
                Err(e) => Err(format!("cannot start: {e}")),
            };
            if let Some(traces) = traces {
                traces.shutdown().await;
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `switchboard admin …`: the work is in `switchboard::admin`.
async fn admin(config: &Config, cmd: switchboard::admin::AdminCommand) -> ExitCode {
    let result = async {
        let db = app::db_pool(config).map_err(|e| e.to_string())?;
        switchboard::admin::run_cli(&db, cmd)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `switchboard import pinecone`: prints the counts as JSON.
async fn run_import(config: &Config, from: ImportFrom) -> ExitCode {
    let ImportFrom::Pinecone {
        workspace,
        file,
        api_url,
        api_key,
        namespace,
    } = from;
    let source = match (file, api_url) {
        (Some(path), _) => import::Source::Jsonl(path),
        (None, Some(base_url)) => import::Source::Api {
            base_url,
            api_key: switchboard::config::Secret::new(api_key.unwrap_or_default()),
            namespace,
        },
        (None, None) => return ExitCode::FAILURE,
    };
    let result = async {
        let db = app::db_pool(config)?;
        app::migrate(&db).await?;
        let counts = import::import(&db, workspace, source, &mut |c| {
            tracing::info!(
                read = c.read,
                imported = c.imported,
                already_present = c.already_present,
                "import progress"
            );
        })
        .await?;
        Ok::<_, Box<dyn std::error::Error>>(counts)
    }
    .await;
    match result {
        Ok(c) => {
            println!("{}", serde_json::json!(c));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("import failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
