//! wasm32 HTTP: `wasi:http/outgoing-handler`, blocking on pollables.

use std::io;

use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use wasip2::io::streams::StreamError;

use super::{Request, Response, Url};

/// Bodies larger than this are cut off with an error.
const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
/// `blocking-write-and-flush` takes at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

pub(super) fn send(request: &Request, url: &Url<'_>) -> io::Result<Response> {
    let timeout_ns = u64::try_from(request.timeout.as_nanos()).unwrap_or(u64::MAX);

    let mut entries: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
    // Send a content-length rather than a chunked body: simple servers
    // handle it, and the host checks that the body matches it.
    let bodyless =
        request.body.is_empty() && matches!(request.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS");
    if !bodyless && !entries.iter().any(|(n, _)| n == "content-length") {
        entries.push(("content-length".to_string(), request.body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&entries).map_err(|e| header_error(e, &request.headers))?;
    let req = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid request {what}"));
    req.set_method(&method).map_err(|()| invalid("method"))?;
    req.set_scheme(Some(if url.https { &Scheme::Https } else { &Scheme::Http }))
        .map_err(|()| invalid("scheme"))?;
    req.set_authority(Some(url.authority)).map_err(|()| invalid("authority"))?;
    req.set_path_with_query(Some(&url.path_and_query)).map_err(|()| invalid("path"))?;

    let options = RequestOptions::new();
    // A host may not support some of these; the overall deadline below
    // still applies.
    let _ = options.set_connect_timeout(Some(timeout_ns));
    let _ = options.set_first_byte_timeout(Some(timeout_ns));
    let _ = options.set_between_bytes_timeout(Some(timeout_ns));

    let body = req.body().map_err(|()| io::Error::other("request body already taken"))?;
    let future = outgoing_handler::handle(req, Some(options)).map_err(error_code)?;

    // If sending the body fails (e.g. the connection was refused), the
    // response future usually holds the real reason: prefer it.
    let body_error = write_body(body, &request.body).err();

    // Wait for the response head, but no longer than the timeout.
    let deadline = monotonic_clock::subscribe_duration(timeout_ns);
    let ready = future.subscribe();
    loop {
        if let Some(result) = future.get() {
            let response =
                result.map_err(|()| io::Error::other("response already taken"))?.map_err(error_code)?;
            return read_response(response);
        }
        let woke = wasip2::io::poll::poll(&[&ready, &deadline]);
        if woke.contains(&1) && !woke.contains(&0) {
            if let Some(err) = body_error {
                return Err(err);
            }
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no response within {} ms", request.timeout.as_millis()),
            ));
        }
    }
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> io::Result<()> {
    {
        let stream = body.write().map_err(|()| io::Error::other("request body stream already taken"))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(body, None).map_err(error_code)
}

fn read_response(response: wasip2::http::types::IncomingResponse) -> io::Result<Response> {
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| io::Error::other("response body already taken"))?;
    let mut body = Vec::new();
    {
        let stream =
            incoming.stream().map_err(|()| io::Error::other("response body stream already taken"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_RESPONSE_BODY {
                        return Err(io::Error::other(format!(
                            "response body larger than {MAX_RESPONSE_BODY} bytes"
                        )));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("reading response body: {}", e.to_debug_string()),
                    ));
                }
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response { status, headers, body })
}

fn header_error(err: HeaderError, headers: &[(String, String)]) -> io::Error {
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid or forbidden header ({err:?}) among {names:?}"),
    )
}

fn stream_error(err: StreamError) -> io::Error {
    match err {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "request body stream closed"),
        StreamError::LastOperationFailed(e) => io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("writing request body: {}", e.to_debug_string()),
        ),
    }
}

fn error_code(code: ErrorCode) -> io::Error {
    use io::ErrorKind as K;
    let kind = match &code {
        ErrorCode::ConnectionRefused => K::ConnectionRefused,
        ErrorCode::ConnectionTerminated => K::ConnectionReset,
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::DnsTimeout => K::TimedOut,
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => K::NotFound,
        ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable => K::HostUnreachable,
        // The host's allow-list said no.
        ErrorCode::HttpRequestDenied => K::PermissionDenied,
        ErrorCode::HttpRequestMethodInvalid
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestUriTooLong => K::InvalidInput,
        _ => K::Other,
    };
    io::Error::new(kind, format!("wasi:http error: {code}"))
}
