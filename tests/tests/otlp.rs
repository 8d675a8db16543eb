//! Host spans over OTLP/HTTP (issue 19): with `[server.tracing]
//! otlp_endpoint`, a write carrying a `traceparent` gets a `wharf.append`
//! span and one `wharf.deliver` span per delivery attempt, each a child of
//! the writer's span, posted to a collector. Here the collector is a small
//! OTLP/HTTP receiver (protobuf `POST /v1/traces`) on a free port; a
//! failing collector changes nothing for writes and delivery.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, b64, eventually, quick_retry};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WRITER_SPAN: &str = "00f067aa0ba902b7";
const WAIT: Duration = Duration::from_secs(30);

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{WRITER_SPAN}-01")
}

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    service: Option<String>,
    trace_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    status: i32,
    attributes: BTreeMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or_else(|| panic!("no attribute {key}: {self:?}"))
    }
}

fn text(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// A minimal OTLP/HTTP collector: decodes every `POST /v1/traces` body,
/// or answers every request with a failure status.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    server: Arc<tiny_http::Server>,
}

impl Receiver {
    fn start() -> Self {
        Self::answering(200)
    }

    fn answering(answer: u16) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind receiver"));
        let port = server.server_addr().to_ip().map(|a| a.port()).expect("ip addr");
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let (srv, got) = (server.clone(), spans.clone());
        std::thread::spawn(move || {
            while let Ok(mut req) = srv.recv() {
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                let decoded = (req.url() == "/v1/traces")
                    .then(|| ExportTraceServiceRequest::decode(body.as_slice()).ok())
                    .flatten();
                let status = match decoded {
                    _ if answer != 200 => answer,
                    Some(export) => {
                        got.lock().expect("lock").extend(flatten(export));
                        200
                    }
                    None => 400,
                };
                let header =
                    tiny_http::Header::from_bytes("Content-Type", "application/x-protobuf").expect("header");
                // An empty ExportTraceServiceResponse: full success.
                let _ = req.respond(
                    tiny_http::Response::from_data(Vec::new()).with_status_code(status).with_header(header),
                );
            }
        });
        Self { port, spans, server }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    service: resource.get("service.name").cloned(),
                    trace_id: hex::encode(&s.trace_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    status: s.status.map_or(0, |st| st.code),
                    attributes: text(&s.attributes),
                });
            }
        }
    }
    out
}

fn tracing_server(endpoint: &str) -> String {
    format!("tracing = {{ otlp_endpoint = \"{endpoint}\", service_name = \"wharf-test\" }}")
}

/// A write; its reply (message id, partition, sequence).
fn write(w: &Wharf, key: &str, payload: &[u8], traceparent: Option<&str>) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.post(&w.url("/v1/namespaces/orders/messages"));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let mut r = req.send_json(json!({"key": key, "payload": b64(payload)})).expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    r.body_mut().read_json().expect("json reply")
}

#[test]
fn a_traced_write_yields_an_append_span_and_a_delivery_span_under_the_writers_span() {
    let receiver = Receiver::start();
    let sink = HttpSink::start();
    let w =
        Wharf::start_with_server(&tracing_server(&receiver.url()), &sink.namespace("orders", 1, ""), "all");

    // An untraced write first: it makes no span (spans leave in order, so
    // one would arrive before the traced write's).
    write(&w, "plain", b"untraced", None);
    eventually(WAIT, "the untraced message delivered", || (sink.accepted().len() == 1).then_some(()));

    let ack = write(&w, "a", b"traced", Some(&traceparent()));
    let spans = eventually(WAIT, "an append and a delivery span", || {
        let spans = receiver.spans();
        let has = |name: &str| spans.iter().any(|s| s.name == name);
        (has("wharf.append") && has("wharf.deliver")).then_some(spans)
    });
    assert_eq!(spans.len(), 2, "one append, one attempt, none for the untraced write: {spans:?}");
    let sequence = ack["sequence"].as_u64().expect("sequence").to_string();
    let message_id = ack["message_id"].as_str().expect("message id");
    for s in &spans {
        assert_eq!(s.trace_id, TRACE_ID, "the writer's trace: {s:?}");
        assert_eq!(s.parent_span_id, WRITER_SPAN, "a child of the writer's span: {s:?}");
        assert_eq!(s.service.as_deref(), Some("wharf-test"));
        assert_eq!(s.attr("wharf.namespace"), "orders");
        assert_eq!(s.attr("wharf.partition"), "0");
        assert_eq!(s.attr("wharf.sequence"), sequence);
        assert_eq!(s.attr("messaging.message.id"), message_id);
        assert_ne!(s.status, StatusCode::Error as i32, "{s:?}");
    }
    let append = spans.iter().find(|s| s.name == "wharf.append").expect("append span");
    assert_eq!(append.kind, SpanKind::Producer as i32);
    assert_eq!(append.attr("wharf.outcome"), "durable");
    let deliver = spans.iter().find(|s| s.name == "wharf.deliver").expect("delivery span");
    assert_eq!(deliver.kind, SpanKind::Consumer as i32);
    assert_eq!(deliver.attr("wharf.target"), "default");
    assert_eq!(deliver.attr("wharf.attempt"), "1");
    assert_eq!(deliver.attr("wharf.outcome"), "delivered");
}

