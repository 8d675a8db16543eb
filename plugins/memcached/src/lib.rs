//! Wharf target plugin: store each message in Memcached with `set`.
//!
//! Config (`[namespaces.<ns>.target] config = { ... }`):
//! - `servers` (required): comma-separated `host:port` list. A message goes
//!   to the server picked by a stable hash (FNV-1a) of its full key.
//! - `key_prefix` (default `""`): put in front of every message key.
//! - `ttl_seconds` (default `0`, no expiry). Values over 30 days are sent as
//!   an absolute Unix time, as Memcached requires.
//! - `timeout_ms` (default `5000`): connect/read/write timeout, where the
//!   platform supports socket timeouts.
//!
//! Each batch is pipelined per server: all `set`s are written, then all
//! replies read. Connections stay open across batches and are dropped after
//! any error (the next batch reconnects).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use wharf_sdk::{Batch, Config, Error, Message, Outcome, Target, log, redact_url};

/// Memcached's limit on key length, in bytes.
pub const MAX_KEY_LEN: usize = 250;
/// Relative expiry times above this are taken by Memcached as Unix times.
const MAX_RELATIVE_TTL: u64 = 60 * 60 * 24 * 30;
/// Longest reply line we accept.
const MAX_LINE: usize = 1024;

#[derive(Debug)]
pub struct Memcached {
    servers: Vec<Server>,
    key_prefix: String,
    ttl_seconds: u64,
    timeout: Duration,
}

#[derive(Debug)]
struct Server {
    /// `host:port` as configured.
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl Target for Memcached {
    fn init(config: Config) -> Result<Self, Error> {
        let servers_raw = config.require("servers")?;
        let mut servers = Vec::new();
        for part in servers_raw.split(',') {
            let addr = part.trim();
            validate_server(addr).map_err(|why| {
                let addr = redact_url(addr);
                Error::reject(format!("config key `servers`: {addr:?} is not a host:port ({why})"))
            })?;
            servers.push(Server { addr: addr.to_string(), conn: None });
        }
        let key_prefix = config.get_or("key_prefix", "").to_string();
        if key_prefix.len() >= MAX_KEY_LEN {
            return Err(Error::reject(format!(
                "config key `key_prefix` is {} bytes; Memcached keys are at most {MAX_KEY_LEN}",
                key_prefix.len()
            )));
        }
        if let Some(pos) = key_prefix.bytes().position(bad_key_byte) {
            return Err(Error::reject(format!(
                "config key `key_prefix` has whitespace or a control character at byte {pos}"
            )));
        }
        let ttl_seconds: u64 = config.parse_or("ttl_seconds", 0)?;
        if ttl_seconds > u64::from(u32::MAX) {
            return Err(Error::reject(format!("config key `ttl_seconds`: {ttl_seconds} is too large")));
        }
        let timeout_ms: u64 = config.parse_or("timeout_ms", 5000)?;
        if timeout_ms == 0 {
            return Err(Error::reject("config key `timeout_ms` must be greater than 0"));
        }
        log::info(format!(
            "memcached target: servers={:?} key_prefix={key_prefix:?} ttl_seconds={ttl_seconds}",
            servers.iter().map(|s| s.addr.as_str()).collect::<Vec<_>>()
        ));
        Ok(Memcached { servers, key_prefix, ttl_seconds, timeout: Duration::from_millis(timeout_ms) })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        Outcome::into_result(self.deliver(&Batch::new(vec![msg.clone()])).pop())
    }

    fn deliver(&mut self, batch: &Batch) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.messages.len()];
        // Per server: (message index, full key) in batch order.
        let mut per_server: Vec<Vec<(usize, String)>> = vec![Vec::new(); self.servers.len()];
        for (i, msg) in batch.messages.iter().enumerate() {
            match self.full_key(msg) {
                Ok(key) => per_server[server_for(&key, self.servers.len())].push((i, key)),
                Err(err) => outcomes[i] = Some(err.into()),
            }
        }
        let exptime = self.exptime();
        for (server_idx, items) in per_server.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let timeout = self.timeout;
            let server = &mut self.servers[server_idx];
            let results = server.set_many(&items, &batch.messages, exptime, timeout);
            for ((i, _), outcome) in items.iter().zip(results) {
                outcomes[*i] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retry("internal error: no outcome")))
            .collect()
    }
}

wharf_sdk::export_target!(Memcached);

impl Memcached {
    /// The Memcached key for a message, or a reject saying why it has none.
    fn full_key(&self, msg: &Message) -> Result<String, Error> {
        let Some(key) = msg.key.as_deref() else {
            return Err(Error::reject("message has no key; memcached needs one"));
        };
        if key.is_empty() {
            return Err(Error::reject("message key is empty; memcached needs a non-empty key"));
        }
        let full = format!("{}{key}", self.key_prefix);
        validate_key(&full)?;
        Ok(full)
    }

    fn exptime(&self) -> u64 {
        if self.ttl_seconds > MAX_RELATIVE_TTL {
            wharf_sdk::now_ms() / 1000 + self.ttl_seconds
        } else {
            self.ttl_seconds
        }
    }
}

/// Check a full Memcached key (prefix included).
pub fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::reject("memcached key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::reject(format!(
            "memcached key is {} bytes (key_prefix included); the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if let Some(pos) = key.bytes().position(bad_key_byte) {
        return Err(Error::reject(format!(
            "memcached key {key:?} has whitespace or a control character at byte {pos}"
        )));
    }
    Ok(())
}

