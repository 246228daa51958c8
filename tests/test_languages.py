"""Rein in the user's language: the whole flow for a German and an Arabic user without one English catalog text,
/language switching (buttons that survive a restart and refuse forged data), the per-language command menu and
profile texts, and prompts that name the user's language."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po
from sqlalchemy import select

from bot import texts
from bot.language import telegram_code
from pipeline import i18n
from pipeline.i18n import _, use_locale
from storage.models import User
from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.test_checkins import clock_at, local, tick

ROOT = Path(__file__).resolve().parents[1]
HANS, LAYLA, ANN = 7001, 7002, 7003


def english_fragments() -> set[str]:
    """The English pieces of every catalog entry (between placeholders) long enough to mean something: two words
    or more, or one word of five letters or more; names and commands are no entries."""
    with (ROOT / "pipeline" / "locales" / "rein.pot").open("rb") as f:
        template = read_po(f)
    found: set[str] = set()
    for message in template:
        if not message.id:
            continue
        for text in message.id if isinstance(message.id, (list, tuple)) else [message.id]:
            for piece in re.split(r"{\w*}", text):
                piece = re.sub(r"^[^A-Za-z/]+|[^A-Za-z]+$", "", piece)  # no punctuation or emoji around it
                words = re.findall(r"[A-Za-z]+", piece)
                if len(words) >= 2 or (len(words) == 1 and len(words[0]) >= 5 and piece == words[0]):
                    found.add(piece)
    return found


def everything_sent(h: Harness, chat: int) -> list[str]:
    """Every text a user was shown: messages, captions, button labels and button-press answers."""
    shown: list[str] = []
    for message in h.bot_api.messages(chat):
        shown += [t for t in (message.text, message.caption) if t]
        shown += [label for label, _data in message.buttons()]
    shown += [str(answer["text"]) for answer in h.bot_api.callback_answers.values() if answer.get("text")]
    return shown


def press(h: Harness, chat: int, message: Any, code: str) -> str:
    """Press the button whose callback data starts with `code` (labels are in the user's language)."""
    data = next(d for _label, d in message.buttons() if d.startswith(code))
    return h.bot_api.user_presses(chat, message.message_id, data)


async def pressed(h: Harness, chat: int, message: Any, code: str, expect: int = 1) -> list[Any]:
    before = len(h.bot_api.messages(chat))
    press(h, chat, message, code)
    await h.bot_api.wait_messages(chat, before + expect)
    return h.bot_api.messages(chat)[before:]


def coach_in(reply: str) -> Any:
    """The model's answers: structured ones from the fake's samples (the goal is clear at once), texts in the
    user's language, as Gemini writes them when the prompt names it."""

    def answer(request: Any) -> object | None:
        if request.schema and "enough_information" in json.dumps(request.schema):
            return {"enough_information": True, "missing": [], "question": ""}
        return reply if request.schema is None else None

    return answer


@pytest.fixture
async def ck(bot_api, gemini, sqlite_url) -> AsyncIterator[Harness]:
    """A running bot whose check-ins run when the test says."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


@pytest.mark.parametrize(("chat", "client", "zone", "goal", "coach", "language", "greeting"), [
    (HANS, "de", "Europe/Berlin", "Ich möchte im Juni 10 km laufen", "Super, weiter so!", "German",
     "Hallo, ich bin Rein"),
    (LAYLA, "ar", "Asia/Riyadh", "أريد أن أركض 10 كيلومترات في يونيو", "أحسنت، واصل!", "Arabic", "مرحبًا، أنا Rein"),
])
async def test_a_whole_flow_in_the_users_language_has_no_english_catalog_text(
        ck: Harness, chat: int, client: str, zone: str, goal: str, coach: str, language: str, greeting: str) -> None:
    """start → plan → check-in → /progress → /help → /export: every text, button and answer is in the language of
    the user's Telegram client; the prompts name it; the export carries it."""
    ck.gemini.responder = coach_in(coach)
    clock = clock_at(ck, local(zone, 2026, 11, 28, 9, 0))
    welcome, ask = await ck.say(chat, "/start", expect=2, language_code=client)
    assert welcome.text.startswith(greeting)
    resolution, plan = await ck.say(chat, goal, expect=2, language_code=client)
    accepted = (await pressed(ck, chat, plan, "pa:"))[0]
    ask_zone = (await pressed(ck, chat, accepted, "ks:1"))[0]
    zone_set, scheduled = await ck.say(chat, zone, expect=2, language_code=client)
    assert (await tick(ck, clock, local(zone, 2026, 11, 29, 8, 0))).sent == 1
    checkin = ck.bot_api.messages(chat)[-1]
    assert checkin.text == coach and [d[:3] for _label, d in checkin.buttons()][:4] == ["kd:", "kp:", "km:", "kz:"]
    answered = await pressed(ck, chat, checkin, "kd:")
    press(ck, chat, answered[0], "r:")  # a star: the "thanks" is in the user's language too
    await ck.settled()
    progress = (await ck.say(chat, "/progress", language_code=client))[0]
    help_text = (await ck.say(chat, "/help", language_code=client))[0]
    export = (await ck.say(chat, "/export", language_code=client))[0]
    await ck.settled()

    shown = everything_sent(ck, chat)
    english = [(fragment, text) for text in shown for fragment in english_fragments() if fragment in text]
    assert not english, f"English catalog text shown to a {language} user: {english[:5]}"
    with use_locale(client):
        assert _(texts.HELP_TITLE) in help_text.text and "/language" in help_text.text
        assert _("📈 Your progress") in (progress.caption or "")
        assert _("Plan accepted. 🎉 From now on, tell me how it's going, ask for advice, or report what you did, "
                 "and I'll coach you with your plan in mind. /plan shows it any time.") in accepted.text
    systems = [r.system for r in ck.gemini.requests if r.schema is None or "enough_information" in json.dumps(r.schema)]
    assert systems and all(language in s for s in systems), "every prompt that writes to the user names the language"
    exported = json.loads(export.file)
    assert exported["user"]["language"] == client and exported["user"]["language_code"] == client
    del welcome, ask, resolution, ask_zone, zone_set, scheduled


async def test_language_switches_everything_and_its_buttons_survive_a_restart(bot_api, gemini, sqlite_url) -> None:
    """/language shows each language named in itself; a press switches replies, /help and this chat's command
    menu; after a restart an old menu still works, and forged data gets "expired" in the user's language."""
    settings = make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        await h.say(ANN, "/start", expect=2)
        menu = (await h.say(ANN, "/language"))[0]
        labels = [label for label, _data in menu.buttons()]
        assert labels == list(i18n.LANGUAGES.values()) and "Deutsch" in labels and "العربية" in labels
        assert "English" in menu.text
        switched = (await pressed(h, ANN, menu, "lg:3"))[0]
        assert switched.text.startswith("Erledigt: Ab jetzt schreibe ich dir auf Deutsch")
        assert (await h.say(ANN, "/help"))[0].text.startswith("Rein, dein Ziel-Coach")
        assert (await h.say(ANN, "/plan"))[0].text.startswith("Du hast noch keinen Plan.")
        with use_locale("de"):
            german = [{"command": name, "description": description} for name, description in texts.commands()]
        assert bot_api.commands_for(ANN, "en") == german, "this chat's menu follows the setting"
        menu = (await h.say(ANN, "/language"))[0]
        assert menu.text.startswith("Ich schreibe dir auf Deutsch.")
    finally:
        await stop_bot(app)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini, created_before=bot_api.updates_created)
    try:
        spanish = (await pressed(h, ANN, menu, "lg:1"))[0]
        assert spanish.text.startswith("Hecho: a partir de ahora te escribo en Español")
        bot_api.user_presses(ANN, menu.message_id, "lg:42")
        forged = (await bot_api.wait_messages(ANN, len(bot_api.messages(ANN)) + 1))[-1]
        assert forged.text == "Este botón ha caducado. /language muestra las opciones."
        query = bot_api.user_presses(ANN, menu.message_id, "lg:x")
        await h.settled()
        assert bot_api.callback_answers[query]["text"] == "Este botón ha caducado."
        async with h.services.db.session() as session:
            user = (await session.scalars(select(User).where(User.telegram_id == ANN))).one()
        assert (user.language, user.language_code) == ("es", "en")
    finally:
        await stop_bot(app)


