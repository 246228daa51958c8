"""Telegram drafts (Bot API `sendMessageDraft`): a reply shown while the coach writes it, then sent as usual.

One `Drafts` per bot keeps what spans turns: when each chat last got a draft (drafts go at least
`DRAFT_INTERVAL_S` apart, and only when the text grew) and the chats that refused one (a 400: they get the typing
indicator from then on, with no error shown). A `ChatDraft` is one turn's sink (`pipeline.streaming.DraftSink`):
a background task sends the newest text when the interval allows, and `close` drops whatever is still pending, so
a draft never holds up the final message. Near Telegram's send cap the limiter drops drafts first
(`bot.sendlimit`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from telegram import Bot
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.sendlimit import SendLimiter
from pipeline.replies import Reply

logger = logging.getLogger(__name__)

DRAFT_LIMIT = 4096  # a draft's text, as a message's
CHATS_KEPT = 10000  # chats whose last draft time (and refusal) is remembered

Deliver = Callable[[list[Reply]], Awaitable[None]]


class Drafts:
    """Drafts for the whole bot: the per-chat interval and the chats that refuse drafts."""

    def __init__(self, bot: Bot, *, interval_s: float = 0.4, enabled: bool = True,
                 limiter: SendLimiter | None = None) -> None:
        self.bot = bot
        self.limiter = limiter
        self.interval_s = interval_s
        self.enabled = enabled
        self.refused: OrderedDict[int, None] = OrderedDict()
        self.last_at: OrderedDict[int, float] = OrderedDict()
        self.sent = 0
        self.dropped = 0  # near the send cap (`bot.sendlimit`)
        self._ids = itertools.count(1)

    def for_chat(self, chat_id: int, deliver: Deliver) -> ChatDraft | None:
        """A sink for one turn in a chat; None when streaming is off or the chat does not take drafts (groups
        have negative ids; a chat that answered 400 once is remembered)."""
        if not self.enabled or chat_id <= 0 or chat_id in self.refused:
            return None
        return ChatDraft(self, chat_id, deliver)

    def next_id(self) -> int:
        """A new non-zero draft id (the same id animates a draft's changes)."""
        return next(self._ids)

    def refuse(self, chat_id: int) -> None:
        """The chat refused a draft: it gets the typing indicator from now on."""
        self.refused[chat_id] = None
        if len(self.refused) > CHATS_KEPT:
            self.refused.popitem(last=False)

    def wait_s(self, chat_id: int) -> float:
        """Seconds until the chat may get its next draft."""
        last = self.last_at.get(chat_id)
        return 0.0 if last is None else max(0.0, last + self.interval_s - time.monotonic())

    def unmark(self, chat_id: int, at: float | None) -> None:
        """The draft just marked did not go: the chat's last draft time is what it was."""
        if at is None:
            self.last_at.pop(chat_id, None)
        else:
            self.last_at[chat_id] = at

    def mark(self, chat_id: int) -> None:
        """A draft goes to the chat now."""
        self.last_at[chat_id] = time.monotonic()
        self.last_at.move_to_end(chat_id)
        if len(self.last_at) > CHATS_KEPT:
            self.last_at.popitem(last=False)


class ChatDraft:
    """One turn's drafts in one chat (implements `pipeline.streaming.DraftSink`)."""

    def __init__(self, drafts: Drafts, chat_id: int, deliver: Deliver) -> None:
        self.drafts = drafts
        self.chat_id = chat_id
        self.deliver = deliver
        self.draft_id = drafts.next_id()
        self.showing = False  # a draft is on screen: the typing indicator is not needed
        self._pending: str | None = None
        self._last = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def show(self, text: str) -> None:
        """Offer the reply so far; it goes out when the chat's interval allows, if it grew."""
        if len(text) > len(self._last):
            self._offer(text)

    def status(self, text: str) -> None:
        """A status line, shown as soon as the interval allows."""
        self._last = ""
        self._offer(text)

    async def send(self, replies: list[Reply]) -> None:
        """Send finished replies now; the drafts that follow start a new draft."""
        await self._stop()
        try:
            await self.deliver(replies)
        except TelegramError as exc:  # the reply stays stored (/plan shows it); the step goes on
            logger.warning("bot.early_send_failed error=%s", type(exc).__name__)
        self.draft_id = self.drafts.next_id()
        self._last = ""
        self._closed = False

    async def close(self) -> None:
        """The turn is over: whatever is pending is dropped (the final message goes out next)."""
        await self._stop()

    def _offer(self, text: str) -> None:
        if self._closed:
            return
        self._pending = text[:DRAFT_LIMIT]
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _stop(self) -> None:
        self._closed = True
        self._pending = None
        self.showing = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a draft must never cost the reply
                logger.warning("bot.draft_failed", exc_info=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            wait = self.drafts.wait_s(self.chat_id)
            if wait > 0:
                await asyncio.sleep(wait)
            text, self._pending = self._pending, None
            if text is None or text == self._last:
                continue
            previous, at = self._last, self.drafts.last_at.get(self.chat_id)
            self.drafts.mark(self.chat_id)
            self._last = text
            sent = await self._send(text)
            if sent is None:
                return
            if not sent:  # dropped near the send cap: the next text may go as soon as it comes
                self._last = previous
                self.drafts.unmark(self.chat_id, at)

    async def _send(self, text: str) -> bool | None:
        """One draft: True when sent, False when dropped or skipped, None when the chat refuses drafts (then
        nothing more is tried)."""
        limiter = self.drafts.limiter
        if limiter is not None and limiter.busy():
            self.drafts.dropped += 1
            return False
        try:
            await self.drafts.bot.send_message_draft(self.chat_id, self.draft_id, text)
        except BadRequest as exc:
            logger.info("bot.drafts_refused error=%s", type(exc).__name__)
            self.drafts.refuse(self.chat_id)
            self.showing = False
            return None
        except Forbidden:  # the user blocked the bot: the turn's own send finds out and records it
            self.showing = False
            return None
        except TelegramError as exc:  # a network error or a 429: this draft is skipped, the next may go
            logger.debug("bot.draft_skipped error=%s", type(exc).__name__)
            return True
        self.drafts.sent += 1
        self.showing = True
        return True
