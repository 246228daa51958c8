"""Thin handlers: parse the update, call the coach, render, reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError, TimedOut
from telegram.ext import ContextTypes

from bot import render, texts
from pipeline.coach import RATEABLE, Who
from pipeline.replies import Reply

if TYPE_CHECKING:
    from bot.app import Services

logger = logging.getLogger(__name__)


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    """The services created at start-up."""
    return context.application.bot_data["services"]


def who(update: Update) -> Who:
    """The speaker of an update (private chats only)."""
    user = update.effective_user
    chat = update.effective_chat
    assert user is not None and chat is not None
    return Who(telegram_id=user.id, chat_id=chat.id, language_code=user.language_code)


@contextlib.asynccontextmanager
async def typing(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> AsyncIterator[None]:
    """Show "typing…" until the block ends (Telegram clears it after about 5 s, so it is renewed).

    It starts after `TYPING_DELAY_S`: an answer faster than that needs no indicator, and saves a call."""
    delay = services(context).settings.typing_delay_s

    async def keep_typing() -> None:
        await asyncio.sleep(delay)
        while True:
            with contextlib.suppress(TelegramError):
                await context.bot.send_chat_action(chat_id, ChatAction.TYPING)
            await asyncio.sleep(4.5)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def send_replies(context: ContextTypes.DEFAULT_TYPE, chat_id: int, replies: list[Reply]) -> None:
    """Send each reply as one or more HTML messages; buttons go on the last part."""
    for reply in replies:
        if reply.document is not None:
            name, content = reply.document
            await context.bot.send_document(chat_id, document=content, filename=name,
                                            caption=render.render(reply, limit=1000)[0],
                                            parse_mode=ParseMode.HTML)
            continue
        parts = render.render(reply)
        rate_turn = reply.turn_id if reply.kind in RATEABLE else None
        markup = render.keyboard(reply.buttons, rate_turn=rate_turn)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            await _send_message(context, chat_id, part, markup if last else None)


SEND_RETRY_DELAYS_S = (0.5, 1.0)


async def _send_message(context: ContextTypes.DEFAULT_TYPE, chat_id: int, text: str,
                        markup: InlineKeyboardMarkup | None) -> None:
    """Send one message; a connection error or a 5xx is retried twice (429s are the rate limiter's job).

    A time-out is not retried: Telegram may have delivered the message, and a duplicate is worse than a
    reply that stays stored (in the coach's memory and in /export).
    """
    for delay in (*SEND_RETRY_DELAYS_S, None):
        try:
            await context.bot.send_message(chat_id, text, reply_markup=markup, parse_mode=ParseMode.HTML)
            return
        except TimedOut:
            raise
        except NetworkError as exc:
            if delay is None:
                raise
            logger.warning("bot.send_retry error=%s wait_s=%.1f", type(exc).__name__, delay)
            await asyncio.sleep(delay)


Work = Callable[["Services", Who], Awaitable[list[Reply]]]


async def run_turn(update: Update, context: ContextTypes.DEFAULT_TYPE, work: Work, *, compact: bool = False) -> None:
    """One coach call for the speaker, in order with their other updates, with the typing indicator."""
    speaker = who(update)
    svc = services(context)
    started = time.monotonic()
    async with svc.locks.hold(speaker.telegram_id), svc.metrics.turn():
        async with typing(context, speaker.chat_id):
            replies = await work(svc, speaker)
        try:
            await send_replies(context, speaker.chat_id, replies)
        except Forbidden:
            # The user blocked the bot: what the coach wrote stays stored; nothing more is sent.
            logger.info("bot.user_blocked_bot")
            await svc.coach.set_blocked(speaker, True)
            return
        logger.info("bot.turn replies=%d ms=%d", len(replies), (time.monotonic() - started) * 1000)
        if compact:
            await svc.coach.compact_history(speaker)
    judged = [r.turn_id for r in replies if r.turn_id is not None and svc.judge.wants(r.kind)]
    if judged:
        svc.background(svc.judge.judge_turns(judged))


async def close_quiet_sessions(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Periodic: quiet conversations get a session score on their Opik thread and, once a day, a prompt."""
    svc = services(context)
    quiet_s = svc.settings.session_quiet_minutes * 60
    for closed in await svc.coach.close_quiet_threads(quiet_s=quiet_s):
        if closed.prompt is not None:
            async with svc.locks.hold(closed.who.telegram_id):
                with contextlib.suppress(Forbidden, BadRequest):
                    await send_replies(context, closed.who.chat_id, [closed.prompt])
        if svc.judge.enabled:
            svc.background(svc.judge.judge_thread(closed.user_id, closed.thread_id))


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: welcome and ask for the goal."""
    await run_turn(update, context, lambda svc, w: svc.coach.start(w))


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: what Rein does and every command."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, texts.HELP, parse_mode=ParseMode.HTML)


async def plan(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/plan: the current plan."""
    await run_turn(update, context, lambda svc, w: svc.coach.show_plan(w))


async def goal(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/goal: start a new goal."""
    await run_turn(update, context, lambda svc, w: svc.coach.new_goal(w))


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cancel: leave the step in progress."""
    await run_turn(update, context, lambda svc, w: svc.coach.cancel(w))


async def export(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/export: the user's data as a JSON document."""

    async def work(svc: Services, w: Who) -> list[Reply]:
        return [await svc.coach.export(w)]

    await run_turn(update, context, work)


async def delete(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/delete: ask before erasing everything."""
    await run_turn(update, context, lambda svc, w: svc.coach.delete_request(w))


async def text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any text: answered by the coach according to the user's stage."""
    assert update.effective_message is not None
    message_text = update.effective_message.text or ""

    async def answer(svc: Services, speaker: Who) -> list[Reply]:
        # An answer to what a check-in asked (time zone, a custom time, a note) is taken there: the coach's
        # read of the user says whether one waits, in the same query and lock hold.
        answers = svc.checkins.intercept if svc.checkins is not None else None
        return await svc.coach.on_text(speaker, message_text, answers=answers)

    await run_turn(update, context, answer, compact=True)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A command Rein does not have."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, texts.UNKNOWN_COMMAND, parse_mode=ParseMode.HTML)


async def not_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stickers, photos, voice, locations…: explain what Rein understands."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, texts.NOT_TEXT, parse_mode=ParseMode.HTML)


async def group(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Groups: say once that Rein coaches one-to-one only."""
    chat = update.effective_chat
    if chat is None:
        return
    told: set[int] = context.application.bot_data.setdefault("groups_told", set())
    if chat.id in told:
        return
    told.add(chat.id)
    with contextlib.suppress(Forbidden, BadRequest):
        await context.bot.send_message(chat.id, texts.GROUPS, parse_mode=ParseMode.HTML)


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every inline button: validated, checked for ownership by the coach, answered at once."""
    query = update.callback_query
    assert query is not None
    parsed = render.decode(query.data)
    if parsed is None or update.effective_chat is None or update.effective_chat.type != "private":
        await _answer(query, texts.EXPIRED, alert=True)
        return
    if parsed.action == "rate":
        await rate(update, context, parsed.ref, parsed.value or 0)
        return
    await _answer(query, None)
    ref = parsed.ref
    calls: dict[str, Work] = {
        "skip": lambda svc, w: svc.coach.skip_clarification(w, ref),
        "retry": lambda svc, w: svc.coach.retry(w, ref),
        "accept": lambda svc, w: svc.coach.plan_action(w, "accept", ref),
        "regenerate": lambda svc, w: svc.coach.plan_action(w, "regenerate", ref),
        "adjust": lambda svc, w: svc.coach.plan_action(w, "adjust", ref),
        "goal_new": lambda svc, w: svc.coach.confirm_new_goal(w, ref, True),
        "goal_keep": lambda svc, w: svc.coach.confirm_new_goal(w, ref, False),
        "delete_yes": lambda svc, w: svc.coach.delete_confirm(w, ref, True),
        "delete_no": lambda svc, w: svc.coach.delete_confirm(w, ref, False),
        "skip_reason": lambda svc, w: svc.coach.skip_reason(w, ref),
        "milestone": lambda svc, w: svc.coach.milestone_reached(w, ref),
    }
    call = calls.get(parsed.action)
    if call is None:
        return
    message = query.message
    if isinstance(message, Message):
        # The question is answered: take its action buttons away (the rating row stays).
        base = current_markup(context, message)
        await _edit_markup(query, base, render.without_actions(base), context)
    await run_turn(update, context, call)


async def rate(update: Update, context: ContextTypes.DEFAULT_TYPE, turn_id: int, value: int) -> None:
    """A star pressed: stored, sent to Opik as `user_rating`, acknowledged, and the row shows the choice."""
    query = update.callback_query
    assert query is not None
    svc = services(context)
    try:
        outcome = await svc.coach.rate(who(update), turn_id, value)
    except Exception:
        await _answer(query, None)  # the error handler tells the user; the spinner must not hang
        raise
    if not outcome.ok:
        await _answer(query, texts.NOT_YOURS, alert=True)
        return
    svc.metrics.rated(value)
    await _answer(query, f"Thanks, rated {value}/5")
    message = query.message
    if isinstance(message, Message):
        base = current_markup(context, message)
        await _edit_markup(query, base, render.with_rating(base, turn_id, value), context)
    if outcome.followup:
        speaker = who(update)
        async with svc.locks.hold(speaker.telegram_id):
            await send_replies(context, speaker.chat_id, outcome.followup)
    svc.background(svc.coach.sync_ratings())


def _markups(context: ContextTypes.DEFAULT_TYPE | None) -> dict[tuple[int, int], InlineKeyboardMarkup | None]:
    """The keyboard each recent message has, as Rein last set it.

    Two quick presses carry the same old copy of the message: the second must neither send an identical
    edit (Telegram answers 400) nor bring back buttons the first one removed.
    """
    if context is None:
        return {}
    markups: dict[tuple[int, int], InlineKeyboardMarkup | None] = context.bot_data.setdefault("markups", {})
    return markups


def current_markup(context: ContextTypes.DEFAULT_TYPE, message: Message) -> InlineKeyboardMarkup | None:
    """A message's keyboard as Rein last set it (falling back to the copy the press carried)."""
    return _markups(context).get((message.chat.id, message.message_id), message.reply_markup)


async def _edit_markup(
    query: CallbackQuery, old: InlineKeyboardMarkup | None, new: InlineKeyboardMarkup | None,
    context: ContextTypes.DEFAULT_TYPE | None = None,
) -> None:
    """Edit a message's keyboard unless nothing would change (Telegram refuses identical edits)."""
    message = query.message
    markups = _markups(context)
    key = (message.chat.id, message.message_id) if isinstance(message, Message) else None
    if key is not None and key in markups:
        old = markups[key]
    if (old.to_dict() if old else None) == (new.to_dict() if new else None):
        return
    if key is not None:  # recorded before the await, so a concurrent press sees it
        markups[key] = new
        if len(markups) > 5000:
            del markups[next(iter(markups))]
    with contextlib.suppress(BadRequest, Forbidden):
        await query.edit_message_reply_markup(reply_markup=new)


async def _answer(query: object, text: str | None, *, alert: bool = False) -> None:
    with contextlib.suppress(BadRequest):
        await query.answer(text, show_alert=alert)  # type: ignore[attr-defined]


async def member_changed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A user blocked or unblocked the bot in their private chat: remembered, so nothing is sent meanwhile."""
    member = update.my_chat_member
    if member is None:
        return
    blocked = member.new_chat_member.status in ("kicked", "left")
    await services(context).coach.set_blocked(who(update), blocked)


def storage_error(error: BaseException | None) -> bool:
    """True when the error (or what caused it) comes from the database or its driver."""
    seen = 0
    while error is not None and seen < 10:
        module = type(error).__module__
        if module.startswith(("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "psycopg")):
            return True
        if isinstance(error, ConnectionRefusedError):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log every unhandled error once, and tell the user something went wrong (and what, for the database)."""
    logger.error("bot.unhandled_error error=%s", type(context.error).__name__, exc_info=context.error)
    if not isinstance(update, Update) or update.effective_chat is None or update.effective_chat.type != "private":
        return
    message = texts.STORAGE_DOWN if storage_error(context.error) else texts.BUSY
    with contextlib.suppress(TelegramError):
        await context.bot.send_message(update.effective_chat.id, message, parse_mode=ParseMode.HTML)
