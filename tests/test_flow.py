"""End-to-end conversations: the real Application over HTTP against the loopback Bot API and Gemini."""

from __future__ import annotations

import json

from sqlalchemy import select

from bot import texts
from storage.models import Goal, Plan, Stage, Turn, User
from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.fakes import Fault
from tests.fakes.botapi import contact, dice, document, location, photo, poll, sticker, voice

ANN = 1001
BOB = 1002


async def _user(h: Harness, telegram_id: int) -> User:
    async with h.services.db.session() as session:
        user = (await session.scalars(select(User).where(User.telegram_id == telegram_id))).first()
    assert user is not None
    return user


async def _to_plan(h: Harness, user_id: int = ANN) -> list:
    """Walk a user from /start to a draft plan through three clarification rounds."""
    await h.say(user_id, "/start", expect=2)
    for answer in ("I want to get fit", "I can run 2 km now", "For my health", "3 hours a week"):
        sent = await h.say(user_id, answer, expect=1 if answer != "3 hours a week" else 2)
    return sent


async def test_start_welcomes_and_registers_the_command_menu(harness: Harness) -> None:
    """/start greets and asks for the goal; setMyCommands lists every command, and /help does too."""
    sent = await harness.say(ANN, "/start", expect=2)
    assert "Rein" in sent[0].text
    assert "What do you want to achieve?" in sent[1].text
    commands = [c for c in harness.bot_api.calls if c["method"] == "setMyCommands"]
    assert commands, "the command menu was not set"
    names = {c["command"] for c in commands[0]["parsed"]["commands"]}
    assert names == {name for name, _ in texts.COMMANDS}
    assert {"start", "goal", "plan", "cancel", "export", "delete", "help"} <= names
    help_text = (await harness.say(ANN, "/help"))[0].text
    for name in names:
        assert f"/{name}" in help_text


async def test_goal_to_accepted_plan_to_coaching(harness: Harness) -> None:
    """A goal gets at most three questions, then a resolution and a plan; accepting it starts coaching."""
    await harness.say(ANN, "/start", expect=2)
    question = (await harness.say(ANN, "I want to get fit"))[0]
    assert any(label.startswith("Skip") for label, _ in question.buttons())
    await harness.say(ANN, "I can run 2 km now")
    await harness.say(ANN, "For my health")
    resolution, plan = await harness.say(ANN, "3 hours a week", expect=2)
    assert "Your resolution" in resolution.text
    assert "Your plan" in plan.text and "Milestones" in plan.text
    labels = [label for label, _ in plan.buttons()]
    assert any("Accept" in x for x in labels) and any("Regenerate" in x for x in labels)
    assert any("Adjust" in x for x in labels)

    accepted = (await harness.press(ANN, plan, "✅ Accept"))[0]
    assert "Plan accepted" in accepted.text
    reply = (await harness.say(ANN, "How should I start this week?"))[0]
    assert reply.text.startswith("Coach")

    coaching_request = harness.gemini.requests[-1]
    context = " ".join(coaching_request.user_texts)
    assert "Plan summary" in context and "Goal: I want to get fit" in context
    assert "I want to get fit" not in coaching_request.system, "the user's words never enter the system instruction"
    assert coaching_request.last_user_text == "How should I start this week?"
    user = await _user(harness, ANN)
    assert user.stage == Stage.COACHING
    clarify_calls = [r for r in harness.gemini.requests if r.schema and "enough_information" in json.dumps(r.schema)]
    assert len(clarify_calls) == 3, "at most three clarification rounds"


async def test_enough_information_goes_straight_to_the_plan(harness: Harness) -> None:
    """When the LLM says nothing is missing, the coach writes the resolution and plan at once."""
    harness.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await harness.say(ANN, "/start", expect=2)
    sent = await harness.say(ANN, "Run a half marathon by June, I run 10 km now, 4 h/week, for my father", expect=2)
    assert "Your resolution" in sent[0].text and "Your plan" in sent[1].text


async def test_skip_button_makes_the_plan(harness: Harness) -> None:
    """"Skip, make my plan" ends the clarification and produces resolution and plan."""
    await harness.say(ANN, "/start", expect=2)
    question = (await harness.say(ANN, "Learn Spanish"))[0]
    sent = await harness.press(ANN, question, "Skip", expect=2)
    assert "Your resolution" in sent[0].text and "Your plan" in sent[1].text
    assert (await _user(harness, ANN)).stage == Stage.PLAN_REVIEW


