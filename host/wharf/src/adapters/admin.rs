//! The admin API: plugins per namespace target at runtime (`?target=NAME`,
//! optional when the namespace has one target), config reload, purge of
//! a removed namespace's data, and resuming a halted target or replica. Every call leaves an audit line. When auth is
//! on, these routes take an admin token only.

use std::sync::Arc;

use crate::error::ErrorKind;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::adapters::path::{namespace, partition};
use crate::adapters::tls::Tls;
use crate::error::Error as ApiError;
use crate::services::node::Node;
use crate::services::{control, history};

/// Largest plugin component accepted over the API.
const MAX_PLUGIN_BYTES: usize = 64 << 20;

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/admin/namespaces/{ns}/plugin", put(register).delete(remove))
        .route("/v1/admin/namespaces/{ns}/plugin/rollback", post(rollback))
        .route("/v1/admin/namespaces/{ns}/data", delete(purge_data))
        .route("/v1/admin/reload", post(reload))
        .route("/v1/admin/namespaces/{ns}/targets/{target}/resume", post(resume_target))
        .route("/v1/admin/namespaces/{ns}/replication/resume", post(resume_replication))
        .route("/v1/admin/namespaces/{ns}/replication/rebuild", post(rebuild_replica))
        .route("/v1/admin/namespaces/{ns}/rewind", post(rewind))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES))
}

/// Who made the call, for the audit log: a token fingerprint, never the token.
pub fn actor(node: &Node, headers: &HeaderMap) -> String {
    node.access.actor(headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

/// Audits the result, then turns it into a reply.
fn finish(
    node: &Node,
    headers: &HeaderMap,
    action: &str,
    target: &str,
    r: Result<Value, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let who = control::Who { data_dir: &node.data_dir, actor: actor(node, headers) };
    who.record(action, target, r, Value::clone).map(Json)
}

/// `?target=NAME`.
#[derive(Debug, serde::Deserialize)]
struct TargetQuery {
    target: Option<String>,
}

async fn register(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(q): Query<TargetQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = async {
        let ns = namespace(&node, &ns)?;
        let target = ns.target(q.target.as_deref())?;
        let r = control::register(&node, &ns, target, &body).await?;
        Ok(json!({
            "namespace": ns.name, "target": target.name, "digest": r.digest, "state": "ready",
            "already_current": r.already_current,
        }))
    }
    .await;
    finish(&node, &headers, "plugin.register", &ns, r)
}

async fn rollback(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(q): Query<TargetQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = async {
        let ns = namespace(&node, &ns)?;
        let target = ns.target(q.target.as_deref())?;
        let r = control::rollback(&node, &ns, target).await?;
        Ok(json!({"namespace": ns.name, "target": target.name, "digest": r.digest, "state": "ready"}))
    }
    .await;
    finish(&node, &headers, "plugin.rollback", &ns, r)
}

async fn remove(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(q): Query<TargetQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = namespace(&node, &ns).and_then(|n| {
        let target = n.target(q.target.as_deref())?;
        control::remove(target)?;
        Ok(json!({"namespace": n.name, "target": target.name, "state": "removed"}))
    });
    finish(&node, &headers, "plugin.remove", &ns, r)
}

async fn reload(
    State(node): State<Arc<Node>>,
    tls: Option<axum::Extension<Arc<Tls>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = control::reload(&node)
        .await
        .map(|mut report| {
            Tls::reload_into(tls.as_ref().map(|t| t.0.as_ref()), &mut report);
            json!(report)
        })
        .map_err(|e| ApiError::bad("config_invalid", format!("{e}; nothing changed")));
    finish(&node, &headers, "config.reload", &node.config_path.display().to_string(), r)
}

/// Deletes the data of a namespace that is no longer in the config.
async fn purge_data(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = if node.namespace(&ns).is_some() {
        Err(ApiError::new(
            ErrorKind::Conflict,
            "namespace_active",
            format!("{ns} is in service; remove it from the config and reload first"),
        ))
    } else if !crate::config::valid_namespace_name(&ns) {
        Err(ApiError::bad("invalid_namespace", "not a namespace name"))
    } else {
        control::purge_data(&node.data_dir, &ns).map(|()| json!({"namespace": ns, "purged": true}))
    };
    finish(&node, &headers, "namespace.purge", &ns, r)
}

/// `?partition=P` (every partition when absent).
#[derive(Debug, serde::Deserialize)]
struct PartitionQuery {
    partition: Option<String>,
}

impl PartitionQuery {
    fn get(&self) -> Result<Option<u32>, ApiError> {
        self.partition.as_deref().map(partition).transpose()
    }
}

fn cleared_json(cleared: Vec<(u32, crate::storage::halts::Halt)>) -> Value {
    Value::Array(cleared.into_iter().map(|(p, h)| json!({"partition": p, "was": h.reason})).collect())
}

/// Clears a halt the target's plugin asked for; the cursor goes on.
async fn resume_target(
    State(node): State<Arc<Node>>,
    Path((ns, target)): Path<(String, String)>,
    Query(q): Query<PartitionQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = namespace(&node, &ns).and_then(|n| {
        let t = n.target(Some(&target))?;
        let cleared = control::resume_target(t, q.get()?)?;
        Ok(json!({"namespace": n.name, "target": t.name, "resumed": cleared_json(cleared)}))
    });
    finish(&node, &headers, "target.resume", &format!("{ns}/{target}"), r)
}

/// `POST /v1/admin/namespaces/{ns}/rewind`: exactly one of `earliest`,
/// `from_time` (RFC 3339) and `from_seq` (`{"<partition>": seq}`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RewindBody {
    target: Option<String>,
    #[serde(default)]
    earliest: bool,
    from_time: Option<String>,
    from_seq: Option<std::collections::BTreeMap<String, u64>>,
}

impl RewindBody {
    fn from(&self) -> Result<history::RewindFrom, ApiError> {
        let bad = |m: &str| ApiError::bad("invalid_rewind", m.to_string());
        match (self.earliest, &self.from_time, &self.from_seq) {
            (true, None, None) => Ok(history::RewindFrom::Earliest),
            (false, Some(t), None) => Ok(history::RewindFrom::Time(history::parse_rfc3339(t)?)),
            (false, None, Some(seqs)) if !seqs.is_empty() => seqs
                .iter()
                .map(|(p, s)| {
                    p.parse::<u32>()
                        .map(|p| (p, *s))
                        .map_err(|_| bad(&format!("partition {p:?} is not a number")))
                })
                .collect::<Result<_, _>>()
                .map(history::RewindFrom::Sequences),
            _ => Err(bad("say where to rewind from: exactly one of earliest, from_time, from_seq")),
        }
    }
}

/// Re-delivers retained history to a target (all when none is named).
async fn rewind(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = async {
        let n = namespace(&node, &ns)?;
        let req: RewindBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))?;
        let lanes = history::rewind(&n, req.target.as_deref(), req.from()?).await?;
        Ok(json!({"namespace": n.name, "rewinds": lanes}))
    }
    .await;
    finish(&node, &headers, "namespace.rewind", &ns, r)
}

