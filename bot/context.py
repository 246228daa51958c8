"""The typed callback context: every handler reads Rein's services as `context.services`."""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardMarkup
from telegram.ext import Application, CallbackContext, ContextTypes, ExtBot

from bot.drafts import Drafts
from bot.services import Services

LANGUAGES_KEPT = 50_000  # users whose language a replica keeps in memory


class BotData:
    """What the application keeps across updates (python-telegram-bot's `bot_data`, as a class)."""

    def __init__(self) -> None:
        self.services: Services | None = None  # created in post_init
        self.drafts: Drafts | None = None  # created in post_init (STREAMING)
        # The keyboard each recent message has, as Rein last set it (see `bot.replying.edit_markup`).
        self.markups: dict[tuple[int, int], InlineKeyboardMarkup | None] = {}
        self.groups_told: set[int] = set()  # groups already told that Rein coaches one-to-one
        self.languages: dict[int, str] = {}  # the language of recent users (`bot.language`), oldest first

    def remember_language(self, telegram_id: int, code: str) -> None:
        """Keep a user's language for their next updates (bounded: the oldest entry goes first)."""
        if self.languages.get(telegram_id) == code:
            return
        self.languages.pop(telegram_id, None)
        self.languages[telegram_id] = code
        if len(self.languages) > LANGUAGES_KEPT:
            del self.languages[next(iter(self.languages))]


class ReinContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], BotData]):
    """python-telegram-bot's context with Rein's services."""

    @property
    def services(self) -> Services:
        """The services created at start-up."""
        services = self.bot_data.services
        if services is None:
            raise RuntimeError("Rein's services are not started")
        return services


CONTEXT_TYPES = ContextTypes(context=ReinContext, bot_data=BotData)
ReinApp = Application[ExtBot[None], ReinContext, dict[Any, Any], dict[Any, Any], BotData, Any]
