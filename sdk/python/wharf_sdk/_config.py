"""The namespace's `target.config` table (same wording as the Rust SDK's
`sdk/src/config.rs`)."""

import json
from typing import Callable, Iterable, Iterator, Optional, Tuple, TypeVar, Union

from ._errors import Reject
from ._redact import is_secret_key, redact_url

T = TypeVar("T")
_MISSING = object()


class Config:
    """The plugin's configuration, every value a string. Errors from these
    helpers are `Reject`s that name the key and the problem, ready to be
    raised from `init`.

    A key whose name ends in `password`, `token`, `secret`, `key` (so
    `api_key`) and the like (`is_secret_key`) holds a secret: these errors
    never echo its value, and neither should the plugin's own. Other values
    they echo go through `redact_url` first."""

    def __init__(self, entries: Union[Iterable[Tuple[str, str]], dict, None] = None):
        if entries is None:
            entries = []
        elif isinstance(entries, dict):
            entries = entries.items()
        self._entries = [(str(k), str(v)) for k, v in entries]

    def get(self, key: str) -> Optional[str]:
        """The value of `key`, if set (the last one wins if a key repeats)."""
        for k, v in reversed(self._entries):
            if k == key:
                return v
        return None

    def get_or(self, key: str, default: str) -> str:
        """The value of `key`, or `default` if it is not set."""
        value = self.get(key)
        return default if value is None else value

    def require(self, key: str) -> str:
        """The value of `key`; a `Reject` if it is missing or blank."""
        value = self.get(key)
        if value is None:
            raise Reject(f"config key `{key}` is required but missing")
        if not value.strip():
            raise Reject(f"config key `{key}` is required but empty")
        return value

    def parse(self, key: str, kind: Callable[[str], T]) -> T:
        """The value of a required `key`, parsed with `kind` (`int`,
        `float`, `bool` or any callable taking a string)."""
        return _parse_value(key, self.require(key), kind)

    def parse_opt(self, key: str, kind: Callable[[str], T]) -> Optional[T]:
        """The value of an optional `key`, parsed; `None` if not set."""
        value = self.get(key)
        return None if value is None else _parse_value(key, value, kind)

    def parse_or(self, key: str, kind: Callable[[str], T], default: T) -> T:
        """The value of an optional `key`, parsed, or `default` if not set."""
        value = self.parse_opt(key, kind)
        return default if value is None else value

    def items(self) -> Iterator[Tuple[str, str]]:
        """Every key/value pair, in the order the host gave them."""
        return iter(list(self._entries))

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return self.items()

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and other._entries == self._entries

    def __repr__(self) -> str:
        return f"Config({self._entries!r})"


def _parse_bool(text: str) -> bool:
    # Rust's `bool::from_str`: exactly `true` or `false`.
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError("provided string was not `true` or `false`")


def _parse_value(key: str, value: str, kind: Callable[[str], T]) -> T:
    parser = _parse_bool if kind is bool else kind
    text = value.strip()
    try:
        return parser(text)
    except (ValueError, TypeError, ArithmeticError) as e:
        name = getattr(kind, "__name__", type(kind).__name__)
        # The parse error may quote the value too (`int` does).
        if is_secret_key(key):
            raise Reject(f"config key `{key}`: cannot parse its value (a secret, not shown) as {name}") from None
        shown = json.dumps(redact_url(value), ensure_ascii=False)
        detail = str(e).replace(text, redact_url(text))
        raise Reject(f"config key `{key}`: cannot parse {shown} as {name}: {detail}") from None