fn bad_key_byte(b: u8) -> bool {
    b <= b' ' || b == 0x7f
}

fn validate_server(addr: &str) -> Result<(), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("no port")?;
    if host.is_empty() {
        return Err("no host");
    }
    if host.contains(|c: char| c.is_whitespace() || c == ',') {
        return Err("whitespace in host");
    }
    if host.contains('@') {
        return Err("user info is not supported");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be 1-65535"),
        Ok(_) => Ok(()),
    }
}

/// FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
fn server_for(key: &str, servers: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(hash % servers as u64).unwrap_or(0)
}

/// What one reply line means for its message.
enum Reply {
    Stored,
    /// Permanent for this message; the connection stays in sync.
    Reject(String),
    /// Transient; the connection stays in sync.
    Retry(String),
    /// The stream may be out of sync: reject this one, retry the rest.
    Desync(String),
}

fn classify(line: &str) -> Reply {
    match line {
        "STORED" => Reply::Stored,
        "NOT_STORED" => Reply::Retry("memcached replied NOT_STORED".to_string()),
        l if l.starts_with("SERVER_ERROR") => {
            let lower = l.to_ascii_lowercase();
            if lower.contains("too large") {
                Reply::Reject(format!("memcached refused the value: {l}"))
            } else {
                Reply::Retry(format!("memcached: {l}"))
            }
        }
        l if l.starts_with("CLIENT_ERROR") || l == "ERROR" => {
            Reply::Desync(format!("memcached rejected the set: {l}"))
        }
        other => Reply::Desync(format!("unexpected reply from memcached: {other:?}")),
    }
}

impl Server {
    fn connect(&mut self, timeout: Duration) -> io::Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let stream = connect(&self.addr, timeout)?;
            self.conn = Some(BufReader::new(stream));
        }
        self.conn.as_mut().ok_or_else(|| io::Error::other("no connection"))
    }

    /// Pipeline one `set` per item and read the replies in order.
    fn set_many(
        &mut self,
        items: &[(usize, String)],
        messages: &[Message],
        exptime: u64,
        timeout: Duration,
    ) -> Vec<Outcome> {
        let addr = self.addr.clone();
        let mut outcomes = Vec::with_capacity(items.len());
        let result = (|| -> io::Result<()> {
            let conn = self.connect(timeout).map_err(|e| annotate(e, "connecting to", &addr))?;
            let mut buf = Vec::new();
            for (i, key) in items {
                let payload = &messages[*i].payload;
                write!(buf, "set {key} 0 {exptime} {}\r\n", payload.len())?;
                buf.extend_from_slice(payload);
                buf.extend_from_slice(b"\r\n");
            }
            conn.get_mut().write_all(&buf).map_err(|e| annotate(e, "writing to", &addr))?;
            conn.get_mut().flush()?;
            let mut line = Vec::new();
            while outcomes.len() < items.len() {
                line.clear();
                read_line(conn, &mut line).map_err(|e| annotate(e, "reading from", &addr))?;
                let text = String::from_utf8_lossy(&line);
                match classify(text.trim_end_matches(['\r', '\n'])) {
                    Reply::Stored => outcomes.push(Outcome::Delivered),
                    Reply::Reject(reason) => outcomes.push(Outcome::reject(reason)),
                    Reply::Retry(reason) => outcomes.push(Outcome::retry(reason)),
                    Reply::Desync(reason) => {
                        outcomes.push(Outcome::reject(reason));
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("connection to {addr} dropped after a protocol error"),
                        ));
                    }
                }
            }
            Ok(())
        })();
        if let Err(err) = result {
            // Whatever state the connection is in, start afresh next time.
            self.conn = None;
            log::warn(format!("memcached {addr}: {err}"));
            let reason = Error::from(err).reason().to_string();
            outcomes.resize(items.len(), Outcome::retry(reason));
        }
        outcomes
    }
}

fn annotate(err: io::Error, what: &str, addr: &str) -> io::Error {
    // A socket read/write timeout surfaces as WouldBlock on some platforms.
    if err.kind() == io::ErrorKind::WouldBlock {
        return io::Error::new(io::ErrorKind::TimedOut, format!("{what} memcached at {addr}: timed out"));
    }
    io::Error::new(err.kind(), format!("{what} memcached at {addr}: {err}"))
}

/// Read one `\n`-terminated line, refusing overlong ones.
fn read_line(conn: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> io::Result<()> {
    let n = conn.by_ref().take(MAX_LINE as u64).read_until(b'\n', line)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by server"));
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "reply line too long or cut off"));
    }
    Ok(())
}

fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolved to no address"));
    for sa in addrs {
        // On wasm32-wasip2, std's `connect_timeout` can report success for a
        // refused connection (the error only shows on the first write), so
        // use a plain blocking connect there; the host's per-call deadline
        // bounds it.
        #[cfg(target_arch = "wasm32")]
        let attempt = TcpStream::connect(sa);
        #[cfg(not(target_arch = "wasm32"))]
        let attempt = TcpStream::connect_timeout(&sa, timeout);
        match attempt {
            Ok(stream) => {
                // Socket options may be unsupported on some platforms; the
                // host's per-call deadline still bounds a stuck call.
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(timeout));
                let _ = stream.set_write_timeout(Some(timeout));
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests;
