//! Retained history: where it starts, and rewinding targets through it
//! (`wharf rewind`, `POST /v1/admin/namespaces/{ns}/rewind`).
//!
//! A rewind moves one lane per target and partition back to an earlier
//! sequence; the lane re-delivers from there in log order (so per-key order
//! holds and new writes follow the history, never overtake it), flags what
//! it delivered before as a replay, and keeps its progress in a rewind file
//! so that a restart goes on where it stood. Every point asked for is
//! checked before any lane moves; asking for history the log no longer
//! holds names the oldest point it does hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Ordering;
use crate::engine::namespace::{Namespace, PartitionRt};
use crate::engine::target::{RewindRefused, RewindRequest, TargetRt};
use crate::error::{Error, ErrorKind};
use crate::storage::envelope::Envelope;

/// How long a lane may take to get to a rewind (it does between two
/// plugin calls).
const LANE_ANSWER: Duration = Duration::from_secs(60);

/// Where a rewind starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewindFrom {
    /// The oldest retained record of every partition.
    Earliest,
    /// The first record written at or after this time (ms since the epoch)
    /// in every partition.
    Time(u64),
    /// These partitions from these sequences; the others are not rewound.
    Sequences(BTreeMap<u32, u64>),
}

/// One lane's rewind, as started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneRewind {
    pub target: String,
    pub partition: u32,
    /// The lane re-reads from here.
    pub from: u64,
    /// Sequences below this were read before: they are replays.
    pub end: u64,
}

/// The oldest record a partition still holds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Oldest {
    pub sequence: u64,
    /// When it was written (ms since the epoch); `None` for an empty log.
    pub written_at_ms: Option<u64>,
}

/// The oldest retained record of a partition (`None`: the log is not open).
pub fn oldest(part: &PartitionRt) -> Option<Oldest> {
    let log = part.log.as_ref()?;
    let sequence = log.first_seq();
    let written_at_ms = log
        .read(sequence, 1, 16 << 20)
        .ok()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| Envelope::decode(&r.payload).ok())
        .map(|e| e.written_at_ms);
    Some(Oldest { sequence, written_at_ms })
}

/// RFC 3339, UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms as i64);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| format!("{ms} ms"))
}

/// Parses an RFC 3339 time into ms since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<u64, Error> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| {
        Error::new(ErrorKind::Invalid, "invalid_time", format!("{s:?} is not an RFC 3339 time ({e})"))
    })?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| Error::new(ErrorKind::Invalid, "invalid_time", format!("{s:?} is before 1970")))
}

/// Rewinds `target` (every target when `None`) of `ns` to `from`.
pub async fn rewind(
    ns: &Arc<Namespace>,
    target: Option<&str>,
    from: RewindFrom,
) -> Result<Vec<LaneRewind>, Error> {
    if ns.cfg.queue.is_some() {
        return Err(unsupported(
            "a rewind re-reads the embedded log; on a Kafka or SQS namespace, reset the consumer group or queue with the broker's own tools",
        ));
    }
    let targets = targets(ns, target)?;
    let starts = starts(ns, &from)?;
    let mut started = Vec::new();
    for t in &targets {
        for (&partition, &seq) in &starts {
            started.push(rewind_lane(t, partition, seq).await?);
        }
    }
    Ok(started)
}

/// The targets to rewind: named, or all. A target that mirrors the log
/// (`ordering = "partition"`, a replica) ships it once, in order: it is
/// never rewound (rebuild the replica instead).
fn targets<'a>(ns: &'a Namespace, name: Option<&str>) -> Result<Vec<&'a Arc<TargetRt>>, Error> {
    let chosen: Vec<_> = match name {
        Some(n) => vec![ns.target(Some(n))?],
        None => ns.targets.iter().filter(|t| t.cfg.target.ordering != Ordering::Partition).collect(),
    };
    if let Some(t) = chosen.iter().find(|t| t.cfg.target.ordering == Ordering::Partition) {
        return Err(unsupported(&format!(
            "target {} mirrors the log to a replica (ordering = \"partition\"); it is never rewound",
            t.name
        )));
    }
    if chosen.is_empty() {
        return Err(unsupported("no target of this namespace can be rewound"));
    }
    for t in &chosen {
        t.dlq()?; // Lanes run only in a delivering process.
    }
    Ok(chosen)
}

/// The sequence each partition rewinds to, all checked before any lane moves.
fn starts(ns: &Namespace, from: &RewindFrom) -> Result<BTreeMap<u32, u64>, Error> {
    let mut out = BTreeMap::new();
    if let RewindFrom::Sequences(seqs) = from {
        for (&p, &seq) in seqs {
            let part = ns.partitions.get(p as usize).ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "partition_not_found",
                    format!("namespace {} has partitions 0..{}", ns.name, ns.partitions.len()),
                )
            })?;
            out.insert(p, start_at(part, seq)?);
        }
        return Ok(out);
    }
    for part in &ns.partitions {
        let seq = match from {
            RewindFrom::Time(t) => first_written_since(part, *t)?,
            _ => writer(part)?.first_seq(),
        };
        out.insert(part.index, seq);
    }
    Ok(out)
}