async def test_adjust_revises_the_plan_with_the_users_words(harness: Harness) -> None:
    """Adjust asks what to change; the next text produces a new plan version built from that request."""
    plan = (await _to_plan(harness))[-1]
    prompt = (await harness.press(ANN, plan, "✏️ Adjust"))[0]
    assert "What would you like to change" in prompt.text
    revised = (await harness.say(ANN, "I can only train on weekends"))[0]
    assert "version 2" in revised.text
    assert "The user asks to change: I can only train on weekends" in harness.gemini.requests[-1].last_user_text
    async with harness.services.db.session() as session:
        statuses = [p.status for p in (await session.scalars(select(Plan).order_by(Plan.id))).all()]
    assert statuses == ["superseded", "draft"]


async def test_old_plan_buttons_say_they_expired(harness: Harness) -> None:
    """Accepting a superseded plan changes nothing and says the plan is no longer current."""
    plan = (await _to_plan(harness))[-1]
    accept = next(d for lbl, d in plan.buttons() if "Accept" in lbl)
    await harness.press(ANN, plan, "🔄 Regenerate")
    harness.bot_api.user_presses(ANN, plan.message_id, accept)
    await harness.bot_api.wait_for(lambda: "no longer current" in harness.bot_api.messages(ANN)[-1].text)
    assert (await _user(harness, ANN)).stage == Stage.PLAN_REVIEW


async def test_llm_failure_keeps_the_message_and_offers_try_again(harness: Harness) -> None:
    """When Gemini is down the user's goal is stored, the reply says so, and Try again finishes the turn."""
    await harness.say(ANN, "/start", expect=2)
    harness.gemini.fail_always = Fault.status(503)
    error = (await harness.say(ANN, "Finish my thesis"))[0]
    assert "Try again" in error.text
    async with harness.services.db.session() as session:
        turns = (await session.scalars(select(Turn).where(Turn.role == "user"))).all()
        goals = (await session.scalars(select(Goal))).all()
    assert [t.text for t in turns] == ["Finish my thesis"] and not turns[0].answered
    assert [g.text for g in goals] == ["Finish my thesis"]
    harness.gemini.fail_always = None
    question = (await harness.press(ANN, error, "Try again"))[0]
    assert question.buttons() and question.buttons()[0][0].startswith("Skip")


async def test_restart_mid_conversation_resumes_where_the_user_was(bot_api, gemini, sqlite_url) -> None:
    """A new Application on the same database continues the clarification and honours old buttons."""
    settings = make_settings(bot_api, gemini, sqlite_url)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    await h.say(ANN, "/start", expect=2)
    question = (await h.say(ANN, "Save 5000 euros"))[0]
    await stop_bot(app)

    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        second = (await h.say(ANN, "I save 200 a month now"))[0]
        assert second.buttons(), "still clarifying after the restart"
        sent = await h.press(ANN, question, "Skip", expect=2)
        assert "Your plan" in sent[1].text
    finally:
        await stop_bot(app)


async def test_two_users_interleaved_keep_separate_conversations(harness: Harness) -> None:
    """Two users talking at once each get their own questions and plans, in their own chats."""
    harness.bot_api.user_sends(ANN, "/start")
    harness.bot_api.user_sends(BOB, "/start")
    await harness.bot_api.wait_messages(ANN, 2)
    await harness.bot_api.wait_messages(BOB, 2)
    harness.bot_api.user_sends(ANN, "Get fit")
    harness.bot_api.user_sends(BOB, "Learn Spanish")
    await harness.bot_api.wait_messages(ANN, 3)
    await harness.bot_api.wait_messages(BOB, 3)
    async with harness.services.db.session() as session:
        goals = {g.user_id: g.text for g in (await session.scalars(select(Goal))).all()}
    ann, bob = await _user(harness, ANN), await _user(harness, BOB)
    assert goals == {ann.id: "Get fit", bob.id: "Learn Spanish"}
    assert ann.thread_id != bob.thread_id


