//! The HTTP/JSON API. Every error is `{"error": {"code", "message"}}` with a
//! matching status, and a request that fails validation changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::control::Who;
use crate::delivery::MessageState;
use crate::dlq::DlqEntry;
use crate::envelope::parse_message_id;
use crate::error::ApiError;
use crate::metrics;
use crate::node::{Namespace, Node};
use crate::write::{self, MAX_BATCH, MAX_PAYLOAD, WaitFor, WriteRequest};

pub fn router(node: Arc<Node>) -> Router {
    let namespaced = Router::new()
        .route("/v1/namespaces/{ns}/messages", post(write_one))
        .route("/v1/namespaces/{ns}/messages/batch", post(write_many))
        .route("/v1/namespaces/{ns}/messages/{id}", get(lookup))
        .route("/v1/namespaces/{ns}/transactions", post(txn_begin))
        .route("/v1/namespaces/{ns}/transactions/{txn}", get(txn_info).delete(txn_abort))
        .route("/v1/namespaces/{ns}/transactions/{txn}/chunks/{seq}", put(txn_chunk))
        .route("/v1/namespaces/{ns}/transactions/{txn}/commit", post(txn_commit))
        .route("/v1/namespaces/{ns}/dlq", get(dlq_list).delete(dlq_purge))
        .route("/v1/namespaces/{ns}/dlq/replay", post(dlq_replay))
        .route("/v1/namespaces/{ns}/dlq/{id}", delete(dlq_delete))
        .route("/v1/status", get(status))
        .merge(crate::admin::router())
        .route_layer(middleware::from_fn_with_state(node.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .merge(namespaced)
        .layer(DefaultBodyLimit::max(MAX_BATCH * 1024 + MAX_PAYLOAD * 2))
        .with_state(node)
}

/// Bearer-token auth. With no token configured anywhere, the API is open
/// (and bound to loopback by default). Otherwise a namespace's routes take
/// that namespace's tokens or an admin token; `/v1/status` takes an admin
/// token. A token for one namespace cannot touch another.
async fn authorize(State(node): State<Arc<Node>>, req: Request, next: Next) -> Result<Response, ApiError> {
    if node.auth_enabled() {
        let ns = req.uri().path().strip_prefix("/v1/namespaces/").and_then(|r| r.split('/').next());
        check_token(&node, req.headers(), ns)?;
    }
    Ok(next.run(req).await)
}

pub(crate) fn check_token(node: &Node, headers: &HeaderMap, ns: Option<&str>) -> Result<(), ApiError> {
    let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    check_authorization(node, authorization, ns)
}

/// [`check_token`] on the value of an `authorization` header (or gRPC
/// metadata entry): `Bearer <token>`.
pub(crate) fn check_authorization(
    node: &Node,
    authorization: Option<&str>,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let token = authorization.and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "an Authorization: Bearer token is required",
        )
    })?;
    let matches = |list: &[String]| list.iter().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    let ok = matches(&node.admin_tokens)
        || ns.and_then(|n| node.namespace(n)).is_some_and(|n| matches(&n.cfg.tokens));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may not access this resource"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn who<'a>(node: &'a Node, headers: &HeaderMap) -> Who<'a> {
    Who { data_dir: &node.data_dir, actor: crate::admin::actor(headers) }
}

pub(crate) fn namespace(node: &Node, name: &str) -> Result<Arc<Namespace>, ApiError> {
    node.namespace(name).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "namespace_not_found", format!("no namespace named {name:?}"))
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))
}

/// `POST /v1/namespaces/{ns}/messages/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteMany {
    pub messages: Vec<WriteRequest>,
    #[serde(default)]
    pub wait: WaitFor,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The body of `POST /v1/namespaces/{ns}/messages/batch`, its size checked.
pub(crate) fn parse_write_many(body: &[u8]) -> Result<WriteMany, ApiError> {
    let req: WriteMany = parse_json(body)?;
    check_batch_len(req.messages.len())?;
    Ok(req)
}

pub(crate) fn wait_timeout(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(5000))
}

async fn write_one(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<Json<write::WriteAck>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let (message, wait, timeout_ms) = parse_write_one(&body)?;
    let results = write::write_batch(&ns, vec![message], wait, wait_timeout(timeout_ms)).await?;
    results.into_iter().next().unwrap_or_else(|| Err(ApiError::internal("no result"))).map(Json)
}

/// The body of `POST /v1/namespaces/{ns}/messages`: one message plus `wait`
/// and `timeout_ms`. Unknown fields are errors (serde's `flatten` would let
/// them through).
pub(crate) fn parse_write_one(body: &[u8]) -> Result<(WriteRequest, WaitFor, Option<u64>), ApiError> {
    let mut fields: serde_json::Map<String, serde_json::Value> = parse_json(body)?;
    let wait: WaitFor = parse_json(fields.remove("wait").unwrap_or(json!("durable")).to_string().as_bytes())?;
    let timeout_ms: Option<u64> =
        parse_json(fields.remove("timeout_ms").unwrap_or_default().to_string().as_bytes())?;
    let message: WriteRequest = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))?;
    Ok((message, wait, timeout_ms))
}

