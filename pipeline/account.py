"""The user's account: /export, /delete, and whether they block the bot."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from pipeline import logcontext, texts
from pipeline.replies import Button, Para, Reply
from pipeline.speaker import Speaker, load
from storage import account, users
from storage.db import Database

logger = logging.getLogger(__name__)


class Account:
    """Export, erase, blocked."""

    def __init__(self, *, db: Database) -> None:
        self.db = db

    async def export(self, who: Speaker) -> Reply:
        """/export: everything stored about the user, as a JSON document."""
        async with self.db.session() as session:
            user = await load(session, who)
            data = await account.export_user(session=session, user=user)
        data["exported_at"] = datetime.now(UTC).isoformat()
        content = json.dumps(data, ensure_ascii=False, indent=2).encode()
        return Reply(paras=[Para("Here is everything Rein stores about you.")], document=("rein-export.json", content))

    async def delete_request(self, who: Speaker) -> list[Reply]:
        """/delete: ask for confirmation."""
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
        if user is None:
            return [Reply.plain("Rein stores nothing about you.")]
        return [Reply(
            paras=[Para("This erases your goals, plans, conversation and ratings for good. Are you sure?")],
            buttons=[[Button("Yes, delete everything", "delete_yes", user.id or 0),
                      Button("No, keep it", "delete_no", user.id or 0)]],
        )]

    async def delete_confirm(self, who: Speaker, user_ref: int, confirmed: bool) -> list[Reply]:
        """The answer to /delete's question; only the owner's own confirmation counts."""
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.id != user_ref:
                return [Reply.plain(texts.EXPIRED)]
            if not confirmed:
                return [Reply.plain("Nothing was deleted.")]
            await account.delete_user(session=session, user=user)
        return [Reply.plain("All your data has been deleted. Send /start if you ever want to begin again.")]

    async def set_blocked(self, who: Speaker, blocked: bool) -> None:
        """The user blocked (or unblocked) the bot: nothing more is sent until they come back."""
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.blocked == blocked:
                return
            logcontext.set_user(user.opaque_id)
            user.blocked = blocked
            session.add(user)
        logger.info("coach.blocked_changed blocked=%s", blocked)
