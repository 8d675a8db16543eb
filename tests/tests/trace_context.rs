//! W3C trace context (issue 19): a `traceparent`/`tracestate` sent with a
//! write is stored with the message and forwarded by the http plugin; a
//! message's own header wins; an invalid one is ignored. (gRPC metadata:
//! `grpc.rs`.)

use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, b64, eventually};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn post(w: &Wharf, path: &str, traceparent: &str, body: &serde_json::Value) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent
        .post(&w.url(path))
        .header("traceparent", traceparent)
        .header("tracestate", "congo=t61rcWkgMzE")
        .send_json(body)
        .expect("POST");
    r.status().as_u16()
}

#[test]
fn a_traceparent_on_a_write_reaches_the_target_and_a_messages_own_wins() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("orders", 1, ""));
    let one = json!({"key": "a", "payload": b64(b"one")});
    assert_eq!(post(&w, "/v1/namespaces/orders/messages", TP, &one), 200);
    let own = "00-11111111111111111111111111111111-2222222222222222-00";
    let batch = json!({"messages": [
        {"key": "b", "payload": b64(b"two")},
        {"key": "c", "payload": b64(b"three"), "headers": {"traceparent": own}},
    ]});
    assert_eq!(post(&w, "/v1/namespaces/orders/messages/batch", TP, &batch), 200);
    assert_eq!(
        post(
            &w,
            "/v1/namespaces/orders/messages",
            "not-a-traceparent",
            &json!({"key": "d", "payload": b64(b"four")})
        ),
        200
    );

    let got = eventually(Duration::from_secs(20), "all four delivered", || {
        let got = sink.accepted();
        (got.len() == 4).then_some(got)
    });
    let by_body = |b: &[u8]| got.iter().find(|r| r.body == b).expect("delivered").clone();
    assert_eq!(by_body(b"one").header("traceparent"), Some(TP));
    assert_eq!(by_body(b"one").header("tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(by_body(b"two").header("traceparent"), Some(TP));
    assert_eq!(by_body(b"three").header("traceparent"), Some(own), "the message's own header wins");
    assert_eq!(by_body(b"four").header("traceparent"), None, "an invalid one is ignored");
}
