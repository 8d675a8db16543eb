//! The bytes of one message inside a log record.
//!
//! Layout: one version byte, then the postcard encoding of [`Envelope`].
//! - version 1: the fields up to `replays` (kept readable forever, see
//!   [`EnvelopeV1`] and its fixture test);
//! - version 2: adds `transaction`, set on the marker of a committed
//!   multi-chunk transaction (kept readable, see [`EnvelopeV2`]);
//! - version 3: adds `only_target`, set on a DLQ replay in a namespace with
//!   several targets, so that it goes back to that target only (kept
//!   readable, see [`EnvelopeV3`]);
//! - version 4 (written now): the same fields, but `written_at_ms` comes
//!   first as 8 bytes little-endian (bytes 1..9), outside the postcard
//!   body, so that the partition can stamp it once the record's sequence is
//!   known ([`stamp_written_at`], see `storage::write_clock`).
//!
//! A record that does not decode is reported as corruption of that record,
//! never skipped.
//!
//! Payloads go through `serde_bytes`: postcard writes a byte string and a
//! sequence of `u8` alike (a varint length, then the bytes), so the bytes
//! on disk are the same, but a byte string is one copy where a sequence
//! was a loop per byte.

use serde::{Deserialize, Serialize};

const VERSION: u8 = 4;

/// Where version 4 keeps `written_at_ms`.
const WRITTEN_AT: std::ops::Range<usize> = 1..9;

/// What a client wrote, plus what the host knew when it made it durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    /// When the record was appended, ms since the Unix epoch; never
    /// earlier than the record before it in its partition. In version 4
    /// outside the postcard body (see the module comment).
    pub written_at_ms: u64,
    /// Do not deliver before this time (ms since the Unix epoch).
    pub deliver_at_ms: Option<u64>,
    /// How many times this message came back from the DLQ.
    pub replays: u32,
    /// Set when this record is the marker of a committed transaction: the
    /// chunks are parked in the namespace's chunk store (see `txn_store.rs`).
    pub transaction: Option<TxnMarker>,
    /// Deliver to this target only (a DLQ replay); `None`: every target.
    pub only_target: Option<String>,
}

/// Version 4's postcard body: every field but `written_at_ms`.
#[derive(Serialize)]
struct BodyRef<'a> {
    key: &'a Option<String>,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    headers: &'a [(String, String)],
    idempotency_key: &'a Option<String>,
    deliver_at_ms: Option<u64>,
    replays: u32,
    transaction: &'a Option<TxnMarker>,
    only_target: &'a Option<String>,
}

/// [`BodyRef`], decoded.
#[derive(Deserialize)]
struct Body {
    key: Option<String>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
    deliver_at_ms: Option<u64>,
    replays: u32,
    transaction: Option<TxnMarker>,
    only_target: Option<String>,
}

impl Body {
    fn with_written_at(self, written_at_ms: u64) -> Envelope {
        Envelope {
            key: self.key,
            payload: self.payload,
            headers: self.headers,
            idempotency_key: self.idempotency_key,
            written_at_ms,
            deliver_at_ms: self.deliver_at_ms,
            replays: self.replays,
            transaction: self.transaction,
            only_target: self.only_target,
        }
    }
}

/// The version 3 layout, frozen.
#[derive(Debug, Deserialize)]
pub(crate) struct EnvelopeV3 {
    key: Option<String>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
    written_at_ms: u64,
    deliver_at_ms: Option<u64>,
    replays: u32,
    transaction: Option<TxnMarker>,
    only_target: Option<String>,
}

impl From<EnvelopeV3> for Envelope {
    fn from(v: EnvelopeV3) -> Self {
        Envelope {
            key: v.key,
            payload: v.payload,
            headers: v.headers,
            idempotency_key: v.idempotency_key,
            written_at_ms: v.written_at_ms,
            deliver_at_ms: v.deliver_at_ms,
            replays: v.replays,
            transaction: v.transaction,
            only_target: v.only_target,
        }
    }
}

/// The version 2 layout, frozen.
#[derive(Debug, Deserialize)]
pub(crate) struct EnvelopeV2 {
    key: Option<String>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
    written_at_ms: u64,
    deliver_at_ms: Option<u64>,
    replays: u32,
    transaction: Option<TxnMarker>,
}

impl From<EnvelopeV2> for Envelope {
    fn from(v: EnvelopeV2) -> Self {
        Envelope {
            key: v.key,
            payload: v.payload,
            headers: v.headers,
            idempotency_key: v.idempotency_key,
            written_at_ms: v.written_at_ms,
            deliver_at_ms: v.deliver_at_ms,
            replays: v.replays,
            transaction: v.transaction,
            only_target: None,
        }
    }
}

