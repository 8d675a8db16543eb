//! The open-connection budget shared by the HTTP and gRPC listeners.
//!
//! Every open connection costs a file descriptor, and the log needs
//! descriptors too (a new segment, the DLQ, the chunk store). A connection
//! is served only with a permit in hand ([`ConnectionBudget::accept`]),
//! and the permit is returned when the [`Budgeted`] connection is dropped.
//! Over budget, one accepted connection per listener waits for a permit
//! and the other new clients wait in the kernel's backlog, costing the
//! process nothing.
//!
//! Invariant: the budget never exceeds half the process's soft
//! `RLIMIT_NOFILE`, whatever the config says, so connections alone can
//! never exhaust the descriptors the log needs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an accept loop waits after the OS refused an accept (out of
/// descriptors, say) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The open-connection budget shared by the HTTP and gRPC listeners.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    permits: Arc<Semaphore>,
    /// The number of connections allowed at once.
    pub max: usize,
}

impl ConnectionBudget {
    /// `configured`, capped at half the soft descriptor limit.
    pub fn new(configured: usize) -> Self {
        let max = configured.min(nofile_soft_limit() / 2).max(1);
        if max < configured {
            tracing::info!(configured, max, "server.max_connections capped at half the open-file limit");
        }
        Self { permits: Arc::new(Semaphore::new(max)), max }
    }

    /// Waits for a connection, then for a free slot for it.
    ///
    /// The connection is taken first so that a listener waiting for
    /// clients never holds a slot: with slots taken first, each idle
    /// listener would park one, and with `max_connections = 1` the gRPC
    /// listener would starve the HTTP one. Over budget, at most one
    /// accepted connection per listener waits here (unread) for a slot;
    /// the rest wait in the kernel's backlog.
    pub async fn accept(&self, listener: &TcpListener) -> Budgeted {
        let stream = accept_retrying(listener).await;
        let permit =
            self.permits.clone().acquire_owned().await.expect("the budget's semaphore is never closed");
        Budgeted { stream, _permit: permit }
    }
}

/// The next connection; an accept the OS refused (out of descriptors, say)
/// is retried after [`ACCEPT_BACKOFF`].
async fn accept_retrying(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (a large number
/// when unlimited or unknown).
fn nofile_soft_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(usize::MAX)
}

/// A connection holding its slot in the budget until it is dropped.
#[derive(Debug)]
pub struct Budgeted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Budgeted {
    /// The next bytes the client sent, left unread.
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.peek(buf).await
    }
}

impl AsyncRead for Budgeted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Budgeted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
