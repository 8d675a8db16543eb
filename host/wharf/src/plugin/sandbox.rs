//! What a plugin instance may touch: the per-store state and its policies.
//!
//! - no filesystem (no preopens), no environment, no arguments, no stdin;
//! - TCP only to the namespace's `allow_connect` addresses (plus the implicit
//!   wildcard bind the OS does before a connect); no UDP, no listening, no
//!   DNS lookups;
//! - wasi:http only to URLs an `allow_http` rule allows (`url_rule.rs`; wasi-http
//!   ignores socket rules, so the check lives in `send_request`);
//! - linear memory capped by `memory_limit_mib`.

use std::net::SocketAddr;
use std::sync::Arc;

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
                Box::pin(async move { ok })
            },
        );
        Self {
            namespace,
            secrets,
            stderr,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: HttpFilter { rules: net.http.clone() },
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
        default.send_request(request, options, fut)
    }
}
