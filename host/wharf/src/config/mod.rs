//! `wharf.toml`: the sidecar's configuration.
//!
//! Every field is documented with its default in `docs/configuration.md`.
//! Paths are relative to the directory of the config file. Unknown keys are
//! errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wharf_log::Durability;

mod parse;
mod telemetry;
pub mod tls;
mod token;
mod validate;

pub use tls::Tls;
pub use token::TokenSource;

pub use telemetry::Tracing;

/// A config that could not be loaded: the file, the key and the problem,
/// and the line as context when the text has one.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}{}", line.as_ref().map(|l| format!(" ({l})")).unwrap_or_default(), file = file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the offending key, e.g. `namespaces.orders.partitions`.
    pub key: String,
    pub problem: String,
    /// The line the key is on, e.g. `line 7: partitions = "four"`.
    pub line: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub namespaces: BTreeMap<String, Namespace>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address of the HTTP API. Default `127.0.0.1:7070` (loopback only).
    pub http: SocketAddr,
    /// Address of the gRPC API (`wharf.v1`). Default: none, no gRPC server.
    pub grpc: Option<SocketAddr>,
    /// Where the logs, watermarks, DLQs and the compiled-plugin cache live.
    /// Default `data`, relative to the config file.
    pub data_dir: PathBuf,
    /// `fsync` (default): a write is acknowledged only after fdatasync.
    /// `buffered`: no fsync; acks say `"durable": false`. For tests only.
    pub durability: Durability,
    /// Segment files roll at this size. Default 64 MiB.
    pub segment_max_bytes: u64,
    /// Bearer tokens with access to everything: each a string or
    /// `{ token_file = "..." }` / `{ token_env = "VAR" }`. Default: none.
    /// When no admin or namespace token is configured the API is open.
    /// Resolved in [`Loaded::admin_tokens`].
    pub admin_tokens: Vec<TokenSource>,
    /// `[server.tls]`: serve HTTPS and gRPC over TLS with this certificate
    /// and key. Default: none (plaintext).
    pub tls: Option<Tls>,
    /// Where compiled plugins are cached (by content hash and engine
    /// build). Default `<data_dir>/.plugin-cache`; several sidecars may
    /// share one directory.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Open API connections (HTTP and gRPC together) at most. Default
    /// 1024, and never more than half the process's open-file limit, so
    /// clients cannot take the descriptors the log needs. Further clients
    /// wait in the listen backlog.
    pub max_connections: usize,
    /// Client writes stop (`507 disk_full`) while the data dir's filesystem
    /// has less free space than this, so that the DLQ, watermarks, the
    /// idempotency window and the audit log keep room. Default 0: no
    /// reserve (writes run until the disk is full).
    pub min_free_bytes: u64,
    /// A client must send a request's headers within this time, and an
    /// idle keep-alive connection is closed after it. Default 10000.
    pub header_read_timeout_ms: u64,
    /// A client must send a request's body within this time. Default 30000.
    pub body_read_timeout_ms: u64,
    /// After SIGTERM, keep serving this long with `/readyz` answering 503,
    /// so that traffic moves away before writes are refused. Default 0.
    pub drain_delay_ms: u64,
    /// `[server.tracing]`: host spans and their OTLP export. Default: off.
    pub tracing: Tracing,
}

