#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wharf_sdk::Outcome;
use wharf_sdk::testing::{Harness, message};

use super::*;

/// A real memcached on a free loopback port, killed (by PID) on drop.
struct Memcached {
    child: Child,
    port: u16,
}

impl Memcached {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new("/usr/bin/memcached")
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "16", "-t", "1"])
            // Needed when the tests run as root; ignored otherwise.
            .args(["-u", "root"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/memcached");
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Memcached { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `get key` with a raw client: the value, or None on a miss.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(stream);
        write!(reader.get_mut(), "get {key}\r\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "END\r\n" {
            return None;
        }
        let parts: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(parts[0], "VALUE", "{line:?}");
        assert_eq!(parts[1], key);
        let len: usize = parts[3].parse().unwrap();
        let mut value = vec![0; len + 2];
        reader.read_exact(&mut value).unwrap();
        value.truncate(len);
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "END\r\n");
        Some(value)
    }

    /// Seconds until the key expires (-1: never), via `me` (meta debug),
    /// which prints `exp=<now - exptime>`.
    fn exp(&self, key: &str) -> i64 {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut reader = BufReader::new(stream);
        write!(reader.get_mut(), "me {key}\r\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let exp = line.split(' ').find_map(|f| f.strip_prefix("exp=")).unwrap_or_else(|| panic!("{line:?}"));
        let exp: i64 = exp.trim().parse().unwrap();
        if exp == -1 { -1 } else { -exp }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn plugin(config: &[(&str, &str)]) -> Harness<super::Memcached> {
    Harness::init(config).unwrap()
}

#[test]
fn set_then_get_back() {
    let mc = Memcached::start();
    let addr = mc.addr();
    let mut p = plugin(&[("servers", &addr), ("key_prefix", "orders:")]);
    let binary: Vec<u8> = (0..=255).collect();
    let outcomes = p.deliver(vec![
        message("hello").with_key("a"),
        message(binary.clone()).with_key("b"),
        message("").with_key("empty-payload"),
        message("line\r\nbreaks\r\n").with_key("c"),
    ]);
    assert_eq!(outcomes, vec![Outcome::Delivered; 4]);
    assert_eq!(mc.get("orders:a").unwrap(), b"hello");
    assert_eq!(mc.get("orders:b").unwrap(), binary);
    assert_eq!(mc.get("orders:empty-payload").unwrap(), b"");
    assert_eq!(mc.get("orders:c").unwrap(), b"line\r\nbreaks\r\n");
    assert_eq!(mc.get("a"), None);

    // Same connection, next batch; a later write wins.
    assert_eq!(p.deliver(vec![message("v2").with_key("a")]), vec![Outcome::Delivered]);
    assert_eq!(mc.get("orders:a").unwrap(), b"v2");
    assert!(p.plugin().unwrap().servers[0].conn.is_some(), "connection kept open");
}

#[test]
fn big_pipelined_batch() {
    let mc = Memcached::start();
    let mut p = plugin(&[("servers", &mc.addr())]);
    let msgs: Vec<_> =
        (0..500).map(|i| message(format!("value-{i}").repeat(20)).with_key(format!("k{i}"))).collect();
    let outcomes = p.deliver(msgs);
    assert!(outcomes.iter().all(Outcome::is_delivered), "{outcomes:?}");
    assert_eq!(mc.get("k499").unwrap(), "value-499".repeat(20).as_bytes());
}

#[test]
fn missing_and_invalid_keys_are_rejected_others_delivered() {
    let mc = Memcached::start();
    let mut p = plugin(&[("servers", &mc.addr()), ("key_prefix", "p:")]);
    let long = "x".repeat(249);
    let outcomes = p.deliver(vec![
        message("no key"),
        message("ok").with_key("good"),
        message("x").with_key(""),
        message("x").with_key("has space"),
        message("x").with_key("tab\there"),
        message("x").with_key("ctl\u{7f}"),
        message("x").with_key(long.clone()),
        message("x").with_key(&long[..248]),
    ]);
    assert_eq!(outcomes[0], Outcome::reject("message has no key; memcached needs one"));
    assert_eq!(outcomes[1], Outcome::Delivered);
    for (i, needle) in [(2, "empty"), (3, "whitespace"), (4, "whitespace"), (5, "control"), (6, "251 bytes")]
    {
        let reason = outcomes[i].reason().unwrap_or_default().to_string();
        assert!(outcomes[i].is_reject() && reason.contains(needle), "{i}: {:?}", outcomes[i]);
    }
    assert_eq!(outcomes[7], Outcome::Delivered, "250 bytes with prefix is fine");
    assert_eq!(mc.get("p:good").unwrap(), b"ok");
}

#[test]
fn too_large_is_rejected_and_connection_stays_usable() {
    let mc = Memcached::start_with(&["-I", "1m"]);
    let mut p = plugin(&[("servers", &mc.addr())]);
    let outcomes = p.deliver(vec![
        message("before").with_key("k1"),
        message(vec![b'x'; 2 * 1024 * 1024]).with_key("huge"),
        message("after").with_key("k2"),
    ]);
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(outcomes[1].is_reject(), "{:?}", outcomes[1]);
    assert!(outcomes[1].reason().unwrap_or_default().contains("too large"), "{:?}", outcomes[1]);
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert_eq!(mc.get("k2").unwrap(), b"after");
}

#[test]
fn server_down_is_retry_and_reconnects_later() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut p = plugin(&[("servers", &addr)]);
    let outcomes = p.deliver(vec![message("a").with_key("k"), message("b").with_key("k2")]);
    assert!(outcomes.iter().all(Outcome::is_retry), "{outcomes:?}");
    let reason = outcomes[0].reason().unwrap_or_default().to_string();
    assert!(reason.contains(&addr), "{reason}");

    // Key problems are still rejects even when the server is down.
    assert!(p.deliver(vec![message("a")])[0].is_reject());

    // Server restarts: the next batch reconnects.
    let mc = Memcached::start();
    let mut p = plugin(&[("servers", &mc.addr())]);
    assert_eq!(p.deliver(vec![message("a").with_key("k")]), vec![Outcome::Delivered]);
    drop(mc);
    let outcomes = p.deliver(vec![message("a").with_key("k")]);
    assert!(outcomes[0].is_retry(), "{outcomes:?}");
    assert!(p.plugin().unwrap().servers[0].conn.is_none(), "dropped after an error");
}

#[test]
fn silent_server_times_out_as_retry() {
    // Accepts connections, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut p = plugin(&[("servers", &addr), ("timeout_ms", "200")]);
    let started = Instant::now();
    let outcomes = p.deliver(vec![message("a").with_key("k")]);
    assert!(outcomes[0].is_retry(), "{outcomes:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(listener);
}

#[test]
fn ttl_is_sent() {
    let mc = Memcached::start();
    let mut p = plugin(&[("servers", &mc.addr()), ("ttl_seconds", "3600")]);
    assert_eq!(p.deliver(vec![message("v").with_key("t")]), vec![Outcome::Delivered]);
    let exp = mc.exp("t");
    assert!((3590..=3600).contains(&exp), "exp={exp}");

    // Over 30 days: sent as an absolute time, still ~ttl from now.
    let long = 60 * 60 * 24 * 40;
    let mut p = plugin(&[("servers", &mc.addr()), ("ttl_seconds", &long.to_string())]);
    assert_eq!(p.deliver(vec![message("v").with_key("t2")]), vec![Outcome::Delivered]);
    // memcached turns an absolute time into its own whole-second clock, so
    // the remaining time may read one second over.
    let exp = mc.exp("t2");
    assert!((long - 10..=long + 1).contains(&exp), "exp={exp}");

    // Default: no expiry.
    let mut p = plugin(&[("servers", &mc.addr())]);
    assert_eq!(p.deliver(vec![message("v").with_key("t3")]), vec![Outcome::Delivered]);
    assert_eq!(mc.exp("t3"), -1);
}

#[test]
fn keys_spread_over_servers_stably() {
    let a = Memcached::start();
    let b = Memcached::start();
    let servers = format!("{},{}", a.addr(), b.addr());
    let mut p = plugin(&[("servers", &servers)]);
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    let outcomes = p.deliver(keys.iter().map(|k| message(k.clone()).with_key(k.clone())).collect());
    assert!(outcomes.iter().all(Outcome::is_delivered), "{outcomes:?}");
    let mut on_a = 0;
    for k in &keys {
        let (in_a, in_b) = (a.get(k), b.get(k));
        assert!(in_a.is_some() != in_b.is_some(), "{k} on exactly one server");
        let expected = if server_for(k, 2) == 0 { &a } else { &b };
        assert_eq!(expected.get(k).unwrap(), k.as_bytes());
        on_a += usize::from(in_a.is_some());
    }
    assert!(on_a > 5 && on_a < 35, "spread: {on_a}/40 on the first server");
    // Stable: the same key always maps to the same index.
    assert_eq!(server_for("key-1", 2), server_for("key-1", 2));
    assert_eq!(server_for("abc", 3), 0xe71fa2190541574b_u64.wrapping_rem(3) as usize);
}

#[test]
fn bad_config_names_key_and_problem() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "`servers` is required but missing"),
        (&[("servers", "")], "`servers` is required but empty"),
        (&[("servers", "localhost")], "no port"),
        (&[("servers", "127.0.0.1:11211,:1")], "no host"),
        (&[("servers", "127.0.0.1:99999")], "port must be"),
        (&[("servers", "bob:s3cr3t@127.0.0.1:11211")], "\"***@127.0.0.1:11211\" is not a host:port"),
        (&[("servers", "127.0.0.1:11211"), ("ttl_seconds", "soon")], "`ttl_seconds`"),
        (&[("servers", "127.0.0.1:11211"), ("ttl_seconds", "-1")], "`ttl_seconds`"),
        (&[("servers", "127.0.0.1:11211"), ("key_prefix", "a b")], "`key_prefix`"),
        (&[("servers", "127.0.0.1:11211"), ("timeout_ms", "0")], "`timeout_ms`"),
    ];
    for (config, needle) in cases {
        let err = Harness::<super::Memcached>::init(config).unwrap_err();
        assert!(err.contains(needle), "{config:?}: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
    let p = Harness::<super::Memcached>::init(&[("servers", " 127.0.0.1:1 , localhost:2 ")]);
    assert!(p.is_ok());
}

#[test]
fn reply_classification() {
    assert!(matches!(classify("STORED"), Reply::Stored));
    assert!(matches!(classify("SERVER_ERROR object too large for cache"), Reply::Reject(_)));
    assert!(matches!(classify("SERVER_ERROR out of memory storing object"), Reply::Retry(_)));
    assert!(matches!(classify("CLIENT_ERROR bad data chunk"), Reply::Desync(_)));
    assert!(matches!(classify("ERROR"), Reply::Desync(_)));
    assert!(matches!(classify("NOT_STORED"), Reply::Retry(_)));
}
