//! The replication endpoint a replica namespace exposes to its primary's
//! replica plugin (protocol: docs/replication.md). JSON over HTTP, record
//! bytes in base64; the checks and the append are in
//! `services::replication`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::adapters::path::{namespace, partition};
use crate::error::Error as ApiError;
use crate::services::node::Node;
use crate::services::replication::{self, ShippedRecord};

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/namespaces/{ns}/replication/partitions/{p}", get(handshake))
        .route("/v1/namespaces/{ns}/replication/partitions/{p}/records", post(records))
}

async fn handshake(
    State(node): State<Arc<Node>>,
    Path((ns, p)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let p = partition(&p)?;
    let state = replication::state(&ns, p)?;
    Ok(Json(json!(state)))
}

#[derive(serde::Deserialize)]
struct Body {
    records: Vec<JsonRecord>,
}

#[derive(serde::Deserialize)]
struct JsonRecord {
    seq: u64,
    /// Standard base64.
    bytes: String,
    checksum: u32,
    digest: String,
    prev_digest: String,
}

async fn records(
    State(node): State<Arc<Node>>,
    Path((ns, p)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let p = partition(&p)?;
    let parsed: Result<Vec<ShippedRecord>, String> = serde_json::from_slice::<Body>(&body)
        .map_err(|e| format!("request body is not a replication batch: {e}"))
        .and_then(|b| b.records.into_iter().map(decode).collect());
    let records = match parsed {
        Ok(r) => r,
        Err(reason) => return Err(replication::refuse_damaged(&ns, p, reason).await),
    };
    let applied = replication::apply(&ns, p, records).await?;
    Ok(Json(json!(applied)))
}

fn decode(r: JsonRecord) -> Result<ShippedRecord, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r.bytes.as_bytes())
        .map_err(|e| format!("record {}: bytes are not base64: {e}", r.seq))?;
    Ok(ShippedRecord {
        seq: r.seq,
        bytes,
        checksum: r.checksum,
        digest: r.digest,
        prev_digest: r.prev_digest,
    })
}
