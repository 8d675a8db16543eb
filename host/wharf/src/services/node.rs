//! The running sidecar: namespaces, their partitions, their plugins.
//!
//! Start-up opens every partition log. A partition whose log reports
//! corruption is kept, halted, with the reason; every other partition and
//! namespace starts normally. A namespace whose plugin fails to load keeps
//! accepting writes (they are durable) and delivers nothing until fixed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use anyhow::Context as _;
use rayon::prelude::*;
use tokio::sync::watch;

use crate::config::{Loaded, LoadedNamespace, LoadedTarget};
use crate::engine::lane::Engine;
pub use crate::engine::namespace::{Namespace, PartitionRt};
use crate::engine::source::{LogSource, QueueSource, Source};
use crate::engine::target::{TargetRt, target_dir};
use crate::plugin::Runtime;
use crate::storage::dlq::Dlq;
use crate::storage::envelope::{self, message_id};
use crate::storage::idempotency::{Idempotency, Seen};
use crate::storage::part_log::PartLog;
use crate::storage::rewind;
use crate::storage::traps::Traps;
use crate::storage::txn_store::TxnStore;
use crate::storage::write_clock::WriteClock;

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
    /// The bearer tokens in force and the audit key (`access.rs`).
    pub access: super::access::Gate,
    pub config_path: std::path::PathBuf,
    pub data_dir: std::path::PathBuf,
    pub runtime: Runtime,
    pub role: Role,
    log_opts: wharf_log::LogOptions,
    /// Held for the process's life with [`Role::All`].
    _tree: Option<wharf_log::TreeLock>,
    /// `server.min_free_bytes` on the data dir.
    pub reserve: Arc<crate::storage::free_space::Reserve>,
    shutdown: watch::Sender<bool>,
    /// Set at SIGTERM: `/readyz` answers 503 from then on.
    draining: std::sync::atomic::AtomicBool,
    /// Serialises control-plane changes (register, reload, ...).
    pub control: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Node {
    /// Opens every namespace's logs. Never fails because of one bad
    /// partition: that partition is halted instead.
    pub fn open(cfg: &Loaded, config_path: &Path, role: Role) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&cfg.server.data_dir)?;
        // A process with every role owns the whole data dir: one tree lock
        // instead of a lock fd per partition (wharf-log tree_lock.rs). Split
        // roles share it, each partition locked by its owner.
        let tree = match role {
            Role::All => Some(wharf_log::lock_tree(&cfg.server.data_dir).with_context(|| {
                format!(
                    "data dir {} is in use by another wharf (or by `wharf log salvage` on one of its partitions); stop it first",
                    cfg.server.data_dir.display()
                )
            })?),
            Role::Processor | Role::Consumer => None,
        };
        let log_opts = wharf_log::LogOptions {
            segment_max_bytes: cfg.server.segment_max_bytes,
            durability: cfg.server.durability,
            // A consumer process follows the log through it.
            publish_durable_end: role == Role::Processor,
            dir_lock: match tree {
                Some(_) => wharf_log::DirLock::Tree,
                None => wharf_log::DirLock::Own,
            },
            ..Default::default()
        };
        let audit_key = crate::storage::keyfile::load_or_create(&cfg.server.data_dir.join("audit.key"))?;
        let runtime = Runtime::new(&cfg.server.plugin_cache())?;
        let (shutdown, _) = watch::channel(false);
        let node = Self {
            namespaces: std::sync::RwLock::new(BTreeMap::new()),
            durability: cfg.server.durability,
            access: super::access::Gate::new(super::access::Tokens::from_config(cfg), audit_key),
            config_path: config_path.to_path_buf(),
            data_dir: cfg.server.data_dir.clone(),
            runtime,
            role,
            log_opts,
            _tree: tree,
            reserve: Arc::new(crate::storage::free_space::Reserve::new(
                &cfg.server.data_dir,
                cfg.server.min_free_bytes,
            )),
            shutdown,
            draining: std::sync::atomic::AtomicBool::new(false),
            control: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
        };
        // In parallel: each namespace's opens read its logs' tails (and
        // its partitions open in parallel in turn, for one large one).
        let opened: Vec<anyhow::Result<Arc<Namespace>>> =
            cfg.namespaces.par_iter().map(|(_, ns)| node.open_namespace(ns)).collect();
        for ns in opened {
            node.insert(ns?);
        }
        Ok(node)
    }

    /// Opens one namespace's logs, its targets' DLQs and its idempotency
    /// window.
    pub fn open_namespace(&self, ns: &LoadedNamespace) -> anyhow::Result<Arc<Namespace>> {
        let opts = wharf_log::LogOptions {
            retention: crate::config::RetentionPolicy::log_retention(ns.retention),
            ..self.log_opts
        };
        let name = &ns.name;
        let dir = self.data_dir.join(name);
        let embedded = ns.queue.is_none();
        let partitions: Vec<Arc<PartitionRt>> = match embedded {
            // In parallel: each open scans its partition's last segment.
            true => (0..ns.partitions)
                .into_par_iter()
                .map(|i| {
                    let holds = rewind_positions(ns, &dir, i);
                    let floor = holds.values().copied().min();
                    let opts = wharf_log::LogOptions { history_floor: floor, ..opts };
                    let part = match finish_snapshot(ns, &dir, i, self.role) {
                        Ok(()) => open_partition(name, i, &dir.join(format!("p{i}")), opts, self.role),
                        Err(reason) => PartitionRt::new(name, i, None, Some(reason)),
                    }
                    .holding(holds);
                    Arc::new(with_replication(part, ns, &dir))
                })
                .collect(),
            false => Vec::new(),
        };
        // Each file set has one owner process (a wharf-log LOCK each): the
        // DLQs belong to the delivering side, the idempotency window to the
        // writing side.
        let delivers = self.role.delivers();
        let lanes = if embedded { ns.partitions } else { 1 };
        let mut targets = Vec::new();
        for t in &ns.targets {
            let tdir = target_dir(&dir, &t.name);
            let dlq =
                match delivers {
                    true => Some(Arc::new(Dlq::open(&tdir.join("dlq"), opts).with_context(|| {
                        format!("namespace {name}: opening the DLQ of target {}", t.name)
                    })?)),
                    false => None,
                };
            let traps = Traps::open(&tdir)?;
            targets.push(Arc::new(TargetRt::new(t.clone(), tdir, dlq, traps, lanes)));
        }
        let idempotency = match self.role.writes() {
            true => {
                let window = Duration::from_millis(ns.idempotency.window_ms);
                let idem = Idempotency::open(&dir.join("idempotency"), opts, window)?;
                let primary = ns.mode == crate::config::NamespaceMode::Primary;
                recover_keys(name, &partitions, &idem, primary)?;
                Some(idem)
            }
            false => None,
        };
        let txn_dir = dir.join("transactions");
        let txns = match self.role.writes() {
            true => TxnStore::open(&txn_dir),
            false => TxnStore::open_reader(&txn_dir),
        };
        let txns =
            Arc::new(txns.with_context(|| format!("namespace {name}: opening its transaction chunk store"))?);
        // A crash between a marker leaving retained history and its
        // chunks' deletion leaves the file behind.
        let swept = txns.sweep(|marker| {
            crate::engine::namespace::marker_place(&partitions, ns.retention.is_some(), marker)
        });
        if swept > 0 {
            tracing::info!(namespace = %name, swept, "deleted the chunks of transactions delivered before the last stop");
        }
        Ok(Arc::new(Namespace {
            name: name.clone(),
            cfg: ns.clone(),
            partitions,
            targets,
            idempotency,
            txns,
            removed: std::sync::atomic::AtomicBool::new(false),
            producer: std::sync::OnceLock::new(),
            writes: self.role.writes(),
            delivers: self.role.delivers(),
            keyless_epoch: std::time::Instant::now(),
            reserve: self.reserve.clone(),
        }))
    }

    /// The log options partitions open with.
    pub fn log_options(&self) -> wharf_log::LogOptions {
        self.log_opts
    }

    pub fn insert(&self, ns: Arc<Namespace>) {
        self.namespaces.write().unwrap_or_else(|p| p.into_inner()).insert(ns.name.clone(), ns);
    }

    /// Takes a namespace out of service; its data stays on disk.
    pub fn remove(&self, name: &str) -> Option<Arc<Namespace>> {
        let ns = self.namespaces.write().unwrap_or_else(|p| p.into_inner()).remove(name)?;
        ns.removed.store(true, Ordering::Relaxed);
        for t in &ns.targets {
            t.slot.send_replace(None);
        }
        for p in &ns.partitions {
            p.wake();
        }
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

    /// Starts the namespace's background tasks and one delivery lane per
    /// target and stream (log partition, or queue consumer). The lanes
    /// follow their target's plugin slot: they wait while it is empty and
    /// switch between two calls when it changes.
    pub fn start_delivery(&self, ns: &Arc<Namespace>) {
        if self.role.writes() && ns.cfg.queue.is_none() {
            self.spawn(crate::services::txn::expire_loop(ns.clone(), self.shutdown.subscribe()));
            if ns.cfg.mode == crate::config::NamespaceMode::Primary {
                self.spawn(mark_covered_loop(ns.clone(), self.shutdown.subscribe()));
            }
        }
        if self.role == Role::Processor && ns.cfg.queue.is_none() {
            let buffered = self.durability == wharf_log::Durability::Buffered;
            self.spawn(follow_watermarks(ns.clone(), buffered, self.shutdown.subscribe()));
        }
        if let Some(max_age_ms) = ns.cfg.retention.and_then(|r| r.max_age_ms)
            && self.role != Role::Consumer
        {
            self.spawn(expire_history(ns.clone(), max_age_ms, self.shutdown.subscribe()));
        }
        if !self.role.delivers() {
            return;
        }
        for target in &ns.targets {
            self.spawn(crate::engine::reconcile::run(ns.clone(), target.clone(), self.shutdown.subscribe()));
            match &ns.cfg.queue {
                Some(q) => {
                    let queue = queue_for_target(q, &target.cfg);
                    self.spawn(run_queue_lane(ns.clone(), target.clone(), queue, self.shutdown.subscribe()));
                }
                None => self.start_log_lanes(ns, target),
            }
        }
    }

    fn start_log_lanes(&self, ns: &Arc<Namespace>, target: &Arc<TargetRt>) {
        for part in &ns.partitions {
            let Some(log) = part.log.clone() else { continue };
            let Some(lane) = target.lane(part.index).cloned() else { continue };
            match LogSource::open(part.clone(), log, &target.name, ns.targets.len(), &target.dir) {
                Ok((source, start, rewinding)) => {
                    lane.set_rewind(rewinding);
                    let source = match target.cfg.target.ordering {
                        crate::config::Ordering::Partition => source.mirroring(),
                        crate::config::Ordering::Key => source,
                    };
                    let engine = Engine::new(
                        ns.clone(),
                        target.clone(),
                        lane,
                        Source::Log(source),
                        start,
                        self.shutdown.subscribe(),
                    );
                    self.spawn(engine.run());
                }
                Err(e) => part.halt(format!("target {}: {e}", target.name)),
            }
        }
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// A snapshot of every namespace, in name order.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Marks the process as draining (`/readyz` answers 503).
    pub fn begin_drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
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
async fn follow_watermarks(ns: Arc<Namespace>, buffered: bool, shutdown: watch::Receiver<bool>) {
    let refresh = move |w: &wharf_log::Partition| {
        if buffered {
            w.flush()?;
        }
        w.refresh_watermark().map(drop)
    };
    every_partition(ns, Duration::from_millis(200), shutdown, "consumer watermark not picked up", refresh)
        .await;
}

/// Retention by age with nothing delivered: deletes delivered segments as
/// they age out (GC otherwise runs only when a watermark moves).
async fn expire_history(ns: Arc<Namespace>, max_age_ms: u64, shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis((max_age_ms / 4).clamp(100, 10_000));
    let apply = |w: &wharf_log::Partition| w.apply_retention().map(drop);
    every_partition(ns, every, shutdown, "retention not applied; will retry", apply).await;
}

/// Every `period` until shutdown or the namespace's removal, runs `f` on
/// each partition this process writes (on a blocking thread); a failure is
/// logged with `what` and tried again next time.
async fn every_partition(
    ns: Arc<Namespace>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    f: impl Fn(&wharf_log::Partition) -> Result<(), wharf_log::LogError> + Clone + Send + 'static,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() || ns.removed.load(Ordering::Relaxed) {
            return;
        }
        for part in &ns.partitions {
            let Some(log) = part.log.clone() else { continue };
            let f = f.clone();
            let done = tokio::task::spawn_blocking(move || log.writer().map(f)).await;
            if let Ok(Some(Err(e))) = done {
                tracing::error!(namespace = %ns.name, partition = part.index, error = %e, "{what}");
            }
        }
    }
}

