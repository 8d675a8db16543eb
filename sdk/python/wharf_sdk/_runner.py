"""The glue between the WIT exports and a `Target`: used by the Wasm entry
point (`wharf_main`) and by `wharf_sdk.testing`, so both run the same code.

Guarantees, whatever the plugin does: exactly one outcome per message;
before a successful `init` every message is retried; an unexpected
exception is a retry whose reason names it (and is logged with its
traceback), never a trap.
"""

from typing import List, Optional, Type

from . import log
from ._config import Config
from ._errors import WharfError
from ._outcome import _unexpected, to_outcome
from ._target import Target
from ._types import Batch, Outcome, PluginInfo


class Runner:
    """Holds the plugin object created by `init`."""

    def __init__(self, cls: Type[Target]):
        self.cls = cls
        self.instance: Optional[Target] = None

    def init(self, config: Config) -> Optional[str]:
        """Run `init`; `None` on success, else the operator-facing reason."""
        self.instance = None
        try:
            instance = self.cls()
            instance.init(config)
        except WharfError as e:
            return e.reason
        except Exception as e:  # noqa: BLE001
            return _unexpected("init raised", e)
        self.instance = instance
        return None

    def deliver(self, batch: Batch) -> List[Outcome]:
        expected = len(batch.messages)
        if self.instance is None:
            return [Outcome.retry("plugin is not initialised (init has not succeeded)")] * expected
        try:
            results = list(self.instance.deliver(batch))
        except Exception as e:  # noqa: BLE001
            reason = _unexpected("deliver raised", e)
            return [Outcome.retry(reason) for _ in range(expected)]
        outcomes = [to_outcome(r) for r in results]
        if len(outcomes) != expected:
            log.error(
                f"plugin bug: deliver returned {len(outcomes)} outcomes for {expected} messages; "
                "retrying the ones without an outcome"
            )
            outcomes = outcomes[:expected]
            outcomes += [Outcome.retry("plugin returned no outcome for this message")] * (
                expected - len(outcomes)
            )
        return outcomes

    def describe(self) -> PluginInfo:
        return self.cls.describe()


def find_target(module: object) -> Type[Target]:
    """The `Target` subclass a plugin module defines: its `TARGET` attribute
    if set, else the one subclass defined in it."""
    explicit = getattr(module, "TARGET", None)
    if explicit is not None:
        return explicit
    name = getattr(module, "__name__", "plugin")
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Target) and v is not Target and v.__module__ == name
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise RuntimeError(
            f"module `{name}` must define exactly one wharf_sdk.Target subclass (found: {names}); "
            "or set TARGET = YourClass"
        )
    return found[0]
