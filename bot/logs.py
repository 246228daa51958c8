"""Logging for Rein: one line per event, tagged with an opaque user id and the trace id, secrets redacted.

A line looks like::

    2026-11-28T08:00:00+0000 INFO pipeline.coach coach.llm_failed kind=busy user=3f2a… trace=0196…

Secrets (the bot token, the Gemini and Opik keys, the webhook secret, the database password) are kept out of logs
first by never logging them (the HTTP clients, whose request lines may carry the Bot API URL with the token, stay at
WARNING) and second by `RedactingFilter`, which replaces them in every record that reaches Rein's handler, tracebacks
included, along with the password of any URL written `scheme://user:password@host`. uvicorn runs with
`log_config=None`, so its loggers reach this handler too.
"""

from __future__ import annotations

import logging
import re
import sys
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

from pipeline import logcontext

if TYPE_CHECKING:
    from pipeline.settings import Settings

REDACTED = "[redacted]"
NOISY = ("httpx", "httpcore", "aiohttp", "apscheduler", "opik", "google_genai", "aiosqlite", "asyncio",
         "alembic.runtime.plugins", "uvicorn")
# The password in a URL's user part (`postgresql+asyncpg://rein:PASSWORD@db:5432/rein`), however short.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s user=%(user)s trace=%(trace)s"


def settings_secrets(settings: Settings) -> list[str]:
    """The secret values of the settings: bot token, Gemini key, Opik key, webhook secret, database password."""
    values = [settings.telegram_bot_token.get_secret_value(), settings.gemini_api_key.get_secret_value()]
    for optional in (settings.opik_api_key, getattr(settings, "telegram_webhook_secret", None)):
        if optional is not None:
            values.append(optional.get_secret_value())
    password = database_password(settings.database_url)
    if password:
        values.append(password)
    return values


def database_password(url: str) -> str | None:
    """The password in a database URL, decoded (None without one, or for a URL that does not parse)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return None
    return str(password) if password else None


def _variants(secret: str) -> set[str]:
    """The secret as written, URL-encoded, and (for a bot token) the part after the colon."""
    out = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}
    _, colon, tail = secret.partition(":")
    if colon and len(tail) >= 16:
        out.add(tail)
    return {v for v in out if len(v) >= 8}


class RedactingFilter(logging.Filter):
    """Replaces every secret in a record's message, arguments and traceback."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        found: set[str] = set()
        for secret in secrets:
            if secret:
                found |= _variants(secret)
        self._secrets = sorted(found, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """The text with every secret, and every password in a URL, replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw message
            message = str(record.msg)
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class ContextFilter(logging.Filter):
    """Adds `user` (opaque id) and `trace` (the turn's trace id) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        user, trace = logcontext.current()
        if not hasattr(record, "user"):
            record.user = user
        if not hasattr(record, "trace"):
            record.trace = trace
        return True


class OneLineFormatter(logging.Formatter):
    """The usual format, with line breaks (tracebacks, multi-line messages) escaped onto one line."""

    def __init__(self) -> None:
        super().__init__(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " \\n ")


def make_handler(secrets: Iterable[str], stream: TextIO | None = None) -> logging.Handler:
    """A stream handler with Rein's filters and one-line format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(OneLineFormatter())
    return handler


def configure(level: str, secrets: Iterable[str], stream: TextIO | None = None) -> logging.Handler:
    """Install Rein's handler on the root logger (replacing earlier ones of Rein); noisy libraries at WARNING."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "rein", False)]:
        root.removeHandler(old)
    handler = make_handler(secrets, stream)
    handler.rein = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # PTB's DEBUG lines carry the Bot API URL (with the token) and every request's parameters (users' texts).
    logging.getLogger("telegram").setLevel(max(logging.INFO, root.level))
    return handler
