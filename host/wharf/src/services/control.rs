//! The control plane: which plugin each namespace runs, changed while
//! messages flow, and an audit line for every admin action.
//!
//! A new plugin is validated before it takes over: it must compile,
//! implement a supported `wharf:target` version, and `init` with the
//! namespace's config. Otherwise the old plugin stays and the caller gets the
//! reason. The switch itself is a value sent on the namespace's plugin slot;
//! each delivery loop picks it up between two calls, so the calls in flight
//! finish on the old plugin and nothing is delivered twice because of it.
//!
//! Plugins registered at runtime are kept per target, in
//! `<data_dir>/<ns>/plugin/` (target `default`) or
//! `<data_dir>/<ns>/targets/<name>/plugin/`
//! (`<sha256>.wasm` plus `state.json` naming the current and the previous
//! digest), so a restart keeps them and `rollback` has something to go back
//! to. The config file's plugin is used when no runtime registration exists,
//! and again after a reload that finds the config's plugin changed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::engine::namespace::Namespace;
use crate::engine::target::{PluginState as TargetPluginState, TargetRt};
use crate::plugin::PluginSettings;
use crate::services::node::Node;

/// Why a register, rollback or remove failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The plugin did not pass validation (or there is none to go back
    /// to); nothing changed.
    #[error("{0}; the old plugin stays")]
    Rejected(String),
    /// A registration or control file could not be read or written: a full
    /// disk or no descriptor left is temporary (`disk_full`,
    /// `too_many_open_files`, like the log), anything else internal.
    #[error("{what}: {source}")]
    Storage {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ControlError {
    fn storage(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| ControlError::Storage { what, source }
    }
}

impl From<ControlError> for crate::error::Error {
    fn from(e: ControlError) -> Self {
        use crate::error::{Error, ErrorKind};
        match &e {
            ControlError::Rejected(_) => {
                Error::new(ErrorKind::Unprocessable, "plugin_invalid", e.to_string())
            }
            ControlError::Storage { what, source } => match wharf_log::temporary(source) {
                Some(t) => Error::temporary(t, what, source),
                None => Error::new(ErrorKind::Internal, "plugin_store_failed", e.to_string()),
            },
        }
    }
}

/// `state.json` of a namespace's registered plugins.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginState {
    /// Hex digest of the current plugin, or `None` when removed.
    pub current: Option<String>,
    pub previous: Option<String>,
    /// Digest of the config file's plugin when it was last applied.
    pub config_digest: Option<String>,
    /// True once an operator removed the plugin.
    #[serde(default)]
    pub removed: bool,
}

fn plugin_dir(target: &TargetRt) -> PathBuf {
    target.dir.join("plugin")
}

