//! The chunk store of multi-chunk transactions: chunks parked, durable and
//! outside the queue, until their transaction commits and is delivered.
//!
//! # On disk
//!
//! One file per transaction, `<data_dir>/<ns>/transactions/<id>.txn`: a run
//! of `wharf_log::frame` frames (the frame's `seq` is its position in the
//! file: 0, 1, 2, ...), each payload a version byte plus the postcard of a
//! [`TxnRecord`]:
//! - `Begin { key, created_ms, expires_ms }`, always frame 0;
//! - `Chunk { seq, payload, headers }`, at most once per chunk `seq`;
//! - `Committed { marker_id }`, once the marker is durable in the log.
//!
//! # Invariants
//! - A chunk acknowledged to a client is in its file, covered by an
//!   fdatasync (a new file also gets a directory fsync).
//! - A file is deleted only when its transaction is aborted, expires
//!   uncommitted (and no marker for it was read from the log), or its marker
//!   finished (delivered, or dead-lettered with the chunks copied into the
//!   DLQ entry) and is no longer in retained history: below the oldest
//!   record its partition keeps ([`MarkerPlace`]). So a rewind through the
//!   marker re-delivers the transaction whole.
//! - An append that fails (a full disk) is cut back to the last whole
//!   frame, and the error says it is temporary (`disk_full`,
//!   `too_many_open_files`): the same chunk can be sent again later.
//! - One process owns the files ([`TxnStore::open`]: it creates, appends,
//!   expires). A `--role consumer` process opens them as a reader
//!   ([`TxnStore::open_reader`]): it reads a committed transaction's chunks
//!   and deletes its file once the marker finished, and never truncates.
//! - A frame that fails its checksum is corruption, reported with file and
//!   offset; the transaction then refuses commit and delivery. Never
//!   skipped, never repaired. Only a frame cut short at the very end of a
//!   file (an append the crash interrupted, never acknowledged) is cut off
//!   at open, and that is logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wharf_log::Temporary;
use wharf_log::frame::{self, Decoded};

use crate::storage::envelope::Chunk;

const VERSION: u8 = 1;
const EXTENSION: &str = "txn";
/// How many expired ids are remembered to answer 410 instead of 404.
const REMEMBER_EXPIRED: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
enum TxnRecord {
    Begin { key: Option<String>, created_ms: u64, expires_ms: u64 },
    Chunk(Chunk),
    Committed { marker_id: String },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TxnError {
    #[error("no open transaction {0:?}")]
    NotFound(String),
    #[error("transaction {0:?} expired before it was committed; its chunks are gone")]
    Expired(String),
    #[error("transaction {id:?} is committed (marker {marker_id}); it takes no more changes")]
    Committed { id: String, marker_id: String },
    #[error("chunk {seq} of transaction {id:?} was already written with different content")]
    ChunkConflict { id: String, seq: u32 },
    #[error("{0}")]
    Limit(String),
    #[error("commit of {chunks} chunks refused: chunks {missing:?} are missing")]
    Incomplete { chunks: u32, missing: Vec<u32> },
    #[error("commit of {chunks} chunks refused: chunks {extra:?} are beyond that count")]
    CountMismatch { chunks: u32, extra: Vec<u32> },
    #[error("transaction file {path} is corrupt at offset {offset}: {reason}")]
    Corrupt { path: String, offset: u64, reason: String },
    /// `temporary`: a full disk or no descriptor left, which goes away by
    /// itself (the failed append was rolled back).
    #[error("transaction store i/o on {path}: {reason}")]
    Io { path: String, reason: String, temporary: Option<Temporary> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TxnError + '_ {
    move |e| TxnError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
        temporary: wharf_log::temporary(&e),
    }
}

/// Limits a transaction is held to (from the namespace config).
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    pub max_open: usize,
    pub max_chunks: u32,
    pub max_bytes: u64,
}

/// Where a transaction stands; serialized (HTTP) and sent (gRPC) as its
/// lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    /// Taking chunks; not committed.
    Open,
    /// Its marker is durable in the log; its chunks wait for delivery.
    Committed,
    /// A frame of its file failed its checksum: it refuses commit and delivery.
    Corrupt,
}

impl TxnState {
    /// The name the APIs show: `open`, `committed` or `corrupt`.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Open => "open",
            TxnState::Committed => "committed",
            TxnState::Corrupt => "corrupt",
        }
    }
}

/// gRPC's `Transaction.state` is its name.
impl From<TxnState> for String {
    fn from(s: TxnState) -> Self {
        s.as_str().to_string()
    }
}