impl Server {
    /// The compiled-plugin cache directory.
    pub fn plugin_cache(&self) -> PathBuf {
        self.plugin_cache_dir.clone().unwrap_or_else(|| self.data_dir.join(".plugin-cache"))
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 7070)),
            grpc: None,
            data_dir: PathBuf::from("data"),
            durability: Durability::Fsync,
            segment_max_bytes: 64 << 20,
            admin_tokens: Vec::new(),
            tls: None,
            plugin_cache_dir: None,
            max_connections: 1024,
            min_free_bytes: 0,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            drain_delay_ms: 0,
            tracing: Tracing::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Number of partitions (independent logs). Default 4. Messages with the
    /// same key always land in the same partition.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub breaker: Breaker,
    #[serde(default)]
    pub dlq: DlqPolicy,
    /// How much delivered history the embedded log keeps for rewinds
    /// (docs/configuration.md, "Retention"). Absent: a segment goes as
    /// soon as every target delivered it.
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
    #[serde(default)]
    pub idempotency: IdempotencyPolicy,
    #[serde(default)]
    pub transactions: Transactions,
    /// Bearer tokens that may write to and read this namespace, in the
    /// form of `server.admin_tokens`. Default: none (then only admin
    /// tokens may, if any are configured).
    #[serde(default)]
    pub tokens: Vec<TokenSource>,
    /// Where the namespace's messages queue: `{ kind = "embedded" }`
    /// (default), `{ kind = "kafka", brokers, topic, ... }` or
    /// `{ kind = "sqs", endpoint, queue, fifo, ... }`. See docs/backends.md.
    #[serde(default)]
    pub queue: Option<wharf_queue::QueueConfig>,
    /// The one target of a namespace, named `default` (the older shape).
    #[serde(default)]
    pub target: Option<Target>,
    /// Several targets, by name; each has its own delivery cursor, retries,
    /// breaker, DLQ and plugin.
    #[serde(default)]
    pub targets: BTreeMap<String, Target>,
    /// `primary` (default): clients write here. `replica`: the partitions
    /// mirror a primary's, fed only through the replication endpoint;
    /// client writes are refused (docs/replication.md). Embedded log only.
    #[serde(default)]
    pub mode: NamespaceMode,
}

/// Who writes a namespace's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMode {
    #[default]
    Primary,
    Replica,
}

/// The order a target receives messages in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Per key (default): a retry holds back later messages of its key only.
    #[default]
    Key,
    /// Per partition: a batch is a contiguous run of sequences, nothing past
    /// an unfinished message is sent, retries never give up, and each
    /// message carries its stored log record (the replica). Embedded log
    /// only.
    Partition,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyPolicy {
    /// How long an `idempotency_key` is remembered. Default 24 h.
    pub window_ms: u64,
}

impl Default for IdempotencyPolicy {
    fn default() -> Self {
        Self { window_ms: 24 * 3600 * 1000 }
    }
}

/// Admission control: past any of these, writes get `429 backlog_full`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Undelivered messages in the namespace. Default 1 000 000.
    pub max_backlog_messages: u64,
    /// Bytes the namespace's logs hold above their watermarks. Default 1 GiB.
    pub max_backlog_bytes: u64,
    /// Age of the oldest undelivered message, ms; 0 turns the check off.
    /// Default 0.
    pub max_backlog_age_ms: u64,
    /// Longest `delay_ms` (or `deliver_at_ms` from now) a write may ask for.
    /// Default 30 days.
    pub max_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_backlog_messages: 1_000_000,
            max_backlog_bytes: 1 << 30,
            max_backlog_age_ms: 0,
            max_delay_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

/// The circuit breaker in front of the target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Breaker {
    /// Consecutive failed calls (every message retried, or the call failed)
    /// that open the breaker. Default 5.
    pub failures: u32,
    /// How long the breaker stays open before one probe call. Default 5000 ms.
    pub cooldown_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { failures: 5, cooldown_ms: 5000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqPolicy {
    /// A message may be replayed from the DLQ this many times; after that a
    /// replay request skips it with a reason. Default 3.
    pub max_replays: u32,
}

impl Default for DlqPolicy {
    fn default() -> Self {
        Self { max_replays: 3 }
    }
}

/// `[namespaces.<ns>.retention]`: delivered segments are kept while both
/// limits hold; undelivered ones are never deleted, whatever the limits.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep delivered segments last written less than this long ago.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many bytes of delivered segments per partition.
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    /// The log's policy; `None` (no table) deletes once delivered.
    pub fn log_retention(policy: Option<Self>) -> wharf_log::Retention {
        match policy {
            None => wharf_log::Retention::KeepNothing,
            Some(p) => wharf_log::Retention::Within {
                max_age: p.max_age_ms.map(std::time::Duration::from_millis),
                max_bytes: p.max_bytes,
            },
        }
    }
}

