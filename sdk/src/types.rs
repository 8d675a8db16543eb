//! The data a plugin receives and returns.

use std::time::Duration;

use crate::Error;

/// One durable message, as a client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stable id, unique within the namespace (`<partition>-<sequence>`).
    pub id: String,
    pub namespace: String,
    pub partition: u32,
    /// Dense, monotonic position of the message in its partition's log.
    pub sequence: u64,
    /// Ordering key; messages with the same key arrive in write order.
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// The client's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
    /// 1 on the first delivery attempt, 2 on the first retry, and so on.
    pub attempt: u32,
    /// How many times an operator replayed this message from the
    /// dead-letter queue (0 if it never went there). Retries do not count.
    pub replays: u32,
    /// When the host made the message durable, in ms since the Unix epoch.
    pub written_at_ms: u64,
    /// The stored log record, for a target with `ordering = "partition"`
    /// on the embedded log (a mirror of the log, such as the replica).
    pub record: Option<LogRecord>,
}

/// A log record exactly as stored, with what proves its place in the
/// partition's history (`wharf:target@0.3.0` on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's bytes as the log stores them.
    pub bytes: Vec<u8>,
    /// CRC-32C of `bytes`, computed by the host that wrote the record.
    pub checksum: u32,
    /// The partition's chained digest after this record (16 hex digits).
    pub digest: String,
    /// The chained digest of everything below this record (16 hex digits).
    pub prev_digest: String,
}

impl Message {
    /// A message with this id and payload, in partition 0 of namespace
    /// `"default"`, on its first attempt. Mostly for tests; see also
    /// [`crate::testing`].
    pub fn new(id: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            namespace: "default".to_string(),
            partition: 0,
            sequence: 0,
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
            idempotency_key: None,
            attempt: 1,
            replays: 0,
            written_at_ms: 0,
            record: None,
        }
    }

    /// Set the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Add a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the idempotency key.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Set the namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Set the attempt number.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Set the number of dead-letter replays.
    #[must_use]
    pub fn with_replays(mut self, replays: u32) -> Self {
        self.replays = replays;
        self
    }

    /// The first header with this name (compared ASCII case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The key to deduplicate on: the client's idempotency key, or else the
    /// message id (stable across redeliveries).
    pub fn dedup_key(&self) -> &str {
        self.idempotency_key.as_deref().unwrap_or(&self.id)
    }

    /// The payload as text, with invalid UTF-8 replaced.
    pub fn payload_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }
}

/// What one [`crate::Target::reconcile`] pass did: how many inconsistencies
/// it repaired, and what it could not repair (each a short reason; the host
/// logs them and counts them in its metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub repaired: u64,
    pub errors: Vec<String>,
}

/// What a plugin is, for operators: `wharf plugin check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// E.g. the crate name, `wharf-plugin-http`.
    pub name: String,
    /// The plugin's own version (not the WIT version).
    pub version: String,
}

impl PluginInfo {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into() }
    }
}

/// The messages for one call to `deliver`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub messages: Vec<Message>,
    /// Set when the batch is one committed multi-chunk transaction.
    pub transaction_id: Option<String>,
}

impl Batch {
    /// A batch of these messages, outside any transaction.
    pub fn new(messages: Vec<Message>) -> Self {
        Self { messages, transaction_id: None }
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target has the message.
    Delivered,
    /// A transient failure: the host retries with backoff, waiting at least
    /// `after` if it is set.
    Retry { reason: String, after: Option<Duration> },
    /// A permanent failure: the host moves the message to the dead-letter
    /// queue.
    Reject { reason: String },
    /// The target cannot go on without an operator (e.g. a replica whose
    /// history diverged): the host stops this target on this partition
    /// until `wharf target resume`. Never retried.
    Halt { reason: String },
}

impl Outcome {
    /// A retry with no requested wait.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry { reason: reason.into(), after: None }
    }

    /// A reject.
    pub fn reject(reason: impl Into<String>) -> Self {
        Outcome::Reject { reason: reason.into() }
    }

    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered)
    }

    pub fn is_retry(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }

    pub fn is_reject(&self) -> bool {
        matches!(self, Outcome::Reject { .. })
    }

    /// A halt.
    pub fn halt(reason: impl Into<String>) -> Self {
        Outcome::Halt { reason: reason.into() }
    }

    pub fn is_halt(&self) -> bool {
        matches!(self, Outcome::Halt { .. })
    }

    /// The reason of a retry, reject or halt.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retry { reason, .. } | Outcome::Reject { reason } | Outcome::Halt { reason } => {
                Some(reason)
            }
        }
    }

    /// The outcome as `deliver_one` returns it: `Ok` for delivered, the
    /// matching [`Error`] otherwise (a missing outcome is a retry).
    pub fn into_result(outcome: Option<Outcome>) -> Result<(), Error> {
        match outcome {
            Some(Outcome::Delivered) => Ok(()),
            Some(Outcome::Retry { reason, after }) => {
                let err = Error::retry(reason);
                Err(match after {
                    Some(a) => err.after(a),
                    None => err,
                })
            }
            Some(Outcome::Reject { reason }) => Err(Error::reject(reason)),
            Some(Outcome::Halt { reason }) => Err(Error::halt(reason)),
            None => Err(Error::retry("no outcome")),
        }
    }
}

impl From<Error> for Outcome {
    fn from(err: Error) -> Self {
        let after = err.retry_after();
        let reason = err.reason().to_string();
        match (err.is_retry(), err.is_halt()) {
            (true, _) => Outcome::Retry { reason, after },
            (_, true) => Outcome::Halt { reason },
            _ => Outcome::Reject { reason },
        }
    }
}

impl From<Result<(), Error>> for Outcome {
    fn from(result: Result<(), Error>) -> Self {
        match result {
            Ok(()) => Outcome::Delivered,
            Err(err) => err.into(),
        }
    }
}
