//! Fuzz entry points: the bytes a client or the disk hands the host, run
//! through the exact code the server runs on them (`fuzz/`, `make fuzz`).
//!
//! - [`http_json`]: request bodies of the HTTP API, through `api::parse_*`,
//!   then `write::validate` or `txn::check_chunk`;
//! - [`grpc_protobuf`]: protobuf requests of the gRPC API, decoded with
//!   prost, through `grpc::write_from_pb` / `batch_from_pb` and the same
//!   validation;
//! - [`stored_record`]: a record read back from a log (envelope, DLQ entry).
//!
//! The first byte of an input picks the request kind; the rest is the body.
//! What must hold for every input, so that a panic is a finding:
//! - a request is refused with a client error (400 or 413), a snake_case
//!   code and the documented JSON error body, or it is accepted and what would be stored obeys every input
//!   limit and comes back unchanged through the envelope encoding;
//! - a stored record decodes or is refused with an error, never a panic.
//!
//! No node, no disk: each call is pure, so the fuzzer runs at full speed.
//! The committed inputs (`fuzz/seeds/<target>/`: hand-written seeds, and
//! every finding once fixed) are replayed by this module's tests in every
//! `cargo test`; the corpus the fuzzer grows (`fuzz/corpus/`) stays local.

use crate::error::ErrorKind;
use prost::Message as _;

use crate::adapters::grpc::pb;
use crate::adapters::{grpc, http as api};
use crate::config::Limits;
use crate::error::Error as ApiError;
use crate::services::txn;
use crate::services::write::{
    self, MAX_BATCH, MAX_HEADER_BYTES, MAX_HEADERS, MAX_IDEMPOTENCY_KEY, MAX_KEY, MAX_PAYLOAD,
    TXN_IDEMPOTENCY_PREFIX, WriteRequest,
};
use crate::storage::envelope::{Chunk, Envelope, TxnMarker};

/// What the host made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: this many messages or chunks would be stored.
    Accepted(usize),
    /// Refused with this machine-readable code.
    Refused(&'static str),
    /// Not a request at all (protobuf that does not decode, an empty input).
    Undecodable,
}

/// One HTTP request body. Kind: 0 write, 1 batch, 2 chunk, 3 commit, 4 begin.
pub fn http_json(data: &[u8]) -> Outcome {
    let Some((&kind, body)) = data.split_first() else { return Outcome::Undecodable };
    let result = match kind % 5 {
        0 => api::parse_write_one(body).and_then(|(m, _, _)| messages(vec![m])),
        1 => api::parse_write_many(body).and_then(|b| {
            messages(b.messages.into_iter().map(api::JsonMessage::decode).collect::<Result<_, _>>()?)
        }),
        2 => api::parse_chunk(body).and_then(chunk),
        3 => api::parse_commit(body).map(|_| 0),
        _ => api::parse_begin(body).and_then(|b| write::check_key(b.key.as_deref()).map(|()| 0)),
    };
    outcome(result)
}

/// One gRPC request message. Kind: 0 Write, 1 WriteBatch, 2 AppendChunk.
pub fn grpc_protobuf(data: &[u8]) -> Outcome {
    let Some((&kind, body)) = data.split_first() else { return Outcome::Undecodable };
    let result = match kind % 3 {
        0 => match pb::WriteRequest::decode(body) {
            Ok(r) => grpc::write_from_pb(r).and_then(|(m, _, _)| messages(vec![m])),
            Err(_) => return Outcome::Undecodable,
        },
        1 => match pb::WriteBatchRequest::decode(body) {
            Ok(r) => grpc::batch_from_pb(r).and_then(|(ms, _, _)| messages(ms)),
            Err(_) => return Outcome::Undecodable,
        },
        _ => match pb::AppendChunkRequest::decode(body) {
            Ok(r) => chunk(txn::ChunkRequest { payload: r.payload, headers: r.headers }),
            Err(_) => return Outcome::Undecodable,
        },
    };
    outcome(result)
}

/// One record as read back from a log. Kind: 0 envelope, 1 DLQ entry.
pub fn stored_record(data: &[u8]) -> Outcome {
    let Some((&kind, record)) = data.split_first() else { return Outcome::Undecodable };
    let decoded = match kind % 2 {
        // Whatever decodes must encode back to the same envelope (a v1
        // record comes back as v2).
        0 => Envelope::decode(record).map(|env| round_trip(&env)).is_ok(),
        _ => crate::storage::dlq::decode(record).is_ok(),
    };
    if decoded { Outcome::Accepted(1) } else { Outcome::Undecodable }
}

