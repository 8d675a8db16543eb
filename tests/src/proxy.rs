//! A fault-injecting HTTP/1.1 proxy for replication failure tests.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` and sits between an HTTP client (a
//! primary's replication plugin) and an upstream HTTP server (a replica). It
//! parses just enough HTTP/1.1 to frame messages: requests by `Content-Length`
//! or chunked framing, responses by `Content-Length`, chunked framing, or
//! until close. Each client connection gets its own thread and its own
//! upstream connection (reconnected when upstream closed it or
//! [`FaultProxy::set_upstream`] moved it). Responses are read in full before
//! they are relayed, so whatever a fault did upstream has happened by the time
//! the client hears back.
//!
//! A fault set with [`FaultProxy::set`] applies from the next request on:
//!
//! - [`Fault::Pass`]: forward requests and relay responses unchanged.
//! - [`Fault::BlackHole`]: read each request, never forward or answer it; the
//!   connection is held open until the fault changes, then closed.
//! - [`Fault::Drop`]: read each request, forward nothing, close the client
//!   connection.
//! - [`Fault::Delay`]: forward each request after the delay.
//! - [`Fault::CorruptBody`]: flip (XOR 0xFF) the body byte at `offset`
//!   (clamped into the body; an empty body is left as is) of the next `times`
//!   requests whose path starts with `path_prefix`, then forward them. Then
//!   back to `Pass`.
//! - [`Fault::CutRequest`]: send only the first `bytes` bytes of the next
//!   `times` requests upstream (never the whole request), then close both
//!   sides. Then back to `Pass`.
//! - [`Fault::Duplicate`]: forward each matching request, then send it once
//!   more on the same upstream connection (that response is discarded), and
//!   only then relay the first response. For a stale duplicate (an older
//!   request replayed later), use [`FaultProxy::last_request`] and
//!   [`replay_raw`].
//! - [`Fault::Reorder`]: hold the next matching request (no answer yet),
//!   forward the one after it first, and once its response came back forward
//!   the held one and relay its response to its own client. One pair, then
//!   back to `Pass`; changing the fault releases a held request.
//! - [`Fault::LoseResponse`]: forward the next `times` matching requests, read
//!   and drop upstream's responses, close the client connection. Then `Pass`.
//! - [`Fault::Status`]: answer the next `times` requests that match a
//!   [`Route`] (method, path prefix, query) with HTTP status `code` and an
//!   S3-style XML error body, forwarding nothing (upstream never sees them);
//!   the connection stays open. Then back to `Pass`. [`FaultProxy::injected`]
//!   counts the answers sent.
//!
//! Counters: [`FaultProxy::requests_seen`] counts complete requests read from
//! clients; [`FaultProxy::requests_forwarded`] counts complete requests
//! written upstream (a `Duplicate` replay counts too, a cut request does not).
//! Dropping the proxy stops accepting, shuts every socket down and joins all
//! its threads.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to the requests it reads (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Pass,
    BlackHole,
    Drop,
    Delay(Duration),
    CorruptBody { path_prefix: String, offset: usize, times: u32 },
    CutRequest { bytes: usize, times: u32 },
    Duplicate { path_prefix: String },
    Reorder { path_prefix: String },
    LoseResponse { path_prefix: String, times: u32 },
    Status { code: u16, route: Route, times: u32 },
}

/// An HTTP method a [`Route`] can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
    Head,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
        }
    }
}

/// What a request's query string must look like for a [`Route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Any query, or none.
    Any,
    /// No query string at all (an S3 object PUT, not its `?tagging`).
    Absent,
    /// A query with this parameter name (`tagging` in `?tagging=`).
    Has(String),
}

/// Which requests a [`Fault::Status`] answers: the method (any when
/// `None`), a prefix of the path (without the query), and the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Option<Method>,
    pub path_prefix: String,
    pub query: Query,
}

impl Route {
    /// Whether the request `method target` (target = path and query) matches.
    fn matches(&self, method: &str, target: &str) -> bool {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let query_ok = match (&self.query, query) {
            (Query::Any, _) => true,
            (Query::Absent, q) => q.is_none(),
            (Query::Has(name), Some(q)) => {
                q.split('&').any(|pair| pair.split('=').next() == Some(name.as_str()))
            }
            (Query::Has(_), None) => false,
        };
        self.method.is_none_or(|m| m.as_str() == method) && path.starts_with(&self.path_prefix) && query_ok
    }
}

