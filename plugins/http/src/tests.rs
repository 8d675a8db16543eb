#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wharf_sdk::Outcome;
use wharf_sdk::testing::{Harness, message};

use super::*;

/// What the test server saw.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 server on a free loopback port. The response depends on
/// the path: `/ok` 200, `/busy` 503 + `Retry-After: 7`, `/later` 429 with
/// an HTTP-date `Retry-After`, `/bad` 400, `/moved` 302, `/slow` sleeps 2 s.
struct Server {
    base: String,
    seen: mpsc::Receiver<Seen>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &tx);
                });
            }
        });
        Server { base, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn next(&self) -> Seen {
        self.seen.recv_timeout(Duration::from_secs(5)).unwrap()
    }
}

fn handle(stream: std::net::TcpStream, tx: &mpsc::Sender<Seen>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize =
        headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (status, extra, resp_body): (&str, String, &str) = match path.as_str() {
        "/ok" => ("200 OK", String::new(), "thanks"),
        "/created" => ("201 Created", String::new(), ""),
        "/busy" => ("503 Service Unavailable", "Retry-After: 7\r\n".into(), "try later"),
        "/later" => {
            let when = std::time::SystemTime::now() + Duration::from_secs(120);
            ("429 Too Many Requests", format!("Retry-After: {}\r\n", httpdate::fmt_http_date(when)), "")
        }
        "/bad" => ("400 Bad Request", String::new(), "bad payload:\n missing field `id`"),
        "/moved" => ("302 Found", "Location: /ok\r\n".into(), ""),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(2));
            ("200 OK", String::new(), "")
        }
        _ => ("404 Not Found", String::new(), "no such hook"),
    };
    let _ = tx.send(Seen { method, path, headers, body });
    let stream = reader.get_mut();
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{resp_body}",
        resp_body.len()
    )?;
    stream.flush()
}

fn plugin(url: &str) -> Harness<super::Http> {
    Harness::init(&[("url", url), ("timeout_ms", "1000")]).unwrap()
}

