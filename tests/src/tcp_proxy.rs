//! A TCP proxy that can black-hole a link, for targets that do not speak
//! HTTP (memcached). [`crate::proxy::FaultProxy`] does the same and more for
//! HTTP.
//!
//! [`TcpProxy`] listens on `127.0.0.1:0` and relays bytes both ways between
//! each client connection and its own upstream connection. A fault set with
//! [`TcpProxy::set`] applies at once:
//!
//! - [`TcpFault::Pass`]: relay bytes unchanged.
//! - [`TcpFault::BlackHole`]: accept connections and read from both sides,
//!   but relay nothing and never close: to the client the peer is there and
//!   silent, as when a firewall drops packets. New connections are accepted
//!   (never refused) and never reach upstream.
//!
//! Leaving `BlackHole` closes every connection that lost bytes to it (its
//! byte stream is broken); the client reconnects. Dropping the proxy stops
//! accepting, shuts every socket down and joins all its threads.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does to the bytes it reads (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpFault {
    Pass,
    BlackHole,
}

/// A black-holing TCP proxy; see the module docs.
pub struct TcpProxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

struct Inner {
    upstream: SocketAddr,
    state: Mutex<State>,
    stop: AtomicBool,
    accepted: AtomicU64,
    swallowed: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct State {
    fault: TcpFault,
    next_id: u64,
    /// Every open connection: its sockets, and whether it lost bytes.
    conns: HashMap<u64, Conn>,
}

struct Conn {
    sockets: Vec<TcpStream>,
    tainted: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and relays to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("tcp proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("tcp proxy: local addr");
        let inner = Arc::new(Inner {
            upstream,
            state: Mutex::new(State { fault: TcpFault::Pass, next_id: 0, conns: HashMap::new() }),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            swallowed: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        let acceptor = std::thread::Builder::new()
            .name("tcp-proxy-accept".into())
            .spawn(move || accept_loop(&i, listener))
            .expect("tcp proxy: spawn accept thread");
        TcpProxy { inner, addr, acceptor: Some(acceptor) }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` now; leaving `BlackHole` closes the connections it
    /// took bytes from.
    pub fn set(&self, fault: TcpFault) {
        let mut st = lock(&self.inner.state);
        st.fault = fault;
        if fault == TcpFault::Pass {
            let tainted: Vec<u64> = st.conns.iter().filter(|(_, c)| c.tainted).map(|(id, _)| *id).collect();
            for id in tainted {
                close(&mut st, id);
            }
        }
    }

    /// Client connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Bytes read and dropped by `BlackHole`, both directions.
    pub fn bytes_swallowed(&self) -> u64 {
        self.inner.swallowed.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fault = lock(&self.inner.state).fault;
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.inner.upstream)
            .field("fault", &fault)
            .finish_non_exhaustive()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        {
            let mut st = lock(&self.inner.state);
            let ids: Vec<u64> = st.conns.keys().copied().collect();
            for id in ids {
                close(&mut st, id);
            }
        }
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn close(st: &mut State, id: u64) {
    if let Some(c) = st.conns.remove(&id) {
        for s in c.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: TcpListener) {
    for conn in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = conn else { continue };
        inner.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        let black_holed = lock(&inner.state).fault == TcpFault::BlackHole;
        // A black-holed link never reaches upstream; otherwise a refused
        // upstream closes the client at once.
        let upstream = match black_holed {
            true => None,
            false => match TcpStream::connect_timeout(&inner.upstream, Duration::from_secs(5)) {
                Ok(u) => Some(u),
                Err(_) => continue,
            },
        };
        let Some(id) = register(inner, &client, upstream.as_ref(), black_holed) else { continue };
        let mut handles = Vec::new();
        let spawn = |name: &str, from: TcpStream, to: Option<TcpStream>| {
            let i = inner.clone();
            std::thread::Builder::new().name(name.into()).spawn(move || pump(&i, id, from, to)).ok()
        };
        match upstream {
            Some(up) => {
                let (Ok(c2), Ok(u2)) = (client.try_clone(), up.try_clone()) else { continue };
                handles.extend(spawn("tcp-proxy-up", client, Some(up)));
                handles.extend(spawn("tcp-proxy-down", u2, Some(c2)));
            }
            None => handles.extend(spawn("tcp-proxy-hole", client, None)),
        }
        let mut threads = lock(&inner.threads);
        threads.retain(|t| !t.is_finished());
        threads.extend(handles);
    }
}

/// Tracks a connection's sockets for closing; `None` once stopping.
fn register(inner: &Inner, client: &TcpStream, up: Option<&TcpStream>, tainted: bool) -> Option<u64> {
    let mut sockets = vec![client.try_clone().ok()?];
    if let Some(u) = up {
        sockets.push(u.try_clone().ok()?);
    }
    let mut st = lock(&inner.state);
    if inner.stop.load(Ordering::SeqCst) {
        return None;
    }
    let id = st.next_id;
    st.next_id += 1;
    st.conns.insert(id, Conn { sockets, tainted });
    Some(id)
}

/// Copies `from` to `to` until either side closes; while black-holed the
/// bytes are dropped and the connection marked as broken.
fn pump(inner: &Inner, id: u64, mut from: TcpStream, mut to: Option<TcpStream>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let forward = {
            let mut st = lock(&inner.state);
            let hole = st.fault == TcpFault::BlackHole;
            match st.conns.get_mut(&id) {
                None => break,
                Some(c) if hole || c.tainted => {
                    c.tainted = true;
                    false
                }
                Some(_) => true,
            }
        };
        if !forward {
            inner.swallowed.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        if to.as_mut().is_none_or(|t| t.write_all(&buf[..n]).is_err()) {
            break;
        }
    }
    // One side closed (or the proxy closed it): close the whole connection,
    // unless it is black-holed, which holds it open until the fault changes.
    let mut st = lock(&inner.state);
    let held = st.fault == TcpFault::BlackHole && st.conns.get(&id).is_some_and(|c| c.tainted);
    if !held {
        close(&mut st, id);
    }
}
