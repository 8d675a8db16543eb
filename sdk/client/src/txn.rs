//! Transactions (`docs/api.md`, "Transactions"): chunks parked durably,
//! then one commit queues them as one batch for the target.
//!
//! Chunks and commits are safe to retry: a chunk sent again with the same
//! content is `duplicate: true`, and a commit is written with the
//! idempotency key `wharf-txn:<id>`, so a retried commit answers the
//! original marker.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::http::{Call, Method, segment};
use crate::message::{Wait, WireWait, WriteAck};
use crate::{Client, Error};

/// What Wharf says of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TxnInfo {
    /// 32 lowercase hex digits.
    pub transaction_id: String,
    /// The marker's ordering key.
    pub key: Option<String>,
    /// `open`, `committed` or `corrupt`.
    pub state: String,
    /// Chunks parked.
    pub chunks: u32,
    pub bytes: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// The marker's message id, once committed.
    pub marker_id: Option<String>,
}

/// The acknowledgement of one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChunkAck {
    pub transaction_id: String,
    pub seq: u32,
    pub durable: bool,
    /// The same chunk was parked already; nothing was written.
    pub duplicate: bool,
}

/// The acknowledgement of a commit: the marker's write ack.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommitAck {
    pub transaction_id: String,
    pub chunks: u32,
    /// `duplicate: true` for a commit repeated.
    #[serde(flatten)]
    pub marker: WriteAck,
}

/// An open transaction of one namespace.
#[derive(Debug, Clone)]
pub struct Txn {
    client: Client,
    ns: String,
    info: TxnInfo,
}

#[derive(Debug, Serialize)]
struct Chunk<'a> {
    payload: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: &'a BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Commit {
    chunks: u32,
    #[serde(flatten)]
    wait: WireWait,
}

impl Txn {
    pub(crate) fn new(client: Client, ns: &str, info: TxnInfo) -> Self {
        Self { client, ns: ns.to_string(), info }
    }

    pub(crate) fn fetch(client: &Client, ns: &str, id: &str) -> Result<TxnInfo, Error> {
        client.send_json("transaction", &Call::new(Method::Get, Self::path_of(ns, id, "")))
    }

    fn path_of(ns: &str, id: &str, rest: &str) -> String {
        Client::ns_path(ns, &format!("/transactions/{}{rest}", segment(id)))
    }

    fn path(&self, rest: &str) -> String {
        Self::path_of(&self.ns, &self.info.transaction_id, rest)
    }

    pub fn id(&self) -> &str {
        &self.info.transaction_id
    }

    /// What Wharf answered to `begin` (or to the lookup that found it).
    pub fn info(&self) -> &TxnInfo {
        &self.info
    }

    /// Parks chunk `seq` (chunks may come in any order); answers after an
    /// fdatasync of it.
    pub fn chunk(&self, seq: u32, payload: impl AsRef<[u8]>) -> Result<ChunkAck, Error> {
        self.chunk_with_headers(seq, payload, &BTreeMap::new())
    }

    /// [`Txn::chunk`] with headers for the target.
    pub fn chunk_with_headers(
        &self,
        seq: u32,
        payload: impl AsRef<[u8]>,
        headers: &BTreeMap<String, String>,
    ) -> Result<ChunkAck, Error> {
        let body = Chunk { payload: base64::engine::general_purpose::STANDARD.encode(payload), headers };
        let call = Call::new(Method::Put, self.path(&format!("/chunks/{seq}"))).json(&body)?;
        self.client.send_json("chunk", &call)
    }

    /// Commits chunks `0..chunks` (all parked, none beyond), waiting for
    /// `wait`. Safe to call again (`duplicate: true`, same marker).
    pub fn commit(&self, chunks: u32, wait: Wait) -> Result<CommitAck, Error> {
        let call = Call::new(Method::Post, self.path("/commit"))
            .json(&Commit { chunks, wait: wait.wire() })?
            .holding(wait.holds_reply());
        self.client.send_json("commit", &call)
    }

    /// Aborts: the parked chunks are deleted. After a transport failure
    /// and a retry, `404 transaction_not_found` may mean the first attempt
    /// aborted it.
    pub fn abort(&self) -> Result<(), Error> {
        self.client.send(&Call::new(Method::Delete, self.path(""))).map(drop)
    }

    /// The transaction's state now.
    pub fn state(&self) -> Result<TxnInfo, Error> {
        Self::fetch(&self.client, &self.ns, &self.info.transaction_id)
    }
}
