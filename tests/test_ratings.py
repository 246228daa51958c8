"""Ratings: every LLM message carries 1–5 stars; a press becomes `user_rating` on that message's trace."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import Rating, Turn
from tests.conftest import Harness

ANN = 2001
BOB = 2002


def _stars(message) -> list[str]:
    return [data for label, data in message.buttons() if data.startswith("r:")]


async def _coaching_reply(h: Harness, user_id: int = ANN):
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(user_id, "/start", expect=2)
    await h.say(user_id, "Drink more water", expect=2)
    await h.press(user_id, h.bot_api.messages(user_id)[-1], "✅ Accept")
    return (await h.say(user_id, "I drank 2 litres today"))[0]


async def test_every_llm_message_has_a_rating_row(harness: Harness) -> None:
    """Clarifying questions, resolution, plan and coaching replies carry five star buttons; fixed texts don't."""
    welcome = await harness.say(ANN, "/start", expect=2)
    assert all(not _stars(m) for m in welcome)
    question = (await harness.say(ANN, "Learn to cook"))[0]
    assert len(_stars(question)) == 5
    resolution, plan = await harness.press(ANN, question, "Skip", expect=2)
    assert len(_stars(resolution)) == 5 and len(_stars(plan)) == 5
    assert all(len(d.encode()) <= 64 for _, d in plan.buttons())


async def test_rating_is_stored_replaced_and_shown(harness: Harness) -> None:
    """A press stores the rating, answers "Thanks, rated 4/5", marks the star; a second press replaces it."""
    reply = await _coaching_reply(harness)
    four = next(d for d in _stars(reply) if d.endswith(":4"))
    query_id = harness.bot_api.user_presses(ANN, reply.message_id, four)
    await harness.bot_api.wait_for(lambda: query_id in harness.bot_api.callback_answers)
    assert harness.bot_api.callback_answers[query_id].get("text") == "Thanks, rated 4/5"
    await harness.bot_api.wait_for(lambda: any(lbl == "★4" for lbl, _ in harness.bot_api.messages(ANN)[-1].buttons()))

    five = next(d for d in _stars(reply) if d.endswith(":5"))
    query_id = harness.bot_api.user_presses(ANN, reply.message_id, five)
    await harness.bot_api.wait_for(lambda: query_id in harness.bot_api.callback_answers)
    await harness.bot_api.wait_for(lambda: any(lbl == "★5" for lbl, _ in harness.bot_api.messages(ANN)[-1].buttons()))
    async with harness.services.db.session() as session:
        ratings = (await session.scalars(select(Rating))).all()
    assert [(r.value, r.reason) for r in ratings] == [(5, None)]


async def test_double_tap_is_harmless(harness: Harness) -> None:
    """Pressing the same star twice keeps one rating and never makes an identical edit."""
    reply = await _coaching_reply(harness)
    three = next(d for d in _stars(reply) if d.endswith(":3"))
    first = harness.bot_api.user_presses(ANN, reply.message_id, three)
    await harness.bot_api.wait_for(lambda: first in harness.bot_api.callback_answers)
    second = harness.bot_api.user_presses(ANN, reply.message_id, three)
    await harness.bot_api.wait_for(lambda: second in harness.bot_api.callback_answers)
    await harness.settled()
    async with harness.services.db.session() as session:
        assert [r.value for r in (await session.scalars(select(Rating))).all()] == [3]


async def test_low_rating_asks_once_what_would_have_helped(harness: Harness) -> None:
    """After a 1 or 2 the coach asks once; the next text is the rating's reason, not a coaching message."""
    reply = await _coaching_reply(harness)
    calls_before = len(harness.gemini.requests)
    one = next(d for d in _stars(reply) if d.endswith(":1"))
    harness.bot_api.user_presses(ANN, reply.message_id, one)
    await harness.bot_api.wait_for(lambda: "What would have helped" in harness.bot_api.messages(ANN)[-1].text)
    thanks = (await harness.say(ANN, "More concrete steps please"))[0]
    assert "Thank you" in thanks.text
    assert len(harness.gemini.requests) == calls_before, "the reason was not sent to the coach"
    async with harness.services.db.session() as session:
        rating = (await session.scalars(select(Rating))).one()
    assert (rating.value, rating.reason) == (1, "More concrete steps please")

    two = next(d for d in _stars(reply) if d.endswith(":2"))
    query_id = harness.bot_api.user_presses(ANN, reply.message_id, two)
    await harness.bot_api.wait_for(lambda: query_id in harness.bot_api.callback_answers)
    await harness.settled()
    assert sum("What would have helped" in m.text for m in harness.bot_api.messages(ANN)) == 1


async def test_reason_can_be_skipped(harness: Harness) -> None:
    """Skip under the question clears it, and the next text is coached normally."""
    reply = await _coaching_reply(harness)
    harness.bot_api.user_presses(ANN, reply.message_id, next(d for d in _stars(reply) if d.endswith(":2")))
    await harness.bot_api.wait_for(lambda: "What would have helped" in harness.bot_api.messages(ANN)[-1].text)
    await harness.press(ANN, harness.bot_api.messages(ANN)[-1], "Skip")
    coached = (await harness.say(ANN, "What next?"))[0]
    assert coached.text.startswith("Coach")


async def test_forged_and_foreign_rating_data_changes_nothing(harness: Harness) -> None:
    """Bob pressing a copy of Ann's star, or forged data, gets an alert and stores nothing."""
    reply = await _coaching_reply(harness)
    await harness.say(BOB, "/start", expect=2)
    for data in (_stars(reply)[3], "r:999999:4", "r:1:9", "r:abc:1", "pa:1:1", "x" * 64):
        query_id = harness.bot_api.user_presses(BOB, reply.message_id, data, chat_id=BOB)
        await harness.bot_api.wait_for(lambda q=query_id: q in harness.bot_api.callback_answers)
        assert harness.bot_api.callback_answers[query_id].get("show_alert") in (True, "true")
    async with harness.services.db.session() as session:
        assert (await session.scalars(select(Rating))).all() == []


async def test_rating_a_message_sent_before_a_restart_works(bot_api, gemini, sqlite_url) -> None:
    """Stars on a message from before a restart still rate that message."""
    from tests.conftest import make_settings, start_bot, stop_bot

    settings = make_settings(bot_api, gemini, sqlite_url)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    reply = await _coaching_reply(h)
    await stop_bot(app)
    app = await start_bot(settings)
    try:
        harness2 = Harness(app, bot_api, gemini)
        query_id = bot_api.user_presses(ANN, reply.message_id, _stars(reply)[4])
        await bot_api.wait_for(lambda: query_id in bot_api.callback_answers)
        async with harness2.services.db.session() as session:
            rating = (await session.scalars(select(Rating))).one()
            turn = (await session.scalars(select(Turn).where(Turn.id == rating.turn_id))).one()
        assert rating.value == 5 and turn.kind == "coaching"
    finally:
        await stop_bot(app)
