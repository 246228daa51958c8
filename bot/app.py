"""The one application factory: settings in, a ready python-telegram-bot `Application` out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden
from telegram.ext import (
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    Defaults,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import admin, followups, handlers, media, render, texts
from bot import checkins as checkin_bot
from bot import language as language_bot
from bot.context import CONTEXT_TYPES, ReinApp, ReinContext
from bot.drafts import Drafts
from bot.metrics import Metrics
from bot.ordering import PerUserOrder, UserLocks
from bot.replying import answer_query, send_replies
from bot.sendlimit import SendLimiter
from bot.services import create_services
from pipeline import prompts
from pipeline.i18n import _
from pipeline.settings import Settings
from storage.locks import AdvisoryLocks, is_postgres

logger = logging.getLogger(__name__)


def application_builder(settings: Settings, order: PerUserOrder | None = None) -> ApplicationBuilder[Any, Any, Any,
                                                                                                    Any, Any, Any]:
    """python-telegram-bot set up as Rein runs it: the Bot API address, defaults, the rate limiter, per-user
    order and python-telegram-bot's own HTTPX requests (benchmarks/floor.py measures this alone)."""
    api = settings.telegram_api_url
    return (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .defaults(Defaults(link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .rate_limiter(SendLimiter(overall_max_rate=settings.telegram_rate_limit, overall_time_period=1,
                                  max_retries=3))
        .concurrent_updates(order or PerUserOrder(UserLocks()))
        .request(HTTPXRequest(connection_pool_size=64, pool_timeout=30))
        .get_updates_request(HTTPXRequest(connection_pool_size=1))
    )


def build_application(settings: Settings) -> ReinApp:
    """The bot, wired: handlers, rate limiter, per-user order, defaults, start-up and shut-down hooks."""
    remote = AdvisoryLocks(settings.database_url) if is_postgres(settings.database_url) else None
    order = PerUserOrder(UserLocks(remote))
    app: ReinApp = (application_builder(settings, order).context_types(CONTEXT_TYPES)
                    .post_init(_post_init(settings, order)).post_shutdown(_post_shutdown).build())
    add_handlers(app, settings)
    return app


def add_handlers(app: ReinApp, settings: Settings) -> None:
    """Every handler, in priority order."""
    private = filters.ChatType.PRIVATE
    # Every button press passes this gate first: not on the allow-list, or forged/expired data, stops here.
    app.add_handler(CallbackQueryHandler(_press_gate(frozenset(settings.allowed_user_ids))), group=-2)
    if settings.allowed_user_ids:
        allowed = filters.User(user_id=settings.allowed_user_ids)
        app.add_handler(MessageHandler(private & ~allowed, _not_allowed), group=-1)
    app.add_handler(MessageHandler(filters.ChatType.GROUPS, handlers.group))
    app.add_handler(ChatMemberHandler(_member, ChatMemberHandler.MY_CHAT_MEMBER))
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
    language_bot.add_handlers(app, private)
    app.add_handler(MessageHandler(private & filters.COMMAND, handlers.unknown_command))
    app.add_handler(MessageHandler(private & filters.TEXT & ~filters.UpdateType.EDITED, handlers.text))
    heard_or_seen = filters.VOICE | filters.AUDIO | filters.PHOTO
    app.add_handler(MessageHandler(private & heard_or_seen & ~filters.UpdateType.EDITED, media.received))
    app.add_handler(MessageHandler(private & ~filters.TEXT & ~filters.UpdateType.EDITED, handlers.not_text))
    app.add_handler(CallbackQueryHandler(handlers.button))
    app.add_error_handler(handlers.on_error)


async def _not_allowed(update: Update, context: ReinContext) -> None:
    if update.effective_message is not None:
        await update.effective_message.reply_text(_(texts.NOT_ALLOWED), parse_mode=ParseMode.HTML)
    raise ApplicationHandlerStop


def _press_gate(allowed: frozenset[int]) -> Callable[[Update, ReinContext], Coroutine[Any, Any, None]]:
    async def press_gate(update: Update, context: ReinContext) -> None:
        query = update.callback_query
        if query is None:
            return
        if allowed and query.from_user.id not in allowed:
            reason = _(texts.NOT_ALLOWED)
        elif render.decode(query.data) is None:
            reason = _(texts.EXPIRED)
        else:
            return
        await answer_query(query, reason, alert=True)
        raise ApplicationHandlerStop

    return press_gate


async def _member(update: Update, context: ReinContext) -> None:
    """The bot's membership changed: blocked or unblocked in a private chat, or added to a group."""
    member = update.my_chat_member
    if member is None:
        return
    if member.chat.type == "private":
        await handlers.member_changed(update, context)
    elif member.new_chat_member.status in ("member", "administrator"):
        await handlers.group(update, context)


def _post_init(settings: Settings, order: PerUserOrder) -> Callable[[ReinApp], Coroutine[Any, Any, None]]:
    async def post_init(app: ReinApp) -> None:
        metrics = Metrics()
        svc = await create_services(settings, locks=order.locks, metrics=metrics)
        app.bot_data.services = svc
        limiter = app.bot.rate_limiter
        app.bot_data.drafts = Drafts(app.bot, interval_s=settings.draft_interval_s, enabled=settings.streaming,
                                     limiter=limiter if isinstance(limiter, SendLimiter) else None)
        metrics.track_queue(app.update_queue.qsize)
        checkin_bot.start_scheduler(svc, app.bot)
        followups.wire(app, svc)
        svc.background(followups.recover(app.bot, svc))
        await svc.start_leadership()
        await language_bot.publish_profiles(app.bot)
        if svc.tracer.enabled:
            # A daemon thread: an unreachable Opik retries for many seconds, and must never hold up shutdown.
            threading.Thread(target=svc.tracer.register_prompts, args=(list(prompts.ALL),), name="opik-prompts",
                             daemon=True).start()
        if app.job_queue is not None:
            jobs = app.job_queue

            def start_jobs() -> None:  # periodic work runs on one replica, like the check-in scheduler
                jobs.run_repeating(_sync_ratings, interval=settings.rating_sync_interval_s, first=5,
                                   name="sync-ratings")
                jobs.run_repeating(_close_quiet_sessions, interval=60, first=30, name="quiet-sessions")
                if svc.erasures.enabled:  # at start-up, then every ERASURE_RETRY_S until Opik confirms each one
                    jobs.run_repeating(_erase_in_opik, interval=settings.erasure_retry_s, first=1, name="opik-erasures")

            svc.on_leader(start_jobs, lambda: _remove_jobs(jobs, "sync-ratings", "quiet-sessions", "opik-erasures"))
        logger.info("bot.ready username=%s", app.bot.username)

    return post_init


def _remove_jobs(jobs: Any, *names: str) -> None:
    for name in names:
        for job in jobs.get_jobs_by_name(name):
            job.schedule_removal()


async def _sync_ratings(context: ReinContext) -> None:
    """Re-send ratings Opik has not confirmed (it was down, or a press raced a restart)."""
    sent = await context.services.ratings.sync()
    if sent:
        logger.info("ratings.synced count=%d", sent)


async def _erase_in_opik(context: ReinContext) -> None:
    """Erase deleted users' traces and threads in Opik; a pass that fails is retried later with backoff."""
    await context.services.erasures.run_due()


async def _close_quiet_sessions(context: ReinContext) -> None:
    """Quiet conversations get a session score on their Opik thread and, once a day, a prompt."""
    svc = context.services
    quiet_s = svc.settings.session_quiet_minutes * 60
    for closed in await svc.sessions.close_quiet(quiet_s=quiet_s):
        if closed.prompt is not None:
            async with svc.locks.hold(closed.speaker.telegram_id):
                try:
                    await send_replies(context.bot, closed.speaker.chat_id, [closed.prompt])
                except (Forbidden, BadRequest):
                    logger.info("bot.session_prompt_not_sent")
        if svc.judge.enabled:
            svc.background(svc.judge.judge_thread(closed.user_id, closed.thread_id))


async def _post_shutdown(app: ReinApp) -> None:
    svc = app.bot_data.services
    if svc is None:
        return
    await svc.close()
    logger.info("bot.stopped")
