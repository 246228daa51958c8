"""Bursts read together and nobody left unanswered, through the real bot on SQLite and PostgreSQL: waiting
messages answered in one turn, the flood guard's follow-ups, failed calls that never count, and the messages a
stopped process left unanswered, answered once after the start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from bot import followups
from pipeline.conversation import FLOOD_NOTICE
from storage import turns, users
from storage.db import Database
from storage.models import Turn, User
from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.fakes import FakeBotAPI, FakeGemini, Fault
from tests.test_faults import to_coaching

ANN = 5401


@pytest.fixture
async def bot(bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str) -> AsyncIterator[Harness]:
    """A running bot on SQLite and on PostgreSQL."""
    app = await start_bot(make_settings(bot_api, gemini, database_url))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


async def stored_user_turns(h: Harness, user_id: int = ANN) -> list[Turn]:
    """The user's own stored messages, oldest first."""
    async with h.services.db.session() as session:
        user = (await session.scalars(select(User).where(User.telegram_id == user_id))).one()
        rows = await session.scalars(select(Turn).where(Turn.user_id == user.id, Turn.role == "user")
                                     .order_by(Turn.id))
        return list(rows.all())


def coached(h: Harness, since: int, user_id: int = ANN) -> list[str]:
    """The coach's replies in the chat since message `since`."""
    return [m.text or "" for m in h.bot_api.messages(user_id)[since:] if (m.text or "").startswith("Coach: ")]


async def test_fifteen_quick_messages_cost_a_few_calls_and_the_last_reply_reads_them_all(bot: Harness) -> None:
    """15 messages sent while a slow LLM writes: at most 4 Gemini calls, each request (the last one too) holds
    every message that waited for it in order, the last message is answered and every message is marked answered."""
    await to_coaching(bot, ANN)
    before, asked = len(bot.bot_api.messages(ANN)), len(bot.gemini.requests)
    bot.gemini.latency = 0.5
    sent = [f"burst {n}" for n in range(15)]
    for text in sent:
        bot.bot_api.user_sends(ANN, text)
        await asyncio.sleep(0.07)  # about a second for all fifteen: typing speed of a quick thumb
    await bot.bot_api.wait_for(lambda: "Coach: burst 14" in coached(bot, before), timeout=20)
    await bot.settled()
    calls = bot.gemini.requests[asked:]
    assert len(calls) <= 4, [c.last_user_text for c in calls]
    replies = coached(bot, before)
    assert len(replies) == len(calls) and replies[-1] == "Coach: burst 14"
    previous = -1
    for call in calls:  # each request holds every message that waited since the one before, in order
        newest = sent.index(call.last_user_text)
        waited = sent[previous + 1:newest + 1]
        assert call.user_texts[-len(waited):] == waited, (waited, call.user_texts)
        previous = newest
    assert previous == len(sent) - 1
    stored = [t for t in await stored_user_turns(bot) if t.text.startswith("burst")]
    assert [t.text for t in stored] == sent and all(t.answered for t in stored)


async def test_a_flood_gets_one_notice_and_the_held_messages_are_answered_by_themselves(
        bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str) -> None:
    """40 messages at once past the LLM cap: exactly one notice, no Try again anywhere, the flood guard's
    follow-up answers the newest with the rest by itself, and the cap holds."""
    app = await start_bot(make_settings(bot_api, gemini, database_url, llm_calls_per_minute=1))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)  # the one LLM turn the window allows
        limiter = h.services.steps.flood
        assert limiter is not None
        limiter.window_s = 4.0  # the cap's minute, shortened so the follow-up comes within the test
        before, asked = len(bot_api.messages(ANN)), len(gemini.requests)
        gemini.latency = 0.3
        for n in range(40):
            bot_api.user_sends(ANN, f"flood {n}")
        await bot_api.wait_for(lambda: "Coach: flood 39" in coached(h, before), timeout=20)
        await h.settled()
        await bot_api.wait_for(lambda: not h.services.conversation.followups, timeout=5)
        texts = [m.text or "" for m in bot_api.messages(ANN)[before:]]
        assert texts.count(FLOOD_NOTICE) == 1, texts
        assert all("Try again" not in [label for label, _ in m.buttons()] for m in bot_api.messages(ANN)[before:])
        assert coached(h, before)[-1] == "Coach: flood 39"
        assert h.services.conversation.followups.sent >= 1, "the newest was answered by a follow-up"
        assert len(gemini.requests) - asked <= 2
        stored = [t for t in await stored_user_turns(h) if t.text.startswith("flood")]
        assert len(stored) == 40 and all(t.answered for t in stored)
    finally:
        await stop_bot(app)


async def test_failed_calls_during_an_outage_never_count_and_the_user_is_answered_after(
        bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str) -> None:
    """Gemini down: five messages each get a clear error and are refunded to the cap of three; when Gemini is
    back the next message is answered at once, with the outage's messages in the same request."""
    app = await start_bot(make_settings(bot_api, gemini, database_url, llm_calls_per_minute=3))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        gemini.fail_always = Fault.status(503)
        for n in range(5):
            error = (await h.say(ANN, f"are you there {n}"))[0]
            assert "couldn't reach" in (error.text or "")
        gemini.fail_always = None
        answer = (await h.say(ANN, "back again"))[0]
        assert answer.text == "Coach: back again"
        assert gemini.requests[-1].user_texts[-6:] == [f"are you there {n}" for n in range(5)] + ["back again"]
        assert all(t.answered for t in await stored_user_turns(h))
        assert not h.services.conversation.followups.armed(ANN)
    finally:
        await stop_bot(app)


async def test_messages_left_unanswered_by_a_stop_are_answered_once_after_the_start(
        bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str) -> None:
    """Messages stored and never answered when the process stopped: the next start answers them in one reply;
    running the recovery twice more (at once) sends nothing more."""
    settings = make_settings(bot_api, gemini, database_url)
    app = await start_bot(settings)
    try:
        await to_coaching(Harness(app, bot_api, gemini), ANN)
    finally:
        await stop_bot(app)
    db = Database(database_url)
    try:
        async with db.session() as session:  # what a process that stopped mid-burst leaves behind
            user = await users.get_user(session=session, telegram_id=ANN)
            assert user is not None
            for text in ("are you there?", "I ran 5 km today"):
                await turns.add_turn(session=session, user=user, role="user", kind="coaching", text=text)
    finally:
        await db.dispose()
    before = len(bot_api.messages(ANN))
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        await bot_api.wait_messages(ANN, before + 1, timeout=10)
        await h.services.drain()
        assert [m.text for m in bot_api.messages(ANN)[before:]] == ["Coach: I ran 5 km today"]
        assert gemini.requests[-1].user_texts[-2:] == ["are you there?", "I ran 5 km today"]
        again: list[Any] = await asyncio.gather(followups.recover(app.bot, h.services),
                                                followups.recover(app.bot, h.services))
        assert again == [0, 0]
        assert len(bot_api.messages(ANN)) == before + 1, "answered once, never twice"
        assert all(t.answered for t in await stored_user_turns(h))
    finally:
        await stop_bot(app)
