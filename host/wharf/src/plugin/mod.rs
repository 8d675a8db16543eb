//! Target plugins: compile once, instantiate sandboxed, call with a deadline.
//!
//! A [`Plugin`] is a compiled component plus its namespace's policy. An
//! [`Instance`] is one live, initialised copy with its own `Store`. Calls on an
//! instance are bounded twice: epoch interruption stops a guest spinning on
//! the CPU, and a tokio timeout stops a guest blocked on host I/O (epochs do
//! not fire while a guest waits inside an async host call). An instance that
//! trapped or timed out is dropped by its owner and never called again.
//!
//! Who is to blame for a call that ran out of time:
//! - the epoch deadline (an interrupt trap): the guest was running its own
//!   code, on the CPU: [`PluginError::Deadline`], the plugin's fault (a
//!   poison or quarantine candidate);
//! - the I/O deadline while the guest waited on its target (it opened a TCP
//!   connection to an `allow_connect` address, or an `allow_http` request
//!   has no answer yet; `sandbox::NetUse`): [`PluginError::TargetStalled`],
//!   the target is slow or unreachable, a retry that feeds the breaker;
//! - the I/O deadline with no use of the target's network (sleeping, say):
//!   [`PluginError::Deadline`], the plugin's fault.
//!
//! Every supported `wharf:target` version (`SUPPORTED_WIT`) loads through
//! the same engine, linker and sandbox; `version.rs` finds which one a
//! component implements and dispatches calls. The host's message, batch and
//! outcome types are the newest version's (`v0_4.rs`); older versions
//! convert (`v0_3.rs`, `v0_2.rs`, `v0_1.rs`).

mod cache;
mod conformance;
mod host_calls;
mod inspect;
mod redact;
mod sandbox;
mod stderr;
mod url_rule;
mod v0_1;
mod v0_2;
mod v0_3;
mod v0_4;
mod version;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

pub use redact::is_secret_key;
pub use sandbox::NetPolicy;
use sandbox::StoreState;
pub use url_rule::UrlRule;
pub use v0_4::{Batch, LogRecord, Message, Outcome, Reconciled, Retry as RetryOutcome};
pub use version::SUPPORTED_WIT;
use version::{Target, TargetPre};

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
    /// The call ran out of time while the guest waited on its target: the
    /// target is slow or unreachable, not the plugin broken.
    #[error("plugin call exceeded its {0:?} deadline waiting on its target")]
    TargetStalled(Duration),
    #[error("plugin returned {got} outcomes for {want} messages")]
    WrongCount { got: usize, want: usize },
}

/// One wasmtime engine for the process, with a background epoch ticker.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    cache: cache::CompileCache,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cache", &self.cache).finish()
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
        v0_4::Target::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking wharf host 0.4.0: {e}"))?;
        v0_3::Target::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking wharf host 0.3.0: {e}"))?;
        v0_2::Target::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking wharf host 0.2.0: {e}"))?;
        v0_1::Target::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking wharf host 0.1.0: {e}"))?;
        let weak = engine.weak();
        std::thread::Builder::new().name("wharf-epoch".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        let cache = cache::CompileCache::open(cache_dir)
            .map_err(|e| anyhow::anyhow!("plugin cache {}: {e}", cache_dir.display()))?;
        Ok(Self { engine, linker: Arc::new(linker), cache })
    }

    /// Compiles (or loads from the cache) and type-checks component bytes;
    /// `label` names them in errors.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        label: &str,
        settings: PluginSettings,
    ) -> Result<Plugin, PluginError> {
        let invalid = |reason: String| PluginError::Invalid { path: label.to_string(), reason };
        let (component, digest) = self.cache.compile(&self.engine, bytes).map_err(invalid)?;
        let pre = self.type_check(&component).map_err(invalid)?;
        let secrets = Arc::new(redact::Secrets::from_config(&settings.config));
        Ok(Plugin { pre, digest, settings: Arc::new(settings), secrets })
    }

    /// Drops the compile cache's entries of a plugin the host rejected.
    pub fn forget(&self, bytes: &[u8]) {
        self.cache.forget(bytes);
    }

    /// Checks the component's imports against the host and its exports
    /// against every supported `wharf:target` version.
    fn type_check(&self, component: &Component) -> Result<TargetPre, String> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| format!("imports not satisfied by the host: {e}"))?;
        TargetPre::detect(pre)
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
    pre: TargetPre,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    settings: Arc<PluginSettings>,
    /// Scrubbed out of everything the plugin reports (`redact.rs`).
    secrets: Arc<redact::Secrets>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("digest", &self.digest).field("wit", &self.wit()).finish()
    }
}

