//! The replication endpoint a replica namespace exposes to its primary's
//! replica plugin (protocol: docs/replication.md). JSON over HTTP, record
//! bytes in base64; the checks and the append are in
//! `services::replication`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::adapters::path::{namespace, partition};
use crate::error::Error as ApiError;
use crate::services::node::Node;
use crate::services::replica_snapshot;
use crate::services::replication::{self, RecordJson, ShippedRecord};

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/namespaces/{ns}/replication/partitions/{p}", get(handshake))
        .route("/v1/namespaces/{ns}/replication/partitions/{p}/records", post(records))
        .route("/v1/namespaces/{ns}/replication/partitions/{p}/snapshot", get(snapshot))
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
    records: Vec<RecordJson>,
}

#[derive(serde::Deserialize)]
struct PageQuery {
    from: Option<u64>,
    max_records: Option<usize>,
}

/// A page of a partition's retained history, for a replica's bootstrap
/// (`services::replica_snapshot`).
async fn snapshot(
    State(node): State<Arc<Node>>,
    Path((ns, p)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let p = partition(&p)?;
    let max = q.max_records.unwrap_or(replica_snapshot::MAX_PAGE_RECORDS);
    let page = tokio::task::block_in_place(|| replica_snapshot::page(&ns, p, q.from, max))?;
    Ok(Json(json!(replica_snapshot::PageJson::from(&page))))
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
        .and_then(|b| b.records.into_iter().map(ShippedRecord::try_from).collect());
    let records = match parsed {
        Ok(r) => r,
        Err(reason) => return Err(replication::refuse_damaged(&ns, p, reason).await),
    };
    let applied = replication::apply(&ns, p, records).await?;
    Ok(Json(json!(applied)))
}
