"""`python -m bot`: start Rein (webhook mode when TELEGRAM_WEBHOOK_URL is set, long polling otherwise)."""

from __future__ import annotations

import logging
import sys

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
    import asyncio

    from bot.webhook import serve

    asyncio.run(serve(settings))  # webhook mode when TELEGRAM_WEBHOOK_URL is set, long polling otherwise
    return 0


if __name__ == "__main__":
    sys.exit(main())