fn outcome(result: Result<usize, ApiError>) -> Outcome {
    match result {
        Ok(n) => Outcome::Accepted(n),
        Err(e) => {
            assert!(
                e.kind == ErrorKind::Invalid || e.kind == ErrorKind::TooLarge,
                "a refusal must be a client error, got {} {}: {}",
                e.code,
                e.code,
                e.message
            );
            assert!(
                e.code.starts_with(|c: char| c.is_ascii_lowercase())
                    && e.code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "error code {:?} is not snake_case",
                e.code
            );
            // What the client gets: 400 or 413 with the documented JSON
            // body `{"error": {"code", "message"}}`, never the framework's text.
            let status = crate::adapters::error::http_status(e.kind).as_u16();
            assert!(status == 400 || status == 413, "{} answers {status}", e.code);
            let body = e.body();
            assert_eq!(body["error"]["code"], e.code, "the JSON body names the code: {body}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
            Outcome::Refused(e.code)
        }
    }
}

/// Validates each message as the write path does; checks what would be stored.
fn messages(requests: Vec<WriteRequest>) -> Result<usize, ApiError> {
    assert!((1..=MAX_BATCH).contains(&requests.len()), "batch of {} accepted", requests.len());
    let n = requests.len();
    for req in requests {
        let env = write::validate(req, Limits::default().max_delay_ms)?;
        assert!(env.payload.len() <= MAX_PAYLOAD, "payload of {} bytes accepted", env.payload.len());
        if let Some(k) = &env.key {
            assert!((1..=MAX_KEY).contains(&k.len()), "key of {} bytes accepted", k.len());
        }
        if let Some(k) = &env.idempotency_key {
            assert!((1..=MAX_IDEMPOTENCY_KEY).contains(&k.len()), "idempotency key of {} bytes", k.len());
            assert!(!k.starts_with(TXN_IDEMPOTENCY_PREFIX), "reserved idempotency key accepted");
        }
        check_headers(&env.headers);
        round_trip(&env);
    }
    Ok(n)
}

/// Checks a chunk as `txn::append_chunk` does; checks what would be parked.
fn chunk(req: txn::ChunkRequest) -> Result<usize, ApiError> {
    txn::check_chunk(&req)?;
    assert!(req.payload.len() <= MAX_PAYLOAD, "chunk of {} bytes accepted", req.payload.len());
    let chunk = Chunk { seq: 0, payload: req.payload, headers: req.headers.into_iter().collect() };
    check_headers(&chunk.headers);
    // A DLQ entry carries its chunks inline in the marker's envelope.
    let marker = Envelope {
        key: None,
        payload: Vec::new(),
        headers: Vec::new(),
        idempotency_key: None,
        written_at_ms: 0,
        deliver_at_ms: None,
        replays: 0,
        transaction: Some(TxnMarker { id: "0".repeat(32), chunks: 1, inline: vec![chunk] }),
        only_target: None,
    };
    round_trip(&marker);
    Ok(1)
}

fn check_headers(headers: &[(String, String)]) {
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(
        headers.len() <= MAX_HEADERS && bytes <= MAX_HEADER_BYTES,
        "{} headers, {bytes} bytes",
        headers.len()
    );
}

fn round_trip(env: &Envelope) {
    let decoded = Envelope::decode(&env.encode());
    assert_eq!(decoded.ok().as_ref(), Some(env), "envelope does not round-trip");
}

#[cfg(test)]
mod tests {
    //! The committed inputs, replayed through the same entry points: the
    //! seeds written by hand and the findings kept as regressions.

    use std::path::Path;

    use super::*;

    fn replay(target: &str, run: fn(&[u8]) -> Outcome) -> Vec<(String, Outcome)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("seed entry").path();
            let data = std::fs::read(&path).expect("seed file");
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            seen.push((name, run(&data)));
        }
        seen
    }

    fn outcome_of<'a>(seen: &'a [(String, Outcome)], name: &str) -> &'a Outcome {
        &seen.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("seed {name} is missing")).1
    }

    #[test]
    fn the_http_json_seeds_replay() {
        let seen = replay("http_json", http_json);
        assert!(seen.len() >= 10, "too few seeds: {}", seen.len());
        assert_eq!(outcome_of(&seen, "seed-write"), &Outcome::Accepted(1));
        assert_eq!(outcome_of(&seen, "seed-batch"), &Outcome::Accepted(2));
        assert_eq!(outcome_of(&seen, "seed-chunk"), &Outcome::Accepted(1));
        assert_eq!(outcome_of(&seen, "seed-unknown-field"), &Outcome::Refused("invalid_json"));
        assert_eq!(outcome_of(&seen, "seed-bad-base64"), &Outcome::Refused("invalid_base64"));
        assert_eq!(
            outcome_of(&seen, "seed-reserved-idempotency-key"),
            &Outcome::Refused("invalid_idempotency_key")
        );
        assert_eq!(outcome_of(&seen, "seed-empty-batch"), &Outcome::Refused("batch_too_large"));
    }

    #[test]
    fn the_grpc_protobuf_seeds_replay() {
        let seen = replay("grpc_protobuf", grpc_protobuf);
        assert!(seen.len() >= 5, "too few seeds: {}", seen.len());
        assert_eq!(outcome_of(&seen, "seed-write"), &Outcome::Accepted(1));
        assert_eq!(outcome_of(&seen, "seed-batch"), &Outcome::Accepted(2));
        assert_eq!(outcome_of(&seen, "seed-chunk"), &Outcome::Accepted(1));
        assert_eq!(outcome_of(&seen, "seed-bad-wait"), &Outcome::Refused("invalid_wait"));
    }

    #[test]
    fn the_stored_record_seeds_replay() {
        let seen = replay("stored_record", stored_record);
        assert!(seen.len() >= 2, "too few seeds: {}", seen.len());
        assert_eq!(outcome_of(&seen, "seed-envelope"), &Outcome::Accepted(1));
    }

    #[test]
    fn limits_are_refused_with_their_codes() {
        let big = format!(r#"{{"payload":"{}"}}"#, "A".repeat((MAX_PAYLOAD + 3) / 3 * 4 + 4));
        assert_eq!(http_json(&[&[0u8][..], big.as_bytes()].concat()), Outcome::Refused("payload_too_large"));
        let many = format!(r#"{{"messages":[{}]}}"#, vec![r#"{"payload":""}"#; MAX_BATCH + 1].join(","));
        assert_eq!(http_json(&[&[1u8][..], many.as_bytes()].concat()), Outcome::Refused("batch_too_large"));
        let key = format!(r#"{{"payload":"","key":"{}"}}"#, "k".repeat(MAX_KEY + 1));
        assert_eq!(http_json(&[&[0u8][..], key.as_bytes()].concat()), Outcome::Refused("invalid_key"));
    }
}
