"""Follow-ups: messages the flood guard held back are answered by themselves once its window allows, with no
button to press. One timer per user; whoever owns the sending (the bot) sets `deliver`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pipeline.speaker import Speaker

logger = logging.getLogger(__name__)

MARGIN_S = 0.05  # after the window's edge, so the flood guard has room when the follow-up runs

Deliver = Callable[[Speaker], Awaitable[None]]


class FollowUps:
    """Answers a user's waiting messages later: `schedule` arms (or keeps) the user's one timer."""

    def __init__(self) -> None:
        self.deliver: Deliver | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0  # follow-ups run (tests and logs)

    def schedule(self, who: Speaker, delay_s: float) -> None:
        """Answer the user's waiting messages in `delay_s` seconds (an armed timer stays as it is)."""
        if who.telegram_id in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[who.telegram_id] = loop.call_later(max(0.0, delay_s) + MARGIN_S, self._fire, who)
        logger.info("followup.scheduled in_s=%.1f", delay_s)

    def armed(self, telegram_id: int) -> bool:
        """Whether a follow-up waits for this user."""
        return telegram_id in self._timers

    def __len__(self) -> int:
        return len(self._timers) + len(self._tasks)

    def _fire(self, who: Speaker) -> None:
        self._timers.pop(who.telegram_id, None)
        task = asyncio.create_task(self._run(who), name=f"followup:{who.telegram_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, who: Speaker) -> None:
        if self.deliver is None:
            logger.warning("followup.no_sender")
            return
        try:
            await self.deliver(who)
            self.sent += 1
        except Exception:
            logger.exception("followup.failed")  # the messages stay stored: the next text or start answers them

    async def close(self) -> None:
        """Cancel armed timers and running follow-ups (what they would answer stays stored for the next start)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
