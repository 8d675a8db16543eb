//! The HTTP/JSON API. Every error is `{"error": {"code", "message"}}` with a
//! matching status, and a request that fails validation changes nothing.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::adapters::path::namespace;
use crate::error::{Error as ApiError, ErrorBody};
use crate::services::access::Verdict;
use crate::services::control::Who;
use crate::services::node::Node;
use crate::services::trace::TraceContext;
use crate::services::write::{self, MAX_BATCH, MAX_PAYLOAD, WaitFor, WriteRequest};
use crate::services::{dlq, lookup, status};

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
        .route("/v1/namespaces/{ns}/dlq/move", post(dlq_move))
        .route("/v1/namespaces/{ns}/dlq/{id}", delete(dlq_delete))
        .route("/v1/status", get(status))
        .merge(crate::adapters::admin::router())
        .merge(crate::adapters::replication::router())
        .route_layer(middleware::from_fn_with_state(node.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(namespaced)
        .layer(DefaultBodyLimit::max(MAX_BATCH * 1024 + MAX_PAYLOAD * 2))
        .layer(middleware::from_fn(crate::adapters::error::json_errors))
        .with_state(node)
}

/// `?namespace=NAME`: one namespace's readiness.
#[derive(Debug, Deserialize)]
struct ReadyQuery {
    namespace: Option<String>,
}

/// `GET /readyz`: 200 while the process takes traffic (it serves only after
/// every partition recovered and every plugin loaded or was marked
/// failed), 503 from SIGTERM on. With `?namespace=`, 200 only if that
/// namespace can deliver (a failed plugin makes its namespace not ready,
/// never the pod dead). Open, like `/healthz`.
async fn readyz(State(node): State<Arc<Node>>, Query(q): Query<ReadyQuery>) -> Response {
    let namespaces = match q.namespace.as_deref() {
        Some(name) => match node.namespace(name) {
            Some(ns) => vec![ns],
            None => {
                return (StatusCode::NOT_FOUND, Json(json!({"namespace": name, "ready": false})))
                    .into_response();
            }
        },
        None => node.namespaces(),
    };
    let body = status::readiness_json(&namespaces, node.is_draining());
    let ready = !node.is_draining()
        && (q.namespace.is_none() || namespaces.iter().all(|ns| status::namespace_ready(ns).is_ok()));
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// Bearer-token auth. With no token configured anywhere, the API is open
/// (and bound to loopback by default). Otherwise a namespace's routes take
/// that namespace's tokens or an admin token; `/v1/status` and the admin
/// routes take an admin token. A token for one namespace cannot touch
/// another. A refusal on an admin route is audited.
async fn authorize(State(node): State<Arc<Node>>, req: Request, next: Next) -> Result<Response, ApiError> {
    let path = req.uri().path();
    let ns = path.strip_prefix("/v1/namespaces/").and_then(|r| r.split('/').next());
    let authorization = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(e) = check_authorization(&node, authorization, ns) {
        if path.starts_with("/v1/admin/") {
            let actor = node.access.actor(authorization);
            crate::services::control::audit(&node.data_dir, &actor, "auth.refused", path, Err(e.code));
        }
        return Err(e);
    }
    Ok(next.run(req).await)
}

/// Checks the value of an `authorization` header (or gRPC metadata
/// entry), `Bearer <token>`, for namespace `ns` (`None`: admin).
pub(crate) fn check_authorization(
    node: &Node,
    authorization: Option<&str>,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    match node.access.check(authorization, ns) {
        Verdict::Granted => Ok(()),
        Verdict::Unauthenticated => Err(ApiError::new(
            ErrorKind::Unauthenticated,
            "unauthenticated",
            "an Authorization: Bearer token is required",
        )),
        Verdict::Forbidden => {
            Err(ApiError::new(ErrorKind::Forbidden, "forbidden", "this token may not access this resource"))
        }
    }
}

fn who<'a>(node: &'a Node, headers: &HeaderMap) -> Who<'a> {
    Who { data_dir: &node.data_dir, actor: crate::adapters::admin::actor(node, headers) }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))
}

/// One message as JSON: its payload in standard base64 (the only place
/// base64 is decoded; the write path takes bytes).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonMessage<'a> {
    /// Borrowed from the body when it has no escapes (base64 has none).
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub deliver_at_ms: Option<u64>,
}

impl JsonMessage<'_> {
    /// The protocol-neutral request, its payload decoded.
    pub(crate) fn decode(self) -> Result<WriteRequest, ApiError> {
        let payload = decode_payload(&self.payload)?;
        Ok(WriteRequest {
            payload,
            key: self.key,
            idempotency_key: self.idempotency_key,
            headers: self.headers,
            delay_ms: self.delay_ms,
            deliver_at_ms: self.deliver_at_ms,
        })
    }
}

