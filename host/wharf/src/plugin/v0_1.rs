//! Bindings for `wharf:target@0.1.0`, kept so plugins built against it keep
//! loading. The host's (0.4.0) batch is converted for the call: 0.1.0 has no
//! `replays` nor `record`, so they are left out. Outcomes are the same in both versions and
//! are converted back field by field.

use super::sandbox::StoreState;
use super::v0_4 as current;

wasmtime::component::bindgen!({
    path: "../../wit/0.1.0",
    world: "target",
    exports: { default: async },
});

use wharf::target::types::Retry;

/// The host's batch as 0.1.0 sees it.
pub fn batch_to_v0_1(batch: &current::Batch) -> Batch {
    Batch {
        messages: batch.messages.iter().map(message_to_v0_1).collect(),
        transaction_id: batch.transaction_id.clone(),
    }
}

fn message_to_v0_1(m: &current::Message) -> Message {
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
        written_at_ms: m.written_at_ms,
    }
}

/// A 0.1.0 outcome as the host's.
pub fn outcome_from_v0_1(o: Outcome) -> current::Outcome {
    match o {
        Outcome::Delivered => current::Outcome::Delivered,
        Outcome::Retry(Retry { reason, after_ms }) => {
            current::Outcome::Retry(current::Retry { reason, after_ms })
        }
        Outcome::Reject(reason) => current::Outcome::Reject(reason),
    }
}

super::host_calls::forward_host!();

#[cfg(test)]
mod tests {
    use super::*;

    fn message(replays: u32) -> current::Message {
        current::Message {
            id: "1-7".into(),
            namespace: "hooks".into(),
            partition: 1,
            sequence: 7,
            key: Some("k".into()),
            payload: b"p".to_vec(),
            headers: vec![("h".into(), "v".into())],
            idempotency_key: Some("idem".into()),
            attempt: 3,
            replays,
            written_at_ms: 42,
            record: None,
        }
    }

    #[test]
    fn a_batch_keeps_every_field_but_replays_for_a_0_1_plugin() {
        let batch = current::Batch { messages: vec![message(2)], transaction_id: Some("tx".into()) };
        let old = batch_to_v0_1(&batch);
        assert_eq!(old.transaction_id.as_deref(), Some("tx"));
        let m = &old.messages[0];
        let want = message(2);
        assert_eq!(
            (&m.id, &m.namespace, m.partition, m.sequence, &m.key, &m.payload),
            (&want.id, &want.namespace, want.partition, want.sequence, &want.key, &want.payload)
        );
        assert_eq!(
            (&m.headers, &m.idempotency_key, m.attempt, m.written_at_ms),
            (&want.headers, &want.idempotency_key, want.attempt, want.written_at_ms)
        );
    }

    #[test]
    fn outcomes_of_a_0_1_plugin_mean_the_same_to_the_host() {
        assert!(matches!(outcome_from_v0_1(Outcome::Delivered), current::Outcome::Delivered));
        let retry = outcome_from_v0_1(Outcome::Retry(Retry { reason: "busy".into(), after_ms: Some(7) }));
        assert!(
            matches!(retry, current::Outcome::Retry(current::Retry { ref reason, after_ms: Some(7) }) if reason == "busy"),
            "{retry:?}"
        );
        let reject = outcome_from_v0_1(Outcome::Reject("bad".into()));
        assert!(matches!(reject, current::Outcome::Reject(ref r) if r == "bad"), "{reject:?}");
    }
}
