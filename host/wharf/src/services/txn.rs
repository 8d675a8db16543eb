//! Multi-chunk transactions, shared by the HTTP and gRPC APIs (seed 004):
//! begin; park chunks, each durable, in the chunk store (`txn_store.rs`),
//! not in the queue; commit with the chunk count, which puts only a marker
//! in the partition's log; abort or expiry deletes the parked chunks. The
//! delivery engine reassembles a marker's chunks in sequence order and hands
//! them to the plugin as one batch carrying the transaction id. A delivered
//! transaction's chunks stay while its marker is in retained history (they
//! are deleted with the segment that holds it), so that a rewind
//! re-delivers it whole.
//!
//! A chunk store write that fails for a full disk or no descriptor answers
//! `507 disk_full` / `503 too_many_open_files`, like the log.
//!
//! The marker is appended through the normal write path with the
//! idempotency key `wharf-txn:<id>`, so a commit retried after a crash or a
//! lost reply never queues the transaction twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use serde::{Deserialize, Serialize};

use crate::clock::{engine_ms, now_ms};
use crate::engine::namespace::{Namespace, marker_place};
use crate::error::Error as ApiError;
use crate::metrics;
use crate::services::write::{self, TXN_IDEMPOTENCY_PREFIX, WaitFor, WriteAck};
use crate::storage::envelope::{Chunk, Envelope, TxnMarker};
use crate::storage::txn_store::{TxnError, TxnInfo, TxnStore, valid_id};

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> Self {
        let (status, code) = match &e {
            TxnError::NotFound(_) => (ErrorKind::NotFound, "transaction_not_found"),
            TxnError::Expired(_) => (ErrorKind::Gone, "transaction_expired"),
            TxnError::Committed { .. } => (ErrorKind::Conflict, "transaction_committed"),
            TxnError::ChunkConflict { .. } => (ErrorKind::Conflict, "chunk_conflict"),
            TxnError::Limit(_) => (ErrorKind::TooLarge, "transaction_too_large"),
            TxnError::Incomplete { .. } => (ErrorKind::Conflict, "transaction_incomplete"),
            TxnError::CountMismatch { .. } => (ErrorKind::Conflict, "chunk_count_mismatch"),
            TxnError::Corrupt { .. } => (ErrorKind::Internal, "transaction_corrupt"),
            TxnError::Io { temporary: Some(t), .. } => {
                return ApiError::temporary(*t, "the transaction chunk store", &e);
            }
            TxnError::Io { temporary: None, .. } => (ErrorKind::Internal, "transaction_store_failed"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// `begin`: an optional ordering key and a shorter time to live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// One chunk as a client sends it (the payload already decoded).
#[derive(Debug, Clone, Default)]
pub struct ChunkRequest {
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// The acknowledgement of one chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkAck {
    pub transaction_id: String,
    pub seq: u32,
    /// True: the chunk was covered by an fdatasync of its transaction file
    /// before this reply (for a resent chunk: when it was first written).
    pub durable: bool,
    /// True when the same chunk was already parked; nothing was written.
    pub duplicate: bool,
}

/// The acknowledgement of a commit: the marker's write ack.
#[derive(Debug, Clone, Serialize)]
pub struct CommitAck {
    pub transaction_id: String,
    pub chunks: u32,
    #[serde(flatten)]
    pub marker: WriteAck,
}

async fn store_op<T, F>(ns: &Namespace, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&TxnStore) -> Result<T, TxnError> + Send + 'static,
{
    let store = ns.txns.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// Transactions need the embedded log and a process that takes writes.
fn check_usable(ns: &Namespace) -> Result<(), ApiError> {
    if !ns.writes {
        return Err(ApiError::role_consumer());
    }
    write::refuse_replica(ns)?;
    if let Some(q) = &ns.cfg.queue {
        let kind = match q {
            wharf_queue::QueueConfig::Kafka(_) => "kafka",
            wharf_queue::QueueConfig::Sqs(_) => "sqs",
            wharf_queue::QueueConfig::Embedded => "the embedded log",
        };
        return Err(ApiError::bad(
            "transactions_unsupported",
            format!("namespace {} queues on {kind}; multi-chunk transactions need the embedded log", ns.name),
        ));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::NotFound,
            "transaction_not_found",
            format!("{id:?} is not a transaction id (32 lowercase hex digits)"),
        ))
    }
}

pub async fn begin(ns: &Arc<Namespace>, req: BeginRequest) -> Result<TxnInfo, ApiError> {
    check_usable(ns)?;
    write::check_key(req.key.as_deref())?;
    write::admit(ns)?;
    let cfg = &ns.cfg.transactions;
    if req.ttl_ms.is_some_and(|t| t == 0 || t > cfg.ttl_ms) {
        return Err(ApiError::bad(
            "invalid_ttl",
            format!("ttl_ms must be 1..={} (transactions.ttl_ms)", cfg.ttl_ms),
        ));
    }
    let (ttl, limits) = (req.ttl_ms.unwrap_or(cfg.ttl_ms), cfg.limits());
    let info = store_op(ns, move |s| s.begin(req.key, engine_ms(), ttl, limits)).await.map_err(|e| {
        if e.code == "transaction_too_large" {
            ApiError::new(ErrorKind::Overloaded, "too_many_transactions", e.message)
        } else {
            e
        }
    })?;
    count(ns, "begun");
    Ok(info)
}

pub async fn append_chunk(
    ns: &Arc<Namespace>,
    id: &str,
    seq: u32,
    req: ChunkRequest,
) -> Result<ChunkAck, ApiError> {
    check_usable(ns)?;
    check_id(id)?;
    check_chunk(&req)?;
    write::admit_bytes(ns, req.payload.len() as u64)?;
    let chunk = Chunk { seq, payload: req.payload, headers: req.headers.into_iter().collect() };
    let limits = ns.cfg.transactions.limits();
    let txn = id.to_string();
    let written = store_op(ns, move |s| s.append_chunk(&txn, chunk, limits)).await?;
    Ok(ChunkAck { transaction_id: id.to_string(), seq, durable: true, duplicate: !written })
}

/// A chunk's own limits: its payload and headers, as for one message.
pub fn check_chunk(req: &ChunkRequest) -> Result<(), ApiError> {
    write::check_payload(&req.payload)?;
    write::check_headers(&req.headers)
}

pub async fn commit(
    ns: &Arc<Namespace>,
    id: &str,
    chunks: u32,
    wait: WaitFor,
    timeout: Duration,
) -> Result<CommitAck, ApiError> {
    check_usable(ns)?;
    check_id(id)?;
    write::check_wait_timeout(timeout)?;
    let idempotency_key = format!("{TXN_IDEMPOTENCY_PREFIX}{id}");
    if let Some(marker_id) = ns.idempotency()?.lookup(&idempotency_key) {
        // Committed before (its chunks may be delivered and gone already).
        let mut marker = write::duplicate_ack(&marker_id);
        if wait == WaitFor::Visible {
            write::wait_all_visible(ns, std::iter::once(&mut marker), timeout).await;
        }
        return Ok(CommitAck { transaction_id: id.to_string(), chunks, marker });
    }
    let txn = id.to_string();
    let plan = store_op(ns, move |s| s.prepare_commit(&txn, chunks)).await?;
    let marker = Envelope {
        key: plan.key,
        payload: Vec::new(),
        headers: Vec::new(),
        idempotency_key: Some(idempotency_key),
        written_at_ms: now_ms(),
        deliver_at_ms: None,
        replays: 0,
        transaction: Some(TxnMarker { id: id.to_string(), chunks, inline: Vec::new() }),
        only_target: None,
    };
    // An earlier commit made the marker durable: the idempotency window
    // answers with its id, and nothing is appended again.
    let results = write::write_envelopes(ns, vec![Ok(marker)], WaitFor::Durable, timeout).await?;
    let mut ack = results.into_iter().next().unwrap_or_else(|| Err(ApiError::internal("no result")))?;
    if plan.marker_id.is_none() {
        let (txn, marker_id) = (id.to_string(), ack.message_id.clone());
        store_op(ns, move |s| s.mark_committed(&txn, &marker_id)).await?;
        count(ns, "committed");
        tracing::info!(namespace = %ns.name, transaction = id, chunks, marker_id = %ack.message_id, "transaction committed");
    }
    if wait == WaitFor::Visible {
        write::wait_all_visible(ns, std::iter::once(&mut ack), timeout).await;
    }
    Ok(CommitAck { transaction_id: id.to_string(), chunks, marker: ack })
}

pub async fn abort(ns: &Arc<Namespace>, id: &str) -> Result<(), ApiError> {
    check_usable(ns)?;
    check_id(id)?;
    let txn = id.to_string();
    store_op(ns, move |s| s.abort(&txn)).await?;
    count(ns, "aborted");
    tracing::info!(namespace = %ns.name, transaction = id, "transaction aborted");
    Ok(())
}

pub async fn info(ns: &Arc<Namespace>, id: &str) -> Result<TxnInfo, ApiError> {
    check_id(id)?;
    let txn = id.to_string();
    store_op(ns, move |s| s.info(&txn)).await
}

fn count(ns: &Namespace, outcome: &'static str) {
    metrics::get().transactions.get_or_create(&metrics::ns_kind(&ns.name, outcome)).inc();
}

/// Deletes expired, uncommitted transactions until shutdown, and the
/// chunks of finished ones whose marker left retained history.
pub async fn expire_loop(ns: Arc<Namespace>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_millis((ns.cfg.transactions.ttl_ms / 10).clamp(10, 1000));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() || ns.removed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let (store, window) = (ns.txns.clone(), ns.clone());
        let committed = move |id: &str| {
            window.idempotency.as_ref().and_then(|w| w.lookup(&format!("{TXN_IDEMPOTENCY_PREFIX}{id}")))
        };
        let (partitions, keeps_history) = (ns.partitions.clone(), ns.cfg.retention.is_some());
        let expire = move || {
            let expired = store.expire(engine_ms(), committed);
            let swept = store.sweep(|marker| marker_place(&partitions, keeps_history, marker));
            (expired, swept)
        };
        let Ok((expired, swept)) = tokio::task::spawn_blocking(expire).await else {
            continue;
        };
        if swept > 0 {
            tracing::debug!(namespace = %ns.name, swept, "transaction chunks deleted with the history that held their marker");
        }
        for id in &expired {
            tracing::info!(namespace = %ns.name, transaction = %id, "transaction expired uncommitted; its chunks are deleted");
            count(&ns, "expired");
        }
    }
}