pub(crate) fn check_batch_len(n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a batch holds 1..={MAX_BATCH} messages; this one has {n}"),
        ));
    }
    Ok(())
}

async fn write_many(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let req = parse_write_many(&body)?;
    let results = write::write_batch(&ns, req.messages, req.wait, wait_timeout(req.timeout_ms)).await?;
    let results: Vec<_> = results
        .into_iter()
        .map(|r| match r {
            Ok(ack) => json!(ack),
            Err(e) => e.body(),
        })
        .collect();
    Ok(Json(json!({"results": results})))
}

/// `POST /v1/namespaces/{ns}/transactions` (body optional).
async fn txn_begin(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<crate::txn_store::TxnInfo>), ApiError> {
    let ns = namespace(&node, &ns)?;
    Ok((StatusCode::CREATED, Json(crate::txn::begin(&ns, parse_begin(&body)?).await?)))
}

/// The body of `POST .../transactions`: empty, or a key and a time to live.
pub(crate) fn parse_begin(body: &[u8]) -> Result<crate::txn::BeginRequest, ApiError> {
    if body.is_empty() { Ok(crate::txn::BeginRequest::default()) } else { parse_json(body) }
}

/// A chunk as JSON: base64 payload and headers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkBody {
    payload: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

async fn txn_chunk(
    State(node): State<Arc<Node>>,
    Path((ns, txn, seq)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<crate::txn::ChunkAck>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let seq: u32 = seq.parse().map_err(|_| {
        ApiError::bad("invalid_chunk_seq", format!("chunk seq {seq:?} is not a number 0..2^32"))
    })?;
    Ok(Json(crate::txn::append_chunk(&ns, &txn, seq, parse_chunk(&body)?).await?))
}

/// The body of `PUT .../transactions/{txn}/chunks/{seq}`; `txn::append_chunk`
/// checks its limits.
pub(crate) fn parse_chunk(body: &[u8]) -> Result<crate::txn::ChunkRequest, ApiError> {
    let chunk: ChunkBody = parse_json(body)?;
    Ok(crate::txn::ChunkRequest { payload: write::decode_payload(&chunk.payload)?, headers: chunk.headers })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitBody {
    pub chunks: u32,
    #[serde(default)]
    pub wait: WaitFor,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

async fn txn_commit(
    State(node): State<Arc<Node>>,
    Path((ns, txn)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<crate::txn::CommitAck>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let c = parse_commit(&body)?;
    Ok(Json(crate::txn::commit(&ns, &txn, c.chunks, c.wait, wait_timeout(c.timeout_ms)).await?))
}

pub(crate) fn parse_commit(body: &[u8]) -> Result<CommitBody, ApiError> {
    parse_json(body)
}

async fn txn_abort(
    State(node): State<Arc<Node>>,
    Path((ns, txn)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    crate::txn::abort(&ns, &txn).await?;
    Ok(Json(json!({"transaction_id": txn, "aborted": true})))
}

async fn txn_info(
    State(node): State<Arc<Node>>,
    Path((ns, txn)): Path<(String, String)>,
) -> Result<Json<crate::txn_store::TxnInfo>, ApiError> {
    let ns = namespace(&node, &ns)?;
    Ok(Json(crate::txn::info(&ns, &txn).await?))
}

/// Where a message is (`GET .../messages/{id}`, gRPC `GetMessage`).
#[derive(Debug)]
pub(crate) enum Whereabouts {
    DeadLettered {
        attempts: usize,
        last_error: Option<String>,
    },
    /// Still in the delivery window.
    Tracked(MessageState),
    Delivered,
    /// Written, not read by the delivery loop yet.
    Pending,
}

pub(crate) fn locate(ns: &Namespace, id: &str) -> Result<Whereabouts, ApiError> {
    let not_found =
        || ApiError::new(StatusCode::NOT_FOUND, "message_not_found", format!("no message {id:?}"));
    let (partition, seq) = parse_message_id(id).ok_or_else(not_found)?;
    let part = ns.partitions.get(partition as usize).ok_or_else(not_found)?;
    let log = part.log.as_ref().ok_or_else(not_found)?;
    if seq >= log.next_seq() {
        return Err(not_found());
    }
    if let Some(entry) = ns.dlq()?.get(id) {
        return Ok(Whereabouts::DeadLettered {
            attempts: entry.failures.len(),
            last_error: entry.failures.last().map(|f| f.reason.clone()),
        });
    }
    let tracked = part.tracker.lock().ok().map(|t| (t.state_of(seq), t.has_read(seq)));
    Ok(match tracked {
        Some((Some(s), _)) => Whereabouts::Tracked(s),
        Some((None, true)) => Whereabouts::Delivered,
        _ => Whereabouts::Pending,
    })
}

async fn lookup(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let body = match locate(&ns, &id)? {
        Whereabouts::DeadLettered { attempts, last_error } => json!({
            "message_id": id, "state": "dead_lettered", "attempts": attempts, "last_error": last_error,
        }),
        Whereabouts::Tracked(s) => json!({
            "message_id": id, "state": s.state, "attempts": s.attempts,
            "next_attempt_at_ms": s.next_attempt_at_ms, "last_error": s.last_error,
        }),
        Whereabouts::Delivered => json!({"message_id": id, "state": "delivered"}),
        Whereabouts::Pending => json!({"message_id": id, "state": "pending", "attempts": 0}),
    };
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

/// One page of a DLQ (`limit` default 100, at most 1000) and the cursor of
/// the next page.
pub(crate) fn dlq_page(
    ns: &Namespace,
    after: Option<&str>,
    limit: Option<usize>,
) -> (Vec<DlqEntry>, Option<String>) {
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    let entries = ns.dlq.as_ref().map(|d| d.page(after, limit)).unwrap_or_default();
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.message_id.clone())).flatten();
    (entries, next)
}

async fn dlq_list(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let total = ns.dlq()?.len();
    let (entries, next) = dlq_page(&ns, page.after.as_deref(), page.limit);
    let b64 = base64::engine::general_purpose::STANDARD;
    let items: Vec<_> = entries
        .into_iter()
        .map(|e| {
            json!({
                "message_id": e.message_id, "partition": e.partition, "sequence": e.sequence,
                "key": e.envelope.key, "payload": b64.encode(&e.envelope.payload),
                "headers": e.envelope.headers.into_iter().collect::<BTreeMap<_, _>>(),
                "idempotency_key": e.envelope.idempotency_key,
                "written_at_ms": e.envelope.written_at_ms,
                "dead_lettered_at_ms": e.dead_lettered_at_ms,
                "plugin_digest": e.plugin_digest, "replays": e.envelope.replays,
                "transaction": e.envelope.transaction.as_ref()
                    .map(|t| json!({"transaction_id": t.id, "chunks": t.chunks})),
                "failures": e.failures,
            })
        })
        .collect();
    Ok(Json(json!({"entries": items, "next_after": next, "total": total})))
}

async fn dlq_delete(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    dlq_delete_one(&ns, &id, &who(&node, &headers)).await?;
    Ok(Json(json!({"message_id": id, "deleted": true})))
}

/// Deletes one DLQ entry durably; 404 `message_not_found` if there is none.
pub(crate) async fn dlq_delete_one(ns: &Namespace, id: &str, who: &Who<'_>) -> Result<(), ApiError> {
    let r = dlq_delete_inner(ns, id).await;
    who.record("dlq.delete", &format!("{}/{id}", ns.name), r, |_| json!({}))
}

async fn dlq_delete_inner(ns: &Namespace, id: &str) -> Result<(), ApiError> {
    let dlq = ns.dlq()?.clone();
    let key = id.to_string();
    let deleted = tokio::task::spawn_blocking(move || dlq.delete(&key))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "dlq_write_failed", e.to_string()))?;
    if !deleted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "message_not_found",
            format!("no dlq entry {id:?}"),
        ));
    }
    Ok(())
}

