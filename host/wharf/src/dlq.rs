//! The namespace's dead-letter queue: a durable log of messages the target
//! rejected or that ran out of attempts, with their failure history.
//!
//! It is a `wharf_log::Partition` under `<data_dir>/<ns>/dlq/`. Records are a
//! version byte plus postcard of [`DlqRecord`]: an entry, or a tombstone that
//! deletes an earlier entry. The live set is rebuilt from the log at open.
//! A message is finished (its key freed, the watermark allowed past it) only
//! after its entry is durable here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;

const VERSION: u8 = 1;

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
enum DlqRecord {
    Entry(DlqEntry),
    Deleted { message_id: String },
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
                        live.insert(e.message_id.clone(), e);
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
        self.log.append(&[&encode(&DlqRecord::Entry(entry.clone()))])?;
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
    crate::record::encode(VERSION, r)
}

fn decode(bytes: &[u8]) -> Result<DlqRecord, String> {
    crate::record::decode(VERSION, bytes).map_err(|e| e.to_string())
}
