use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which queue the host uses, as written in its configuration:
///
/// ```toml
/// queue = { kind = "embedded" }
/// queue = { kind = "kafka", brokers = "127.0.0.1:9092", topic = "orders" }
/// queue = { kind = "sqs", endpoint = "http://127.0.0.1:5000", queue = "orders", fifo = true }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum QueueConfig {
    /// The host's own write-ahead log (`wharf-log`); not opened by this crate.
    Embedded,
    Kafka(KafkaConfig),
    Sqs(SqsConfig),
}

fn default_group() -> String {
    "wharf".to_owned()
}
fn default_partitions() -> i32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_message_timeout_ms() -> u64 {
    30_000
}
fn default_session_timeout_ms() -> u64 {
    30_000
}
fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_visibility() -> u32 {
    30
}

/// A Kafka topic (any broker that speaks the Kafka protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated `host:port`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group id. Every consumer of one group shares the work.
    #[serde(default = "default_group")]
    pub group: String,
    /// Dead-letter topic; default `<topic>.dlq`.
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// Create the topic and the DLQ topic when missing (with `partitions`).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics created by `create_topics`.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// How long an append may take, retries included, before it fails.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// Consumer session timeout: how soon a dead consumer's partitions move.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Extra librdkafka properties, applied to producers and consumers
    /// (safety-critical ones like `acks` and `enable.auto.commit` are
    /// rejected). librdkafka is built without TLS/SASL.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A configuration with defaults.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            group: default_group(),
            dlq_topic: None,
            create_topics: true,
            partitions: default_partitions(),
            message_timeout_ms: default_message_timeout_ms(),
            session_timeout_ms: default_session_timeout_ms(),
            properties: BTreeMap::new(),
        }
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic.clone().unwrap_or_else(|| format!("{}.dlq", self.topic))
    }

    /// The configuration of the dead-letter topic as a queue of its own
    /// (to read or replay it), with group `<group>.dlq`.
    pub fn dlq(&self) -> Self {
        let mut c = self.clone();
        c.topic = self.dlq_topic();
        c.dlq_topic = Some(format!("{}.dlq", c.topic));
        c.group = format!("{}.dlq", self.group);
        c
    }
}

/// An Amazon SQS queue (or a server that speaks its API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// Endpoint override (`http://127.0.0.1:5000` for a local server). None:
    /// the AWS endpoint of `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Queue name; `.fifo` is appended for FIFO queues when missing.
    pub queue: String,
    /// FIFO queue: ordered per key (MessageGroupId), deduplicated.
    #[serde(default)]
    pub fifo: bool,
    /// Dead-letter queue name; default `<queue>-dlq` (`<name>-dlq.fifo`).
    #[serde(default)]
    pub dlq: Option<String>,
    /// Create the queue and the DLQ queue when missing.
    #[serde(default = "default_true")]
    pub create_queues: bool,
    /// Seconds a received message stays hidden from other consumers. The
    /// consumer extends it while the message is in flight.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_secs: u32,
}

impl SqsConfig {
    /// A configuration with defaults.
    pub fn new(endpoint: Option<String>, queue: impl Into<String>, fifo: bool) -> Self {
        Self {
            endpoint,
            region: default_region(),
            queue: queue.into(),
            fifo,
            dlq: None,
            create_queues: true,
            visibility_timeout_secs: default_visibility(),
        }
    }

    /// The queue name as SQS knows it (with `.fifo` for FIFO queues).
    pub fn queue_name(&self) -> String {
        fifo_name(&self.queue, self.fifo)
    }

    /// The dead-letter queue name.
    pub fn dlq_name(&self) -> String {
        match &self.dlq {
            Some(d) => fifo_name(d, self.fifo),
            None => {
                let base = self.queue.strip_suffix(".fifo").unwrap_or(&self.queue);
                fifo_name(&format!("{base}-dlq"), self.fifo)
            }
        }
    }

    /// The configuration of the dead-letter queue as a queue of its own.
    pub fn dlq(&self) -> Self {
        let mut c = self.clone();
        c.queue = self.dlq_name();
        c.dlq = None;
        c
    }
}

fn fifo_name(name: &str, fifo: bool) -> String {
    if fifo && !name.ends_with(".fifo") { format!("{name}.fifo") } else { name.to_owned() }
}
