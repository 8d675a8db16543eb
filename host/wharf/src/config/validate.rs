//! Value checks: zero, inverted or out-of-range settings that would make
//! `serve` misbehave are config errors, each naming its dotted key (relative
//! to the table checked; the caller adds the prefix).

use super::{Namespace, Server, Target};
use wharf_queue::QueueConfig;

/// A failed check: the key (relative) and the problem.
pub(super) type Problem = (String, String);

fn fail(key: &str, problem: impl Into<String>) -> Result<(), Problem> {
    Err((key.to_string(), problem.into()))
}

/// Requires `value ≥ 1`.
fn at_least_one(key: &str, value: u64) -> Result<(), Problem> {
    if value == 0 { fail(key, "must be at least 1") } else { Ok(()) }
}

pub(super) fn server(s: &Server) -> Result<(), Problem> {
    if s.segment_max_bytes < 4096 {
        return fail("segment_max_bytes", "must be at least 4096");
    }
    at_least_one("max_connections", s.max_connections as u64)?;
    at_least_one("header_read_timeout_ms", s.header_read_timeout_ms)?;
    at_least_one("body_read_timeout_ms", s.body_read_timeout_ms)?;
    // Port 0 is the OS's pick: two picks never collide.
    if s.grpc == Some(s.http) && s.http.port() != 0 {
        return fail("grpc", format!("{} is also `server.http`; give the gRPC API its own port", s.http));
    }
    super::telemetry::validate(&s.tracing).map_err(|(k, p)| (format!("tracing.{k}"), p))?;
    Ok(())
}

/// The namespace's own settings (not its targets).
pub(super) fn namespace(ns: &Namespace) -> Result<(), Problem> {
    if !(1..=1024).contains(&ns.partitions) {
        return fail("partitions", "must be between 1 and 1024");
    }
    let d = &ns.delivery;
    at_least_one("delivery.batch_max", d.batch_max as u64)?;
    if d.max_in_flight < d.batch_max {
        return fail(
            "delivery.max_in_flight",
            format!("{} is less than delivery.batch_max ({})", d.max_in_flight, d.batch_max),
        );
    }
    let r = &ns.retry;
    at_least_one("retry.max_attempts", r.max_attempts.into())?;
    if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
        return fail("retry.multiplier", "must be at least 1.0");
    }
    if r.initial_backoff_ms > r.max_backoff_ms {
        return fail(
            "retry.max_backoff_ms",
            format!("{} is less than retry.initial_backoff_ms ({})", r.max_backoff_ms, r.initial_backoff_ms),
        );
    }
    at_least_one("limits.max_backlog_messages", ns.limits.max_backlog_messages)?;
    at_least_one("limits.max_backlog_bytes", ns.limits.max_backlog_bytes)?;
    at_least_one("breaker.failures", ns.breaker.failures.into())?;
    at_least_one("idempotency.window_ms", ns.idempotency.window_ms)?;
    let t = &ns.transactions;
    at_least_one("transactions.ttl_ms", t.ttl_ms)?;
    at_least_one("transactions.max_open", t.max_open as u64)?;
    at_least_one("transactions.max_chunks", t.max_chunks.into())?;
    if !(1..=32 << 20).contains(&t.max_bytes) {
        return fail("transactions.max_bytes", "must be between 1 and 33554432 (32 MiB)");
    }
    if let Some(r) = &ns.retention {
        retention(r, ns.queue.as_ref().is_some_and(|q| *q != QueueConfig::Embedded))?;
    }
    match &ns.queue {
        Some(q) => queue(q).map_err(|(k, p)| (format!("queue.{k}"), p)),
        None => Ok(()),
    }
}

fn retention(r: &super::RetentionPolicy, queue: bool) -> Result<(), Problem> {
    if queue {
        return fail(
            "retention",
            "applies to the embedded log; a Kafka topic or SQS queue keeps its own retention",
        );
    }
    if r.max_age_ms.is_none() && r.max_bytes.is_none() {
        return fail(
            "retention",
            "set max_age_ms, max_bytes or both (unbounded history would fill the disk)",
        );
    }
    at_least_one("retention.max_age_ms", r.max_age_ms.unwrap_or(1))?;
    at_least_one("retention.max_bytes", r.max_bytes.unwrap_or(1))
}

