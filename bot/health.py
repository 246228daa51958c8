"""Health and metrics on a server of their own: `/healthz`, `/readyz` and `/metrics` on HEALTH_LISTEN:HEALTH_PORT
(127.0.0.1:8081 by default) in both modes, so a proxy in front of the webhook server exposes only the webhook path.

`/readyz` cannot be turned against the bot. One check (the database answers `SELECT 1`, Telegram answers
`getMe`) answers for READYZ_CACHE_S seconds, and callers that arrive while it runs await that same check (single
flight): a flood costs at most one database connection and one getMe at a time. The check has its own engine
without a pool (`storage.db.probe_engine`), so it never takes a connection a turn needs, and its own Bot API client
with one connection, so it never queues behind replies; a getMe that worked counts for a minute. `/metrics`
renders the registry at most every half second (a flood gets the same text).

Both of Rein's HTTP servers are uvicorn with `log_config=None`: its loggers propagate to Rein's handler (one line,
secrets redacted) instead of uvicorn's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from telegram import Bot
from telegram.request import HTTPXRequest

from bot.metrics import CONTENT_TYPE
from pipeline.settings import Settings
from storage.db import probe_engine

logger = logging.getLogger(__name__)

GETME_CACHE_S = 60.0  # a getMe that worked counts this long
METRICS_CACHE_S = 0.5  # /metrics renders the registry at most this often (scrapers ask every few seconds)
CHECK_TIMEOUT_S = 3.0  # each readiness check gives up after this long

Status = dict[str, bool]


class Readiness:
    """The database and Telegram checks behind `/readyz`: cached, one at a time, on connections of their own."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache_s = settings.readyz_cache_s
        self.engine = probe_engine(settings.database_url, connect_timeout_s=CHECK_TIMEOUT_S)
        self._request = HTTPXRequest(connection_pool_size=1, connect_timeout=CHECK_TIMEOUT_S,
                                     read_timeout=CHECK_TIMEOUT_S, write_timeout=CHECK_TIMEOUT_S,
                                     pool_timeout=CHECK_TIMEOUT_S)
        self.bot = Bot(settings.telegram_bot_token.get_secret_value(), base_url=f"{settings.telegram_api_url}/bot",
                       request=self._request, get_updates_request=self._request)
        self._clock = clock
        self._last: Status | None = None
        self._checked_at = float("-inf")
        self._getme_ok_at = float("-inf")
        self._flight: asyncio.Task[Status] | None = None

    async def status(self) -> Status:
        """{"database": ok?, "telegram": ok?}: the cached answer, the check running now, or a new check."""
        if self._last is not None and self._clock() - self._checked_at < self.cache_s:
            return self._last
        if self._flight is None:
            self._flight = asyncio.create_task(self._check(), name="readyz-check")
        # A caller that goes away (its client hung up) does not cancel the check the others await.
        return await asyncio.shield(self._flight)

    async def _check(self) -> Status:
        try:
            database, telegram = await asyncio.gather(self._database_ok(), self._telegram_ok())
            self._last = {"database": database, "telegram": telegram}
            self._checked_at = self._clock()
            return self._last
        finally:
            self._flight = None

    async def _database_ok(self) -> bool:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            logger.warning("readyz.database_failing error=%s", type(exc).__name__)
            return False
        return True

    async def _telegram_ok(self) -> bool:
        if self._clock() - self._getme_ok_at < GETME_CACHE_S:
            return True
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await self.bot.get_me()
        except Exception as exc:
            logger.warning("readyz.telegram_failing error=%s", type(exc).__name__)
            return False
        self._getme_ok_at = self._clock()
        return True

    async def close(self) -> None:
        """Stop a check in flight, close the engine and the Bot API client."""
        if self._flight is not None:
            self._flight.cancel()
            with contextlib.suppress(BaseException):
                await self._flight
        await self.engine.dispose()
        await self._request.shutdown()


class HttpServer:
    """One uvicorn server on the bot's event loop, logging through Rein's handler, stopped by the runner."""

    def __init__(self, app: Starlette, host: str, port: int, *, graceful_s: float) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=max(int(graceful_s), 1))
        self.server = _QuietServer(config)
        self._serving: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0); 0 when the server is not running."""
        if not self.server.started:
            return 0
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    async def start(self) -> BaseException | None:
        """Start serving; the error when it could not (a port taken, an address not here)."""
        self._serving = asyncio.create_task(self.server.serve(), name="http-server")
        while not self.server.started:
            if self._serving.done():
                error = self._serving.exception() if not self._serving.cancelled() else None
                return error or RuntimeError("the server stopped at start")
            await asyncio.sleep(0.01)
        return None

    async def stop(self) -> None:
        """Close the port; wait for the requests being answered (bounded by the graceful time)."""
        self.server.should_exit = True
        if self._serving is not None:
            with contextlib.suppress(BaseException):
                await self._serving


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class Health:
    """The health server: `/healthz`, `/readyz` (503 while starting or stopping) and `/metrics`."""

    def __init__(self, settings: Settings, *, metrics: Callable[[], bytes], state: Callable[[], str | None]) -> None:
        self.readiness = Readiness(settings)
        self._metrics = metrics
        self._state = state
        self._rendered = b""
        self._rendered_at = float("-inf")
        web = Starlette(routes=[
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/metrics", self._metrics_route, methods=["GET"]),
        ])
        self.server = HttpServer(web, settings.health_listen, settings.health_port, graceful_s=1)
        self.port_wanted = settings.health_port

    @property
    def port(self) -> int:
        """The port bound; 0 when not serving."""
        return self.server.port

    async def start(self) -> None:
        """Serve; a port that cannot be bound leaves the bot running without health endpoints (logged)."""
        error = await self.server.start()
        if error is not None:
            logger.warning("bot.health_server_off port=%d reason=%r", self.port_wanted, error)

    async def stop(self) -> None:
        """Close the server and the checks' connections."""
        await self.server.stop()
        await self.readiness.close()

    async def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def _readyz(self, request: Request) -> Response:
        state = self._state()
        body: dict[str, str] = {}
        if state != "starting":
            checks = await self.readiness.status()
            body = {name: "ok" if ok else "failing" for name, ok in checks.items()}
        if state is not None:
            body["state"] = state
        ready = state is None and all(value == "ok" for value in body.values())
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _metrics_route(self, request: Request) -> Response:
        now = time.monotonic()
        if now - self._rendered_at >= METRICS_CACHE_S:
            self._rendered, self._rendered_at = self._metrics(), now
        return Response(self._rendered, media_type=CONTENT_TYPE)
