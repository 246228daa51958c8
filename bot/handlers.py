"""Thin handlers for the conversation: parse the update, call the coach, render, reply.

Each user's updates reach these one at a time, in order (`bot.ordering`): no handler takes a lock.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from telegram import Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError

from bot import render, texts
from bot.context import ReinContext
from bot.ordering import PerUserOrder
from bot.replying import answer_query, current_markup, edit_markup, send_replies, typing
from bot.services import Services
from pipeline.conversation import More
from pipeline.i18n import _, current
from pipeline.replies import Reply
from pipeline.speaker import Speaker

logger = logging.getLogger(__name__)

Work = Callable[[Services, Speaker], Awaitable[list[Reply]]]


def speaker(update: Update) -> Speaker:
    """The speaker of an update (private chats only)."""
    user, chat = update.effective_user, update.effective_chat
    assert user is not None and chat is not None
    return Speaker(telegram_id=user.id, chat_id=chat.id, language_code=user.language_code)


async def run_turn(update: Update, context: ReinContext, work: Work, *, compact: bool = False) -> None:
    """One call of the coach for the speaker, its reply shown in a draft while it is written (else the typing
    indicator); then the replies, then the judge."""
    who = speaker(update)
    svc = context.services
    started = time.monotonic()

    async def deliver(early: list[Reply]) -> None:  # replies a step sends before it ends (the resolution)
        await send_replies(context.bot, who.chat_id, early)
        judge_later(svc, early)

    drafts = context.bot_data.drafts
    chat = drafts.for_chat(who.chat_id, deliver) if drafts is not None else None
    if chat is not None:
        who = dataclasses.replace(who, drafts=chat)
    async with svc.metrics.turn():
        async with typing(context.bot, who.chat_id, svc.settings.typing_delay_s,
                          (lambda: chat.showing) if chat is not None else None):
            try:
                replies = await work(svc, who)
            finally:
                if chat is not None:
                    await chat.close()
        # The turn read the user's setting (or changed it): their next update starts in it.
        context.bot_data.remember_language(who.telegram_id, current())
        try:
            await send_replies(context.bot, who.chat_id, replies)
        except Forbidden:
            # The user blocked the bot: what the coach wrote stays stored; nothing more is sent.
            logger.info("bot.user_blocked_bot")
            await svc.account.set_blocked(who, True)
            return
        logger.info("bot.turn replies=%d ms=%d", len(replies), (time.monotonic() - started) * 1000)
        if compact:
            await svc.memory.compact(who)
    judge_later(svc, replies)


def judge_later(svc: Services, replies: list[Reply]) -> None:
    """The judge scores the sent replies it wants, in the background."""
    judged = [r.turn_id for r in replies if r.turn_id is not None and not r.judged and svc.judge.wants(r.kind)]
    if judged:
        svc.background(svc.judge.judge_turns(judged))


async def start(update: Update, context: ReinContext) -> None:
    """/start: welcome and ask for the goal."""
    await run_turn(update, context, lambda svc, w: svc.conversation.start(w))


async def help_command(update: Update, context: ReinContext) -> None:
    """/help: what Rein does and every command."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, texts.help_text(), parse_mode=ParseMode.HTML)


async def plan(update: Update, context: ReinContext) -> None:
    """/plan: the current plan."""
    await run_turn(update, context, lambda svc, w: svc.planning.show_plan(w))


async def goal(update: Update, context: ReinContext) -> None:
    """/goal: start a new goal."""
    await run_turn(update, context, lambda svc, w: svc.planning.new_goal(w))


async def cancel(update: Update, context: ReinContext) -> None:
    """/cancel: leave the step in progress."""
    await run_turn(update, context, lambda svc, w: svc.planning.cancel(w))


async def export(update: Update, context: ReinContext) -> None:
    """/export: the user's data as JSON documents, written to a temporary folder removed once they are sent."""
    with tempfile.TemporaryDirectory(prefix="rein-export-") as folder:
        await run_turn(update, context, lambda svc, w: svc.account.export(w, Path(folder)))


async def delete(update: Update, context: ReinContext) -> None:
    """/delete: ask before erasing everything."""
    await run_turn(update, context, lambda svc, w: svc.account.delete_request(w))


def newer_waiting(context: ReinContext, who_id: int) -> More:
    """Whether newer messages of this user (texts, voice notes, photos) wait behind the one being handled: the last
    of them answers this one too."""
    order = context.application.update_processor

    def more() -> bool:
        return isinstance(order, PerUserOrder) and order.texts_waiting(who_id) > 0

    return more


async def text(update: Update, context: ReinContext) -> None:
    """Any text: answered by the coach according to the user's stage."""
    assert update.effective_message is not None and update.effective_user is not None
    message_text = update.effective_message.text or ""
    who_id = update.effective_user.id

    more = newer_waiting(context, who_id)

    async def answer(svc: Services, who: Speaker) -> list[Reply]:
        # An answer to what a check-in asked (time zone, a custom time, a note) is taken there: the coach's read
        # of the user says whether one waits, in the same query.
        return await svc.conversation.on_text(who, message_text, answers=svc.checkins.prefs.intercept, more=more)

    await run_turn(update, context, answer, compact=True)


