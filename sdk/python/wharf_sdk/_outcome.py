"""What a plugin's code did, as one `Outcome`: a returned result, a raised
error, or a bug (an unexpected exception is a retry whose reason names it,
logged with its traceback, never a trap)."""

import traceback

from . import log
from ._errors import Reject, Retry, WharfError
from ._types import Message, Outcome


def _unexpected(what: str, e: BaseException) -> str:
    log.error(f"{what}: {''.join(traceback.format_exception(e)).rstrip()}")
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def to_outcome(value: object) -> Outcome:
    """One `deliver` result as an `Outcome`."""
    if value is None:
        return Outcome.delivered()
    if isinstance(value, Outcome):
        return value
    if isinstance(value, Retry):
        return Outcome.retry(value.reason, value.after_ms)
    if isinstance(value, Reject):
        return Outcome.reject(value.reason)
    if isinstance(value, OSError):
        return Outcome.retry(_os_reason(value))
    return Outcome.retry(f"plugin bug: deliver returned {value!r}, not an outcome")


def _os_reason(e: OSError) -> str:
    text = e.strerror or str(e) or type(e).__name__
    if type(e).__name__.lower().replace("error", "") not in text.lower().replace(" ", ""):
        return f"{type(e).__name__}: {text}"
    return text


def deliver_one_outcome(target, msg: Message) -> Outcome:
    """Run `deliver_one` and turn what happened into an `Outcome`."""
    try:
        target.deliver_one(msg)
        return Outcome.delivered()
    except WharfError as e:
        return to_outcome(e)
    except OSError as e:
        return Outcome.retry(_os_reason(e))
    except Exception as e:  # noqa: BLE001 - a plugin bug must not trap
        return Outcome.retry(_unexpected(f"deliver_one({msg.id}) raised", e))