/// A standard-base64 payload, decoded and checked against `MAX_PAYLOAD`.
pub(crate) fn decode_payload(b64: &str) -> Result<Vec<u8>, ApiError> {
    let payload = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| ApiError::bad("invalid_base64", format!("payload is not standard base64: {e}")))?;
    write::check_payload(&payload)?;
    Ok(payload)
}

/// `POST /v1/namespaces/{ns}/messages/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteMany<'a> {
    #[serde(borrow)]
    pub messages: Vec<JsonMessage<'a>>,
    #[serde(default)]
    pub wait: WaitFor,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The body of `POST /v1/namespaces/{ns}/messages/batch`, its size checked.
pub(crate) fn parse_write_many(body: &[u8]) -> Result<WriteMany<'_>, ApiError> {
    let req: WriteMany = parse_json(body)?;
    check_batch_len(req.messages.len())?;
    Ok(req)
}

pub(crate) fn wait_timeout(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(5000))
}

/// The W3C trace context of a request's headers, if valid.
fn trace_context(headers: &HeaderMap) -> Option<TraceContext> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    TraceContext::from_values(value("traceparent"), value("tracestate"))
}

async fn write_one(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<write::WriteAck>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let (mut message, wait, timeout_ms) = parse_write_one(&body)?;
    if let Some(ctx) = trace_context(&headers) {
        ctx.apply(&mut message);
    }
    let results = write::write_batch(&ns, vec![Ok(message)], wait, wait_timeout(timeout_ms)).await?;
    results.into_iter().next().unwrap_or_else(|| Err(ApiError::internal("no result"))).map(Json)
}

/// The body of `POST /v1/namespaces/{ns}/messages`: one message plus `wait`
/// and `timeout_ms`. Its own struct rather than `flatten`, which would let
/// unknown and duplicate keys through.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteOne<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    deliver_at_ms: Option<u64>,
    #[serde(default)]
    wait: WaitFor,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Parses and decodes a single write; a duplicate key is an error, as in
/// a batch.
pub(crate) fn parse_write_one(body: &[u8]) -> Result<(WriteRequest, WaitFor, Option<u64>), ApiError> {
    let w: WriteOne = parse_json(body)?;
    let message = JsonMessage {
        payload: w.payload,
        key: w.key,
        idempotency_key: w.idempotency_key,
        headers: w.headers,
        delay_ms: w.delay_ms,
        deliver_at_ms: w.deliver_at_ms,
    };
    Ok((message.decode()?, w.wait, w.timeout_ms))
}

pub(crate) fn check_batch_len(n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            "batch_too_large",
            format!("a batch holds 1..={MAX_BATCH} messages; this one has {n}"),
        ));
    }
    Ok(())
}

async fn write_many(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BatchReply>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let req = parse_write_many(&body)?;
    let ctx = trace_context(&headers);
    let with_trace = |mut m: WriteRequest| {
        if let Some(ctx) = &ctx {
            ctx.apply(&mut m);
        }
        m
    };
    let messages = req.messages.into_iter().map(|m| m.decode().map(with_trace)).collect();
    let results = write::write_batch(&ns, messages, req.wait, wait_timeout(req.timeout_ms)).await?;
    Ok(Json(BatchReply { results: results.into_iter().map(BatchResult::from).collect() }))
}

/// The reply to a batch: each message's result, in request order.
#[derive(Debug, Serialize)]
struct BatchReply {
    results: Vec<BatchResult>,
}

/// One message's result, serialized as it is (no `serde_json::Value` per
/// message): its ack, or the error body every error has.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum BatchResult {
    Ack(write::WriteAck),
    Error(ErrorBody),
}

impl From<Result<write::WriteAck, ApiError>> for BatchResult {
    fn from(r: Result<write::WriteAck, ApiError>) -> Self {
        match r {
            Ok(ack) => BatchResult::Ack(ack),
            Err(e) => BatchResult::Error(ErrorBody::of(e)),
        }
    }
}

/// `POST /v1/namespaces/{ns}/transactions` (body optional).
async fn txn_begin(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<crate::storage::txn_store::TxnInfo>), ApiError> {
    let ns = namespace(&node, &ns)?;
    Ok((StatusCode::CREATED, Json(crate::services::txn::begin(&ns, parse_begin(&body)?).await?)))
}

/// The body of `POST .../transactions`: empty, or a key and a time to live.
pub(crate) fn parse_begin(body: &[u8]) -> Result<crate::services::txn::BeginRequest, ApiError> {
    if body.is_empty() { Ok(crate::services::txn::BeginRequest::default()) } else { parse_json(body) }
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
) -> Result<Json<crate::services::txn::ChunkAck>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let seq: u32 = seq.parse().map_err(|_| {
        ApiError::bad("invalid_chunk_seq", format!("chunk seq {seq:?} is not a number 0..2^32"))
    })?;
    Ok(Json(crate::services::txn::append_chunk(&ns, &txn, seq, parse_chunk(&body)?).await?))
}