async def unknown_command(update: Update, context: ReinContext) -> None:
    """A command Rein does not have."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, _(texts.UNKNOWN_COMMAND), parse_mode=ParseMode.HTML)


async def not_text(update: Update, context: ReinContext) -> None:
    """Stickers, videos, video notes, documents, locations…: explain what Rein understands."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, _(texts.NOT_TEXT), parse_mode=ParseMode.HTML)


async def group(update: Update, context: ReinContext) -> None:
    """Groups: say once that Rein coaches one-to-one only."""
    chat = update.effective_chat
    if chat is None or chat.id in context.bot_data.groups_told:
        return
    context.bot_data.groups_told.add(chat.id)
    try:
        await context.bot.send_message(chat.id, _(texts.GROUPS), parse_mode=ParseMode.HTML)
    except (Forbidden, BadRequest):
        return


async def button(update: Update, context: ReinContext) -> None:
    """Every inline button of the conversation: validated, checked for ownership by the coach, answered at once."""
    query = update.callback_query
    assert query is not None
    parsed = render.decode(query.data)
    if parsed is None or update.effective_chat is None or update.effective_chat.type != "private":
        await answer_query(query, _(texts.EXPIRED), alert=True)
        return
    if parsed.action == "rate":
        await rate(update, context, parsed.ref, parsed.value or 0)
        return
    await answer_query(query)
    ref = parsed.ref
    calls: dict[str, Work] = {
        "skip": lambda svc, w: svc.conversation.skip_clarification(w, ref),
        "retry": lambda svc, w: svc.conversation.retry(w, ref),
        "accept": lambda svc, w: svc.conversation.plan_action(w, "accept", ref),
        "regenerate": lambda svc, w: svc.conversation.plan_action(w, "regenerate", ref),
        "adjust": lambda svc, w: svc.conversation.plan_action(w, "adjust", ref),
        "goal_new": lambda svc, w: svc.planning.confirm_new_goal(w, ref, True),
        "goal_keep": lambda svc, w: svc.planning.confirm_new_goal(w, ref, False),
        "delete_yes": lambda svc, w: svc.account.delete_confirm(w, ref, True),
        "delete_no": lambda svc, w: svc.account.delete_confirm(w, ref, False),
        "skip_reason": lambda svc, w: svc.ratings.skip_reason(w, ref),
        "milestone": lambda svc, w: svc.planning.milestone_reached(w, ref),
        "care_resume": lambda svc, w: svc.checkins.prefs.resume(w),
    }
    call = calls.get(parsed.action)
    if call is None:
        return
    if parsed.action == "delete_yes":  # an erased user starts again from their client's language
        context.bot_data.languages.pop(speaker(update).telegram_id, None)
    await take_actions_away(update, context)
    await run_turn(update, context, call)
    if parsed.action == "delete_yes":  # the user's Opik copies: erased now, retried by the job until Opik confirms
        context.services.background(context.services.erasures.run_due())


async def take_actions_away(update: Update, context: ReinContext) -> None:
    """The question a button answered loses its action buttons (its rating row stays)."""
    query = update.callback_query
    if query is not None and isinstance(query.message, Message):
        base = current_markup(context.bot_data, query.message)
        await edit_markup(query, context.bot_data, render.without_actions(base))


async def rate(update: Update, context: ReinContext, turn_id: int, value: int) -> None:
    """A star pressed: stored, sent to Opik as `user_rating`, acknowledged, and the row shows the choice."""
    query = update.callback_query
    assert query is not None
    svc = context.services
    try:
        outcome = await svc.ratings.rate(speaker(update), turn_id, value)
    except Exception:
        await answer_query(query)  # the error handler tells the user; the spinner must not hang
        raise
    if not outcome.ok:
        await answer_query(query, _(texts.NOT_YOURS), alert=True)
        return
    svc.metrics.rated(value)
    await answer_query(query, _("Thanks, rated {value}/5", value=value))
    if isinstance(query.message, Message):
        base = current_markup(context.bot_data, query.message)
        await edit_markup(query, context.bot_data, render.with_rating(base, turn_id, value))
    if outcome.followup:
        await send_replies(context.bot, speaker(update).chat_id, outcome.followup)
    svc.background(svc.ratings.sync())


async def member_changed(update: Update, context: ReinContext) -> None:
    """A user blocked or unblocked the bot in their private chat: remembered, so nothing is sent meanwhile."""
    member = update.my_chat_member
    if member is None:
        return
    blocked = member.new_chat_member.status in ("kicked", "left")
    await context.services.account.set_blocked(speaker(update), blocked)


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


async def on_error(update: object, context: ReinContext) -> None:
    """Log every unhandled error once, and tell the user something went wrong (and what, for the database)."""
    logger.error("bot.unhandled_error error=%s", type(context.error).__name__, exc_info=context.error)
    if not isinstance(update, Update) or update.effective_chat is None or update.effective_chat.type != "private":
        return
    message = _(texts.STORAGE_DOWN) if storage_error(context.error) else _(texts.BUSY)
    try:
        await context.bot.send_message(update.effective_chat.id, message, parse_mode=ParseMode.HTML)
    except TelegramError:
        return
