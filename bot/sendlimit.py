"""Telegram's send limits: python-telegram-bot's AIORateLimiter, minus the typing indicator, with drafts dropped
first near the cap."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.ext import AIORateLimiter

# Chat actions are not messages: Telegram's ~30 messages/s cap does not count them, and holding a
# "typing…" back behind a queue of replies would only delay the replies it announces. Neither are the bot's
# profile texts, published in every language at start-up.
UNLIMITED = frozenset({"sendChatAction", "getUpdates", "getMe", "answerCallbackQuery", "setMyCommands",
                       "setMyDescription", "setMyShortDescription", "getMyCommands", "getMyDescription",
                       "getMyShortDescription"})
DRAFT = "sendMessageDraft"
DRAFT_SHARE = 0.8  # drafts go only while the last period's sends stay below this share of the cap


class SendLimiter(AIORateLimiter):
    """AIORateLimiter (overall, per-group and RetryAfter handling) for everything but `UNLIMITED` calls.

    A draft never waits in the limiter's queue, where it would hold up a reply: it goes at once while no
    message waits for a slot and the last period's sends (drafts and messages) stay below `DRAFT_SHARE` of the
    cap; otherwise it is dropped (`bot.drafts` asks `busy()` first, so it offers the next text soon).
    Telegram publishes no draft limit; the share keeps the bot's own work on drafts below what its replies
    need."""

    def __init__(self, overall_max_rate: float = 30, overall_time_period: float = 1, **kwargs: Any) -> None:
        super().__init__(overall_max_rate=overall_max_rate, overall_time_period=overall_time_period, **kwargs)
        self.draft_budget = max(1.0, overall_max_rate * DRAFT_SHARE) if overall_max_rate else float("inf")
        self.period_s = overall_time_period or 1
        self.drafts_dropped = 0
        self._recent: deque[float] = deque()
        self._waiting = 0

    def busy(self) -> bool:
        """Whether messages wait for a slot, or the last period's sends come near the cap."""
        cutoff = time.monotonic() - self.period_s
        while self._recent and self._recent[0] < cutoff:
            self._recent.popleft()
        return self._waiting > 0 or len(self._recent) >= self.draft_budget

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        """Pass unlimited calls straight through; send or drop drafts; rate-limit the rest."""
        if endpoint in UNLIMITED:
            return await callback(*args, **kwargs)
        if endpoint == DRAFT:
            if self.busy():
                self.drafts_dropped += 1
                return True  # dropped: what Telegram answers a draft (nothing waits on it)
            self._recent.append(time.monotonic())
            return await callback(*args, **kwargs)
        self._waiting += 1
        begun = False

        async def begin(*call_args: Any, **call_kwargs: Any) -> Any:
            nonlocal begun
            if not begun:
                begun = True
                self._waiting -= 1
                self._recent.append(time.monotonic())
            return await callback(*call_args, **call_kwargs)

        try:
            return await super().process_request(begin, args, kwargs, endpoint, data, rate_limit_args)
        finally:
            if not begun:
                self._waiting -= 1