impl Plugin {
    /// The `wharf:target` version the component implements.
    pub fn wit(&self) -> &'static str {
        self.pre.version().package()
    }

    /// The plugin's WIT has `reconcile` (0.4.0 on).
    pub fn has_reconcile(&self) -> bool {
        self.pre.version().has_reconcile()
    }

    /// Proves the plugin works before it takes over: instantiates it and
    /// runs `init` with its config, then drops the instance.
    pub async fn validate(&self) -> Result<(), PluginError> {
        self.instantiate().await.map(drop)
    }

    /// A fresh instance, with `init` already called successfully.
    pub async fn instantiate(&self) -> Result<Instance, PluginError> {
        let (mut store, target) = self.instantiate_uninit().await?;
        let deadline = self.settings.call_timeout;
        set_deadline(&mut store, deadline);
        let net = store.data().net_use.clone();
        let init = bounded(deadline, &net, target.call_init(&mut store, &self.settings.config))
            .await
            .map_err(|e| self.secrets.scrub_error(e))?;
        init.map_err(|e| PluginError::Init(self.secrets.scrub(&e)))?;
        Ok(Instance { store, target, call_timeout: deadline, secrets: self.secrets.clone() })
    }

    /// A fresh instance in its sandbox, before `init`. Every version gets
    /// the same store: limits, network policy, epoch deadline.
    async fn instantiate_uninit(&self) -> Result<(Store<StoreState>, Target), PluginError> {
        let s = &self.settings;
        let state = StoreState::new(s.namespace.clone(), &s.net, s.memory_limit_bytes, self.secrets.clone());
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|st| &mut st.limits);
        store.epoch_deadline_trap();
        set_deadline(&mut store, s.call_timeout);
        let net = store.data().net_use.clone();
        let target = bounded(s.call_timeout, &net, self.pre.instantiate(&mut store)).await?;
        Ok((store, target))
    }
}

/// A live plugin instance. Drop it after any error that poisons it.
pub struct Instance {
    store: Store<StoreState>,
    target: Target,
    call_timeout: Duration,
    secrets: Arc<redact::Secrets>,
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
        let net = self.store.data().net_use.clone();
        let out = bounded(self.call_timeout, &net, self.target.call_deliver(&mut self.store, batch))
            .await
            .map_err(|e| self.call_failed(e))?;
        if out.len() != want {
            return Err(PluginError::WrongCount { got: out.len(), want });
        }
        Ok(out.into_iter().map(|o| self.secrets.scrub_outcome(o)).collect())
    }

    /// One `reconcile` pass, under the same deadlines as `deliver`; `None`
    /// for a plugin whose WIT has no `reconcile` (nothing is called). The
    /// reasons it reports are scrubbed like outcome reasons.
    pub async fn reconcile(&mut self, budget_ms: u64) -> Result<Option<Reconciled>, PluginError> {
        set_deadline(&mut self.store, self.call_timeout);
        let net = self.store.data().net_use.clone();
        let out = bounded(self.call_timeout, &net, self.target.call_reconcile(&mut self.store, budget_ms))
            .await
            .map_err(|e| self.call_failed(e))?;
        Ok(out.map(|r| Reconciled {
            repaired: r.repaired,
            errors: r.errors.iter().map(|e| self.secrets.scrub(e)).collect(),
        }))
    }

    /// A failed call's error as the operator sees it: a trap names what the
    /// plugin printed last (a panic's message), and no secret shows.
    fn call_failed(&self, e: PluginError) -> PluginError {
        let e = match e {
            PluginError::Trap(trap) => match self.store.data().stderr.last_lines(3) {
                tail if tail.is_empty() => PluginError::Trap(trap),
                tail => PluginError::Trap(format!("{trap}; stderr: {tail}")),
            },
            other => other,
        };
        self.secrets.scrub_error(e)
    }
}

fn set_deadline(store: &mut Store<StoreState>, d: Duration) {
    let ticks = (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
}

/// Runs a guest call under a wall-clock deadline; a trap or a timeout both
/// mean the instance is poisoned. A timeout (the guest was suspended in a
/// host call) while `net` says it waited on its target blames the target
/// (see the module docs).
async fn bounded<T>(
    deadline: Duration,
    net: &sandbox::NetUse,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, PluginError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
                return Err(PluginError::Deadline(deadline));
            }
            Err(PluginError::Trap(short_trap(&e)))
        }
        Err(_) if net.waiting_on_target() => Err(PluginError::TargetStalled(deadline)),
        Err(_) => Err(PluginError::Deadline(deadline)),
    }
}

/// A trap on one line: its cause and the first frames of its wasm
/// backtrace, at most [`TRAP_CHARS`] characters.
fn short_trap(e: &wasmtime::Error) -> String {
    let cause = e.root_cause().to_string();
    let frames: Vec<String> = format!("{e:?}")
        .lines()
        .map(str::trim)
        .filter(|l| l.split_once(':').is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        .take(4)
        .map(str::to_string)
        .collect();
    let mut out = match frames.is_empty() {
        true => cause,
        false => format!("{cause} (backtrace: {})", frames.join(" | ")),
    };
    out.truncate(out.floor_char_boundary(TRAP_CHARS));
    out
}

/// Longest trap description kept.
const TRAP_CHARS: usize = 600;
