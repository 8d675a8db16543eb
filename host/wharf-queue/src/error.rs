/// Errors from a queue backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used.
    #[error("queue configuration: {0}")]
    Config(String),
    /// librdkafka reported an error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A Kafka topic could not be created.
    #[error("kafka: creating topic {topic}: {code}")]
    CreateTopic { topic: String, code: rdkafka::types::RDKafkaErrorCode },
    /// An SQS request failed.
    #[error("sqs: {0}")]
    Sqs(String),
    /// The embedded log failed.
    #[error("embedded log: {0}")]
    Log(#[from] wharf_log::LogError),
    /// The delivery was not received by this consumer (or from this backend).
    #[error("foreign delivery: {0}")]
    ForeignDelivery(String),
    /// The operation is not available on this backend.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// A background task failed.
    #[error("task: {0}")]
    Task(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn sqs<E>(e: E) -> Self
    where
        E: std::error::Error + 'static,
    {
        // The SDK's Display is terse ("service error"); the source chain has
        // the code and the message.
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Error::Sqs(text)
    }
}