/// Clears a replica partition's replication halt; the next batch is checked
/// as any other (a divergence halts again: nothing is healed).
async fn resume_replication(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(q): Query<PartitionQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _guard = node.control.lock().await;
    let r = async {
        let n = namespace(&node, &ns)?;
        let cleared = crate::services::replication::resume(&n, q.get()?).await?;
        Ok(json!({"namespace": n.name, "resumed": cleared_json(cleared)}))
    }
    .await;
    finish(&node, &headers, "replication.resume", &ns, r)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildBody {
    /// Base URL of the primary Wharf.
    from: String,
    /// The primary's namespace (default: the same name).
    namespace: Option<String>,
    /// A token the primary accepts for the namespace.
    token: Option<String>,
}

/// Discards a replica partition and installs the primary's retained
/// history in its place (`services::replica_snapshot`). Audited.
async fn rebuild_replica(
    State(node): State<Arc<Node>>,
    Path(ns): Path<String>,
    Query(q): Query<PartitionQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let r = async {
        let p = q.get()?.ok_or_else(|| {
            ApiError::bad("partition_required", "a rebuild names one partition: ?partition=P")
        })?;
        let req: RebuildBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))?;
        if !(req.from.starts_with("http://") || req.from.starts_with("https://")) {
            return Err(ApiError::bad("invalid_url", format!("from: {:?} is not an http(s) URL", req.from)));
        }
        let primary = crate::services::replica_snapshot::Primary {
            url: req.from,
            namespace: req.namespace,
            token: req.token,
        };
        let rebuilt = crate::services::replica_snapshot::rebuild(&node, &ns, p, primary).await?;
        Ok(json!({"namespace": ns, "rebuilt": rebuilt}))
    }
    .await;
    finish(
        &node,
        &headers,
        "replication.rebuild",
        &format!("{ns}/p{}", q.partition.as_deref().unwrap_or("?")),
        r,
    )
}
