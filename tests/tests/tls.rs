//! TLS on the HTTP and gRPC listeners (`[server.tls]`), against the real
//! binary with certificates made at test time (a CA and leaves signed by it):
//! writes over HTTPS and over gRPC with TLS, plaintext refused on the TLS
//! ports, the certificate rotated by SIGHUP and by `POST /v1/admin/reload`
//! (the served certificate changes for new connections), a bad certificate
//! or key on reload refused and reported while the old one stays, and a
//! client that never finishes a handshake losing its connection slot.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually};

#[allow(missing_debug_implementations, clippy::all, clippy::pedantic, clippy::unwrap_used)]
mod pb {
    tonic::include_proto!("wharf.v1");
}

/// Bounds every read a test makes, so a server that never answers fails the
/// test instead of hanging it.
const READ_BOUND: Duration = Duration::from_secs(60);

/// A test CA and the server certificates it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "wharf test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        Self { ca }
    }

    /// A certificate for `localhost` with common name `cn`, signed by the CA.
    fn leaf(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &*self.ca).expect("signed leaf");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    /// A client trusting only the CA, offering `alpn`.
    fn client(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA as root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

/// The certificate and key files `[server.tls]` names.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new(leaf: &Leaf) -> Self {
        let files = Self { dir: tempfile::tempdir().expect("tempdir") };
        files.install(leaf);
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    fn install(&self, leaf: &Leaf) {
        std::fs::write(self.key(), &leaf.key_pem).expect("write key");
        std::fs::write(self.cert(), &leaf.cert_pem).expect("write cert");
    }

    /// The `[server]` line.
    fn server_line(&self) -> String {
        format!(
            "tls = {{ cert_file = {:?}, key_file = {:?} }}\n",
            self.cert().display().to_string(),
            self.key().display().to_string()
        )
    }
}

/// A TLS client connection to `port`, handshake done.
fn connect(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(READ_BOUND)).expect("read timeout");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = rustls::ClientConnection::new(config.clone(), name).expect("client connection");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// The certificate `port` serves to a new connection (ALPN `alpn`).
fn served_cert(port: u16, pki: &Pki, alpn: &[u8]) -> CertificateDer<'static> {
    let stream = connect(port, &pki.client(alpn));
    assert_eq!(stream.conn.alpn_protocol(), Some(alpn), "the negotiated ALPN");
    stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a served certificate")
        .clone()
        .into_owned()
}

/// One HTTP/1.1 request over TLS: status and JSON body.
fn https(
    w: &Wharf,
    pki: &Pki,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut stream = connect(w.port, &pki.client(b"http/1.1"));
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send request");
    read_response(&mut stream)
}

