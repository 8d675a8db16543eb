//! A namespace as the engine runs it: its partitions (the embedded log, or
//! nothing of ours for Kafka/SQS), its targets, and what writes need.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::LoadedNamespace;
use crate::engine::target::TargetRt;
use crate::error::{Error, ErrorKind};
use crate::storage::chain::{Chain, ChainError};
use crate::storage::halts::Halt;
use crate::storage::idempotency::Idempotency;
use crate::storage::part_log::PartLog;
use crate::storage::txn_store::{MarkerPlace, TxnStore};

/// How long keyless messages go to one partition before the next takes
/// over ([`Namespace::partition_for`]): several group-commit rounds (an
/// fdatasync takes 0.1-2 ms on common disks), short enough that a burst
/// of a few milliseconds is already spread.
pub const KEYLESS_STICK: std::time::Duration = std::time::Duration::from_millis(4);

#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    pub cfg: LoadedNamespace,
    /// The embedded log's partitions (empty for a Kafka/SQS namespace).
    pub partitions: Vec<Arc<PartitionRt>>,
    /// At least one, in name order.
    pub targets: Vec<Arc<TargetRt>>,
    /// The idempotency window, in a process that writes (`None` under
    /// `--role consumer`).
    pub idempotency: Option<Idempotency>,
    /// Parked chunks of multi-chunk transactions.
    pub txns: Arc<TxnStore>,
    /// Set when the namespace was removed from the config; its loops stop.
    pub removed: AtomicBool,
    /// The producer of a Kafka or SQS queue (unset for the embedded log, and
    /// in a consumer-only process).
    pub producer: std::sync::OnceLock<wharf_queue::AnyProducer>,
    /// This process takes writes (not `--role consumer`).
    pub writes: bool,
    /// This process delivers (not `--role processor`).
    pub delivers: bool,
    /// Start of the time slices that place keyless messages
    /// ([`Namespace::partition_for`]).
    pub keyless_epoch: std::time::Instant,
    /// The free-space reserve of the data dir (shared by every namespace).
    pub reserve: Arc<crate::storage::free_space::Reserve>,
}

#[derive(Debug)]
pub struct PartitionRt {
    pub namespace: String,
    pub index: u32,
    /// `None` when the log could not be opened (the partition is halted).
    pub log: Option<Arc<PartLog>>,
    /// Why the partition stopped; writes and deliveries are refused.
    pub halted: Mutex<Option<String>>,
    /// Bumped after each append: every lane of the partition wakes.
    pub appended: watch::Sender<u64>,
    /// With several targets: each target's persisted cursor. The log's
    /// watermark (what GC may delete below) is their minimum.
    pub cursors: Mutex<BTreeMap<String, u64>>,
    /// The last append was refused for a temporary condition (`disk_full`,
    /// `too_many_open_files`); cleared by the next append that succeeds.
    pub refusing: Mutex<Option<&'static str>>,
    /// The chained digest of the partition's history, when something needs
    /// it: a target with `ordering = "partition"` (it ships it), or a
    /// replica namespace (it checks it). See `storage::chain`.
    pub chain: Option<Mutex<Result<Chain, ChainError>>>,
    /// Set in a replica namespace.
    pub replica: Option<ReplicaPart>,
    /// Targets rewinding this partition, each with the oldest sequence it
    /// still reads: the log keeps history from their minimum on.
    pub history_holds: Mutex<BTreeMap<String, u64>>,
    /// `<data_dir>/<ns>`.
    pub ns_dir: std::path::PathBuf,
    /// Stamps each client write's time as the log appends it.
    pub write_clock: crate::storage::write_clock::WriteClock,
}

/// A replica partition's replication state.
#[derive(Debug, Default)]
pub struct ReplicaPart {
    /// Why replication stopped (persisted); while set, the partition takes
    /// no replication, serves no lookups and delivers nothing.
    pub halt: Mutex<Option<Halt>>,
    /// One batch applies at a time.
    pub applying: tokio::sync::Mutex<()>,
}

impl PartitionRt {
    pub fn new(namespace: &str, index: u32, log: Option<Arc<PartLog>>, halted: Option<String>) -> Self {
        Self {
            namespace: namespace.to_string(),
            index,
            log,
            halted: Mutex::new(halted),
            appended: watch::channel(0).0,
            cursors: Mutex::new(BTreeMap::new()),
            refusing: Mutex::new(None),
            chain: None,
            replica: None,
            history_holds: Mutex::new(BTreeMap::new()),
            ns_dir: std::path::PathBuf::new(),
            write_clock: Default::default(),
        }
    }

    /// Keeps the chained digest (built from the log now).
    pub fn with_chain(mut self, ns_dir: &std::path::Path) -> Self {
        self.ns_dir = ns_dir.to_path_buf();
        if let Some(log) = &self.log {
            let chain = Chain::open(ns_dir, self.index, log);
            if let Err(e) = &chain {
                tracing::error!(namespace = %self.namespace, partition = self.index, error = %e, "chained digest not built; replication of this partition halts");
            }
            self.chain = Some(Mutex::new(chain));
        }
        self
    }

