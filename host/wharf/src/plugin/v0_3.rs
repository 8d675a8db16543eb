//! Bindings for `wharf:target@0.3.0`, kept so plugins built against it keep
//! loading. Its message, batch and outcome have the same fields as the
//! host's (0.4.0), but they are other Rust types: the batch is copied for
//! the call and outcomes convert back. 0.3.0 has no `reconcile`.

use super::sandbox::StoreState;
use super::v0_4 as current;

wasmtime::component::bindgen!({
    path: "../../wit/0.3.0",
    world: "target",
    exports: { default: async },
});

use wharf::target::types::{LogRecord, Retry};

/// The host's batch as 0.3.0 sees it (the same fields).
pub fn batch_to_v0_3(batch: &current::Batch) -> Batch {
    Batch {
        messages: batch.messages.iter().map(message_to_v0_3).collect(),
        transaction_id: batch.transaction_id.clone(),
    }
}

fn message_to_v0_3(m: &current::Message) -> Message {
    Message {
        id: m.id.clone(),
        namespace: m.namespace.clone(),
        partition: m.partition,
        sequence: m.sequence,
        key: m.key.clone(),
        payload: m.payload.clone(),
        headers: m.headers.clone(),
        idempotency_key: m.idempotency_key.clone(),
        attempt: m.attempt,
        replays: m.replays,
        written_at_ms: m.written_at_ms,
        record: m.record.as_ref().map(|r| LogRecord {
            bytes: r.bytes.clone(),
            checksum: r.checksum,
            digest: r.digest.clone(),
            prev_digest: r.prev_digest.clone(),
        }),
    }
}

/// A 0.3.0 outcome as the host's.
pub fn outcome_from_v0_3(o: Outcome) -> current::Outcome {
    match o {
        Outcome::Delivered => current::Outcome::Delivered,
        Outcome::Retry(Retry { reason, after_ms }) => {
            current::Outcome::Retry(current::Retry { reason, after_ms })
        }
        Outcome::Reject(reason) => current::Outcome::Reject(reason),
        Outcome::Halt(reason) => current::Outcome::Halt(reason),
    }
}

/// A 0.3.0 `plugin-info` as the host's.
pub fn info_from_v0_3(i: PluginInfo) -> current::PluginInfo {
    current::PluginInfo { name: i.name, version: i.version }
}

super::host_calls::forward_host!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_every_field_and_the_record_for_a_0_3_plugin() {
        let m = current::Message {
            id: "1-7".into(),
            namespace: "hooks".into(),
            partition: 1,
            sequence: 7,
            key: Some("k".into()),
            payload: b"p".to_vec(),
            headers: vec![("h".into(), "v".into())],
            idempotency_key: Some("idem".into()),
            attempt: 3,
            replays: 2,
            written_at_ms: 42,
            record: Some(current::LogRecord {
                bytes: b"rec".to_vec(),
                checksum: 9,
                digest: "d".into(),
                prev_digest: "p".into(),
            }),
        };
        let old =
            batch_to_v0_3(&current::Batch { messages: vec![m.clone()], transaction_id: Some("t".into()) });
        let o = &old.messages[0];
        assert_eq!(old.transaction_id.as_deref(), Some("t"));
        assert_eq!(
            (&o.id, &o.namespace, o.partition, o.sequence, &o.payload, o.replays, o.written_at_ms),
            (&m.id, &m.namespace, 1, 7, &m.payload, 2, 42)
        );
        assert_eq!(
            (&o.key, &o.headers, &o.idempotency_key, o.attempt),
            (&m.key, &m.headers, &m.idempotency_key, 3)
        );
        let r = o.record.as_ref().expect("record");
        assert_eq!((&r.bytes[..], r.checksum, &r.digest[..], &r.prev_digest[..]), (&b"rec"[..], 9, "d", "p"));
    }

    #[test]
    fn outcomes_of_a_0_3_plugin_mean_the_same_to_the_host() {
        let retry = outcome_from_v0_3(Outcome::Retry(Retry { reason: "busy".into(), after_ms: Some(7) }));
        assert!(
            matches!(retry, current::Outcome::Retry(current::Retry { after_ms: Some(7), .. })),
            "{retry:?}"
        );
        let halt = outcome_from_v0_3(Outcome::Halt("diverged".into()));
        assert!(matches!(halt, current::Outcome::Halt(ref r) if r == "diverged"), "{halt:?}");
        let reject = outcome_from_v0_3(Outcome::Reject("bad".into()));
        assert!(matches!(reject, current::Outcome::Reject(ref r) if r == "bad"), "{reject:?}");
        assert!(matches!(outcome_from_v0_3(Outcome::Delivered), current::Outcome::Delivered));
    }
}