fn queue(q: &QueueConfig) -> Result<(), Problem> {
    match q {
        QueueConfig::Embedded => Ok(()),
        QueueConfig::Kafka(k) => {
            if k.brokers.split(',').any(|b| b.trim().is_empty()) {
                return fail("brokers", "give one or more host:port, comma separated");
            }
            if k.topic.trim().is_empty() {
                return fail("topic", "must not be empty");
            }
            at_least_one("partitions", k.partitions.max(0) as u64)?;
            at_least_one("message_timeout_ms", k.message_timeout_ms)?;
            at_least_one("session_timeout_ms", k.session_timeout_ms)
        }
        QueueConfig::Sqs(s) => {
            if s.queue.trim().is_empty() {
                return fail("queue", "must not be empty");
            }
            if !(1..=43_200).contains(&s.visibility_timeout_secs) {
                return fail("visibility_timeout_secs", "must be between 1 and 43200 (12 h, the SQS limit)");
            }
            Ok(())
        }
    }
}

/// One target table's limits.
pub(super) fn target(t: &Target) -> Result<(), Problem> {
    at_least_one("poison_after", t.poison_after.into())?;
    at_least_one("quarantine_after", t.quarantine_after.into())?;
    at_least_one("call_timeout_ms", t.call_timeout_ms)?;
    if !(1..=4096).contains(&t.memory_limit_mib) {
        return fail("memory_limit_mib", "must be between 1 and 4096 (a 32-bit plugin's address space)");
    }
    at_least_one("reconcile_interval_ms", t.reconcile_interval_ms.unwrap_or(1))?;
    if let Some(budget) = t.reconcile_budget_ms {
        at_least_one("reconcile_budget_ms", budget)?;
        if budget > t.call_timeout_ms {
            return fail(
                "reconcile_budget_ms",
                format!(
                    "{budget} is more than call_timeout_ms ({}), the deadline that would stop the pass",
                    t.call_timeout_ms
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(extra: &str) -> Result<(), Problem> {
        let n: Namespace =
            toml::from_str(&format!("{extra}\n[target]\nplugin = \"p.wasm\"\n")).expect("parses");
        namespace(&n)
    }

    #[test]
    fn the_defaults_pass() {
        assert_eq!(ns(""), Ok(()));
        assert_eq!(server(&Server::default()), Ok(()));
    }

    #[test]
    fn zero_and_inverted_values_name_their_key() {
        let key = |extra: &str| ns(extra).expect_err(extra).0;
        assert_eq!(key("[retry]\ninitial_backoff_ms = 500\nmax_backoff_ms = 100"), "retry.max_backoff_ms");
        assert_eq!(key("[breaker]\nfailures = 0"), "breaker.failures");
        assert_eq!(key("[idempotency]\nwindow_ms = 0"), "idempotency.window_ms");
        assert_eq!(key("[delivery]\nbatch_max = 10\nmax_in_flight = 5"), "delivery.max_in_flight");
        assert_eq!(key("[limits]\nmax_backlog_messages = 0"), "limits.max_backlog_messages");
        assert_eq!(
            key("queue = { kind = \"kafka\", brokers = \"b:1\", topic = \"t\", partitions = 0 }"),
            "queue.partitions"
        );
        let t: Target = toml::from_str("plugin = \"p\"\ncall_timeout_ms = 0").expect("parses");
        assert_eq!(target(&t).expect_err("zero").0, "call_timeout_ms");
        let t: Target = toml::from_str("plugin = \"p\"\nmemory_limit_mib = 0").expect("parses");
        assert_eq!(target(&t).expect_err("zero").0, "memory_limit_mib");
    }

    #[test]
    fn reconcile_keys_are_optional_and_checked_against_the_call_deadline() {
        let t =
            |extra: &str| -> Target { toml::from_str(&format!("plugin = \"p\"\n{extra}")).expect("parses") };
        let plain = t("");
        assert_eq!(target(&plain), Ok(()));
        assert_eq!((plain.reconcile_interval_ms, plain.reconcile_budget_ms()), (None, 5_000));
        let set = t("reconcile_interval_ms = 200\nreconcile_budget_ms = 700\ncall_timeout_ms = 1000");
        assert_eq!(target(&set), Ok(()));
        assert_eq!((set.reconcile_interval_ms, set.reconcile_budget_ms()), (Some(200), 700));
        assert_eq!(target(&t("reconcile_interval_ms = 0")).expect_err("zero").0, "reconcile_interval_ms");
        assert_eq!(target(&t("reconcile_budget_ms = 0")).expect_err("zero").0, "reconcile_budget_ms");
        let (key, problem) =
            target(&t("reconcile_budget_ms = 2000\ncall_timeout_ms = 1000")).expect_err("over");
        assert_eq!(key, "reconcile_budget_ms");
        assert!(problem.contains("call_timeout_ms (1000)"), "{problem}");
    }
}