/// What a client may see of a transaction.
#[derive(Debug, Clone, Serialize)]
pub struct TxnInfo {
    pub transaction_id: String,
    pub key: Option<String>,
    pub state: TxnState,
    pub chunks: u32,
    pub bytes: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub marker_id: Option<String>,
}

/// What a commit needs from the store.
#[derive(Debug)]
pub struct CommitPlan {
    pub key: Option<String>,
    /// Set when an earlier commit already made the marker durable.
    pub marker_id: Option<String>,
}

#[derive(Debug)]
struct ChunkSeen {
    crc: u32,
    bytes: u64,
}

#[derive(Debug)]
struct TxnFile {
    path: PathBuf,
    /// Open for appending; `None` until the first append after open.
    file: Option<File>,
    next_frame: u64,
    /// The length of the file's whole frames: a failed append is cut back
    /// to it.
    len: u64,
    key: Option<String>,
    created_ms: u64,
    expires_ms: u64,
    chunks: BTreeMap<u32, ChunkSeen>,
    bytes: u64,
    marker_id: Option<String>,
    /// The delivery engine read this transaction's marker from the log: the
    /// file must stay even if the `Committed` frame never made it.
    marker_seen: bool,
    /// Its marker was delivered (or dead-lettered) by every target: its
    /// bytes no longer count as parked, and the file stays only while the
    /// marker is in retained history (a rewind re-delivers it whole).
    finished: bool,
    corrupt: Option<TxnError>,
}

impl TxnFile {
    fn info(&self, id: &str) -> TxnInfo {
        TxnInfo {
            transaction_id: id.to_string(),
            key: self.key.clone(),
            state: match (&self.corrupt, &self.marker_id) {
                (Some(_), _) => TxnState::Corrupt,
                (None, Some(_)) => TxnState::Committed,
                (None, None) => TxnState::Open,
            },
            chunks: self.chunks.len() as u32,
            bytes: self.bytes,
            created_at_ms: self.created_ms,
            expires_at_ms: self.expires_ms,
            marker_id: self.marker_id.clone(),
        }
    }

    /// Appends one frame, durably. A failed write or sync (a full disk)
    /// is cut back to the last whole frame, so the file never keeps a
    /// partial frame that a later append would bury; if even that fails,
    /// the handle is dropped and the next append cuts first.
    fn append(&mut self, rec: &TxnRecord) -> Result<(), TxnError> {
        let mut buf = Vec::new();
        frame::encode(self.next_frame, &crate::storage::record::encode(VERSION, rec), &mut buf);
        let len = self.len;
        let f = self.open_at_len()?;
        if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_data()) {
            let cut = f.set_len(len).and_then(|()| f.sync_data());
            if let Err(cut) = cut {
                tracing::warn!(file = %self.path.display(), error = %cut, "failed transaction append not cut back yet; the next append cuts first");
                self.file = None;
            }
            return Err(io(&self.path)(e));
        }
        self.next_frame += 1;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// The append handle, the file cut to `len` when it was (re)opened.
    fn open_at_len(&mut self) -> Result<&mut File, TxnError> {
        if self.file.is_none() {
            let f = OpenOptions::new().append(true).open(&self.path).map_err(io(&self.path))?;
            if f.metadata().map_err(io(&self.path))?.len() != self.len {
                f.set_len(self.len).and_then(|()| f.sync_data()).map_err(io(&self.path))?;
            }
            self.file = Some(f);
        }
        self.file.as_mut().ok_or_else(|| io(&self.path)(std::io::ErrorKind::NotFound.into()))
    }

    fn writable(&self, id: &str) -> Result<(), TxnError> {
        if let Some(e) = &self.corrupt {
            return Err(e.clone());
        }
        if let Some(m) = &self.marker_id {
            return Err(TxnError::Committed { id: id.to_string(), marker_id: m.clone() });
        }
        Ok(())
    }
}

/// The open and committed-but-undelivered transactions of one namespace.
#[derive(Debug)]
pub struct TxnStore {
    dir: PathBuf,
    txns: Mutex<HashMap<String, Arc<Mutex<TxnFile>>>>,
    expired: Mutex<VecDeque<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn chunk_crc(payload: &[u8], headers: &[(String, String)]) -> u32 {
    let mut crc = crc32c::crc32c(payload);
    for (k, v) in headers {
        crc = crc32c::crc32c_append(crc, &(k.len() as u64).to_le_bytes());
        crc = crc32c::crc32c_append(crc, k.as_bytes());
        crc = crc32c::crc32c_append(crc, &(v.len() as u64).to_le_bytes());
        crc = crc32c::crc32c_append(crc, v.as_bytes());
    }
    crc
}

/// Where a committed transaction's marker stands in its partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerPlace {
    /// Not finished by every target yet (or its partition is unknown).
    Pending,
    /// Finished, and still in retained history: a rewind may re-deliver it.
    Retained,
    /// Below the oldest record the log retains: no rewind reaches it.
    Gone,
}

