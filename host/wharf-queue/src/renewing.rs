//! A Kafka producer that is replaced when the broker fences it.
//!
//! The idempotent producer's id lives in the broker. A broker that lost it
//! (a restart without its producer state, as tansu does) answers every
//! later produce with `ProducerFenced`, and librdkafka treats that, like
//! any fatal error, as the end of the producer: nothing it sends can
//! succeed again. So after such an error the producer is swapped for a new
//! one (a new producer id); the records that failed were refused to their
//! writers, never acknowledged, and the next write goes through the new
//! producer. Other errors (a broker down, a timeout) keep the producer:
//! librdkafka reconnects by itself.

use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer as _};

use crate::Result;

pub(crate) struct RenewingProducer {
    config: ClientConfig,
    current: Mutex<Arc<FutureProducer>>,
}

impl RenewingProducer {
    pub(crate) fn new(config: ClientConfig) -> Result<Self> {
        let producer = config.create()?;
        Ok(Self { config, current: Mutex::new(Arc::new(producer)) })
    }

    /// The producer to send with now.
    pub(crate) fn get(&self) -> Arc<FutureProducer> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After `used` failed with `e`: replaces it if it can never produce
    /// again (and nobody replaced it yet).
    pub(crate) fn after_error(&self, used: &Arc<FutureProducer>, e: &KafkaError) {
        if !ends_the_producer(e) && used.client().fatal_error().is_none() {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, used) {
            return; // another writer renewed it already
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(error = %e, "kafka producer fenced or failed for good; writing through a new one");
                let old = std::mem::replace(&mut *current, Arc::new(fresh));
                drop(current);
                // Dropping a producer flushes for up to 500 ms: not on a
                // runtime thread.
                std::thread::spawn(move || drop(old));
            }
            Err(err) => {
                tracing::error!(error = %err, "kafka producer could not be renewed; writes keep failing")
            }
        }
    }
}

/// Whether `e` says the producer is done for.
fn ends_the_producer(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fenced_or_fatal_producer_is_replaced() {
        let err = |code| KafkaError::MessageProduction(code);
        assert!(ends_the_producer(&err(RDKafkaErrorCode::ProducerFenced)));
        assert!(ends_the_producer(&err(RDKafkaErrorCode::Fatal)));
        assert!(!ends_the_producer(&err(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!ends_the_producer(&err(RDKafkaErrorCode::AllBrokersDown)));
    }
}
