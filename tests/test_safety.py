"""Crisis care: the multilingual screen (phrase table both ways), care without Gemini, the model's second layer,
the check-in pause with its resume button, the gentle coach, the trace's safety flag, and quiet logs."""

from __future__ import annotations

import csv
import logging
import re
import time
from datetime import timedelta
from pathlib import Path

import opik
import pytest
from sqlalchemy import select

from pipeline import care_texts, crisis_lines, i18n, prompts, safety
from pipeline.care import care_reply
from storage.models import CareEvent, CheckinPrefs, CheckinSchedule, Goal, Turn, User, utcnow
from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.fakes import Fault

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "crisis_phrases.tsv"
ANN = 5001
CRISIS = "Honestly I don't see the point of anything anymore. I want to end my life."


def phrase_table() -> list[dict[str, str]]:
    """The reviewed phrase table (comment lines skipped)."""
    lines = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def screen_figures() -> dict[str, int]:
    """The screen's confusion counts over the phrase table."""
    rows = phrase_table()
    hits = [(row["truth"], safety.screen(row["text"]) is not None) for row in rows]
    return {
        "phrases": len(rows),
        "risk": sum(truth == "risk" for truth, _ in hits),
        "safe": sum(truth == "safe" for truth, _ in hits),
        "false_negatives": sum(truth == "risk" and not hit for truth, hit in hits),
        "false_positives": sum(truth == "safe" and hit for truth, hit in hits),
    }


# ----- the screen -------------------------------------------------------------------------------------------


def test_phrase_table_is_big_and_goes_both_ways() -> None:
    """At least 60 phrases in at least 5 languages, each of those with risks and figures of speech."""
    rows = phrase_table()
    assert len(rows) >= 60
    both = {lang for lang in {r["lang"] for r in rows}
            if {r["truth"] for r in rows if r["lang"] == lang} == {"risk", "safe"}}
    assert len(both) >= 5 and set(safety.languages()) <= {r["lang"] for r in rows}


@pytest.mark.parametrize("row", phrase_table(), ids=lambda r: f"{r['lang']}-{r['truth']}-{r['text'][:30]}")
def test_screen_does_what_the_table_says(row: dict[str, str]) -> None:
    """Each reviewed phrase is caught or let through exactly as the table records."""
    assert (safety.screen(row["text"]) is not None) == (row["screen"] == "hit")


def test_the_figures_in_docs_are_the_measured_ones() -> None:
    """docs/SAFETY.md states the screen's false negatives and false positives on the table as measured now."""
    figures = screen_figures()
    doc = (ROOT / "docs" / "SAFETY.md").read_text(encoding="utf-8")
    stated = re.search(r"(\d+) phrases \((\d+) risks, (\d+) safe\): (\d+) false negatives, (\d+) false positives",
                       doc)
    assert stated is not None, "docs/SAFETY.md lost its figures line"
    assert [int(g) for g in stated.groups()] == [figures["phrases"], figures["risk"], figures["safe"],
                                                  figures["false_negatives"], figures["false_positives"]]


def test_the_issue_figures_of_speech_pass_and_its_crisis_is_caught() -> None:
    """The issue's own examples: three figures of speech pass; the crisis message is caught as suicide risk."""
    for text in ("this plan is killing me", "I'm dying to start", "the deadline is murder"):
        assert safety.screen(text) is None
    hit = safety.screen(CRISIS)
    assert hit is not None and hit.category == "suicide" and hit.language == "en"


def test_screen_reads_accents_capitals_and_odd_apostrophes() -> None:
    """Typed without accents, in capitals, with a curly apostrophe or Turkish dotted capitals, a risk is still seen."""
    assert safety.screen("NAO QUERO MAIS VIVER") is not None
    assert safety.screen("I DON’T WANT TO LIVE ANYMORE") is not None
    assert safety.screen("İntihar etmeyi düşünüyorum") is not None
    assert safety.screen("x" * 12_000 + " I want to kill myself") is None  # beyond what the screen reads


# ----- what the reply says ----------------------------------------------------------------------------------