impl MarkerPlace {
    /// Where `marker` (a message id, `<partition>-<sequence>`) stands, given
    /// its partition's oldest retained sequence and watermark.
    pub fn of(marker: &str, log: impl Fn(u32) -> Option<(u64, u64)>) -> Self {
        let Some((partition, seq)) = crate::storage::envelope::parse_message_id(marker) else {
            return MarkerPlace::Pending;
        };
        match log(partition) {
            Some((oldest, _)) if seq < oldest => MarkerPlace::Gone,
            Some((_, watermark)) if seq < watermark => MarkerPlace::Retained,
            _ => MarkerPlace::Pending,
        }
    }
}

/// A transaction id: 32 lowercase hex digits (also what makes it a safe
/// file name).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads a transaction file: its records and the length of the valid
/// prefix. A checksum or decode failure anywhere is `Corrupt`; a frame cut
/// short at the end is left out (the caller decides what to do with it).
fn read_file(path: &Path) -> Result<(Vec<TxnRecord>, u64), TxnError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let corrupt = |offset: usize, reason: String| TxnError::Corrupt {
        path: path.display().to_string(),
        offset: offset as u64,
        reason,
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match frame::decode(&bytes[at..]) {
            Decoded::Record { seq, payload, frame_len, .. } => {
                if seq != out.len() as u64 {
                    return Err(corrupt(at, format!("frame {seq} where frame {} belongs", out.len())));
                }
                let rec: TxnRecord = crate::storage::record::decode(VERSION, payload)
                    .map_err(|e| corrupt(at, format!("record does not decode: {e}")))?;
                out.push(rec);
                at += frame_len;
            }
            Decoded::Incomplete => break,
            Decoded::BadLength { len } => {
                return Err(corrupt(at, format!("frame length {len} is impossible")));
            }
            Decoded::ChecksumMismatch => return Err(corrupt(at, "checksum mismatch".into())),
        }
    }
    Ok((out, at as u64))
}