/// Multi-chunk transactions (docs/api.md, "Transactions").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transactions {
    /// An uncommitted transaction is aborted (its chunks deleted) this long
    /// after it began, unless `begin` asked for less. Default 10 minutes.
    pub ttl_ms: u64,
    /// Open transactions the namespace holds at once; past it `begin` gets
    /// `429 too_many_transactions`. Default 1000.
    pub max_open: usize,
    /// Chunks one transaction may hold (sequence numbers `0..max_chunks`).
    /// Default 1000.
    pub max_chunks: u32,
    /// Payload bytes one transaction may hold. At most 32 MiB, so that a
    /// dead-lettered transaction fits in one DLQ record. Default 16 MiB.
    pub max_bytes: u64,
}

impl Default for Transactions {
    fn default() -> Self {
        Self { ttl_ms: 10 * 60 * 1000, max_open: 1000, max_chunks: 1000, max_bytes: 16 << 20 }
    }
}

impl Transactions {
    pub fn limits(&self) -> crate::storage::txn_store::TxnLimits {
        crate::storage::txn_store::TxnLimits {
            max_open: self.max_open,
            max_chunks: self.max_chunks,
            max_bytes: self.max_bytes,
        }
    }
}

fn default_partitions() -> u32 {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Most messages handed to the plugin in one `deliver` call. Default 100.
    pub batch_max: usize,
    /// How long to wait for a batch to fill once one message is ready.
    /// Default 2 ms.
    pub linger_ms: u64,
    /// Most messages read from the log but not yet finished, per partition.
    /// Default 1000.
    pub max_in_flight: usize,
    /// A call slower than this counts as throttling: the batch size halves.
    /// Default 1000 ms.
    pub slow_call_ms: u64,
    /// A lane drops its plugin instance once unused this long (an idle
    /// partition holds none); the next batch makes a new one. Default
    /// 30000 ms.
    pub instance_idle_ms: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            batch_max: 100,
            linger_ms: 2,
            max_in_flight: 1000,
            slow_call_ms: 1000,
            instance_idle_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Attempts before a message goes to the DLQ. Default 10.
    pub max_attempts: u32,
    /// First backoff. Default 100 ms.
    pub initial_backoff_ms: u64,
    /// Backoff cap. Default 30 000 ms.
    pub max_backoff_ms: u64,
    /// Growth per attempt. Default 2.0. The actual wait is drawn uniformly
    /// from `[0, backoff]` (full jitter), and never less than a retry-after
    /// the plugin asked for.
    pub multiplier: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Self { max_attempts: 10, initial_backoff_ms: 100, max_backoff_ms: 30_000, multiplier: 2.0 }
    }
}

impl Retry {
    /// The backoff ceiling before attempt `attempt + 1` (attempt ≥ 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
        let ms = (self.initial_backoff_ms as f64 * exp).min(self.max_backoff_ms as f64);
        Duration::from_millis(ms as u64)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Path of the plugin component (`.wasm`). Required.
    pub plugin: PathBuf,
    /// `host:port` addresses the plugin may open TCP connections to.
    /// Default: none.
    #[serde(default)]
    pub allow_connect: Vec<String>,
    /// URL prefixes the plugin may send wasi:http requests to. Default: none.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Handed to the plugin's `init`. Values must be strings, numbers or
    /// booleans; they reach the plugin as strings. Default: empty.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Linear-memory limit per plugin instance. Default 64 MiB.
    #[serde(default = "default_memory_limit_mib")]
    pub memory_limit_mib: u64,
    /// Deadline of one plugin call, covering CPU and blocking I/O. Default 10 000 ms.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// The plugin is quarantined (this target stops delivering until a
    /// plugin is registered or the host restarts) when this many distinct
    /// messages in a row each trapped it alone, or init failed this many
    /// times in a row: failures no single message explains. Default 5.
    #[serde(default = "default_quarantine_after")]
    pub quarantine_after: u32,
    /// A message that traps the plugin (trap, deadline, memory limit) this
    /// many times when delivered alone is dead-lettered as poison; its key
    /// moves on. Counted across restarts. Default 3.
    #[serde(default = "default_poison_after")]
    pub poison_after: u32,
    /// `key` (default) or `partition` (see [`Ordering`]).
    #[serde(default)]
    pub ordering: Ordering,
    /// How often the host calls the plugin's `reconcile` (WIT 0.4.0), on
    /// the monotonic clock, the first call one interval after the plugin
    /// starts. Default: never.
    #[serde(default)]
    pub reconcile_interval_ms: Option<u64>,
    /// The `budget-ms` handed to `reconcile`: how long a pass should take.
    /// At most `call_timeout_ms` (the deadline that stops it). Default: half
    /// of `call_timeout_ms`.
    #[serde(default)]
    pub reconcile_budget_ms: Option<u64>,
}

