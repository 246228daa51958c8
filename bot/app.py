"""The one application factory: settings in, a ready python-telegram-bot `Application` out."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    Defaults,
    MessageHandler,
    filters,
)

from bot import admin, handlers, render, texts
from bot import checkins as checkin_bot
from bot.metrics import Metrics
from bot.request import AiohttpRequest
from bot.sendlimit import SendLimiter
from pipeline import prompts
from pipeline.checkins import Checkins, CheckinScheduler
from pipeline.coach import Coach
from pipeline.judge import Judge
from pipeline.llm import LLM
from pipeline.settings import Settings
from pipeline.tracing import Tracer
from storage.db import Database
from storage.leader import Callback as LeaderCallback
from storage.leader import Leadership
from storage.locks import AdvisoryLocks, is_postgres, migration_lock

logger = logging.getLogger(__name__)


# Users whose lock the current task already holds (webhook mode takes it when an update arrives).
_HELD: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("rein_held_users", default=frozenset())


class UserLocks:
    """One asyncio lock per user, so each user's updates are handled in the order they came.

    With `remote` (PostgreSQL), the holder also takes the user's advisory lock, so the order holds
    across replicas. Holding is re-entrant within a task.
    """

    def __init__(self, remote: AdvisoryLocks | None = None) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}
        self.remote = remote

    @contextlib.asynccontextmanager
    async def hold(self, user_id: int) -> AsyncIterator[None]:
        """Hold the user's lock (created on demand, dropped when nobody waits)."""
        if user_id in _HELD.get():
            yield
            return
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        self._users[user_id] = self._users.get(user_id, 0) + 1
        try:
            async with lock, self._remote(user_id):
                token = _HELD.set(_HELD.get() | {user_id})
                try:
                    yield
                finally:
                    _HELD.reset(token)
        finally:
            self._users[user_id] -= 1
            if self._users[user_id] == 0:
                del self._users[user_id]
                del self._locks[user_id]

    def _remote(self, user_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        return self.remote.hold(user_id) if self.remote is not None else contextlib.nullcontext()

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
    judge: Judge
    locks: UserLocks = field(default_factory=UserLocks)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    metrics: Metrics = field(default_factory=Metrics)
    leadership: Leadership | None = None
    leader_hooks: list[tuple[LeaderCallback, LeaderCallback]] = field(default_factory=list)
    checkins: Checkins | None = None
    checkin_scheduler: CheckinScheduler | None = None

    def on_leader(self, start: LeaderCallback, stop: LeaderCallback) -> None:
        """Run `start` while this process leads (one replica at a time on PostgreSQL) and `stop` when it stops."""
        self.leader_hooks.append((start, stop))
        if self.leadership is not None and self.leadership.is_leader:
            self.background(_maybe_await(start()))

    async def start_leadership(self) -> None:
        """Start competing for the scheduler lock (SQLite: lead at once); CHECKIN_SCHEDULER=false never leads."""
        if not self.settings.checkin_scheduler:
            logger.info("leader.not_competing reason=CHECKIN_SCHEDULER=false")
            return
        self.leadership = Leadership(self.settings.database_url, on_start=self._lead, on_stop=self._unlead,
                                     retry_s=self.settings.leader_retry_s)
        await self.leadership.start()

    async def _lead(self) -> None:
        self.metrics.leader.set(1)
        for start, _ in self.leader_hooks:
            await _maybe_await(start())

    async def _unlead(self) -> None:
        self.metrics.leader.set(0)
        for _, stop in reversed(self.leader_hooks):
            await _maybe_await(stop())

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run work after the reply without delaying it; failures are logged, never raised."""
        task = asyncio.create_task(_logged(work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for background work to finish."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result


def _user_locks(settings: Settings) -> UserLocks:
    """In-process locks; on PostgreSQL also advisory locks, so the order holds across replicas."""
    return UserLocks(AdvisoryLocks(settings.database_url) if is_postgres(settings.database_url) else None)


async def _logged(work: Coroutine[Any, Any, Any]) -> None:
    _HELD.set(frozenset())  # this task runs apart from the turn that started it: it holds no user's lock
    try:
        await work
    except Exception:
        logger.exception("bot.background_failed")


async def create_services(settings: Settings) -> Services:
    """Database (migrated), tracing, the LLM adapter and the coach."""
    db = Database(settings.database_url)
    async with migration_lock(settings.database_url):  # replicas starting together migrate one by one
        await db.migrate()
    tracer = Tracer(settings)
    metrics = Metrics()
    llm = LLM(
        api_key=settings.gemini_api_key.get_secret_value(),
        model=settings.gemini_model,
        base_url=settings.gemini_base_url,
        timeout_s=settings.gemini_timeout_s,
        attempts=settings.gemini_attempts,
        backoff_s=settings.gemini_backoff_s,
        wrap=metrics.instrument_genai, tracer=tracer,
    )
    coach = Coach(db=db, llm=llm, tracer=tracer, history_turns=settings.history_turns,
                  max_clarify_rounds=settings.max_clarify_rounds, llm_calls_per_minute=settings.llm_calls_per_minute)
    judge = Judge(db=db, llm=llm, tracer=tracer, sample_rate=settings.judge_sample_rate,
                  enabled=settings.judge_enabled)
    return Services(settings=settings, db=db, llm=llm, tracer=tracer, coach=coach, judge=judge,
                    metrics=metrics, locks=_user_locks(settings))


def application_builder(settings: Settings) -> ApplicationBuilder:
    """python-telegram-bot set up as Rein runs it: the Bot API address, defaults, the rate limiter,
    concurrency and the aiohttp requests (benchmarks/floor.py measures this alone)."""
    api = settings.telegram_api_url
    return (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .defaults(Defaults(link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .rate_limiter(SendLimiter(overall_max_rate=settings.telegram_rate_limit, overall_time_period=1,
                                     max_retries=3))
        .concurrent_updates(512)
        .request(AiohttpRequest(connection_pool_size=64, pool_timeout=30))
        .get_updates_request(AiohttpRequest(connection_pool_size=1))
    )


def build_application(settings: Settings) -> Application:
    """The bot, wired: handlers, rate limiter, defaults, start-up and shut-down hooks."""
    app = application_builder(settings).post_init(_post_init(settings)).post_shutdown(_post_shutdown).build()
    add_handlers(app, settings)
    return app


def add_handlers(app: Application, settings: Settings) -> None:
    """Every handler, in priority order."""
    private = filters.ChatType.PRIVATE
    # Every button press passes this gate first: not on the allow-list, or forged/expired data, stops here.
    app.add_handler(CallbackQueryHandler(_press_gate(frozenset(settings.allowed_user_ids))), group=-2)
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
        ("stats", admin.stats),
    ):
        app.add_handler(CommandHandler(name, callback, filters=private))
    checkin_bot.add_handlers(app, private)
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


def _press_gate(allowed: frozenset[int]) -> Callable[[Update, object], Coroutine[Any, Any, None]]:
    async def press_gate(update: Update, context: object) -> None:
        from telegram.ext import ApplicationHandlerStop

        query = update.callback_query
        if query is None:
            return
        if allowed and query.from_user.id not in allowed:
            reason = texts.NOT_ALLOWED
        elif render.decode(query.data) is None:
            reason = texts.EXPIRED
        else:
            return
        with contextlib.suppress(TelegramError):
            await query.answer(reason, show_alert=True)
        raise ApplicationHandlerStop

    return press_gate


async def _added_to_group(update: Update, context: object) -> None:
    member = update.my_chat_member
    if member is not None and member.chat.type == "private":
        await handlers.member_changed(update, context)  # type: ignore[arg-type]
        return
    if member is None:
        return
    if member.new_chat_member.status in ("member", "administrator"):
        await handlers.group(update, context)  # type: ignore[arg-type]


def _post_init(settings: Settings) -> Callable[[Application], Coroutine[Any, Any, None]]:
    async def post_init(app: Application) -> None:
        app.bot_data["services"] = svc = await create_services(settings)
        svc.metrics.track_queue(app.update_queue.qsize)
        await checkin_bot.setup(app, settings)
        if svc.checkin_scheduler is not None:
            svc.checkin_scheduler.send = svc.metrics.counting_sends(svc.checkin_scheduler.send)
        await svc.start_leadership()
        try:
            await app.bot.set_my_commands([BotCommand(name, desc) for name, desc in texts.COMMANDS])
        except Exception:
            logger.warning("bot.set_commands_failed", exc_info=True)
        if svc.tracer.enabled:
            # A daemon thread: an unreachable Opik retries for many seconds, and must never hold up shutdown.
            threading.Thread(target=svc.tracer.register_prompts, args=(list(prompts.ALL),), name="opik-prompts",
                             daemon=True).start()
        if app.job_queue is not None:
            jobs = app.job_queue

            def start_jobs() -> None:  # periodic work runs on one replica, like the check-in scheduler
                jobs.run_repeating(_sync_ratings, interval=settings.rating_sync_interval_s, first=5,
                                   name="sync-ratings")
                jobs.run_repeating(handlers.close_quiet_sessions, interval=60, first=30,
                                   name="quiet-sessions")

            svc.on_leader(start_jobs, lambda: _remove_jobs(jobs, "sync-ratings", "quiet-sessions"))
        logger.info("bot.ready username=%s", app.bot.username)

    return post_init


def _remove_jobs(jobs: Any, *names: str) -> None:
    for name in names:
        for job in jobs.get_jobs_by_name(name):
            job.schedule_removal()


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
    await checkin_bot.teardown(app)
    if svc.leadership is not None:
        await svc.leadership.stop()
    await svc.drain()
    await svc.llm.aclose()
    await asyncio.to_thread(svc.tracer.flush)
    await svc.db.dispose()
    if svc.locks.remote is not None:
        await svc.locks.remote.dispose()
    logger.info("bot.stopped")
