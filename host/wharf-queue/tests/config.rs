//! The `queue = { kind = ... }` table deserializes into `QueueConfig`.

#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use wharf_queue::{KafkaConfig, QueueConfig, SqsConfig};

#[derive(Debug, Deserialize)]
struct Host {
    queue: QueueConfig,
}

fn parse(s: &str) -> QueueConfig {
    toml::from_str::<Host>(s).unwrap().queue
}

#[test]
fn the_three_kinds_parse_with_defaults() {
    assert_eq!(parse(r#"queue = { kind = "embedded" }"#), QueueConfig::Embedded);

    let k = parse(r#"queue = { kind = "kafka", brokers = "127.0.0.1:9092", topic = "orders" }"#);
    assert_eq!(k, QueueConfig::Kafka(KafkaConfig::new("127.0.0.1:9092", "orders")));
    let QueueConfig::Kafka(k) = k else { unreachable!() };
    assert_eq!(k.dlq_topic(), "orders.dlq");
    assert_eq!(k.group, "wharf");

    let s = parse(
        r#"queue = { kind = "sqs", endpoint = "http://127.0.0.1:4566", queue = "orders", fifo = true }"#,
    );
    assert_eq!(s, QueueConfig::Sqs(SqsConfig::new(Some("http://127.0.0.1:4566".into()), "orders", true)));
    let QueueConfig::Sqs(s) = s else { unreachable!() };
    assert_eq!(s.queue_name(), "orders.fifo");
    assert_eq!(s.dlq_name(), "orders-dlq.fifo");
    assert_eq!(s.region, "us-east-1");
}

#[test]
fn unknown_keys_and_kinds_are_rejected() {
    let bad = |s: &str| toml::from_str::<Host>(s).unwrap_err().to_string();
    assert!(bad(r#"queue = { kind = "kafka", brokers = "b", topic = "t", topik = "x" }"#).contains("topik"));
    assert!(bad(r#"queue = { kind = "rabbit" }"#).contains("rabbit"));
    assert!(bad(r#"queue = { kind = "sqs" }"#).contains("queue"));
}

#[tokio::test]
async fn reserved_kafka_properties_cannot_be_overridden() {
    let mut k = KafkaConfig::new("127.0.0.1:1", "t");
    k.create_topics = false;
    k.properties.insert("acks".into(), "1".into());
    let err = wharf_queue::open_producer(&QueueConfig::Kafka(k)).await.unwrap_err();
    assert!(err.to_string().contains("acks"), "{err}");
}

#[tokio::test]
async fn the_embedded_kind_is_not_opened_here() {
    assert!(wharf_queue::open_consumer(&QueueConfig::Embedded).await.is_err());
}