#[test]
fn a_retried_delivery_yields_one_span_per_attempt_numbered_in_order() {
    let receiver = Receiver::start();
    let sink = HttpSink::start();
    sink.set(|b| b.fail_keys = vec!["k".into()]);
    let ns = sink.namespace("orders", 1, &quick_retry("orders"));
    let w = Wharf::start_with_server(&tracing_server(&receiver.url()), &ns, "all");

    write(&w, "k", b"retried", Some(&traceparent()));
    eventually(WAIT, "a refused first attempt", || (!sink.refused().is_empty()).then_some(()));
    sink.set(|b| b.fail_keys.clear());
    eventually(WAIT, "the message delivered", || (sink.accepted().len() == 1).then_some(()));

    let attempts = eventually(WAIT, "the delivered attempt's span", || {
        let attempts: Vec<Span> =
            receiver.spans().into_iter().filter(|s| s.name == "wharf.deliver").collect();
        attempts.iter().any(|s| s.attr("wharf.outcome") == "delivered").then_some(attempts)
    });
    let mut attempts = attempts;
    attempts.sort_by_key(|s| s.attr("wharf.attempt").parse::<u32>().expect("attempt number"));
    assert!(attempts.len() >= 2, "a retry and the delivery: {attempts:?}");
    for (n, s) in attempts.iter().enumerate() {
        assert_eq!(s.attr("wharf.attempt"), (n + 1).to_string(), "attempts numbered 1, 2, …: {attempts:?}");
        assert_eq!((s.trace_id.as_str(), s.parent_span_id.as_str()), (TRACE_ID, WRITER_SPAN));
        let last = n + 1 == attempts.len();
        let (outcome, status) =
            if last { ("delivered", StatusCode::Unset) } else { ("retry", StatusCode::Error) };
        assert_eq!(s.attr("wharf.outcome"), outcome, "{s:?}");
        assert_eq!(s.status, status as i32, "{s:?}");
    }
}

#[test]
fn a_failing_collector_changes_nothing_for_writes_and_delivery() {
    let failing = Receiver::answering(503);
    let sink = HttpSink::start();
    let w =
        Wharf::start_with_server(&tracing_server(&failing.url()), &sink.namespace("orders", 1, ""), "all");

    for n in 0..3 {
        write(&w, "a", format!("m{n}").as_bytes(), Some(&traceparent()));
    }
    eventually(WAIT, "every message delivered", || (sink.accepted_bodies().len() == 3).then_some(()));
    eventually(WAIT, "the failed export counted", || {
        w.metric("wharf_otlp_export_failures_total", &[]).filter(|n| *n >= 1.0)
    });
    assert!(w.log().contains("spans not exported to the otlp collector"), "logged: {}", w.log());
}

#[test]
fn spans_still_queued_at_a_graceful_shutdown_are_flushed_before_exit() {
    let receiver = Receiver::start();
    let sink = HttpSink::start();
    let mut w =
        Wharf::start_with_server(&tracing_server(&receiver.url()), &sink.namespace("orders", 1, ""), "all");

    write(&w, "a", b"last words", Some(&traceparent()));
    eventually(WAIT, "the message delivered", || (sink.accepted().len() == 1).then_some(()));
    // At once: the delivery span is most likely still queued (spans are
    // posted once a second). Run alone with OTEL_BSP_SCHEDULE_DELAY=60000,
    // this test is strict: only the flush at shutdown can post them.
    w.terminate();
    assert_eq!(w.wait_exit(WAIT), Some(0), "a clean exit");
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "wharf.append"), "{names:?}");
    assert!(names.iter().any(|n| n == "wharf.deliver"), "{names:?}");
}
