"""Telegram's send limits: python-telegram-bot's AIORateLimiter, minus the typing indicator."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram.ext import AIORateLimiter

# Chat actions are not messages: Telegram's ~30 messages/s cap does not count them, and holding a
# "typing…" back behind a queue of replies would only delay the replies it announces.
UNLIMITED = frozenset({"sendChatAction", "getUpdates", "getMe", "answerCallbackQuery"})


class SendLimiter(AIORateLimiter):
    """AIORateLimiter (overall, per-group and RetryAfter handling) for everything but `UNLIMITED` calls."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        """Pass unlimited calls straight through; rate-limit the rest."""
        if endpoint in UNLIMITED:
            return await callback(*args, **kwargs)
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