/// A fault-injecting proxy; see the module docs.
pub struct FaultProxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

struct Inner {
    state: Mutex<State>,
    /// Notified on every state change (fault, counters) and on stop.
    changed: Condvar,
    stop: AtomicBool,
    /// Every open socket (client and upstream), shut down on drop.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct State {
    fault: Fault,
    /// Bumped by every `set`: ends black-holed connections.
    generation: u64,
    /// `Reorder`: dropping this sender releases the held request.
    held: Option<Sender<()>>,
    upstream: SocketAddr,
    seen: u64,
    forwarded: u64,
    /// Answers sent by `Fault::Status`.
    injected: u64,
    /// Path -> (sequence number, raw bytes) of the last request seen on it.
    last: HashMap<String, (u64, Vec<u8>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fault proxy: local addr");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                fault: Fault::Pass,
                generation: 0,
                held: None,
                upstream,
                seen: 0,
                forwarded: 0,
                injected: 0,
                last: HashMap::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(&i, listener))
            .expect("fault proxy: spawn accept thread");
        FaultProxy { inner, addr, acceptor: Some(acceptor) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the upstream; connections move to it from their next request.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        lock(&self.inner.state).upstream = upstream;
    }

    /// Applies `fault` from the next request on. Black-holed connections are
    /// closed and a request held by `Reorder` is released.
    pub fn set(&self, fault: Fault) {
        let mut st = lock(&self.inner.state);
        st.fault = fault;
        st.generation += 1;
        st.held = None;
        self.inner.changed.notify_all();
    }

    /// Complete HTTP requests read from clients, forwarded or not.
    pub fn requests_seen(&self) -> u64 {
        lock(&self.inner.state).seen
    }

    /// Complete HTTP requests written upstream (including duplicates).
    pub fn requests_forwarded(&self) -> u64 {
        lock(&self.inner.state).forwarded
    }

    /// Answers sent by [`Fault::Status`] so far.
    pub fn injected(&self) -> u64 {
        lock(&self.inner.state).injected
    }

    /// Blocks until `n` requests were seen; panics after `timeout`.
    pub fn wait_requests(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.state);
        while st.seen < n {
            let now = Instant::now();
            if now >= deadline {
                let seen = st.seen;
                drop(st);
                panic!("fault proxy: waited {timeout:?} for {n} requests, saw {seen}");
            }
            st =
                self.inner.changed.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The number ([`FaultProxy::requests_seen`] at that time) of the last
    /// request seen on exactly `path`.
    pub fn last_seen_on(&self, path: &str) -> Option<u64> {
        lock(&self.inner.state).last.get(path).map(|(seq, _)| *seq)
    }

    /// The raw bytes of the last request seen whose path starts with `path_prefix`.
    pub fn last_request(&self, path_prefix: &str) -> Option<Vec<u8>> {
        let st = lock(&self.inner.state);
        let matching = st.last.iter().filter(|(path, _)| path.starts_with(path_prefix));
        matching.max_by_key(|(_, (seq, _))| *seq).map(|(_, (_, raw))| raw.clone())
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.inner.state);
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &st.upstream)
            .field("fault", &st.fault)
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        {
            let mut st = lock(&self.inner.state);
            st.held = None;
            st.generation += 1;
            self.inner.changed.notify_all();
        }
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, s) in lock(&self.inner.sockets).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Sends `raw_request` to `upstream` on a new connection and returns the raw
/// response (status line, headers, body).
pub fn replay_raw(upstream: SocketAddr, raw_request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(upstream).expect("replay_raw: connect upstream");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("replay_raw: set read timeout");
    stream.write_all(raw_request).expect("replay_raw: write request");
    let head = raw_request.starts_with(b"HEAD ");
    let resp = read_message(&mut BufReader::new(stream), Some(head)).expect("replay_raw: read response");
    resp.expect("replay_raw: upstream closed without a response").raw
}

