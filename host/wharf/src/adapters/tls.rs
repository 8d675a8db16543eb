//! TLS on the HTTP and gRPC listeners (`[server.tls]`), with rustls.
//!
//! One certificate and key serve both listeners; each has its own rustls
//! config only for ALPN (`http/1.1` on HTTP, `h2` on gRPC). Both configs ask
//! one [`LiveCert`] for the certificate at every handshake, so a reload
//! (SIGHUP, `wharf reload`) that swaps it reaches every new connection
//! without closing the listeners; open connections keep the certificate
//! they were made with.
//!
//! Invariants:
//! - a reload that cannot read the pair (missing file, bad PEM, a key that
//!   does not belong to the certificate) changes nothing: the old pair
//!   stays in force and the reload reports the error;
//! - a connection holds its slot in the connection budget from accept on,
//!   and the handshake runs within `server.header_read_timeout_ms`, so a
//!   client that never completes one frees its slot by itself;
//! - a plaintext HTTP request on the HTTPS port gets a JSON
//!   `400 tls_required` and the connection is closed; it reaches no route.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio_rustls::server::TlsStream;

use crate::adapters::budget::Budgeted;
use crate::config::{ConfigError, Tls as TlsFiles};
use crate::services::control::ReloadReport;

/// The first byte of a TLS record carrying a handshake (ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The certificate in force, replaced whole on reload.
#[derive(Debug)]
struct LiveCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl LiveCert {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs `new`; true if its chain differs from the one in force.
    fn replace(&self, new: Arc<CertifiedKey>) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = current.cert != new.cert;
        *current = new;
        changed
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The listeners' TLS: the live certificate and its files.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    cert: Arc<LiveCert>,
    handshake_timeout: Duration,
}

impl Tls {
    /// Reads the pair named in `[server.tls]`. A failure is a config error
    /// of `config_file` naming the key and the file.
    pub fn new(
        config_file: &Path,
        files: &TlsFiles,
        handshake_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let identity = files.identity().map_err(|(key, problem)| ConfigError {
            file: config_file.to_path_buf(),
            key: format!("server.tls.{key}"),
            problem,
            line: None,
        })?;
        let cert = Arc::new(LiveCert { current: RwLock::new(identity) });
        Ok(Self { files: files.clone(), cert, handshake_timeout })
    }

    /// Reads the files again. `Ok(true)` when a different certificate is now
    /// served; on an error the old pair stays.
    pub fn reload(&self) -> Result<bool, String> {
        let identity =
            self.files.identity().map_err(|(key, problem)| format!("server.tls.{key}: {problem}"))?;
        Ok(self.cert.replace(identity))
    }

    /// Reloads after a config reload and records the outcome in `report`:
    /// a failure joins its errors ("the old certificate stays").
    pub fn reload_into(tls: Option<&Self>, report: &mut ReloadReport) {
        let Some(tls) = tls else { return };
        match tls.reload() {
            Ok(true) => {
                tracing::info!(cert_file = %tls.files.cert_file.display(), "tls certificate reloaded");
                report.tls_changed = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "tls certificate not reloaded; the old one stays");
                report.errors.push(format!("{e} (the old certificate stays)"));
            }
        }
    }

    fn acceptor(&self, alpn: &[u8], plaintext_reply: Option<Arc<[u8]>>) -> Acceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.cert.clone());
        config.alpn_protocols = vec![alpn.to_vec()];
        Acceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            timeout: self.handshake_timeout,
            plaintext_reply,
        }
    }

    /// The HTTP listener's acceptor (ALPN `http/1.1`).
    pub fn http(&self) -> Acceptor {
        self.acceptor(b"http/1.1", Some(plaintext_http_reply()))
    }

    /// The gRPC listener's acceptor (ALPN `h2`).
    pub fn grpc(&self) -> Acceptor {
        self.acceptor(b"h2", None)
    }
}

/// The whole reply to a plaintext HTTP request on the HTTPS port: the
/// domain error, as the HTTP edge maps it.
fn plaintext_http_reply() -> Arc<[u8]> {
    let error = crate::error::Error::new(
        crate::error::ErrorKind::Invalid,
        "tls_required",
        "this port serves HTTPS: connect with https://",
    );
    let status = crate::adapters::error::http_status(error.kind);
    let body = error.body().to_string();
    let reason = status.canonical_reason().unwrap_or("Bad Request");
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\nconnection: close",
        status.as_u16()
    );
    format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes().into()
}

/// Makes TLS connections out of accepted ones, for one listener.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    timeout: Duration,
    /// Sent to a client whose first byte is not a TLS handshake's.
    plaintext_reply: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Acceptor {
    /// The handshake, within the timeout; `None` (the connection and its
    /// budget slot dropped) when it fails, times out or is plaintext.
    pub async fn accept(&self, conn: Budgeted) -> Option<Conn> {
        match tokio::time::timeout(self.timeout, self.handshake(conn)).await {
            Ok(Ok(stream)) => Some(Conn::Tls(Box::new(stream))),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "tls handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(timeout = ?self.timeout, "tls handshake timed out");
                None
            }
        }
    }

    async fn handshake(&self, mut conn: Budgeted) -> io::Result<TlsStream<Budgeted>> {
        if let Some(reply) = &self.plaintext_reply {
            let mut first = [0u8; 1];
            let n = conn.peek(&mut first).await?;
            if n == 1 && first[0] != TLS_HANDSHAKE_RECORD {
                // The client is told why. Its request is read and
                // dropped until it closes (within the timeout), so that
                // unread bytes do not reset the connection before it read
                // the reply.
                conn.write_all(reply).await?;
                conn.shutdown().await?;
                let mut sink = [0u8; 4096];
                while conn.read(&mut sink).await? > 0 {}
                return Err(io::Error::new(io::ErrorKind::InvalidData, "plaintext HTTP on the HTTPS port"));
            }
        }
        self.inner.accept(conn).await
    }
}

/// An accepted connection, TLS or not.
#[derive(Debug)]
pub enum Conn {
    Plain(Budgeted),
    Tls(Box<TlsStream<Budgeted>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Conn::Tls(c) => Pin::new(c.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_write(cx, buf),
            Conn::Tls(c) => Pin::new(c.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_flush(cx),
            Conn::Tls(c) => Pin::new(c.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Conn::Tls(c) => Pin::new(c.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Conn::Tls(c) => Pin::new(c.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(c) => c.is_write_vectored(),
            Conn::Tls(c) => c.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(c) => c.connect_info(),
            Conn::Tls(c) => c.get_ref().0.connect_info(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_reply_has_its_stated_length() {
        let reply = plaintext_http_reply();
        let text = std::str::from_utf8(&reply).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "tls_required");
    }
}
