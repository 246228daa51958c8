"""The Telegram side of check-ins: commands, buttons, a shared location, and the scheduler's sender."""

from __future__ import annotations

import logging

from telegram import Bot, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError
from telegram.ext import ApplicationHandlerStop, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot import render
from bot.context import ReinApp, ReinContext
from bot.handlers import Work, run_turn, speaker, take_actions_away
from bot.ordering import UserLocks
from bot.replying import answer_query, send_replies
from bot.services import Services
from pipeline.checkins.scheduler import Begin, CheckinScheduler, DeliveryUncertain, RecipientBlocked, Sender
from pipeline.replies import Reply

logger = logging.getLogger(__name__)

ANSWERS = {"checkin_done": "done", "checkin_partly": "partly", "checkin_missed": "missed"}
_CODES = "|".join(render.ACTION_CODES[a] for a in (*ANSWERS, "checkin_snooze", "checkin_set", "checkin_adjust"))
PATTERN = rf"^(?:{_CODES}):\d+$"


def _args(update: Update) -> str:
    message = update.effective_message
    parts = ((message.text if message else None) or "").split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


async def checkin(update: Update, context: ReinContext) -> None:
    """/checkin [HH:MM [days] | off]: the menu, or set/stop check-ins."""
    args = _args(update)
    await run_turn(update, context, lambda svc, w: svc.checkins.prefs.command(w, args))


async def timezone(update: Update, context: ReinContext) -> None:
    """/timezone [Area/City | city]: set the zone check-ins follow."""
    args = _args(update)
    await run_turn(update, context, lambda svc, w: svc.checkins.prefs.timezone(w, args))


async def pause(update: Update, context: ReinContext) -> None:
    """/pause [days]: no check-ins for a while."""
    args = _args(update)
    await run_turn(update, context, lambda svc, w: svc.checkins.prefs.pause(w, args))


async def resume(update: Update, context: ReinContext) -> None:
    """/resume: check-ins on again."""
    await run_turn(update, context, lambda svc, w: svc.checkins.prefs.resume(w))


async def quiet(update: Update, context: ReinContext) -> None:
    """/quiet [HH:MM-HH:MM | off]: the hours in which Rein sends nothing unasked."""
    args = _args(update)
    await run_turn(update, context, lambda svc, w: svc.checkins.prefs.quiet(w, args))


async def progress(update: Update, context: ReinContext) -> None:
    """/progress: streak, weeks and milestones, with a chart of the last 8 weeks as a photo."""
    who = speaker(update)
    try:  # drawing takes a moment (the first chart of a process seconds: matplotlib loads); say a photo is coming
        await context.bot.send_chat_action(who.chat_id, ChatAction.UPLOAD_PHOTO)
    except TelegramError:
        logger.info("bot.chat_action_failed")
    replies, png = await context.services.checkins.progress.progress(who)
    caption = render.render(replies[0], limit=1000)[0]
    await context.bot.send_photo(who.chat_id, photo=png, caption=caption, parse_mode=ParseMode.HTML,
                                 filename="progress.png", reply_markup=render.keyboard(replies[0].buttons))


async def before_start(update: Update, context: ReinContext) -> None:
    """/start (first look): a user back after blocking the bot gets their check-ins again; /start goes on."""
    who = speaker(update)
    replies = await context.services.checkins.prefs.resume_after_block(who)
    if replies:
        try:
            await send_replies(context.bot, who.chat_id, replies)
        except TelegramError:
            logger.info("bot.resume_notice_failed")


async def location(update: Update, context: ReinContext) -> None:
    """A shared location while Rein asks for the time zone sets it; otherwise the usual note follows."""
    message = update.effective_message
    if message is None or message.location is None:
        return
    who = speaker(update)
    replies = await context.services.checkins.prefs.location(who, message.location.latitude,
                                                             message.location.longitude)
    if replies is None:
        return
    await send_replies(context.bot, who.chat_id, replies)
    raise ApplicationHandlerStop


async def button(update: Update, context: ReinContext) -> None:
    """Check-in buttons: Done · Partly · Missed · Snooze, the schedule menu, and Adjust after misses."""
    query = update.callback_query
    assert query is not None
    parsed = render.decode(query.data)
    if parsed is None:
        return
    await answer_query(query)
    ref = parsed.ref
    work: Work
    if parsed.action in ANSWERS:
        status = ANSWERS[parsed.action]
        work = lambda svc, w: svc.checkins.answers.answer(w, ref, status)  # noqa: E731
    elif parsed.action == "checkin_snooze":
        work = lambda svc, w: svc.checkins.answers.snooze(w, ref)  # noqa: E731
    elif parsed.action == "checkin_set":
        work = lambda svc, w: svc.checkins.prefs.choose(w, ref)  # noqa: E731
    else:
        work = lambda svc, w: svc.checkins.answers.adjust(w, ref)  # noqa: E731
    await take_actions_away(update, context)
    await run_turn(update, context, work)


def add_handlers(app: ReinApp, private: filters.BaseFilter) -> None:
    """Check-in handlers: commands and buttons before the catch-alls; a shared location first of all."""
    for name, callback in (("checkin", checkin), ("timezone", timezone), ("pause", pause), ("resume", resume),
                           ("quiet", quiet), ("progress", progress)):
        app.add_handler(CommandHandler(name, callback, filters=private))
    app.add_handler(CallbackQueryHandler(button, pattern=PATTERN))
    # Group -1 runs first (after the allow-list check): what is not a check-in answer falls through.
    app.add_handler(CommandHandler("start", before_start, filters=private), group=-1)
    app.add_handler(MessageHandler(private & filters.LOCATION & ~filters.UpdateType.EDITED, location), group=-1)


def sender(bot: Bot, locks: UserLocks) -> Sender:
    """Deliver a check-in through the application's bot (and so its rate limiter), in order with the user's
    turns: under the user's lock, and only if `begin()` still allows it."""

    async def send(chat_id: int, telegram_id: int, replies: list[Reply], begin: Begin) -> bool:
        async with locks.hold(telegram_id):
            if not await begin():
                return False
            try:
                await send_replies(bot, chat_id, replies)
            except Forbidden as exc:
                raise RecipientBlocked(str(exc)) from exc
            except BadRequest:
                raise
            except NetworkError as exc:  # timed out or connection lost: maybe delivered, so never resent
                raise DeliveryUncertain(type(exc).__name__) from exc
        return True

    return send


def start_scheduler(svc: Services, bot: Bot) -> None:
    """Create the check-in scheduler; it runs where the scheduler should (the leader, with CHECKIN_SCHEDULER)."""
    settings = svc.settings
    send = svc.metrics.counting_sends(sender(bot, svc.locks))
    scheduler = CheckinScheduler(dispatch=svc.checkins.dispatch, send=send, poll_s=settings.checkin_poll_s,
                                 concurrency=settings.checkin_concurrency)
    svc.checkins.scheduler = scheduler
    if settings.checkin_scheduler:
        svc.on_leader(scheduler.start, scheduler.shutdown)
