//! A target's dead-letter queue: a durable log of messages the target
//! rejected or that ran out of attempts, with their failure history.
//!
//! It is a `wharf_log::Partition` under `<data_dir>/<ns>/dlq/` for the
//! target named `default`, `<data_dir>/<ns>/targets/<name>/dlq/` for the
//! others (also on Kafka/SQS namespaces: in the delivering process's data
//! dir). Records are a version byte plus postcard of [`DlqRecord`]: an
//! entry, or a tombstone that deletes an earlier entry. Versions 1
//! (envelopes before transactions) and 2 (before `only_target`) are still
//! read; version 3 is written. The live set is rebuilt from the log at open.
//! A message is finished (its key freed, the watermark allowed past it) only
//! after its entry is durable here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::storage::envelope::Envelope;

const VERSION: u8 = 3;

/// Why an attempt failed. Stored as its name (`as_str`), so the on-disk
/// form stays a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin asked for a retry.
    Retry,
    /// The plugin rejected the message.
    Reject,
    /// The plugin trapped.
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The plugin answered a wrong number of outcomes.
    WrongCount,
    /// The plugin failed to instantiate or init.
    Init,
    /// The plugin could not be loaded.
    Load,
    /// A transaction could not be reassembled.
    Transaction,
    /// Bytes on a queue that are not a Wharf envelope.
    Decode,
    /// Retries ran out.
    Exhausted,
    /// The message trapped the plugin `poison_after` times on its own.
    Poison,
    /// An operator moved it to the DLQ (`wharf dlq move`).
    Operator,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Retry => "retry",
            FailureKind::Reject => "reject",
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::WrongCount => "wrong_count",
            FailureKind::Init => "init",
            FailureKind::Load => "load",
            FailureKind::Transaction => "transaction",
            FailureKind::Decode => "decode",
            FailureKind::Exhausted => "exhausted",
            FailureKind::Poison => "poison",
            FailureKind::Operator => "operator",
        }
    }
}

impl From<FailureKind> for String {
    fn from(k: FailureKind) -> Self {
        k.as_str().to_string()
    }
}

