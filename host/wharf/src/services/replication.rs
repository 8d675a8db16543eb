//! The receiving side of replication: a replica namespace's partitions take
//! batches of records shipped by the primary's replica plugin, and prove on
//! every batch that they stay a prefix of the primary's history
//! (docs/replication.md has the protocol and the failure matrix).
//!
//! Invariants:
//! - Nothing is appended before the whole batch is checked: contiguous
//!   sequences, each record's CRC-32C, each record's chained digest, and the
//!   batch's place against the replica's own chain.
//! - A batch lands whole or not at all: staged (fsynced), appended,
//!   fsynced, unstaged; a stage left by a crash is rolled forward at start.
//! - What is acknowledged is fsynced: the reply names the durable end.
//! - Anything that is neither a byte-identical duplicate nor the next
//!   records halts replication of that partition, durably, with its reason.
//!   Nothing is repaired or skipped; only an operator resumes.

use std::sync::Arc;

use crate::engine::namespace::{Namespace, PartitionRt};
use crate::error::{Error, ErrorKind};
use crate::metrics;
use crate::storage::chain::{self, Chain};
use crate::storage::envelope::Envelope;
use crate::storage::halts::{self, Halt};
use crate::storage::replica_stage::{self, Staged};

/// Records per batch, at most.
pub const MAX_RECORDS: usize = 10_000;

/// One record as the primary shipped it.
#[derive(Debug, Clone)]
pub struct ShippedRecord {
    pub seq: u64,
    pub bytes: Vec<u8>,
    pub checksum: u32,
    pub digest: String,
    pub prev_digest: String,
}

/// A record on the wire, in a replication batch and in a snapshot page:
/// the stored bytes in standard base64.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RecordJson {
    pub seq: u64,
    pub bytes: String,
    pub checksum: u32,
    pub digest: String,
    pub prev_digest: String,
}

impl TryFrom<RecordJson> for ShippedRecord {
    type Error = String;

    fn try_from(r: RecordJson) -> Result<Self, String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r.bytes.as_bytes())
            .map_err(|e| format!("record {}: bytes are not base64: {e}", r.seq))?;
        Ok(ShippedRecord {
            seq: r.seq,
            bytes,
            checksum: r.checksum,
            digest: r.digest,
            prev_digest: r.prev_digest,
        })
    }
}

impl From<&ShippedRecord> for RecordJson {
    fn from(r: &ShippedRecord) -> Self {
        use base64::Engine as _;
        RecordJson {
            seq: r.seq,
            bytes: base64::engine::general_purpose::STANDARD.encode(&r.bytes),
            checksum: r.checksum,
            digest: r.digest.clone(),
            prev_digest: r.prev_digest.clone(),
        }
    }
}

/// Where a replica partition stands (the resume handshake).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionState {
    pub partition: u32,
    /// Every record below is durable here.
    pub end: u64,
    /// The chained digest of everything below `end`.
    pub digest: String,
    /// The oldest record still held.
    pub first_seq: u64,
    /// Why replication stopped, if it did.
    pub halt: Option<Halt>,
}

/// What a batch did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub end: u64,
    pub digest: String,
    pub appended: u64,
    pub duplicates: u64,
}

/// Why a batch halts replication: each is one row of the failure matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HaltKind {
    OutOfOrder,
    ChecksumMismatch,
    DigestMismatch,
    InvalidRecord,
    Diverged,
    Gap,
    DamagedTransfer,
}

impl HaltKind {
    fn code(self) -> &'static str {
        match self {
            HaltKind::OutOfOrder => "out_of_order",
            HaltKind::ChecksumMismatch => "checksum_mismatch",
            HaltKind::DigestMismatch => "digest_mismatch",
            HaltKind::InvalidRecord => "invalid_record",
            HaltKind::Diverged => "diverged",
            HaltKind::Gap => "gap",
            HaltKind::DamagedTransfer => "damaged_transfer",
        }
    }

    /// The error answered: damage in transit is unprocessable, a wrong
    /// place in history is a conflict with the replica's state.
    fn error(self, message: String) -> Error {
        match self {
            HaltKind::ChecksumMismatch => Error::new(ErrorKind::Unprocessable, "checksum_mismatch", message),
            HaltKind::DigestMismatch => Error::new(ErrorKind::Unprocessable, "digest_mismatch", message),
            HaltKind::InvalidRecord => Error::new(ErrorKind::Unprocessable, "invalid_record", message),
            HaltKind::DamagedTransfer => Error::new(ErrorKind::Unprocessable, "damaged_transfer", message),
            HaltKind::OutOfOrder => Error::new(ErrorKind::Conflict, "out_of_order", message),
            HaltKind::Diverged => Error::new(ErrorKind::Conflict, "diverged", message),
            HaltKind::Gap => Error::new(ErrorKind::Conflict, "gap", message),
        }
    }
}

