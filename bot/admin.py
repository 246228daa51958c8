"""Admin-only commands."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ParseMode

from bot import render
from bot.context import ReinContext
from pipeline.i18n import N_, _
from pipeline.stats import stats_report

NOT_ADMIN = N_("/stats is for Rein's admins only.")


async def stats(update: Update, context: ReinContext) -> None:
    """/stats: users, activity, ratings, judge means, tokens and cost (admins only)."""
    svc = context.services
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return
    if user.id not in svc.settings.admin_user_ids:
        await context.bot.send_message(chat.id, _(NOT_ADMIN), parse_mode=ParseMode.HTML)
        return
    report = await stats_report(svc.db, svc.settings)
    for part in render.render(report):
        await context.bot.send_message(chat.id, part, parse_mode=ParseMode.HTML)
