//! A message to write, what a write waits for, and its acknowledgement,
//! with their JSON forms (`docs/api.md`, "Write a message"): the payload is
//! bytes here and standard base64 on the wire.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One message to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The bytes to deliver (at most 1 MiB).
    pub payload: Vec<u8>,
    /// Ordering key: same key, same partition, delivered in write order.
    pub key: Option<String>,
    /// The write's idempotency key; when `None` the client draws one per
    /// logical write and keeps it across that write's retries.
    pub idempotency_key: Option<String>,
    /// Passed to the target.
    pub headers: BTreeMap<String, String>,
    /// Deliver no earlier than this long after the write.
    pub delay: Option<Duration>,
    /// Deliver no earlier than this time (ms since the Unix epoch).
    pub deliver_at_ms: Option<u64>,
}

impl Message {
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self { payload: payload.into(), ..Self::default() }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    pub fn with_deliver_at_ms(mut self, at_ms: u64) -> Self {
        self.deliver_at_ms = Some(at_ms);
        self
    }

    /// The JSON form, with the idempotency key this write uses.
    pub(crate) fn wire<'a>(&'a self, idempotency_key: &'a str) -> WireMessage<'a> {
        WireMessage {
            payload: base64::engine::general_purpose::STANDARD.encode(&self.payload),
            key: self.key.as_deref(),
            idempotency_key,
            headers: &self.headers,
            delay_ms: self.delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            deliver_at_ms: self.deliver_at_ms,
        }
    }
}

/// A new idempotency key: 128 random bits as 32 hex digits.
pub(crate) fn new_idempotency_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A message as the API reads it.
#[derive(Debug, Serialize)]
pub(crate) struct WireMessage<'a> {
    payload: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    idempotency_key: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at_ms: Option<u64>,
}

/// What a write (a batch, a commit) waits for before Wharf answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wait {
    /// The record is in the log (fdatasync'd under the default durability).
    #[default]
    Durable,
    /// Every target confirmed delivery, or this long passed (at most 60 s;
    /// more is `400 invalid_timeout`). A timeout is not an error: the ack
    /// says `visible: false`.
    Visible(Duration),
}

impl Wait {
    /// `wait` and `timeout_ms` of the request body.
    pub(crate) fn wire(self) -> WireWait {
        match self {
            Self::Durable => WireWait { wait: "durable", timeout_ms: None },
            Self::Visible(t) => WireWait {
                wait: "visible",
                timeout_ms: Some(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            },
        }
    }

    /// How long Wharf may hold the reply back, beyond a plain call.
    pub(crate) fn holds_reply(self) -> Duration {
        match self {
            Self::Durable => Duration::ZERO,
            Self::Visible(t) => t,
        }
    }
}

/// `wait` and `timeout_ms` as the API reads them.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct WireWait {
    wait: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// The body of `POST /v1/namespaces/{ns}/messages`.
#[derive(Debug, Serialize)]
pub(crate) struct WriteOne<'a> {
    #[serde(flatten)]
    pub message: WireMessage<'a>,
    #[serde(flatten)]
    pub wait: WireWait,
}

/// The body of `POST /v1/namespaces/{ns}/messages/batch`.
#[derive(Debug, Serialize)]
pub(crate) struct WriteMany<'a> {
    pub messages: Vec<WireMessage<'a>>,
    #[serde(flatten)]
    pub wait: WireWait,
}

/// A batch reply: `{"results": [<ack> | {"error": {...}}, ...]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchReply {
    pub results: Vec<BatchResult>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum BatchResult {
    Failed { error: crate::ApiError },
    Written(WriteAck),
}

impl BatchResult {
    pub(crate) fn into_result(self) -> Result<WriteAck, crate::ApiError> {
        match self {
            Self::Failed { error } => Err(error),
            Self::Written(ack) => Ok(ack),
        }
    }
}

/// The acknowledgement of one message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WriteAck {
    /// `<partition>-<sequence>` on the embedded log; the backend's id on
    /// Kafka or SQS.
    pub message_id: String,
    pub partition: u32,
    pub sequence: u64,
    /// The record was covered by an fdatasync before the reply.
    pub durable: bool,
    /// Every target confirmed delivery before the reply (`Wait::Visible`).
    pub visible: bool,
    /// The idempotency key was used already: nothing was written and
    /// `message_id` is the original one (a retried write whose first reply
    /// was lost).
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_message_is_sent_as_the_api_reads_it() {
        let m = Message::new("hello")
            .with_key("order-1")
            .with_header("trace", "abc")
            .with_delay(Duration::from_secs(2));
        let body = WriteOne { message: m.wire("req-77"), wait: Wait::Visible(Duration::from_secs(3)).wire() };
        assert_eq!(
            serde_json::to_value(&body).ok(),
            Some(json!({"payload": "aGVsbG8=", "key": "order-1", "idempotency_key": "req-77",
                "headers": {"trace": "abc"}, "delay_ms": 2000, "wait": "visible", "timeout_ms": 3000}))
        );
        let byte = Message::new(*b"\xff");
        let bare = WriteOne { message: byte.wire("k"), wait: Wait::Durable.wire() };
        assert_eq!(
            serde_json::to_value(&bare).ok(),
            Some(json!({"payload": "/w==", "idempotency_key": "k", "wait": "durable"}))
        );
    }

    #[test]
    fn drawn_idempotency_keys_are_32_hex_digits_and_differ() {
        let (a, b) = (new_idempotency_key(), new_idempotency_key());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_batch_reply_holds_acks_and_refusals_in_order() {
        let reply: Result<BatchReply, _> = serde_json::from_value(json!({"results": [
            {"message_id": "0-4", "partition": 0, "sequence": 4, "durable": true, "visible": false, "duplicate": false},
            {"error": {"code": "invalid_base64", "message": "payload is not standard base64"}},
        ]}));
        let results: Vec<_> =
            reply.map(|r| r.results.into_iter().map(BatchResult::into_result).collect()).unwrap_or_default();
        assert!(
            matches!(&results[..], [Ok(a), Err(e)] if a.message_id == "0-4" && e.code == "invalid_base64")
        );
    }
}
