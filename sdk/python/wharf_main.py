"""The componentize-py entry point of every Python Wharf plugin.

Build with `componentize-py -d <sdk>/wit -w plugin componentize wharf_main
-p <sdk>/python -p <your plugin dir> -o plugin.wasm`: this module imports
your `plugin` module, finds its `wharf_sdk.Target` subclass and exports it
as the WIT `init`, `deliver` and `describe`. You never import it.
"""

import plugin as _plugin_module
from componentize_py_types import Err
from wit_world import WitWorld as _WitWorldProtocol
from wit_world.imports import wharf_target_types as _wit

from wharf_sdk._config import Config
from wharf_sdk._runner import Runner, find_target
from wharf_sdk._types import Batch, Message

_RUNNER = Runner(find_target(_plugin_module))


def _message(m) -> Message:
    return Message(
        id=m.id,
        payload=m.payload,
        namespace=m.namespace,
        partition=m.partition,
        sequence=m.sequence,
        key=m.key,
        headers=m.headers,
        idempotency_key=m.idempotency_key,
        attempt=m.attempt,
        replays=m.replays,
        written_at_ms=m.written_at_ms,
    )


def _outcome(o):
    if o.kind == "delivered":
        return _wit.Outcome_Delivered()
    if o.kind == "reject":
        return _wit.Outcome_Reject(o.reason or "")
    return _wit.Outcome_Retry(_wit.Retry(o.reason or "", o.after_ms))


class WitWorld(_WitWorldProtocol):
    def init(self, config):
        reason = _RUNNER.init(Config(config))
        if reason is not None:
            raise Err(reason)

    def deliver(self, batch):
        ours = Batch([_message(m) for m in batch.messages], batch.transaction_id)
        return [_outcome(o) for o in _RUNNER.deliver(ours)]

    def describe(self):
        info = _RUNNER.describe()
        return _wit.PluginInfo(info.name, info.version)
