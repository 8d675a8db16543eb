//! API benchmark (issue 5): messages written per second through the HTTP
//! and the gRPC API, single-message and batched, beside the framework
//! ceiling measured in the same run: a bare hyper HTTP/1 echo server and a
//! tonic server implementing the same `wharf.v1.Wharf` service with canned
//! acks. Targets (issue 18, for durable writes: `--fsync`, as `make bench`
//! runs it): single-message and batched writes >= 0.50 of the ceiling, on
//! both protocols; each printed with MET or MISS.
//!
//! ```text
//! make build
//! cargo bench -p wharf-tests --bench api
//! cargo bench -p wharf-tests --bench api -- --seconds 3 --concurrency 32 --batch 100 --payload 100 [--fsync]
//!   [--only "grpc wharf, batch"]   (one row, e.g. under perf)
//! ```
//!
//! Same clients for both sides of a comparison: HTTP is `--concurrency`
//! threads, each a keep-alive ureq agent posting the JSON body wharf takes
//! (the echo server sends it back; hand-built rather than `wharf-client`,
//! see `http_load`); gRPC is `--concurrency` tasks over 4
//! HTTP/2 channels of the generated tonic client. The echo servers run in
//! this process on a 2-worker runtime (wharf's runtime has one worker per
//! core); wharf runs as its own process. Everything shares the machine's
//! cores, so the numbers are relative, not absolute.
//!
//! Wharf runs with `durability = "buffered"` (no fdatasync: what is measured
//! is the API and the write path, not the disk; `--fsync` measures with it)
//! and a namespace whose plugin does not load, so no delivery competes for
//! the CPU; its backlog limits are raised out of the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wharf_tests::{Wharf, b64};

/// Wharf's rate over the echo ceiling's, at least (every row).
const TARGET: f64 = 0.50;

#[allow(missing_debug_implementations, clippy::all, clippy::pedantic, clippy::unwrap_used)]
mod pb {
    tonic::include_proto!("wharf.v1");
}