impl Target {
    /// The `budget-ms` of a `reconcile` call (see `reconcile_budget_ms`).
    pub fn reconcile_budget_ms(&self) -> u64 {
        self.reconcile_budget_ms.unwrap_or(self.call_timeout_ms / 2).max(1)
    }
}

fn default_poison_after() -> u32 {
    3
}

fn default_memory_limit_mib() -> u64 {
    64
}
fn default_call_timeout_ms() -> u64 {
    10_000
}
fn default_quarantine_after() -> u32 {
    5
}

/// The config after validation, with every path made absolute.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub server: Server,
    /// `server.admin_tokens`, read from their files and variables.
    pub admin_tokens: Vec<String>,
    pub namespaces: BTreeMap<String, LoadedNamespace>,
}

#[derive(Debug, Clone)]
pub struct LoadedNamespace {
    pub name: String,
    pub partitions: u32,
    pub delivery: Delivery,
    pub retry: Retry,
    pub limits: Limits,
    pub breaker: Breaker,
    pub dlq: DlqPolicy,
    pub retention: Option<RetentionPolicy>,
    pub idempotency: IdempotencyPolicy,
    pub transactions: Transactions,
    /// `tokens`, read from their files and variables.
    pub tokens: Vec<String>,
    /// `None` for the embedded log.
    pub queue: Option<wharf_queue::QueueConfig>,
    /// At least one; in name order.
    pub targets: Vec<LoadedTarget>,
    pub mode: NamespaceMode,
}

/// The name of the target of a `[namespaces.<ns>.target]` table.
pub const DEFAULT_TARGET: &str = "default";

/// One target of a namespace after validation.
#[derive(Debug, Clone)]
pub struct LoadedTarget {
    pub name: String,
    pub target: Target,
    /// Resolved `allow_connect` entries.
    pub allow_connect: Vec<SocketAddr>,
    /// Parsed `allow_http` entries.
    pub allow_http: Vec<crate::plugin::UrlRule>,
    /// `config` with every value as a string.
    pub plugin_config: Vec<(String, String)>,
}

