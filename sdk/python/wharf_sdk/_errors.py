"""The two ways a delivery (or `init`) fails: `Retry` and `Reject`."""

from typing import Optional


class WharfError(Exception):
    """Base of `Retry` and `Reject`. Its `reason` is what the operator sees,
    so say what went wrong and with what."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = str(reason)

    def __str__(self) -> str:
        return self.reason


class Retry(WharfError):
    """A transient failure: the host tries the message again later, with
    backoff, waiting at least `after_ms` if it is set (an HTTP
    `Retry-After`, say). `OSError`s raised by a delivery (connection
    refused, reset, timed out) become retries too."""

    def __init__(self, reason: str, after_ms: Optional[int] = None):
        super().__init__(reason)
        self.after_ms = None if after_ms is None else max(0, int(after_ms))

    def __repr__(self) -> str:
        return f"Retry({self.reason!r}, after_ms={self.after_ms!r})"


class Reject(WharfError):
    """A permanent failure: the host moves the message to the dead-letter
    queue. Raise it only when trying again cannot help. From `init` it
    stops the plugin from loading."""

    def __repr__(self) -> str:
        return f"Reject({self.reason!r})"