/// The replica partition `p` of `ns`, or why there is none.
fn replica_part(ns: &Namespace, p: u32) -> Result<&Arc<PartitionRt>, Error> {
    if ns.cfg.mode != crate::config::NamespaceMode::Replica {
        return Err(Error::new(
            ErrorKind::Conflict,
            "not_a_replica",
            format!("namespace {} is not a replica (mode = \"replica\")", ns.name),
        ));
    }
    ns.partitions.get(p as usize).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "partition_not_found",
            format!(
                "namespace {} has {} partitions; there is no partition {p}",
                ns.name,
                ns.partitions.len()
            ),
        )
    })
}

fn unavailable(part: &PartitionRt, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "partition_halted",
        format!("partition {} of {} is halted: {why}", part.index, part.namespace),
    )
}

fn halted_error(part: &PartitionRt, halt: &Halt) -> Error {
    Error::new(
        ErrorKind::Conflict,
        "replication_halted",
        format!(
            "replication into partition {} of {} is halted: {} (an operator must act: docs/replication.md)",
            part.index, part.namespace, halt.reason
        ),
    )
}

/// The handshake: the replica's durable end and digest.
pub fn state(ns: &Namespace, p: u32) -> Result<PartitionState, Error> {
    let part = replica_part(ns, p)?;
    let log = part.log.as_ref().ok_or_else(|| unavailable(part, "log not open"))?;
    let (end, digest) = part.with_chain_mut(|c| (c.end(), c.head())).map_err(|e| unavailable(part, e))?;
    Ok(PartitionState {
        partition: p,
        end,
        digest: chain::to_hex(digest),
        first_seq: log.first_seq(),
        halt: part.replica_halt(),
    })
}

/// Applies one shipped batch (see the module's invariants).
pub async fn apply(ns: &Arc<Namespace>, p: u32, records: Vec<ShippedRecord>) -> Result<Applied, Error> {
    let part = replica_part(ns, p)?.clone();
    if records.is_empty() || records.len() > MAX_RECORDS {
        return Err(Error::bad(
            "invalid_batch",
            format!("a replication batch holds 1..={MAX_RECORDS} records; got {}", records.len()),
        ));
    }
    if part.log.as_ref().is_some_and(|l| l.writer().is_none()) {
        return Err(Error::role_consumer());
    }
    let replica = part.replica.as_ref().ok_or_else(|| Error::internal("replica partition without state"))?;
    let _one_at_a_time = replica.applying.lock().await;
    if let Some(h) = part.replica_halt() {
        return Err(halted_error(&part, &h));
    }
    if let Some(reason) = part.halted_reason() {
        return Err(unavailable(&part, reason));
    }
    if let Err((kind, reason)) = check_batch(&records) {
        return Err(halt(&part, kind, reason).await);
    }
    let (fresh, duplicates) =
        match part.with_chain_mut(|c| split_fresh(c, &records)).map_err(|e| unavailable(&part, e))? {
            Ok(split) => split,
            Err((kind, reason)) => return Err(halt(&part, kind, reason).await),
        };
    let appended = fresh.len() as u64;
    if !fresh.is_empty() {
        append_whole(part.clone(), fresh).await?;
        part.wake();
    }
    let m = metrics::get();
    m.replica_records.get_or_create(&metrics::ns_kind(&ns.name, "appended")).inc_by(appended);
    m.replica_records.get_or_create(&metrics::ns_kind(&ns.name, "duplicate")).inc_by(duplicates);
    let (end, digest) = part.with_chain_mut(|c| (c.end(), c.head())).map_err(|e| unavailable(&part, e))?;
    Ok(Applied { end, digest: chain::to_hex(digest), appended, duplicates })
}

/// A complete request body that does not parse (bytes damaged on the way,
/// or a sender that is not Wharf's replica plugin): halts replication like
/// a checksum mismatch, since nothing in it can be trusted.
pub async fn refuse_damaged(ns: &Namespace, p: u32, reason: String) -> Error {
    let part = match replica_part(ns, p) {
        Ok(part) => part.clone(),
        Err(e) => return e,
    };
    halt(&part, HaltKind::DamagedTransfer, reason).await
}

type Refusal = (HaltKind, String);