/// The partition's log, open, not halted (its lanes stopped) and written
/// by this process (its GC is the one that must keep the history).
fn writer(part: &PartitionRt) -> Result<&crate::storage::part_log::PartLog, Error> {
    let halted = || {
        Error::new(
            ErrorKind::Unavailable,
            "partition_halted",
            format!("partition {} is halted: {}", part.index, part.halted_reason().unwrap_or_default()),
        )
    };
    let log = part.log.as_deref().ok_or_else(halted)?;
    if part.halted_reason().is_some() {
        return Err(halted());
    }
    match log.writer() {
        Some(_) => Ok(log),
        None => Err(Error::new(
            ErrorKind::Conflict,
            "rewind_needs_role_all",
            "a rewind runs in a process that both writes and delivers (--role all): the writer's GC must keep the history",
        )),
    }
}

fn start_at(part: &PartitionRt, seq: u64) -> Result<u64, Error> {
    let log = writer(part)?;
    if seq > log.next_seq() {
        return Err(Error::new(
            ErrorKind::Invalid,
            "rewind_beyond_head",
            format!("partition {} ends at sequence {}; {seq} is beyond it", part.index, log.next_seq()),
        ));
    }
    match seq < log.first_seq() {
        true => Err(not_retained(part)),
        false => Ok(seq),
    }
}

/// The first sequence written at or after `t`; the head when none is.
fn first_written_since(part: &PartitionRt, t: u64) -> Result<u64, Error> {
    let log = writer(part)?;
    let oldest = oldest(part).unwrap_or(Oldest { sequence: 0, written_at_ms: None });
    if oldest.sequence > 0 && oldest.written_at_ms.is_some_and(|w| t < w) {
        return Err(not_retained(part));
    }
    let mut from = oldest.sequence;
    loop {
        let records = log.read(from, 4096, 16 << 20).map_err(|e| Error::internal(e.to_string()))?;
        let Some(last) = records.last().map(|r| r.seq) else { return Ok(log.next_seq()) };
        for r in records {
            let written = Envelope::decode(&r.payload).map(|e| e.written_at_ms).unwrap_or(0);
            if written >= t {
                return Ok(r.seq);
            }
        }
        from = last + 1;
    }
}

fn not_retained(part: &PartitionRt) -> Error {
    let point = match oldest(part) {
        Some(Oldest { sequence, written_at_ms: Some(at) }) => {
            format!("sequence {sequence}, written {}", rfc3339(at))
        }
        Some(Oldest { sequence, written_at_ms: None }) => format!("sequence {sequence}"),
        None => "nothing".to_string(),
    };
    Error::new(
        ErrorKind::Gone,
        "history_not_retained",
        format!(
            "partition {} retains history from {point} on; ask for that or later (or --earliest), and keep more with [namespaces.<ns>.retention]",
            part.index
        ),
    )
}

fn unsupported(why: &str) -> Error {
    Error::new(ErrorKind::Conflict, "rewind_unsupported", why)
}

async fn rewind_lane(t: &TargetRt, partition: u32, from: u64) -> Result<LaneRewind, Error> {
    let lane = t
        .lane(partition)
        .ok_or_else(|| Error::internal(format!("target {} has no lane {partition}", t.name)))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    lane.request_rewind(RewindRequest { from, reply });
    let refused = |e: RewindRefused| match e {
        RewindRefused::NotRetained { first } => Error::new(
            ErrorKind::Gone,
            "history_not_retained",
            format!("partition {partition} retains history from sequence {first} on"),
        ),
        RewindRefused::Io(e) => Error::internal(format!("target {} partition {partition}: {e}", t.name)),
        RewindRefused::NotLog => unsupported("a rewind re-reads the embedded log; this lane reads a queue"),
    };
    match tokio::time::timeout(LANE_ANSWER, answer).await {
        Ok(Ok(Ok(r))) => {
            tracing::warn!(target = %t.name, partition, from = r.position, end = r.end, "rewind started");
            Ok(LaneRewind { target: t.name.clone(), partition, from: r.position, end: r.end })
        }
        Ok(Ok(Err(e))) => Err(refused(e)),
        Ok(Err(_)) => Err(Error::new(
            ErrorKind::Unavailable,
            "lane_stopped",
            format!("target {} partition {partition} is not delivering (halted or shutting down)", t.name),
        )),
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            "lane_busy",
            format!(
                "target {} partition {partition} did not take the rewind within {} s; try again",
                t.name,
                LANE_ANSWER.as_secs()
            ),
        )),
    }
}
