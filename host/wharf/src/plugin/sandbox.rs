//! What a plugin instance may touch: the per-store state and its policies.
//!
//! - no filesystem (no preopens), no environment, no arguments, no stdin;
//! - TCP only to the namespace's `allow_connect` addresses (plus the implicit
//!   wildcard bind the OS does before a connect); no UDP, no listening, no
//!   DNS lookups;
//! - wasi:http only to URLs an `allow_http` rule allows (`url_rule.rs`; wasi-http
//!   ignores socket rules, so the check lives in `send_request`);
//! - linear memory capped by `memory_limit_mib`.
//!
//! The store also records the instance's use of its target's network
//! ([`NetUse`]): the TCP connections it opened and the HTTP requests still
//! waiting for an answer. When a call ends at the I/O deadline, that record
//! says whether the guest was waiting on its target (the target's fault) or
//! on nothing the host can blame (the plugin's fault; see `bounded` in
//! `mod.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The network a namespace's plugin may reach.
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    pub tcp: Arc<Vec<SocketAddr>>,
    /// Parsed `allow_http` entries (see `url_rule.rs`).
    pub http: Arc<Vec<super::UrlRule>>,
}

/// The data of one plugin `Store`.
pub struct StoreState {
    pub namespace: Arc<str>,
    /// Scrubbed out of the plugin's log lines.
    pub secrets: Arc<super::redact::Secrets>,
    /// The tail of the plugin's standard error (named in trap reasons).
    pub stderr: super::stderr::StderrTail,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: HttpFilter,
    table: ResourceTable,
    pub limits: Limits,
    /// What the instance did on its target's network (read by the deadline).
    pub net_use: NetUse,
}

/// An instance's use of its target's network, shared with the socket check
/// and the HTTP hook. Counts only what the allow-lists let through.
#[derive(Debug, Clone, Default)]
pub struct NetUse(Arc<NetCounts>);

#[derive(Debug, Default)]
struct NetCounts {
    /// TCP connects to an `allow_connect` address, ever (a pooled
    /// connection stays open across calls; its reads cannot be watched).
    tcp_connects: AtomicU64,
    /// `allow_http` requests sent and not answered yet (headers not in).
    http_waiting: AtomicU64,
}

impl NetUse {
    /// The guest may be waiting on its target: it opened a TCP connection
    /// to it, or an HTTP request to it has no answer yet.
    pub fn waiting_on_target(&self) -> bool {
        self.0.tcp_connects.load(Ordering::Relaxed) > 0 || self.0.http_waiting.load(Ordering::Relaxed) > 0
    }

    fn connected(&self) {
        self.0.tcp_connects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an HTTP request as waiting until the guard drops (answered,
    /// failed, or abandoned with the instance).
    fn http_request(&self) -> HttpWaiting {
        self.0.http_waiting.fetch_add(1, Ordering::Relaxed);
        HttpWaiting(self.clone())
    }
}

/// One HTTP request waiting for its answer (see [`NetUse::http_request`]).
struct HttpWaiting(NetUse);

impl Drop for HttpWaiting {
    fn drop(&mut self) {
        self.0.0.http_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The store's limits, plus how much linear memory the instance holds (for
/// `wharf plugin test`). Memory never shrinks, so the total is the peak.
pub struct Limits {
    inner: StoreLimits,
    memory_bytes: usize,
}

impl Limits {
    /// Linear memory of every memory of the instance, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if ok {
            self.memory_bytes = self.memory_bytes.saturating_add(desired.saturating_sub(current));
        }
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl StoreState {
    pub fn new(
        namespace: Arc<str>,
        net: &NetPolicy,
        memory_limit_bytes: usize,
        secrets: Arc<super::redact::Secrets>,
    ) -> Self {
        let allowed = net.tcp.clone();
        let net_use = NetUse::default();
        let connects = net_use.clone();
        let stderr = super::stderr::StderrTail::default();
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone());
        wasi.allow_tcp(true).allow_udp(false).allow_ip_name_lookup(false).socket_addr_check(
            move |addr, use_| {
                let ok = match use_ {
                    // The OS binds an ephemeral port before each connect.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    SocketAddrUse::TcpConnect => allowed.contains(&addr),
                    _ => false,
                };
                if ok && matches!(use_, SocketAddrUse::TcpConnect) {
                    connects.connected();
                }
                Box::pin(async move { ok })
            },
        );
        Self {
            namespace,
            secrets,
            stderr,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: HttpFilter { rules: net.http.clone(), net_use: net_use.clone() },
            table: ResourceTable::new(),
            limits: Limits {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory_limit_bytes)
                    .instances(16)
                    .tables(64)
                    .memories(4)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_bytes: 0,
            },
            net_use,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { hooks: &mut self.hooks, table: &mut self.table, ctx: &mut self.http }
    }
}

/// Lets a request through only if an `allow_http` rule allows its URL.
struct HttpFilter {
    rules: Arc<Vec<super::UrlRule>>,
    net_use: NetUse,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpFilter {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        if !self.rules.iter().any(|r| r.allows(uri)) {
            tracing::warn!(%uri, "plugin http request denied by allow_http");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let default: &mut dyn WasiHttpHooks = wasmtime_wasi_http::default_hooks();
        let send = Box::into_pin(default.send_request(request, options, fut));
        let waiting = self.net_use.http_request();
        Box::new(async move {
            let answer = send.await;
            drop(waiting);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::NetUse;

    #[test]
    fn a_target_is_waited_on_while_an_http_request_is_unanswered_or_once_a_tcp_connection_opened() {
        let net = NetUse::default();
        assert!(!net.waiting_on_target(), "an instance that never used the network");
        let waiting = net.http_request();
        assert!(net.waiting_on_target(), "an unanswered request");
        drop(waiting);
        assert!(!net.waiting_on_target(), "the request was answered");
        net.connected();
        assert!(net.waiting_on_target(), "a TCP connection to the target stays open across calls");
    }
}
