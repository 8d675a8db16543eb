//! The gRPC API: service `wharf.v1.Wharf` (`proto/wharf/v1/wharf.proto`).
//!
//! The HTTP API's operations under the same names, through the same code:
//! the write path is `write::write_batch`, the rest are the shared functions
//! of `api`. Payloads are raw bytes here instead of base64. An [`ApiError`]
//! becomes a status with the gRPC code closest to its HTTP status; its
//! machine-readable code prefixes the message and is sent as the
//! `wharf-error-code` metadata entry. Auth takes the same bearer tokens, in
//! the `authorization` metadata entry.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::adapters::http as api;
use crate::error::{Error as ApiError, ErrorKind};
use crate::services::node::{Namespace, Node};
use crate::services::txn;
use crate::services::write::{self, MAX_BATCH, MAX_PAYLOAD, WaitFor, WriteAck};
use crate::services::{dlq, lookup, status};

/// Code generated from the proto file by `build.rs`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("wharf.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wharf_descriptor.bin"));
}

use pb::wharf_server::{Wharf, WharfServer};

/// Largest request accepted, the HTTP API's body limit.
const MAX_MESSAGE: usize = MAX_BATCH * 1024 + MAX_PAYLOAD * 2;

/// A started gRPC listener: where it is bound, and the task serving it.
#[derive(Debug)]
pub struct Serving {
    pub addr: SocketAddr,
    pub served: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (an error if it cannot) and serves the gRPC API on it (over
/// TLS with `tls`) until `shutdown` completes, then drains in-flight calls.
pub async fn start(
    node: Arc<Node>,
    addr: SocketAddr,
    budget: crate::adapters::budget::ConnectionBudget,
    tls: Option<crate::adapters::tls::Acceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Serving> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the gRPC API to {addr}"))?;
    let addr = listener.local_addr().context("the gRPC listener's address")?;
    let over_tls = tls.is_some();
    let incoming = crate::adapters::listener::incoming(listener, budget, tls);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("gRPC reflection")?;
    let service = WharfServer::new(GrpcApi { node })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(usize::MAX);
    tracing::info!(grpc = %addr, tls = over_tls, "gRPC API serving");
    let served = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(reflection)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC API failed");
        }
    });
    Ok(Serving { addr, served })
}

/// The gRPC status for an API error.
pub fn to_status(e: ApiError) -> Status {
    let code = match e.kind {
        ErrorKind::Invalid | ErrorKind::TooLarge | ErrorKind::Unprocessable => Code::InvalidArgument,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::NotFound | ErrorKind::Gone => Code::NotFound,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Overloaded | ErrorKind::StorageFull => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::MethodNotAllowed => Code::Unimplemented,
        ErrorKind::TimedOut => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    };
    let mut status = Status::new(code, format!("{}: {}", e.code, e.message));
    if let Ok(v) = MetadataValue::try_from(e.code) {
        status.metadata_mut().insert("wharf-error-code", v);
    }
    if code == Code::ResourceExhausted {
        status.metadata_mut().insert("retry-after", MetadataValue::from_static("1"));
    }
    status
}

#[derive(Debug)]
struct GrpcApi {
    node: Arc<Node>,
}

impl GrpcApi {
    /// The HTTP API's bearer-token check; `ns: None` takes an admin token.
    /// Who is calling, for audit lines.
    fn who<T>(&self, req: &Request<T>) -> crate::services::control::Who<'_> {
        let auth = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        crate::services::control::Who { data_dir: &self.node.data_dir, actor: self.node.access.actor(auth) }
    }

    fn authorize<T>(&self, req: &Request<T>, ns: Option<&str>) -> Result<(), Status> {
        let authorization = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        api::check_authorization(&self.node, authorization, ns).map_err(|e| {
            if ns.is_none() {
                let actor = self.node.access.actor(authorization);
                crate::services::control::audit(
                    &self.node.data_dir,
                    &actor,
                    "auth.refused",
                    "grpc",
                    Err(e.code),
                );
            }
            to_status(e)
        })
    }

    /// Authorizes the call for `ns` and finds the namespace.
    fn namespace<T>(&self, req: &Request<T>, ns: &str) -> Result<Arc<Namespace>, Status> {
        self.authorize(req, Some(ns))?;
        crate::adapters::path::namespace(&self.node, ns).map_err(to_status)
    }
}

/// The W3C trace context of a call's metadata, if valid.
fn trace_context<T>(req: &Request<T>) -> Option<crate::services::trace::TraceContext> {
    let value = |name: &str| req.metadata().get(name).and_then(|v| v.to_str().ok());
    crate::services::trace::TraceContext::from_values(value("traceparent"), value("tracestate"))
}

fn wait_for(wait: i32) -> Result<WaitFor, ApiError> {
    match pb::Wait::try_from(wait) {
        Ok(pb::Wait::Durable) => Ok(WaitFor::Durable),
        Ok(pb::Wait::Visible) => Ok(WaitFor::Visible),
        Err(_) => Err(ApiError::bad("invalid_wait", format!("unknown wait value {wait}"))),
    }
}