async def test_first_contact_takes_the_nearest_language_and_keeps_the_setting(harness: Harness) -> None:
    """A Portuguese (Portugal) client gets Brazilian Portuguese, a Chinese one English; once stored, the setting
    stays when the client's language changes."""
    await harness.say(7010, "/start", expect=2, language_code="pt-PT")
    await harness.say(7011, "/start", expect=2, language_code="zh-hans")
    assert harness.bot_api.messages(7010)[0].text.startswith("Oi, eu sou o Rein")
    assert harness.bot_api.messages(7011)[0].text.startswith("Hi, I'm Rein")
    again = (await harness.say(7010, "/help", language_code="fr"))[0]
    assert again.text.startswith("Rein, seu coach de metas")


async def test_the_command_menu_and_descriptions_are_published_in_every_language(harness: Harness) -> None:
    """At start-up each language gets its command menu, description and short description; English is the one
    every other client sees."""
    api = harness.bot_api
    for code in i18n.LANGUAGES:
        with use_locale(code):
            menu = [{"command": name, "description": description} for name, description in texts.commands()]
            description, short = _(texts.DESCRIPTION), _(texts.SHORT_DESCRIPTION)
        language_code = "" if code == "en" else telegram_code(code)
        assert api.commands_for(9999, language_code) == menu, code
        assert api.description_for(language_code) == description and api.short_description_for(language_code) == short
        assert len(description) <= 512 and len(short) <= 120
    assert api.commands_for(9999, "ja")[0]["description"] == "Start, or see where you are"
    assert api.description_for("de").startswith("Rein ist dein Ziel-Coach")
    assert {c["command"] for c in api.commands_for(9999, "ar")} == {name for name, _d in texts.COMMANDS}