impl Inner {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Tracks `s` for shutdown on drop; `None` once the proxy is stopping.
    fn register(&self, s: &TcpStream) -> Option<u64> {
        let clone = s.try_clone().ok()?;
        let mut sockets = lock(&self.sockets);
        if self.stopping() {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        sockets.insert(id, clone);
        Some(id)
    }

    fn close(&self, id: u64) {
        if let Some(s) = lock(&self.sockets).remove(&id) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Waits while `cond` holds and the proxy is not stopping.
    fn wait_while(&self, mut cond: impl FnMut(&State) -> bool, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.state);
        while cond(&st) && !self.stopping() {
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        self.changed.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0
                    }
                    _ => return,
                },
            };
        }
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: TcpListener) {
    for conn in listener.incoming() {
        if inner.stopping() {
            break;
        }
        let Ok(stream) = conn else { continue };
        let _ = stream.set_nodelay(true);
        let i = inner.clone();
        let spawned =
            std::thread::Builder::new().name("fault-proxy-conn".into()).spawn(move || serve(&i, stream));
        if let Ok(handle) = spawned {
            let mut threads = lock(&inner.threads);
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
        }
    }
}

/// One parsed HTTP message, kept as the raw bytes that were read.
struct Message {
    raw: Vec<u8>,
    head_len: usize,
    /// The request target (path and query); empty for a response.
    path: String,
    /// The request method; empty for a response.
    method: String,
    status: u16,
    /// The sender closes the connection after this message.
    close: bool,
}

#[derive(Default)]
struct Plan {
    delay: Option<Duration>,
    corrupt: Option<usize>,
    duplicate: bool,
    lose: bool,
    /// `Reorder`: dropped once this request's response came back.
    release: Option<Sender<()>>,
}

enum Action {
    Forward(Plan),
    BlackHole(u64),
    Close,
    Cut(usize),
    Hold(Receiver<()>),
    Answer(u16),
}

/// Takes one use of `times`, switching `fault` to `Pass` after the last.
fn take_one(times: &mut u32, next: &mut Option<Fault>) {
    *times -= 1;
    if *times == 0 {
        *next = Some(Fault::Pass);
    }
}

fn decide(st: &mut State, method: &str, path: &str) -> Action {
    let State { fault, held, generation, .. } = st;
    let mut plan = Plan::default();
    let mut next = None;
    let action = match fault {
        Fault::BlackHole => Action::BlackHole(*generation),
        Fault::Drop => Action::Close,
        Fault::Delay(d) => {
            plan.delay = Some(*d);
            Action::Forward(plan)
        }
        Fault::CorruptBody { path_prefix, offset, times }
            if *times > 0 && path.starts_with(&**path_prefix) =>
        {
            take_one(times, &mut next);
            plan.corrupt = Some(*offset);
            Action::Forward(plan)
        }
        Fault::CutRequest { bytes, times } if *times > 0 => {
            take_one(times, &mut next);
            Action::Cut(*bytes)
        }
        Fault::Duplicate { path_prefix } if path.starts_with(&**path_prefix) => {
            plan.duplicate = true;
            Action::Forward(plan)
        }
        Fault::Reorder { path_prefix } if path.starts_with(&**path_prefix) => match held.take() {
            None => {
                let (tx, rx) = mpsc::channel();
                *held = Some(tx);
                Action::Hold(rx)
            }
            Some(tx) => {
                plan.release = Some(tx);
                next = Some(Fault::Pass);
                Action::Forward(plan)
            }
        },
        Fault::LoseResponse { path_prefix, times } if *times > 0 && path.starts_with(&**path_prefix) => {
            take_one(times, &mut next);
            plan.lose = true;
            Action::Forward(plan)
        }
        Fault::Status { code, route, times } if *times > 0 && route.matches(method, path) => {
            take_one(times, &mut next);
            Action::Answer(*code)
        }
        _ => Action::Forward(plan),
    };
    if let Some(f) = next {
        *fault = f;
    }
    action
}

