"""Wasm HTTP: `wasi:http/outgoing-handler`, blocking on pollables. Mirrors
the Rust SDK's `sdk/src/http/wasm.rs`."""

from componentize_py_types import Err
from wit_world.imports import monotonic_clock, outgoing_handler, poll, streams
from wit_world.imports import wasi_http_types as t

from ._http_response import MAX_RESPONSE_BODY, Response

_WRITE_CHUNK = 4096  # blocking-write-and-flush takes at most 4096 bytes
_METHODS = {
    "GET": t.Method_Get,
    "HEAD": t.Method_Head,
    "POST": t.Method_Post,
    "PUT": t.Method_Put,
    "DELETE": t.Method_Delete,
    "CONNECT": t.Method_Connect,
    "OPTIONS": t.Method_Options,
    "TRACE": t.Method_Trace,
    "PATCH": t.Method_Patch,
}


def _error(code) -> OSError:
    name = type(code).__name__.removeprefix("ErrorCode_")
    text = f"wasi:http error: {name}"
    value = getattr(code, "value", None)
    if value is not None:
        text += f" ({value})"
    if name == "ConnectionRefused":
        return ConnectionRefusedError(text)
    if name == "ConnectionTerminated":
        return ConnectionResetError(text)
    if "Timeout" in name:
        return TimeoutError(text)
    if name == "HttpRequestDenied":
        return PermissionError(f"{text}: the URL is not in the namespace's allow_http")
    return ConnectionError(text)


def send(method, url, parts, headers, body, timeout_ms) -> Response:
    https, authority, path = parts
    timeout_ns = int(timeout_ms) * 1_000_000
    entries = [(n.lower(), v.encode()) for n, v in headers]
    bodyless = not body and method in ("GET", "HEAD", "DELETE", "OPTIONS")
    if not bodyless and not any(n == "content-length" for n, _ in entries):
        entries.append(("content-length", str(len(body)).encode()))
    try:
        fields = t.Fields.from_list(entries)
    except Err as e:
        names = [n for n, _ in headers]
        raise ValueError(f"invalid or forbidden header ({type(e.value).__name__}) among {names}") from None
    req = t.OutgoingRequest(fields)
    req.set_method(_METHODS[method]() if method in _METHODS else t.Method_Other(method))
    req.set_scheme(t.Scheme_Https() if https else t.Scheme_Http())
    req.set_authority(authority)
    req.set_path_with_query(path)
    options = t.RequestOptions()
    for setter in (options.set_connect_timeout, options.set_first_byte_timeout, options.set_between_bytes_timeout):
        try:
            setter(timeout_ns)
        except Err:
            pass  # the overall deadline below still applies
    out_body = req.body()
    try:
        future = outgoing_handler.handle(req, options)
    except Err as e:
        out_body.__exit__(None, None, None)
        raise _error(e.value) from None
    # Resources are dropped explicitly, children first (a pollable before
    # its future, a stream before its body): left to Python's garbage
    # collector, the order is arbitrary and the host traps on a parent
    # dropped before its child.
    with future:
        # If sending the body fails (e.g. refused), the response future
        # usually holds the real reason: prefer it.
        body_error = _write_body(out_body, body)
        with future.subscribe() as ready, monotonic_clock.subscribe_duration(timeout_ns) as deadline:
            while True:
                result = future.get()
                if result is not None:
                    break
                woke = poll.poll([ready, deadline])
                if 1 in woke and 0 not in woke:
                    break
    if result is None:
        raise body_error or TimeoutError(f"no response within {timeout_ms} ms")
    if isinstance(result, Err):
        raise ConnectionError("response already taken")
    inner = result.value
    if isinstance(inner, Err):
        raise _error(inner.value)
    with inner.value as resp:
        return _read(resp)


def _write_body(out_body, body: bytes):
    """Write and finish the request body; the error, if any, is returned."""
    failed = None
    with out_body.write() as stream:
        for i in range(0, len(body), _WRITE_CHUNK):
            try:
                stream.blocking_write_and_flush(body[i : i + _WRITE_CHUNK])
            except Err as e:
                failed = type(e.value).__name__
                break
    if failed is None:
        try:
            t.OutgoingBody.finish(out_body, None)
            return None
        except Err as e:
            failed = type(e.value).__name__
    out_body.__exit__(None, None, None)
    return BrokenPipeError(f"writing request body: {failed}")


def _read(resp) -> Response:
    status = resp.status()
    with resp.headers() as fields:
        headers = [(n.lower(), v.decode("utf-8", errors="replace")) for n, v in fields.entries()]
    incoming = resp.consume()
    chunks = []
    size = 0
    with incoming.stream() as stream:
        while True:
            try:
                chunk = stream.blocking_read(64 * 1024)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise ConnectionAbortedError("reading response body failed") from None
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE_BODY:
                raise OSError(f"response body larger than {MAX_RESPONSE_BODY} bytes")
    with t.IncomingBody.finish(incoming):
        pass
    return Response(status, headers, b"".join(chunks))