/// What the queue holds for a committed multi-chunk transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMarker {
    pub id: String,
    /// Chunks `0..chunks`, all durable in the chunk store before the marker.
    pub chunks: u32,
    /// The chunks themselves, only once the marker left the log (a DLQ entry
    /// carries its chunks so that it outlives the chunk store's file).
    pub inline: Vec<Chunk>,
}

/// One chunk of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub seq: u32,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// The version 1 layout, frozen: records written before transactions.
#[derive(Debug, Deserialize)]
pub(crate) struct EnvelopeV1 {
    key: Option<String>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
    written_at_ms: u64,
    deliver_at_ms: Option<u64>,
    replays: u32,
}

impl From<EnvelopeV1> for Envelope {
    fn from(v: EnvelopeV1) -> Self {
        Envelope {
            key: v.key,
            payload: v.payload,
            headers: v.headers,
            idempotency_key: v.idempotency_key,
            written_at_ms: v.written_at_ms,
            deliver_at_ms: v.deliver_at_ms,
            replays: v.replays,
            transaction: None,
            only_target: None,
        }
    }
}

pub use crate::storage::record::DecodeError;

impl Envelope {
    /// Bytes that are not an envelope (from a queue another producer
    /// writes to), kept as the payload so that the DLQ shows them.
    pub fn raw(key: Option<String>, payload: Vec<u8>) -> Self {
        Envelope {
            key,
            payload,
            headers: Vec::new(),
            idempotency_key: None,
            written_at_ms: crate::clock::now_ms(),
            deliver_at_ms: None,
            replays: 0,
            transaction: None,
            only_target: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// A capacity hint for the encoded bytes.
    pub fn encoded_len_hint(&self) -> usize {
        WRITTEN_AT.end + self.payload.len() + 32
    }

    /// [`Envelope::encode`], appended to `out` (one buffer for many).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.written_at_ms.to_le_bytes());
        let body = BodyRef {
            key: &self.key,
            payload: &self.payload,
            headers: &self.headers,
            idempotency_key: &self.idempotency_key,
            deliver_at_ms: self.deliver_at_ms,
            replays: self.replays,
            transaction: &self.transaction,
            only_target: &self.only_target,
        };
        // Encoding plain data into a Vec cannot fail.
        let _ = postcard::to_io(&body, out);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        use crate::storage::record::decode;
        match bytes.first() {
            Some(1) => decode::<EnvelopeV1>(1, bytes).map(Envelope::from),
            Some(2) => decode::<EnvelopeV2>(2, bytes).map(Envelope::from),
            Some(3) => decode::<EnvelopeV3>(3, bytes).map(Envelope::from),
            Some(&VERSION) => {
                let at = bytes.get(WRITTEN_AT).ok_or(DecodeError::Short { len: bytes.len() })?;
                let body: Body = postcard::from_bytes(&bytes[WRITTEN_AT.end..])?;
                Ok(body.with_written_at(u64::from_le_bytes(at.try_into().unwrap_or_default())))
            }
            Some(&v) => Err(DecodeError::Version(v)),
            None => Err(DecodeError::Empty),
        }
    }
}

/// Sets the write time of an encoded envelope (the current version; a
/// record of another version is left as it is).
pub fn stamp_written_at(bytes: &mut [u8], ms: u64) {
    if bytes.first() == Some(&VERSION)
        && let Some(at) = bytes.get_mut(WRITTEN_AT)
    {
        at.copy_from_slice(&ms.to_le_bytes());
    }
}

/// The write time of an encoded envelope, without decoding the rest.
pub fn written_at(bytes: &[u8]) -> Option<u64> {
    match bytes.first() {
        Some(&VERSION) => bytes.get(WRITTEN_AT).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes),
        Some(_) => Envelope::decode(bytes).ok().map(|e| e.written_at_ms),
        None => None,
    }
}