/// Serves one client connection until it closes, a fault closes it, or the
/// proxy stops.
fn serve(inner: &Inner, client: TcpStream) {
    let Some(id) = inner.register(&client) else { return };
    let mut up = Upstream { inner, conn: None };
    let mut reader = BufReader::new(&client);
    while let Ok(Some(req)) = read_message(&mut reader, None) {
        let action = {
            let mut st = lock(&inner.state);
            st.seen += 1;
            let seq = st.seen;
            st.last.insert(req.path.clone(), (seq, req.raw.clone()));
            inner.changed.notify_all();
            decide(&mut st, &req.method, &req.path)
        };
        let keep_going = match action {
            Action::Forward(plan) => forward(inner, &mut up, &client, req, plan),
            Action::Close => false,
            Action::BlackHole(generation) => {
                inner.wait_while(|st| st.generation == generation, None);
                false
            }
            Action::Cut(bytes) => {
                let n = bytes.min(req.raw.len().saturating_sub(1));
                let _ = up.connect().and_then(|c| c.stream.write_all(&req.raw[..n]));
                false
            }
            Action::Answer(code) => answer(inner, &client, code) && !req.close,
            Action::Hold(released) => {
                let _ = released.recv();
                !inner.stopping() && forward(inner, &mut up, &client, req, Plan::default())
            }
        };
        if !keep_going || inner.stopping() {
            break;
        }
    }
    drop(up);
    inner.close(id);
}

/// Answers a request with `code` and an S3-style XML error, as a server
/// that failed would; returns whether the client connection is still usable.
fn answer(inner: &Inner, mut client: &TcpStream, code: u16) -> bool {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected by the fault proxy: {code}</Message></Error>"
    );
    let raw = format!(
        "HTTP/1.1 {code} Injected\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let sent = client.write_all(raw.as_bytes()).is_ok();
    lock(&inner.state).injected += 1;
    inner.changed.notify_all();
    sent
}

/// Forwards `req` as `plan` says; returns whether the client connection stays open.
fn forward(
    inner: &Inner,
    up: &mut Upstream<'_>,
    mut client: &TcpStream,
    mut req: Message,
    plan: Plan,
) -> bool {
    if let Some(delay) = plan.delay {
        inner.wait_while(|_| true, Some(delay));
        if inner.stopping() {
            return false;
        }
    }
    let body_len = req.raw.len() - req.head_len;
    if let Some(offset) = plan.corrupt.filter(|_| body_len > 0) {
        req.raw[req.head_len + offset.min(body_len - 1)] ^= 0xFF;
    }
    let head = req.raw.starts_with(b"HEAD ");
    let Ok(resp) = up.exchange(&req.raw, head) else { return false };
    drop(plan.release);
    if plan.duplicate {
        let _ = up.exchange(&req.raw, head);
    }
    if plan.lose {
        return false;
    }
    client.write_all(&resp.raw).is_ok() && !resp.close && !req.close
}

/// A client connection's upstream connection, opened on demand.
struct Upstream<'a> {
    inner: &'a Inner,
    conn: Option<Conn>,
}

struct Conn {
    id: u64,
    addr: SocketAddr,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Upstream<'_> {
    /// The connection to the current upstream; a new one if the upstream
    /// moved or closed the old one while it was idle.
    fn connect(&mut self) -> io::Result<&mut Conn> {
        let addr = lock(&self.inner.state).upstream;
        if self.conn.as_ref().is_some_and(|c| c.addr != addr || !idle_open(&c.stream)) {
            self.close();
        }
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            let _ = stream.set_nodelay(true);
            let reader = BufReader::new(stream.try_clone()?);
            let id = self.inner.register(&stream).ok_or_else(|| io::Error::other("proxy stopped"))?;
            self.conn = Some(Conn { id, addr, stream, reader });
        }
        self.conn.as_mut().ok_or_else(|| io::Error::other("no upstream connection"))
    }

    /// Writes one request and reads its (final) response.
    fn exchange(&mut self, raw: &[u8], head: bool) -> io::Result<Message> {
        let result = self.try_exchange(raw, head);
        if result.as_ref().map_or(true, |resp| resp.close) {
            self.close();
        }
        result
    }

    fn try_exchange(&mut self, raw: &[u8], head: bool) -> io::Result<Message> {
        let inner = self.inner;
        let conn = self.connect()?;
        conn.stream.write_all(raw)?;
        lock(&inner.state).forwarded += 1;
        inner.changed.notify_all();
        loop {
            match read_message(&mut conn.reader, Some(head))? {
                // Informational (100 Continue, ...): skipped, the final one follows.
                Some(m) if (100..200).contains(&m.status) && m.status != 101 => continue,
                Some(m) => return Ok(m),
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }

    fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            self.inner.close(c.id);
        }
    }
}

