//! Prometheus metrics (`GET /metrics`, OpenMetrics text).
//!
//! Names follow `wharf_<thing>_<unit>[_total]` (the client library adds
//! `_total` to counters). Labels are bounded: namespace, target, partition
//! (or lane), and small fixed enums (`kind`, `reason`, `outcome`); never keys
//! or message ids. Event metrics are recorded per batch or per request where
//! they happen; state (backlog, watermarks, DLQ size, breaker, halts) is set
//! at scrape time by `services::status`, from the same sources `/v1/status`
//! uses. This module only holds the registry: it imports nothing of the
//! host's, so every layer may record into it.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ns {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsPart {
    pub namespace: String,
    pub partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsTarget {
    pub namespace: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsTargetKind {
    pub namespace: String,
    pub target: String,
    pub kind: &'static str,
}

/// A lane: one target × one partition (or queue consumer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsTargetPart {
    pub namespace: String,
    pub target: String,
    pub partition: u32,
}

/// A target's halts, by the halt's code (`Halt::code`, bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsTargetReason {
    pub namespace: String,
    pub target: String,
    pub reason: String,
}

/// A target's reconcile passes, by how they ended (a small fixed enum).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsTargetResult {
    pub namespace: String,
    pub target: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NsKind {
    pub namespace: String,
    pub kind: &'static str,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

/// Every metric the host records.
pub struct Metrics {
    registry: Registry,
    pub writes: Family<Ns, Counter>,
    pub write_bytes: Family<Ns, Counter>,
    pub append_latency: Hist<Ns>,
    pub fsync_latency: Hist<Ns>,
    pub group_commit: Hist<Ns>,
    pub admission_rejections: Family<NsKind, Counter>,
    pub delivered: Family<NsTarget, Counter>,
    pub delivery_latency: Hist<NsTarget>,
    pub retries: Family<NsTargetKind, Counter>,
    pub dead_lettered: Family<NsTargetKind, Counter>,
    pub plugin_call_latency: Hist<NsTarget>,
    pub plugin_batch_size: Hist<NsTarget>,
    pub plugin_failures: Family<NsTargetKind, Counter>,
    pub plugin_quarantines: Family<NsTarget, Counter>,
    pub transactions: Family<NsKind, Counter>,
    // Read at scrape time.
    pub transactions_held: Family<NsKind, Gauge>,
    pub backlog_messages: Family<NsPart, Gauge>,
    pub backlog_bytes: Family<NsPart, Gauge>,
    pub backlog_age: Family<NsTargetPart, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub head: Family<NsPart, Gauge>,
    pub durable: Family<NsPart, Gauge>,
    pub watermark: Family<NsPart, Gauge>,
    pub in_flight: Family<NsTargetPart, Gauge>,
    pub plugin_instances: Family<NsTarget, Gauge>,
    pub halted: Family<NsPart, Gauge>,
    pub fsyncs: Family<NsPart, Gauge>,
    pub appends: Family<NsPart, Gauge>,
    pub dlq_messages: Family<NsTarget, Gauge>,
    pub target_backlog: Family<NsTargetPart, Gauge>,
    pub target_window: Family<NsTargetPart, Gauge>,
    pub breaker_open: Family<NsTargetPart, Gauge>,
    pub batch_limit: Family<NsTargetPart, Gauge>,
    pub retrying_keys: Family<NsTargetPart, Gauge>,
    pub plugin_quarantined: Family<NsTarget, Gauge>,
    pub target_halts: Family<NsTargetReason, Counter>,
    pub target_halted: Family<NsTargetPart, Gauge>,
    pub mirror_shipped_bytes: Family<NsTarget, Counter>,
    pub replica_records: Family<NsKind, Counter>,
    pub replica_halts: Family<NsKind, Counter>,
    pub replica_halted: Family<NsPart, Gauge>,
    pub otlp_export_failures: Counter,
    pub reconcile_runs: Family<NsTargetResult, Counter>,
    pub reconcile_repaired: Family<NsTarget, Counter>,
    pub reconcile_errors: Family<NsTarget, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let lat = || Hist::<Ns>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let tlat = || Hist::<NsTarget>::new_with_constructor(latency_histogram as fn() -> Histogram);
        Self {
            writes: reg!("wharf_writes", "Messages acknowledged to clients", Family::default()),
            write_bytes: reg!(
                "wharf_write_bytes",
                "Payload bytes acknowledged to clients",
                Family::default()
            ),
            append_latency: reg!(
                "wharf_append_seconds",
                "Time from request to durable append (dominated by the group-commit fdatasync)",
                lat()
            ),
            fsync_latency: reg!("wharf_fsync_seconds", "Duration of one group-commit fdatasync", lat()),
            group_commit: reg!(
                "wharf_group_commit_records",
                "Records made durable by one group-commit fdatasync",
                Hist::<Ns>::new_with_constructor(size_histogram as fn() -> Histogram)
            ),
            admission_rejections: reg!(
                "wharf_admission_rejections",
                "Writes refused by admission control or a temporary condition, by reason",
                Family::default()
            ),
            delivered: reg!("wharf_delivered", "Messages the target confirmed", Family::default()),
            delivery_latency: reg!(
                "wharf_delivery_latency_seconds",
                "Time from durable write to confirmed delivery",
                tlat()
            ),
            retries: reg!("wharf_retries", "Delivery attempts scheduled again, by kind", Family::default()),
            dead_lettered: reg!(
                "wharf_dead_lettered",
                "Messages moved to the DLQ, by kind",
                Family::default()
            ),
            plugin_call_latency: reg!("wharf_plugin_call_seconds", "Duration of one deliver call", tlat()),
            plugin_batch_size: reg!(
                "wharf_plugin_batch_messages",
                "Messages per deliver call",
                Hist::<NsTarget>::new_with_constructor(size_histogram as fn() -> Histogram)
            ),
            plugin_failures: reg!(
                "wharf_plugin_failures",
                "Failed plugin calls (trap, deadline, wrong_count, init), each discarding the instance",
                Family::default()
            ),
            plugin_quarantines: reg!("wharf_plugin_quarantines", "Plugins quarantined", Family::default()),
            transactions: reg!(
                "wharf_transactions",
                "Multi-chunk transactions begun, committed, aborted, expired or delivered",
                Family::default()
            ),
            transactions_held: reg!(
                "wharf_transactions_held",
                "Transactions whose chunks are parked: open, or committed and not yet delivered",
                Family::default()
            ),
            backlog_messages: reg!("wharf_backlog_messages", "Undelivered messages", Family::default()),
            backlog_bytes: reg!(
                "wharf_backlog_bytes",
                "Bytes held in the partition's segments",
                Family::default()
            ),
            backlog_age: reg!(
                "wharf_backlog_age_seconds",
                "Age of the oldest undelivered message in the delivery window",
                Family::default()
            ),
            head: reg!("wharf_log_head_sequence", "Next sequence to be appended", Family::default()),
            durable: reg!(
                "wharf_log_durable_sequence",
                "Records below this are fdatasync'd",
                Family::default()
            ),
            watermark: reg!(
                "wharf_log_watermark_sequence",
                "Persisted delivered watermark (all below are finished)",
                Family::default()
            ),
            in_flight: reg!("wharf_in_flight_messages", "Messages inside a plugin call", Family::default()),
            plugin_instances: reg!(
                "wharf_plugin_instances",
                "Plugin instances held by delivery lanes (dropped after delivery.instance_idle_ms unused)",
                Family::default()
            ),
            halted: reg!("wharf_partition_halted", "1 when the partition is halted", Family::default()),
            fsyncs: reg!(
                "wharf_log_fsyncs",
                "fdatasync calls since start (appends / fsyncs = group-commit size)",
                Family::default()
            ),
            appends: reg!("wharf_log_appends", "Append calls since start", Family::default()),
            dlq_messages: reg!("wharf_dlq_messages", "Entries in the target's DLQ", Family::default()),
            target_backlog: reg!(
                "wharf_target_backlog_messages",
                "Messages of the lane not yet delivered or dead-lettered for the target (log: head minus the target's watermark; queue: its window)",
                Family::default()
            ),
            target_window: reg!(
                "wharf_target_window_messages",
                "Messages in the lane's delivery window",
                Family::default()
            ),
            breaker_open: reg!("wharf_breaker_state", "0 closed, 1 open, 2 half-open", Family::default()),
            batch_limit: reg!(
                "wharf_batch_limit_messages",
                "The lane's current AIMD batch size",
                Family::default()
            ),
            retrying_keys: reg!(
                "wharf_retrying_keys",
                "Keys whose oldest message waits for a retry",
                Family::default()
            ),
            plugin_quarantined: reg!(
                "wharf_plugin_quarantined",
                "1 while the target's plugin is quarantined",
                Family::default()
            ),
            target_halts: reg!(
                "wharf_target_halts",
                "Times a plugin halted a target's cursor on a partition, by reason",
                Family::default()
            ),
            target_halted: reg!(
                "wharf_target_halted",
                "1 while a target's cursor on a partition is halted (until wharf target resume)",
                Family::default()
            ),
            mirror_shipped_bytes: reg!(
                "wharf_mirror_shipped_bytes",
                "Stored record bytes handed to a mirroring target (ordering = partition) and delivered",
                Family::default()
            ),
            replica_records: reg!(
                "wharf_replica_records",
                "Replicated records received by a replica: appended or duplicate",
                Family::default()
            ),
            replica_halts: reg!(
                "wharf_replica_halts",
                "Times replication into a replica partition halted, by kind",
                Family::default()
            ),
            replica_halted: reg!(
                "wharf_replica_halted",
                "1 while replication into a replica partition is halted",
                Family::default()
            ),
            otlp_export_failures: reg!(
                "wharf_otlp_export_failures",
                "Batches of spans the OTLP exporter could not deliver to the collector (dropped)",
                Counter::default()
            ),
            reconcile_runs: reg!(
                "wharf_reconcile_runs",
                "Reconcile passes of a target's plugin, by result (ok, errors, trap, deadline, init)",
                Family::default()
            ),
            reconcile_repaired: reg!(
                "wharf_reconcile_repaired",
                "Inconsistencies a target's reconcile passes repaired",
                Family::default()
            ),
            reconcile_errors: reg!(
                "wharf_reconcile_errors",
                "Errors a target's reconcile passes reported (what they could not repair)",
                Family::default()
            ),
            registry: r,
        }
    }

    /// Creates every per-namespace and per-target series at zero, so a
    /// scrape shows each metric (and a counter's first increase) from the
    /// start.
    pub fn zero_series(&self, namespace: &str, targets: &[&str]) {
        let l = ns(namespace);
        let _ = self.writes.get_or_create(&l);
        let _ = self.write_bytes.get_or_create(&l);
        let _ = self.append_latency.get_or_create(&l);
        let _ = self.fsync_latency.get_or_create(&l);
        let _ = self.group_commit.get_or_create(&l);
        for kind in ["messages", "bytes", "age", "disk_full", "too_many_open_files"] {
            let _ = self.admission_rejections.get_or_create(&ns_kind(namespace, kind));
        }
        for kind in ["begun", "committed", "aborted", "expired", "delivered"] {
            let _ = self.transactions.get_or_create(&ns_kind(namespace, kind));
        }
        for target in targets {
            let t = ns_target(namespace, target);
            let _ = self.delivered.get_or_create(&t);
            let _ = self.delivery_latency.get_or_create(&t);
            let _ = self.plugin_call_latency.get_or_create(&t);
            let _ = self.plugin_batch_size.get_or_create(&t);
            let _ = self.plugin_quarantines.get_or_create(&t);
            for kind in ["retry", "trap", "deadline", "wrong_count", "init"] {
                let _ = self.retries.get_or_create(&ns_target_kind(namespace, target, kind));
            }
            for kind in ["reject", "exhausted", "poison", "operator"] {
                let _ = self.dead_lettered.get_or_create(&ns_target_kind(namespace, target, kind));
            }
            for kind in ["trap", "deadline", "wrong_count", "init"] {
                let _ = self.plugin_failures.get_or_create(&ns_target_kind(namespace, target, kind));
            }
        }
    }

    /// Encodes every metric (after the state gauges were set).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Feeds a partition's group commits into `wharf_fsync_seconds` and
/// `wharf_group_commit_records`.
pub fn observe_fsyncs(log: &wharf_log::Partition, namespace: &str) {
    let label = ns(namespace);
    log.set_fsync_observer(std::sync::Arc::new(move |took, records| {
        let m = get();
        m.fsync_latency.get_or_create(&label).observe(took.as_secs_f64());
        m.group_commit.get_or_create(&label).observe(records as f64);
    }));
}

pub fn ns(namespace: &str) -> Ns {
    Ns { namespace: namespace.to_string() }
}

pub fn ns_kind(namespace: &str, kind: &'static str) -> NsKind {
    NsKind { namespace: namespace.to_string(), kind }
}

pub fn ns_target(namespace: &str, target: &str) -> NsTarget {
    NsTarget { namespace: namespace.to_string(), target: target.to_string() }
}

pub fn ns_target_kind(namespace: &str, target: &str, kind: &'static str) -> NsTargetKind {
    NsTargetKind { namespace: namespace.to_string(), target: target.to_string(), kind }
}

pub fn ns_target_result(namespace: &str, target: &str, result: &'static str) -> NsTargetResult {
    NsTargetResult { namespace: namespace.to_string(), target: target.to_string(), result }
}

pub fn ns_target_reason(namespace: &str, target: &str, reason: &str) -> NsTargetReason {
    NsTargetReason {
        namespace: namespace.to_string(),
        target: target.to_string(),
        reason: reason.to_string(),
    }
}

pub fn ns_target_part(namespace: &str, target: &str, partition: u32) -> NsTargetPart {
    NsTargetPart { namespace: namespace.to_string(), target: target.to_string(), partition }
}