/// The idempotency key and write time of an encoded envelope, or `None`
/// for a message without a key (or bytes that do not decode: delivery
/// reports those). The current version is read in place, without copying
/// the payload; older ones are decoded whole.
pub fn idempotency_key_of(bytes: &[u8]) -> Option<(std::borrow::Cow<'_, str>, u64)> {
    /// The leading fields of version 4's body, borrowed from the record.
    #[derive(Deserialize)]
    struct KeyPeek<'a> {
        #[serde(borrow)]
        _key: Option<&'a str>,
        _payload: &'a [u8],
        #[serde(borrow)]
        _headers: Vec<(&'a str, &'a str)>,
        #[serde(borrow)]
        idempotency_key: Option<&'a str>,
    }
    if bytes.first() != Some(&VERSION) {
        let e = Envelope::decode(bytes).ok()?;
        return e.idempotency_key.map(|k| (k.into(), e.written_at_ms));
    }
    let at = u64::from_le_bytes(bytes.get(WRITTEN_AT)?.try_into().ok()?);
    let peek: KeyPeek<'_> = postcard::from_bytes(&bytes[WRITTEN_AT.end..]).ok()?;
    peek.idempotency_key.map(|k| (k.into(), at))
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
            transaction: Some(TxnMarker {
                id: "t".into(),
                chunks: 2,
                inline: vec![Chunk { seq: 0, payload: vec![7], headers: vec![] }],
            }),
            only_target: Some("b".into()),
        };
        assert_eq!(Envelope::decode(&e.encode()).expect("decodes"), e);
    }

    #[test]
    fn the_idempotency_key_is_read_in_place_as_a_full_decode_reads_it() {
        let mut e = Envelope::raw(Some("k".into()), vec![9; 300]);
        e.headers = vec![("h".into(), "v".into())];
        e.written_at_ms = 77;
        assert_eq!(idempotency_key_of(&e.encode()), None, "no key");
        e.idempotency_key = Some("req-1".into());
        e.deliver_at_ms = Some(5);
        assert_eq!(idempotency_key_of(&e.encode()), Some(("req-1".into(), 77)));
        let v1 = hex::decode(V1_FIXTURE).expect("hex");
        assert_eq!(idempotency_key_of(&v1), Some(("idm1".into(), 1234)), "older versions too");
        assert_eq!(idempotency_key_of(&[VERSION, 1, 2]), None, "short bytes");
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
        assert_eq!(e.transaction, None);
    }

    /// Version 2 as written to disk; it must decode forever.
    const V2_FIXTURE: &str =
        "02010a6f726465722d3132333403010203010274720178010469646d31d20901e8070001037478310300";

    #[test]
    fn a_version_2_envelope_from_disk_still_decodes() {
        let bytes = hex::decode(V2_FIXTURE).expect("hex");
        let e = Envelope::decode(&bytes).expect("v2 decodes");
        assert_eq!(e.key.as_deref(), Some("order-1234"));
        assert_eq!(e.transaction, Some(TxnMarker { id: "tx1".into(), chunks: 3, inline: vec![] }),);
        assert_eq!(e.only_target, None);
    }

    /// Version 3 as written to disk; it must decode forever.
    const V3_FIXTURE: &str = "03010a6f726465722d3132333403010203010274720178010469646d31d20901e8070000010162";

    #[test]
    fn a_version_3_envelope_from_disk_still_decodes() {
        let e = Envelope {
            key: Some("order-1234".into()),
            payload: vec![1, 2, 3],
            headers: vec![("tr".into(), "x".into())],
            idempotency_key: Some("idm1".into()),
            written_at_ms: 1234,
            deliver_at_ms: Some(1000),
            replays: 0,
            transaction: None,
            only_target: Some("b".into()),
        };
        assert_eq!(Envelope::decode(&hex::decode(V3_FIXTURE).expect("hex")).expect("v3 decodes"), e);
    }

    /// Version 4 as written now: the write time in bytes 1..9.
    const V4_FIXTURE: &str =
        "04d204000000000000010a6f726465722d3132333403010203010274720178010469646d3101e8070000010162";

    #[test]
    fn a_version_4_envelope_is_stamped_in_place_and_decodes_forever() {
        let mut e = Envelope {
            key: Some("order-1234".into()),
            payload: vec![1, 2, 3],
            headers: vec![("tr".into(), "x".into())],
            idempotency_key: Some("idm1".into()),
            written_at_ms: 1234,
            deliver_at_ms: Some(1000),
            replays: 0,
            transaction: None,
            only_target: Some("b".into()),
        };
        assert_eq!(hex::encode(e.encode()), V4_FIXTURE, "the encoding changed: that is a new version");
        assert_eq!(Envelope::decode(&hex::decode(V4_FIXTURE).expect("hex")).expect("v4 decodes"), e);
        let mut bytes = e.encode();
        stamp_written_at(&mut bytes, 99_000);
        assert_eq!(written_at(&bytes), Some(99_000));
        e.written_at_ms = 99_000;
        assert_eq!(Envelope::decode(&bytes).expect("decodes"), e, "only the write time changed");
        assert!(matches!(Envelope::decode(&bytes[..5]), Err(DecodeError::Short { len: 5 })));
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
