//! The two host spans, `wharf.append` and `wharf.deliver`. Both are made
//! at their end, with the start time taken before the work, so nothing is
//! held open across an await and a dropped call (an early return) makes no
//! span.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Context, KeyValue};

use super::context::parent_of;
use crate::plugin::{Message, Outcome, PluginError};
use crate::storage::envelope::Envelope;

pub const APPEND: &str = "wharf.append";
pub const DELIVER: &str = "wharf.deliver";

/// A reason carried into a span's status, at most this long.
const MAX_REASON: usize = 256;

/// What a write did with one message, for its append span.
#[derive(Debug, Clone, Copy)]
pub struct Appended<'a> {
    pub message_id: &'a str,
    pub partition: u32,
    pub sequence: u64,
    /// Covered by an fdatasync (or held by the broker) before the reply.
    pub durable: bool,
    /// An idempotency-key duplicate: nothing was appended.
    pub duplicate: bool,
}

/// The append spans of one write, one per traced message.
#[derive(Debug)]
pub struct AppendSpans {
    started: SystemTime,
    /// By request index; empty when nothing is traced (or spans are off).
    parents: Vec<Option<Context>>,
}

impl AppendSpans {
    /// Before the write: the start time and each message's parent.
    pub fn start<E>(envelopes: &[Result<Envelope, E>]) -> Self {
        if super::tracer().is_none() {
            return Self { started: UNIX_EPOCH, parents: Vec::new() };
        }
        let parents: Vec<Option<Context>> =
            envelopes.iter().map(|e| e.as_ref().ok().and_then(|e| parent_of(&e.headers))).collect();
        let parents = if parents.iter().any(Option::is_some) { parents } else { Vec::new() };
        Self { started: SystemTime::now(), parents }
    }

    /// Ends one span per traced message, given every message's result in
    /// request order (an error is its code).
    pub fn finish<'a>(
        self,
        namespace: &str,
        results: impl IntoIterator<Item = Result<Appended<'a>, &'a str>>,
    ) {
        let Some(tracer) = super::tracer() else { return };
        if self.parents.is_empty() {
            return;
        }
        let ended = SystemTime::now();
        for (parent, result) in self.parents.iter().zip(results) {
            let Some(parent) = parent else { continue };
            let mut attributes = vec![KeyValue::new("wharf.namespace", namespace.to_string())];
            let status = match result {
                Ok(a) => {
                    let outcome = match (a.duplicate, a.durable) {
                        (true, _) => "duplicate",
                        (false, true) => "durable",
                        (false, false) => "written",
                    };
                    attributes.extend([
                        KeyValue::new("messaging.message.id", a.message_id.to_string()),
                        KeyValue::new("wharf.partition", i64::from(a.partition)),
                        KeyValue::new("wharf.sequence", a.sequence as i64),
                        KeyValue::new("wharf.outcome", outcome),
                    ]);
                    Status::Unset
                }
                Err(code) => {
                    attributes.extend([
                        KeyValue::new("wharf.outcome", "refused"),
                        KeyValue::new("error.type", code.to_string()),
                    ]);
                    Status::error(code.to_string())
                }
            };
            let mut span = tracer
                .span_builder(APPEND)
                .with_kind(SpanKind::Producer)
                .with_start_time(self.started)
                .with_attributes(attributes)
                .start_with_context(tracer, parent);
            span.set_status(status);
            span.end_with_timestamp(ended);
        }
    }
}

/// The delivery-attempt spans of one plugin call, one per traced message.
#[derive(Debug)]
pub struct DeliverySpans {
    started: SystemTime,
    namespace: String,
    target: String,
    /// Position in the call, parent, and the message's place.
    traced: Vec<(usize, Context, Attempt)>,
}

#[derive(Debug)]
struct Attempt {
    message_id: String,
    partition: u32,
    sequence: u64,
    attempt: u32,
}

impl DeliverySpans {
    /// Before the call: the start time and each traced message.
    pub fn start<'a>(namespace: &str, target: &str, messages: impl IntoIterator<Item = &'a Message>) -> Self {
        let off = || Self {
            started: UNIX_EPOCH,
            namespace: String::new(),
            target: String::new(),
            traced: Vec::new(),
        };
        if super::tracer().is_none() {
            return off();
        }
        let traced: Vec<_> = messages
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let attempt = Attempt {
                    message_id: m.id.clone(),
                    partition: m.partition,
                    sequence: m.sequence,
                    attempt: m.attempt,
                };
                Some((i, parent_of(&m.headers)?, attempt))
            })
            .collect();
        if traced.is_empty() {
            return off();
        }
        Self { started: SystemTime::now(), namespace: namespace.into(), target: target.into(), traced }
    }

    /// Ends the spans with the call's outcome for each message (the
    /// outcomes are in call order; a failed call fails every message).
    pub fn finish(self, result: &Result<Vec<Outcome>, PluginError>) {
        let Some(tracer) = super::tracer() else { return };
        let ended = SystemTime::now();
        for (i, parent, a) in self.traced {
            let (outcome, failure, retry_after) = match result {
                Ok(outcomes) => match outcomes.get(i) {
                    Some(Outcome::Delivered) => ("delivered", None, None),
                    Some(Outcome::Retry(r)) => ("retry", Some(r.reason.as_str()), r.after_ms),
                    Some(Outcome::Reject(reason)) => ("reject", Some(reason.as_str()), None),
                    Some(Outcome::Halt(reason)) => ("halt", Some(reason.as_str()), None),
                    None => ("no_outcome", Some("the plugin gave no outcome for this message"), None),
                },
                Err(e) => (failure_kind(e), None, None),
            };
            let mut attributes = vec![
                KeyValue::new("wharf.namespace", self.namespace.clone()),
                KeyValue::new("wharf.target", self.target.clone()),
                KeyValue::new("wharf.partition", i64::from(a.partition)),
                KeyValue::new("wharf.sequence", a.sequence as i64),
                KeyValue::new("wharf.attempt", i64::from(a.attempt)),
                KeyValue::new("wharf.outcome", outcome),
                KeyValue::new("messaging.message.id", a.message_id),
            ];
            if let Some(ms) = retry_after {
                attributes.push(KeyValue::new("wharf.retry_after_ms", ms as i64));
            }
            let status = match (outcome, failure, result) {
                ("delivered", ..) => Status::Unset,
                (_, Some(reason), _) => Status::error(truncate(reason)),
                (_, None, Err(e)) => Status::error(truncate(&e.to_string())),
                _ => Status::error(outcome),
            };
            let mut span = tracer
                .span_builder(DELIVER)
                .with_kind(SpanKind::Consumer)
                .with_start_time(self.started)
                .with_attributes(attributes)
                .start_with_context(tracer, &parent);
            span.set_status(status);
            span.end_with_timestamp(ended);
        }
    }
}

/// A failed call's kind, as `wharf_plugin_failures_total` names it.
fn failure_kind(e: &PluginError) -> &'static str {
    match e {
        PluginError::Trap(_) => "trap",
        PluginError::Deadline(_) | PluginError::TargetStalled(_) => "deadline",
        PluginError::WrongCount { .. } => "wrong_count",
        PluginError::Init(_) => "init",
        _ => "load",
    }
}

fn truncate(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_string(),
    }
}