/// Every partition's head, or `None` if one has no log (it failed to open).
fn heads(partitions: &[Arc<PartitionRt>]) -> Option<Vec<u64>> {
    partitions.iter().map(|p| p.log.as_ref().map(|l| l.next_seq())).collect()
}

/// Every partition's durable head (an fdatasync each), or `None` if one
/// has no log it writes or fails to flush.
fn durable_heads(partitions: &[Arc<PartitionRt>]) -> Option<Vec<u64>> {
    partitions.iter().map(|p| p.log.as_ref()?.writer()?.flush().ok()).collect()
}

/// At open: folds into the window the keys of the messages appended since
/// its covered mark (every message, without one) that it lacks, then marks
/// the durable heads as covered. A replica reads every message (its
/// replicated messages' keys are folded in at start only) and writes no mark.
fn recover_keys(
    name: &str,
    partitions: &[Arc<PartitionRt>],
    idem: &Idempotency,
    primary: bool,
) -> anyhow::Result<()> {
    let covered = idem.last_covered().filter(|c| primary && c.len() == partitions.len());
    let from = |i: usize| covered.as_ref().map_or(0, |c| c[i]);
    let found: Vec<(Vec<Seen>, u64)> =
        partitions.par_iter().enumerate().map(|(i, p)| unrecorded_keys_in(p, idem, from(i))).collect();
    let read: u64 = found.iter().map(|(_, n)| n).sum();
    tracing::info!(
        namespace = name,
        records_read = read,
        from_mark = covered.is_some(),
        "idempotency window: retained messages read for unrecorded keys"
    );
    idem.recover(found.into_iter().flat_map(|(seen, _)| seen).collect())?;
    if !primary {
        return Ok(());
    }
    // Everything below the durable heads now has its key recorded. A mark
    // above a head (a log that lost its tail) must not outlive this start.
    match mark_if_moved(idem, partitions) {
        Ok(true) => {}
        outcome => {
            // A partition without a log, or a failed write: no proof now,
            // so the next start reads everything.
            if let Err(e) = outcome {
                tracing::warn!(namespace = name, error = %e, "idempotency window: covered mark not written");
            }
            idem.forget_covered()
                .with_context(|| format!("namespace {name}: removing a covered mark it could not renew"))?;
        }
    }
    Ok(())
}

