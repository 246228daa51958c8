"""Users: found or created on contact, kept current, and the conversations that went quiet."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import (
    CheckinPrefs,
    User,
    utcnow,
)


async def get_user(*, session: AsyncSession, telegram_id: int) -> User | None:
    """The user with this Telegram id, if known."""
    result = await session.scalars(select(User).where(col(User.telegram_id) == telegram_id))
    return result.first()


# How stale `last_active_at` may get (it drives the "quiet session" check, measured in minutes).
ACTIVITY_RESOLUTION = timedelta(seconds=60)


async def get_or_create_user(
    *, session: AsyncSession, telegram_id: int, chat_id: int, language_code: str | None = None,
    language: str = "en",
) -> User:
    """The user with this Telegram id, created on first contact (speaking `language`); `last_active_at` is
    refreshed."""
    user = await get_user(session=session, telegram_id=telegram_id)
    return await _refresh_or_create(session, user, telegram_id=telegram_id, chat_id=chat_id,
                                    language_code=language_code, language=language)


_LANGUAGE = select(col(User.language)).where(col(User.telegram_id) == bindparam("telegram_id"))


async def get_language(*, session: AsyncSession, telegram_id: int) -> str | None:
    """The language stored for this Telegram user (None for someone Rein does not know)."""
    return (await session.execute(_LANGUAGE, {"telegram_id": telegram_id})).scalar_one_or_none()


# The statements of every coaching turn, built once (bound parameters): building a statement and its cache
# key on each call was a visible share of a turn's CPU (docs/PERFORMANCE.md).
_USER_AWAITING = (
    select(User, col(CheckinPrefs.awaiting))
    .outerjoin(CheckinPrefs, col(CheckinPrefs.user_id) == col(User.id))
    .where(col(User.telegram_id) == bindparam("telegram_id"))
)


async def get_or_create_user_awaiting(
    *, session: AsyncSession, telegram_id: int, chat_id: int, language_code: str | None = None,
    language: str = "en",
) -> tuple[User, str | None]:
    """As `get_or_create_user`, with what a check-in waits for from the user (`checkin_prefs.awaiting`,
    usually None) read in the same query: the text hot path's one read of the user."""
    row = (await session.execute(_USER_AWAITING, {"telegram_id": telegram_id})).first()
    user = await _refresh_or_create(session, row[0] if row else None, telegram_id=telegram_id, chat_id=chat_id,
                                    language_code=language_code, language=language)
    return user, row[1] if row else None


async def _refresh_or_create(session: AsyncSession, user: User | None, *, telegram_id: int, chat_id: int,
                             language_code: str | None, language: str) -> User:
    """The user as found, created when not found; what changed about them is updated."""
    now = utcnow()
    if user is None:
        opaque = uuid.uuid4().hex
        user = User(
            telegram_id=telegram_id,
            chat_id=chat_id,
            opaque_id=opaque,
            thread_id=new_thread_id(opaque),
            language_code=language_code,
            language=language,
        )
        session.add(user)
        await session.flush()
        return user
    # Write only what changed: most calls in a turn find the row as it is, and skip the UPDATE.
    if now - user.last_active_at > ACTIVITY_RESOLUTION:
        user.last_active_at = now
    if user.chat_id != chat_id:
        user.chat_id = chat_id
    if language_code and user.language_code != language_code:
        user.language_code = language_code
    return user


def new_thread_id(opaque_id: str) -> str:
    """A fresh Opik thread id for one conversation of this user."""
    return f"{opaque_id[:12]}-{uuid.uuid4().hex[:12]}"


async def quiet_open_threads(*, session: AsyncSession, before: datetime, limit: int) -> list[User]:
    """Users whose current conversation is still open but who have been quiet since `before`."""
    result = await session.scalars(
        select(User)
        .where(col(User.thread_closed).is_(False), col(User.last_active_at) < before)
        .order_by(col(User.last_active_at))
        .limit(limit)
    )
    return list(result.all())
