"""`python -m bot`: start Rein with long polling."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from pipeline.settings import Settings, describe_error


def configure_logging(level: str) -> None:
    """One line per event; httpx stays at WARNING because Bot API URLs carry the token."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpcore", "apscheduler", "opik", "google_genai", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> int:
    """Read the settings (exit 2 with one line if one is missing or bad), then run until stopped."""
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"rein: {describe_error(error)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from bot.app import build_application

    app = build_application(settings)
    app.run_polling(allowed_updates=["message", "edited_message", "callback_query", "my_chat_member"],
                    drop_pending_updates=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
