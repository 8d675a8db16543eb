//! Native (non-wasm) HTTP: a blocking `ureq` client, for tests. No TLS:
//! `https://` URLs fail with an error natively (they work on wasm32, where
//! the host does TLS).

use std::io;

use super::{Request, Response};

/// Bodies larger than this are cut off with an error.
const MAX_RESPONSE_BODY: u64 = 16 * 1024 * 1024;

pub(super) fn send(request: &Request) -> io::Result<Response> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(request.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .allow_non_standard_methods(true)
        .build()
        .into();

    let mut builder =
        ureq::http::Request::builder().method(request.method.as_str()).uri(request.url.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let result = if request.body.is_empty()
        && matches!(request.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS")
    {
        let req = builder.body(ureq::SendBody::none()).map_err(invalid)?;
        agent.run(req)
    } else {
        let req = builder.body(request.body.as_slice()).map_err(invalid)?;
        agent.run(req)
    };
    let mut resp = result.map_err(to_io)?;

    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = if request.method == "HEAD" {
        Vec::new()
    } else {
        resp.body_mut().with_config().limit(MAX_RESPONSE_BODY).read_to_vec().map_err(to_io)?
    };
    Ok(Response { status, headers, body })
}

fn invalid(err: ureq::http::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, err.to_string())
}

fn to_io(err: ureq::Error) -> io::Error {
    match err {
        ureq::Error::Io(e) => e,
        ureq::Error::Timeout(t) => io::Error::new(io::ErrorKind::TimedOut, format!("timed out ({t})")),
        ureq::Error::ConnectionFailed => {
            io::Error::new(io::ErrorKind::ConnectionRefused, "connection failed")
        }
        ureq::Error::HostNotFound => io::Error::new(io::ErrorKind::NotFound, "host not found"),
        ureq::Error::BadUri(u) => {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad URI {}", crate::redact_url(&u)))
        }
        other => io::Error::other(other.to_string()),
    }
}