/// The body of `PUT .../transactions/{txn}/chunks/{seq}`; `txn::append_chunk`
/// checks its limits.
pub(crate) fn parse_chunk(body: &[u8]) -> Result<crate::services::txn::ChunkRequest, ApiError> {
    let chunk: ChunkBody = parse_json(body)?;
    Ok(crate::services::txn::ChunkRequest {
        payload: decode_payload(&chunk.payload)?,
        headers: chunk.headers,
    })
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
) -> Result<Json<crate::services::txn::CommitAck>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let c = parse_commit(&body)?;
    Ok(Json(crate::services::txn::commit(&ns, &txn, c.chunks, c.wait, wait_timeout(c.timeout_ms)).await?))
}

pub(crate) fn parse_commit(body: &[u8]) -> Result<CommitBody, ApiError> {
    parse_json(body)
}

async fn txn_abort(
    State(node): State<Arc<Node>>,
    Path((ns, txn)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    crate::services::txn::abort(&ns, &txn).await?;
    Ok(Json(json!({"transaction_id": txn, "aborted": true})))
}

async fn txn_info(
    State(node): State<Arc<Node>>,
    Path((ns, txn)): Path<(String, String)>,
) -> Result<Json<crate::storage::txn_store::TxnInfo>, ApiError> {
    let ns = namespace(&node, &ns)?;
    Ok(Json(crate::services::txn::info(&ns, &txn).await?))
}

async fn lookup(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    Ok(Json(lookup::locate(&ns, &id)?.to_json()))
}

/// `?target=NAME` of the DLQ routes (optional when the namespace has one).
#[derive(Debug, Deserialize)]
struct TargetQuery {
    target: Option<String>,
}

/// The query of `GET .../dlq`. `limit` is taken as text so that a value
/// that is not a number is `400 invalid_limit` (JSON) like one out of range.
#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<String>,
    target: Option<String>,
}

async fn dlq_list(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let target = ns.target(page.target.as_deref())?;
    let limit = page.limit.as_deref().map(|l| l.parse().map_err(|_| dlq::invalid_limit(format!("{l:?}"))));
    let limit = limit.transpose()?;
    dlq::check_page(&ns, page.after.as_deref(), limit)?;
    let total = target.dlq()?.len();
    let (entries, next) = dlq::page(target, page.after.as_deref(), limit);
    let b64 = base64::engine::general_purpose::STANDARD;
    let items: Vec<_> = entries
        .into_iter()
        .map(|e| {
            json!({
                "message_id": e.message_id, "target": target.name,
                "partition": e.partition, "sequence": e.sequence,
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
    Ok(Json(json!({"entries": items, "next_after": next, "total": total, "target": target.name})))
}

async fn dlq_delete(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
    Query(q): Query<TargetQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let target = ns.target(q.target.as_deref())?;
    dlq::delete_one(&ns, target, &id, &who(&node, &headers)).await?;
    Ok(Json(json!({"message_id": id, "deleted": true, "target": target.name})))
}

async fn dlq_purge(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(q): Query<TargetQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let target = ns.target(q.target.as_deref())?;
    let purged = dlq::purge(&ns, target, &who(&node, &headers)).await?;
    Ok(Json(json!({"purged": purged, "target": target.name})))
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
    Query(q): Query<TargetQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let target = ns.target(q.target.as_deref())?;
    let req: ReplayRequest = if body.is_empty() {
        ReplayRequest { ids: None, rate_per_sec: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))?
    };
    let r = dlq::replay(&ns, target, req.ids, req.rate_per_sec, &who(&node, &headers)).await?;
    let replayed: Vec<_> =
        r.replayed.into_iter().map(|(id, new)| json!({"message_id": id, "new_message_id": new})).collect();
    let skipped: Vec<_> =
        r.skipped.into_iter().map(|(id, reason)| json!({"message_id": id, "reason": reason})).collect();
    Ok(Json(
        json!({"replayed": replayed, "skipped": skipped, "not_found": r.not_found, "target": target.name}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    message_id: String,
    reason: String,
}

/// `POST /v1/namespaces/{ns}/dlq/move`: an operator dead-letters a message
/// that is stuck in the delivery window.
async fn dlq_move(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(q): Query<TargetQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let target = ns.target(q.target.as_deref())?;
    let req: MoveRequest = parse_json(&body)?;
    dlq::move_to_dlq(&ns, target, &req.message_id, &req.reason, &who(&node, &headers)).await?;
    Ok(Json(json!({"message_id": req.message_id, "target": target.name, "moved": true})))
}

async fn status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(status::status_json(&node.namespaces(), node.durability))
}

async fn metrics_text(State(node): State<Arc<Node>>) -> Response {
    let body = status::render_metrics(&node.namespaces());
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}
