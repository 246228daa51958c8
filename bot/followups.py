"""Answers nobody pressed a button for: follow-ups of messages the flood guard held back, and, at start-up, the
messages stored but never answered because the process stopped first. Both take the user's lock (and, on
PostgreSQL, its advisory lock), so they never land in the middle of a turn and a message is answered once."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from telegram import Bot
from telegram.error import BadRequest, Forbidden

from bot.context import ReinApp
from bot.replying import send_replies
from bot.services import Services
from pipeline.replies import Reply
from pipeline.speaker import Speaker
from storage.models import utcnow

logger = logging.getLogger(__name__)

RECOVER_AT_ONCE = 8  # users answered at once after a start


def wire(app: ReinApp, svc: Services) -> None:
    """Follow-ups are sent by this bot."""

    async def deliver(who: Speaker) -> None:
        await answer_waiting(app.bot, svc, who)

    svc.conversation.followups.deliver = deliver


async def answer_waiting(bot: Bot, svc: Services, who: Speaker, *, errors: bool = True) -> bool:
    """Answer the user's waiting messages, if any, under their lock; False when there was nothing to send (or,
    without `errors`, the answer failed: the messages stay stored for the next text or start)."""
    async with svc.locks.hold(who.telegram_id):
        replies = await svc.conversation.answer_waiting(who)
        if not replies or (not errors and any(r.kind == "error" for r in replies)):
            return False
        await _send(bot, svc, who, replies)
    judged = [r.turn_id for r in replies if r.turn_id is not None and not r.judged and svc.judge.wants(r.kind)]
    if judged:
        svc.background(svc.judge.judge_turns(judged))
    return True


async def recover(bot: Bot, svc: Services) -> int:
    """After a start: answer every user whose messages were stored and never answered (within
    RECOVER_WITHIN_HOURS); returns how many were answered. Safe to run twice or on two replicas at once."""
    since = utcnow() - timedelta(hours=svc.settings.recover_within_hours)
    waiting = await svc.conversation.users_waiting(active_since=since)
    if not waiting:
        return 0
    logger.info("followup.recovering users=%d", len(waiting))
    gate = asyncio.Semaphore(RECOVER_AT_ONCE)

    async def one(who: Speaker) -> bool:
        async with gate:
            try:
                return await answer_waiting(bot, svc, who, errors=False)
            except Exception:
                logger.exception("followup.recover_failed")
                return False

    answered = sum(await asyncio.gather(*(one(who) for who in waiting)))
    logger.info("followup.recovered users=%d", answered)
    return answered


async def _send(bot: Bot, svc: Services, who: Speaker, replies: list[Reply]) -> None:
    try:
        await send_replies(bot, who.chat_id, replies)
    except Forbidden:
        logger.info("bot.user_blocked_bot")
        await svc.account.set_blocked(who, True)
    except BadRequest:
        logger.warning("followup.not_sent", exc_info=True)
