"""Leadership: exactly one process at a time runs the work that must not run twice (the check-in scheduler).

On PostgreSQL the leader is whoever holds a session-level advisory lock (`pg_try_advisory_lock`) on a
connection of its own. Followers try again every `retry_s` seconds; the leader checks its connection
as often and steps down (calls `on_stop`) when the connection is gone. When a leader dies, PostgreSQL
ends its session and frees the lock: a killed process at once (its socket closes), a vanished machine
after the TCP keepalive below. On SQLite there is one process by design: it is always the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from storage.locks import LOCK_CLASS, is_postgres

logger = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None] | None]

# Two-integer advisory-lock key space (per-user locks use the one-bigint space): (Rein, which role).
SCHEDULER = 1

# The server drops a leader whose machine vanished after about idle + interval * count seconds.
_KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}


class Leadership:
    """Holds (or keeps trying for) one leadership lock and calls `on_start`/`on_stop` as it changes hands."""

    def __init__(
        self,
        url: str,
        *,
        on_start: Callback,
        on_stop: Callback,
        retry_s: float = 5.0,
        role: int = SCHEDULER,
        name: str = "scheduler",
    ) -> None:
        self.url = url
        self.on_start = on_start
        self.on_stop = on_stop
        self.retry_s = retry_s
        self.role = role
        self.name = name
        self.is_leader = False
        self.since: float | None = None  # time.monotonic() when this process became leader
        self._postgres = is_postgres(url)
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Become leader now (SQLite) or start trying (PostgreSQL)."""
        if not self._postgres:
            await self._become_leader()
            return
        self._engine = create_async_engine(
            self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
            connect_args={"server_settings": dict(_KEEPALIVE), "timeout": max(self.retry_s, 5.0)},
        )
        self._task = asyncio.create_task(self._run(), name=f"leadership:{self.name}")

    async def stop(self) -> None:
        """Step down (calling `on_stop` if leading) and release the lock."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.is_leader:
            await self._step_down("stopping")
        await self._close()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _run(self) -> None:
        while True:
            try:
                await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("leader.connection_lost name=%s error=%s", self.name, type(exc).__name__)
                await self._close()
                if self.is_leader:
                    await self._step_down("connection lost")
            await asyncio.sleep(self.retry_s)

    async def _attempt(self) -> None:
        assert self._engine is not None
        if self._conn is None:
            self._conn = await self._engine.connect()
        if self.is_leader:
            # The heartbeat: a dead connection means the server may already have given the lock away.
            async with asyncio.timeout(max(self.retry_s, 1.0)):
                await self._conn.execute(text("SELECT 1"))
            return
        got = await self._conn.scalar(
            text("SELECT pg_try_advisory_lock(:cls, :role)"), {"cls": LOCK_CLASS, "role": self.role}
        )
        if got:
            await self._become_leader()

    async def _become_leader(self) -> None:
        self.is_leader = True
        self.since = time.monotonic()
        logger.info("leader.elected name=%s", self.name)
        await _call(self.on_start, "on_start")

    async def _step_down(self, why: str) -> None:
        self.is_leader = False
        self.since = None
        logger.info("leader.stepped_down name=%s why=%s", self.name, why)
        await _call(self.on_stop, "on_stop")

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Closing the session releases the lock (an explicit unlock could hang on a dead connection).
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()


async def _call(callback: Callback, what: str) -> None:
    try:
        result = callback()
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("leader.callback_failed callback=%s", what)
