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

use anyhow::Context as _;
use tokio::sync::{Notify, watch};

use crate::config::{Loaded, LoadedNamespace};
use crate::delivery::Tracker;
use crate::dlq::Dlq;
use crate::envelope::{Envelope, message_id};
use crate::error::ApiError;
use crate::idempotency::{Idempotency, Seen};
use crate::part_log::PartLog;
use crate::plugin::{Plugin, Runtime};
use crate::txn_store::TxnStore;
use axum::http::StatusCode;

/// Which half of the work this process does (`wharf serve --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Accepts writes; does not deliver.
    Processor,
    /// Delivers; refuses writes.
    Consumer,
    /// Both (the default).
    All,
}

impl Role {
    pub fn writes(self) -> bool {
        self != Role::Consumer
    }
    pub fn delivers(self) -> bool {
        self != Role::Processor
    }
}

#[derive(Debug)]
pub struct Node {
    /// Namespaces by name; namespaces can be added while running.
    namespaces: std::sync::RwLock<BTreeMap<String, Arc<Namespace>>>,
    pub durability: wharf_log::Durability,
    pub admin_tokens: Vec<String>,
    pub config_path: std::path::PathBuf,
    pub data_dir: std::path::PathBuf,
    pub runtime: Runtime,
    pub role: Role,
    log_opts: wharf_log::LogOptions,
    shutdown: watch::Sender<bool>,
    /// Serialises control-plane changes (register, reload, ...).
    pub control: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    pub cfg: LoadedNamespace,
    pub partitions: Vec<Arc<PartitionRt>>,
    /// The DLQ, in a process that delivers (`None` under `--role
    /// processor`: the consumer process owns it).
    pub dlq: Option<Arc<Dlq>>,
    /// The idempotency window, in a process that writes (`None` under
    /// `--role consumer`).
    pub idempotency: Option<Idempotency>,
    /// Parked chunks of multi-chunk transactions.
    pub txns: Arc<TxnStore>,
    pub plugin: Mutex<PluginStatus>,
    /// The plugin the delivery loops use; `None` pauses delivery.
    pub slot: watch::Sender<Option<Plugin>>,
    /// Set when the namespace was removed from the config; its loops stop.
    pub removed: std::sync::atomic::AtomicBool,
    /// The producer of a Kafka or SQS queue (unset for the embedded log, and
    /// in a consumer-only process).
    pub producer: std::sync::OnceLock<wharf_queue::AnyProducer>,
    /// This process takes writes (not `--role consumer`).
    pub writes: bool,
    round_robin: AtomicU32,
}