def test_lines_follow_the_time_zone_and_unknown_countries_get_the_directory() -> None:
    """New York gives 988 and 911, London Samaritans, Berlin TelefonSeelsorge and 112; Tokyo only the directory."""
    us = care_reply("suicide", "en", "America/New_York", paused=False).text
    assert "988" in us and "911" in us and "findahelpline.com" in us and "not a crisis service" in us
    assert "116 123" in care_reply("suicide", "en", "Europe/London", paused=False).text
    de = care_reply("suicide", "de", "Europe/Berlin", paused=False).text
    assert "0800 111 0 111" in de and "112" in de and "kein Krisendienst" in de
    tokyo = care_reply("suicide", "en", "Asia/Tokyo", paused=False).text
    assert "findahelpline.com" in tokyo and "local emergency number" in tokyo
    assert crisis_lines.country_of("US/Eastern") == "US" and crisis_lines.country_of(None) is None


def test_care_texts_exist_in_every_catalog_language() -> None:
    """Every care text comes from the message catalog, translated in each language with the English placeholders."""
    english = [*care_texts.HEARD.values(), care_texts.NOT_A_SERVICE, care_texts.EMERGENCY_NUMBER,
               care_texts.EMERGENCY_LOCAL, care_texts.DIRECTORY, care_texts.CLOSING, care_texts.PAUSED,
               care_texts.RESUME]
    assert set(i18n.LANGUAGES) >= {"en", "es", "pt_BR", "de", "fr", "it", "ru", "uk", "tr", "ar"}
    for language in i18n.LANGUAGES:
        if language == "en":
            continue
        catalog = i18n.translations(language)
        for text in english:
            translated = catalog.gettext(text)
            assert translated != text, f"{language} lacks {text[:40]!r}"
            assert re.findall(r"{\w+}", translated) == re.findall(r"{\w+}", text)
    assert care_texts.catalog_code("pt-br") == "pt_BR" and care_texts.catalog_code("zh-hans") == "en"


def test_medical_emergencies_lead_with_the_emergency_number() -> None:
    """For a medical emergency the emergency number comes right after the first line."""
    reply = care_reply("medical", "en", "America/Chicago", paused=False)
    assert "911" in reply.paras[1].text


# ----- through the bot --------------------------------------------------------------------------------------


async def _user(h: Harness, telegram_id: int = ANN) -> User:
    async with h.services.db.session() as session:
        user = (await session.scalars(select(User).where(User.telegram_id == telegram_id))).one()
    return user


async def test_crisis_gets_care_within_seconds_with_gemini_down(bot_api, gemini, database_url) -> None:
    """With Gemini failing every call, the crisis text is answered in under 10 s by the fixed care reply (988
    and 911 for a New York user), without a single Gemini call; nothing is lost and no goal is made of it."""
    # (no typing indicator: under load it could start, and be cut off, mid-turn; it is not what this pins)
    app = await start_bot(make_settings(bot_api, gemini, database_url, safety_classifier=True, typing_delay_s=30))
    h = Harness(app, bot_api, gemini)
    try:
        await h.say(ANN, "/start", expect=2)
        await h.say(ANN, "/timezone America/New_York")
        gemini.fail_always = Fault.status(503)
        before = len(gemini.requests)
        started = time.monotonic()
        care = (await h.say(ANN, CRISIS, timeout=10))[0]
        elapsed = time.monotonic() - started
        assert elapsed < 10
        assert "not a crisis service" in care.text and "988" in care.text and "911" in care.text
        assert "findahelpline.com" in care.text
        assert len(gemini.requests) == before, "care must not wait for the model"
        async with h.services.db.session() as session:
            kinds = [(t.role, t.kind) for t in (await session.scalars(select(Turn).order_by(Turn.id))).all()]
            events = (await session.scalars(select(CareEvent))).all()
            goals = (await session.scalars(select(Goal))).all()
        assert ("user", "crisis") in kinds and ("coach", "care") in kinds
        assert [(e.layer, e.category, e.language) for e in events] == [("screen", "suicide", "en")]
        assert goals == []
        assert (await _user(h)).care_until is not None
    finally:
        await stop_bot(app)


