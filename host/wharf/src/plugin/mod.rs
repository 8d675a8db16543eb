//! Target plugins: compile once, instantiate sandboxed, call with a deadline.
//!
//! A [`Plugin`] is a compiled component plus its namespace's policy. An
//! [`Instance`] is one live, initialised copy with its own `Store`. Calls on an
//! instance are bounded twice: epoch interruption stops a guest spinning on
//! the CPU, and a tokio timeout stops a guest blocked on host I/O (epochs do
//! not fire while a guest waits inside an async host call). An instance that
//! trapped or timed out is dropped by its owner and never called again.

mod cache;
mod sandbox;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};

pub use sandbox::NetPolicy;
use sandbox::StoreState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/0.1.0",
        world: "target",
        exports: { default: async },
    });
}

use bindings::wharf::target::host::Level;
pub use bindings::wharf::target::types::{Batch, Message, Outcome, Retry as RetryOutcome};

/// The WIT package versions this host can load.
pub const SUPPORTED_WIT: &[&str] = &["wharf:target@0.1.0"];

/// How often the epoch ticks; per-call CPU deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("plugin {path} is not a valid wharf:target component: {reason}")]
    Invalid { path: String, reason: String },
    #[error("plugin init failed: {0}")]
    Init(String),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin call exceeded its {0:?} deadline")]
    Deadline(Duration),
    #[error("plugin returned {got} outcomes for {want} messages")]
    WrongCount { got: usize, want: usize },
}

/// One wasmtime engine for the process, with a background epoch ticker.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    cache_dir: std::path::PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cache_dir", &self.cache_dir).finish()
    }
}

impl Runtime {
    pub fn new(cache_dir: &Path) -> anyhow::Result<Self> {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let engine = Engine::new(&cfg).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking wasi: {e}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking wasi-http: {e}"))?;
        bindings::Target::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking wharf host: {e}"))?;
        let weak = engine.weak();
        std::thread::Builder::new().name("wharf-epoch".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        Ok(Self { engine, linker: Arc::new(linker), cache_dir: cache_dir.to_path_buf() })
    }

    /// Compiles (or loads from the on-disk cache) and type-checks a plugin.
    /// Compiles (or loads from the cache) and type-checks component bytes;
    /// `label` names them in errors.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        label: &str,
        settings: PluginSettings,
    ) -> Result<Plugin, PluginError> {
        let invalid = |reason: String| PluginError::Invalid { path: label.to_string(), reason };
        let (component, digest) =
            cache::compile_cached(&self.engine, &self.cache_dir, bytes).map_err(invalid)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("imports not satisfied by the host: {e}")))?;
        let pre = bindings::TargetPre::new(pre)
            .map_err(|e| invalid(format!("does not export wharf:target@0.1.0: {e}")))?;
        Ok(Plugin { pre, digest, settings: Arc::new(settings) })
    }
}

/// What `wharf plugin check` prints about a component.
#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub digest: String,
    /// The `wharf:target` version the component implements, if any.
    pub wit: Option<&'static str>,
    pub problem: Option<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

impl Runtime {
    /// Compiles a component and reports its exports, imports and whether it
    /// implements a supported `wharf:target` version.
    pub fn inspect(&self, path: &Path) -> Result<Inspection, PluginError> {
        let bytes = std::fs::read(path)
            .map_err(|source| PluginError::Read { path: path.display().to_string(), source })?;
        let invalid = |reason: String| PluginError::Invalid { path: path.display().to_string(), reason };
        let (component, digest) =
            cache::compile_cached(&self.engine, &self.cache_dir, &bytes).map_err(invalid)?;
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let checked = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("imports not satisfied by the host: {e}"))
            .and_then(|pre| {
                bindings::TargetPre::new(pre).map_err(|e| format!("does not export wharf:target@0.1.0: {e}"))
            });
        let (wit, problem) = match checked {
            Ok(_) => (Some(SUPPORTED_WIT[0]), None),
            Err(p) => (None, Some(p)),
        };
        Ok(Inspection { digest, wit, problem, exports, imports })
    }
}

/// Per-namespace limits and inputs of a plugin.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub namespace: Arc<str>,
    pub net: NetPolicy,
    pub memory_limit_bytes: usize,
    pub call_timeout: Duration,
    pub config: Vec<(String, String)>,
}

/// A compiled, type-checked plugin. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pre: bindings::TargetPre<StoreState>,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    settings: Arc<PluginSettings>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("digest", &self.digest).finish()
    }
}

impl Plugin {
    /// Proves the plugin works before it takes over: instantiates it and
    /// runs `init` with its config, then drops the instance.
    pub async fn validate(&self) -> Result<(), PluginError> {
        self.instantiate().await.map(drop)
    }

    /// A fresh instance, with `init` already called successfully.
    pub async fn instantiate(&self) -> Result<Instance, PluginError> {
        let s = &self.settings;
        let state = StoreState::new(s.namespace.clone(), &s.net, s.memory_limit_bytes);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|st| &mut st.limits);
        store.epoch_deadline_trap();
        let deadline = s.call_timeout;
        set_deadline(&mut store, deadline);
        let target = bounded(deadline, self.pre.instantiate_async(&mut store)).await?;
        set_deadline(&mut store, deadline);
        let init = bounded(deadline, target.call_init(&mut store, &s.config)).await?;
        init.map_err(PluginError::Init)?;
        Ok(Instance { store, target, call_timeout: deadline })
    }
}

/// A live plugin instance. Drop it after any error that poisons it.
pub struct Instance {
    store: Store<StoreState>,
    target: bindings::Target,
    call_timeout: Duration,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl Instance {
    /// Delivers a batch; exactly one outcome per message, in order.
    pub async fn deliver(&mut self, batch: &Batch) -> Result<Vec<Outcome>, PluginError> {
        set_deadline(&mut self.store, self.call_timeout);
        let want = batch.messages.len();
        let out = bounded(self.call_timeout, self.target.call_deliver(&mut self.store, batch)).await?;
        if out.len() != want {
            return Err(PluginError::WrongCount { got: out.len(), want });
        }
        Ok(out)
    }
}

fn set_deadline(store: &mut Store<StoreState>, d: Duration) {
    let ticks = (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
}

/// Runs a guest call under a wall-clock deadline; a trap or a timeout both
/// mean the instance is poisoned.
async fn bounded<T>(
    deadline: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, PluginError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
                return Err(PluginError::Deadline(deadline));
            }
            Err(PluginError::Trap(format!("{e:?}").lines().next().unwrap_or_default().to_string()))
        }
        Err(_) => Err(PluginError::Deadline(deadline)),
    }
}

impl bindings::wharf::target::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        // Plugins are untrusted: cap the line and keep it on one line.
        let mut msg: String = message.chars().take(2048).collect();
        msg.retain(|c| c != '\n' && c != '\r');
        let ns = &*self.namespace;
        match level {
            Level::Trace => tracing::trace!(namespace = ns, "plugin: {msg}"),
            Level::Debug => tracing::debug!(namespace = ns, "plugin: {msg}"),
            Level::Info => tracing::info!(namespace = ns, "plugin: {msg}"),
            Level::Warn => tracing::warn!(namespace = ns, "plugin: {msg}"),
            Level::Error => tracing::error!(namespace = ns, "plugin: {msg}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        crate::clock::now_ms()
    }
}

impl bindings::wharf::target::types::Host for StoreState {}
