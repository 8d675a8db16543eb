//! The W3C trace context of a message: its `traceparent` (and `tracestate`)
//! header, as the writer's span that the host's spans are children of.

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The ids of a `traceparent`:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase, ids
/// not all zero; a later version may append fields after a `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    pub fn parse(t: &str) -> Option<Self> {
        let fields: Vec<&str> = t.split('-').collect();
        let [version, trace_id, span_id, flags, rest @ ..] = fields.as_slice() else { return None };
        let ok = lower_hex(version, 2)
            && *version != "ff"
            && (*version != "00" || rest.is_empty())
            && lower_hex(trace_id, 32)
            && lower_hex(span_id, 16)
            && lower_hex(flags, 2);
        if !ok {
            return None;
        }
        let p = Self {
            trace_id: hex::decode(trace_id).ok()?.try_into().ok()?,
            span_id: hex::decode(span_id).ok()?.try_into().ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (p.trace_id != [0; 16] && p.span_id != [0; 8]).then_some(p)
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The parent context of a message's spans, from its headers (names
/// compared without case); none without a valid `traceparent`. A
/// `tracestate` that does not parse is dropped, the parent kept.
pub(super) fn parent_of(headers: &[(String, String)]) -> Option<Context> {
    let header =
        |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
    let p = TraceParent::parse(header("traceparent")?)?;
    let state = header("tracestate").and_then(|s| TraceState::from_str(s).ok()).unwrap_or_default();
    let remote = SpanContext::new(
        TraceId::from_bytes(p.trace_id),
        SpanId::from_bytes(p.span_id),
        TraceFlags::new(p.flags),
        true,
        state,
    );
    Some(Context::new().with_remote_span_context(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_traceparent_becomes_a_remote_parent_with_its_flags_and_state() {
        let headers = vec![
            (
                "TraceParent".to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            ),
            ("tracestate".to_string(), "congo=t61rcWkgMzE".to_string()),
        ];
        let cx = parent_of(&headers).expect("parent");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
        assert!(parent_of(&[("traceparent".into(), "00-x-y-01".into())]).is_none());
        assert!(parent_of(&[]).is_none());
    }
}
