//! The read-only replies: a message lookup (`GET .../messages/{id}`) and
//! `/v1/status`. Status is large and grows; the typed part holds what a
//! client acts on, and [`Status::raw`] the whole JSON.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Error;

/// Where a message is at one target, or overall (the least advanced
/// target's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    InFlight,
    Retrying,
    Delayed,
    Pending,
    /// Not known to this process (Kafka/SQS: still in the queue, taken by
    /// another consumer, or finished long ago).
    Unknown,
    DeadLettered,
    Delivered,
    /// A state this client does not know (a newer server).
    #[serde(other)]
    Other,
}

/// `GET /v1/namespaces/{ns}/messages/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lookup {
    pub message_id: String,
    /// The least advanced target's state: `Delivered` means every target
    /// delivered it.
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<u64>,
    pub last_error: Option<String>,
    /// The state at each target.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetDelivery>,
}

/// A message's state at one target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TargetDelivery {
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    pub version: String,
    /// `fsync` or `buffered`.
    pub durability: String,
    pub namespaces: BTreeMap<String, NamespaceStatus>,
    /// The whole reply, fields this type does not name included.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

impl Status {
    pub(crate) fn from_json(raw: serde_json::Value) -> Result<Self, Error> {
        let mut status = Self::deserialize(&raw).map_err(|e| Error::Decode(format!("status: {e}")))?;
        status.raw = raw;
        Ok(status)
    }
}

/// One namespace in `/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NamespaceStatus {
    /// The log's partitions (empty on Kafka/SQS).
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetStatus>,
    /// The first target's DLQ size.
    pub dlq_size: Option<u64>,
}

/// One partition of a namespace's log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PartitionStatus {
    pub partition: u32,
    pub head_sequence: u64,
    pub durable_sequence: u64,
    /// The slowest target's.
    pub delivered_watermark: u64,
    pub backlog: u64,
    #[serde(default)]
    pub halted: bool,
    pub halted_reason: Option<String>,
    /// `disk_full` or `too_many_open_files` while appends are refused.
    pub refusing_writes: Option<String>,
}

/// One target of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TargetStatus {
    pub plugin: PluginStatus,
    /// `None` in a process without the DLQ (`--role processor`).
    pub dlq_size: Option<u64>,
    /// One per lane.
    #[serde(default)]
    pub partitions: Vec<TargetLane>,
}

/// A target's plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PluginStatus {
    pub path: String,
    pub digest: Option<String>,
    /// The `wharf:target` version it implements.
    pub wit: Option<String>,
    /// `loading`, `ready`, `failed`, `quarantined` or `removed`.
    pub state: String,
    pub reason: Option<String>,
}

/// One lane of a target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TargetLane {
    pub partition: u32,
    pub delivered_watermark: u64,
    pub backlog: u64,
    pub lag_ms: u64,
    #[serde(default)]
    pub halted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lookup_knows_every_state_and_tolerates_new_ones() {
        let l: Result<Lookup, _> = serde_json::from_value(json!({"message_id": "2-17", "state": "retrying",
            "attempts": 3, "next_attempt_at_ms": 1795000000000_u64, "last_error": "http 503",
            "targets": {"audit": {"state": "delivered", "attempts": 0, "next_attempt_at_ms": null, "last_error": null},
                        "cache": {"state": "teleported", "attempts": 3, "next_attempt_at_ms": null, "last_error": null}}}));
        let l = l.map_err(|e| e.to_string());
        assert!(matches!(&l, Ok(l) if l.state == DeliveryState::Retrying
            && l.targets["audit"].state == DeliveryState::Delivered
            && l.targets["cache"].state == DeliveryState::Other));
    }

    #[test]
    fn status_keeps_the_raw_json_beside_the_typed_fields() {
        let raw = json!({"version": "0.1.0", "durability": "fsync", "namespaces": {"orders": {
            "partitions": [{"partition": 0, "head_sequence": 4, "durable_sequence": 4, "delivered_watermark": 3,
                "backlog": 1, "delivery": {"window": 1}, "halted": false, "halted_reason": null,
                "refusing_writes": null, "chain": null, "replication": null}],
            "targets": {"default": {"plugin": {"path": "p.wasm", "digest": "ab", "wit": "0.3.0", "state": "ready",
                "reason": null}, "dlq_size": 0, "ordering": "key",
                "partitions": [{"partition": 0, "delivered_watermark": 3, "backlog": 1, "lag_ms": 5,
                    "delivery": {}, "halted": false, "halt": null}]}},
            "plugin": {}, "dlq_size": 0, "queue": {"kind": "embedded"}, "mode": "primary"}}});
        let s = Status::from_json(raw.clone()).map_err(|e| e.to_string());
        assert!(matches!(&s, Ok(s) if s.namespaces["orders"].partitions[0].backlog == 1
            && s.namespaces["orders"].targets["default"].plugin.state == "ready"
            && s.raw == raw));
    }
}
