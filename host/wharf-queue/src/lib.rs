//! Queue backends for Wharf: Kafka, Amazon SQS and the embedded `wharf-log`
//! behind one pair of traits.
//!
//! The host opens a [`Producer`] to make writes durable and a [`Consumer`] to
//! deliver them to targets. Both are async (tokio) and take `&self`, so one
//! value can be shared behind an `Arc` by many tasks.
//!
//! The contract every backend keeps (and the conformance suite in `tests/`
//! checks against real servers):
//!
//! * [`Producer::append`] returns only once the backend has made the write
//!   durable in its own sense ([`Durability`]).
//! * Delivery is at least once. A [`Delivery`] that is not [`Consumer::ack`]ed
//!   is delivered again: after [`Consumer::nack`] (after the delay), after the
//!   consumer is closed or dropped, or after it crashes.
//! * After `ack` the message is not delivered again (short of the broker's own
//!   at-least-once slack, e.g. a Kafka group rebalance racing a commit).
//! * [`Consumer::dead_letter`] moves a message to the backend's dead-letter
//!   queue, then acks it.
//!
//! Picking a backend from configuration: [`QueueConfig`] deserializes from
//! `queue = { kind = "kafka", ... }` / `{ kind = "sqs", ... }` /
//! `{ kind = "embedded" }`; [`open_producer`] and [`open_consumer`] turn a
//! Kafka or SQS configuration into an [`AnyProducer`] / [`AnyConsumer`]. The
//! host maps the embedded kind to its own engine on `wharf-log`; the
//! [`embedded`] module is a queue on one `wharf-log` partition behind the
//! same traits, opened from a directory
//! ([`embedded::EmbeddedProducer::open`], [`embedded::EmbeddedConsumer::open`]).

use std::future::Future;
use std::time::Duration;

mod any;
mod config;
pub mod embedded;
mod error;
pub mod kafka;
mod renewing;
pub mod sqs;
mod util;

pub use any::{AnyConsumer, AnyProducer, open_consumer, open_producer, provision};
pub use config::{KafkaConfig, QueueConfig, SqsConfig};
pub use error::{Error, Result};

/// Header / attribute names Wharf puts on messages. Other producers may leave
/// them out; consumers treat missing ones as defaults.
pub mod headers {
    /// Delivery attempt this copy starts at (1 when absent).
    pub const ATTEMPT: &str = "wharf-attempt";
    /// The id of the first copy of a message that was re-enqueued.
    pub const ORIGIN: &str = "wharf-origin";
    /// Unix time in milliseconds before which the message must not be delivered.
    pub const NOT_BEFORE: &str = "wharf-not-before";
    /// Why a message was dead-lettered.
    pub const DLQ_REASON: &str = "wharf-dlq-reason";
    /// SQS only: the key (SQS has no native key on standard queues).
    pub const KEY: &str = "wharf-key";
    /// SQS only: `base64` when the body is the base64 of the payload,
    /// `empty` for an empty payload (SQS rejects empty bodies).
    pub const ENCODING: &str = "wharf-encoding";
}

/// One message to append.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Ordering key: Kafka partitions by it, SQS FIFO uses it as the
    /// MessageGroupId. `None`: no ordering promise beyond the backend's.
    pub key: Option<&'a str>,
    /// The bytes to deliver (any bytes; SQS bodies that are not plain text
    /// are carried as base64).
    pub payload: &'a [u8],
    /// Do not deliver before this much time has passed. Zero: at once.
    pub delay: Duration,
}

impl<'a> Record<'a> {
    /// A record without delay.
    pub fn new(key: Option<&'a str>, payload: &'a [u8]) -> Self {
        Self { key, payload, delay: Duration::ZERO }
    }

    /// The same record, delivered no sooner than `delay` from now.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What was true when an append was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Kafka: written to the partition leader and replicated to every in-sync
    /// replica (`acks=all`), by the idempotent producer (no duplicates or
    /// reordering from the producer's own retries).
    KafkaInSyncReplicas,
    /// SQS: SendMessage succeeded, so SQS has stored the message redundantly
    /// (SQS does not acknowledge before storing).
    SqsStored,
    /// Embedded: an fdatasync of the log covered the record.
    EmbeddedSynced,
    /// Embedded with buffered durability: written to the log file, not yet
    /// fsync'ed (a machine crash may lose it).
    EmbeddedWritten,
}

