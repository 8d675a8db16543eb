//! `wharf check-config`: what `serve` would trip over, found without
//! serving. The file must parse and pass every value check
//! (`config::load`), and each target's plugin must load the way a runtime
//! register loads it: compile, type-check against the supported
//! `wharf:target` versions, instantiate in its sandbox and `init` with its
//! config. Nothing is bound, no queue is contacted and no log is opened.
//!
//! Exit 0 when everything passes, 64 (the config error code) otherwise,
//! also when nobody reads stdout (`check-config … | true`). Human output by
//! default: the result on stdout, each problem as `error: <file>: <key>: …`
//! on stderr; `json` prints one object on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::output::{error_line, is_broken_pipe, outln};
use crate::config::{self, ConfigError, DEFAULT_TARGET, LoadedNamespace, LoadedTarget};
use crate::plugin::{PluginError, Runtime};

/// One problem: the dotted key, what is wrong, and the line when known.
#[derive(Debug, Serialize)]
struct Problem {
    key: String,
    problem: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<String>,
}

/// A target whose plugin loaded and initialised.
#[derive(Debug, Serialize)]
struct TargetOk {
    namespace: String,
    target: String,
    plugin: PathBuf,
    digest: String,
    wit: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    file: PathBuf,
    ok: bool,
    namespaces: usize,
    targets: Vec<TargetOk>,
    errors: Vec<Problem>,
}

/// Runs the checks on `file`; what `wharf check-config` exits with.
pub fn run(file: &Path, exit_config: u8, json: bool) -> anyhow::Result<ExitCode> {
    let report = check(file)?;
    let printed = if json { print_json(&report) } else { print_human(&report) };
    // The verdict is the exit code, whether or not stdout is read.
    match printed {
        Err(e) if !is_broken_pipe(&e) => Err(e),
        _ => Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(exit_config) }),
    }
}

fn check(file: &Path) -> anyhow::Result<Report> {
    let mut report = Report {
        file: file.to_path_buf(),
        ok: false,
        namespaces: 0,
        targets: Vec::new(),
        errors: Vec::new(),
    };
    match config::load(file) {
        Err(e) => report.errors.push(problem(e)),
        Ok(cfg) => {
            report.namespaces = cfg.namespaces.len();
            let plugins = check_plugins(&cfg)?;
            for result in plugins {
                match result {
                    Ok(t) => report.targets.push(t),
                    Err(p) => report.errors.push(p),
                }
            }
        }
    }
    report.ok = report.errors.is_empty();
    Ok(report)
}

fn problem(e: ConfigError) -> Problem {
    Problem { key: e.key, problem: e.problem, line: e.line }
}

fn print_json(r: &Report) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(r)?)?;
    Ok(())
}

fn print_human(r: &Report) -> anyhow::Result<()> {
    for e in &r.errors {
        let line = e.line.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
        error_line(&format!("{}: {}: {}{line}", r.file.display(), e.key, e.problem), None);
    }
    if !r.ok {
        return Ok(());
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    outln!(
        "{}: ok ({}, {}; every plugin loaded and initialised)",
        r.file.display(),
        plural(r.namespaces, "namespace"),
        plural(r.targets.len(), "target")
    )?;
    for t in &r.targets {
        outln!("  {}/{}: {} ({}, {}): init ok", t.namespace, t.target, t.plugin.display(), t.wit, t.digest)?;
    }
    Ok(())
}

/// Loads and initialises every target's plugin, in namespace and target
/// order; one result per target.
fn check_plugins(cfg: &config::Loaded) -> anyhow::Result<Vec<Result<TargetOk, Problem>>> {
    // serve's own compile cache when the data dir exists (checking warms
    // it); otherwise a private one, removed afterwards.
    let existing = cfg.server.data_dir.is_dir() || cfg.server.plugin_cache_dir.is_some();
    let cache = match existing {
        true => cfg.server.plugin_cache(),
        false => std::env::temp_dir().join(format!("wharf-check-config-{}", std::process::id())),
    };
    let runtime = Runtime::new(&cache)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = Vec::new();
    for ns in cfg.namespaces.values() {
        for t in &ns.targets {
            out.push(rt.block_on(check_target(&runtime, ns, t)));
        }
    }
    if !existing {
        let _ = std::fs::remove_dir_all(&cache);
    }
    Ok(out)
}

async fn check_target(
    runtime: &Runtime,
    ns: &LoadedNamespace,
    t: &LoadedTarget,
) -> Result<TargetOk, Problem> {
    let table = match ns.targets.len() == 1 && t.name == DEFAULT_TARGET {
        true => "target".to_string(),
        false => format!("targets.{}", t.name),
    };
    // A failed `init` is about the target's `config`; anything else about its plugin.
    let fail_at = |key: &str, why: String| Problem {
        key: format!("namespaces.{}.{table}.{key}", ns.name),
        problem: format!("namespace {}, target {}: {why}", ns.name, t.name),
        line: None,
    };
    let fail = |why: String| fail_at("plugin", why);
    let path = &t.target.plugin;
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    // The same steps as a runtime register (`control::install`).
    let plugin = runtime
        .load_bytes(&bytes, &path.display().to_string(), t.plugin_settings(&ns.name))
        .map_err(|e| fail(e.to_string()))?;
    plugin.validate().await.map_err(|e| match e {
        PluginError::Init(_) => fail_at("config", e.to_string()),
        e => fail(e.to_string()),
    })?;
    Ok(TargetOk {
        namespace: ns.name.clone(),
        target: t.name.clone(),
        plugin: path.clone(),
        digest: plugin.digest.clone(),
        wit: plugin.wit(),
    })
}
