"""wharf_sdk: write Wharf delivery targets in Python.

A Wharf target plugin is a WebAssembly component that receives durable
messages and says, per message, whether it delivered them. This package
hides the WIT bindings: subclass `Target` in a module named `plugin`
(`plugin.py`) and build it with componentize-py (see `sdk/python/README.md`).

    from wharf_sdk import Target, log

    class LogTarget(Target):
        def init(self, config):
            self.prefix = config.get_or("prefix", "got")

        def deliver_one(self, msg):
            log.info(f"{self.prefix} {msg.id}: {msg.payload_text()}")

Natively (plain CPython, for unit tests) the same code runs without Wasm:
logging goes to stderr, `now_ms` reads the system clock, `http` uses
urllib, and `wharf_sdk.testing` drives a plugin class directly.

Reasons and log lines reach the operator: put a URL in them through
`redact_url`, and never the value of a secret config key (`is_secret_key`).
"""

from . import http, log
from ._config import Config
from ._errors import Reject, Retry, WharfError
from ._redact import is_secret_key, redact_url
from ._target import Target
from ._types import Batch, Message, Outcome, PluginInfo
from .log import now_ms

__all__ = [
    "Batch",
    "Config",
    "Message",
    "Outcome",
    "PluginInfo",
    "Reject",
    "Retry",
    "Target",
    "WharfError",
    "http",
    "is_secret_key",
    "log",
    "now_ms",
    "redact_url",
]
