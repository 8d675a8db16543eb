//! What `/v1/status` (and gRPC `Status`) shows, and the state gauges of
//! `/metrics`, read from the same sources at request time.
//!
//! Per namespace: its partitions (the log: head, durable end, the
//! watermark GC may delete below, which is the slowest target's) and its
//! targets; per target: its plugin, its DLQ size, and one entry per lane
//! (log partition, or queue consumer) with the target's own watermark,
//! backlog, lag and the delivery window (breaker, AIMD, retries).

use std::sync::Arc;

use serde_json::json;

use crate::clock::now_ms;
use crate::engine::breaker::BreakerState;
use crate::engine::namespace::Namespace;
use crate::engine::target::{Lane, PluginState, TargetRt};
use crate::metrics;

/// Whether a namespace can deliver: every partition open (not halted) and
/// every target's plugin loaded. `Err` says why not. Writes are accepted
/// either way (they are durable first); this is what `/readyz` reports.
pub fn namespace_ready(ns: &Namespace) -> Result<(), String> {
    if let Some(p) = ns.partitions.iter().find(|p| p.halted_reason().is_some()) {
        return Err(format!("partition {} is halted", p.index));
    }
    for t in &ns.targets {
        let plugin = t.plugin_status();
        if plugin.state != PluginState::Ready {
            let why = plugin.reason.unwrap_or_default();
            return Err(format!("target {}: plugin {:?} {why}", t.name, plugin.state).trim_end().to_string());
        }
    }
    Ok(())
}

/// The body of `GET /readyz`: the process's state and each namespace's
/// readiness.
pub fn readiness_json(namespaces: &[Arc<Namespace>], draining: bool) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for ns in namespaces {
        let (ready, reason) = match namespace_ready(ns) {
            Ok(()) => (true, None),
            Err(why) => (false, Some(why)),
        };
        out.insert(ns.name.clone(), json!({"ready": ready, "reason": reason}));
    }
    json!({"state": if draining { "draining" } else { "ready" }, "namespaces": out})
}

/// The body of `GET /v1/status`.
pub fn status_json(namespaces: &[Arc<Namespace>], durability: wharf_log::Durability) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for ns in namespaces {
        out.insert(ns.name.clone(), namespace_json(ns));
    }
    // Every namespace shares the data dir's reserve.
    let disk = namespaces.first().map(|ns| {
        let r = &ns.reserve;
        json!({"free_bytes": r.free_bytes(), "min_free_bytes": r.min_free, "refusing_writes": r.short().is_some()})
    });
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "durability": durability,
        "disk": disk,
        "namespaces": out,
    })
}

fn namespace_json(ns: &Namespace) -> serde_json::Value {
    let first = ns.targets.first();
    let partitions: Vec<_> = ns
        .partitions
        .iter()
        .map(|p| {
            let st = p.log.as_ref().map(|l| l.stats());
            let (head, durable, watermark) =
                st.as_ref().map(|s| (s.next_seq, s.synced_seq, s.watermark)).unwrap_or((0, 0, 0));
            let window = first.and_then(|t| t.lane(p.index)).map(|l| json!(l.with(|w| w.snapshot())));
            json!({
                "partition": p.index,
                "head_sequence": head,
                "durable_sequence": durable,
                "delivered_watermark": watermark,
                "backlog": head.saturating_sub(watermark),
                "delivery": window,
                "halted": p.halted_reason().is_some(),
                "halted_reason": p.halted_reason(),
                "refusing_writes": p.refusing(),
                "retained_from": super::history::oldest(p).map(|o| json!({
                    "sequence": o.sequence,
                    "written_at": o.written_at_ms.map(super::history::rfc3339),
                })),
                "chain": chain_json(p),
                "replication": p.replica.as_ref().map(|_| match p.replica_halt() {
                    Some(h) => json!({"state": "halted", "halt": h}),
                    None => json!({"state": "replicating", "halt": null}),
                }),
            })
        })
        .collect();
    let targets: serde_json::Map<String, serde_json::Value> =
        ns.targets.iter().map(|t| (t.name.clone(), target_json(ns, t))).collect();
    json!({
        "partitions": partitions,
        "targets": targets,
        // The first target's, as before targets had names.
        "plugin": first.map(|t| json!(t.plugin_status())),
        "dlq_size": first.and_then(|t| t.dlq.as_ref().map(|d| d.len())),
        "queue": ns.cfg.queue.clone().unwrap_or(wharf_queue::QueueConfig::Embedded),
        "mode": ns.cfg.mode,
    })
}

/// The partition's chained digest (end and head), where it keeps one.
fn chain_json(p: &crate::engine::namespace::PartitionRt) -> serde_json::Value {
    p.chain.as_ref().map_or(serde_json::Value::Null, |_| {
        match p.with_chain_mut(|c| (c.end(), crate::storage::chain::to_hex(c.head()))) {
            Ok((end, digest)) => json!({"end": end, "digest": digest}),
            Err(e) => json!({"error": e}),
        }
    })
}

