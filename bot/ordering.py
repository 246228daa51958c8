"""Per-user order, in one place: python-telegram-bot's `BaseUpdateProcessor` runs updates concurrently, but
each user's updates one at a time, in the order they arrived.

Handlers never take a lock themselves. What the bot sends unasked (check-ins, session prompts) takes the same
user lock through `UserLocks.hold`, so it never lands in the middle of a turn. With PostgreSQL the holder also
takes the user's advisory lock, so the order holds across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from storage.locks import AdvisoryLocks


class UserLocks:
    """One asyncio lock per user (created on demand, dropped when nobody waits), plus the advisory lock."""

    def __init__(self, remote: AdvisoryLocks | None = None) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}
        self.remote = remote

    @contextlib.asynccontextmanager
    async def hold(self, user_id: int) -> AsyncIterator[None]:
        """Hold the user's lock for the block."""
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        self._users[user_id] = self._users.get(user_id, 0) + 1
        try:
            async with lock, self._remote(user_id):
                yield
        finally:
            self._users[user_id] -= 1
            if self._users[user_id] == 0:
                del self._users[user_id]
                del self._locks[user_id]

    def _remote(self, user_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        return self.remote.hold(user_id) if self.remote is not None else contextlib.nullcontext()

    def __len__(self) -> int:
        return len(self._locks)


def private_user(update: object) -> int | None:
    """The user whose private chat an update comes from (None for groups and user-less updates)."""
    if not isinstance(update, Update):
        return None
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None or chat.type != "private":
        return None
    return user.id


FILE_KINDS = ("voice", "audio", "photo")  # a message's fields holding what the coach hears or sees


def coach_answers(text: object, files: Iterable[object]) -> bool:
    """The rule for a message the coach answers: it carries a voice note, audio file or photo (read as the words
    spoken or a line describing it, so a burst folds it in like a text), or it is a text that is not a command."""
    return any(files) or (isinstance(text, str) and not text.startswith("/"))


def answerable(update: object) -> bool:
    """Whether an update is a new message the coach answers (`coach_answers`)."""
    if not isinstance(update, Update) or update.message is None:
        return False
    message = update.message
    return coach_answers(message.text, (getattr(message, kind) for kind in FILE_KINDS))


class PerUserOrder(BaseUpdateProcessor):
    """Concurrent updates, in order per user; counts the updates it finished (tests wait on that count) and,
    per user, the texts waiting for their turn (a text that has newer ones behind it is answered with them; "texts"
    here are the `answerable` updates: a voice note or photo counts as one)."""

    def __init__(self, locks: UserLocks, max_concurrent_updates: int = 512) -> None:
        super().__init__(max_concurrent_updates)
        self.locks = locks
        self.processed = 0
        self.in_flight = 0
        self._changed = asyncio.Event()
        self._texts: dict[int, int] = {}  # per user: texts waiting for the user's lock

    def texts_waiting(self, user_id: int) -> int:
        """How many texts of the user wait behind the update being handled."""
        return self._texts.get(user_id, 0)

    @contextlib.contextmanager
    def texts_behind(self, user_id: int, count: int) -> Iterator[None]:
        """Count `count` texts of the user as waiting for the block (the webhook inbox's stored ones)."""
        self._count_text(user_id, count)
        try:
            yield
        finally:
            self._count_text(user_id, -count)

    def _count_text(self, user_id: int, delta: int) -> None:
        left = self._texts.get(user_id, 0) + delta
        if left > 0:
            self._texts[user_id] = left
        else:
            self._texts.pop(user_id, None)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run the update's handlers while holding its user's lock (updates without a user run at once)."""
        user_id = private_user(update)
        if user_id is None:
            await self.run(coroutine)
            return
        waiting = answerable(update)
        if waiting:
            self._count_text(user_id, 1)
        try:
            async with self.locks.hold(user_id):
                if waiting:
                    waiting = False
                    self._count_text(user_id, -1)
                await self.run(coroutine)
        finally:
            if waiting:  # never got the lock (cancelled)
                self._count_text(user_id, -1)

    async def run(self, coroutine: Awaitable[Any]) -> None:
        """Run one update's handlers (the caller holds its user's lock), counted."""
        self.in_flight += 1
        try:
            await coroutine
        finally:
            self.in_flight -= 1
            self.processed += 1
            self._changed.set()

    async def wait_processed(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` updates have been processed in all (raises TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            while self.processed < count:
                self._changed.clear()
                await self._changed.wait()

    async def initialize(self) -> None:
        """Nothing to allocate."""

    async def shutdown(self) -> None:
        """Nothing to free (the advisory locks close with the services)."""