async def test_a_restart_rewrites_no_profile_text_that_is_already_current(bot_api, gemini, sqlite_url) -> None:
    """The second start reads the menu and descriptions of every language and writes none of them again."""
    settings = make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False)
    await stop_bot(await start_bot(settings))
    writes = ("setMyCommands", "setMyDescription", "setMyShortDescription")
    first = {method: len(bot_api.calls_to(method)) for method in writes}
    assert first == dict.fromkeys(writes, len(i18n.LANGUAGES))
    await stop_bot(await start_bot(settings))
    assert {method: len(bot_api.calls_to(method)) for method in writes} == first
    assert len(bot_api.calls_to("getMyDescription")) == 2 * len(i18n.LANGUAGES)


async def test_unasked_texts_follow_the_users_setting_not_the_task(ck: Harness) -> None:
    """With Gemini down, a German user's check-in is the German fallback with German buttons; a quiet session's
    rating prompt is German too, though no update of theirs set the language."""
    from datetime import UTC, datetime, timedelta

    from tests.fakes import Fault

    ck.gemini.responder = coach_in("Super!")
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await ck.say(HANS, "/start", expect=2, language_code="de")
    plan = (await ck.say(HANS, "Ich möchte 10 km laufen", expect=2, language_code="de"))[-1]
    await pressed(ck, HANS, plan, "pa:")
    await ck.say(HANS, "/timezone Berlin", language_code="de")
    await ck.say(HANS, "/checkin 08:00", language_code="de")
    await ck.say(HANS, "Wie fange ich an?", language_code="de")
    ck.gemini.fail_always = Fault.status(503)
    assert (await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))).sent == 1
    checkin = ck.bot_api.messages(HANS)[-1]
    assert checkin.text == "Zeit für deinen Check-in! Wie lief dein Plan seit unserem letzten Gespräch?"
    assert [label for label, _data in checkin.buttons()][:4] == ["✅ Erledigt", "🟡 Teilweise", "❌ Verpasst",
                                                                 "⏰ In 1 Std. erinnern"]
    closed = await ck.services.sessions.close_quiet(quiet_s=60, now=datetime.now(UTC) + timedelta(minutes=5))
    [prompt] = [c.prompt for c in closed if c.prompt is not None]
    assert prompt.text == "Wie war diese Sitzung? Tippe auf einen Stern: Das hilft mir, dich besser zu coachen."
