"""The user's account: /export, /delete, and whether they block the bot."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline import logcontext, texts
from pipeline.erasure import Erasures
from pipeline.export import ExportWriter
from pipeline.i18n import _
from pipeline.replies import Button, Para, Reply
from pipeline.speaker import Speaker, load
from storage import account, erasures, users
from storage.db import Database
from storage.models import User

logger = logging.getLogger(__name__)

OPIK_WAIT_S = 15.0  # the longest /export waits for Opik's list of the user's traces


class Account:
    """Export, erase, blocked."""

    def __init__(self, *, db: Database, erasures: Erasures | None = None, export_cooldown_s: float = 300.0,
                 export_part_bytes: int = 45_000_000) -> None:
        self.db = db
        self.erasures = erasures
        self.export_cooldown = timedelta(seconds=export_cooldown_s)
        self.export_part_bytes = export_part_bytes

    async def export(self, who: Speaker, folder: Path) -> list[Reply]:
        """/export: everything stored about the user (and the ids Opik holds), as JSON documents written to
        `folder` page by page; at most once per cooldown."""
        now = datetime.now(UTC)
        async with self.db.session() as session:
            user = await load(session, who)
            if user.exported_at is not None and now - user.exported_at < self.export_cooldown:
                wait = self.export_cooldown - (now - user.exported_at)
                minutes = max(1, math.ceil(wait.total_seconds() / 60))
                return [Reply.plain(_("You asked for an export a moment ago. You can ask again in {minutes} min.",
                                      minutes=minutes))]
            user.exported_at = now
            session.add(user)
        writer = ExportWriter(folder, part_bytes=self.export_part_bytes)
        async with self.db.session() as session:
            user = await load(session, who)
            writer.value("user", account.user_record(user))
            async for name, rows in account.export_pages(session=session, user=user):
                writer.rows(name, rows)
            threads, traces = await erasures.held_in_opik(session=session, user=user)
        await self._opik_section(writer, user, threads, traces)
        writer.value("exported_at", now.isoformat())
        parts = await asyncio.to_thread(writer.close)
        if len(parts) == 1:
            return [Reply(paras=[Para(_("Here is everything Rein stores about you."))],
                          document=(parts[0].name, parts[0]))]
        return [Reply(paras=[Para(_("Here is everything Rein stores about you (part {part} of {parts}).",
                                    part=index, parts=len(parts)))], document=(path.name, path))
                for index, path in enumerate(parts, start=1)]

    async def _opik_section(self, writer: ExportWriter, user: User, threads: list[str], traces: list[str]) -> None:
        """What Rein's trace store (Opik) holds of the user: their thread and trace ids, as Opik lists them."""
        tracer = self.erasures.tracer if self.erasures is not None else None
        if tracer is None or not tracer.enabled:
            writer.value("opik", {"tracing": "off", "threads": threads, "traces_named_in_rows": traces})
            return
        summary: dict[str, Any] = {"project": tracer.project}
        try:
            found = await asyncio.wait_for(asyncio.to_thread(tracer.user_traces, user.opaque_id, threads),
                                           OPIK_WAIT_S)
        except Exception as exc:  # unreachable, failing or slow: the export says so and lists what the rows name
            logger.warning("account.opik_unreachable error=%s", type(exc).__name__)
            summary.update(reachable=False, threads=threads, traces_named_in_rows=traces)
            writer.value("opik", summary)
            return
        summary.update(reachable=True, threads=sorted(set(threads) | {t for t in found.values() if t}))
        writer.value("opik", summary)
        writer.rows("opik_traces", [{"id": trace, "thread_id": thread} for trace, thread in sorted(found.items())])

    async def delete_request(self, who: Speaker) -> list[Reply]:
        """/delete: ask for confirmation."""
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
        if user is None:
            return [Reply.plain(_("Rein stores nothing about you."))]
        return [Reply(
            paras=[Para(_("This erases your goals, plans, conversation and ratings for good. Are you sure?"))],
            buttons=[[Button(_("Yes, delete everything"), "delete_yes", user.id or 0),
                      Button(_("No, keep it"), "delete_no", user.id or 0)]],
        )]

    async def delete_confirm(self, who: Speaker, user_ref: int, confirmed: bool) -> list[Reply]:
        """The answer to /delete's question; only the owner's own confirmation counts. With tracing on, the
        erasure of the user's Opik copies is recorded in the same transaction (`pipeline.erasure` carries it out)."""
        in_opik = self.erasures is not None and self.erasures.enabled
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.id != user_ref:
                return [Reply.plain(_(texts.EXPIRED))]
            if not confirmed:
                return [Reply.plain(_("Nothing was deleted."))]
            if in_opik:
                threads, traces = await erasures.held_in_opik(session=session, user=user)
                await erasures.record(session=session, opaque_id=user.opaque_id, thread_ids=threads, trace_ids=traces)
            await account.delete_user(session=session, user=user)
        logger.info("coach.deleted opik_erasure=%s", in_opik)
        if in_opik:
            return [Reply.plain(_("All your data here has been deleted. Its copies in Rein's trace store (Opik) are "
                                  "being erased now. Send /start if you ever want to begin again."))]
        return [Reply.plain(_("All your data has been deleted. Send /start if you ever want to begin again."))]

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
