//! A `redis-server` of the benches' own (the peer rows of issue 18): a free
//! loopback port, its own data dir, the AOF on with `appendfsync always`
//! (one fsync per event-loop turn before replies go out), no RDB
//! snapshots; stopped by PID on drop. The Debian packages come from
//! `scripts/bench-deps.sh`; their own service is not used.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, free_port};

/// A command's name, after checking it is on the PATH: a bench that needs
/// a peer's tool says how to get it instead of failing obscurely.
pub fn bench_tool(name: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{name} is missing: run scripts/bench-deps.sh (make bench does)");
    name.to_string()
}

#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        let port = free_port();
        let child = Command::new(bench_tool("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"])
            .args(["--logfile", "", "--maxclients", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis { port, child };
        eventually(Duration::from_secs(20), "redis answers PING", || redis.ping().then_some(()));
        redis
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// The AOF policy the server runs with, as it reports it.
    pub fn appendfsync(&self) -> String {
        let out = Command::new(bench_tool("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "config", "get", "appendfsync"])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap_or("").to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
