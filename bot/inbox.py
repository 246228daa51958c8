"""Webhook updates answered at once and lost never: each private update is stored in the inbox (`storage.inbox`)
before Telegram gets its 200, then handled per user, in update order, by whichever replica holds that user's
lock. Nothing waits in memory but the set of users being drained; after a restart, what is left in the inbox
is handled first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telegram import Update

from bot.context import ReinApp
from bot.ordering import FILE_KINDS, PerUserOrder, coach_answers
from storage import inbox
from storage.db import Database

logger = logging.getLogger(__name__)

RECOVER_BATCH = 500
PEEK = 50  # stored updates looked at behind the one being handled


class Inbox:
    """Stores webhook updates and drains them per user."""

    def __init__(self, app: ReinApp, order: PerUserOrder, db: Database) -> None:
        self.app = app
        self.order = order
        self.db = db
        self._dirty: set[int] = set()  # users with updates stored since their drain last looked
        self._draining: dict[int, asyncio.Task[None]] = {}

    @property
    def busy(self) -> bool:
        """Whether any user's updates are being handled from the inbox."""
        return bool(self._draining)

    async def accept(self, update: Update, telegram_id: int, payload: dict[str, Any]) -> None:
        """Store the update (a repeat of a stored one is ignored) and have the user's updates handled."""
        async with self.db.session() as session:
            await inbox.put(session=session, update_id=update.update_id, telegram_id=telegram_id, payload=payload)
        self.drain(telegram_id)

    def drain(self, telegram_id: int) -> None:
        """Handle the user's waiting updates (once the user's lock is free, here or on another replica)."""
        self._dirty.add(telegram_id)
        if telegram_id not in self._draining:
            self._draining[telegram_id] = asyncio.create_task(self._drain(telegram_id), name=f"inbox:{telegram_id}")

    async def recover(self) -> int:
        """After a start: drain every user whose acknowledged updates were never handled."""
        async with self.db.session() as session:
            waiting = await inbox.waiting_users(session=session, limit=RECOVER_BATCH)
        for telegram_id in waiting:
            self.drain(telegram_id)
        if waiting:
            logger.info("inbox.recovering users=%d", len(waiting))
        return len(waiting)

    async def stop(self, timeout_s: float) -> None:
        """Let the drains in progress finish (bounded); what is left stays in the inbox for the next start."""
        if self._draining:
            await asyncio.wait(list(self._draining.values()), timeout=timeout_s)
        for task in list(self._draining.values()):
            task.cancel()

    async def _drain(self, telegram_id: int) -> None:
        try:
            while telegram_id in self._dirty:
                self._dirty.discard(telegram_id)
                async with self.order.locks.hold(telegram_id):
                    while (taken := await self._next(telegram_id)) is not None:
                        update, behind = taken
                        with self.order.texts_behind(telegram_id, behind):
                            await self.order.run(self.app.process_update(update))
        except Exception:
            logger.exception("inbox.drain_failed")  # what is left stays stored: the next update or start drains it
        finally:
            del self._draining[telegram_id]

    async def _next(self, telegram_id: int) -> tuple[Update, int] | None:
        """The user's next update and how many texts wait behind it (the coach answers those together)."""
        async with self.db.session() as session:
            row = await inbox.take_next(session=session, telegram_id=telegram_id)
            if row is None:
                return None
            behind = await inbox.peek(session=session, telegram_id=telegram_id, limit=PEEK)
        texts = sum(1 for payload in behind if answerable_payload(payload))
        return Update.de_json(row.payload, self.app.bot), texts


def answerable_payload(payload: dict[str, Any]) -> bool:
    """A stored update that is a new message the coach answers (`bot.ordering.coach_answers`)."""
    message = payload.get("message")
    return isinstance(message, dict) and coach_answers(message.get("text"), (message.get(k) for k in FILE_KINDS))
