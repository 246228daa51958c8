"""`python -m bot`: start Rein (webhook mode when TELEGRAM_WEBHOOK_URL is set, long polling otherwise)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from pipeline.settings import Settings, describe_error


def configure_logging(level: str, secrets: list[str] | None = None) -> logging.Handler:
    """One line per event with opaque user and trace ids; secrets redacted; httpx at WARNING (URLs carry the token)."""
    from bot.logs import configure

    return configure(level, secrets or [])


def main() -> int:
    """Read the settings (exit 2 with one line if one is missing or bad), then run until stopped."""
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"rein: {describe_error(error)}", file=sys.stderr)
        return 2
    from bot.logs import settings_secrets

    configure_logging(settings.log_level, settings_secrets(settings))
    from bot.affinity import pin

    pin(settings.cpu_affinity)  # before any thread starts, so every thread inherits it
    from bot.webhook import serve

    # Webhook mode when TELEGRAM_WEBHOOK_URL is set, long polling otherwise.
    run_loop(serve(settings), settings.event_loop)
    return 0


def run_loop(main: Coroutine[Any, Any, None], kind: str) -> None:
    """Run the bot's coroutine on uvloop (the default) or on the standard library's loop (EVENT_LOOP=asyncio;
    docs/PERFORMANCE.md compares the two)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:  # a platform without uvloop: the standard loop does the same
            logging.getLogger(__name__).warning("loop.uvloop_missing fallback=asyncio")
        else:
            uvloop.run(main)
            return
    import asyncio

    asyncio.run(main)


if __name__ == "__main__":
    sys.exit(main())