impl Drop for Upstream<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether an idle connection is still open (nothing to read, no EOF).
fn idle_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let peeked = s.peek(&mut [0u8; 1]);
    s.set_nonblocking(false).is_ok() && matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Appends exactly `n` bytes from `r` to `raw`.
fn read_exact_into(r: &mut impl BufRead, raw: &mut Vec<u8>, n: usize) -> io::Result<()> {
    if Read::take(&mut *r, n as u64).read_to_end(raw)? < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Appends one line (up to and including `\n`) from `r` to `raw`; returns it.
fn read_line(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<String> {
    let start = raw.len();
    if r.read_until(b'\n', raw)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&raw[start..]).trim().to_string())
}

/// Appends a chunked body (chunks, last chunk, trailers) from `r` to `raw`.
fn read_chunked(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let line = read_line(r, raw)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            while !read_line(r, raw)?.is_empty() {}
            return Ok(());
        }
        read_exact_into(r, raw, size + 2)?;
    }
}

/// Reads one message: a request when `response_to_head` is `None`, else a
/// response (to a HEAD request if `Some(true)`). `Ok(None)`: closed before
/// its first byte.
fn read_message(r: &mut impl BufRead, response_to_head: Option<bool>) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        if raw.len() > 1 << 20 {
            return Err(invalid("header too long"));
        }
        let start = raw.len();
        if r.read_until(b'\n', &mut raw)? == 0 {
            return if raw.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        let line = String::from_utf8_lossy(&raw[start..]).trim().to_string();
        match (line.is_empty(), lines.is_empty()) {
            (true, true) => raw.clear(), // stray CRLF between messages
            (true, false) => break,
            (false, _) => lines.push(line),
        }
    }
    let first: Vec<&str> = lines[0].split_whitespace().collect();
    let response = response_to_head.is_some();
    let version = if response { first.first() } else { first.get(2) }.copied().unwrap_or_default();
    let status = if response { first.get(1).and_then(|s| s.parse().ok()).unwrap_or(0) } else { 0 };
    let path = if response { String::new() } else { first.get(1).copied().unwrap_or_default().to_string() };
    let method =
        if response { String::new() } else { first.first().copied().unwrap_or_default().to_string() };
    let (mut length, mut chunked, mut close) = (None, false, version == "HTTP/1.0");
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse().map_err(|_| invalid("bad content-length"))?),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" if value.contains("close") => close = true,
            "connection" if value.contains("keep-alive") => close = false,
            _ => {}
        }
    }
    let head_len = raw.len();
    let no_body =
        response_to_head.is_some_and(|head| head || status / 100 == 1 || status == 204 || status == 304);
    if no_body {
    } else if chunked {
        read_chunked(r, &mut raw)?;
    } else if let Some(n) = length {
        read_exact_into(r, &mut raw, n)?;
    } else if response {
        r.read_to_end(&mut raw)?;
        close = true;
    }
    Ok(Some(Message { raw, head_len, path, method, status, close }))
}

#[cfg(test)]
mod tests {
    use super::{Method, Query, Route};

    #[test]
    fn a_route_matches_method_path_and_query() {
        let object = Route { method: Some(Method::Put), path_prefix: "/b/e-1/".into(), query: Query::Absent };
        let tagging = Route {
            method: Some(Method::Put),
            path_prefix: "/b/e-1/".into(),
            query: Query::Has("tagging".into()),
        };
        assert!(object.matches("PUT", "/b/e-1/3.json"));
        assert!(!object.matches("PUT", "/b/e-1/3.json?tagging="));
        assert!(!object.matches("GET", "/b/e-1/3.json"));
        assert!(!object.matches("PUT", "/b/e-2/3.json"));
        assert!(tagging.matches("PUT", "/b/e-1/3.json?tagging="));
        assert!(tagging.matches("PUT", "/b/e-1/3.json?x=1&tagging"));
        assert!(!tagging.matches("PUT", "/b/e-1/3.json?taggings=1"));
        assert!(!tagging.matches("PUT", "/b/e-1/3.json"));
        let any = Route { method: None, path_prefix: "/".into(), query: Query::Any };
        assert!(any.matches("DELETE", "/x?y") && any.matches("GET", "/"));
    }
}
