"""The one application factory: settings in, a ready python-telegram-bot `Application` out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    Defaults,
    MessageHandler,
    filters,
)

from bot import handlers, texts
from pipeline.coach import Coach
from pipeline.llm import LLM
from pipeline.settings import Settings
from pipeline.tracing import Tracer
from storage.db import Database

logger = logging.getLogger(__name__)


class UserLocks:
    """One asyncio lock per user, so each user's updates are handled in the order they came."""

    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, user_id: int) -> AsyncIterator[None]:
        """Hold the user's lock (created on demand, dropped when nobody waits)."""
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        self._users[user_id] = self._users.get(user_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[user_id] -= 1
            if self._users[user_id] == 0:
                del self._users[user_id]
                del self._locks[user_id]

    def __len__(self) -> int:
        return len(self._locks)


@dataclass
class Services:
    """What the handlers use, created in post_init and closed in post_shutdown."""

    settings: Settings
    db: Database
    llm: LLM
    tracer: Tracer
    coach: Coach
    locks: UserLocks = field(default_factory=UserLocks)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run work after the reply without delaying it; failures are logged, never raised."""
        task = asyncio.create_task(_logged(work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for background work to finish."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)


async def _logged(work: Coroutine[Any, Any, Any]) -> None:
    try:
        await work
    except Exception:
        logger.exception("bot.background_failed")


async def create_services(settings: Settings) -> Services:
    """Database (migrated), tracing, the LLM adapter and the coach."""
    db = Database(settings.database_url)
    await db.migrate()
    tracer = Tracer(settings)
    llm = LLM(
        api_key=settings.gemini_api_key.get_secret_value(),
        model=settings.gemini_model,
        base_url=settings.gemini_base_url,
        timeout_s=settings.gemini_timeout_s,
        attempts=settings.gemini_attempts,
        backoff_s=settings.gemini_backoff_s,
        wrap=tracer.wrap_client,
    )
    coach = Coach(db=db, llm=llm, tracer=tracer, history_turns=settings.history_turns,
                  max_clarify_rounds=settings.max_clarify_rounds)
    return Services(settings=settings, db=db, llm=llm, tracer=tracer, coach=coach)


def build_application(settings: Settings) -> Application:
    """The bot, wired: handlers, rate limiter, defaults, start-up and shut-down hooks."""
    api = settings.telegram_api_url
    app = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .defaults(Defaults(link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .rate_limiter(AIORateLimiter(overall_max_rate=settings.telegram_rate_limit, overall_time_period=1,
                                     max_retries=3))
        .concurrent_updates(512)
        .connection_pool_size(64)
        .pool_timeout(30)
        .post_init(_post_init(settings))
        .post_shutdown(_post_shutdown)
        .build()
    )
    add_handlers(app, settings)
    return app


def add_handlers(app: Application, settings: Settings) -> None:
    """Every handler, in priority order."""
    private = filters.ChatType.PRIVATE
    if settings.allowed_user_ids:
        allowed = filters.User(user_id=settings.allowed_user_ids)
        app.add_handler(MessageHandler(private & ~allowed, _not_allowed), group=-1)
    groups = filters.ChatType.GROUPS
    app.add_handler(MessageHandler(groups, handlers.group))
    app.add_handler(ChatMemberHandler(_added_to_group, ChatMemberHandler.MY_CHAT_MEMBER))
    for name, callback in (
        ("start", handlers.start),
        ("help", handlers.help_command),
        ("plan", handlers.plan),
        ("goal", handlers.goal),
        ("cancel", handlers.cancel),
        ("export", handlers.export),
        ("delete", handlers.delete),
    ):
        app.add_handler(CommandHandler(name, callback, filters=private))
    app.add_handler(MessageHandler(private & filters.COMMAND, handlers.unknown_command))
    app.add_handler(MessageHandler(private & filters.TEXT & ~filters.UpdateType.EDITED, handlers.text))
    app.add_handler(MessageHandler(private & ~filters.TEXT & ~filters.UpdateType.EDITED, handlers.not_text))
    app.add_handler(CallbackQueryHandler(handlers.button))
    app.add_error_handler(handlers.on_error)


async def _not_allowed(update: Update, context: object) -> None:
    from telegram.ext import ApplicationHandlerStop

    if update.effective_message is not None:
        await update.effective_message.reply_text(texts.NOT_ALLOWED, parse_mode=ParseMode.HTML)
    raise ApplicationHandlerStop


async def _added_to_group(update: Update, context: object) -> None:
    member = update.my_chat_member
    if member is None or member.chat.type == "private":
        return
    if member.new_chat_member.status in ("member", "administrator"):
        await handlers.group(update, context)  # type: ignore[arg-type]


def _post_init(settings: Settings) -> Callable[[Application], Coroutine[Any, Any, None]]:
    async def post_init(app: Application) -> None:
        app.bot_data["services"] = await create_services(settings)
        try:
            await app.bot.set_my_commands([BotCommand(name, desc) for name, desc in texts.COMMANDS])
        except Exception:
            logger.warning("bot.set_commands_failed", exc_info=True)
        if app.job_queue is not None:
            app.job_queue.run_repeating(_sync_ratings, interval=settings.rating_sync_interval_s, first=5,
                                        name="sync-ratings")
        logger.info("bot.ready username=%s", app.bot.username)

    return post_init


async def _sync_ratings(context: Any) -> None:
    """Re-send ratings Opik has not confirmed (it was down, or a press raced a restart)."""
    svc: Services = context.application.bot_data["services"]
    sent = await svc.coach.sync_ratings()
    if sent:
        logger.info("ratings.synced count=%d", sent)


async def _post_shutdown(app: Application) -> None:
    svc: Services | None = app.bot_data.get("services")
    if svc is None:
        return
    await svc.drain()
    await svc.llm.aclose()
    await asyncio.to_thread(svc.tracer.flush)
    await svc.db.dispose()
    logger.info("bot.stopped")