async fn dlq_purge(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let purged = dlq_purge_all(&ns, &who(&node, &headers)).await?;
    Ok(Json(json!({"purged": purged})))
}

/// Deletes every DLQ entry of a namespace; returns how many.
pub(crate) async fn dlq_purge_all(ns: &Namespace, who: &Who<'_>) -> Result<usize, ApiError> {
    let r = dlq_purge_inner(ns).await;
    who.record("dlq.purge", &ns.name, r, |n| json!({ "purged": n }))
}

async fn dlq_purge_inner(ns: &Namespace) -> Result<usize, ApiError> {
    let dlq = ns.dlq()?.clone();
    let purged = tokio::task::spawn_blocking(move || dlq.purge())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "dlq_write_failed", e.to_string()))?;
    tracing::warn!(namespace = %ns.name, purged, "dlq purged");
    Ok(purged)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Entries to replay; all when absent.
    #[serde(default)]
    ids: Option<Vec<String>>,
    /// At most this many messages per second; unlimited when absent.
    #[serde(default)]
    rate_per_sec: Option<f64>,
}

async fn dlq_replay(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let req: ReplayRequest = if body.is_empty() {
        ReplayRequest { ids: None, rate_per_sec: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))?
    };
    let r = replay(&ns, req.ids, req.rate_per_sec, &who(&node, &headers)).await?;
    let replayed: Vec<_> =
        r.replayed.into_iter().map(|(id, new)| json!({"message_id": id, "new_message_id": new})).collect();
    let skipped: Vec<_> =
        r.skipped.into_iter().map(|(id, reason)| json!({"message_id": id, "reason": reason})).collect();
    Ok(Json(json!({"replayed": replayed, "skipped": skipped, "not_found": r.not_found})))
}

