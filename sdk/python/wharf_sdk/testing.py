"""Native test helpers: build messages and drive a `Target` through `init`
and `deliver` exactly as the host would, through the same glue as the Wasm
entry point. Plain CPython, no Wasm.

    from wharf_sdk.testing import Harness, message

    plugin = Harness(Webhook, {"url": "http://127.0.0.1:8080/hook"})
    [outcome] = plugin.deliver([message(b'{"a": 1}', key="k")])
    assert outcome.is_delivered, outcome
"""

import itertools
from typing import Dict, Iterable, List, Optional, Tuple, Type, Union

from ._config import Config
from ._runner import Runner
from ._target import Target
from ._types import Batch, Message, Outcome, PluginInfo
from .log import now_ms

_NEXT = itertools.count(1)

ConfigLike = Union[Dict[str, str], Iterable[Tuple[str, str]], None]


class InitError(Exception):
    """`init` failed; `reason` is what the operator would see."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def message(payload: Union[bytes, str], **fields) -> Message:
    """A message with this payload: id `"0-<n>"` with a fresh sequence
    number `n`, namespace `"test"`, first attempt, written now. Any
    `Message` field can be set by keyword (`key="k"`, `attempt=2`)."""
    if isinstance(payload, str):
        payload = payload.encode()
    sequence = next(_NEXT)
    values = dict(id=f"0-{sequence}", namespace="test", sequence=sequence, written_at_ms=now_ms())
    values.update(fields)
    return Message(payload=payload, **values)


def config(entries: ConfigLike = None) -> Config:
    """A `Config` from a dict or key/value pairs."""
    return Config(entries)


class Harness:
    """Drives a plugin class through the same glue as the Wasm export."""

    def __init__(self, cls: Type[Target], entries: ConfigLike = None, *, initialise: bool = True):
        self.runner = Runner(cls)
        if initialise:
            self.reinit(entries)

    @classmethod
    def uninitialised(cls, target: Type[Target]) -> "Harness":
        """A harness whose `init` has not run yet: `deliver` retries everything."""
        return cls(target, initialise=False)

    def reinit(self, entries: ConfigLike = None) -> None:
        """Run `init` (again); raises `InitError` with the operator-facing reason."""
        reason = self.runner.init(config(entries))
        if reason is not None:
            raise InitError(reason)

    def deliver(self, messages: List[Message], transaction_id: Optional[str] = None) -> List[Outcome]:
        """Deliver these messages as one batch; exactly one outcome each."""
        return self.deliver_batch(Batch(list(messages), transaction_id))

    def deliver_batch(self, batch: Batch) -> List[Outcome]:
        outcomes = self.runner.deliver(batch)
        assert len(outcomes) == len(batch.messages), "exactly one outcome per message"
        return outcomes

    def describe(self) -> PluginInfo:
        return self.runner.describe()

    @property
    def plugin(self) -> Optional[Target]:
        """The plugin object, once `init` succeeded."""
        return self.runner.instance


def init_error(cls: Type[Target], entries: ConfigLike = None) -> str:
    """The reason `init` fails with this config (an `AssertionError` if it
    succeeds)."""
    try:
        Harness(cls, entries)
    except InitError as e:
        return e.reason
    raise AssertionError(f"{cls.__name__}.init succeeded with {entries!r}")
