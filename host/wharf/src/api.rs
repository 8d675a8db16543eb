//! The HTTP/JSON API. Every error is `{"error": {"code", "message"}}` with a
//! matching status, and a request that fails validation changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::now_ms;
use crate::envelope::{Envelope, message_id, parse_message_id};
use crate::metrics;
use crate::node::{Namespace, Node};

/// Input limits; a violation is a 400 or 413 that writes nothing.
pub const MAX_PAYLOAD: usize = 1 << 20;
pub const MAX_KEY: usize = 1024;
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route("/v1/status", get(status))
        .route("/v1/namespaces/{ns}/messages", post(write))
        .route("/v1/namespaces/{ns}/messages/{id}", get(lookup))
        .route("/v1/namespaces/{ns}/dlq", get(dlq_list).delete(dlq_purge))
        .route("/v1/namespaces/{ns}/dlq/replay", post(dlq_replay))
        .route("/v1/namespaces/{ns}/dlq/{id}", delete(dlq_delete))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD * 2 + 64 * 1024))
        .with_state(node)
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

fn namespace(node: &Node, name: &str) -> Result<Arc<Namespace>, ApiError> {
    node.namespaces.get(name).cloned().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "namespace_not_found", format!("no namespace named {name:?}"))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    payload: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Deliver no earlier than this many ms from now.
    #[serde(default)]
    delay_ms: Option<u64>,
    /// Deliver no earlier than this time, ms since the Unix epoch.
    #[serde(default)]
    deliver_at_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct WriteResponse {
    message_id: String,
    partition: u32,
    sequence: u64,
    /// True iff the record was covered by an fdatasync of its segment file
    /// before this reply was sent.
    durable: bool,
    visible: bool,
}

fn validate(req: WriteRequest, ns: &Namespace) -> Result<Envelope, ApiError> {
    let payload = base64::engine::general_purpose::STANDARD
        .decode(req.payload.as_bytes())
        .map_err(|e| ApiError::bad("invalid_base64", format!("payload is not standard base64: {e}")))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("payload is {} bytes; the limit is {MAX_PAYLOAD}", payload.len()),
        ));
    }
    if let Some(k) = &req.key
        && (k.is_empty() || k.len() > MAX_KEY)
    {
        return Err(ApiError::bad("invalid_key", format!("key must be 1..={MAX_KEY} bytes")));
    }
    if let Some(k) = &req.idempotency_key
        && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(ApiError::bad(
            "invalid_idempotency_key",
            format!("idempotency_key must be 1..={MAX_IDEMPOTENCY_KEY} bytes"),
        ));
    }
    let header_bytes: usize = req.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if req.headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::bad(
            "too_many_headers",
            format!("at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes of them"),
        ));
    }
    if req.delay_ms.is_some() && req.deliver_at_ms.is_some() {
        return Err(ApiError::bad("invalid_delay", "give delay_ms or deliver_at_ms, not both"));
    }
    let now = now_ms();
    let deliver_at_ms = req.deliver_at_ms.or(req.delay_ms.map(|d| now.saturating_add(d)));
    let max_delay = ns.cfg.limits.max_delay_ms;
    if deliver_at_ms.is_some_and(|t| t.saturating_sub(now) > max_delay) {
        return Err(ApiError::bad(
            "invalid_delay",
            format!("a delay may be at most {max_delay} ms (limits.max_delay_ms)"),
        ));
    }
    Ok(Envelope {
        key: req.key,
        payload,
        headers: req.headers.into_iter().collect(),
        idempotency_key: req.idempotency_key,
        written_at_ms: now,
        deliver_at_ms,
        replays: 0,
    })
}

async fn write(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ns = namespace(&node, &ns)?;
    let req: WriteRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))?;
    let env = validate(req, &ns)?;
    if let Err((kind, reason)) = admit(&ns) {
        metrics::get().admission_rejections.get_or_create(&metrics::ns_kind(&ns.name, kind)).inc();
        let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "backlog_full", reason).into_response();
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return Ok(resp);
    }
    let started = std::time::Instant::now();
    let bytes = env.payload.len() as u64;
    let ack = append(&ns, env).await?;
    let m = metrics::get();
    let label = metrics::ns(&ns.name);
    m.writes.get_or_create(&label).inc();
    m.write_bytes.get_or_create(&label).inc_by(bytes);
    m.append_latency.get_or_create(&label).observe(started.elapsed().as_secs_f64());
    Ok(Json(ack).into_response())
}

/// Admission control: refuses a write while the namespace's undelivered
/// backlog is past a configured limit. Explicit, never a silent drop.
fn admit(ns: &Namespace) -> Result<(), (&'static str, String)> {
    let limits = &ns.cfg.limits;
    let (mut messages, mut bytes, mut oldest) = (0u64, 0u64, None::<u64>);
    for p in &ns.partitions {
        if let Some(log) = &p.log {
            let st = log.stats();
            messages += st.next_seq.saturating_sub(st.watermark);
            bytes += st.bytes;
        }
        if let Some(t) = p.tracker.lock().ok().and_then(|t| t.oldest_written_at_ms()) {
            oldest = Some(oldest.map_or(t, |o: u64| o.min(t)));
        }
    }
    if messages >= limits.max_backlog_messages {
        return Err((
            "messages",
            format!("{messages} undelivered messages; the limit is {}", limits.max_backlog_messages),
        ));
    }
    if bytes >= limits.max_backlog_bytes {
        return Err((
            "bytes",
            format!("{bytes} bytes held in the log; the limit is {}", limits.max_backlog_bytes),
        ));
    }
    let age = oldest.map(|o| now_ms().saturating_sub(o)).unwrap_or(0);
    if limits.max_backlog_age_ms > 0 && age >= limits.max_backlog_age_ms {
        return Err((
            "age",
            format!(
                "the oldest undelivered message is {age} ms old; the limit is {} ms",
                limits.max_backlog_age_ms
            ),
        ));
    }
    Ok(())
}

