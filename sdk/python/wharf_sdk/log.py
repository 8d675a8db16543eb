"""Logging to the host's structured log.

In Wasm each line goes to the host (tagged with the plugin's namespace);
natively (unit tests) it is printed to stderr.
"""

import sys
import time

LEVELS = ("trace", "debug", "info", "warn", "error")

if sys.platform == "wasi":
    from wit_world.imports import host as _host

    _WIT = {
        "trace": _host.Level.TRACE,
        "debug": _host.Level.DEBUG,
        "info": _host.Level.INFO,
        "warn": _host.Level.WARN,
        "error": _host.Level.ERROR,
    }

    def log(level: str, message: str) -> None:
        """Write one line at `level` ("trace" … "error")."""
        _host.log(_WIT[level], str(message))

    def now_ms() -> int:
        """Wall-clock time in ms since the Unix epoch (the host's clock)."""
        return _host.now_ms()

else:

    def log(level: str, message: str) -> None:
        """Write one line at `level` ("trace" … "error")."""
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}")
        print(f"[wharf-plugin {level.upper():>5}] {message}", file=sys.stderr)

    def now_ms() -> int:
        """Wall-clock time in ms since the Unix epoch."""
        return time.time_ns() // 1_000_000


def trace(message: str) -> None:
    log("trace", message)


def debug(message: str) -> None:
    log("debug", message)


def info(message: str) -> None:
    log("info", message)


def warn(message: str) -> None:
    log("warn", message)


def error(message: str) -> None:
    log("error", message)
