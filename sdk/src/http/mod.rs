//! A small blocking HTTP client.
//!
//! On wasm32 it uses `wasi:http/outgoing-handler` (the host only lets
//! through URLs that start with one of the namespace's `allow_http`
//! prefixes); natively it uses a blocking client so plugins can be tested
//! against a local server. Redirects are not followed.
//!
//! Failures to get a response at all (refused, reset, timed out, denied by
//! the host) are `std::io::Error`s, which convert into [`crate::Error::retry`]
//! with `?`. Any response, whatever its status, is `Ok`. Errors show the
//! URL only through [`crate::redact_url`].
//!
//! ```no_run
//! # fn main() -> Result<(), wharf_sdk::Error> {
//! use std::time::Duration;
//! let resp = wharf_sdk::http::Request::post("http://127.0.0.1:8080/hook")
//!     .header("content-type", "application/json")
//!     .body(b"{}".to_vec())
//!     .timeout(Duration::from_secs(5))
//!     .send()?;
//! assert!(resp.is_success());
//! # Ok(()) }
//! ```

use std::io;
use std::time::Duration;

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod wasm;

/// The default for [`Request::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An outgoing HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Upper-case method, e.g. `"POST"`.
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Limit for connecting and for waiting on the response.
    pub timeout: Duration,
}

impl Request {
    /// A request with any method.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into().to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// Add a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Set the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send it and wait for the whole response.
    pub fn send(self) -> io::Result<Response> {
        send(self)
    }
}

/// A response, body read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names are lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// Send a request and wait for the whole response.
pub fn send(request: Request) -> io::Result<Response> {
    // Validate the URL the same way on both sides, so native tests catch
    // what wasm would refuse.
    let url = Url::parse(&request.url)?;
    #[cfg(target_arch = "wasm32")]
    {
        wasm::send(&request, &url)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = url;
        native::send(&request)
    }
}

/// The parts of an absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    /// `true` for https.
    pub https: bool,
    /// `host[:port]`.
    pub authority: &'a str,
    /// Path and query, at least `/`; the fragment is dropped.
    pub path_and_query: String,
}

impl<'a> Url<'a> {
    /// Split an absolute `http://` or `https://` URL.
    pub fn parse(url: &'a str) -> io::Result<Url<'a>> {
        let bad = |why: &str| {
            let url = crate::redact_url(url);
            io::Error::new(io::ErrorKind::InvalidInput, format!("invalid URL {url:?}: {why}"))
        };
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let path_and_query = match &rest[end..] {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("contains whitespace or a control character"));
        }
        Ok(Url { https, authority, path_and_query })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parse() {
        let u = Url::parse("http://127.0.0.1:8080/hook?x=1#frag").expect("valid");
        assert!(!u.https);
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path_and_query, "/hook?x=1");
        let u = Url::parse("HTTPS://example.com").expect("valid");
        assert!(u.https);
        assert_eq!(u.path_and_query, "/");
        let u = Url::parse("http://h?q").expect("valid");
        assert_eq!(u.authority, "h");
        assert_eq!(u.path_and_query, "/?q");
        for bad in ["ftp://x/", "http://", "http:///p", "http://a b/", "localhost:80/"] {
            let err = Url::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn an_invalid_url_is_named_without_its_secrets() {
        for bad in ["http://bob:hunter2@h/x?api_key=abc123", "ftp://bob:hunter2@h/?api_key=abc123"] {
            let err = Url::parse(bad).expect_err(bad).to_string();
            assert!(!err.contains("hunter2") && !err.contains("abc123") && !err.contains("bob"), "{err}");
            assert!(err.contains("***@h/"), "{err}");
        }
    }
}
