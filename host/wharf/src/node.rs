//! The running sidecar: namespaces, their partitions, their plugins.
//!
//! Start-up opens every partition log. A partition whose log reports
//! corruption is kept, halted, with the reason; every other partition and
//! namespace starts normally. A namespace whose plugin fails to load keeps
//! accepting writes (they are durable) and delivers nothing until fixed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::{Loaded, LoadedNamespace};
use crate::delivery::Tracker;
use crate::dlq::Dlq;
use crate::envelope::{Envelope, message_id};
use crate::idempotency::{Idempotency, Seen};
use crate::plugin::{NetPolicy, Plugin, PluginSettings, Runtime};

#[derive(Debug)]
pub struct Node {
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub durability: wharf_log::Durability,
    pub admin_tokens: Vec<String>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    pub cfg: LoadedNamespace,
    pub partitions: Vec<Arc<PartitionRt>>,
    pub dlq: Arc<Dlq>,
    pub idempotency: Idempotency,
    pub plugin: Mutex<PluginStatus>,
    round_robin: AtomicU32,
}

/// What status shows about a namespace's plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub path: String,
    pub digest: Option<String>,
    pub wit: &'static str,
    /// `loading`, `ready`, `failed` or `quarantined`.
    pub state: &'static str,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct PartitionRt {
    pub namespace: String,
    pub index: u32,
    /// `None` when the log could not be opened (the partition is halted).
    pub log: Option<Arc<wharf_log::Partition>>,
    /// Why the partition stopped; writes and deliveries are refused.
    pub halted: Mutex<Option<String>>,
    /// Woken after each append.
    pub notify: Notify,
    /// Woken after each delivery batch (for writes waiting for `visible`).
    pub delivered: Notify,
    pub tracker: Mutex<Tracker>,
}

impl PartitionRt {
    pub fn halted_reason(&self) -> Option<String> {
        self.halted.lock().ok().and_then(|h| h.clone())
    }

    pub fn halt(&self, reason: String) {
        tracing::error!(namespace = %self.namespace, partition = self.index, %reason, "partition halted");
        if let Ok(mut h) = self.halted.lock() {
            h.get_or_insert(reason);
        }
    }
}