/// What a DLQ replay did: (old id, new id), (id, why not), unknown ids.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub replayed: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
    pub not_found: Vec<String>,
}

/// Puts DLQ entries (all when `ids` is `None`) back on their partition as
/// new messages (new ids, one more replay counted), then deletes the
/// entries. A crash between the two steps leaves the entry in the DLQ as
/// well: at-least-once, never lost.
pub(crate) async fn replay(
    ns: &Namespace,
    ids: Option<Vec<String>>,
    rate_per_sec: Option<f64>,
    who: &Who<'_>,
) -> Result<Replay, ApiError> {
    let r = replay_inner(ns, ids, rate_per_sec).await;
    who.record(
        "dlq.replay",
        &ns.name,
        r,
        |r| json!({"replayed": r.replayed.len(), "skipped": r.skipped.len(), "not_found": r.not_found.len()}),
    )
}

async fn replay_inner(
    ns: &Namespace,
    ids: Option<Vec<String>>,
    rate_per_sec: Option<f64>,
) -> Result<Replay, ApiError> {
    if !ns.writes {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "role_consumer",
            "a DLQ replay appends to the log, which the --role processor process owns; replay with the pair stopped and one `wharf serve --role all`",
        ));
    }
    if rate_per_sec.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(ApiError::bad("invalid_rate", "rate_per_sec must be positive"));
    }
    let dlq = ns.dlq()?.clone();
    let ids = ids.unwrap_or_else(|| dlq.ids());
    let pause = rate_per_sec.map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    let max = ns.cfg.dlq.max_replays;
    let mut out = Replay::default();
    for id in ids {
        let Some(entry) = dlq.get(&id) else {
            out.not_found.push(id);
            continue;
        };
        if entry.envelope.replays >= max {
            let reason =
                format!("already replayed {} times (dlq.max_replays = {max})", entry.envelope.replays);
            out.skipped.push((id, reason));
            continue;
        }
        let mut env = entry.envelope.clone();
        env.replays += 1;
        env.deliver_at_ms = None;
        let ack = write::append_envelope(ns, env).await?;
        let (dlq, old) = (dlq.clone(), id.clone());
        tokio::task::spawn_blocking(move || dlq.delete(&old))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "dlq_write_failed", e.to_string())
            })?;
        tracing::info!(namespace = %ns.name, message_id = %id, new_message_id = %ack.message_id, "dlq entry replayed");
        out.replayed.push((id, ack.message_id));
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
    Ok(out)
}

async fn status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(status_json(&node))
}

/// The body of `GET /v1/status` (also gRPC `Status`).
pub(crate) fn status_json(node: &Node) -> serde_json::Value {
    let mut namespaces = serde_json::Map::new();
    for ns in node.namespaces() {
        let name = &ns.name;
        let partitions: Vec<_> = ns
            .partitions
            .iter()
            .map(|p| {
                let st = p.log.as_ref().map(|l| l.stats());
                let (head, durable, watermark) =
                    st.as_ref().map(|s| (s.next_seq, s.synced_seq, s.watermark)).unwrap_or((0, 0, 0));
                let window = p.tracker.lock().map(|t| json!(t.snapshot())).unwrap_or_default();
                json!({
                    "partition": p.index,
                    "head_sequence": head,
                    "durable_sequence": durable,
                    "delivered_watermark": watermark,
                    "backlog": head.saturating_sub(watermark),
                    "delivery": window,
                    "halted": p.halted_reason().is_some(),
                    "halted_reason": p.halted_reason(),
                })
            })
            .collect();
        let plugin = ns.plugin.lock().map(|p| json!(*p)).unwrap_or_default();
        namespaces.insert(
            name.clone(),
            json!({
                "partitions": partitions,
                "plugin": plugin,
                "dlq_size": ns.dlq.as_ref().map(|d| d.len()),
                // Kafka/SQS namespaces: partitions, DLQ and progress live in the backend.
                "queue": ns.cfg.queue.clone().unwrap_or(wharf_queue::QueueConfig::Embedded),
            }),
        );
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "durability": node.durability,
        "namespaces": namespaces,
    })
}

async fn metrics_text(State(node): State<Arc<Node>>) -> Response {
    let body = metrics::get().render(&node);
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}