fn load_state(target: &TargetRt) -> PluginState {
    std::fs::read(plugin_dir(target).join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes a file crash-safely: temp file, fsync, rename, directory fsync.
/// A failure (a full disk) removes the temp file, so nothing is left.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

fn save_state(target: &TargetRt, st: &PluginState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
    write_atomic(&plugin_dir(target).join("state.json"), &bytes)
}

fn settings(ns: &Namespace, target: &TargetRt) -> PluginSettings {
    target.cfg.plugin_settings(&ns.name)
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Validates `bytes` as the target's plugin and, if it passes, makes it
/// current. Returns the digest. On failure nothing changes.
pub async fn install(
    node: &Node,
    ns: &Namespace,
    target: &TargetRt,
    bytes: &[u8],
    label: &str,
) -> Result<String, String> {
    let rejected = |e: crate::plugin::PluginError| {
        node.runtime.forget(bytes);
        e.to_string()
    };
    let plugin = node.runtime.load_bytes(bytes, label, settings(ns, target)).map_err(rejected)?;
    plugin.validate().await.map_err(rejected)?;
    let (digest, wit) = (plugin.digest.clone(), plugin.wit());
    target.set_plugin_status(|st| {
        st.path = label.to_string();
        st.digest = Some(digest.clone());
        st.wit = Some(wit);
        st.state = TargetPluginState::Ready;
        st.reason = None;
    });
    target.slot.send_replace(Some(plugin));
    tracing::info!(namespace = %ns.name, target = %target.name, %digest, wit, source = label, "plugin installed");
    Ok(digest)
}

/// What a register did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// `sha256:<hex>` of the plugin now current.
    pub digest: String,
    /// It was current and delivering already: nothing changed (the
    /// rollback target is kept).
    pub already_current: bool,
}

/// Registers a plugin at runtime and remembers it across restarts. The
/// plugin that is current and ready already is left alone; registering it
/// again after a quarantine or a failure starts it afresh.
pub async fn register(
    node: &Node,
    ns: &Namespace,
    target: &TargetRt,
    bytes: &[u8],
) -> Result<Registered, ControlError> {
    let hex = hex_digest(bytes);
    let mut st = load_state(target);
    let status = target.plugin_status();
    let digest = format!("sha256:{hex}");
    if st.current.as_deref() == Some(hex.as_str())
        && status.state == TargetPluginState::Ready
        && status.digest.as_deref() == Some(digest.as_str())
    {
        return Ok(Registered { digest, already_current: true });
    }
    let file = plugin_dir(target).join(format!("{hex}.wasm"));
    let digest = install(node, ns, target, bytes, &file.display().to_string())
        .await
        .map_err(ControlError::Rejected)?;
    write_atomic(&file, bytes).map_err(ControlError::storage("storing the plugin"))?;
    if st.current.is_none() && !st.removed {
        // The config file's plugin was running: it becomes the rollback target.
        st.current = keep_config_plugin(target);
    }
    if st.current.as_deref() != Some(hex.as_str()) {
        st.previous = st.current.take().or(st.previous.take());
    }
    st.current = Some(hex);
    st.removed = false;
    save_state(target, &st).map_err(ControlError::storage("storing plugin state"))?;
    Ok(Registered { digest, already_current: false })
}

/// Copies the config file's plugin into the target's registry (so that a
/// rollback can go back to it); its hex digest, or `None` if it cannot be read.
fn keep_config_plugin(target: &TargetRt) -> Option<String> {
    let bytes = std::fs::read(&target.cfg.target.plugin).ok()?;
    let hex = hex_digest(&bytes);
    match write_atomic(&plugin_dir(target).join(format!("{hex}.wasm")), &bytes) {
        Ok(()) => Some(hex),
        Err(e) => {
            tracing::warn!(target = %target.name, error = %e, "the config file's plugin is not kept; a rollback cannot go back to it");
            None
        }
    }
}

/// Goes back to the previous plugin: the one registered before, or the
/// config file's plugin if the current one was the first registered.
pub async fn rollback(node: &Node, ns: &Namespace, target: &TargetRt) -> Result<Registered, ControlError> {
    let st = load_state(target);
    let prev = st
        .previous
        .clone()
        .ok_or_else(|| ControlError::Rejected("no previous plugin to roll back to".into()))?;
    let bytes = std::fs::read(plugin_dir(target).join(format!("{prev}.wasm")))
        .map_err(ControlError::storage("reading the previous plugin"))?;
    register(node, ns, target, &bytes).await
}

/// Removes the target's plugin: writes stay durable, its delivery pauses.
pub fn remove(target: &TargetRt) -> Result<(), ControlError> {
    let mut st = load_state(target);
    st.previous = st.current.take().or(st.previous.take());
    st.removed = true;
    save_state(target, &st).map_err(ControlError::storage("storing plugin state"))?;
    target.set_plugin_status(|s| {
        s.digest = None;
        s.wit = None;
        s.state = TargetPluginState::Removed;
        s.reason = Some("removed by an operator; delivery paused".into());
    });
    target.slot.send_replace(None);
    Ok(())
}

/// Installs the plugin each target of a namespace should run at start: the
/// one registered at runtime if any, else the config file's. Failures are
/// shown in status.
pub async fn activate(node: &Node, ns: &Namespace) {
    for target in &ns.targets {
        activate_target(node, ns, target).await;
    }
}

async fn activate_target(node: &Node, ns: &Namespace, target: &TargetRt) {
    let st = load_state(target);
    let result = if st.removed {
        remove(target).map_err(|e| e.to_string())
    } else if let Some(hex) = &st.current {
        let file = plugin_dir(target).join(format!("{hex}.wasm"));
        match std::fs::read(&file) {
            Ok(bytes) => install(node, ns, target, &bytes, &file.display().to_string()).await.map(drop),
            Err(e) => Err(format!("registered plugin {} unreadable: {e}", file.display())),
        }
    } else {
        apply_config_plugin(node, ns, target, false).await
    };
    if let Err(reason) = result {
        tracing::error!(namespace = %ns.name, target = %target.name, %reason, "plugin failed to load; writes are kept, delivery waits");
        target.set_plugin_status(|s| {
            s.state = TargetPluginState::Failed;
            s.reason = Some(reason);
        });
    }
}

/// Installs the config file's plugin (when `only_if_changed`, only if its
/// bytes changed since it was last applied).
async fn apply_config_plugin(
    node: &Node,
    ns: &Namespace,
    target: &TargetRt,
    only_if_changed: bool,
) -> Result<(), String> {
    let path = &target.cfg.target.plugin;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read plugin {}: {e}", path.display()))?;
    let mut st = load_state(target);
    if only_if_changed && st.config_digest.as_deref() == Some(hex_digest(&bytes).as_str()) {
        return Ok(());
    }
    let digest = install(node, ns, target, &bytes, &path.display().to_string()).await?;
    let stored = st.clone();
    st.config_digest = Some(digest.trim_start_matches("sha256:").to_string());
    if st.current.is_some() {
        st.previous = st.current.take();
    }
    st.removed = false;
    if st == stored && plugin_dir(target).join("state.json").exists() {
        return Ok(()); // a start over an unchanged config: nothing to store
    }
    save_state(target, &st).map_err(|e| format!("storing plugin state: {e}"))
}

/// What a reload did.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub plugin_changed: Vec<String>,
    /// Whether `tokens` or `admin_tokens` changed (they apply at once).
    pub tokens_changed: bool,
    /// Whether the listeners now serve another TLS certificate (set by
    /// `adapters::tls` after the reload).
    pub tls_changed: bool,
    pub errors: Vec<String>,
}

/// Re-reads the config file: adds new namespaces, takes removed ones out of
/// service (their data stays until an explicit purge), and installs a
/// namespace's plugin again when the config's plugin file changed, and
/// puts the new tokens in force, all at once. Other namespace settings
/// take effect at the next restart.
pub async fn reload(node: &Node) -> Result<ReloadReport, String> {
    let cfg = crate::config::load(&node.config_path).map_err(|e| e.to_string())?;
    let tokens_changed = node.access.replace(super::access::Tokens::from_config(&cfg));
    let mut report = ReloadReport { tokens_changed, ..Default::default() };
    if report.tokens_changed {
        tracing::warn!("tokens changed by a reload: the new ones are in force, the old ones no longer work");
    }
    for ns in node.namespaces() {
        if !cfg.namespaces.contains_key(&ns.name) {
            node.remove(&ns.name);
            report.removed.push(ns.name.clone());
        }
    }
    for (name, loaded) in &cfg.namespaces {
        match node.namespace(name) {
            Some(ns) => {
                for target in &ns.targets {
                    let before = target.plugin_status().digest;
                    match apply_config_plugin(node, &ns, target, true).await {
                        Ok(()) if before != target.plugin_status().digest => {
                            report.plugin_changed.push(format!("{name}/{}", target.name))
                        }
                        Ok(()) => {}
                        Err(e) => {
                            report.errors.push(format!("{name}/{}: {e} (the old plugin stays)", target.name))
                        }
                    }
                }
            }
            None => match node.open_namespace(loaded) {
                Ok(ns) => {
                    node.insert(ns.clone());
                    activate(node, &ns).await;
                    node.start_delivery(&ns);
                    report.added.push(name.clone());
                }
                Err(e) => report.errors.push(format!("{name}: {e}")),
            },
        }
    }
    Ok(report)
}

/// Deletes `<data_dir>/<ns>/`, the data of a namespace no longer in
/// service, but only if it holds nothing a namespace never has (see
/// docs/log-format.md): any other folder of that name is left alone.
pub fn purge_data(data_dir: &Path, ns: &str) -> Result<(), crate::error::Error> {
    use crate::error::{Error, ErrorKind};
    let dir = data_dir.join(ns);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::new(ErrorKind::NotFound, "namespace_not_found", format!("no data for {ns}")));
        }
        Err(e) => return Err(Error::internal(format!("reading {}: {e}", dir.display()))),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_namespace_entry(&name) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "not_namespace_data",
                format!(
                    "{} holds {name:?}, which a namespace's data never does; nothing was deleted",
                    dir.display()
                ),
            ));
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| Error::internal(format!("removing {}: {e}", dir.display())))
}