async def test_care_is_in_the_language_of_the_message(harness: Harness) -> None:
    """A Spanish crisis text gets the Spanish care reply, whatever the client's language."""
    await harness.say(ANN, "/start", expect=2)
    care = (await harness.say(ANN, "ya no quiero vivir"))[0]
    assert "no un servicio de crisis" in care.text and "findahelpline.com" in care.text


async def test_care_pauses_checkins_for_a_day_and_offers_to_resume(harness: Harness) -> None:
    """After care the user's check-ins wait 24 hours; the resume button turns them back on at once."""
    await harness.say(ANN, "/start", expect=2)
    await harness.say(ANN, "/timezone Europe/Berlin")
    await harness.say(ANN, "/checkin 07:30")
    care = (await harness.say(ANN, "ich will nicht mehr leben"))[0]
    assert [label for label, _ in care.buttons()] == ["Check-ins fortsetzen"]
    async with harness.services.db.session() as session:
        prefs = (await session.scalars(select(CheckinPrefs))).one()
        due = [s.next_due_at for s in (await session.scalars(select(CheckinSchedule))).all() if s.next_due_at]
    assert prefs.paused_until is not None and prefs.pause_reason == "care"
    assert abs(prefs.paused_until - (utcnow() + timedelta(hours=24))) < timedelta(minutes=1)
    assert due and min(due) >= prefs.paused_until
    resumed = (await harness.press(ANN, care, "Check-ins fortsetzen"))[0]
    assert "back on" in resumed.text
    async with harness.services.db.session() as session:
        assert (await session.scalars(select(CheckinPrefs))).one().paused_until is None


async def _coaching(h: Harness) -> None:
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(ANN, "/start", expect=2)
    await h.say(ANN, "Sleep eight hours a night", expect=2)
    await h.press(ANN, h.bot_api.messages(ANN)[-1], "✅ Accept")


async def test_after_care_the_coach_is_gentle_and_figures_of_speech_still_get_coaching(harness: Harness) -> None:
    """A figure of speech gets a normal coaching reply; after care the coach's instruction asks for gentleness."""
    await _coaching(harness)
    reply = (await harness.say(ANN, "this plan is killing me"))[0]
    assert reply.text.startswith("Coach:")
    assert prompts.GENTLE.text not in harness.gemini.requests[-1].system
    await harness.say(ANN, "I want to kill myself")
    await harness.say(ANN, "ok. I slept a bit")
    assert prompts.GENTLE.text in harness.gemini.requests[-1].system


async def test_the_models_judgement_gives_care_when_the_screen_misses(bot_api, gemini, database_url) -> None:
    """A risk only the model sees (layer 2) replaces the coaching reply with care; that reply is never stored."""
    app = await start_bot(make_settings(bot_api, gemini, database_url, safety_classifier=True))
    h = Harness(app, bot_api, gemini)
    text = "tonight is the night I finally go through with it"

    flagged = {"on": False}

    def answers(request):  # by prompt, not by order: the classification runs beside each step
        if request.system == prompts.answering(prompts.CLARIFY.text):
            return {"enough_information": True, "missing": [], "question": ""}
        if request.system == prompts.RISK.text and flagged["on"] and text in request.last_user_text:
            return {"category": "suicide", "reason": "A plan to act tonight."}
        return None

    gemini.responder = answers
    try:
        await h.say(ANN, "/start", expect=2)
        await h.say(ANN, "Sleep eight hours a night", expect=2)
        await h.press(ANN, bot_api.messages(ANN)[-1], "✅ Accept")
        ordinary = (await h.say(ANN, "I slept 7 hours"))[0]
        assert ordinary.text.startswith("Coach:")
        assert any(r.system == prompts.RISK.text for r in gemini.requests), "layer 2 runs beside the reply"
        flagged["on"] = True
        care = (await h.say(ANN, text))[0]
        assert "not a crisis service" in care.text
        await h.settled()
        assert bot_api.messages(ANN)[-1].message_id == care.message_id, "the coaching reply was withheld"
        async with h.services.db.session() as session:
            coach = (await session.scalars(select(Turn).where(Turn.role == "coach").order_by(Turn.id))).all()
            events = (await session.scalars(select(CareEvent))).all()
        assert coach[-1].kind == "care" and all(f"Coach: {text}" not in t.text for t in coach)
        assert [(e.layer, e.category) for e in events] == [("model", "suicide")]
    finally:
        await stop_bot(app)