/// Checks the batch on its own: contiguous, undamaged, self-consistent.
fn check_batch(records: &[ShippedRecord]) -> Result<(), Refusal> {
    let first = records[0].seq;
    for (i, r) in records.iter().enumerate() {
        if r.seq != first + i as u64 {
            return Err((
                HaltKind::OutOfOrder,
                format!("record {} at position {i} of a batch starting at {first}", r.seq),
            ));
        }
        let crc = crc32c::crc32c(&r.bytes);
        if crc != r.checksum {
            return Err((
                HaltKind::ChecksumMismatch,
                format!(
                    "record {}: CRC-32C of the received bytes is {crc:08x}, the primary's is {:08x}",
                    r.seq, r.checksum
                ),
            ));
        }
        let (Some(prev), Some(digest)) = (chain::from_hex(&r.prev_digest), chain::from_hex(&r.digest)) else {
            return Err((
                HaltKind::DigestMismatch,
                format!("record {}: a digest is not 16 hex digits", r.seq),
            ));
        };
        if chain::link(prev, r.seq, &r.bytes) != digest {
            return Err((
                HaltKind::DigestMismatch,
                format!("record {}: its digest does not cover its bytes", r.seq),
            ));
        }
        if i > 0 && records[i - 1].digest != r.prev_digest {
            return Err((
                HaltKind::DigestMismatch,
                format!("record {} does not chain onto record {}", r.seq, r.seq - 1),
            ));
        }
        if let Err(e) = Envelope::decode(&r.bytes) {
            return Err((HaltKind::InvalidRecord, format!("record {} is not a wharf record: {e}", r.seq)));
        }
    }
    Ok(())
}

/// Splits the batch against the replica's chain: records it already holds
/// must be byte-identical (same digest), the rest must start at its end and
/// chain onto its head. Records below the chain's base (delivered and
/// deleted here) are acknowledged: nothing of them is left to compare.
fn split_fresh(chain: &Chain, records: &[ShippedRecord]) -> Result<(Staged, u64), Refusal> {
    let end = chain.end();
    let mut fresh = Vec::new();
    let mut duplicates = 0;
    for r in records {
        if r.seq < end {
            match chain.at(r.seq + 1) {
                None => {}
                Some(mine) if chain::to_hex(mine) == r.digest => {}
                Some(mine) => {
                    return Err((
                        HaltKind::Diverged,
                        format!(
                            "record {}: the replica's history has digest {} there, the primary's {}",
                            r.seq,
                            chain::to_hex(mine),
                            r.digest
                        ),
                    ));
                }
            }
            duplicates += 1;
            continue;
        }
        if fresh.is_empty() {
            if r.seq > end {
                return Err((
                    HaltKind::Gap,
                    format!("the replica holds records below {end}; the next shipped record is {}", r.seq),
                ));
            }
            if r.prev_digest != chain::to_hex(chain.head()) {
                return Err((
                    HaltKind::Diverged,
                    format!(
                        "the replica's history below {end} has digest {}, the primary's {}",
                        chain::to_hex(chain.head()),
                        r.prev_digest
                    ),
                ));
            }
        }
        fresh.push((r.seq, r.bytes.clone()));
    }
    Ok((fresh, duplicates))
}

/// Stages, appends and fsyncs `fresh`, links it into the chain, unstages.
async fn append_whole(part: Arc<PartitionRt>, fresh: Vec<(u64, Vec<u8>)>) -> Result<(), Error> {
    let worker = part.clone();
    let done = tokio::task::spawn_blocking(move || land(&worker, &fresh)).await;
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Landing::Temporary(e))) => Err(e),
        Ok(Err(Landing::Failed(reason))) => {
            part.halt(reason.clone());
            Err(unavailable(&part, reason))
        }
        Err(e) => Err(Error::internal(format!("replication append panicked: {e}"))),
    }
}

enum Landing {
    /// Nothing appended (disk full, no descriptor): the primary retries.
    Temporary(Error),
    /// The log refuses further appends: the partition halts.
    Failed(String),
}

/// The blocking part of [`append_whole`]; also the roll-forward at start.
fn land(part: &PartitionRt, records: &[(u64, Vec<u8>)]) -> Result<(), Landing> {
    let stage = replica_stage::path(&part.ns_dir, part.index);
    let what = format!("replica partition {} of {}", part.index, part.namespace);
    replica_stage::stage(&stage, records).map_err(|e| Landing::Temporary(Error::internal(e.to_string())))?;
    roll_forward(part, records).map_err(|e| match e {
        LandError::Log(e) => match Error::from_temporary(&e, &what) {
            Some(t) => {
                // The log rolled the append back; nothing of it is there.
                let _ = replica_stage::clear(&stage);
                Landing::Temporary(t)
            }
            None => Landing::Failed(e.to_string()),
        },
        LandError::Other(reason) => Landing::Failed(reason),
    })?;
    replica_stage::clear(&stage).map_err(|e| Landing::Failed(e.to_string()))
}

