//! `allow_http` entries: which URLs a plugin may reach over wasi:http.
//!
//! An entry is parsed once into scheme, host, port and path. A request is
//! allowed only when
//! - its scheme, host and port equal the entry's exactly (scheme and host
//!   compared case-insensitively, a trailing dot on the host ignored, the
//!   port defaulted from the scheme: 80 for http, 443 for https);
//! - its path equals the entry's path, or continues it at a `/` boundary
//!   (`/api` allows `/api` and `/api/x`, never `/apix`; an entry without a
//!   path allows every path);
//! - it carries no userinfo (`user@host`) and no `.` or `..` path segment,
//!   plain or percent-encoded, that could climb out of the entry's path.
//!
//! A string prefix is not enough: `http://127.0.0.1:1` would allow
//! `http://127.0.0.1:17170/`.

use http::Uri;

/// One parsed `allow_http` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRule {
    scheme: String,
    host: String,
    port: u16,
    /// Without a trailing `/`; empty allows every path.
    path: String,
}

/// A URL's parts as compared: scheme, host, port, path.
type Parts = (String, String, u16, String);

impl UrlRule {
    /// Parses an entry: `http(s)://host[:port][/path]`, nothing else.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let uri: Uri = entry.parse().map_err(|e| format!("{entry:?} is not a URL: {e}"))?;
        if uri.query().is_some() || entry.contains('#') {
            return Err(format!("{entry:?}: a query or fragment cannot be allowed"));
        }
        let (scheme, host, port, path) = parts(&uri)
            .ok_or_else(|| format!("{entry:?} must be http:// or https:// with a host, and no user@ part"))?;
        let path = path.trim_end_matches('/').to_string();
        Ok(Self { scheme, host, port, path })
    }

    /// Whether a request to `uri` may go out.
    pub fn allows(&self, uri: &Uri) -> bool {
        let Some((scheme, host, port, path)) = parts(uri) else { return false };
        if scheme != self.scheme || host != self.host || port != self.port || climbs(&path) {
            return false;
        }
        self.path.is_empty()
            || path == self.path
            || path.strip_prefix(&self.path).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Scheme, host, port and path of an absolute http(s) URL without userinfo.
fn parts(uri: &Uri) -> Option<Parts> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_string();
    if host.is_empty() {
        return None;
    }
    let port = authority.port_u16().unwrap_or(default_port);
    Some((scheme, host, port, uri.path().to_string()))
}

/// Whether a path has a `.` or `..` segment (also percent-encoded).
fn climbs(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(rule: &str, url: &str) -> bool {
        UrlRule::parse(rule).expect("rule").allows(&url.parse().expect("uri"))
    }

    #[test]
    fn a_rule_is_not_a_string_prefix() {
        assert!(allowed("http://127.0.0.1:1", "http://127.0.0.1:1/hook"));
        assert!(!allowed("http://127.0.0.1:1", "http://127.0.0.1:17170/v1/status"));
        assert!(!allowed("http://127.0.0.1:1", "http://127.0.0.1:10/"));
        assert!(!allowed("http://example.com", "http://example.com.evil.net/"));
    }

    #[test]
    fn ports_default_from_the_scheme() {
        assert!(allowed("http://example.com", "http://example.com:80/x"));
        assert!(allowed("https://example.com:443/", "https://example.com/x"));
        assert!(!allowed("http://example.com", "https://example.com/x"));
        assert!(!allowed("http://example.com", "http://example.com:8080/x"));
    }

    #[test]
    fn paths_match_at_a_slash_boundary_and_never_climb() {
        assert!(allowed("http://h/api", "http://h/api"));
        assert!(allowed("http://h/api/", "http://h/api/v1/x"));
        assert!(!allowed("http://h/api", "http://h/apix"));
        assert!(!allowed("http://h/api", "http://h/api/../admin"));
        assert!(!allowed("http://h/api", "http://h/api/%2E%2e/admin"));
        assert!(!allowed("http://h/api", "http://h/"));
    }

    #[test]
    fn userinfo_case_ipv6_and_a_trailing_dot() {
        assert!(!allowed("http://127.0.0.1:1", "http://127.0.0.1:1@evil.net/"));
        assert!(!allowed("http://h", "http://user:pw@h/"));
        assert!(allowed("http://h", "HTTP://H/x"));
        assert!(allowed("HTTP://Example.COM", "http://example.com/"));
        assert!(allowed("http://example.com", "http://example.com./"));
        assert!(allowed("http://[::1]:8080", "http://[::1]:8080/x"));
        assert!(!allowed("http://[::1]:8080", "http://[::1]:8081/x"));
        assert!(!allowed("http://[::1]:8080", "http://127.0.0.1:8080/x"));
    }

    #[test]
    fn entries_that_cannot_be_rules_are_refused() {
        for bad in ["127.0.0.1:80", "ftp://h/", "http://u:p@h/", "http://h/?k=v", "http://h/#f", "http:///x"]
        {
            assert!(UrlRule::parse(bad).is_err(), "{bad}");
        }
    }
}
