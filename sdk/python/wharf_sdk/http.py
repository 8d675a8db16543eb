"""A small blocking HTTP client.

In Wasm it uses `wasi:http/outgoing-handler` (the host only lets through
URLs that start with one of the namespace's `allow_http` prefixes);
natively it uses urllib so plugins can be tested against a local server.
Redirects are not followed.

Failing to get a response at all (refused, reset, timed out, denied by the
host) raises an `OSError` (`ConnectionError`, `TimeoutError`,
`PermissionError`), which a delivery turns into a retry. Any response,
whatever its status, is returned.

    resp = http.post(url, b'{"a": 1}', {"content-type": "application/json"})
    if resp.status >= 500:
        raise Retry(f"webhook answered {resp.status}", after_ms=resp.retry_after_ms())
"""

import sys
from typing import Dict, List, Tuple, Union

from ._http_response import MAX_RESPONSE_BODY, Response  # noqa: F401 (part of this module's API)
from ._redact import redact_url


DEFAULT_TIMEOUT_MS = 30_000

Headers = Union[Dict[str, str], List[Tuple[str, str]], None]


def _split_url(url: str) -> Tuple[bool, str, str]:
    """(https, authority, path_and_query) of an absolute http(s) URL; a
    `ValueError` naming the URL (through `redact_url`) otherwise."""
    shown = repr(redact_url(url))
    lower = url[:8].lower()
    if lower.startswith("http://"):
        https, rest = False, url[7:]
    elif lower.startswith("https://"):
        https, rest = True, url[8:]
    else:
        raise ValueError(f"invalid URL {shown}: must start with http:// or https://")
    rest = rest.split("#", 1)[0]
    end = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
    authority, path = rest[:end], rest[end:]
    if not path:
        path = "/"
    elif path.startswith("?"):
        path = "/" + path
    if not authority:
        raise ValueError(f"invalid URL {shown}: no host")
    if "@" in authority:
        raise ValueError(f"invalid URL {shown}: user info is not supported")
    if any(ord(c) <= 32 or ord(c) == 0x7F for c in url):
        raise ValueError(f"invalid URL {shown}: contains whitespace or a control character")
    return https, authority, path


def _header_list(headers: Headers) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(n), str(v)) for n, v in items]


def request(
    method: str,
    url: str,
    body: Union[bytes, str, None] = None,
    headers: Headers = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Response:
    """Send a request and wait for the whole response."""
    if isinstance(body, str):
        body = body.encode()
    parts = _split_url(url)
    return _send(method.upper(), url, parts, _header_list(headers), body or b"", timeout_ms)


def get(url: str, headers: Headers = None, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Response:
    return request("GET", url, None, headers, timeout_ms)


def post(
    url: str, body: Union[bytes, str, None] = None, headers: Headers = None, timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> Response:
    return request("POST", url, body, headers, timeout_ms)


def put(
    url: str, body: Union[bytes, str, None] = None, headers: Headers = None, timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> Response:
    return request("PUT", url, body, headers, timeout_ms)


if sys.platform == "wasi":
    from ._wasi_http import send as _send
else:
    import socket
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    _OPENER = urllib.request.build_opener(_NoRedirect)

    def _send(method, url, parts, headers, body, timeout_ms) -> Response:
        req = urllib.request.Request(url, data=body if body or method not in ("GET", "HEAD") else None, method=method)
        for n, v in headers:
            req.add_header(n, v)
        try:
            resp = _OPENER.open(req, timeout=timeout_ms / 1000)
        except urllib.error.HTTPError as e:
            resp = e
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, OSError):
                raise reason from None
            raise ConnectionError(str(reason)) from None
        except socket.timeout:
            raise TimeoutError(f"no response within {timeout_ms} ms") from None
        with resp:
            data = resp.read(MAX_RESPONSE_BODY + 1)
            if len(data) > MAX_RESPONSE_BODY:
                raise OSError(f"response body larger than {MAX_RESPONSE_BODY} bytes")
            pairs = [(n.lower(), v) for n, v in resp.headers.items()]
            return Response(resp.status, pairs, data)
