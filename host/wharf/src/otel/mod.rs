//! The host's spans and their optional OTLP/HTTP export (issue 19;
//! docs/observability.md, "Traces").
//!
//! A message written with a W3C `traceparent` (stored as a message header,
//! `services::trace`) gets host spans, each a child of the writer's span:
//! - `wharf.append`: per message of a write, from the request until the
//!   message is durable (or its append failed);
//! - `wharf.deliver`: per message per delivery attempt (one plugin call),
//!   with the attempt number and the outcome.
//!
//! Invariants:
//! - Off (no `server.tracing.otlp_endpoint`): no span is made; the write
//!   path and each plugin call pay one check of a `OnceLock`.
//! - Only traced messages get spans, and only when the writer sampled them
//!   (flag `01`): the SDK's default parent-based sampler.
//! - Export never blocks the data path: an ended span goes into a bounded
//!   queue (a full queue drops it) and a background thread batches and
//!   posts them. A failed export is counted
//!   (`wharf_otlp_export_failures_total`), logged at most once a minute,
//!   and dropped.
//! - A graceful shutdown flushes what is queued, waiting at most 5 s.

use std::sync::OnceLock;

use opentelemetry_sdk::trace::SdkTracer;

mod context;
mod export;
mod spans;

pub use context::TraceParent;
pub use export::start;
pub use spans::{AppendSpans, Appended, DeliverySpans};

/// Set once by [`start`] when spans are exported; unset, no span is made.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}