/// One lane's progress: the target's watermark, backlog and lag.
#[derive(Debug, Clone, Copy)]
struct Progress {
    watermark: u64,
    backlog: u64,
    lag_ms: u64,
}

fn progress(ns: &Namespace, lane: &Lane) -> Progress {
    let (watermark, window, oldest) =
        lane.with(|w| (w.watermark(), w.len() as u64, w.oldest_written_at_ms()));
    let lag_ms = oldest.map(|o| now_ms().saturating_sub(o)).unwrap_or(0);
    let head = ns.partitions.get(lane.index as usize).and_then(|p| p.log.as_ref()).map(|l| l.next_seq());
    let backlog = match (ns.cfg.queue.is_some(), head) {
        (false, Some(head)) => head.saturating_sub(watermark),
        // A queue's backlog beyond the window is the broker's to tell.
        _ => window,
    };
    Progress { watermark, backlog, lag_ms }
}

fn target_json(ns: &Namespace, t: &TargetRt) -> serde_json::Value {
    let lanes: Vec<_> = t
        .lanes
        .iter()
        .map(|l| {
            let p = progress(ns, l);
            json!({
                "partition": l.index,
                "delivered_watermark": p.watermark,
                "backlog": p.backlog,
                "lag_ms": p.lag_ms,
                "delivery": l.with(|w| w.snapshot()),
                "halted": l.halted().is_some(),
                "halt": l.halted(),
                "rewind": l.rewind().map(|r| json!({
                    "position": r.position,
                    "end": r.end,
                    "remaining": r.end.saturating_sub(p.watermark.max(r.position)),
                })),
            })
        })
        .collect();
    json!({
        "plugin": t.plugin_status(),
        "dlq_size": t.dlq.as_ref().map(|d| d.len()),
        "ordering": t.cfg.target.ordering,
        "reconcile": t.reconcile.json(&t.cfg.target),
        "partitions": lanes,
    })
}

/// Sets the state gauges from every namespace, then encodes `/metrics`.
pub fn render_metrics(namespaces: &[Arc<Namespace>]) -> String {
    let m = metrics::get();
    for ns in namespaces {
        let names: Vec<&str> = ns.targets.iter().map(|t| t.name.as_str()).collect();
        m.zero_series(&ns.name, &names);
        let (open, committed) = ns.txns.counts();
        m.transactions_held.get_or_create(&metrics::ns_kind(&ns.name, "open")).set(open as i64);
        m.transactions_held.get_or_create(&metrics::ns_kind(&ns.name, "committed")).set(committed as i64);
        partition_gauges(ns);
        for t in &ns.targets {
            target_gauges(ns, t);
        }
    }
    m.encode()
}

fn partition_gauges(ns: &Namespace) {
    let m = metrics::get();
    for p in &ns.partitions {
        let l = metrics::NsPart { namespace: ns.name.clone(), partition: p.index };
        m.halted.get_or_create(&l).set(i64::from(p.halted_reason().is_some()));
        if p.replica.is_some() {
            m.replica_halted.get_or_create(&l).set(i64::from(p.replica_halt().is_some()));
        }
        if let Some(log) = &p.log {
            let st = log.stats();
            m.head.get_or_create(&l).set(st.next_seq as i64);
            m.durable.get_or_create(&l).set(st.synced_seq as i64);
            m.watermark.get_or_create(&l).set(st.watermark as i64);
            m.backlog_messages.get_or_create(&l).set(st.next_seq.saturating_sub(st.watermark) as i64);
            m.backlog_bytes.get_or_create(&l).set((st.bytes - st.delivered_bytes) as i64);
            m.fsyncs.get_or_create(&l).set(st.fsyncs as i64);
            m.appends.get_or_create(&l).set(st.appends as i64);
        }
    }
}

fn target_gauges(ns: &Namespace, t: &TargetRt) {
    let m = metrics::get();
    let label = metrics::ns_target(&ns.name, &t.name);
    m.dlq_messages.get_or_create(&label).set(t.dlq.as_ref().map_or(0, |d| d.len()) as i64);
    m.plugin_quarantined
        .get_or_create(&label)
        .set(i64::from(t.plugin_status().state == PluginState::Quarantined));
    for lane in &t.lanes {
        let l = metrics::ns_target_part(&ns.name, &t.name, lane.index);
        let p = progress(ns, lane);
        let snap = lane.with(|w| w.snapshot());
        m.backlog_age.get_or_create(&l).set(p.lag_ms as f64 / 1000.0);
        m.in_flight.get_or_create(&l).set(snap.in_flight as i64);
        m.target_backlog.get_or_create(&l).set(p.backlog as i64);
        m.target_window.get_or_create(&l).set(snap.window as i64);
        m.batch_limit.get_or_create(&l).set(snap.batch_limit as i64);
        m.retrying_keys.get_or_create(&l).set(snap.retrying_keys as i64);
        let breaker = match snap.breaker {
            BreakerState::Closed => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen => 2,
        };
        m.breaker_open.get_or_create(&l).set(breaker);
        m.target_halted.get_or_create(&l).set(i64::from(lane.halted().is_some()));
    }
}