/// Whether a name may appear in `<data_dir>/<ns>/`.
fn is_namespace_entry(name: &str) -> bool {
    const FIXED: [&str; 8] =
        ["idempotency", "transactions", "dlq", "plugin", "traps.json", "targets", "replication", "chain"];
    let partition_file = name.strip_prefix('p').is_some_and(|rest| {
        let (digits, ext) = rest.split_once('.').unwrap_or((rest, ""));
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && ["", "cursor", "halt", "stage", "rewind"].contains(&ext.split('.').next().unwrap_or(""))
    });
    FIXED.contains(&name) || partition_file || name.ends_with(".tmp")
}

/// One line of `<data_dir>/audit.log`.
#[derive(Debug, Serialize)]
pub struct AuditEvent<'a> {
    pub time_ms: u64,
    /// `admin:<token fingerprint>`, `namespace:<name>:<fingerprint>`,
    /// `anonymous` (auth off) or `cli`.
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    /// `ok` or `error`.
    pub outcome: &'a str,
    pub detail: serde_json::Value,
}

/// Appends an audit line (fsync'd). An audit failure is logged, never hidden.
pub fn audit(
    data_dir: &Path,
    actor: &str,
    action: &str,
    target: &str,
    result: Result<serde_json::Value, &str>,
) {
    let (outcome, detail) = match result {
        Ok(d) => ("ok", d),
        Err(e) => ("error", serde_json::json!({ "error": e })),
    };
    let event = AuditEvent { time_ms: now_ms(), actor, action, target, outcome, detail };
    let line = serde_json::to_string(&event).unwrap_or_default();
    tracing::info!(target: "wharf::audit", actor, action, target_name = target, outcome, "admin action");
    let written = std::fs::create_dir_all(data_dir).and_then(|()| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("audit.log"))?;
        writeln!(f, "{line}")?;
        f.sync_data()
    });
    if let Err(e) = written {
        tracing::error!(error = %e, action, "audit line not written");
    }
}