impl TxnStore {
    /// Opens the store as a reader of files another process owns: nothing
    /// is read up front, nothing is ever truncated.
    pub fn open_reader(dir: &Path) -> Result<Self, TxnError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            txns: Mutex::new(HashMap::new()),
            expired: Mutex::new(VecDeque::new()),
        })
    }

    /// Opens the store as its owner, reading every transaction file. A torn
    /// final frame is cut off; a corrupt file is kept, reported, and refuses
    /// use.
    pub fn open(dir: &Path) -> Result<Self, TxnError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut txns = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| valid_id(s) && path.extension().is_some_and(|e| e == EXTENSION))
            else {
                continue;
            };
            let txn = Self::load(&path)?;
            if txn.next_frame == 0 && txn.corrupt.is_none() {
                // Created, but its begin record never became durable: that
                // begin was never acknowledged. Nothing to keep.
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            if let Some(e) = &txn.corrupt {
                tracing::error!(transaction = id, error = %e, "transaction file is corrupt; it refuses commit and delivery until aborted");
            }
            txns.insert(id.to_string(), Arc::new(Mutex::new(txn)));
        }
        Ok(Self { dir: dir.to_path_buf(), txns: Mutex::new(txns), expired: Mutex::new(VecDeque::new()) })
    }

    fn load(path: &Path) -> Result<TxnFile, TxnError> {
        let mut txn = TxnFile {
            path: path.to_path_buf(),
            file: None,
            next_frame: 0,
            len: 0,
            key: None,
            created_ms: 0,
            expires_ms: 0,
            chunks: BTreeMap::new(),
            bytes: 0,
            marker_id: None,
            marker_seen: false,
            finished: false,
            corrupt: None,
        };
        let (records, valid_len) = match read_file(path) {
            Ok(r) => r,
            Err(e @ TxnError::Corrupt { .. }) => {
                txn.corrupt = Some(e);
                return Ok(txn);
            }
            Err(e) => return Err(e),
        };
        let file_len = std::fs::metadata(path).map_err(io(path))?.len();
        if valid_len < file_len {
            tracing::warn!(file = %path.display(), offset = valid_len, cut = file_len - valid_len, "transaction file ends in a torn, unacknowledged append; cutting it off");
            let f = OpenOptions::new().write(true).open(path).map_err(io(path))?;
            f.set_len(valid_len).and_then(|()| f.sync_all()).map_err(io(path))?;
        }
        txn.next_frame = records.len() as u64;
        txn.len = valid_len;
        for (i, rec) in records.into_iter().enumerate() {
            match rec {
                TxnRecord::Begin { key, created_ms, expires_ms } if i == 0 => {
                    (txn.key, txn.created_ms, txn.expires_ms) = (key, created_ms, expires_ms);
                }
                TxnRecord::Chunk(c) if i > 0 => {
                    txn.bytes += c.payload.len() as u64;
                    let seen =
                        ChunkSeen { crc: chunk_crc(&c.payload, &c.headers), bytes: c.payload.len() as u64 };
                    txn.chunks.insert(c.seq, seen);
                }
                TxnRecord::Committed { marker_id } if i > 0 => txn.marker_id = Some(marker_id),
                other => {
                    txn.corrupt = Some(TxnError::Corrupt {
                        path: path.display().to_string(),
                        offset: 0,
                        reason: format!("record {i} ({other:?}) is out of place"),
                    });
                }
            }
        }
        Ok(txn)
    }

    fn get(&self, id: &str) -> Result<Arc<Mutex<TxnFile>>, TxnError> {
        if let Some(t) = lock(&self.txns).get(id) {
            return Ok(t.clone());
        }
        if lock(&self.expired).iter().any(|e| e == id) {
            return Err(TxnError::Expired(id.to_string()));
        }
        Err(TxnError::NotFound(id.to_string()))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{EXTENSION}"))
    }

    /// Payload bytes parked in transactions not yet finished (they count
    /// against the namespace's backlog limits like bytes in the log; kept
    /// history does not).
    pub fn parked_bytes(&self) -> u64 {
        lock(&self.txns).values().map(|t| lock(t)).filter(|t| !t.finished).map(|t| t.bytes).sum()
    }

    /// Starts a transaction: its file exists and is durable on return.
    pub fn begin(
        &self,
        key: Option<String>,
        now_ms: u64,
        ttl_ms: u64,
        limits: TxnLimits,
    ) -> Result<TxnInfo, TxnError> {
        if lock(&self.txns).len() >= limits.max_open {
            return Err(TxnError::Limit(format!(
                "{} transactions are open; the limit is {} (transactions.max_open)",
                limits.max_open, limits.max_open
            )));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let path = self.path(&id);
        let file = OpenOptions::new().append(true).create_new(true).open(&path).map_err(io(&path))?;
        let mut txn = TxnFile {
            path: path.clone(),
            file: Some(file),
            next_frame: 0,
            len: 0,
            key: key.clone(),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            chunks: BTreeMap::new(),
            bytes: 0,
            marker_id: None,
            marker_seen: false,
            finished: false,
            corrupt: None,
        };
        let begun = txn
            .append(&TxnRecord::Begin { key, created_ms: txn.created_ms, expires_ms: txn.expires_ms })
            .and_then(|()| File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir)));
        if let Err(e) = begun {
            // Never acknowledged: no file is left behind (a full disk).
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let info = txn.info(&id);
        lock(&self.txns).insert(id, Arc::new(Mutex::new(txn)));
        Ok(info)
    }

    /// Parks one chunk durably. Sending the same chunk again is harmless
    /// (returns `false`); a different chunk under the same `seq` is refused.
    pub fn append_chunk(&self, id: &str, chunk: Chunk, limits: TxnLimits) -> Result<bool, TxnError> {
        let txn = self.get(id)?;
        let mut txn = lock(&txn);
        txn.writable(id)?;
        let crc = chunk_crc(&chunk.payload, &chunk.headers);
        if let Some(seen) = txn.chunks.get(&chunk.seq) {
            return if seen.crc == crc && seen.bytes == chunk.payload.len() as u64 {
                Ok(false)
            } else {
                Err(TxnError::ChunkConflict { id: id.to_string(), seq: chunk.seq })
            };
        }
        if chunk.seq >= limits.max_chunks {
            return Err(TxnError::Limit(format!(
                "chunk seq {} is beyond the limit of {} chunks (transactions.max_chunks)",
                chunk.seq, limits.max_chunks
            )));
        }
        let bytes = chunk.payload.len() as u64;
        if txn.bytes + bytes > limits.max_bytes {
            return Err(TxnError::Limit(format!(
                "the transaction would hold {} bytes; the limit is {} (transactions.max_bytes)",
                txn.bytes + bytes,
                limits.max_bytes
            )));
        }
        let seq = chunk.seq;
        txn.append(&TxnRecord::Chunk(chunk))?;
        txn.bytes += bytes;
        txn.chunks.insert(seq, ChunkSeen { crc, bytes });
        Ok(true)
    }

    /// Checks that chunks `0..chunks` are all there and nothing else is.
    pub fn prepare_commit(&self, id: &str, chunks: u32) -> Result<CommitPlan, TxnError> {
        let txn = self.get(id)?;
        let txn = lock(&txn);
        if let Some(e) = &txn.corrupt {
            return Err(e.clone());
        }
        if txn.marker_id.is_some() {
            return Ok(CommitPlan { key: txn.key.clone(), marker_id: txn.marker_id.clone() });
        }
        let missing: Vec<u32> = (0..chunks).filter(|s| !txn.chunks.contains_key(s)).take(100).collect();
        if !missing.is_empty() || chunks == 0 {
            return Err(TxnError::Incomplete { chunks, missing });
        }
        let extra: Vec<u32> = txn.chunks.keys().copied().filter(|s| *s >= chunks).take(100).collect();
        if !extra.is_empty() {
            return Err(TxnError::CountMismatch { chunks, extra });
        }
        Ok(CommitPlan { key: txn.key.clone(), marker_id: None })
    }

    /// Records that the marker is durable in the log. A transaction that is
    /// already gone (its marker delivered meanwhile) is fine.
    pub fn mark_committed(&self, id: &str, marker_id: &str) -> Result<(), TxnError> {
        let Ok(txn) = self.get(id) else { return Ok(()) };
        let mut txn = lock(&txn);
        if txn.marker_id.is_some() {
            return Ok(());
        }
        txn.append(&TxnRecord::Committed { marker_id: marker_id.to_string() })?;
        txn.marker_id = Some(marker_id.to_string());
        Ok(())
    }

    /// The delivery engine read this transaction's marker: never expire it.
    pub fn pin(&self, id: &str) {
        if let Ok(txn) = self.get(id) {
            lock(&txn).marker_seen = true;
        }
    }

    /// The chunks `0..chunks` of a transaction, in sequence order, read back
    /// from disk and checked.
    pub fn load_chunks(&self, id: &str, chunks: u32) -> Result<Vec<Chunk>, TxnError> {
        let path = match self.get(id) {
            Ok(txn) => {
                let txn = lock(&txn);
                if let Some(e) = &txn.corrupt {
                    return Err(e.clone());
                }
                txn.path.clone()
            }
            // Not known here: written by the owning process after this one
            // (a reader) opened, or committed before a restart.
            Err(TxnError::NotFound(_)) if valid_id(id) && self.path(id).is_file() => self.path(id),
            Err(e) => return Err(e),
        };
        let (records, _) = read_file(&path)?;
        let mut by_seq: BTreeMap<u32, Chunk> = BTreeMap::new();
        for r in records {
            if let TxnRecord::Chunk(c) = r {
                by_seq.insert(c.seq, c);
            }
        }
        let missing: Vec<u32> = (0..chunks).filter(|s| !by_seq.contains_key(s)).take(100).collect();
        if !missing.is_empty() {
            return Err(TxnError::Incomplete { chunks, missing });
        }
        Ok(by_seq.into_values().filter(|c| c.seq < chunks).collect())
    }

    /// Aborts an uncommitted transaction: its chunks are deleted.
    pub fn abort(&self, id: &str) -> Result<(), TxnError> {
        let txn = self.get(id)?;
        {
            let txn = lock(&txn);
            if let Some(m) = &txn.marker_id {
                return Err(TxnError::Committed { id: id.to_string(), marker_id: m.clone() });
            }
        }
        self.remove(id)
    }

    /// Deletes a transaction's file (after abort, expiry, or once its marker
    /// finished).
    pub fn remove(&self, id: &str) -> Result<(), TxnError> {
        let path = match lock(&self.txns).remove(id) {
            Some(txn) => lock(&txn).path.clone(),
            None if valid_id(id) => self.path(id),
            None => return Ok(()),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))
    }

    /// Deletes every uncommitted transaction past its expiry; returns their
    /// ids. `committed` answers whether a transaction's marker is in the log
    /// after all (the idempotency window knows its key): a crash between the
    /// marker's append and the `Committed` record leaves such a file, and a
    /// retried commit is acknowledged from the window, so its chunks must
    /// stay. Those are marked committed instead.
    pub fn expire(&self, now_ms: u64, committed: impl Fn(&str) -> Option<String>) -> Vec<String> {
        // Committed transactions whose file a consumer process deleted
        // after delivering them.
        lock(&self.txns).retain(|_, t| {
            let t = lock(t);
            t.marker_id.is_none() || t.path.is_file()
        });
        let due: Vec<String> = lock(&self.txns)
            .iter()
            .filter(|(_, t)| {
                let t = lock(t);
                t.marker_id.is_none() && !t.marker_seen && t.corrupt.is_none() && t.expires_ms <= now_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut gone = Vec::new();
        for id in due {
            if let Some(marker_id) = committed(&id) {
                match self.mark_committed(&id, &marker_id) {
                    Ok(()) => tracing::warn!(
                        transaction = %id,
                        marker = %marker_id,
                        "transaction's marker is in the log but its commit was not recorded (crash); kept as committed"
                    ),
                    Err(e) => {
                        tracing::error!(transaction = %id, error = %e, "recording a found commit failed; will retry")
                    }
                }
                continue;
            }
            match self.remove(&id) {
                Ok(()) => {
                    let mut expired = lock(&self.expired);
                    if expired.len() >= REMEMBER_EXPIRED {
                        expired.pop_front();
                    }
                    expired.push_back(id.clone());
                    gone.push(id);
                }
                Err(e) => {
                    tracing::error!(transaction = %id, error = %e, "expired transaction not deleted; will retry")
                }
            }
        }
        gone
    }

    /// The only target finished this transaction's marker: its bytes stop
    /// counting as parked. The file stays for [`TxnStore::sweep`], which
    /// deletes it once the marker leaves retained history. Unknown here (a
    /// reader process): the owner's sweep deletes it.
    pub fn finish(&self, id: &str) {
        if let Ok(txn) = self.get(id) {
            lock(&txn).finished = true;
        }
    }

    /// Goes over committed transactions by where their marker stands:
    /// finished ones stop counting as parked, and those whose marker is
    /// below the oldest retained record are deleted (then a rewind cannot
    /// reach the marker either). Returns how many were deleted. Run at
    /// open, after a watermark moved, and on the expiry loop's tick (as
    /// retention deletes segments).
    pub fn sweep(&self, place: impl Fn(&str) -> MarkerPlace) -> usize {
        let mut gone = Vec::new();
        for (id, txn) in lock(&self.txns).iter() {
            let mut txn = lock(txn);
            match txn.marker_id.as_deref().map(&place) {
                Some(MarkerPlace::Retained) => txn.finished = true,
                Some(MarkerPlace::Gone) => gone.push(id.clone()),
                Some(MarkerPlace::Pending) | None => {}
            }
        }
        gone.iter().filter(|id| self.remove(id).is_ok()).count()
    }

    pub fn info(&self, id: &str) -> Result<TxnInfo, TxnError> {
        let txn = self.get(id)?;
        let txn = lock(&txn);
        Ok(txn.info(id))
    }

    /// Transactions held: (open, committed and not yet delivered).
    pub fn counts(&self) -> (usize, usize) {
        let txns = lock(&self.txns);
        let committed = txns.values().filter(|t| lock(t).marker_id.is_some()).count();
        let finished = txns.values().filter(|t| lock(t).finished).count();
        (txns.len() - committed, committed - finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TxnLimits = TxnLimits { max_open: 10, max_chunks: 8, max_bytes: 1 << 20 };

    fn chunk(seq: u32, payload: &[u8]) -> Chunk {
        Chunk { seq, payload: payload.to_vec(), headers: vec![("h".into(), seq.to_string())] }
    }

    #[test]
    fn a_state_is_shown_by_its_lowercase_name() {
        for (state, name) in
            [(TxnState::Open, "open"), (TxnState::Committed, "committed"), (TxnState::Corrupt, "corrupt")]
        {
            assert_eq!(serde_json::to_value(state).expect("json"), serde_json::json!(name));
            assert_eq!(String::from(state), name);
        }
    }

    #[test]
    fn chunks_survive_a_reopen_and_come_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TxnStore::open(dir.path()).expect("open");
        let t = store.begin(Some("k".into()), 1000, 60_000, LIMITS).expect("begin");
        let id = t.transaction_id;
        for seq in [2, 0, 1] {
            assert!(store.append_chunk(&id, chunk(seq, &[seq as u8; 3]), LIMITS).expect("chunk"));
        }
        assert!(!store.append_chunk(&id, chunk(1, &[1; 3]), LIMITS).expect("same chunk again"));
        assert!(matches!(
            store.append_chunk(&id, chunk(1, &[9; 3]), LIMITS),
            Err(TxnError::ChunkConflict { seq: 1, .. })
        ));
        drop(store);
        let store = TxnStore::open(dir.path()).expect("reopen");
        let info = store.info(&id).expect("info");
        assert_eq!(
            (info.state, info.chunks, info.bytes, info.key.as_deref()),
            (TxnState::Open, 3, 9, Some("k"))
        );
        assert!(
            matches!(store.prepare_commit(&id, 4), Err(TxnError::Incomplete { missing, .. }) if missing == vec![3])
        );
        assert!(
            matches!(store.prepare_commit(&id, 2), Err(TxnError::CountMismatch { extra, .. }) if extra == vec![2])
        );
        assert!(store.prepare_commit(&id, 3).expect("complete").marker_id.is_none());
        store.mark_committed(&id, "0-5").expect("committed");
        let chunks = store.load_chunks(&id, 3).expect("load");
        assert_eq!(chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(chunks[2].payload, vec![2; 3]);
        drop(store);
        let store = TxnStore::open(dir.path()).expect("reopen");
        assert_eq!(store.prepare_commit(&id, 3).expect("plan").marker_id.as_deref(), Some("0-5"));
        assert!(matches!(store.abort(&id), Err(TxnError::Committed { .. })));
        assert!(matches!(store.append_chunk(&id, chunk(3, b"x"), LIMITS), Err(TxnError::Committed { .. })));
        let place = |m: &str| if m == "0-5" { MarkerPlace::Gone } else { MarkerPlace::Pending };
        assert_eq!(store.sweep(place), 1);
        assert!(matches!(store.info(&id), Err(TxnError::NotFound(_))));
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn finished_chunks_stay_while_their_marker_is_retained_and_stop_counting_as_parked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TxnStore::open(dir.path()).expect("open");
        let id = store.begin(None, 0, 1000, LIMITS).expect("begin").transaction_id;
        store.append_chunk(&id, chunk(0, b"kept"), LIMITS).expect("chunk");
        store.mark_committed(&id, "0-7").expect("committed");
        assert_eq!((store.parked_bytes(), store.counts()), (4, (0, 1)));
        let log = |oldest: u64, watermark: u64| move |p: u32| (p == 0).then_some((oldest, watermark));
        assert_eq!(MarkerPlace::of("0-7", log(0, 7)), MarkerPlace::Pending);
        assert_eq!(MarkerPlace::of("1-7", log(0, 100)), MarkerPlace::Pending, "unknown partition");
        assert_eq!(store.sweep(|m| MarkerPlace::of(m, log(0, 8))), 0);
        assert_eq!((store.parked_bytes(), store.counts()), (0, (0, 0)), "finished, not parked");
        assert_eq!(store.load_chunks(&id, 1).expect("still readable")[0].payload, b"kept");
        assert_eq!(store.sweep(|m| MarkerPlace::of(m, log(8, 8))), 1, "the marker's segment is gone");
        assert!(matches!(store.info(&id), Err(TxnError::NotFound(_))));
    }

    #[test]
    fn an_append_after_a_failed_one_cuts_the_partial_frame_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TxnStore::open(dir.path()).expect("open");
        let id = store.begin(None, 0, 1000, LIMITS).expect("begin").transaction_id;
        store.append_chunk(&id, chunk(0, b"first"), LIMITS).expect("chunk");
        // What a write cut short by a full disk leaves, with the handle
        // dropped because the cut failed too.
        let path = dir.path().join(format!("{id}.txn"));
        OpenOptions::new().append(true).open(&path).expect("open").write_all(&[7; 11]).expect("partial");
        lock(&store.get(&id).expect("txn")).file = None;
        store.append_chunk(&id, chunk(1, b"second"), LIMITS).expect("chunk after the failure");
        let (records, valid) = read_file(&path).expect("whole frames only");
        assert_eq!((records.len(), valid), (3, std::fs::metadata(&path).expect("meta").len()));
    }

    #[test]
    fn a_full_disk_is_a_temporary_io_error() {
        let full = io(Path::new("x"))(std::io::Error::from_raw_os_error(28));
        assert!(matches!(full, TxnError::Io { temporary: Some(Temporary::DiskFull), .. }), "{full:?}");
        let fds = io(Path::new("x"))(std::io::Error::from_raw_os_error(24));
        assert!(matches!(fds, TxnError::Io { temporary: Some(Temporary::TooManyOpenFiles), .. }));
        let other = io(Path::new("x"))(std::io::Error::from_raw_os_error(5));
        assert!(matches!(other, TxnError::Io { temporary: None, .. }));
    }

    #[test]
    fn abort_and_expiry_delete_the_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TxnStore::open(dir.path()).expect("open");
        let a = store.begin(None, 1000, 10, LIMITS).expect("begin").transaction_id;
        let b = store.begin(None, 1000, 10, LIMITS).expect("begin").transaction_id;
        let c = store.begin(None, 1000, 10, LIMITS).expect("begin").transaction_id;
        store.append_chunk(&a, chunk(0, b"a"), LIMITS).expect("chunk");
        store.abort(&a).expect("abort");
        assert!(matches!(store.info(&a), Err(TxnError::NotFound(_))));
        store.pin(&c);
        assert!(store.expire(1005, |_| None).is_empty(), "not due yet");
        assert_eq!(store.expire(1010, |_| None), vec![b.clone()]);
        assert!(matches!(store.append_chunk(&b, chunk(0, b"b"), LIMITS), Err(TxnError::Expired(_))));
        assert!(store.info(&c).is_ok(), "a transaction whose marker was read never expires");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    /// A crash after the marker's append, before `Committed` was recorded:
    /// the marker is in the log, so expiry must not take the chunks.
    #[test]
    fn a_commit_found_in_the_log_is_recorded_instead_of_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TxnStore::open(dir.path()).expect("open");
        let id = store.begin(None, 1000, 10, LIMITS).expect("begin").transaction_id;
        store.append_chunk(&id, chunk(0, b"kept"), LIMITS).expect("chunk");
        store.prepare_commit(&id, 1).expect("plan");
        drop(store);
        let store = TxnStore::open(dir.path()).expect("reopen");
        let found = id.clone();
        let marker = move |t: &str| (t == found).then(|| "0-9".to_string());
        assert!(store.expire(u64::MAX, &marker).is_empty());
        assert_eq!(store.info(&id).expect("info").marker_id.as_deref(), Some("0-9"));
        drop(store);
        let store = TxnStore::open(dir.path()).expect("reopen");
        assert!(store.expire(u64::MAX, |_| None).is_empty(), "the commit was recorded durably");
        assert_eq!(store.load_chunks(&id, 1).expect("chunks")[0].payload, b"kept");
    }

    #[test]
    fn limits_are_enforced_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TxnStore::open(dir.path()).expect("open");
        let small = TxnLimits { max_open: 1, max_chunks: 2, max_bytes: 4 };
        let id = store.begin(None, 0, 1000, small).expect("begin").transaction_id;
        assert!(matches!(store.begin(None, 0, 1000, small), Err(TxnError::Limit(_))));
        assert!(matches!(store.append_chunk(&id, chunk(2, b"x"), small), Err(TxnError::Limit(_))));
        assert!(matches!(store.append_chunk(&id, chunk(0, b"12345"), small), Err(TxnError::Limit(_))));
        assert_eq!(store.info(&id).expect("info").chunks, 0);
    }

    #[test]
    fn a_flipped_byte_is_corruption_with_its_offset_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TxnStore::open(dir.path()).expect("open");
        let bad = store.begin(None, 0, 1000, LIMITS).expect("begin").transaction_id;
        let torn = store.begin(None, 0, 1000, LIMITS).expect("begin").transaction_id;
        for id in [&bad, &torn] {
            store.append_chunk(id, chunk(0, b"hello"), LIMITS).expect("chunk");
        }
        drop(store);
        let bad_path = dir.path().join(format!("{bad}.txn"));
        let mut bytes = std::fs::read(&bad_path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&bad_path, &bytes).expect("write");
        let torn_path = dir.path().join(format!("{torn}.txn"));
        let mut f = OpenOptions::new().append(true).open(&torn_path).expect("open");
        f.write_all(&[9, 0, 0]).expect("write");
        drop(f);

        let store = TxnStore::open(dir.path()).expect("reopen");
        let err = store.prepare_commit(&bad, 1).expect_err("corrupt");
        assert!(matches!(&err, TxnError::Corrupt { offset, .. } if *offset > 0), "{err}");
        assert_eq!(store.info(&bad).expect("info").state, TxnState::Corrupt);
        assert!(store.prepare_commit(&torn, 1).is_ok());
        assert_eq!(store.load_chunks(&torn, 1).expect("load")[0].payload, b"hello");
        assert_eq!(
            store.expire(u64::MAX, |_| None),
            vec![torn],
            "corruption is kept for an operator, not expired away"
        );
        store.abort(&bad).expect("an operator can abort a corrupt transaction");
    }
}
