//! The same namespace on Kafka (tansu) and SQS (moto): a processor and two
//! consumers in separate processes share it with no loss.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, b64, eventually, start_moto, start_tansu};

fn namespace(queue: &str, sink: &HttpSink) -> String {
    let extra =
        format!("queue = {queue}\n[namespaces.orders.retry]\ninitial_backoff_ms = 10\nmax_backoff_ms = 100");
    sink.namespace("orders", 1, &extra)
}

fn processor_and_two_consumers_share_the_queue(queue: &str) {
    let sink = HttpSink::start();
    let cfg = namespace(queue, &sink);
    let processor = Wharf::start_as(&cfg, "processor");
    let consumers = [Wharf::start_as(&cfg, "consumer"), Wharf::start_as(&cfg, "consumer")];
    let refused = consumers[0].write("orders", Some("k"), b"x");
    assert_eq!(refused.body["error"]["code"], json!("role_consumer"), "{:?}", refused.body);

    let mut sent = Vec::new();
    for i in 0..60 {
        let v = format!("msg-{i}");
        let r = processor.post(
            "/v1/namespaces/orders/messages",
            &json!({"key": format!("k{}", i % 6), "payload": b64(v.as_bytes())}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["durable"], json!(true));
        sent.push(v);
    }
    // A rejected message reaches the queue's DLQ instead of looping.
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    assert_eq!(processor.write("orders", Some("poison"), b"bad").status, 200);

    eventually(Duration::from_secs(120), "every message delivered by the consumers", || {
        let got: HashSet<Vec<u8>> = sink.accepted().into_iter().map(|r| r.body).collect();
        sent.iter().all(|v| got.contains(v.as_bytes())).then_some(())
    });
    let delivered_by = |w: &Wharf| {
        let m = w.get("/metrics").body.as_str().unwrap_or_default().to_string();
        m.lines()
            .find(|l| l.starts_with("wharf_delivered_total{namespace=\"orders\",target=\"default\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    eventually(Duration::from_secs(30), "the consumers to count 60 deliveries", || {
        (consumers.iter().map(delivered_by).sum::<f64>() >= 60.0).then_some(())
    });
    assert_eq!(delivered_by(&processor), 0.0, "the processor must not deliver");
}

#[test]
fn kafka_processor_and_two_consumers_lose_nothing() {
    let tansu = start_tansu();
    processor_and_two_consumers_share_the_queue(&format!(
        r#"{{ kind = "kafka", brokers = "127.0.0.1:{}", topic = "orders", partitions = 2 }}"#,
        tansu.port
    ));
}

#[test]
fn sqs_fifo_processor_and_two_consumers_lose_nothing() {
    let moto = start_moto();
    processor_and_two_consumers_share_the_queue(&format!(
        r#"{{ kind = "sqs", endpoint = "http://127.0.0.1:{}", queue = "orders", fifo = true }}"#,
        moto.port
    ));
}