/// One failed attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub attempt: u32,
    pub at_ms: u64,
    /// `retry`, `reject`, `trap`, `deadline`, `wrong_count`, `init`.
    pub kind: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DlqEntry {
    pub message_id: String,
    pub partition: u32,
    pub sequence: u64,
    pub envelope: Envelope,
    pub failures: Vec<Failure>,
    pub plugin_digest: String,
    pub dead_lettered_at_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DlqRecord {
    /// Boxed: the same bytes on disk (serde sees through a box).
    Entry(Box<DlqEntry>),
    Deleted {
        message_id: String,
    },
}

/// The version 2 layout, frozen (envelopes before `only_target`).
#[derive(Debug, Deserialize)]
#[allow(clippy::large_enum_variant, reason = "decoded once per record at open, then converted")]
enum DlqRecordV2 {
    Entry {
        message_id: String,
        partition: u32,
        sequence: u64,
        envelope: crate::storage::envelope::EnvelopeV2,
        failures: Vec<Failure>,
        plugin_digest: String,
        dead_lettered_at_ms: u64,
    },
    Deleted {
        message_id: String,
    },
}

impl From<DlqRecordV2> for DlqRecord {
    fn from(r: DlqRecordV2) -> Self {
        match r {
            DlqRecordV2::Entry {
                message_id,
                partition,
                sequence,
                envelope,
                failures,
                plugin_digest,
                dead_lettered_at_ms,
            } => DlqRecord::Entry(Box::new(DlqEntry {
                message_id,
                partition,
                sequence,
                envelope: envelope.into(),
                failures,
                plugin_digest,
                dead_lettered_at_ms,
            })),
            DlqRecordV2::Deleted { message_id } => DlqRecord::Deleted { message_id },
        }
    }
}

/// The version 1 layout, frozen.
#[derive(Debug, Deserialize)]
enum DlqRecordV1 {
    Entry {
        message_id: String,
        partition: u32,
        sequence: u64,
        envelope: crate::storage::envelope::EnvelopeV1,
        failures: Vec<Failure>,
        plugin_digest: String,
        dead_lettered_at_ms: u64,
    },
    Deleted {
        message_id: String,
    },
}

impl From<DlqRecordV1> for DlqRecord {
    fn from(r: DlqRecordV1) -> Self {
        match r {
            DlqRecordV1::Entry {
                message_id,
                partition,
                sequence,
                envelope,
                failures,
                plugin_digest,
                dead_lettered_at_ms,
            } => DlqRecord::Entry(Box::new(DlqEntry {
                message_id,
                partition,
                sequence,
                envelope: envelope.into(),
                failures,
                plugin_digest,
                dead_lettered_at_ms,
            })),
            DlqRecordV1::Deleted { message_id } => DlqRecord::Deleted { message_id },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Log(#[from] wharf_log::LogError),
    #[error("dlq record {seq} does not decode: {reason}")]
    Decode { seq: u64, reason: String },
}

#[derive(Debug)]
pub struct Dlq {
    log: Arc<wharf_log::Partition>,
    /// message_id → entry, for the entries not deleted.
    live: Mutex<BTreeMap<String, DlqEntry>>,
}

impl Dlq {
    pub fn open(dir: &Path, opts: wharf_log::LogOptions) -> Result<Self, DlqError> {
        let (log, _) = wharf_log::Partition::open(dir, opts)?;
        let mut live = BTreeMap::new();
        let mut from = log.first_seq();
        loop {
            let records = log.read(from, 1024, 8 << 20)?;
            let Some(last) = records.last() else { break };
            from = last.seq + 1;
            for r in records {
                match decode(&r.payload).map_err(|reason| DlqError::Decode { seq: r.seq, reason })? {
                    DlqRecord::Entry(e) => {
                        live.insert(e.message_id.clone(), *e);
                    }
                    DlqRecord::Deleted { message_id } => {
                        live.remove(&message_id);
                    }
                }
            }
        }
        Ok(Self { log: Arc::new(log), live: Mutex::new(live) })
    }

    /// Makes the entry durable; blocking (call from a blocking thread).
    pub fn push(&self, entry: DlqEntry) -> Result<(), DlqError> {
        self.log.append(&[&encode(&DlqRecord::Entry(Box::new(entry.clone())))])?;
        if let Ok(mut live) = self.live.lock() {
            live.insert(entry.message_id.clone(), entry);
        }
        Ok(())
    }

    /// Deletes one entry durably. Returns whether it existed.
    pub fn delete(&self, message_id: &str) -> Result<bool, DlqError> {
        if !self.contains(message_id) {
            return Ok(false);
        }
        let rec = DlqRecord::Deleted { message_id: message_id.to_string() };
        self.log.append(&[&encode(&rec)])?;
        Ok(self.live.lock().map(|mut l| l.remove(message_id).is_some()).unwrap_or(false))
    }

    /// Deletes every entry durably (one append of tombstones). Returns how many.
    pub fn purge(&self) -> Result<usize, DlqError> {
        let ids: Vec<String> = self.live.lock().map(|l| l.keys().cloned().collect()).unwrap_or_default();
        if ids.is_empty() {
            return Ok(0);
        }
        let records: Vec<Vec<u8>> =
            ids.iter().map(|id| encode(&DlqRecord::Deleted { message_id: id.clone() })).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        self.log.append(&refs)?;
        if let Ok(mut live) = self.live.lock() {
            for id in &ids {
                live.remove(id);
            }
        }
        Ok(ids.len())
    }

    /// Every live entry's id, in order.
    pub fn ids(&self) -> Vec<String> {
        self.live.lock().map(|l| l.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn contains(&self, message_id: &str) -> bool {
        self.live.lock().map(|l| l.contains_key(message_id)).unwrap_or(false)
    }

    pub fn get(&self, message_id: &str) -> Option<DlqEntry> {
        self.live.lock().ok()?.get(message_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Entries in message-id order, starting after `after`, at most `limit`.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Vec<DlqEntry> {
        let Ok(live) = self.live.lock() else { return Vec::new() };
        let range = match after {
            Some(a) => live.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => live.range::<str, _>(..),
        };
        range.take(limit).map(|(_, e)| e.clone()).collect()
    }
}

fn encode(r: &DlqRecord) -> Vec<u8> {
    crate::storage::record::encode(VERSION, r)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<DlqRecord, String> {
    match bytes.first() {
        Some(1) => crate::storage::record::decode::<DlqRecordV1>(1, bytes).map(DlqRecord::from),
        Some(2) => crate::storage::record::decode::<DlqRecordV2>(2, bytes).map(DlqRecord::from),
        _ => crate::storage::record::decode(VERSION, bytes),
    }
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 entry as written to disk before transactions existed.
    #[test]
    fn a_version_1_record_still_decodes() {
        // The envelope's v1 fixture (envelope.rs), without its version byte.
        let env = "010a6f726465722d3132333403010203010274720178010469646d31d20901e80700";
        let mut v1 = vec![1u8, 0];
        v1.extend(postcard::to_stdvec("0-7").expect("encodes"));
        v1.extend([0, 7]);
        v1.extend(hex::decode(env).expect("hex"));
        v1.extend([0, 0, 9]);
        match decode(&v1).expect("v1 decodes") {
            DlqRecord::Entry(e) => {
                assert_eq!(e.message_id, "0-7");
                assert_eq!(e.sequence, 7);
                assert_eq!(e.envelope.key.as_deref(), Some("order-1234"));
                assert_eq!(e.envelope.transaction, None);
                assert_eq!(e.dead_lettered_at_ms, 9);
            }
            other => panic!("expected an entry, got {other:?}"),
        }
        let tombstone = [1u8, 1, 3, b'0', b'-', b'7'];
        assert!(matches!(decode(&tombstone), Ok(DlqRecord::Deleted { message_id }) if message_id == "0-7"));
        let tombstone = [2u8, 1, 3, b'0', b'-', b'7'];
        assert!(matches!(decode(&tombstone), Ok(DlqRecord::Deleted { message_id }) if message_id == "0-7"));
    }
}
