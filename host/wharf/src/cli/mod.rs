//! The `wharf` command line: the sidecar (`serve`) and its operator commands.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

use crate::adapters::budget::ConnectionBudget;
use crate::adapters::listener::{ReadTimeouts, serve_http};
use crate::adapters::tls::Tls;
use crate::adapters::{grpc, http as api};
use crate::services::node::Node;
mod check;
mod log;
pub(crate) mod output;
mod plugin_new;
mod plugin_test;
mod remote;
mod replica;
mod rewind;
mod table;

use self::output::outln;
use self::{log as cmd_log, remote as cmd_remote};
use crate::services::{control, node};
use crate::{config, plugin};

/// Exit code for a configuration error (EX_CONFIG is 78; the issue asks for
/// EX_USAGE, 64, which is what scripts expect from us).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(name = "wharf", version, about = "Write-ahead-log sidecar with sandboxed Wasm targets")]
struct Cli {
    /// Log format on stderr. Levels come from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the sidecar: accept writes, make them durable, deliver them.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = "wharf.toml")]
        config: PathBuf,
        /// `processor` takes writes only, `consumer` delivers only, `all`
        /// does both. On the embedded log, run one processor and one
        /// consumer with the same namespaces and server.data_dir (start the
        /// processor first); on a Kafka or SQS namespace, any number, each
        /// with its own data_dir.
        #[arg(long, value_enum, default_value_t = node::Role::All)]
        role: node::Role,
        /// Once every listener is bound, write `{"pid", "http", "grpc"}`
        /// (the bound addresses) to this file, atomically. With port 0 in
        /// the config the OS picks free ports and this says which.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Check a config file and exit (0 when valid, 64 otherwise).
    CheckConfig {
        /// The config file.
        #[arg(long, short, default_value = "wharf.toml")]
        config: PathBuf,
        /// Print one JSON object (`ok`, `targets`, `errors`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and repair the embedded log.
    #[command(subcommand)]
    Log(cmd_log::LogCmd),
    /// Check plugin files; register, roll back or remove a running sidecar's plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Show a running sidecar's protocol state: per partition head, durable
    /// sequence, watermark, backlog, in-flight, retries, breaker, halts.
    Status {
        #[command(flatten)]
        server: cmd_remote::Server,
    },
    /// Re-read the config of a running sidecar (same as SIGHUP).
    Reload {
        #[command(flatten)]
        server: cmd_remote::Server,
    },
    /// Inspect, replay and purge a namespace's dead-letter queue.
    Dlq {
        #[command(flatten)]
        server: cmd_remote::Server,
        #[command(subcommand)]
        cmd: cmd_remote::DlqCmd,
    },
    /// Operate a running sidecar's targets (resume one its plugin halted).
    Target {
        #[command(flatten)]
        server: cmd_remote::Server,
        #[command(subcommand)]
        cmd: replica::TargetCmd,
    },
    /// Re-deliver retained history to a namespace's targets (all, or
    /// --target), from a time, per-partition sequences or the earliest
    /// retained record; shows progress until it is done.
    Rewind {
        #[command(flatten)]
        server: cmd_remote::Server,
        #[command(flatten)]
        args: rewind::RewindArgs,
    },
    /// Replication: status of shipping targets and replica namespaces,
    /// resume a halted replica.
    Replica {
        #[command(flatten)]
        server: cmd_remote::Server,
        #[command(subcommand)]
        cmd: replica::ReplicaCmd,
    },
}

#[derive(Subcommand, Debug)]
enum PluginCmd {
    /// Manage a running sidecar's plugins (register, rollback, remove).
    #[command(flatten)]
    Admin(cmd_remote::PluginAdmin),
    /// Print a plugin's WIT version, what it says it is (`describe`),
    /// exports and imports; exit 1 if the host cannot load it or its
    /// `describe` fails.
    Check {
        /// The plugin: a Wasm component (`.wasm`).
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Scaffold a plugin project (Rust, Python or JavaScript) outside the repo.
    New(plugin_new::NewArgs),
    /// Run a plugin through a conformance check without a sidecar; exit 1 if it fails.
    Test(plugin_test::TestArgs),
}

/// The `wharf` command tree (for tests that walk every argument).
pub fn command() -> clap::Command {
    Cli::command()
}

impl Cmd {
    /// Whether the user asked for JSON (errors are then JSON too).
    fn json(&self) -> bool {
        match self {
            Cmd::Serve { .. } | Cmd::CheckConfig { .. } => false,
            Cmd::Log(cmd) => cmd.json(),
            Cmd::Plugin(PluginCmd::Check { json, .. }) => *json,
            Cmd::Plugin(PluginCmd::Test(args)) => args.json,
            Cmd::Plugin(PluginCmd::New(_)) => false,
            Cmd::Plugin(PluginCmd::Admin(cmd)) => cmd.json(),
            Cmd::Status { server }
            | Cmd::Reload { server }
            | Cmd::Dlq { server, .. }
            | Cmd::Target { server, .. }
            | Cmd::Rewind { server, .. }
            | Cmd::Replica { server, .. } => server.json,
        }
    }
}

/// Parses the command line and runs it; what `wharf` exits with.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operator commands log only warnings unless RUST_LOG says otherwise:
    // their output is what they print.
    let default_level = if matches!(cli.cmd, Cmd::Serve { .. }) { "info" } else { "warn" };
    init_tracing(cli.log_format, default_level);
    let json = cli.cmd.json();
    let result = match cli.cmd {
        Cmd::Serve { config, role, addr_file } => serve(config, role, addr_file),
        Cmd::CheckConfig { config, json } => check::run(&config, EXIT_CONFIG, json),
        Cmd::Log(cmd) => {
            // Salvage changes data: it leaves an audit line in the data dir.
            let salvaged = match &cmd {
                cmd_log::LogCmd::Salvage { partition_dir, .. } => Some(partition_dir.clone()),
                _ => None,
            };
            let result = cmd_log::run(cmd);
            if let Some(dir) = salvaged {
                let data_dir = dir.parent().and_then(|p| p.parent()).unwrap_or(&dir).to_path_buf();
                let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
                let outcome = match &result {
                    Ok(code) if *code == ExitCode::SUCCESS => Ok(serde_json::json!({})),
                    Ok(_) => Err("salvage reported a problem"),
                    Err(_) => Err("salvage failed"),
                };
                control::audit(&data_dir, &actor, "log.salvage", &dir.display().to_string(), outcome);
            }
            result
        }
        Cmd::Plugin(PluginCmd::Check { file, json }) => plugin_check(&file, json),
        Cmd::Plugin(PluginCmd::Admin(cmd)) => cmd_remote::plugin_admin(cmd),
        Cmd::Plugin(PluginCmd::New(args)) => plugin_new::run(args),
        Cmd::Plugin(PluginCmd::Test(args)) => plugin_test::run(args),
        Cmd::Status { server } => cmd_remote::status(&server),
        Cmd::Reload { server } => cmd_remote::reload(&server),
        Cmd::Dlq { server, cmd } => cmd_remote::dlq(&server, cmd),
        Cmd::Target { server, cmd } => replica::target(&server, cmd),
        Cmd::Replica { server, cmd } => replica::replica(&server, cmd),
        Cmd::Rewind { server, args } => rewind::rewind(&server, args),
    };
    match result {
        Ok(code) => code,
        // `error: …` (and a hint) on stderr, or JSON with --json; quiet on
        // a closed pipe. See `output.rs`.
        Err(e) => output::report(&e, json),
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal, never in a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn serve(config_path: PathBuf, role: node::Role, addr_file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let handshake_timeout = Duration::from_millis(cfg.server.header_read_timeout_ms);
    let tls = cfg.server.tls.as_ref().map(|t| Tls::new(&config_path, t, handshake_timeout));
    let tls = match tls.transpose() {
        Ok(tls) => tls.map(Arc::new),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    // Host spans and their export, before anything is written or delivered.
    let spans = crate::otel::start(&cfg.server.tracing)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served = rt.block_on(async move {
        let node = Arc::new(Node::open(&cfg, &config_path, role)?);
        for ns in node.namespaces() {
            node.connect_queue(&ns).await?;
            control::activate(&node, &ns).await;
            node.start_delivery(&ns);
        }
        let budget = ConnectionBudget::new(cfg.server.max_connections);
        let stop = drain_on_signal(node.clone(), Duration::from_millis(cfg.server.drain_delay_ms));
        let grpc = match cfg.server.grpc {
            Some(addr) => {
                let tls = tls.as_ref().map(|t| t.grpc());
                Some(grpc::start(node.clone(), addr, budget.clone(), tls, stopped(stop.clone())).await?)
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(cfg.server.http)
            .await
            .with_context(|| format!("binding the HTTP API to {}", cfg.server.http))?;
        let http = listener.local_addr()?;
        if let Some(path) = &addr_file {
            write_addr_file(path, http, grpc.as_ref().map(|g| g.addr))?;
        }
        let grpc = grpc.map(|g| g.served);
        tracing::info!(%http, tls = tls.is_some(), data_dir = %cfg.server.data_dir.display(), max_connections = budget.max, "wharf serving");
        tokio::spawn(reload_on_sighup(node.clone(), tls.clone()));
        let timeouts = ReadTimeouts {
            header: Duration::from_millis(cfg.server.header_read_timeout_ms),
            body: Duration::from_millis(cfg.server.body_read_timeout_ms),
        };
        let drain = Duration::from_secs(10);
        let mut router = api::router(node.clone());
        if let Some(t) = &tls {
            // For the admin reload route (`adapters::admin`).
            router = router.layer(axum::Extension(t.clone()));
        }
        let http_tls = tls.as_ref().map(|t| t.http());
        serve_http(listener, router, budget, timeouts, http_tls, stopped(stop), drain).await;
        if let Some(calls) = grpc
            && tokio::time::timeout(Duration::from_secs(10), calls).await.is_err()
        {
            tracing::warn!("gRPC calls did not finish within 10 s");
        }
        tracing::info!("shutting down: draining delivery loops");
        node.shutdown();
        if tokio::time::timeout(Duration::from_secs(10), node.drain()).await.is_err() {
            tracing::warn!("delivery loops did not stop within 10 s; undelivered messages stay in the log");
        }
        node::mark_clean_stops(node.namespaces()).await;
        Ok(ExitCode::SUCCESS)
    });
    // After the last delivery attempt: flush the spans still queued.
    if let Some(spans) = spans {
        spans.shutdown();
    }
    served
}

/// `--addr-file`: the process and its bound addresses, for a supervisor
/// or test harness that let the OS pick the ports.
fn write_addr_file(path: &Path, http: SocketAddr, grpc: Option<SocketAddr>) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "pid": std::process::id(),
        "http": http.to_string(),
        "grpc": grpc.map(|a| a.to_string()),
    });
    crate::storage::atomic::replace(path, body.to_string().as_bytes())
        .with_context(|| format!("writing the address file {}", path.display()))
}

/// SIGHUP re-reads the config (see `control::reload`) and the TLS
/// certificate.
async fn reload_on_sighup(node: Arc<Node>, tls: Option<Arc<Tls>>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        let _guard = node.control.lock().await;
        let mut result = control::reload(&node).await;
        if let Ok(r) = &mut result {
            Tls::reload_into(tls.as_deref(), r);
        }
        match &result {
            Ok(r) => tracing::info!(?r, "config reloaded on sighup"),
            Err(e) => tracing::error!(error = %e, "config reload on sighup failed; nothing changed"),
        }
        let detail = result.as_ref().map(|r| serde_json::json!(r)).map_err(String::as_str);
        control::audit(
            &node.data_dir,
            "signal:SIGHUP",
            "config.reload",
            &node.config_path.display().to_string(),
            detail,
        );
    }
}

fn plugin_check(file: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let cache = std::env::temp_dir().join("wharf-plugin-check-cache");
    let runtime = plugin::Runtime::new(&cache)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(runtime.inspect(file))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        use std::fmt::Write as _;
        let mut out = String::new();
        writeln!(out, "plugin   {}", file.display())?;
        writeln!(out, "digest   {}", report.digest)?;
        match report.wit {
            Some(wit) => writeln!(out, "wit      {wit}")?,
            None => writeln!(
                out,
                "wit      none supported (this host loads {})",
                plugin::SUPPORTED_WIT.join(", ")
            )?,
        }
        match (&report.describe, report.wit, &report.problem) {
            (Some(info), ..) => writeln!(out, "describe {} {}", info.name, info.version)?,
            (None, Some(wit), None) => writeln!(out, "describe (none: {wit} predates describe)")?,
            _ => {}
        }
        writeln!(out, "exports  {}", report.exports.join(", "))?;
        writeln!(out, "imports")?;
        for i in &report.imports {
            writeln!(out, "  {i}")?;
        }
        if let Some(p) = &report.problem {
            writeln!(out, "problem  {p}")?;
        }
        outln!("{}", out.trim_end())?;
    }
    Ok(if report.problem.is_none() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// On SIGTERM or Ctrl-C: `/readyz` answers 503 at once, then after
/// `delay` the returned watch turns true and the listeners stop.
fn drain_on_signal(node: Arc<Node>, delay: Duration) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        node.begin_drain();
        tracing::info!(delay_ms = delay.as_millis() as u64, "draining: /readyz answers 503; still serving");
        tokio::time::sleep(delay).await;
        let _ = tx.send(true);
    });
    rx
}

/// Completes when `stop` turns true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