async def test_a_slow_llm_call_does_not_delay_another_user(harness: Harness) -> None:
    """While Ann's Gemini call hangs, Bob's turn is answered."""
    harness.gemini.responder = lambda req: Fault.hang(6.0) if "slow goal" in req.last_user_text else None
    harness.bot_api.user_sends(ANN, "a slow goal")
    harness.bot_api.user_sends(BOB, "a quick goal")
    await harness.bot_api.wait_messages(BOB, 1, timeout=5.5)
    assert harness.bot_api.messages(ANN) == [], "Bob was answered while Ann's call still hung"
    await harness.bot_api.wait_messages(ANN, 1, timeout=15)


async def test_one_users_messages_are_answered_in_order(harness: Harness) -> None:
    """Three quick messages from one user: the first answered, the two that waited meanwhile answered together
    in one reply that read them in order (and nothing answered out of order)."""
    harness.gemini.responder = lambda req: Fault.hang(0.4) if "first" in req.last_user_text else None
    await harness.say(ANN, "/start", expect=2)
    harness.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await harness.say(ANN, "Read 12 books this year", expect=2)
    plan = harness.bot_api.messages(ANN)[-1]
    await harness.press(ANN, plan, "✅ Accept")
    for word in ("first", "second", "third"):
        harness.bot_api.user_sends(ANN, f"{word} message")
    await harness.bot_api.wait_for(lambda: harness.bot_api.messages(ANN)[-1].text == "Coach: third message",
                                   timeout=10)
    await harness.settled()
    replies = [m.text.split()[1] for m in harness.bot_api.messages(ANN) if m.text.startswith("Coach: ")]
    assert replies in (["first", "third"], ["third"]), replies  # the first alone unless it waited too (webhook)
    last = harness.gemini.requests[-1]
    assert last.user_texts[-2:] == ["second message", "third message"]


async def test_non_text_messages_get_a_friendly_explanation(harness: Harness) -> None:
    """Stickers, locations, contacts, documents, dice, polls, and a photo or voice note whose file is not an image or
    sound, get a short note of what Rein understands."""
    api = harness.bot_api
    samples = ({"sticker": sticker()}, {"photo": photo()}, {"voice": voice()}, {"location": location(52.5, 13.4)},
               {"contact": contact()}, {"document": document()}, {"dice": dice()}, {"poll": poll()})
    for fields in samples:
        before = len(api.messages(ANN))
        api.user_sends_message(ANN, fields)
        await api.wait_messages(ANN, before + 1)
        assert "I understand text, voice notes, audio files" in api.messages(ANN)[-1].text


async def test_groups_are_told_once_that_rein_coaches_privately(harness: Harness) -> None:
    """In a group the bot explains once that it coaches one-to-one, then stays quiet."""
    group_id = -500
    harness.bot_api.user_sends(ANN, "hello bot", chat_id=group_id, chat_type="group")
    await harness.bot_api.wait_messages(group_id, 1)
    harness.bot_api.user_sends(BOB, "/start", chat_id=group_id, chat_type="group")
    await harness.settled()
    assert len(harness.bot_api.messages(group_id)) == 1
    assert "one-to-one" in harness.bot_api.messages(group_id)[0].text


async def test_export_sends_every_stored_thing_as_json(harness: Harness) -> None:
    """/export sends a JSON document with the user's goal, plan and turns."""
    await _to_plan(harness)
    sent = (await harness.say(ANN, "/export"))[0]
    assert sent.kind == "document" and (sent.filename or "").endswith(".json")
    data = json.loads(sent.file or b"")
    assert data["goals"][0]["text"] == "I want to get fit"
    assert data["plans"] and data["milestones"] and len(data["turns"]) >= 8
    assert "telegram_id" in data["user"]


async def test_delete_erases_everything_after_confirmation(harness: Harness) -> None:
    """/delete asks first; only the owner's confirmation erases the data."""
    await _to_plan(harness)
    ask = (await harness.say(ANN, "/delete"))[0]
    data = next(d for label, d in ask.buttons() if label.startswith("Yes"))
    harness.bot_api.user_sends(BOB, "/start")
    await harness.bot_api.wait_messages(BOB, 2)
    harness.bot_api.user_presses(BOB, ask.message_id, data, chat_id=BOB)
    await harness.bot_api.wait_messages(BOB, 3)
    assert "expired" in harness.bot_api.messages(BOB)[-1].text
    assert (await _user(harness, ANN)).id is not None

    done = (await harness.press(ANN, ask, "Yes"))[0]
    assert "deleted" in done.text
    async with harness.services.db.session() as session:
        assert (await session.scalars(select(User).where(User.telegram_id == ANN))).first() is None
        assert (await session.scalars(select(Turn))).all() == [] or all(
            t.user_id != ANN for t in (await session.scalars(select(Turn))).all()
        )
        assert (await session.scalars(select(Goal))).all() == []


