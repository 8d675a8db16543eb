//! The DLQ replies (`docs/api.md`, "Dead-letter queue"): a page of
//! entries, payloads decoded from base64, and a replay's report.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};

/// A page of a target's DLQ.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DlqPage {
    pub entries: Vec<DlqEntry>,
    /// The cursor of the next page (`after`), `None` on the last page.
    pub next_after: Option<String>,
    /// Entries in the target's DLQ.
    pub total: u64,
    pub target: String,
}

/// One dead-lettered message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DlqEntry {
    pub message_id: String,
    pub target: String,
    #[serde(default)]
    pub partition: u32,
    #[serde(default)]
    pub sequence: u64,
    pub key: Option<String>,
    /// The payload's bytes.
    #[serde(deserialize_with = "base64_bytes")]
    pub payload: Vec<u8>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub written_at_ms: u64,
    #[serde(default)]
    pub dead_lettered_at_ms: u64,
    #[serde(default)]
    pub plugin_digest: String,
    /// Times it came back from the DLQ already.
    #[serde(default)]
    pub replays: u32,
    /// Set for a dead-lettered transaction (its chunks replay whole).
    pub transaction: Option<DlqTransaction>,
    /// The failed attempts, oldest first.
    #[serde(default)]
    pub failures: Vec<DlqFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DlqTransaction {
    pub transaction_id: String,
    pub chunks: u32,
}

/// One failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DlqFailure {
    pub attempt: u32,
    pub at_ms: u64,
    /// `retry`, `reject`, `trap`, `deadline`, `wrong_count`, `init`,
    /// `operator`.
    pub kind: String,
    pub reason: String,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReplayReport {
    pub replayed: Vec<Replayed>,
    pub skipped: Vec<Skipped>,
    pub not_found: Vec<String>,
    pub target: String,
}

/// An entry appended again under a new id, and deleted from the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Replayed {
    pub message_id: String,
    pub new_message_id: String,
}

/// An entry left in the DLQ (replayed `dlq.max_replays` times already).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Skipped {
    pub message_id: String,
    pub reason: String,
}

fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| serde::de::Error::custom(format!("payload is not standard base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(payload: &str) -> serde_json::Value {
        json!({"message_id": "0-3", "target": "default", "partition": 0, "sequence": 3, "key": "k",
            "payload": payload, "headers": {"h": "v"}, "idempotency_key": null, "written_at_ms": 1,
            "dead_lettered_at_ms": 2, "plugin_digest": "ab", "replays": 0, "transaction": null,
            "failures": [{"attempt": 1, "at_ms": 2, "kind": "reject", "reason": "http 400"}]})
    }

    #[test]
    fn an_entry_payload_is_decoded_from_base64() {
        let page: Result<DlqPage, _> = serde_json::from_value(
            json!({"entries": [entry("aGVsbG8=")], "next_after": null, "total": 1, "target": "default"}),
        );
        let page = page.map_err(|e| e.to_string());
        assert!(
            matches!(&page, Ok(p) if p.entries[0].payload == b"hello" && p.entries[0].failures[0].kind == "reject")
        );
    }

    #[test]
    fn an_entry_whose_payload_is_not_base64_does_not_decode() {
        let e = serde_json::from_value::<DlqEntry>(entry("not base64!")).map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("base64")), "{e:?}");
    }
}