/// Appends one message durably and wakes its partition's delivery loop.
async fn append(ns: &Namespace, env: Envelope) -> Result<WriteResponse, ApiError> {
    let partition = ns.partition_for(env.key.as_deref());
    let part = ns.partitions[partition as usize].clone();
    let halted = |reason: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "partition_halted",
            format!("partition {partition} of {} is halted: {reason}", ns.name),
        )
    };
    if let Some(reason) = part.halted_reason() {
        return Err(halted(reason));
    }
    let Some(log) = part.log.clone() else { return Err(halted("log not open".into())) };
    let bytes = env.encode();
    let appended = tokio::task::spawn_blocking(move || log.append(&[&bytes]))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let appended = match appended {
        Ok(a) => a,
        Err(e) => {
            // The log refuses further appends after a failed write; halt so
            // the client is told plainly instead of on every request.
            part.halt(e.to_string());
            return Err(halted(e.to_string()));
        }
    };
    part.notify.notify_one();
    Ok(WriteResponse {
        message_id: message_id(partition, appended.first_seq),
        partition,
        sequence: appended.first_seq,
        durable: appended.synced,
        visible: false,
    })
}

async fn lookup(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let not_found =
        || ApiError::new(StatusCode::NOT_FOUND, "message_not_found", format!("no message {id:?}"));
    let (partition, seq) = parse_message_id(&id).ok_or_else(not_found)?;
    let part = ns.partitions.get(partition as usize).ok_or_else(not_found)?;
    let log = part.log.as_ref().ok_or_else(not_found)?;
    if seq >= log.next_seq() {
        return Err(not_found());
    }
    if let Some(entry) = ns.dlq.get(&id) {
        return Ok(Json(json!({
            "message_id": id, "state": "dead_lettered",
            "attempts": entry.failures.len(),
            "last_error": entry.failures.last().map(|f| f.reason.clone()),
        })));
    }
    let tracked = part.tracker.lock().ok().map(|t| (t.state_of(seq), t.has_read(seq)));
    let body = match tracked {
        Some((Some(s), _)) => json!({
            "message_id": id, "state": s.state, "attempts": s.attempts,
            "next_attempt_at_ms": s.next_attempt_at_ms, "last_error": s.last_error,
        }),
        Some((None, true)) => json!({"message_id": id, "state": "delivered"}),
        _ => json!({"message_id": id, "state": "pending", "attempts": 0}),
    };
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

async fn dlq_list(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let entries = ns.dlq.page(page.after.as_deref(), limit);
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.message_id.clone())).flatten();
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
                "failures": e.failures,
            })
        })
        .collect();
    Ok(Json(json!({"entries": items, "next_after": next, "total": ns.dlq.len()})))
}

async fn dlq_delete(
    State(node): State<Arc<Node>>,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let dlq = ns.dlq.clone();
    let key = id.clone();
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
    Ok(Json(json!({"message_id": id, "deleted": true})))
}

async fn dlq_purge(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let dlq = ns.dlq.clone();
    let purged = tokio::task::spawn_blocking(move || dlq.purge())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "dlq_write_failed", e.to_string()))?;
    tracing::warn!(namespace = %ns.name, purged, "dlq purged");
    Ok(Json(json!({"purged": purged})))
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

/// Puts DLQ entries back on their partition as new messages (new ids, one
/// more replay counted), then deletes the entries. A crash between the two
/// steps leaves the entry in the DLQ as well: at-least-once, never lost.
async fn dlq_replay(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ns = namespace(&node, &ns)?;
    let req: ReplayRequest = if body.is_empty() {
        ReplayRequest { ids: None, rate_per_sec: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))?
    };
    if req.rate_per_sec.is_some_and(|r| !(r > 0.0)) {
        return Err(ApiError::bad("invalid_rate", "rate_per_sec must be positive"));
    }
    let ids = req.ids.unwrap_or_else(|| ns.dlq.ids());
    let pause = req.rate_per_sec.map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    let max = ns.cfg.dlq.max_replays;
    let (mut replayed, mut skipped, mut not_found) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        let Some(entry) = ns.dlq.get(&id) else {
            not_found.push(id);
            continue;
        };
        if entry.envelope.replays >= max {
            skipped.push(json!({"message_id": id, "reason": format!("already replayed {} times (dlq.max_replays = {max})", entry.envelope.replays)}));
            continue;
        }
        let mut env = entry.envelope.clone();
        env.replays += 1;
        env.deliver_at_ms = None;
        let ack = append(&ns, env).await?;
        let dlq = ns.dlq.clone();
        let old = id.clone();
        tokio::task::spawn_blocking(move || dlq.delete(&old))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "dlq_write_failed", e.to_string())
            })?;
        tracing::info!(namespace = %ns.name, message_id = %id, new_message_id = %ack.message_id, "dlq entry replayed");
        replayed.push(json!({"message_id": id, "new_message_id": ack.message_id}));
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
    Ok(Json(json!({"replayed": replayed, "skipped": skipped, "not_found": not_found})))
}

async fn status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let mut namespaces = serde_json::Map::new();
    for (name, ns) in &node.namespaces {
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
            json!({"partitions": partitions, "plugin": plugin, "dlq_size": ns.dlq.len()}),
        );
    }
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "durability": node.durability,
        "namespaces": namespaces,
    }))
}

async fn metrics_text(State(node): State<Arc<Node>>) -> Response {
    let body = metrics::get().render(&node);
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}