#[derive(Debug, Clone)]
struct Args {
    seconds: f64,
    concurrency: usize,
    batch: usize,
    payload: usize,
    fsync: bool,
    /// Run only the rows whose name contains this (for profiling one row);
    /// the others print 0.
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args { seconds: 3.0, concurrency: 32, batch: 100, payload: 100, fsync: false, only: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> f64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = num("--seconds"),
            "--concurrency" => a.concurrency = num("--concurrency") as usize,
            "--batch" => a.batch = num("--batch") as usize,
            "--payload" => a.payload = num("--payload") as usize,
            "--fsync" => a.fsync = true,
            "--only" => {
                a.only = Some(it.next().expect("--only takes a row name, e.g. \"grpc wharf, batch\""))
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

// ------------------------------------------------------------ echo servers

/// A bare hyper HTTP/1 server answering every request with its body.
async fn hyper_echo() -> u16 {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let mut resp = hyper::Response::new(Full::<Bytes>::new(body));
                    resp.headers_mut()
                        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    port
}

/// The same gRPC service as wharf's, answering canned acks.
#[derive(Debug)]
struct TonicEcho;

fn canned_ack() -> pb::WriteAck {
    pb::WriteAck { message_id: "0-0".into(), partition: 0, sequence: 0, durable: true, ..Default::default() }
}

#[tonic::async_trait]
impl pb::wharf_server::Wharf for TonicEcho {
    async fn write(
        &self,
        _: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteAck>, tonic::Status> {
        Ok(tonic::Response::new(canned_ack()))
    }

    async fn write_batch(
        &self,
        req: tonic::Request<pb::WriteBatchRequest>,
    ) -> Result<tonic::Response<pb::WriteBatchResponse>, tonic::Status> {
        let results = req
            .into_inner()
            .messages
            .iter()
            .map(|_| pb::WriteResult { result: Some(pb::write_result::Result::Ack(canned_ack())) })
            .collect();
        Ok(tonic::Response::new(pb::WriteBatchResponse { results }))
    }
}

async fn tonic_echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::wharf_server::WharfServer::new(TonicEcho))
            .serve_with_incoming(incoming),
    );
    port
}

// ----------------------------------------------------------------- clients

/// Runs `concurrency` threads posting `body` for `seconds`; messages per
/// second (each 2xx reply counts `per_request` messages).
///
/// Raw ureq on purpose, not `wharf-client`: this bench measures Wharf's
/// HTTP API against the bare hyper echo ceiling, so both sides must get the
/// very same bytes from the very same client. `wharf-client` would add an
/// idempotency key per message (work the echo server does not do), encode
/// each body anew and retry refusals, so the ratio would no longer compare
/// like with like.
fn http_load(url: &str, body: &str, per_request: u64, a: &Args) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (url, body, count, stop) = (url.to_string(), body.to_string(), count.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let r = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(body.as_str())
                        .expect("POST");
                    let status = r.status().as_u16();
                    let text = r.into_body().read_to_string().unwrap_or_default();
                    assert!(status < 300, "{url}: {status} {text}");
                    count.fetch_add(per_request, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    stop.store(true, Ordering::Relaxed);
    let n = count.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in threads {
        t.join().expect("client thread");
    }
    n as f64 / elapsed
}

/// Runs `concurrency` tasks over 4 channels for `seconds`; messages/s.
fn grpc_load(rt: &tokio::runtime::Runtime, port: u16, batch: Option<usize>, a: &Args) -> f64 {
    type Client = pb::wharf_client::WharfClient<tonic::transport::Channel>;
    let url = format!("http://127.0.0.1:{port}");
    let clients: Vec<Client> = (0..4)
        .map(|_| {
            rt.block_on(Client::connect(url.clone())).expect("connect").max_decoding_message_size(64 << 20)
        })
        .collect();
    let message = pb::Message { payload: vec![b'x'; a.payload], ..Default::default() };
    let seconds = a.seconds;
    let concurrency = a.concurrency;
    rt.block_on(async move {
        let count = Arc::new(AtomicU64::new(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let mut client = clients[i % clients.len()].clone();
                let (count, message) = (count.clone(), message.clone());
                tokio::spawn(async move {
                    while tokio::time::Instant::now() < deadline {
                        match batch {
                            None => {
                                let req = pb::WriteRequest {
                                    namespace: "bench".into(),
                                    payload: message.payload.clone(),
                                    ..Default::default()
                                };
                                client.write(req).await.expect("Write");
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(n) => {
                                let req = pb::WriteBatchRequest {
                                    namespace: "bench".into(),
                                    messages: vec![message.clone(); n],
                                    ..Default::default()
                                };
                                let r = client.write_batch(req).await.expect("WriteBatch").into_inner();
                                let ok = r
                                    .results
                                    .iter()
                                    .filter(|r| matches!(r.result, Some(pb::write_result::Result::Ack(_))))
                                    .count();
                                assert_eq!(ok, n, "a batch message failed: {:?}", r.results.first());
                                count.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("client task");
        }
        count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    })
}

// -------------------------------------------------------------------- main

fn main() {
    let a = args();
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let http_echo = servers.block_on(hyper_echo());
    let grpc_echo = servers.block_on(tonic_echo());
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");

    // A plugin file that does not load: writes are kept, nothing delivers.
    let scratch = tempfile::tempdir().expect("tempdir");
    let not_a_plugin = scratch.path().join("not-a-plugin.wasm");
    std::fs::write(&not_a_plugin, b"not wasm").expect("write");
    let mut wharf = Wharf::start(&format!(
        "[namespaces.bench]\npartitions = 4\n[namespaces.bench.limits]\nmax_backlog_messages = 1000000000\n\
         max_backlog_bytes = 1000000000000\n[namespaces.bench.target]\nplugin = \"{}\"\n",
        not_a_plugin.display()
    ));
    if !a.fsync {
        let path = wharf.config_path();
        let text = std::fs::read_to_string(&path).expect("config");
        std::fs::write(&path, text.replacen("[server]\n", "[server]\ndurability = \"buffered\"\n", 1))
            .expect("config");
        wharf.restart();
    }

    let payload = b64(&vec![b'x'; a.payload]);
    let one = format!("{{\"payload\":\"{payload}\"}}");
    let batch =
        format!("{{\"messages\":[{}]}}", vec![format!("{{\"payload\":\"{payload}\"}}"); a.batch].join(","));
    let echo_url = format!("http://127.0.0.1:{http_echo}/");
    let write_url = wharf.url("/v1/namespaces/bench/messages");
    let batch_url = wharf.url("/v1/namespaces/bench/messages/batch");
    let b = a.batch as u64;

    eprintln!("warming up ...");
    let warm = Args { seconds: 0.5, ..a.clone() };
    http_load(&write_url, &one, 1, &warm);
    grpc_load(&clients, wharf.grpc_port, None, &warm);

    let run = |name: &str, f: &mut dyn FnMut() -> f64| {
        if a.only.as_ref().is_some_and(|only| !name.contains(only.as_str())) {
            return 0.0;
        }
        eprintln!("{name} ...");
        let rate = f();
        if a.only.is_some() {
            println!("{name}: {rate:.0} msg/s");
        }
        rate
    };
    let h_echo_1 = run("http echo, single", &mut || http_load(&echo_url, &one, 1, &a));
    let h_wharf_1 = run("http wharf, single", &mut || http_load(&write_url, &one, 1, &a));
    let h_echo_b = run("http echo, batch", &mut || http_load(&echo_url, &batch, b, &a));
    let h_wharf_b = run("http wharf, batch", &mut || http_load(&batch_url, &batch, b, &a));
    let g_echo_1 = run("grpc echo, single", &mut || grpc_load(&clients, grpc_echo, None, &a));
    let g_wharf_1 = run("grpc wharf, single", &mut || grpc_load(&clients, wharf.grpc_port, None, &a));
    let g_echo_b = run("grpc echo, batch", &mut || grpc_load(&clients, grpc_echo, Some(a.batch), &a));
    let g_wharf_b = run("grpc wharf, batch", &mut || grpc_load(&clients, wharf.grpc_port, Some(a.batch), &a));

    if a.only.is_some() {
        return; // each row run printed its own rate
    }
    let pct = |x: f64, of: f64| 100.0 * x / of.max(1e-9);
    println!(
        "\nAPI writes, {} B payloads, {} concurrent clients, {:.1} s per row, durability {}, batches of {}",
        a.payload,
        a.concurrency,
        a.seconds,
        if a.fsync { "fsync" } else { "buffered" },
        a.batch
    );
    println!("{:<28} {:>14} {:>14}", "", "single msg/s", "batched msg/s");
    println!("{:<28} {:>14.0} {:>14.0}", "HTTP  bare hyper echo", h_echo_1, h_echo_b);
    println!(
        "{:<28} {:>14} {:>14}",
        "HTTP  wharf",
        format!("{h_wharf_1:.0} ({:.0}%)", pct(h_wharf_1, h_echo_1)),
        format!("{h_wharf_b:.0} ({:.0}%)", pct(h_wharf_b, h_echo_b))
    );
    println!("{:<28} {:>14.0} {:>14.0}", "gRPC  tonic echo service", g_echo_1, g_echo_b);
    println!(
        "{:<28} {:>14} {:>14}",
        "gRPC  wharf",
        format!("{g_wharf_1:.0} ({:.0}%)", pct(g_wharf_1, g_echo_1)),
        format!("{g_wharf_b:.0} ({:.0}%)", pct(g_wharf_b, g_echo_b))
    );
    let target = |name: &str, wharf: f64, echo: f64| {
        let ratio = wharf / echo.max(1e-9);
        let verdict = if ratio >= TARGET { "MET" } else { "MISS" };
        println!("target: {name} >= {TARGET:.2} of the echo ceiling: {verdict} ({ratio:.2})");
    };
    target("HTTP single", h_wharf_1, h_echo_1);
    target("HTTP batched", h_wharf_b, h_echo_b);
    target("gRPC single", g_wharf_1, g_echo_1);
    target("gRPC batched", g_wharf_b, g_echo_b);
    if !a.fsync {
        println!("(buffered writes: the targets are for durable writes, --fsync)");
    }
}
