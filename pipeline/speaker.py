"""Who is speaking, and their user row as every part of the coach loads it."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import i18n, logcontext
from pipeline.streaming import DraftSink
from storage import users
from storage.models import User

# A user's message is stored whole: Telegram's own limit on a text is 4096 characters, and the words of a voice note
# of 10 minutes (MEDIA_MAX_SECONDS) run to about 10,000.
MAX_INPUT = 12_000


@dataclass(frozen=True)
class Speaker:
    """The Telegram user, their private chat and their client language; `drafts` shows a reply while it is
    written, when a chat waits for it (streaming on)."""

    telegram_id: int
    chat_id: int
    language_code: str | None = None
    drafts: DraftSink | None = field(default=None, compare=False, repr=False)


def clean_text(text: str) -> str:
    """User text with control and zero-width characters removed, trimmed and capped."""
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\n\t" or category not in ("Cc", "Cf") or char in "\u200d\u200c\u200e\u200f":
            kept.append(char)
    cleaned = re.sub(r"\n{3,}", "\n\n", "".join(kept)).strip()
    if not any(unicodedata.category(char)[0] not in "CZ" for char in cleaned):
        return ""  # only joiners, marks or spaces: nothing to answer
    return cleaned[:MAX_INPUT]


async def load(session: AsyncSession, speaker: Speaker) -> User:
    """The speaker's user row (created on first contact), tagged on the task's log lines."""
    user = await users.get_or_create_user(session=session, telegram_id=speaker.telegram_id,
                                          chat_id=speaker.chat_id, language_code=speaker.language_code,
                                          language=i18n.nearest(speaker.language_code))
    return seen(session, user)


async def load_awaiting(session: AsyncSession, speaker: Speaker) -> tuple[User, str | None]:
    """The speaker's user row and what a check-in waits for from them, in one query."""
    user, awaiting = await users.get_or_create_user_awaiting(
        session=session, telegram_id=speaker.telegram_id, chat_id=speaker.chat_id,
        language_code=speaker.language_code, language=i18n.nearest(speaker.language_code))
    return seen(session, user), awaiting


def seen(session: AsyncSession, user: User) -> User:
    """A user who writes to us no longer blocks the bot; log lines of this task carry their opaque id, and its
    texts are in the user's language (the stored setting: the bot's guess before the row was read may be stale)."""
    logcontext.set_user(user.opaque_id)
    i18n.set_locale(user.language)
    if user.blocked:
        user.blocked = False
        session.add(user)
    return user