async def test_new_goal_asks_before_replacing_the_active_one(harness: Harness) -> None:
    """/goal with an active goal asks first; "Keep current" keeps it, "Yes" starts over."""
    plan = (await _to_plan(harness))[-1]
    await harness.press(ANN, plan, "✅ Accept")
    ask = (await harness.say(ANN, "/goal"))[0]
    assert "I want to get fit" in ask.text
    kept = (await harness.press(ANN, ask, "Keep"))[0]
    assert "keeping" in kept.text
    ask = (await harness.say(ANN, "/goal"))[0]
    fresh = (await harness.press(ANN, ask, "Yes"))[0]
    assert "What do you want to achieve?" in fresh.text
    assert (await _user(harness, ANN)).stage == Stage.NEW


async def test_cancel_leaves_the_step_and_restores_the_previous_goal(harness: Harness) -> None:
    """/cancel during a new goal's clarification returns to the previous accepted plan."""
    plan = (await _to_plan(harness))[-1]
    await harness.press(ANN, plan, "✅ Accept")
    ask = (await harness.say(ANN, "/goal"))[0]
    await harness.press(ANN, ask, "Yes")
    await harness.say(ANN, "Learn the piano")
    cancelled = (await harness.say(ANN, "/cancel"))[0]
    assert "previous goal" in cancelled.text
    user = await _user(harness, ANN)
    assert user.stage == Stage.COACHING
    shown = await harness.say(ANN, "/plan", expect=2)
    assert "accepted" in shown[1].text


async def test_long_and_html_like_replies_are_split_and_escaped(harness: Harness) -> None:
    """A 9000-character coaching reply with HTML-looking text arrives as valid messages below 4096 chars."""
    harness.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await harness.say(ANN, "/start", expect=2)
    await harness.say(ANN, "Write a novel", expect=2)
    await harness.press(ANN, harness.bot_api.messages(ANN)[-1], "✅ Accept")
    long_text = "\n\n".join(f"Paragraph {i} <b>not a tag</b> & <script>x</script> " + "word " * 60
                            for i in range(30))
    harness.gemini.queue(long_text)
    before = len(harness.bot_api.messages(ANN))
    harness.bot_api.user_sends(ANN, "Give me everything")
    await harness.bot_api.wait_for(lambda: len(harness.bot_api.messages(ANN)) >= before + 3)
    await harness.settled()
    parts = harness.bot_api.messages(ANN)[before:]
    assert all(len(p.text) <= 4096 for p in parts)
    assert "<script>x</script>" in "".join(p.text for p in parts)


async def test_unknown_commands_get_a_pointer_to_help(harness: Harness) -> None:
    """An unknown command is answered with a pointer to /help."""
    sent = (await harness.say(ANN, "/frobnicate now"))[0]
    assert "/help" in sent.text


async def test_typing_indicator_is_shown_while_the_coach_thinks(harness: Harness) -> None:
    """While Gemini takes longer than the typing delay the user sees the bot at work: "typing", or the step's
    status line in a draft where drafts are shown; an instant answer needs no typing."""
    harness.services.settings.typing_delay_s = 1.5  # wide margins: this machine may be busy with other work
    await harness.say(ANN, "/start", expect=2)
    await harness.say(ANN, "Get better sleep")
    assert "typing" not in harness.bot_api.chat_actions(ANN)
    drafts = len(harness.bot_api.drafts(ANN))
    harness.gemini.queue(Fault.hang(3.0))
    await harness.say(ANN, "About 6 hours a night now")
    status = [d for d in harness.bot_api.drafts(ANN)[drafts:] if d]
    assert "typing" in harness.bot_api.chat_actions(ANN) or status, "nothing showed that the coach was at work"
