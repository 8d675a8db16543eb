//! Bindings for `wharf:target@0.2.0`, kept so plugins built against it keep
//! loading. The host's (0.4.0) batch is converted for the call: 0.2.0 has no
//! `record`, so it is left out (a 0.2.0 plugin cannot mirror the log).
//! Outcomes convert back field by field; 0.2.0 has no `halt`.

use super::sandbox::StoreState;
use super::v0_4 as current;

wasmtime::component::bindgen!({
    path: "../../wit/0.2.0",
    world: "target",
    exports: { default: async },
});

use wharf::target::types::Retry;

/// The host's batch as 0.2.0 sees it.
pub fn batch_to_v0_2(batch: &current::Batch) -> Batch {
    Batch {
        messages: batch.messages.iter().map(message_to_v0_2).collect(),
        transaction_id: batch.transaction_id.clone(),
    }
}

fn message_to_v0_2(m: &current::Message) -> Message {
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
    }
}

/// A 0.2.0 outcome as the host's.
pub fn outcome_from_v0_2(o: Outcome) -> current::Outcome {
    match o {
        Outcome::Delivered => current::Outcome::Delivered,
        Outcome::Retry(Retry { reason, after_ms }) => {
            current::Outcome::Retry(current::Retry { reason, after_ms })
        }
        Outcome::Reject(reason) => current::Outcome::Reject(reason),
    }
}

/// A 0.2.0 `plugin-info` as the host's.
pub fn info_from_v0_2(i: PluginInfo) -> current::PluginInfo {
    current::PluginInfo { name: i.name, version: i.version }
}

super::host_calls::forward_host!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_every_field_but_the_record_for_a_0_2_plugin() {
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
            record: None,
        };
        let old = batch_to_v0_2(&current::Batch { messages: vec![m.clone()], transaction_id: None });
        let o = &old.messages[0];
        assert_eq!(
            (&o.id, o.sequence, &o.payload, o.replays, o.written_at_ms),
            (&m.id, 7, &m.payload, 2, 42)
        );
        assert_eq!(
            (&o.key, &o.headers, &o.idempotency_key, o.attempt),
            (&m.key, &m.headers, &m.idempotency_key, 3)
        );
    }

    #[test]
    fn outcomes_of_a_0_2_plugin_mean_the_same_to_the_host() {
        let retry = outcome_from_v0_2(Outcome::Retry(Retry { reason: "busy".into(), after_ms: Some(7) }));
        assert!(
            matches!(retry, current::Outcome::Retry(current::Retry { after_ms: Some(7), .. })),
            "{retry:?}"
        );
        let reject = outcome_from_v0_2(Outcome::Reject("bad".into()));
        assert!(matches!(reject, current::Outcome::Reject(ref r) if r == "bad"), "{reject:?}");
        assert!(matches!(outcome_from_v0_2(Outcome::Delivered), current::Outcome::Delivered));
    }
}
