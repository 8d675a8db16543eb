//! W3C trace context on writes: a `traceparent` (and `tracestate`) sent
//! with a write, as HTTP headers or gRPC metadata, is stored with each of
//! its messages as message headers of the same names, so it reaches the
//! target: plugins see it in `message.headers`, and the http plugin
//! forwards message headers as HTTP headers.
//!
//! A header the message sets itself wins. An invalid `traceparent` is
//! ignored, as the W3C spec asks (the trace restarts), and so is its
//! `tracestate`.
//!
//! The host's own spans (append, each delivery attempt) are children of
//! the stored `traceparent`; they are made and exported by `crate::otel`.

use super::write::WriteRequest;
use crate::otel::TraceParent;

/// Longest `tracestate` kept (the spec's 32 members fit in 512 bytes).
const MAX_TRACESTATE: usize = 512;

/// A valid trace context from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

impl TraceContext {
    /// The context in these header values, if `traceparent` is valid.
    pub fn from_values(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = traceparent.map(str::trim).filter(|t| TraceParent::parse(t).is_some())?;
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| {
                !s.is_empty() && s.len() <= MAX_TRACESTATE && s.bytes().all(|b| (0x20..0x7f).contains(&b))
            })
            .map(str::to_string);
        Some(Self { traceparent: traceparent.to_string(), tracestate })
    }

    /// Adds the context to a message's headers, unless it has its own.
    pub fn apply(&self, req: &mut WriteRequest) {
        req.headers.entry("traceparent".into()).or_insert_with(|| self.traceparent.clone());
        if let Some(state) = &self.tracestate {
            req.headers.entry("tracestate".into()).or_insert_with(|| state.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_and_a_message_header_wins() {
        let ctx = TraceContext::from_values(Some(TP), Some("congo=t61rcWkgMzE")).expect("valid");
        let mut req = WriteRequest::default();
        ctx.apply(&mut req);
        assert_eq!(req.headers["traceparent"], TP);
        assert_eq!(req.headers["tracestate"], "congo=t61rcWkgMzE");
        let mut own = WriteRequest::default();
        own.headers.insert("traceparent".into(), "mine".into());
        ctx.apply(&mut own);
        assert_eq!(own.headers["traceparent"], "mine");
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::from_values(Some(bad), None), None, "{bad}");
        }
        assert!(
            TraceContext::from_values(Some(&TP.replacen("00", "01", 1)), None).is_some(),
            "a later version"
        );
    }
}