/// Marks the partitions' durable heads as covered unless the last mark
/// already holds them (no mark counts as every head at 0: a start reads
/// from there either way). Whether the window is covered up to its heads.
/// Blocking (fdatasyncs, rename).
fn mark_if_moved(idem: &Idempotency, partitions: &[Arc<PartitionRt>]) -> std::io::Result<bool> {
    let Some(now) = heads(partitions) else { return Ok(false) };
    if idem.last_covered().unwrap_or_else(|| vec![0; now.len()]) == now {
        return Ok(true);
    }
    idem.mark_covered(|| durable_heads(partitions))
}

/// Every few seconds while messages arrive, and once at a clean stop: the
/// primary namespace's window marks the partitions' durable heads as
/// covered, so that a start after a crash reads only what came after.
/// Ends once the namespace is taken out of service, so that it holds the
/// namespace no longer than one period (a rebuild or a removal waits for
/// every holder to let go).
pub async fn mark_covered_loop(ns: Arc<Namespace>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MARK_COVERED_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() || ns.is_removed() {
            return;
        }
        mark_covered(&ns).await;
    }
}

/// How often [`mark_covered_loop`] marks a window whose heads moved.
const MARK_COVERED_EVERY: Duration = Duration::from_secs(2);

/// [`mark_if_moved`] for `ns` on the blocking pool, if it is a primary with
/// a window; whether the window is covered up to its heads.
async fn mark_covered(ns: &Arc<Namespace>) -> bool {
    if ns.idempotency.is_none() || ns.cfg.mode != crate::config::NamespaceMode::Primary {
        return false;
    }
    let ns2 = ns.clone();
    let marked = tokio::task::spawn_blocking(move || match &ns2.idempotency {
        Some(idem) => mark_if_moved(idem, &ns2.partitions).map_err(|e| e.to_string()),
        None => Ok(false),
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    marked.unwrap_or_else(|e| {
        tracing::warn!(namespace = %ns.name, error = %e, "idempotency window: covered mark not written");
        false
    })
}

/// At a clean stop, after the API and the delivery loops stopped: a last
/// covered mark per namespace, so the next start reads nothing.
pub async fn mark_clean_stops(namespaces: Vec<Arc<Namespace>>) {
    for ns in namespaces {
        if !mark_covered(&ns).await && ns.idempotency.is_some() {
            tracing::info!(namespace = %ns.name, "idempotency window: no covered mark at this stop; the next start reads from the last one");
        }
    }
}

/// The idempotency keys of one partition's retained messages from `from`
/// on that `idem` lacks (looked up in place: nothing is copied for a key it
/// has or one older than its window), and how many records were read. A
/// partition that fails to read here is skipped: it is halted already, or
/// will halt when its delivery loop reads the same records.
fn unrecorded_keys_in(p: &PartitionRt, idem: &Idempotency, from: u64) -> (Vec<Seen>, u64) {
    let mut out = Vec::new();
    let Some(log) = &p.log else { return (out, 0) };
    let mut from = from.min(log.next_seq()).max(log.first_seq());
    let mut read = 0;
    while let Ok(records) = log.read(from, 4096, 16 << 20) {
        let Some(last) = records.last() else { break };
        from = last.seq + 1;
        read += records.len() as u64;
        for r in records {
            if let Some((key, at_ms)) = envelope::idempotency_key_of(&r.payload)
                && idem.lacks(&key, at_ms)
            {
                out.push(Seen { key: key.into_owned(), message_id: message_id(p.index, r.seq), at_ms });
            }
        }
    }
    (out, read)
}

/// Where each target's rewind of partition `index` stands: the log keeps
/// what the oldest still reads, from open on. A rewind file that cannot be
/// read keeps everything (its lane will say why it cannot start).
fn rewind_positions(ns: &LoadedNamespace, ns_dir: &Path, index: u32) -> BTreeMap<String, u64> {
    ns.targets
        .iter()
        .filter_map(|t| match rewind::load(&rewind::path(&target_dir(ns_dir, &t.name), index)) {
            Ok(r) => r.map(|r| (t.name.clone(), r.position)),
            Err(_) => Some((t.name.clone(), 0)),
        })
        .collect()
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
    let last_written = log.as_deref().and_then(last_written_at);
    let mut part = PartitionRt::new(ns, index, log, halted);
    part.write_clock = WriteClock::after(last_written);
    part
}

/// The write time and sequence of the log's last record, where it is
/// still there.
fn last_written_at(log: &PartLog) -> Option<(u64, u64)> {
    let last = log.next_seq().checked_sub(1)?;
    let records = log.read(last, 1, usize::MAX).ok()?;
    records.first().and_then(|r| crate::storage::envelope::written_at(&r.payload)).map(|ms| (ms, last))
}

/// Before a replica partition opens: finishes a snapshot install whose
/// switch had begun, or discards one that never reached it
/// (`storage::snapshot_stage`). `Err` halts the partition.
fn finish_snapshot(ns: &LoadedNamespace, ns_dir: &Path, index: u32, role: Role) -> Result<(), String> {
    use crate::storage::snapshot_stage::{self, Paths, Recovered};
    if ns.mode != crate::config::NamespaceMode::Replica || !role.writes() {
        return Ok(());
    }
    let target_dirs: Vec<std::path::PathBuf> =
        ns.targets.iter().map(|t| target_dir(ns_dir, &t.name)).collect();
    match snapshot_stage::recover(&Paths::new(ns_dir, index), &target_dirs) {
        Ok(Recovered::Nothing) => {}
        Ok(Recovered::Discarded) => {
            tracing::warn!(namespace = %ns.name, partition = index, "discarded a snapshot staged before a crash; the partition is as it was")
        }
        Ok(Recovered::Finished(b)) => {
            tracing::warn!(namespace = %ns.name, partition = index, base = b.base_seq, end = b.end_seq, "finished switching in a snapshot interrupted by a crash")
        }
        Err(e) => {
            tracing::error!(namespace = %ns.name, partition = index, error = %e, "snapshot recovery failed; partition halted");
            return Err(format!("snapshot recovery: {e}"));
        }
    }
    Ok(())
}

/// Adds what replication needs to a partition: the chained digest (for a
/// mirroring target or a replica), and for a replica its halt and the
/// roll-forward of a batch staged before a crash.
fn with_replication(part: PartitionRt, ns: &LoadedNamespace, ns_dir: &Path) -> PartitionRt {
    let replica = ns.mode == crate::config::NamespaceMode::Replica;
    let mirrored = ns.targets.iter().any(|t| t.target.ordering == crate::config::Ordering::Partition);
    if !(replica || mirrored) {
        return part;
    }
    let part = part.with_chain(ns_dir);
    if !replica {
        return part;
    }
    let halt_path = crate::storage::halts::replica_path(ns_dir, part.index);
    let halt = crate::storage::halts::load(&halt_path)
        .unwrap_or_else(|e| Some(crate::storage::halts::Halt::new(format!("halt_file: {e}"))));
    let part = part.replica_of(halt);
    if part.log.as_ref().is_some_and(|l| l.writer().is_some())
        && let Err(e) = crate::services::replication::recover(&part)
    {
        part.halt(format!("rolling the staged replication batch forward: {e}"));
    }
    part
}

/// A target's queue: on Kafka each target but `default` is its own
/// consumer group (`<group>.<target>`), so that each reads every message.
fn queue_for_target(q: &wharf_queue::QueueConfig, target: &LoadedTarget) -> wharf_queue::QueueConfig {
    match q {
        wharf_queue::QueueConfig::Kafka(k) if target.name != crate::config::DEFAULT_TARGET => {
            let mut k = k.clone();
            k.group = format!("{}.{}", k.group, target.name);
            wharf_queue::QueueConfig::Kafka(k)
        }
        other => other.clone(),
    }
}

/// Opens the target's queue consumer (retrying while the broker is not
/// reachable), then runs its lane.
async fn run_queue_lane(
    ns: Arc<Namespace>,
    target: Arc<TargetRt>,
    queue: wharf_queue::QueueConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let consumer = loop {
        match wharf_queue::open_consumer(&queue).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(namespace = %ns.name, target = %target.name, error = %e, "cannot open the queue consumer; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let Some(lane) = target.lane(0).cloned() else { return };
    let source = Source::Queue(QueueSource::new(consumer));
    Engine::new(ns, target, lane, source, 0, shutdown).run().await;
}
