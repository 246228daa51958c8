"""Voice notes, audio files and photos: limits checked from what Telegram says of the file, the file fetched with
getFile, then understood (`pipeline.media`) and answered as a typed message would be, in a burst too: a text
followed by a voice note is answered once, with the voice note's words; a file refused or not understood still
lets the messages waiting before it be answered.

Everything runs inside one turn of the user (typing indicator, the per-user order, the judge after it); a
refusal or a failed download is a clear reply, never an error that reaches the error handler.
"""

from __future__ import annotations

import logging

from telegram import Audio, Bot, Message, Update, Voice
from telegram.error import TelegramError

from bot.context import ReinContext
from bot.handlers import newer_waiting, run_turn
from bot.services import Services
from pipeline import media
from pipeline.media import AUDIO, PHOTO, VOICE, Incoming
from pipeline.replies import Reply
from pipeline.speaker import Speaker

logger = logging.getLogger(__name__)


def incoming_file(message: Message, max_bytes: int) -> tuple[Incoming, str] | None:
    """What a voice, audio or photo message says of its file, and the file's id (None for other messages).

    Of a photo's sizes the largest within `max_bytes` is taken (the smallest when none is, to be refused)."""
    caption = message.caption or ""
    for kind, sound in ((VOICE, message.voice), (AUDIO, message.audio)):
        if sound is not None:
            return Incoming(kind, size=sound.file_size, duration=_seconds(sound), caption=caption), sound.file_id
    if message.photo:
        sizes = sorted(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        fitting = [p for p in sizes if p.file_size is None or p.file_size <= max_bytes]
        chosen = fitting[-1] if fitting else sizes[0]
        return Incoming(PHOTO, size=chosen.file_size, caption=caption), chosen.file_id
    return None


def _seconds(sound: Voice | Audio) -> int | None:
    """The duration in whole seconds as Telegram sent it (read from the object's dict: python-telegram-bot is moving
    the attribute from int to timedelta and warns on access)."""
    value = sound.to_dict().get("duration")
    return int(value) if isinstance(value, int | float) else None


async def download(bot: Bot, file_id: str) -> bytes | None:
    """The file's bytes through getFile, or None when Telegram does not hand them over."""
    try:
        found = await bot.get_file(file_id)
        return bytes(await found.download_as_bytearray())
    except TelegramError as exc:
        logger.warning("media.download_failed error=%s", type(exc).__name__)
        return None


async def received(update: Update, context: ReinContext) -> None:
    """A voice note, audio file or photo: understood, then answered by the coach like a typed message."""
    message = update.effective_message
    assert message is not None
    found = incoming_file(message, context.services.media.limits.max_bytes)
    if found is None:
        return
    incoming, file_id = found
    assert update.effective_user is not None
    more = newer_waiting(context, update.effective_user.id)

    async def understood(svc: Services, who: Speaker) -> str | list[Reply]:
        """The file's text, or the replies saying why there is none."""
        refused = svc.media.refusal(incoming)
        if refused is not None:
            return [refused]
        capped = await svc.conversation.over_daily_cap(who)  # past MAX_MESSAGES_PER_DAY nothing reaches the model
        if capped is not None:
            return capped
        await svc.media.wait_for_room(who, incoming)  # a user over the flood guard is heard when it allows
        data = await download(context.bot, file_id)
        if data is None:
            return [media.not_downloaded()]
        return await svc.media.understand(who, incoming, data)

    async def work(svc: Services, who: Speaker) -> list[Reply]:
        text = await understood(svc, who)
        if isinstance(text, list):  # no text of its own: the messages waiting before it are still answered
            return [*text, *await svc.conversation.answer_rest(who, more)]
        return await svc.conversation.on_text(who, text, answers=svc.checkins.prefs.intercept, more=more)

    await run_turn(update, context, work, compact=True)
