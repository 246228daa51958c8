"""The user's language on the Telegram side: each update is answered in it, /language changes it, and the
command menu, description and short description are published in every language at start-up.

Each update's language comes from a small cache (filled by every turn, which reads the stored setting anyway),
else from the database (a plain text skips this read: its turn reads the user row first thing), else (someone
new) from Telegram's `language_code`. The pipeline sets the stored one
again whenever it reads the user, so a turn is always in the setting even if this replica's cache is stale.
"""

from __future__ import annotations

import asyncio
import logging

from telegram import Bot, BotCommand, BotCommandScopeChat, Update
from telegram.error import TelegramError
from telegram.ext import CallbackQueryHandler, CommandHandler, TypeHandler, filters

from bot import render, texts
from bot.context import ReinApp, ReinContext
from bot.handlers import run_turn, speaker, take_actions_away
from bot.replying import answer_query
from pipeline import i18n
from pipeline.i18n import _

logger = logging.getLogger(__name__)

PATTERN = rf"^{render.ACTION_CODES['language_set']}:\d+$"


def telegram_code(code: str) -> str:
    """The two-letter code Telegram's profile methods take for a catalog language ("pt_BR" -> "pt")."""
    return code.split("_")[0]


async def use_language(update: Update, context: ReinContext) -> None:
    """Before any other handler: the update is answered in its user's language."""
    user, chat = update.effective_user, update.effective_chat
    if user is None:
        return
    if chat is None or chat.type != "private":
        i18n.set_locale(i18n.nearest(user.language_code))
        return
    code = context.bot_data.languages.get(user.id)
    message = update.message
    if code is None and message is not None and message.text and not message.text.startswith("/"):
        # A plain text is a turn: it reads the user row first thing and sets the stored language then (and
        # the turn fills the cache). Reading it here too would cost a session per uncached user and let a burst
        # of new users overtake each other on the way to the coach.
        i18n.set_locale(i18n.nearest(user.language_code))
        return
    if code is None:
        try:
            code = await context.services.languages.stored(speaker(update))
        except Exception:  # storage down: the client's language now; the handlers say what went wrong
            logger.warning("bot.language_unknown", exc_info=True)
            i18n.set_locale(i18n.nearest(user.language_code))
            return
        context.bot_data.remember_language(user.id, code)
    i18n.set_locale(code)


async def language(update: Update, context: ReinContext) -> None:
    """/language: the menu of languages."""
    await run_turn(update, context, lambda svc, w: svc.languages.menu(w))


async def choose(update: Update, context: ReinContext) -> None:
    """A language button: the setting changes, this chat's command menu follows, the answer is in the new one."""
    query = update.callback_query
    assert query is not None
    parsed = render.decode(query.data)
    if parsed is None:
        return
    await answer_query(query)
    await take_actions_away(update, context)
    ref = parsed.ref
    await run_turn(update, context, lambda svc, w: svc.languages.choose(w, ref))
    chat = update.effective_chat
    if chat is not None:
        try:
            await context.bot.set_my_commands([BotCommand(name, desc) for name, desc in texts.commands()],
                                              scope=BotCommandScopeChat(chat.id))
        except TelegramError:
            logger.warning("bot.chat_commands_failed", exc_info=True)


def add_handlers(app: ReinApp, private: filters.BaseFilter) -> None:
    """The language of every update first of all; /language and its buttons before the catch-alls."""
    app.add_handler(TypeHandler(Update, use_language), group=-3)
    app.add_handler(CommandHandler("language", language, filters=private))
    app.add_handler(CallbackQueryHandler(choose, pattern=PATTERN))


async def publish_profiles(bot: Bot) -> None:
    """The command menu, description and short description in every language (English for all others). Each is
    read first and written only when it differs: every start of every replica publishes, and Telegram limits how
    often a bot's profile may change."""

    async def publish(code: str) -> None:
        with i18n.use_locale(code):
            language_code = None if code == i18n.DEFAULT else telegram_code(code)
            commands = [BotCommand(name, desc) for name, desc in texts.commands()]
            description, short = _(texts.DESCRIPTION), _(texts.SHORT_DESCRIPTION)
        try:
            if tuple(await bot.get_my_commands(language_code=language_code)) != tuple(commands):
                await bot.set_my_commands(commands, language_code=language_code)
            if (await bot.get_my_description(language_code=language_code)).description != description:
                await bot.set_my_description(description, language_code=language_code)
            if (await bot.get_my_short_description(language_code=language_code)).short_description != short:
                await bot.set_my_short_description(short, language_code=language_code)
        except TelegramError:
            logger.warning("bot.profile_failed language=%s", code, exc_info=True)

    await publish(i18n.DEFAULT)  # first: the menu everyone without a translation sees
    await asyncio.gather(*(publish(code) for code in i18n.LANGUAGES if code != i18n.DEFAULT))
