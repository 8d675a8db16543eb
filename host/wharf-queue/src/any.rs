//! Backend chosen at run time from a [`QueueConfig`].

use std::time::Duration;

use crate::embedded::{EmbeddedConsumer, EmbeddedProducer};
use crate::kafka::{KafkaConsumer, KafkaProducer};
use crate::sqs::{SqsConsumer, SqsProducer};
use crate::{Ack, Consumer, Delivery, Error, Producer, QueueConfig, Record, Result};

const EMBEDDED: &str = "the embedded kind names no directory: open it with wharf_queue::embedded";

/// Creates the queue and its dead-letter queue when missing (Kafka topics,
/// SQS queues). Nothing to do for the embedded kind.
pub async fn provision(cfg: &QueueConfig) -> Result<()> {
    match cfg {
        QueueConfig::Embedded => Ok(()),
        QueueConfig::Kafka(k) => crate::kafka::provision(k).await,
        QueueConfig::Sqs(s) => crate::sqs::provision(s).await,
    }
}

/// A Kafka, SQS or embedded producer.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyProducer {
    Kafka(KafkaProducer),
    Sqs(SqsProducer),
    Embedded(EmbeddedProducer),
}

/// A Kafka, SQS or embedded consumer.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyConsumer {
    Kafka(KafkaConsumer),
    Sqs(SqsConsumer),
    Embedded(EmbeddedConsumer),
}

/// Opens a producer for `cfg`. `Error::Config` for the embedded kind.
pub async fn open_producer(cfg: &QueueConfig) -> Result<AnyProducer> {
    match cfg {
        QueueConfig::Embedded => Err(Error::Config(EMBEDDED.into())),
        QueueConfig::Kafka(k) => Ok(AnyProducer::Kafka(KafkaProducer::open(k).await?)),
        QueueConfig::Sqs(s) => Ok(AnyProducer::Sqs(SqsProducer::open(s).await?)),
    }
}

/// Opens a consumer for `cfg`. `Error::Config` for the embedded kind.
pub async fn open_consumer(cfg: &QueueConfig) -> Result<AnyConsumer> {
    match cfg {
        QueueConfig::Embedded => Err(Error::Config(EMBEDDED.into())),
        QueueConfig::Kafka(k) => Ok(AnyConsumer::Kafka(KafkaConsumer::open(k).await?)),
        QueueConfig::Sqs(s) => Ok(AnyConsumer::Sqs(SqsConsumer::open(s).await?)),
    }
}

impl Producer for AnyProducer {
    async fn append_record(&self, record: Record<'_>) -> Result<Ack> {
        match self {
            AnyProducer::Kafka(p) => p.append_record(record).await,
            AnyProducer::Sqs(p) => p.append_record(record).await,
            AnyProducer::Embedded(p) => p.append_record(record).await,
        }
    }

    async fn append_batch(&self, records: &[Record<'_>]) -> Result<Vec<Ack>> {
        match self {
            AnyProducer::Kafka(p) => p.append_batch(records).await,
            AnyProducer::Sqs(p) => p.append_batch(records).await,
            AnyProducer::Embedded(p) => p.append_batch(records).await,
        }
    }
}

impl Consumer for AnyConsumer {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        match self {
            AnyConsumer::Kafka(c) => c.receive(max, wait).await,
            AnyConsumer::Sqs(c) => c.receive(max, wait).await,
            AnyConsumer::Embedded(c) => c.receive(max, wait).await,
        }
    }

    async fn ack(&self, d: &Delivery) -> Result<()> {
        match self {
            AnyConsumer::Kafka(c) => c.ack(d).await,
            AnyConsumer::Sqs(c) => c.ack(d).await,
            AnyConsumer::Embedded(c) => c.ack(d).await,
        }
    }

    async fn nack(&self, d: &Delivery, delay: Duration) -> Result<()> {
        match self {
            AnyConsumer::Kafka(c) => c.nack(d, delay).await,
            AnyConsumer::Sqs(c) => c.nack(d, delay).await,
            AnyConsumer::Embedded(c) => c.nack(d, delay).await,
        }
    }

    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<()> {
        match self {
            AnyConsumer::Kafka(c) => c.dead_letter(d, reason).await,
            AnyConsumer::Sqs(c) => c.dead_letter(d, reason).await,
            AnyConsumer::Embedded(c) => c.dead_letter(d, reason).await,
        }
    }

    async fn extend(&self, d: &Delivery, by: Duration) -> Result<()> {
        match self {
            AnyConsumer::Kafka(c) => c.extend(d, by).await,
            AnyConsumer::Sqs(c) => c.extend(d, by).await,
            AnyConsumer::Embedded(c) => c.extend(d, by).await,
        }
    }

    async fn close(&self) -> Result<()> {
        match self {
            AnyConsumer::Kafka(c) => c.close().await,
            AnyConsumer::Sqs(c) => c.close().await,
            AnyConsumer::Embedded(c) => c.close().await,
        }
    }
}