/// Reads, parses and validates a config file. Paths in it are resolved
/// against the config file's directory and made absolute.
pub fn load(file: &Path) -> Result<Loaded, ConfigError> {
    let abs = absolute(file);
    let text = std::fs::read_to_string(&abs).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: "(file)".into(),
        problem: format!("cannot read {}: {e}", abs.display()),
        line: None,
    })?;
    let err = |key: &str, problem: String| ConfigError {
        file: file.to_path_buf(),
        key: key.to_string(),
        line: parse::line_of_key(&text, key),
        problem,
    };
    let parsed = parse::parse(&text).map_err(|(key, problem, line)| ConfigError {
        file: file.to_path_buf(),
        key,
        problem,
        line,
    })?;
    let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut server = parsed.server;
    server.data_dir = normalize(&base.join(&server.data_dir));
    server.plugin_cache_dir = server.plugin_cache_dir.map(|d| normalize(&base.join(d)));
    validate::server(&server).map_err(|(k, p)| err(&format!("server.{k}"), p))?;
    if let Some(tls) = &mut server.tls {
        tls.resolve_paths(&base);
        tls.identity().map_err(|(k, p)| err(&format!("server.tls.{k}"), p))?;
    }
    server.admin_tokens.iter_mut().for_each(|t| t.resolve_paths(&base));
    let admin_tokens =
        token::read_all("server.admin_tokens", &server.admin_tokens).map_err(|(k, p)| err(&k, p))?;
    let mut namespaces = BTreeMap::new();
    for (name, ns) in parsed.namespaces {
        let key = |k: &str| format!("namespaces.{name}.{k}");
        if !valid_namespace_name(&name) {
            return Err(err(
                &format!("namespaces.{name}"),
                "a namespace name is 1-64 characters of a-z, 0-9, '-' and '_'".into(),
            ));
        }
        validate::namespace(&ns).map_err(|(k, p)| err(&key(&k), p))?;
        let mut token_sources = ns.tokens;
        token_sources.iter_mut().for_each(|t| t.resolve_paths(&base));
        let tokens = token::read_all(&key("tokens"), &token_sources).map_err(|(k, p)| err(&k, p))?;
        // Errors name the table the user wrote: `target.` or `targets.<name>.`.
        let single_table = ns.target.is_some();
        let tables: Vec<(String, Target)> = match (ns.target, ns.targets.is_empty()) {
            (Some(_), false) => {
                return Err(err(
                    &key("targets"),
                    "give either a `target` table or `targets.<name>` tables".into(),
                ));
            }
            (Some(t), true) => vec![(DEFAULT_TARGET.to_string(), t)],
            (None, false) => ns.targets.into_iter().collect(),
            (None, true) => {
                return Err(err(
                    &key("target"),
                    "a namespace needs a target (`[namespaces.<ns>.target]`)".into(),
                ));
            }
        };
        if tables.len() > 1 && matches!(ns.queue, Some(wharf_queue::QueueConfig::Sqs(_))) {
            return Err(err(
                &key("targets"),
                "an SQS namespace takes one target (an SQS message is consumed once); give each target its own namespace".into(),
            ));
        }
        let embedded = matches!(ns.queue, None | Some(wharf_queue::QueueConfig::Embedded));
        if ns.mode == NamespaceMode::Replica && !embedded {
            return Err(err(
                &key("mode"),
                "a replica namespace mirrors an embedded log; remove `queue` or use mode = \"primary\""
                    .into(),
            ));
        }
        let mut targets = Vec::new();
        for (tname, t) in tables {
            if t.ordering == Ordering::Partition && !embedded {
                let k = match single_table {
                    true => key("target.ordering"),
                    false => key(&format!("targets.{tname}.ordering")),
                };
                return Err(err(&k, "ordering = \"partition\" needs the embedded log (a queue has no stored records to mirror)".into()));
            }
            let tkey = |k: &str| match single_table {
                true => key(&format!("target.{k}")),
                false => key(&format!("targets.{tname}.{k}")),
            };
            if !valid_namespace_name(&tname) {
                return Err(err(
                    &key(&format!("targets.{tname}")),
                    "a target name is 1-64 characters of a-z, 0-9, '-' and '_'".into(),
                ));
            }
            targets.push(load_target(&base, tname.clone(), t, &|k, problem| err(&tkey(k), problem))?);
        }
        namespaces.insert(
            name.clone(),
            LoadedNamespace {
                name,
                partitions: ns.partitions,
                delivery: ns.delivery,
                retry: ns.retry,
                limits: ns.limits,
                breaker: ns.breaker,
                dlq: ns.dlq,
                retention: ns.retention,
                idempotency: ns.idempotency,
                transactions: ns.transactions,
                tokens,
                queue: ns.queue.filter(|q| *q != wharf_queue::QueueConfig::Embedded),
                targets,
                mode: ns.mode,
            },
        );
    }
    Ok(Loaded { server, admin_tokens, namespaces })
}

/// Checks one target table and resolves its paths and addresses.
fn load_target(
    base: &Path,
    name: String,
    mut target: Target,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<LoadedTarget, ConfigError> {
    validate::target(&target).map_err(|(k, p)| err(&k, p))?;
    target.plugin = normalize(&base.join(&target.plugin));
    if !target.plugin.is_file() {
        return Err(err(
            "plugin",
            format!("no plugin file at {} (run `make build` first?)", target.plugin.display()),
        ));
    }
    let mut allow_connect = Vec::new();
    for a in &target.allow_connect {
        let addr = a
            .parse::<SocketAddr>()
            .map_err(|_| err("allow_connect", format!("{a:?} is not an ip:port address")))?;
        allow_connect.push(addr);
    }
    let mut allow_http = Vec::new();
    for p in &target.allow_http {
        allow_http.push(crate::plugin::UrlRule::parse(p).map_err(|e| err("allow_http", e))?);
    }
    let mut plugin_config = Vec::new();
    for (k, v) in &target.config {
        let s = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(err(&format!("config.{k}"), "must be a string, number or boolean".into())),
        };
        plugin_config.push((k.clone(), s));
    }
    Ok(LoadedTarget { name, target, allow_connect, allow_http, plugin_config })
}