/// Where an appended message went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Position {
    /// A Kafka partition offset.
    Kafka { topic: String, partition: i32, offset: i64 },
    /// An SQS message id; FIFO queues also give a sequence number.
    Sqs { message_id: String, sequence_number: Option<String> },
    /// A sequence number in the embedded log.
    Embedded { seq: u64 },
}

/// An append's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Backend-neutral id of the message; the same id that its
    /// [`Delivery::id`] will carry.
    pub id: String,
    pub position: Position,
    pub durability: Durability,
}

/// What a consumer needs to ack, nack, extend or dead-letter a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Receipt {
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
    Sqs {
        receipt_handle: String,
    },
    /// `queue` tells queues apart in one process; `token` one delivery of
    /// the message from another.
    Embedded {
        queue: u64,
        seq: u64,
        token: u64,
    },
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Backend-neutral message id, stable across redeliveries and across
    /// re-enqueues by `nack` (Kafka: `topic/partition@offset` of the first
    /// copy; SQS: the MessageId of the first copy; embedded: `<dir name>@<seq>`).
    pub id: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// 1 on the first delivery. SQS counts every receive
    /// (ApproximateReceiveCount); Kafka counts nacks only (a redelivery after
    /// a crash or a rebalance is not counted); embedded counts deliveries
    /// since the process opened the queue.
    pub attempt: u32,
    /// Backend handle for ack / nack / extend / dead-letter.
    pub receipt: Receipt,
}

/// The write side of a queue.
pub trait Producer: Send + Sync {
    /// Appends one message and waits until it is durable (see [`Durability`]).
    fn append<'a>(
        &'a self,
        key: Option<&'a str>,
        payload: &'a [u8],
    ) -> impl Future<Output = Result<Ack>> + Send + 'a {
        self.append_record(Record::new(key, payload))
    }

    /// Appends one record (with its optional delay).
    fn append_record(&self, record: Record<'_>) -> impl Future<Output = Result<Ack>> + Send;

    /// Appends many records, in order, and waits until all are durable.
    /// Acks come back in the order of `records`. On `Err` some records may
    /// have been stored (at least once: retrying may duplicate them, except
    /// on SQS FIFO within its 5-minute deduplication window).
    fn append_batch(&self, records: &[Record<'_>]) -> impl Future<Output = Result<Vec<Ack>>> + Send;
}

/// The read side of a queue: a member of a consumer group (Kafka) or a
/// competing consumer (SQS).
pub trait Consumer: Send + Sync {
    /// Receives up to `max` messages, waiting up to `wait` for the first one.
    /// Returns an empty vector when nothing arrived in time.
    fn receive(&self, max: usize, wait: Duration) -> impl Future<Output = Result<Vec<Delivery>>> + Send;

    /// The target confirmed the delivery: never deliver it again.
    /// Kafka: marks it done and commits the partition's offset up to (not
    /// past) the first message still unacked. SQS: DeleteMessage.
    /// On `Err` the ack may not have reached the broker and the message may
    /// be delivered again (at least once).
    fn ack(&self, delivery: &Delivery) -> impl Future<Output = Result<()>> + Send;

    /// Delivery failed: deliver it again after `delay` (zero: as soon as
    /// possible), with `attempt` one higher.
    fn nack(&self, delivery: &Delivery, delay: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Moves the message to the dead-letter queue (durably), then acks it.
    fn dead_letter(&self, delivery: &Delivery, reason: &str) -> impl Future<Output = Result<()>> + Send;

    /// Keeps the message reserved for this consumer at least `by` from now.
    /// SQS: ChangeMessageVisibility (the consumer also does this on its own
    /// for every message in flight). Kafka: nothing to do (messages stay
    /// reserved while the consumer is in the group).
    fn extend(&self, delivery: &Delivery, by: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Commits what is acked and releases what is not, so that another
    /// consumer gets the unacked messages at once (SQS: visibility 0; Kafka:
    /// leaves the group). The consumer must not be used afterwards.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;
}