#[test]
fn posts_payload_with_headers_and_2xx_is_delivered() {
    let server = Server::start();
    let mut p = plugin(&server.url("/ok"));
    let msg = message(b"{\"n\":1}".to_vec())
        .with_key("order-7")
        .with_namespace("orders")
        .with_attempt(3)
        .with_replays(1)
        .with_header("Content-Type", "application/json")
        .with_header("X-Trace", "abc")
        .with_header("Host", "evil.example")
        .with_header("x-wharf-attempt", "999")
        .with_header("x-wharf-replays", "999");
    let id = msg.id.clone();
    assert_eq!(p.deliver(vec![msg]), vec![Outcome::Delivered]);
    let seen = server.next();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/ok");
    assert_eq!(seen.body, b"{\"n\":1}");
    assert_eq!(seen.header("x-wharf-key"), Some("order-7"));
    assert_eq!(seen.header("x-wharf-message-id"), Some(id.as_str()));
    assert_eq!(seen.header("idempotency-key"), Some(id.as_str()));
    assert_eq!(seen.header("x-wharf-attempt"), Some("3"));
    assert_eq!(seen.header("x-wharf-replays"), Some("1"));
    assert_eq!(seen.header("x-wharf-namespace"), Some("orders"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-trace"), Some("abc"));
    assert_ne!(seen.header("host"), Some("evil.example"));

    // No key, client idempotency key, default content type; 201 counts.
    let mut p = plugin(&server.url("/created"));
    let msg = message("x").with_idempotency_key("idem-1");
    assert_eq!(p.deliver(vec![msg]), vec![Outcome::Delivered]);
    let seen = server.next();
    assert_eq!(seen.header("x-wharf-key"), None);
    assert_eq!(seen.header("idempotency-key"), Some("idem-1"));
    assert_eq!(seen.header("content-type"), Some("application/octet-stream"));
}

#[test]
fn status_503_with_retry_after_seconds_is_retry() {
    let server = Server::start();
    let mut p = plugin(&server.url("/busy"));
    let outcomes = p.deliver(vec![message("x")]);
    match &outcomes[0] {
        Outcome::Retry { reason, after } => {
            assert!(reason.contains("503") && reason.contains("try later"), "{reason}");
            assert_eq!(*after, Some(Duration::from_secs(7)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn status_429_with_retry_after_date_is_retry() {
    let server = Server::start();
    let mut p = plugin(&server.url("/later"));
    match &p.deliver(vec![message("x")])[0] {
        Outcome::Retry { after: Some(after), .. } => {
            assert!(*after > Duration::from_secs(100) && *after <= Duration::from_secs(121), "{after:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn status_400_is_reject_with_body_excerpt() {
    let server = Server::start();
    let mut p = plugin(&server.url("/bad"));
    let outcomes = p.deliver(vec![message("x")]);
    assert_eq!(outcomes, vec![Outcome::reject("HTTP 400: bad payload: missing field `id`")]);

    let mut p = plugin(&server.url("/nope"));
    assert_eq!(p.deliver(vec![message("x")]), vec![Outcome::reject("HTTP 404: no such hook")]);

    let mut p = plugin(&server.url("/moved"));
    assert_eq!(
        p.deliver(vec![message("x")]),
        vec![Outcome::reject("HTTP 302")],
        "redirects are not followed"
    );
}

#[test]
fn connection_refused_is_retry() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut p = plugin(&url);
    let outcomes = p.deliver(vec![message("x"), message("y")]);
    assert!(outcomes.iter().all(Outcome::is_retry), "{outcomes:?}");
    assert!(outcomes[0].reason().unwrap_or_default().contains(&url), "{outcomes:?}");
}

#[test]
fn a_failed_post_names_the_url_without_its_query_values() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut p = plugin(&format!("http://127.0.0.1:{port}/hook?api_key=s3cr3t&x=1"));
    let reason = p.deliver(vec![message("x")])[0].reason().unwrap_or_default().to_string();
    assert!(reason.contains(&format!("POST http://127.0.0.1:{port}/hook?api_key=***&x=***")), "{reason}");
    assert!(!reason.contains("s3cr3t"), "{reason}");
}

#[test]
fn a_url_with_a_password_is_refused_without_showing_it() {
    let err = Harness::<super::Http>::init(&[("url", "http://bob:hunter2@127.0.0.1:1/hook?token=t0k3n")])
        .unwrap_err();
    assert!(err.contains("`url`") && err.contains("http://***@127.0.0.1:1/hook?token=***"), "{err}");
    assert!(!err.contains("hunter2") && !err.contains("bob") && !err.contains("t0k3n"), "{err}");
}

#[test]
fn timeout_is_retry() {
    let server = Server::start();
    let mut p =
        Harness::<super::Http>::init(&[("url", &server.url("/slow")), ("timeout_ms", "300")]).unwrap();
    let started = Instant::now();
    let outcomes = p.deliver(vec![message("x")]);
    assert!(outcomes[0].is_retry(), "{outcomes:?}");
    assert!(started.elapsed() < Duration::from_millis(1800), "{:?}", started.elapsed());
}

#[test]
fn bad_message_headers_are_rejected() {
    let server = Server::start();
    let mut p = plugin(&server.url("/ok"));
    let outcomes = p.deliver(vec![
        message("x").with_header("bad name", "v"),
        message("x").with_header("x-ok", "line\r\nbreak"),
        message("x").with_key("k\nk"),
    ]);
    assert!(outcomes.iter().all(Outcome::is_reject), "{outcomes:?}");
}

#[test]
fn status_mapping() {
    let resp = |status: u16| Response { status, headers: vec![], body: vec![] };
    for s in [200, 204, 299] {
        assert!(outcome(&resp(s), 0).is_ok(), "{s}");
    }
    for s in [408, 425, 429, 500, 502, 503, 599] {
        assert!(outcome(&resp(s), 0).unwrap_err().is_retry(), "{s}");
    }
    for s in [100, 301, 304, 400, 401, 403, 404, 409, 413, 422] {
        assert!(outcome(&resp(s), 0).unwrap_err().is_reject(), "{s}");
    }
    let long = Response { status: 400, headers: vec![], body: vec![b'a'; 1000] };
    let reason = outcome(&long, 0).unwrap_err().reason().to_string();
    assert!(reason.len() < 220 && reason.ends_with('…'), "{reason}");
}

#[test]
fn retry_after_parsing() {
    assert_eq!(retry_after("120", 0), Some(Duration::from_secs(120)));
    assert_eq!(retry_after(" 0 ", 0), Some(Duration::ZERO));
    // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT
    let now = 784_111_777_000 - 5_000;
    assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(5)));
    assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 60_000), Some(Duration::ZERO));
    assert_eq!(retry_after("soon", 0), None);
    assert_eq!(retry_after("-5", 0), None);
}

#[test]
fn bad_config() {
    for (config, needle) in [
        (vec![], "`url` is required"),
        (vec![("url", "ftp://x/")], "`url`"),
        (vec![("url", "127.0.0.1:8080/hook")], "`url`"),
        (vec![("url", "http://h/"), ("timeout_ms", "fast")], "`timeout_ms`"),
        (vec![("url", "http://h/"), ("timeout_ms", "0")], "`timeout_ms`"),
    ] {
        let err = Harness::<super::Http>::init(&config).unwrap_err();
        assert!(err.contains(needle), "{config:?}: {err}");
    }
    assert!(Harness::<super::Http>::init(&[("url", "https://hooks.example.com/x?y=1")]).is_ok());
}
