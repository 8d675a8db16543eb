"""Secrets out of what a plugin reports (same rules as the Rust SDK's
`sdk/src/redact.rs`): reasons and log lines reach status, dead-letter
entries and the host's log."""

import re

_MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_SUFFIXES = ("password", "passwd", "token", "tokens", "secret", "key", "credentials")


def redact_url(url: str) -> str:
    """`url` with its secrets masked, for a log line or an error reason.

    The userinfo (`user:password@`, `user@`: what precedes the last `@`
    before the first `/` or `?` after `://`) becomes `***@`; each query
    value becomes `***` (`?api_key=abc&x=1` -> `?api_key=***&x=***`, a part
    without `=` -> `***`); the fragment is dropped. Input that is not
    `scheme://...` is masked anyway: everything up to the last `@` before
    the first `?` becomes `***`, and query values are masked as above.
    """
    m = _SCHEME.match(url)
    scheme = m.group(0) if m else ""
    rest = url[len(scheme):]
    # The authority does not end at a `#`, so that a `#` in a password is
    # masked with the rest of it.
    stops = "/?" if scheme else "?"
    end = min([i for i in (rest.find(c) for c in stops) if i >= 0] or [len(rest)])
    authority, tail = rest[:end], rest[end:]
    at = authority.rfind("@")
    if at >= 0:
        authority = _MASK + authority[at:]
    if scheme:
        if "#" in authority:
            authority, tail = authority.split("#", 1)[0], ""
        tail = tail.split("#", 1)[0]
    if "?" in tail:
        path, query = tail.split("?", 1)
        tail = path + "?" + "&".join(_mask_query_part(p) for p in query.split("&"))
    return scheme + authority + tail


def _mask_query_part(part: str) -> str:
    if "=" in part:
        return part.split("=", 1)[0] + "=" + _MASK
    return _MASK if part else ""


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret, by the convention the host also
    uses: its name ends in `password`, `passwd`, `token`, `tokens`, `secret`,
    `key` (so `api_key`, `apikey`) or `credentials`, in any case. Never put
    the value of such a key in a reason or a log line."""
    return key.lower().endswith(_SECRET_SUFFIXES)