pub fn valid_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `path` made absolute against the current directory, with `.` and `..`
/// folded away (lexically), so messages show the file actually meant.
fn absolute(path: &Path) -> PathBuf {
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

impl LoadedTarget {
    /// What the plugin runtime needs to load this target's plugin: its
    /// sandbox limits, network policy and `init` config.
    pub fn plugin_settings(&self, namespace: &str) -> crate::plugin::PluginSettings {
        crate::plugin::PluginSettings {
            namespace: namespace.into(),
            net: crate::plugin::NetPolicy {
                tcp: std::sync::Arc::new(self.allow_connect.clone()),
                http: std::sync::Arc::new(self.allow_http.clone()),
            },
            memory_limit_bytes: (self.target.memory_limit_mib as usize) << 20,
            call_timeout: Duration::from_millis(self.target.call_timeout_ms),
            config: self.plugin_config.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> PathBuf {
        std::fs::write(dir.join("p.wasm"), b"\0asm").expect("write plugin");
        let f = dir.join("wharf.toml");
        std::fs::write(&f, body).expect("write config");
        f
    }

    #[test]
    fn the_documented_shape_loads_with_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(
            dir.path(),
            r#"
[server]
http = "127.0.0.1:7070"
data_dir = "data"

[namespaces.orders]
partitions = 4

[namespaces.orders.target]
plugin = "p.wasm"
allow_connect = ["127.0.0.1:11211"]
config = { servers = "127.0.0.1:11211", ttl_seconds = 60 }
"#,
        );
        let c = load(&f).expect("loads");
        assert_eq!(c.server.data_dir, dir.path().join("data"));
        let ns = &c.namespaces["orders"];
        assert_eq!(ns.partitions, 4);
        assert_eq!(ns.targets[0].target.plugin, dir.path().join("p.wasm"));
        assert!(ns.targets[0].plugin_config.contains(&("ttl_seconds".into(), "60".into())));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(dir.path(), "[server]\nhttp_port = 1\n");
        let e = load(&f).expect_err("unknown key");
        assert_eq!(e.key, "server.http_port", "{e}");
        assert_eq!(e.line.as_deref(), Some("line 2: http_port = 1"), "{e}");
        assert!(e.problem.contains("http_port"), "{e}");
    }

    #[test]
    fn a_bad_partition_count_names_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f =
            write(dir.path(), "[namespaces.a]\npartitions = 0\n[namespaces.a.target]\nplugin = \"p.wasm\"\n");
        let e = load(&f).expect_err("zero partitions");
        assert_eq!(e.key, "namespaces.a.partitions");
    }

    #[test]
    fn a_missing_plugin_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(dir.path(), "[namespaces.a.target]\nplugin = \"nope.wasm\"\n");
        let e = load(&f).expect_err("missing plugin");
        assert_eq!(e.key, "namespaces.a.target.plugin");
        let want = format!("no plugin file at {} ", dir.path().join("nope.wasm").display());
        assert!(e.problem.starts_with(&want), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file_and_print_absolute() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("conf")).expect("mkdir");
        let f = dir.path().join("conf/wharf.toml");
        std::fs::write(&f, "[namespaces.a.target]\nplugin = \"../plugins/./x.wasm\"\n").expect("write");
        let e = load(&f).expect_err("missing plugin");
        let want = dir.path().join("plugins/x.wasm");
        assert!(e.problem.contains(&format!("at {} ", want.display())), "{e}");
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
    }

    #[test]
    fn an_inverted_backoff_names_the_key_and_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(
            dir.path(),
            "[namespaces.a.retry]\ninitial_backoff_ms = 900\nmax_backoff_ms = 100\n[namespaces.a.target]\nplugin = \"p.wasm\"\n",
        );
        let e = load(&f).expect_err("inverted");
        assert_eq!(e.key, "namespaces.a.retry.max_backoff_ms");
        assert_eq!(e.line.as_deref(), Some("line 3: max_backoff_ms = 100"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = Retry::default();
        assert_eq!(r.ceiling(1), Duration::from_millis(100));
        assert_eq!(r.ceiling(2), Duration::from_millis(200));
        assert_eq!(r.ceiling(30), Duration::from_millis(30_000));
    }
}
