"""The response type of `wharf_sdk.http`, shared by its native and Wasm
transports."""

import json
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

MAX_RESPONSE_BODY = 16 * 1024 * 1024


@dataclass
class Response:
    """A response, body read in full. Header names are lower-case."""

    status: int
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        lower = name.lower()
        for n, v in self.headers:
            if n == lower:
                return v
        return None

    @property
    def ok(self) -> bool:
        """True for 2xx."""
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)

    def retry_after_ms(self) -> Optional[int]:
        """`Retry-After` in ms, if it is a number of seconds."""
        value = self.header("retry-after")
        if value is not None and value.strip().isdigit():
            return int(value.strip()) * 1000
        return None