    /// Starts with these targets' rewinds holding history (the log was
    /// opened with their minimum as its floor).
    pub fn holding(self, holds: BTreeMap<String, u64>) -> Self {
        *self.history_holds.lock().unwrap_or_else(|p| p.into_inner()) = holds;
        self
    }

    /// A target's rewind now reads from `from` (`None`: it is over); the
    /// log keeps history from the minimum over the targets.
    pub fn hold_history(&self, target: &str, from: Option<u64>) {
        let mut holds = self.history_holds.lock().unwrap_or_else(|p| p.into_inner());
        match from {
            Some(seq) => holds.insert(target.to_string(), seq),
            None => holds.remove(target),
        };
        if let Some(w) = self.log.as_ref().and_then(|l| l.writer()) {
            w.hold_history_from(holds.values().copied().min());
        }
    }

    /// Marks the partition a replica's, with its persisted halt.
    pub fn replica_of(mut self, halt: Option<Halt>) -> Self {
        self.replica = Some(ReplicaPart { halt: Mutex::new(halt), ..ReplicaPart::default() });
        self
    }

    /// Runs `f` on the chain, or says why there is none.
    pub fn with_chain_mut<R>(&self, f: impl FnOnce(&mut Chain) -> R) -> Result<R, String> {
        let Some(m) = &self.chain else { return Err("this partition keeps no chained digest".into()) };
        let mut guard = m.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Ok(chain) => Ok(f(chain)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Why replication into this replica partition stopped, if it did.
    pub fn replica_halt(&self) -> Option<Halt> {
        self.replica.as_ref().and_then(|r| r.halt.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Records why appends are refused for now (`None`: they succeed).
    pub fn set_refusing(&self, code: Option<&'static str>) {
        if let Ok(mut r) = self.refusing.lock() {
            *r = code;
        }
    }

    pub fn refusing(&self) -> Option<&'static str> {
        self.refusing.lock().ok().and_then(|r| *r)
    }

    pub fn halted_reason(&self) -> Option<String> {
        self.halted.lock().ok().and_then(|h| h.clone())
    }

    pub fn halt(&self, reason: String) {
        tracing::error!(namespace = %self.namespace, partition = self.index, %reason, "partition halted");
        if let Ok(mut h) = self.halted.lock() {
            h.get_or_insert(reason);
        }
    }

    /// Wakes every lane reading this partition.
    pub fn wake(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records a target's persisted cursor; returns the minimum over the
    /// targets, `None` until every target reported one.
    pub fn record_cursor(&self, target: &str, value: u64, targets: usize) -> Option<u64> {
        let mut c = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let slot = c.entry(target.to_string()).or_insert(value);
        *slot = (*slot).max(value);
        (c.len() >= targets).then(|| c.values().copied().min()).flatten()
    }
}

impl Namespace {
    /// The idempotency window, or why this process has none.
    pub fn idempotency(&self) -> Result<&Idempotency, Error> {
        self.idempotency.as_ref().ok_or_else(Error::role_consumer)
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// A target by name; `None` picks the only one (an error when there are
    /// several).
    pub fn target(&self, name: Option<&str>) -> Result<&Arc<TargetRt>, Error> {
        match name {
            Some(n) => self.targets.iter().find(|t| t.name == n).ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "target_not_found",
                    format!("namespace {} has no target {n:?}", self.name),
                )
            }),
            None if self.targets.len() == 1 => Ok(&self.targets[0]),
            None => Err(Error::bad(
                "target_required",
                format!(
                    "namespace {} has several targets ({}); name one with ?target=",
                    self.name,
                    self.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// Same key, same partition, forever: FNV-1a of the key. Keyless
    /// messages stick to one partition for [`KEYLESS_STICK`], then move to
    /// the next (Kafka's sticky partitioner, by time): concurrent keyless
    /// writes then share group-commit rounds in one log instead of paying
    /// one fdatasync per partition, and over time every partition gets its
    /// share.
    pub fn partition_for(&self, key: Option<&str>) -> u32 {
        let n = self.partitions.len().max(1) as u64;
        let at = match key {
            Some(k) => fnv1a(k.as_bytes()),
            None => (self.keyless_epoch.elapsed().as_micros() / KEYLESS_STICK.as_micros()) as u64,
        };
        (at % n) as u32
    }
}

/// Where a transaction's marker stands in these partitions' logs: with
/// `keeps_history` (a `retention` table), the chunk store keeps its chunks
/// while a rewind can still reach it; without, only until it finished.
pub fn marker_place(partitions: &[Arc<PartitionRt>], keeps_history: bool, marker: &str) -> MarkerPlace {
    let place = MarkerPlace::of(marker, |p| {
        let log = partitions.get(p as usize)?.log.as_ref()?;
        Some((log.first_seq(), log.watermark()))
    });
    match place {
        MarkerPlace::Retained if !keeps_history => MarkerPlace::Gone,
        place => place,
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
