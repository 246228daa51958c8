"""The Telegram side of check-ins: commands, buttons, the zone/time/note answers, and the scheduler's sender."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from telegram import Bot, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import handlers, render
from pipeline.checkins import Checkins, CheckinScheduler, DeliveryUncertain, RecipientBlocked, Sender
from pipeline.coach import Who
from pipeline.replies import Reply
from pipeline.settings import Settings

if TYPE_CHECKING:
    from bot.app import Services

logger = logging.getLogger(__name__)

ANSWERS = {"checkin_done": "done", "checkin_partly": "partly", "checkin_missed": "missed"}
_CODES = "|".join(render.ACTION_CODES[a] for a in (*ANSWERS, "checkin_snooze", "checkin_set", "checkin_adjust"))
PATTERN = rf"^(?:{_CODES}):\d+$"


def checkins(context: ContextTypes.DEFAULT_TYPE) -> Checkins:
    """The check-in service created at start-up."""
    found = handlers.services(context).checkins
    assert found is not None
    return found


def _args(update: Update) -> str:
    message = update.effective_message
    text = (message.text if message else None) or ""
    return text.split(maxsplit=1)[1] if len(text.split(maxsplit=1)) > 1 else ""


async def checkin(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/checkin [HH:MM [days] | off]: the menu, or set/stop check-ins."""
    args = _args(update)
    await handlers.run_turn(update, context, lambda svc, w: checkins(context).command(w, args))


async def timezone(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/timezone [Area/City | city]: set the zone check-ins follow."""
    args = _args(update)
    await handlers.run_turn(update, context, lambda svc, w: checkins(context).timezone(w, args))


async def pause(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/pause [days]: no check-ins for a while."""
    args = _args(update)
    await handlers.run_turn(update, context, lambda svc, w: checkins(context).pause(w, args))


async def resume(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/resume: check-ins on again."""
    await handlers.run_turn(update, context, lambda svc, w: checkins(context).resume(w))


async def quiet(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/quiet [HH:MM-HH:MM | off]: the hours in which Rein sends nothing unasked."""
    args = _args(update)
    await handlers.run_turn(update, context, lambda svc, w: checkins(context).quiet(w, args))


async def progress(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/progress: streak, weeks and milestones, with a chart of the last 8 weeks as a photo."""
    speaker = handlers.who(update)
    svc = handlers.services(context)
    async with svc.locks.hold(speaker.telegram_id):
        replies, png = await checkins(context).progress(speaker)
        caption = render.render(replies[0], limit=1000)[0]
        await context.bot.send_photo(speaker.chat_id, photo=png, caption=caption, parse_mode=ParseMode.HTML,
                                     filename="progress.png", reply_markup=render.keyboard(replies[0].buttons))


async def before_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start (first look): a user back after blocking the bot gets their check-ins again; /start goes on."""
    replies = await checkins(context).resume_after_block(handlers.who(update))
    if replies:
        with contextlib.suppress(TelegramError):
            await handlers.send_replies(context, handlers.who(update).chat_id, replies)


async def intercept_location(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A shared location while Rein asks for the time zone sets it; otherwise the usual note follows."""
    message = update.effective_message
    if message is None or message.location is None:
        return
    latitude, longitude = message.location.latitude, message.location.longitude
    await _intercept(update, context, lambda speaker: checkins(context).location(speaker, latitude, longitude))


async def _intercept(update: Update, context: ContextTypes.DEFAULT_TYPE,
                     work: Callable[[Who], Awaitable[list[Reply] | None]]) -> None:
    """Under the user's lock, let check-ins answer the message; if they did, no other handler sees it."""
    speaker = handlers.who(update)
    async with handlers.services(context).locks.hold(speaker.telegram_id):
        replies = await work(speaker)
        if replies is None:
            return
        await handlers.send_replies(context, speaker.chat_id, replies)
    raise ApplicationHandlerStop


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Check-in buttons: Done · Partly · Missed · Snooze, the schedule menu, and Adjust after misses."""
    query = update.callback_query
    assert query is not None
    parsed = render.decode(query.data)
    if parsed is None:
        return
    with contextlib.suppress(BadRequest):
        await query.answer()
    service = checkins(context)
    ref = parsed.ref
    if parsed.action in ANSWERS:
        status = ANSWERS[parsed.action]
        work: handlers.Work = lambda svc, w: service.answer(w, ref, status)  # noqa: E731
    elif parsed.action == "checkin_snooze":
        work = lambda svc, w: service.snooze(w, ref)  # noqa: E731
    elif parsed.action == "checkin_set":
        work = lambda svc, w: service.choose(w, ref)  # noqa: E731
    else:
        work = lambda svc, w: service.adjust(w, ref)  # noqa: E731
    message = query.message
    if isinstance(message, Message):
        # The question is answered: its buttons go (a check-in's rating row stays).
        await handlers._edit_markup(query, message.reply_markup, render.without_actions(message.reply_markup))
    await handlers.run_turn(update, context, work)


def add_handlers(app: Application, private: filters.BaseFilter) -> None:
    """Check-in handlers: commands and buttons before the catch-alls; answers to Rein's questions first of all."""
    for name, callback in (("checkin", checkin), ("timezone", timezone), ("pause", pause), ("resume", resume),
                           ("quiet", quiet), ("progress", progress)):
        app.add_handler(CommandHandler(name, callback, filters=private))
    app.add_handler(CallbackQueryHandler(button, pattern=PATTERN))
    # Group -1 runs first (after the allow-list check): what is not a check-in answer falls through.
    app.add_handler(CommandHandler("start", before_start, filters=private), group=-1)
    app.add_handler(MessageHandler(private & filters.LOCATION & ~filters.UpdateType.EDITED, intercept_location),
                    group=-1)


@dataclass
class _BotOnly:
    """What `handlers.send_replies` needs from a context, for sends that no update started."""

    bot: Bot


def sender(app: Application) -> Sender:
    """Deliver a check-in through the application's bot (and so its rate limiter), in order with the user's turns."""

    async def send(chat_id: int, telegram_id: int, replies: list[Reply]) -> None:
        svc: Services = app.bot_data["services"]
        async with svc.locks.hold(telegram_id):
            try:
                await handlers.send_replies(cast(Any, _BotOnly(app.bot)), chat_id, replies)
            except Forbidden as exc:
                raise RecipientBlocked(str(exc)) from exc
            except BadRequest:
                raise
            except NetworkError as exc:  # timed out or connection lost: maybe delivered, so never resent
                raise DeliveryUncertain(type(exc).__name__) from exc

    return send


async def setup(app: Application, settings: Settings) -> None:
    """Create the check-in service and scheduler; the scheduler runs where the scheduler should (the leader)."""
    svc: Services = app.bot_data["services"]
    svc.checkins = Checkins(db=svc.db, llm=svc.llm, tracer=svc.tracer, grace_s=settings.checkin_grace_s,
                            quiet_hours=settings.checkin_quiet_hours, review_time=settings.checkin_review_time)
    scheduler = CheckinScheduler(checkins=svc.checkins, send=sender(app), poll_s=settings.checkin_poll_s,
                                 concurrency=settings.checkin_concurrency)
    svc.checkin_scheduler = scheduler
    if settings.checkin_scheduler:
        svc.on_leader(scheduler.start, scheduler.shutdown)


async def teardown(app: Application) -> None:
    """Stop the scheduler (if it runs here) before the services close."""
    svc: Services | None = app.bot_data.get("services")
    if svc is not None and svc.checkin_scheduler is not None:
        await svc.checkin_scheduler.shutdown()