async def test_care_trace_has_the_safety_flag_and_tags(bot_api, gemini, sqlite_url, opik_stub) -> None:
    """The care trace carries the `safety_flag` feedback score and the tags an operator filters on."""
    settings = make_settings(bot_api, gemini, sqlite_url, opik_track_disable=False, opik_url_override=opik_stub.url,
                             opik_flush_timeout_s=3)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        with opik.record_traces_locally() as recorded:
            await h.say(ANN, "/start", expect=2)
            await h.say(ANN, "I want to kill myself")
            trees = recorded.trace_trees
        trace = next(t for t in trees if t.name == "safety.care")
        assert {"safety", "safety:suicide", "safety:screen"} <= set(trace.tags or [])
        flags = [s for s in trace.feedback_scores or [] if s.name == "safety_flag"]
        assert [(s.value, s.reason) for s in flags] == [(1.0, "screen:suicide")]
        assert "kill myself" not in str(trace.input)
        async with h.services.db.session() as session:
            event = (await session.scalars(select(CareEvent))).one()
        assert event.trace_id == trace.id
    finally:
        await stop_bot(app)


async def test_no_message_text_reaches_the_logs(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Care is logged by layer and category only: the words of the message appear in no log record."""
    await harness.say(ANN, "/start", expect=2)
    with caplog.at_level(logging.INFO):  # the level Rein runs at (LOG_LEVEL)
        await harness.say(ANN, "I want to kill myself tonight with pills")
        await harness.settled()
    assert any("safety.care" in r.getMessage() for r in caplog.records)
    assert not any("kill myself" in r.getMessage() or "pills" in r.getMessage() for r in caplog.records)


async def test_a_crisis_sent_as_a_rating_reason_gets_care_and_is_not_a_reason(harness: Harness) -> None:
    """When Rein waits for why a reply was rated low, a crisis text gets care and is not stored as the reason."""
    await _coaching(harness)
    reply = (await harness.say(ANN, "I slept 6 hours"))[0]
    star = next(data for label, data in reply.buttons() if label == "☆1")
    before = len(harness.bot_api.messages(ANN))
    harness.bot_api.user_presses(ANN, reply.message_id, star)
    await harness.bot_api.wait_messages(ANN, before + 1)
    care = (await harness.say(ANN, "I want to end my life"))[0]
    assert "not a crisis service" in care.text
    from storage.models import Rating
    async with harness.services.db.session() as session:
        rating = (await session.scalars(select(Rating))).one()
    assert rating.reason is None and (await _user(harness)).pending_rating_id is None


async def test_a_crisis_written_as_a_checkin_note_gets_care_and_is_not_a_note(bot_api, gemini, sqlite_url) -> None:
    """After a Missed tap Rein waits for a note; a crisis text there gets care, is not stored as the note, and
    the check-ins pause 24 hours from the check-ins' own clock."""
    from storage.models import ProgressEntry
    from tests.test_checkins import accept_plan, checkins_in, clock_at, local, set_up, tick

    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False))
    h = Harness(app, bot_api, gemini)
    try:
        clock = clock_at(h, local("Europe/Berlin", 2026, 11, 28, 9, 0))
        await accept_plan(h, ANN)
        await set_up(h, ANN, "Europe/Berlin", "08:00")
        await tick(h, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
        [message] = checkins_in(h, ANN)
        await h.press(ANN, message, "❌ Missed")
        care = (await h.say(ANN, "I missed it because I want to die"))[0]
        assert "not a crisis service" in care.text and "0800 111 0 111" in care.text
        async with h.services.db.session() as session:
            entry = (await session.scalars(select(ProgressEntry))).one()
            prefs = (await session.scalars(select(CheckinPrefs))).one()
        assert entry.note is None and prefs.awaiting is None
        assert prefs.paused_until == clock.now + timedelta(hours=24)
    finally:
        await stop_bot(app)
