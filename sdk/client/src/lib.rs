//! `wharf-client`: a Rust client for Wharf's HTTP JSON API
//! (`docs/api.md`).
//!
//! It is **blocking** (one `ureq` agent, no async runtime): a call returns
//! once Wharf answered, so it fits a plain thread, a CLI or a test, and an
//! async program can run it in `spawn_blocking`.
//!
//! ```no_run
//! use std::time::Duration;
//! use wharf_client::{Client, Message, RetryPolicy, Wait};
//!
//! # fn main() -> Result<(), wharf_client::Error> {
//! let client = Client::new("http://127.0.0.1:7070")
//!     .with_token("s3cret")
//!     .with_retry(RetryPolicy { max_attempts: 8, max_wait: Duration::from_secs(5) });
//! let ack = client.write("orders", Message::new("hello").with_key("order-1"))?;
//! println!("{} durable={}", ack.message_id, ack.durable);
//! let acks = client.write_batch("orders", vec![Message::new("a"), Message::new("b")], Wait::Durable)?;
//! assert_eq!(acks.len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! Retries and idempotency:
//! - A call answered `429`, `503` or `507` is sent again after the reply's
//!   `Retry-After` seconds (at most [`RetryPolicy::max_wait`]), or after an
//!   exponential backoff (100 ms, 200 ms, 400 ms… with jitter, capped by
//!   `max_wait`) when it has none; so is a call that failed in transport.
//!   At most [`RetryPolicy::max_attempts`] attempts in all; then the last
//!   error is returned.
//! - Every logical write carries an idempotency key: the message's own, or
//!   32 random hex digits the client draws once for that write. Its retries
//!   send the same key, so a write whose reply was lost is acknowledged
//!   again with `duplicate: true` and its original `message_id`, never
//!   written twice (within the namespace's `idempotency.window_ms`).
//! - A batch draws one key per message. Messages of a batch refused for a
//!   temporary reason (`backlog_full`, `disk_full`, `too_many_open_files`,
//!   `partition_halted`, `queue_unavailable`) are sent again, alone, with
//!   their keys; the others keep their first result.
//! - Chunks and commits of a transaction are idempotent on the server, and
//!   so are the reads. A transaction `begin` and a DLQ replay are sent again
//!   only when the request never reached Wharf (connection refused) or
//!   Wharf refused it with one of those statuses, so they never run twice.

mod client;
mod dlq;
mod error;
mod http;
mod message;
mod retry;
mod status;
mod txn;

pub use client::Client;
pub use dlq::{DlqEntry, DlqFailure, DlqPage, DlqTransaction, ReplayReport, Replayed, Skipped};
pub use error::{ApiError, Error};
pub use message::{Message, Wait, WriteAck};
pub use retry::RetryPolicy;
pub use status::{
    DeliveryState, Lookup, NamespaceStatus, PartitionStatus, PluginStatus, Status, TargetDelivery,
    TargetLane, TargetStatus,
};
pub use txn::{ChunkAck, CommitAck, Txn, TxnInfo};
