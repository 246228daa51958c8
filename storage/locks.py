"""Per-user locks across processes: a PostgreSQL advisory lock held for the duration of a turn.

All of a process's user locks live on one connection of their own (autocommit, apart from the
sessions' pool), whatever the number of turns in flight, so locking never eats into PostgreSQL's
`max_connections`. A lock is taken with `pg_try_advisory_lock`; while another process holds it the
caller tries again after a short, growing pause (at most `poll_s`). When that connection dies,
PostgreSQL drops its locks with it, so a killed replica never leaves a user locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

# Keys are `NAMESPACE << 52 | user_id` in the single-bigint key space (Telegram ids have at most 52 bits);
# the scheduler's leadership lock lives in the two-integer key space, so they never meet.
NAMESPACE = 0x52E
_ID_BITS = 52
# Two-integer key space: (Rein, role). Role 0 serialises migrations; leadership roles start at 1.
LOCK_CLASS = 0x5265696E  # "Rein"
MIGRATIONS = 0


def user_key(user_id: int) -> int:
    """The advisory-lock key of one Telegram user."""
    if not 0 <= user_id < 1 << _ID_BITS:
        user_id &= (1 << _ID_BITS) - 1  # out-of-range ids share a key with another: only more waiting
    return (NAMESPACE << _ID_BITS) | user_id


def is_postgres(url: str) -> bool:
    """True when the database URL points at PostgreSQL (the only backend with advisory locks)."""
    return make_url(url).get_backend_name() == "postgresql"


class AdvisoryLocks:
    """`async with locks.hold(user_id):` waits until no other process holds that user's lock."""

    def __init__(self, url: str, *, poll_s: float = 0.05, attempts: int = 2, connect_timeout_s: float = 5.0) -> None:
        self.engine: AsyncEngine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                                                       connect_args={"timeout": connect_timeout_s})
        self.poll_s = poll_s
        self.attempts = attempts
        self._conn: AsyncConnection | None = None
        self._generation = 0  # bumped with every new connection: locks of an older one are gone
        self._io = asyncio.Lock()
        self._pending: set[asyncio.Future[Any]] = set()  # statements whose caller left, still running

    @contextlib.asynccontextmanager
    async def hold(self, user_id: int) -> AsyncIterator[None]:
        """Hold the user's advisory lock for the block (released afterwards, or dropped with the connection)."""
        key = user_key(user_id)
        try:
            generation: int | None = await self._acquire(key)
        except Exception as exc:
            # The database is unreachable: no other replica can get far either, and the turn itself
            # meets the outage (and says so) rather than failing here.
            logger.warning("locks.unavailable error=%s", type(exc).__name__)
            generation = None
        try:
            yield
        finally:
            if generation is not None:
                await self._release(key, generation)

    async def _acquire(self, key: int) -> int:
        pause, failures = 0.005, 0
        while True:
            try:
                taken, generation = await self._call("SELECT pg_try_advisory_lock(:key)", key, unlock_if_orphaned=True)
            except Exception:
                failures += 1
                if failures >= self.attempts:
                    raise
                logger.warning("locks.connection_lost retrying=true")
                taken, generation = False, -1
            if taken:
                return generation
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.poll_s)

    async def _release(self, key: int, generation: int) -> None:
        if generation != self._generation:
            logger.warning("locks.lost_with_connection")  # the server already dropped it
            return
        try:
            released, _ = await self._call("SELECT pg_advisory_unlock(:key)", key)
        except Exception:
            logger.warning("locks.release_failed", exc_info=True)  # the connection is gone, and the lock with it
            return
        if not released:
            logger.warning("locks.not_held key=%d", key)

    async def _call(self, sql: str, key: int, *, unlock_if_orphaned: bool = False) -> tuple[bool, int]:
        """Run one lock statement to its end even if the caller is cancelled (a half-known lock state
        would need the connection, and every lock on it, thrown away)."""
        task = asyncio.ensure_future(self._run(sql, key))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._keep(task)
            if unlock_if_orphaned:
                task.add_done_callback(lambda done: self._orphaned(done, key))
            raise

    def _keep(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _orphaned(self, done: asyncio.Future[tuple[bool, int]], key: int) -> None:
        if not done.cancelled() and done.exception() is None and done.result()[0]:
            self._keep(asyncio.ensure_future(self._release(key, done.result()[1])))  # taken for a caller that left

    async def _run(self, sql: str, key: int) -> tuple[bool, int]:
        async with self._io:
            if self._conn is None:
                self._conn = await self.engine.connect()
                self._generation += 1
            try:
                value = await self._conn.scalar(text(sql), {"key": key})
            except Exception:
                conn, self._conn = self._conn, None
                await _discard(conn)
                raise
            return bool(value), self._generation

    async def dispose(self) -> None:
        """Close the lock connection (dropping any lock still held) and the engine."""
        async with self._io:
            conn, self._conn = self._conn, None
            if conn is not None:
                await _discard(conn)
        await self.engine.dispose()


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


@contextlib.asynccontextmanager
async def migration_lock(url: str) -> AsyncIterator[None]:
    """On PostgreSQL, one process at a time migrates (replicas starting together); elsewhere a no-op."""
    if not is_postgres(url):
        yield
        return
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:cls, :role)"), {"cls": LOCK_CLASS, "role": MIGRATIONS})
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:cls, :role)"),
                                   {"cls": LOCK_CLASS, "role": MIGRATIONS})
    finally:
        await engine.dispose()
