//! Accepting API connections within a budget (`budget.rs`, shared by the
//! HTTP and gRPC listeners).
//!
//! The HTTP server also bounds how long a client may hold a connection
//! without finishing its request: headers (and an idle keep-alive
//! connection) within `header_read_timeout`, the whole body within
//! `body_read_timeout` counted from the request's start, not per frame
//! (`body_deadline.rs`: `408 body_timeout`). A slow-loris flood, or a body
//! trickled a byte at a time, therefore frees its slots by itself.
//!
//! With `[server.tls]`, both listeners hand each connection to its TLS
//! acceptor (`tls.rs`) after taking its slot: the handshake runs in the
//! connection's own task (on gRPC, its own spawned task) within
//! `header_read_timeout`, so neither a slow handshake nor a silent client
//! holds up the accept loop or keeps its slot for long.

use std::io;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::adapters::body_deadline;
use crate::adapters::budget::ConnectionBudget;
use crate::adapters::tls::{Acceptor, Conn};

/// The HTTP server's read deadlines.
#[derive(Debug, Clone, Copy)]
pub struct ReadTimeouts {
    /// Request headers, and an idle keep-alive connection's next request.
    pub header: Duration,
    /// A request's whole body, from the request's start.
    pub body: Duration,
}

/// Serves `router` over HTTP/1.1 (over TLS with `tls`) on `listener` until
/// `shutdown` completes, then lets in-flight requests finish (up to
/// `drain`).
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    budget: ConnectionBudget,
    timeouts: ReadTimeouts,
    tls: Option<Acceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let body = timeouts.body;
    let router =
        router.layer(axum::middleware::from_fn(move |req, next| body_deadline::enforce(body, req, next)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeouts.header).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = budget.accept(&listener) => conn,
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let conn = match &tls {
                None => Conn::Plain(conn),
                Some(tls) => match tls.accept(conn).await {
                    Some(conn) => conn,
                    None => return,
                },
            };
            let served = watcher.watch(builder.serve_connection(hyper_util::rt::TokioIo::new(conn), service));
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections did not finish within {drain:?}");
    }
}

/// The gRPC listener's connections, each holding a slot in the budget;
/// with `tls`, the ones whose handshake succeeded. Handshakes run in their
/// own tasks, so a slow one never holds up the others.
pub fn incoming(
    listener: TcpListener,
    budget: ConnectionBudget,
    tls: Option<Acceptor>,
) -> impl futures_util::Stream<Item = io::Result<Conn>> {
    use futures_util::StreamExt as _;
    let max = budget.max;
    let accepted = futures_util::stream::unfold((listener, budget), |(listener, budget)| async move {
        let conn = budget.accept(&listener).await;
        Some((conn, (listener, budget)))
    });
    match tls {
        None => accepted.map(|conn| Ok(Conn::Plain(conn))).boxed(),
        Some(tls) => accepted
            .map(move |conn| {
                tokio::spawn({
                    let tls = tls.clone();
                    async move { tls.accept(conn).await }
                })
            })
            // At most one handshake per budget slot is pending anyway.
            .buffer_unordered(max)
            .filter_map(|done| async move { done.ok().flatten().map(Ok) })
            .boxed(),
    }
}
