"""Who and which trace a log line belongs to: an opaque user id and the turn's trace id, per task."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_USER: ContextVar[str] = ContextVar("rein_log_user", default="-")
_TRACE: ContextVar[str] = ContextVar("rein_log_trace", default="-")


def set_user(opaque_id: str) -> None:
    """Tag every later log line of this task with the user's opaque id (never a Telegram id or name)."""
    _USER.set(opaque_id or "-")


@contextmanager
def trace(trace_id: str | None) -> Iterator[None]:
    """Tag log lines inside the block with the turn's trace id."""
    token = _TRACE.set(trace_id or "-")
    try:
        yield
    finally:
        _TRACE.reset(token)


def set_trace(trace_id: str | None) -> None:
    """Tag every later log line of this task with a trace id."""
    _TRACE.set(trace_id or "-")


def current() -> tuple[str, str]:
    """(opaque user id, trace id) of the running task, "-" when unknown."""
    return _USER.get(), _TRACE.get()