/// A `Write` request as the write path takes it: the message, what to wait
/// for and how long (the HTTP API's `api::parse_write_one`).
pub(crate) fn write_from_pb(
    r: pb::WriteRequest,
) -> Result<(write::WriteRequest, WaitFor, Option<u64>), ApiError> {
    let wait = wait_for(r.wait)?;
    let message = write_request(pb::Message {
        payload: r.payload,
        key: r.key,
        idempotency_key: r.idempotency_key,
        headers: r.headers,
        delay_ms: r.delay_ms,
        deliver_at_ms: r.deliver_at_ms,
    });
    Ok((message, wait, r.timeout_ms))
}

/// A `WriteBatch` request, its size checked (`api::parse_write_many`).
pub(crate) fn batch_from_pb(
    r: pb::WriteBatchRequest,
) -> Result<(Vec<write::WriteRequest>, WaitFor, Option<u64>), ApiError> {
    let wait = wait_for(r.wait)?;
    api::check_batch_len(r.messages.len())?;
    Ok((r.messages.into_iter().map(write_request).collect(), wait, r.timeout_ms))
}

/// The protocol-neutral request: gRPC carries the payload's bytes as they are.
fn write_request(m: pb::Message) -> write::WriteRequest {
    write::WriteRequest {
        payload: m.payload,
        key: m.key,
        idempotency_key: m.idempotency_key,
        headers: m.headers,
        delay_ms: m.delay_ms,
        deliver_at_ms: m.deliver_at_ms,
    }
}

fn ack(a: WriteAck) -> pb::WriteAck {
    pb::WriteAck {
        message_id: a.message_id,
        partition: a.partition,
        sequence: a.sequence,
        durable: a.durable,
        visible: a.visible,
        duplicate: a.duplicate,
    }
}

fn transaction(t: crate::storage::txn_store::TxnInfo) -> pb::Transaction {
    pb::Transaction {
        transaction_id: t.transaction_id,
        key: t.key,
        state: t.state.into(),
        chunks: t.chunks,
        bytes: t.bytes,
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
        marker_id: t.marker_id,
    }
}

fn dlq_entry(e: crate::storage::dlq::DlqEntry) -> pb::DlqEntry {
    pb::DlqEntry {
        message_id: e.message_id,
        partition: e.partition,
        sequence: e.sequence,
        key: e.envelope.key,
        payload: e.envelope.payload,
        headers: e.envelope.headers.into_iter().collect(),
        idempotency_key: e.envelope.idempotency_key,
        written_at_ms: e.envelope.written_at_ms,
        dead_lettered_at_ms: e.dead_lettered_at_ms,
        plugin_digest: e.plugin_digest,
        replays: e.envelope.replays,
        transaction_id: e.envelope.transaction.as_ref().map(|t| t.id.clone()),
        transaction_chunks: e.envelope.transaction.as_ref().map_or(0, |t| t.chunks),
        failures: e
            .failures
            .into_iter()
            .map(|f| pb::Failure { attempt: f.attempt, at_ms: f.at_ms, kind: f.kind, reason: f.reason })
            .collect(),
    }
}