/// What status shows about a namespace's plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub path: String,
    pub digest: Option<String>,
    /// The `wharf:target` version of the loaded plugin.
    pub wit: Option<&'static str>,
    /// `loading`, `ready`, `failed` or `quarantined`.
    pub state: &'static str,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct PartitionRt {
    pub namespace: String,
    pub index: u32,
    /// `None` when the log could not be opened (the partition is halted).
    pub log: Option<Arc<PartLog>>,
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
    /// The DLQ, or why this process has none.
    pub fn dlq(&self) -> Result<&Arc<Dlq>, ApiError> {
        self.dlq.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "role_processor",
                "this process runs with --role processor; the DLQ and delivery state live in the --role consumer process",
            )
        })
    }

    /// The idempotency window, or why this process has none.
    pub fn idempotency(&self) -> Result<&Idempotency, ApiError> {
        self.idempotency.as_ref().ok_or_else(ApiError::role_consumer)
    }

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
    pub fn open(cfg: &Loaded, config_path: &Path, role: Role) -> anyhow::Result<Self> {
        let log_opts = wharf_log::LogOptions {
            segment_max_bytes: cfg.server.segment_max_bytes,
            durability: cfg.server.durability,
            // A consumer process follows the log through it.
            publish_durable_end: role == Role::Processor,
            ..Default::default()
        };
        std::fs::create_dir_all(&cfg.server.data_dir)?;
        let runtime = Runtime::new(&cfg.server.data_dir.join(".plugin-cache"))?;
        let (shutdown, _) = watch::channel(false);
        let node = Self {
            namespaces: std::sync::RwLock::new(BTreeMap::new()),
            durability: cfg.server.durability,
            admin_tokens: cfg.server.admin_tokens.clone(),
            config_path: config_path.to_path_buf(),
            data_dir: cfg.server.data_dir.clone(),
            runtime,
            role,
            log_opts,
            shutdown,
            control: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
        };
        for ns in cfg.namespaces.values() {
            let opened = node.open_namespace(ns)?;
            node.insert(opened);
        }
        Ok(node)
    }

    /// Opens one namespace's logs, DLQ and idempotency window.
    pub fn open_namespace(&self, ns: &LoadedNamespace) -> anyhow::Result<Arc<Namespace>> {
        let opts = self.log_opts;
        let name = &ns.name;
        let dir = self.data_dir.join(name);
        let partitions: Vec<Arc<PartitionRt>> = (0..ns.partitions)
            .map(|i| Arc::new(open_partition(name, i, &dir.join(format!("p{i}")), opts, self.role)))
            .collect();
        // Each file set has one owner process (a wharf-log LOCK each): the
        // DLQ belongs to the delivering side, the idempotency window to the
        // writing side.
        let embedded = ns.queue.is_none();
        let dlq = match self.role.delivers() || !embedded {
            true => Some(Arc::new(Dlq::open(&dir.join("dlq"), opts)?)),
            false => None,
        };
        let idempotency = match self.role.writes() {
            true => Some(Idempotency::open(
                &dir.join("idempotency"),
                opts,
                Duration::from_millis(ns.idempotency.window_ms),
                retained_idempotency_keys(&partitions),
            )?),
            false => None,
        };
        let txn_dir = dir.join("transactions");
        let txns = match self.role.writes() {
            true => TxnStore::open(&txn_dir),
            false => TxnStore::open_reader(&txn_dir),
        };
        let txns =
            Arc::new(txns.with_context(|| format!("namespace {name}: opening its transaction chunk store"))?);
        // A crash between a marker finishing and its chunks' deletion
        // leaves the file behind: the marker is below its watermark.
        let swept = txns.sweep_finished(|marker| {
            crate::envelope::parse_message_id(marker).is_some_and(|(p, seq)| {
                partitions.get(p as usize).and_then(|p| p.log.as_ref()).is_some_and(|l| seq < l.watermark())
            })
        });
        if swept > 0 {
            tracing::info!(namespace = %name, swept, "deleted the chunks of transactions delivered before the last stop");
        }
        let plugin = Mutex::new(PluginStatus {
            path: ns.target.plugin.display().to_string(),
            digest: None,
            wit: None,
            state: "loading",
            reason: None,
        });
        Ok(Arc::new(Namespace {
            name: name.clone(),
            cfg: ns.clone(),
            partitions,
            dlq,
            idempotency,
            txns,
            plugin,
            slot: watch::channel(None).0,
            removed: std::sync::atomic::AtomicBool::new(false),
            producer: std::sync::OnceLock::new(),
            writes: self.role.writes(),
            round_robin: AtomicU32::new(0),
        }))
    }

    pub fn insert(&self, ns: Arc<Namespace>) {
        self.namespaces.write().unwrap_or_else(|p| p.into_inner()).insert(ns.name.clone(), ns);
    }

    /// Takes a namespace out of service; its data stays on disk.
    pub fn remove(&self, name: &str) -> Option<Arc<Namespace>> {
        let ns = self.namespaces.write().unwrap_or_else(|p| p.into_inner()).remove(name)?;
        ns.removed.store(true, Ordering::Relaxed);
        ns.slot.send_replace(None);
        Some(ns)
    }

    /// Connects a namespace to its Kafka or SQS queue (creating the topic or
    /// queue and its DLQ when missing). No-op for the embedded log.
    pub async fn connect_queue(&self, ns: &Namespace) -> anyhow::Result<()> {
        let Some(q) = &ns.cfg.queue else { return Ok(()) };
        wharf_queue::provision(q)
            .await
            .with_context(|| format!("namespace {}: provisioning its queue", ns.name))?;
        if self.role.writes() {
            let p = wharf_queue::open_producer(q)
                .await
                .with_context(|| format!("namespace {}: opening its queue producer", ns.name))?;
            let _ = ns.producer.set(p);
        }
        Ok(())
    }

    /// Starts one delivery loop per healthy partition of `ns`. The loops
    /// follow the namespace's plugin slot: they wait while it is empty and
    /// switch between two calls when it changes.
    pub fn start_delivery(&self, ns: &Arc<Namespace>) {
        if self.role.writes() && ns.cfg.queue.is_none() {
            let task = tokio::spawn(crate::txn::expire_loop(ns.clone(), self.shutdown.subscribe()));
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        }
        if self.role == Role::Processor && ns.cfg.queue.is_none() {
            let buffered = self.durability == wharf_log::Durability::Buffered;
            let task = tokio::spawn(follow_watermarks(ns.clone(), buffered, self.shutdown.subscribe()));
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        }
        if !self.role.delivers() {
            return;
        }
        if let Some(q) = &ns.cfg.queue {
            let task =
                tokio::spawn(crate::queue_delivery::run(ns.clone(), q.clone(), self.shutdown.subscribe()));
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
            return;
        }
        for part in &ns.partitions {
            if part.log.is_none() {
                continue;
            }
            let engine = crate::delivery::Engine::new(ns.clone(), part.clone(), self.shutdown.subscribe());
            let task = tokio::spawn(engine.run());
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        }
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// A snapshot of every namespace, in name order.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Whether any token is configured (then every /v1 call needs one).
    pub fn auth_enabled(&self) -> bool {
        !self.admin_tokens.is_empty() || self.namespaces().iter().any(|n| !n.cfg.tokens.is_empty())
    }

    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits for every delivery loop to stop (after `shutdown`).
    pub async fn drain(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// In a processor: picks up the watermarks the consumer process persists,
/// for admission control and to delete delivered segments. Under
/// `durability = "buffered"` it also flushes, since the consumer only sees
/// what was fdatasync'd.
async fn follow_watermarks(ns: Arc<Namespace>, buffered: bool, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() || ns.removed.load(Ordering::Relaxed) {
            return;
        }
        for part in &ns.partitions {
            let Some(log) = part.log.clone() else { continue };
            let refreshed = tokio::task::spawn_blocking(move || {
                log.writer().map(|w| {
                    if buffered {
                        w.flush()?;
                    }
                    w.refresh_watermark()
                })
            })
            .await;
            if let Ok(Some(Err(e))) = refreshed {
                tracing::error!(namespace = %ns.name, partition = part.index, error = %e, "consumer watermark not picked up");
            }
        }
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

fn open_partition(ns: &str, index: u32, dir: &Path, opts: wharf_log::LogOptions, role: Role) -> PartitionRt {
    let opened = match role {
        Role::Consumer => wharf_log::Follower::open(dir).map(|f| {
            tracing::info!(
                namespace = ns,
                partition = index,
                next_seq = f.next_seq(),
                watermark = f.watermark(),
                "partition followed"
            );
            PartLog::Follower(f)
        }),
        Role::All | Role::Processor => wharf_log::Partition::open(dir, opts).map(|(log, recovery)| {
            tracing::info!(
                namespace = ns,
                partition = index,
                next_seq = recovery.next_seq,
                watermark = recovery.watermark,
                "partition opened"
            );
            crate::metrics::observe_fsyncs(&log, ns);
            PartLog::Writer(log)
        }),
    };
    let (log, halted) = match opened {
        Ok(log) => (Some(Arc::new(log)), None),
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
