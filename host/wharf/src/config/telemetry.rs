//! `[server.tracing]`: the host's spans and their optional OTLP/HTTP export
//! (docs/observability.md#traces). Absent endpoint: no spans are made.

use serde::Deserialize;

/// Path of the OTLP/HTTP traces endpoint under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// An OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (spans go to
    /// `<url>/v1/traces`). Default: none, no spans are made or exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans. Default `wharf`.
    pub service_name: String,
}

impl Default for Tracing {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "wharf".into() }
    }
}

impl Tracing {
    /// Where spans are posted: the endpoint with `/v1/traces` added,
    /// unless it already ends with it.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim_end_matches('/');
        Some(match base.ends_with(TRACES_PATH) {
            true => base.to_string(),
            false => format!("{base}{TRACES_PATH}"),
        })
    }
}

/// The key (relative to `server.tracing`) and the problem.
pub(super) fn validate(t: &Tracing) -> Result<(), (String, String)> {
    let fail = |key: &str, problem: String| Err((key.to_string(), problem));
    if t.service_name.trim().is_empty() {
        return fail("service_name", "must not be empty".into());
    }
    let (Some(given), Some(url)) = (&t.otlp_endpoint, t.traces_url()) else { return Ok(()) };
    match url.parse::<http::Uri>() {
        Err(e) => fail("otlp_endpoint", format!("{given:?} is not a URL: {e}")),
        Ok(u) if u.scheme_str() != Some("http") => fail(
            "otlp_endpoint",
            format!(
                "{given:?}: only http:// is supported (OTLP/HTTP to a collector or agent beside the sidecar)"
            ),
        ),
        Ok(u) if u.host().is_none_or(str::is_empty) => {
            fail("otlp_endpoint", format!("{given:?} has no host"))
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(endpoint: &str) -> Tracing {
        Tracing { otlp_endpoint: Some(endpoint.into()), ..Tracing::default() }
    }

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(Tracing::default().traces_url(), None);
        for given in ["http://127.0.0.1:4318", "http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"] {
            assert_eq!(
                with(given).traces_url().as_deref(),
                Some("http://127.0.0.1:4318/v1/traces"),
                "{given}"
            );
        }
        assert_eq!(with("http://c:4318/otlp").traces_url().as_deref(), Some("http://c:4318/otlp/v1/traces"));
    }

    #[test]
    fn only_an_http_url_with_a_host_is_accepted() {
        assert!(validate(&with("http://collector:4318")).is_ok());
        for bad in ["https://collector:4318", "collector:4318", "http://", "not a url"] {
            let (key, _) = validate(&with(bad)).expect_err(bad);
            assert_eq!(key, "otlp_endpoint", "{bad}");
        }
        let blank = Tracing { service_name: " ".into(), ..Tracing::default() };
        assert_eq!(validate(&blank).map_err(|(k, _)| k), Err("service_name".to_string()));
    }
}