#[tonic::async_trait]
impl Wharf for GrpcApi {
    async fn write(&self, request: Request<pb::WriteRequest>) -> Result<Response<pb::WriteAck>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let ctx = trace_context(&request);
        let (mut message, wait, timeout_ms) = write_from_pb(request.into_inner()).map_err(to_status)?;
        if let Some(ctx) = &ctx {
            ctx.apply(&mut message);
        }
        let results = write::write_batch(&ns, vec![Ok(message)], wait, api::wait_timeout(timeout_ms))
            .await
            .map_err(to_status)?;
        let result = results.into_iter().next().unwrap_or_else(|| Err(ApiError::internal("no result")));
        result.map(|a| Response::new(ack(a))).map_err(to_status)
    }

    async fn write_batch(
        &self,
        request: Request<pb::WriteBatchRequest>,
    ) -> Result<Response<pb::WriteBatchResponse>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let ctx = trace_context(&request);
        let (mut messages, wait, timeout_ms) = batch_from_pb(request.into_inner()).map_err(to_status)?;
        if let Some(ctx) = &ctx {
            messages.iter_mut().for_each(|m| ctx.apply(m));
        }
        let messages = messages.into_iter().map(Ok).collect();
        let results = write::write_batch(&ns, messages, wait, api::wait_timeout(timeout_ms))
            .await
            .map_err(to_status)?;
        let results = results
            .into_iter()
            .map(|r| pb::WriteResult {
                result: Some(match r {
                    Ok(a) => pb::write_result::Result::Ack(ack(a)),
                    Err(e) => pb::write_result::Result::Error(pb::Error {
                        code: e.code.to_string(),
                        message: e.message,
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::WriteBatchResponse { results }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::MessageState>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let id = request.into_inner().message_id;
        let report = lookup::locate(&ns, &id).map_err(to_status)?;
        let overall = report.overall();
        let state = pb::MessageState {
            message_id: id,
            state: serde_json::to_value(overall.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            attempts: Some(overall.attempts),
            next_attempt_at_ms: overall.next_attempt_at_ms,
            last_error: overall.last_error,
            targets_json: report.to_json()["targets"].to_string(),
        };
        Ok(Response::new(state))
    }

    async fn list_dlq(
        &self,
        request: Request<pb::ListDlqRequest>,
    ) -> Result<Response<pb::ListDlqResponse>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let target = ns.target(r.target.as_deref()).map_err(to_status)?;
        let limit = r.limit.map(|l| l as usize);
        dlq::check_page(&ns, r.after.as_deref(), limit).map_err(to_status)?;
        let (entries, next_after) = dlq::page(target, r.after.as_deref(), limit);
        Ok(Response::new(pb::ListDlqResponse {
            entries: entries.into_iter().map(dlq_entry).collect(),
            next_after,
            total: target.dlq().map_err(to_status)?.len() as u64,
        }))
    }

    async fn replay_dlq(
        &self,
        request: Request<pb::ReplayDlqRequest>,
    ) -> Result<Response<pb::ReplayDlqResponse>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let who = self.who(&request);
        let r = request.into_inner();
        if r.all && !r.ids.is_empty() {
            return Err(to_status(ApiError::bad("invalid_ids", "give ids or all, not both")));
        }
        let ids = (!r.all).then_some(r.ids);
        let target = ns.target(r.target.as_deref()).map_err(to_status)?;
        let done = dlq::replay(&ns, target, ids, r.rate_per_sec, &who).await.map_err(to_status)?;
        Ok(Response::new(pb::ReplayDlqResponse {
            replayed: done
                .replayed
                .into_iter()
                .map(|(message_id, new_message_id)| pb::Replayed { message_id, new_message_id })
                .collect(),
            skipped: done
                .skipped
                .into_iter()
                .map(|(message_id, reason)| pb::Skipped { message_id, reason })
                .collect(),
            not_found: done.not_found,
        }))
    }

    async fn delete_dlq(
        &self,
        request: Request<pb::DeleteDlqRequest>,
    ) -> Result<Response<pb::DeleteDlqResponse>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let who = self.who(&request);
        let r = request.into_inner();
        let target = ns.target(r.target.as_deref()).map_err(to_status)?;
        let message_id = r.message_id;
        dlq::delete_one(&ns, target, &message_id, &who).await.map_err(to_status)?;
        Ok(Response::new(pb::DeleteDlqResponse { message_id, deleted: true }))
    }

    async fn purge_dlq(
        &self,
        request: Request<pb::PurgeDlqRequest>,
    ) -> Result<Response<pb::PurgeDlqResponse>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let target = ns.target(request.get_ref().target.as_deref()).map_err(to_status)?;
        let purged = dlq::purge(&ns, target, &self.who(&request)).await.map_err(to_status)?;
        Ok(Response::new(pb::PurgeDlqResponse { purged: purged as u64 }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authorize(&request, None)?;
        Ok(Response::new(pb::StatusResponse {
            json: status::status_json(&self.node.namespaces(), self.node.durability).to_string(),
        }))
    }

    async fn begin_transaction(
        &self,
        request: Request<pb::BeginTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let req = txn::BeginRequest { key: r.key, ttl_ms: r.ttl_ms };
        let info = txn::begin(&ns, req).await.map_err(to_status)?;
        Ok(Response::new(transaction(info)))
    }

    async fn append_chunk(
        &self,
        request: Request<pb::AppendChunkRequest>,
    ) -> Result<Response<pb::ChunkAck>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let req = txn::ChunkRequest { payload: r.payload, headers: r.headers };
        let a = txn::append_chunk(&ns, &r.transaction_id, r.seq, req).await.map_err(to_status)?;
        Ok(Response::new(pb::ChunkAck {
            transaction_id: a.transaction_id,
            seq: a.seq,
            durable: a.durable,
            duplicate: a.duplicate,
        }))
    }

    async fn commit_transaction(
        &self,
        request: Request<pb::CommitTransactionRequest>,
    ) -> Result<Response<pb::CommitAck>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let wait = wait_for(r.wait).map_err(to_status)?;
        let a = txn::commit(&ns, &r.transaction_id, r.chunks, wait, api::wait_timeout(r.timeout_ms))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CommitAck {
            transaction_id: a.transaction_id,
            chunks: a.chunks,
            marker: Some(ack(a.marker)),
        }))
    }

    async fn abort_transaction(
        &self,
        request: Request<pb::AbortTransactionRequest>,
    ) -> Result<Response<pb::AbortTransactionResponse>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let transaction_id = request.into_inner().transaction_id;
        txn::abort(&ns, &transaction_id).await.map_err(to_status)?;
        Ok(Response::new(pb::AbortTransactionResponse { transaction_id, aborted: true }))
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let ns = self.namespace(&request, &request.get_ref().namespace)?;
        let info = txn::info(&ns, &request.into_inner().transaction_id).await.map_err(to_status)?;
        Ok(Response::new(transaction(info)))
    }
}
