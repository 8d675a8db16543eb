//! The bytes of one message inside a log record.
//!
//! Layout: one version byte, then the postcard encoding of [`Envelope`].
//! Version 1 is the only version so far. A record that does not decode is
//! reported as corruption of that record, never skipped.

use serde::{Deserialize, Serialize};

const VERSION: u8 = 1;

/// What a client wrote, plus what the host knew when it made it durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    /// When the record was appended, ms since the Unix epoch.
    pub written_at_ms: u64,
    /// Do not deliver before this time (ms since the Unix epoch).
    pub deliver_at_ms: Option<u64>,
    /// How many times this message came back from the DLQ.
    pub replays: u32,
}

pub use crate::record::DecodeError;

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        crate::record::encode(VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::record::decode(VERSION, bytes)
    }
}

/// `<partition>-<sequence>`: unique within a namespace, and enough to find
/// the message again.
pub fn message_id(partition: u32, sequence: u64) -> String {
    format!("{partition}-{sequence}")
}

pub fn parse_message_id(id: &str) -> Option<(u32, u64)> {
    let (p, s) = id.split_once('-')?;
    Some((p.parse().ok()?, s.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips() {
        let e = Envelope {
            key: Some("k".into()),
            payload: vec![0, 1, 255],
            headers: vec![("a".into(), "b".into())],
            idempotency_key: None,
            written_at_ms: 42,
            deliver_at_ms: Some(43),
            replays: 2,
        };
        assert_eq!(Envelope::decode(&e.encode()).expect("decodes"), e);
    }

    /// Version 1 as written to disk; it must decode forever.
    const V1_FIXTURE: &str = "01010a6f726465722d3132333403010203010274720178010469646d31d20901e80700";

    #[test]
    fn a_version_1_envelope_from_disk_still_decodes() {
        let bytes = hex::decode(V1_FIXTURE).expect("hex");
        let e = Envelope::decode(&bytes).expect("v1 decodes");
        assert_eq!(e.key.as_deref(), Some("order-1234"));
        assert_eq!(e.payload, vec![1, 2, 3]);
        assert_eq!(e.headers, vec![("tr".to_string(), "x".to_string())]);
        assert_eq!(e.idempotency_key.as_deref(), Some("idm1"));
        assert_eq!(e.written_at_ms, 1234);
        assert_eq!(e.deliver_at_ms, Some(1000));
        assert_eq!(e.replays, 0);
        assert_eq!(hex::encode(e.encode()), V1_FIXTURE, "the encoding changed: that is a new version");
    }

    #[test]
    fn an_unknown_version_is_an_error_not_a_guess() {
        assert!(matches!(Envelope::decode(&[9, 0]), Err(DecodeError::Version(9))));
        assert!(matches!(Envelope::decode(&[]), Err(DecodeError::Empty)));
    }

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(parse_message_id(&message_id(3, 17)), Some((3, 17)));
        assert_eq!(parse_message_id("x-1"), None);
    }
}
