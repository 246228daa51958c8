"""Running Rein: webhook mode (an ASGI server) or long polling, both with a graceful stop.

Webhook mode follows python-telegram-bot's custom-webhook pattern: a Starlette app served by uvicorn on
WEBHOOK_LISTEN:WEBHOOK_PORT receives Telegram's POSTs (refused with 403 without the right
`X-Telegram-Bot-Api-Secret-Token`) and hands the updates to the Application; it serves the webhook path and nothing
else. `/healthz`, `/readyz` and `/metrics` live on their own server (`bot.health`, HEALTH_LISTEN:HEALTH_PORT), the
only server in polling mode.

Order: a webhook request is answered as soon as its update is queued; the application's update processor
(`bot.ordering`) then handles each user's updates one at a time, in order, across replicas too (PostgreSQL
advisory locks). No Telegram connection waits on a user's lock.

A stop (SIGTERM or SIGINT) takes no more updates (`/readyz` says "stopping" until the end), lets the turns in flight
finish (at most `SHUTDOWN_TIMEOUT_S`), flushes traces (bounded by `OPIK_FLUSH_TIMEOUT_S`) and closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from telegram import Update

from bot.app import build_application
from bot.context import ReinApp
from bot.health import Health, HttpServer
from bot.inbox import Inbox
from bot.ordering import PerUserOrder, private_user
from bot.services import Services
from pipeline.settings import Settings

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_path(url: str) -> str:
    """The path Telegram posts to, taken from TELEGRAM_WEBHOOK_URL (`/telegram` if it has none)."""
    path = urlsplit(url).path.rstrip("/")
    return path or "/telegram"


def _services(app: ReinApp) -> Services | None:
    return app.bot_data.services


class Runner:
    """The Application plus its HTTP servers: the health server (/healthz, /readyz, /metrics) in both modes and,
    in webhook mode, the webhook server.

    The health server is a convenience: if its port is taken the bot runs without it (logged). The webhook server
    is not: if it cannot start, neither does the bot.
    """

    def __init__(self, app: ReinApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.started = False
        self.stopping = False
        self.webhook = bool(settings.telegram_webhook_url)
        self.url = settings.telegram_webhook_url or ""
        self.path = webhook_path(self.url) if self.webhook else ""
        secret = settings.telegram_webhook_secret
        self._secret = secret.get_secret_value().encode() if secret is not None else b""
        self.inbox: Inbox | None = None  # webhook mode: private updates are stored before they are acknowledged
        self.health = Health(settings, metrics=self._metrics, state=self._state)
        self.web: HttpServer | None = None
        if self.webhook:
            routes = [Route(self.path, self._telegram, methods=["POST"])]
            self.web = HttpServer(Starlette(routes=routes), settings.webhook_listen, settings.webhook_port,
                                  graceful_s=settings.shutdown_timeout_s)

    @property
    def port(self) -> int:
        """The webhook server's port actually bound (useful with WEBHOOK_PORT=0); 0 when it is not running."""
        return self.web.port if self.web is not None else 0

    @property
    def health_port(self) -> int:
        """The health server's port actually bound (useful with HEALTH_PORT=0); 0 when it is not running."""
        return self.health.port

    async def start(self) -> None:
        """Serve health (from the start: `/healthz` answers during migrations), initialise the Application, create
        the services, start the webhook server or polling."""
        await self.health.start()
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
        if self.web is not None:
            error = await self.web.start()
            if error is not None:
                raise RuntimeError(f"the webhook server could not start: {error!r}")
            await self.app.bot.set_webhook(url=self.url, secret_token=self._secret.decode(),
                                           allowed_updates=ALLOWED_UPDATES, max_connections=40)
            logger.info("bot.webhook_set path=%s port=%d", self.path, self.port)
        else:
            assert self.app.updater is not None
            await self.app.updater.start_polling(allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)
        self.started = True

    async def _stop_intake(self) -> None:
        # The webhook stays registered: other replicas (or this one, restarted) keep receiving updates.
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.web is not None:
            await self.web.stop()

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
        await self.health.stop()
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

    def _state(self) -> str | None:
        """What /readyz adds to its checks: "starting", "stopping", or nothing while running."""
        if self.stopping:
            return "stopping"
        return None if self.started else "starting"

    def _metrics(self) -> bytes:
        svc = _services(self.app)
        return svc.metrics.render() if svc is not None else b""


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