impl Namespace {
    /// Same key, same partition, forever: FNV-1a of the key. Keyless
    /// messages are spread round-robin.
    pub fn partition_for(&self, key: Option<&str>) -> u32 {
        let n = self.partitions.len() as u32;
        match key {
            Some(k) => (fnv1a(k.as_bytes()) % n as u64) as u32,
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Node {
    /// Opens every namespace's logs. Never fails because of one bad
    /// partition: that partition is halted instead.
    pub fn open(cfg: &Loaded) -> anyhow::Result<Self> {
        let opts = wharf_log::LogOptions {
            segment_max_bytes: cfg.server.segment_max_bytes,
            durability: cfg.server.durability,
            ..Default::default()
        };
        std::fs::create_dir_all(&cfg.server.data_dir)?;
        let mut namespaces = BTreeMap::new();
        for (name, ns) in &cfg.namespaces {
            let dir = cfg.server.data_dir.join(name);
            let partitions = (0..ns.partitions)
                .map(|i| Arc::new(open_partition(name, i, &dir.join(format!("p{i}")), opts.clone())))
                .collect();
            let dlq = Arc::new(Dlq::open(&dir.join("dlq"), opts.clone())?);
            let partitions: Vec<Arc<PartitionRt>> = partitions;
            let idempotency = Idempotency::open(
                &dir.join("idempotency"),
                opts.clone(),
                Duration::from_millis(ns.idempotency.window_ms),
                retained_idempotency_keys(&partitions),
            )?;
            let plugin = Mutex::new(PluginStatus {
                path: ns.target.plugin.display().to_string(),
                digest: None,
                wit: crate::plugin::SUPPORTED_WIT[0],
                state: "loading",
                reason: None,
            });
            namespaces.insert(
                name.clone(),
                Arc::new(Namespace {
                    name: name.clone(),
                    cfg: ns.clone(),
                    partitions,
                    dlq,
                    idempotency,
                    plugin,
                    round_robin: AtomicU32::new(0),
                }),
            );
        }
        let (shutdown, _) = watch::channel(false);
        Ok(Self {
            namespaces,
            durability: cfg.server.durability,
            admin_tokens: cfg.server.admin_tokens.clone(),
            shutdown,
        })
    }

    /// Loads each namespace's plugin and starts one delivery loop per
    /// healthy partition.
    pub fn start_delivery(&self, runtime: &Runtime) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for ns in self.namespaces.values() {
            let Some(plugin) = load_plugin(runtime, ns) else { continue };
            for part in &ns.partitions {
                if part.log.is_none() {
                    continue;
                }
                let engine = crate::delivery::Engine::new(
                    ns.clone(),
                    part.clone(),
                    plugin.clone(),
                    self.shutdown.subscribe(),
                );
                tasks.push(tokio::spawn(engine.run()));
            }
        }
        tasks
    }

    /// Whether any token is configured (then every /v1 call needs one).
    pub fn auth_enabled(&self) -> bool {
        !self.admin_tokens.is_empty() || self.namespaces.values().any(|n| !n.cfg.tokens.is_empty())
    }

    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

/// Every message still in the logs that carries an idempotency key. A
/// partition that fails to read here is skipped: it is halted already, or
/// will halt when its delivery loop reads the same records.
fn retained_idempotency_keys(partitions: &[Arc<PartitionRt>]) -> Vec<Seen> {
    let mut out = Vec::new();
    for p in partitions {
        let Some(log) = &p.log else { continue };
        let mut from = log.first_seq();
        while let Ok(records) = log.read(from, 4096, 16 << 20) {
            let Some(last) = records.last() else { break };
            from = last.seq + 1;
            for r in records {
                if let Ok(Envelope { idempotency_key: Some(key), written_at_ms, .. }) =
                    Envelope::decode(&r.payload)
                {
                    out.push(Seen { key, message_id: message_id(p.index, r.seq), at_ms: written_at_ms });
                }
            }
        }
    }
    out
}

fn open_partition(ns: &str, index: u32, dir: &Path, opts: wharf_log::LogOptions) -> PartitionRt {
    let (log, halted) = match wharf_log::Partition::open(dir, opts) {
        Ok((log, recovery)) => {
            tracing::info!(
                namespace = ns,
                partition = index,
                next_seq = recovery.next_seq,
                watermark = recovery.watermark,
                "partition opened"
            );
            (Some(Arc::new(log)), None)
        }
        Err(e) => {
            tracing::error!(namespace = ns, partition = index, error = %e, "partition halted at open");
            (None, Some(e.to_string()))
        }
    };
    PartitionRt {
        namespace: ns.to_string(),
        index,
        log,
        halted: Mutex::new(halted),
        notify: Notify::new(),
        delivered: Notify::new(),
        tracker: Mutex::new(Tracker::default()),
    }
}

fn load_plugin(runtime: &Runtime, ns: &Namespace) -> Option<Plugin> {
    let t = &ns.cfg.target;
    let settings = PluginSettings {
        namespace: ns.name.as_str().into(),
        net: NetPolicy {
            tcp: Arc::new(ns.cfg.allow_connect.clone()),
            http_prefixes: Arc::new(t.allow_http.clone()),
        },
        memory_limit_bytes: (t.memory_limit_mib as usize) << 20,
        call_timeout: Duration::from_millis(t.call_timeout_ms),
        config: ns.cfg.plugin_config.clone(),
    };
    let result = runtime.load(&t.plugin, settings);
    let mut status = ns.plugin.lock().ok()?;
    match result {
        Ok(p) => {
            tracing::info!(namespace = %ns.name, digest = %p.digest, "plugin loaded");
            status.digest = Some(p.digest.clone());
            status.state = "ready";
            Some(p)
        }
        Err(e) => {
            tracing::error!(namespace = %ns.name, error = %e, "plugin failed to load; writes are kept, delivery waits");
            status.state = "failed";
            status.reason = Some(e.to_string());
            None
        }
    }
}
