"""Running Rein: webhook mode (an ASGI server) or long polling, both with a graceful stop.

Webhook mode follows python-telegram-bot's custom-webhook pattern: a Starlette app served by uvicorn
receives Telegram's POSTs (refused with 403 without the right `X-Telegram-Bot-Api-Secret-Token`) and
hands the updates to the Application. The same server answers `/healthz` (the process is up),
`/readyz` (the database answers `SELECT 1` and Telegram answers getMe, cached) and `/metrics`
(Prometheus text), in polling mode too.

Order: a webhook request is answered as soon as its update is queued; the application's update processor
(`bot.ordering`) then handles each user's updates one at a time, in order, across replicas too (PostgreSQL
advisory locks). No Telegram connection waits on a user's lock.

A stop (SIGTERM or SIGINT) takes no more updates, lets the turns in flight finish (at most
`SHUTDOWN_TIMEOUT_S`), flushes traces (bounded by `OPIK_FLUSH_TIMEOUT_S`) and closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from telegram import Update

from bot.app import build_application
from bot.context import ReinApp
from bot.inbox import Inbox
from bot.metrics import CONTENT_TYPE
from bot.ordering import PerUserOrder, private_user
from bot.services import Services
from pipeline.settings import Settings

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
GETME_CACHE_S = 60.0  # /readyz asks Telegram at most this often
CHECK_TIMEOUT_S = 3.0  # each readiness check gives up after this long


def webhook_path(url: str) -> str:
    """The path Telegram posts to, taken from TELEGRAM_WEBHOOK_URL (`/telegram` if it has none)."""
    path = urlsplit(url).path.rstrip("/")
    return path or "/telegram"


def _services(app: ReinApp) -> Services | None:
    return app.bot_data.services


class Runner:
    """The Application plus an HTTP server (/healthz, /readyz, /metrics and, in webhook mode, the webhook).

    In polling mode the HTTP server is a convenience (health checks, metrics): if its port is taken the
    bot runs without it.
    """

    def __init__(self, app: ReinApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.stopping = False
        self.webhook = bool(settings.telegram_webhook_url)
        self.url = settings.telegram_webhook_url or ""
        self.path = webhook_path(self.url) if self.webhook else ""
        secret = settings.telegram_webhook_secret
        self._secret = secret.get_secret_value().encode() if secret is not None else b""
        self._getme_ok_at = float("-inf")
        self.inbox: Inbox | None = None  # webhook mode: private updates are stored before they are acknowledged
        routes = [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]
        if self.webhook:
            routes.append(Route(self.path, self._telegram, methods=["POST"]))
        self.web = Starlette(routes=routes)
        config = uvicorn.Config(self.web, host=settings.webhook_listen, port=settings.webhook_port,
                                log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=max(int(settings.shutdown_timeout_s), 1))
        self.server = _QuietServer(config)
        self._serving: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with WEBHOOK_PORT=0); 0 when the server is not running."""
        if not self.server.started:
            return 0
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Initialise the Application, create the services, start the server and taking updates."""
        await self.app.initialize()
        if self.app.post_init is not None:
            await self.app.post_init(self.app)
        await self.app.start()
        svc = _services(self.app)
        if svc is not None:
            svc.metrics.track_queue(self.app.update_queue.qsize)
            if self.webhook and isinstance(self.app.update_processor, PerUserOrder):
                self.inbox = Inbox(self.app, self.app.update_processor, svc.db)
                await self.inbox.recover()
        await self._start_server()
        if self.webhook:
            await self.app.bot.set_webhook(url=self.url, secret_token=self._secret.decode(),
                                           allowed_updates=ALLOWED_UPDATES, max_connections=40)
            logger.info("bot.webhook_set path=%s port=%d", self.path, self.port)
        else:
            assert self.app.updater is not None
            await self.app.updater.start_polling(allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)

    async def _start_server(self) -> None:
        self._serving = asyncio.create_task(self.server.serve(), name="http-server")
        while not self.server.started:
            if self._serving.done():
                error = self._serving.exception() if not self._serving.cancelled() else None
                if self.webhook:
                    raise RuntimeError(f"the webhook server could not start: {error!r}")
                logger.warning("bot.http_server_off port=%d reason=%r", self.settings.webhook_port, error)
                return
            await asyncio.sleep(0.01)

    async def _stop_intake(self) -> None:
        # The webhook stays registered: other replicas (or this one, restarted) keep receiving updates.
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        self.server.should_exit = True
        if self._serving is not None:
            with contextlib.suppress(BaseException):
                await self._serving

    def _busy(self) -> bool:
        """Updates still queued or being handled."""
        svc = _services(self.app)
        running = svc.metrics.running if svc is not None else 0
        draining = self.inbox is not None and self.inbox.busy
        return self.app.update_queue.qsize() > 0 or running > 0 or draining

    async def stop(self) -> None:
        """Stop taking updates, finish what is in flight (bounded), flush traces, close the database."""
        if self.stopping:
            return
        self.stopping = True
        started = time.monotonic()
        deadline = started + self.settings.shutdown_timeout_s
        logger.info("bot.stopping")
        await self._stop_intake()
        while time.monotonic() < deadline:
            if not self._busy():
                break
            await asyncio.sleep(0.05)
        if self.inbox is not None:
            await self.inbox.stop(timeout_s=0.5)  # what it did not handle stays stored for the next start
        if self.app.running:
            try:
                await asyncio.wait_for(asyncio.shield(self.app.stop()), max(deadline - time.monotonic(), 1.0))
            except TimeoutError:
                logger.warning("bot.stop_timeout turns still running were abandoned")
        if self.app.post_shutdown is not None:
            await self.app.post_shutdown(self.app)
        with contextlib.suppress(RuntimeError):
            await self.app.shutdown()
        logger.info("bot.stop_done seconds=%.1f", time.monotonic() - started)

    # ---------------------------------------------------------------- routes

    async def _telegram(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            logger.warning("webhook.refused reason=secret")
            return PlainTextResponse("forbidden", status_code=403)
        if self.stopping:
            return PlainTextResponse("stopping", status_code=503)  # Telegram retries: another replica takes it
        try:
            data = await request.json()
            update = Update.de_json(data, self.app.bot)
        except (ValueError, KeyError, TypeError, AttributeError):  # JSONDecodeError is a ValueError
            logger.warning("webhook.bad_update")
            return PlainTextResponse("bad update", status_code=400)
        svc = _services(self.app)
        if svc is not None:
            svc.metrics.updates.labels("webhook").inc()
        user_id = private_user(update)
        if user_id is None or self.inbox is None:
            await self.app.update_queue.put(update)
            return Response(status_code=200)
        try:
            await self.inbox.accept(update, user_id, data)
        except Exception as exc:  # not stored: Telegram must send it again
            logger.warning("webhook.not_stored error=%s", type(exc).__name__)
            return PlainTextResponse("storage unavailable", status_code=503)
        return Response(status_code=200)

    async def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def _readyz(self, request: Request) -> Response:
        checks = {"database": await self._database_ok(), "telegram": await self._telegram_ok()}
        ready = all(checks.values()) and not self.stopping
        body = {name: "ok" if ok else "failing" for name, ok in checks.items()}
        if self.stopping:
            body["state"] = "stopping"
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _database_ok(self) -> bool:
        svc = _services(self.app)
        if svc is None:
            return False
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S), svc.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            logger.warning("readyz.database_failing error=%s", type(exc).__name__)
            return False
        return True

    async def _telegram_ok(self) -> bool:
        if time.monotonic() - self._getme_ok_at < GETME_CACHE_S:
            return True
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await self.app.bot.get_me()
        except Exception as exc:
            logger.warning("readyz.telegram_failing error=%s", type(exc).__name__)
            return False
        self._getme_ok_at = time.monotonic()
        return True

    async def _metrics(self, request: Request) -> Response:
        svc = _services(self.app)
        body = svc.metrics.render() if svc is not None else b""
        return Response(body, media_type=CONTENT_TYPE)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def make_runner(settings: Settings) -> Runner:
    """The Application and its server: webhook mode when TELEGRAM_WEBHOOK_URL is set, long polling otherwise."""
    return Runner(build_application(settings), settings)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    runner = make_runner(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.start()
        logger.info("bot.running mode=%s", "webhook" if runner.webhook else "polling")
        await stop.wait()
    finally:
        await runner.stop()