/// Reads one response with a `content-length` (every wharf JSON reply has one).
fn read_response(stream: &mut impl Read) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .expect("content-length");
            if rest.len() >= length {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
                let body = serde_json::from_str(&rest[..length]).unwrap_or(Value::String(rest.to_string()));
                return (status, body);
            }
        }
        let n = stream.read(&mut chunk).expect("read response");
        assert!(n > 0, "connection closed mid-response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects to `port` through TLS for a tonic channel.
#[derive(Clone)]
struct TlsDial {
    port: u16,
    config: Arc<rustls::ClientConfig>,
}

type DialFuture = Pin<
    Box<
        dyn Future<
                Output = std::io::Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                >,
            > + Send,
    >,
>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for TlsDial {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = DialFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let (port, config) = (self.port, self.config.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from("localhost").expect("server name");
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn grpc_write(namespace: &str, payload: &[u8]) -> pb::WriteRequest {
    pb::WriteRequest { namespace: namespace.into(), payload: payload.to_vec(), ..Default::default() }
}

/// A gRPC write over TLS (ALPN `h2`, the CA trusted).
fn grpc_over_tls(w: &Wharf, pki: &Pki, payload: &[u8]) -> Result<pb::WriteAck, String> {
    let dial = TlsDial { port: w.grpc_port, config: pki.client(b"h2") };
    runtime().block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://localhost:{}", w.grpc_port))
            .map_err(|e| e.to_string())?
            .connect_with_connector(dial)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut client = pb::wharf_client::WharfClient::new(channel);
        client.write(grpc_write("orders", payload)).await.map(|r| r.into_inner()).map_err(|s| s.to_string())
    })
}

/// A plaintext gRPC write to the gRPC port.
fn grpc_plaintext(w: &Wharf, payload: &[u8]) -> Result<pb::WriteAck, String> {
    runtime().block_on(async move {
        let mut client = pb::wharf_client::WharfClient::connect(w.grpc_url())
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        client.write(grpc_write("orders", payload)).await.map(|r| r.into_inner()).map_err(|s| s.to_string())
    })
}

fn write_body(payload: &[u8]) -> Value {
    json!({"payload": b64(payload)})
}

fn start(files: &TlsFiles, sink: &HttpSink, server_extra: &str) -> Wharf {
    let server = format!("{}{server_extra}", files.server_line());
    Wharf::start_with_server(&server, &sink.namespace("orders", 1, ""), "all")
}

/// `POST /v1/admin/reload` over HTTPS.
fn admin_reload(w: &Wharf, pki: &Pki) -> (u16, Value) {
    https(w, pki, "POST", "/v1/admin/reload", None, None)
}

#[test]
fn writes_go_over_https_and_grpc_with_tls_and_plaintext_is_refused_on_both_ports() {
    let (pki, sink) = (Pki::new(), HttpSink::start());
    let leaf = pki.leaf("wharf-one");
    let files = TlsFiles::new(&leaf);
    let w = start(&files, &sink, "");

    assert_eq!(
        served_cert(w.port, &pki, b"http/1.1"),
        leaf.der,
        "the HTTP listener serves the configured cert"
    );
    assert_eq!(served_cert(w.grpc_port, &pki, b"h2"), leaf.der, "the gRPC listener serves the same cert");
    let (status, body) =
        https(&w, &pki, "POST", "/v1/namespaces/orders/messages", None, Some(&write_body(b"over-https")));
    assert_eq!((status, &body["durable"]), (200, &json!(true)), "{body}");
    let ack = grpc_over_tls(&w, &pki, b"over-grpc-tls").expect("a gRPC write over TLS");
    assert!(ack.durable, "{ack:?}");

    // Plaintext HTTP on the HTTPS port: a typed refusal, nothing written.
    let mut plain = TcpStream::connect(("127.0.0.1", w.port)).expect("connect");
    plain.set_read_timeout(Some(READ_BOUND)).expect("read timeout");
    let body = write_body(b"plaintext").to_string();
    let request = format!(
        "POST /v1/namespaces/orders/messages HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    plain.write_all(request.as_bytes()).expect("send plaintext request");
    let (status, reply) = read_response(&mut plain);
    assert_eq!((status, &reply["error"]["code"]), (400, &json!("tls_required")), "{reply}");
    // Plaintext gRPC (h2 prior knowledge) on the TLS port gets no answer.
    let refused = grpc_plaintext(&w, b"plaintext-grpc");
    assert!(refused.is_err(), "a plaintext gRPC write was accepted: {refused:?}");

    let delivered = eventually(Duration::from_secs(30), "both TLS writes delivered", || {
        let bodies = sink.accepted_bodies();
        (bodies.len() >= 2).then_some(bodies)
    });
    let want: HashSet<String> = ["over-https".to_string(), "over-grpc-tls".to_string()].into();
    assert_eq!(delivered, want, "only the TLS writes reached the target");
    assert!(w.log().contains("tls=true"), "the start line says TLS is on:\n{}", w.log());
}

#[test]
fn a_sighup_or_an_admin_reload_serves_the_new_certificate_to_new_connections() {
    let (pki, sink) = (Pki::new(), HttpSink::start());
    let (one, two, three) = (pki.leaf("wharf-one"), pki.leaf("wharf-two"), pki.leaf("wharf-three"));
    let files = TlsFiles::new(&one);
    // Long enough that the connection opened before the rotation is not
    // closed as idle while the test waits.
    let w = start(&files, &sink, "header_read_timeout_ms = 120000\n");
    assert_eq!(served_cert(w.port, &pki, b"http/1.1"), one.der);
    // A connection made before the rotation keeps working on its own cert.
    let mut before = connect(w.port, &pki.client(b"http/1.1"));

    files.install(&two);
    w.hangup();
    eventually(Duration::from_secs(30), "the HTTP listener serving the new cert", || {
        (served_cert(w.port, &pki, b"http/1.1") == two.der).then_some(())
    });
    assert_eq!(served_cert(w.grpc_port, &pki, b"h2"), two.der, "the gRPC listener rotated too");
    assert!(w.log().contains("tls certificate reloaded"), "{}", w.log());
    let (status, body) =
        https(&w, &pki, "POST", "/v1/namespaces/orders/messages", None, Some(&write_body(b"after")));
    assert_eq!(status, 200, "the listener kept serving: {body}");
    let ack = grpc_over_tls(&w, &pki, b"after-grpc").expect("gRPC over TLS after the rotation");
    assert!(ack.durable);
    before
        .write_all(
            b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .expect("request on the old connection");
    let mut text = String::new();
    let _ = before.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 200"), "the old connection still answers: {text}");

    files.install(&three);
    let (status, report) = admin_reload(&w, &pki);
    assert_eq!((status, &report["tls_changed"]), (200, &json!(true)), "{report}");
    assert_eq!(served_cert(w.port, &pki, b"http/1.1"), three.der);
    let (status, report) = admin_reload(&w, &pki);
    assert_eq!((status, &report["tls_changed"]), (200, &json!(false)), "the same files again: {report}");
}

#[test]
fn a_bad_certificate_or_key_on_reload_keeps_the_old_one_and_is_reported() {
    let (pki, sink) = (Pki::new(), HttpSink::start());
    let (one, two) = (pki.leaf("wharf-one"), pki.leaf("wharf-two"));
    let files = TlsFiles::new(&one);
    let w = start(&files, &sink, "");
    let cert_path = files.cert().display().to_string();

    // Not a certificate.
    std::fs::write(files.cert(), "not a certificate\n").expect("break the cert");
    let (status, reply) = admin_reload(&w, &pki);
    let message = reply["error"]["message"].as_str().unwrap_or_default().to_string();
    assert_eq!((status, &reply["error"]["code"]), (400, &json!("config_invalid")), "{reply}");
    assert!(message.contains("server.tls.cert_file") && message.contains(&cert_path), "{message}");
    assert_eq!(served_cert(w.port, &pki, b"http/1.1"), one.der, "the old cert stays");

    // The same by SIGHUP: logged, and the old cert stays.
    let failures = || w.log().matches("config reload on sighup failed").count();
    let before = failures();
    w.hangup();
    eventually(Duration::from_secs(30), "the failed SIGHUP reload logged", || {
        (failures() > before).then_some(())
    });
    assert!(w.log().contains(&cert_path), "the log names the file:\n{}", w.log());
    assert_eq!(served_cert(w.port, &pki, b"http/1.1"), one.der, "the old cert stays after SIGHUP");
    assert_eq!(served_cert(w.grpc_port, &pki, b"h2"), one.der);

    // A certificate with another certificate's key.
    std::fs::write(files.cert(), &two.cert_pem).expect("new cert");
    std::fs::write(files.key(), &one.key_pem).expect("old key");
    let (status, reply) = admin_reload(&w, &pki);
    let message = reply["error"]["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(status, 400, "{reply}");
    assert!(message.contains("server.tls.key_file") && message.contains("does not belong"), "{message}");
    assert_eq!(served_cert(w.port, &pki, b"http/1.1"), one.der);

    // Fixed: the new pair is served.
    files.install(&two);
    let (status, report) = admin_reload(&w, &pki);
    assert_eq!(
        (status, &report["tls_changed"], &report["errors"]),
        (200, &json!(true), &json!([])),
        "{report}"
    );
    assert_eq!(served_cert(w.port, &pki, b"http/1.1"), two.der);
}

#[test]
fn a_bad_certificate_at_start_is_a_config_error_naming_the_key_and_file() {
    let pki = Pki::new();
    let files = TlsFiles::new(&pki.leaf("wharf-one"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wharf.toml");
    std::fs::write(files.key(), "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
        .expect("break the key");
    std::fs::write(&config, format!("[server]\nhttp = \"127.0.0.1:0\"\n{}", files.server_line()))
        .expect("config");
    for cmd in ["check-config", "serve"] {
        let out = std::process::Command::new(wharf_tests::wharf_bin())
            .args([cmd, "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run wharf");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{cmd}: {stderr}");
        assert!(stderr.contains(": server.tls.key_file: "), "{cmd}: {stderr}");
        assert!(stderr.contains(&files.key().display().to_string()), "{cmd} names the file: {stderr}");
        assert!(!stderr.contains("not base64"), "{cmd} does not echo key material: {stderr}");
    }
}

#[test]
fn a_client_that_never_finishes_a_handshake_loses_its_slot_at_the_header_timeout() {
    let (pki, sink) = (Pki::new(), HttpSink::start());
    let files = TlsFiles::new(&pki.leaf("wharf-one"));
    // Two slots for both listeners: the gRPC accept loop holds one while it
    // waits, so a silent HTTP client takes the other.
    let w = start(&files, &sink, "max_connections = 2\nheader_read_timeout_ms = 1000\n");

    // Silent before the handshake: holds the slot until the timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", w.port)).expect("connect");
    silent.set_read_timeout(Some(READ_BOUND)).expect("read timeout");
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the server did not close a silent connection: {other:?}"),
    }
    // The slot is free again: a real client gets through.
    let (status, body) =
        https(&w, &pki, "POST", "/v1/namespaces/orders/messages", None, Some(&write_body(b"next")));
    assert_eq!(status, 200, "{body}");

    // Silent after the handshake: the header timeout applies over TLS too.
    let mut idle = connect(w.port, &pki.client(b"http/1.1"));
    let mut rest = Vec::new();
    match idle.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => {}
        Err(e) => panic!("the server did not close an idle TLS connection: {e:?}"),
    }
    let (status, body) = https(&w, &pki, "GET", "/v1/status", None, None);
    assert_eq!(status, 200, "{body}");
}