/// Who is acting, and where their audit lines go.
#[derive(Debug)]
pub struct Who<'a> {
    pub data_dir: &'a Path,
    pub actor: String,
}

impl Who<'_> {
    /// Audits an action's result and hands it back.
    pub fn record<T>(
        &self,
        action: &str,
        target: &str,
        result: Result<T, crate::error::Error>,
        detail: impl FnOnce(&T) -> serde_json::Value,
    ) -> Result<T, crate::error::Error> {
        let summary = result.as_ref().map(detail).map_err(|e| e.message.as_str());
        audit(self.data_dir, &self.actor, action, target, summary);
        result
    }
}

/// An operator's resume of a target halted by its plugin (`halt`), on one
/// partition or all. Returns the halts cleared (partition, halt).
pub fn resume_target(
    target: &crate::engine::target::TargetRt,
    partition: Option<u32>,
) -> Result<Vec<(u32, crate::storage::halts::Halt)>, crate::error::Error> {
    let lanes: Vec<_> = match partition {
        Some(p) => vec![target.lane(p).ok_or_else(|| {
            crate::error::Error::new(
                crate::error::ErrorKind::NotFound,
                "partition_not_found",
                format!("target {} has no partition {p}", target.name),
            )
        })?],
        None => target.lanes.iter().collect(),
    };
    let mut cleared = Vec::new();
    for lane in lanes {
        let was = lane.resume().map_err(|e| crate::error::Error::internal(e.to_string()))?;
        if let Some(h) = was {
            tracing::warn!(target = %target.name, partition = lane.index, was = %h.reason, "target resumed by an operator");
            cleared.push((lane.index, h));
        }
    }
    Ok(cleared)
}
