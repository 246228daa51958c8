"""Sending what the coach wrote: HTML messages under Telegram's limits, keyboards, the typing indicator, and
keyboard edits that never repeat themselves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from telegram import Bot, CallbackQuery, InlineKeyboardMarkup, Message
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError, TimedOut

from bot import render
from bot.context import BotData
from pipeline.ratings import RATEABLE
from pipeline.replies import Reply

logger = logging.getLogger(__name__)

SEND_RETRY_DELAYS_S = (0.5, 1.0)
MARKUPS_KEPT = 5000


async def send_replies(bot: Bot, chat_id: int, replies: list[Reply]) -> None:
    """Send each reply as one or more HTML messages; buttons (and the rating row) go on the last part."""
    for reply in replies:
        if reply.document is not None:
            name, content = reply.document
            await bot.send_document(chat_id, document=content, filename=name,
                                    caption=render.render(reply, limit=1000)[0], parse_mode=ParseMode.HTML)
            continue
        parts = render.render(reply)
        rate_turn = reply.turn_id if reply.kind in RATEABLE else None
        markup = render.keyboard(reply.buttons, rate_turn=rate_turn)
        for index, part in enumerate(parts):
            await send_message(bot, chat_id, part, markup if index == len(parts) - 1 else None)


async def send_message(bot: Bot, chat_id: int, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Send one HTML message; a connection error or a 5xx is retried twice (429s are the rate limiter's job).

    A time-out is not retried: Telegram may have delivered the message, and a duplicate is worse than a reply
    that stays stored (in the coach's memory and in /export).
    """
    for delay in (*SEND_RETRY_DELAYS_S, None):
        try:
            await bot.send_message(chat_id, text, reply_markup=markup, parse_mode=ParseMode.HTML)
            return
        except TimedOut:
            raise
        except NetworkError as exc:
            if delay is None or isinstance(exc, (BadRequest, Forbidden)):
                raise
            logger.warning("bot.send_retry error=%s wait_s=%.1f", type(exc).__name__, delay)
            await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def typing(bot: Bot, chat_id: int, delay_s: float,
                 drafting: Callable[[], bool] | None = None) -> AsyncIterator[None]:
    """Show "typing…" until the block ends (Telegram clears it after about 5 s, so it is renewed). It starts
    after `delay_s`: an answer faster than that needs no indicator, and saves a call. While `drafting()` says a
    draft is on screen, none is needed either."""

    async def keep_typing() -> None:
        await asyncio.sleep(delay_s)
        while True:
            if drafting is None or not drafting():
                with contextlib.suppress(TelegramError):
                    await bot.send_chat_action(chat_id, ChatAction.TYPING)
            await asyncio.sleep(4.5)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def current_markup(data: BotData, message: Message) -> InlineKeyboardMarkup | None:
    """A message's keyboard as Rein last set it (falling back to the copy the press carried).

    Two quick presses carry the same old copy of the message: the second must neither send an identical edit
    (Telegram answers 400) nor bring back buttons the first one removed.
    """
    return data.markups.get((message.chat.id, message.message_id), message.reply_markup)


async def edit_markup(query: CallbackQuery, data: BotData, new: InlineKeyboardMarkup | None) -> None:
    """Set a message's keyboard unless nothing would change (Telegram refuses identical edits)."""
    message = query.message
    if not isinstance(message, Message):
        return
    key = (message.chat.id, message.message_id)
    old = current_markup(data, message)
    if (old.to_dict() if old else None) == (new.to_dict() if new else None):
        return
    data.markups[key] = new  # recorded before the await, so a concurrent press sees it
    if len(data.markups) > MARKUPS_KEPT:
        del data.markups[next(iter(data.markups))]
    with contextlib.suppress(BadRequest, Forbidden):
        await query.edit_message_reply_markup(reply_markup=new)


async def answer_query(query: CallbackQuery, text: str | None = None, *, alert: bool = False) -> None:
    """Answer a button press (stops the client's spinner); a press too old to answer is fine."""
    with contextlib.suppress(BadRequest):
        await query.answer(text, show_alert=alert)