enum LandError {
    Log(wharf_log::LogError),
    Other(String),
}

/// Appends the staged records the log does not hold yet, fsyncs, and links
/// them into the chain.
fn roll_forward(part: &PartitionRt, records: &[(u64, Vec<u8>)]) -> Result<(), LandError> {
    let log = part.log.as_ref().ok_or_else(|| LandError::Other("log not open".into()))?;
    let writer =
        log.writer().ok_or_else(|| LandError::Other("this process does not write the log".into()))?;
    let next = log.next_seq();
    let missing: Vec<&(u64, Vec<u8>)> = records.iter().filter(|(seq, _)| *seq >= next).collect();
    if let Some((first, _)) = missing.first() {
        if *first != next {
            return Err(LandError::Other(format!("staged batch starts at {first}, the log ends at {next}")));
        }
        let refs: Vec<&[u8]> = missing.iter().map(|(_, b)| b.as_slice()).collect();
        let appended = writer.append(&refs).map_err(LandError::Log)?;
        if appended.first_seq != next {
            return Err(LandError::Other(format!(
                "the log put record {next} at {}: it is not a mirror any more",
                appended.first_seq
            )));
        }
        writer.flush().map_err(LandError::Log)?;
    }
    part.with_chain_mut(|c| c.catch_up(part.index, log))
        .map_err(LandError::Other)?
        .map_err(|e| LandError::Other(e.to_string()))
}

/// Halts replication of the partition, durably, and says why.
async fn halt(part: &Arc<PartitionRt>, kind: HaltKind, reason: String) -> Error {
    let h = Halt::new(format!("{}: {reason}", kind.code()));
    tracing::error!(namespace = %part.namespace, partition = part.index, reason = %h.reason, "replication halted; an operator must act");
    metrics::get().replica_halts.get_or_create(&metrics::ns_kind(&part.namespace, kind.code())).inc();
    let path = halts::replica_path(&part.ns_dir, part.index);
    let stored = {
        let h = h.clone();
        tokio::task::spawn_blocking(move || halts::store(&path, &h)).await
    };
    if !matches!(stored, Ok(Ok(()))) {
        tracing::error!(partition = part.index, "replication halt not persisted; it holds until a restart");
    }
    if let Some(r) = &part.replica {
        *r.halt.lock().unwrap_or_else(|p| p.into_inner()) = Some(h.clone());
    }
    kind.error(format!("partition {} of {}: {} (replication halted)", part.index, part.namespace, h.reason))
}

/// At start: rolls a staged batch forward (see the module doc).
pub fn recover(part: &PartitionRt) -> Result<(), String> {
    let stage = replica_stage::path(&part.ns_dir, part.index);
    let Some(records) = replica_stage::load(&stage).map_err(|e| e.to_string())? else { return Ok(()) };
    tracing::warn!(namespace = %part.namespace, partition = part.index, records = records.len(), "rolling a staged replication batch forward");
    roll_forward(part, &records).map_err(|e| match e {
        LandError::Log(e) => e.to_string(),
        LandError::Other(s) => s,
    })?;
    replica_stage::clear(&stage).map_err(|e| e.to_string())
}

/// An operator's resume: clears the replication halt of partition `p` (or
/// of every partition) and wakes its lanes. Returns the halts cleared.
pub async fn resume(ns: &Namespace, p: Option<u32>) -> Result<Vec<(u32, Halt)>, Error> {
    let parts: Vec<&Arc<PartitionRt>> = match p {
        Some(p) => vec![replica_part(ns, p)?],
        None => {
            replica_part(ns, 0)?;
            ns.partitions.iter().collect()
        }
    };
    let mut cleared = Vec::new();
    for part in parts {
        let Some(r) = &part.replica else { continue };
        let _one_at_a_time = r.applying.lock().await;
        let path = halts::replica_path(&part.ns_dir, part.index);
        tokio::task::spawn_blocking(move || halts::clear(&path))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(|e| Error::internal(e.to_string()))?;
        if let Some(h) = r.halt.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tracing::warn!(namespace = %ns.name, partition = part.index, was = %h.reason, "replication resumed by an operator");
            cleared.push((part.index, h));
        }
        for t in &ns.targets {
            if let Some(lane) = t.lane(part.index) {
                lane.poke.notify_one();
            }
        }
        part.wake();
    }
    Ok(cleared)
}
