"""The data a plugin receives and returns."""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class Message:
    """One durable message, as a client wrote it."""

    id: str
    payload: bytes
    namespace: str = "default"
    partition: int = 0
    sequence: int = 0
    key: Optional[str] = None
    headers: List[Tuple[str, str]] = field(default_factory=list)
    idempotency_key: Optional[str] = None
    attempt: int = 1
    replays: int = 0
    written_at_ms: int = 0

    def header(self, name: str) -> Optional[str]:
        """The first header with this name (ASCII case-insensitive)."""
        lower = name.lower()
        for n, v in self.headers:
            if n.lower() == lower:
                return v
        return None

    def dedup_key(self) -> str:
        """The client's idempotency key, or else the (stable) message id."""
        return self.idempotency_key if self.idempotency_key is not None else self.id

    def payload_text(self) -> str:
        """The payload as text, with invalid UTF-8 replaced."""
        return bytes(self.payload).decode("utf-8", errors="replace")


@dataclass
class PluginInfo:
    """What a plugin is, for operators (`wharf plugin check` prints it)."""

    name: str
    version: str


@dataclass
class Batch:
    """The messages for one call to `deliver`."""

    messages: List[Message]
    transaction_id: Optional[str] = None


@dataclass
class Outcome:
    """What happened to one message: `kind` is "delivered", "retry" or
    "reject"."""

    kind: str
    reason: Optional[str] = None
    after_ms: Optional[int] = None

    @property
    def is_delivered(self) -> bool:
        return self.kind == "delivered"

    @property
    def is_retry(self) -> bool:
        return self.kind == "retry"

    @property
    def is_reject(self) -> bool:
        return self.kind == "reject"

    @staticmethod
    def delivered() -> "Outcome":
        return Outcome("delivered")

    @staticmethod
    def retry(reason: str, after_ms: Optional[int] = None) -> "Outcome":
        return Outcome("retry", reason, after_ms)

    @staticmethod
    def reject(reason: str) -> "Outcome":
        return Outcome("reject", reason)
