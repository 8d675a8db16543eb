"""The `Target` base class."""

from typing import List, Optional, Union

from ._config import Config
from ._errors import Reject, Retry
from ._outcome import deliver_one_outcome
from ._types import Batch, Message, Outcome, PluginInfo


class Target:
    """A delivery target. Subclass it in your `plugin` module.

    The host creates one object per plugin instance (with no arguments),
    calls `init` once, then `deliver` with batches, one at a time. Keep
    connections on `self` and reuse them across calls.

    Set the class attributes `name` and `version` to say what the plugin is
    (`wharf plugin check` prints them); `name` defaults to the class name.
    """

    name: Optional[str] = None
    version: str = "0.1.0"

    def init(self, config: Config) -> None:
        """Set up from the namespace's `target.config` table. Raising stops
        the plugin from loading; the reason is shown to the operator."""

    def deliver_one(self, msg: Message) -> None:
        """Deliver one message. Returning means the target has it; raise
        `Retry` or `Reject` (or let an `OSError` out, a retry) if not."""
        raise NotImplementedError("a Target must define deliver_one (or deliver)")

    def deliver(self, batch: Batch) -> List[Union[None, Outcome, Retry, Reject]]:
        """Deliver a batch: exactly one result per message, in order. Each
        is `None` or `Outcome.delivered()` (delivered), a `Retry` or a
        `Reject` (not raised), or an `Outcome`. The default calls
        `deliver_one` for each message; override it to pipeline or batch
        requests."""
        return [deliver_one_outcome(self, msg) for msg in batch.messages]

    @classmethod
    def describe(cls) -> PluginInfo:
        """What this plugin is. Called without `init`: do not depend on
        config or the network."""
        return PluginInfo(cls.name or cls.__name__, cls.version)
