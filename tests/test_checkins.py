"""Scheduled check-ins through the loopback Bot API, with time controlled by a clock the test sets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from pipeline.checkins.scheduler import CheckinScheduler
from storage.models import CheckinPrefs, CheckinSchedule, CheckinSend, ProgressEntry, Stage, Turn, User
from tests.conftest import Clock, Harness, make_settings, start_bot, stop_bot

ANN = 4001
BOB = 4002


@pytest.fixture
async def ck(bot_api, gemini, sqlite_url) -> AsyncIterator[Harness]:
    """A running bot whose scheduler timer is off: the test runs the passes itself at chosen times."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


def clock_at(h: Harness, when: datetime) -> Clock:
    """Put the check-in service on a hand-moved clock."""
    clock = Clock(when)
    h.services.checkins.core.clock = clock
    return clock


def local(zone: str, *args: int) -> datetime:
    """A local wall time as an aware UTC instant."""
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


async def tick(h: Harness, clock: Clock, when: datetime) -> Any:
    """Move the clock and run one scheduler pass at that time."""
    clock.now = when
    scheduler = h.services.checkins.scheduler
    assert scheduler is not None
    return await scheduler.run_due(when)


async def rows(h: Harness, model: Any, *where: Any) -> list[Any]:
    async with h.services.db.session() as session:
        return list((await session.scalars(select(model).where(*where))).all())


def checkins_in(h: Harness, chat: int) -> list[Any]:
    """The check-in messages (sent with a Snooze button, maybe answered since) the bot sent to a chat."""
    def had_snooze(m: Any) -> bool:
        markups = [m.reply_markup, *(state["reply_markup"] for state in m.history)]
        return any("Snooze" in json.dumps(markup or {}, ensure_ascii=False) for markup in markups)

    return [m for m in h.bot_api.messages(chat) if had_snooze(m)]


async def set_up(h: Harness, user: int, zone: str, when: str) -> None:
    """Set a zone and a check-in by command."""
    assert "Time zone set" in (await h.say(user, f"/timezone {zone}"))[0].text
    assert "I'll check in" in (await h.say(user, f"/checkin {when}"))[0].text


async def accept_plan(h: Harness, user: int) -> Any:
    """Walk a user to an accepted plan; return the message that accepts it."""
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(user, "/start", expect=2)
    await h.say(user, "Run a 10k by June", expect=2)
    return (await h.press(user, h.bot_api.messages(user)[-1], "✅ Accept"))[0]


# ----- setting the schedule -----------------------------------------------------------------------


async def test_accepting_a_plan_asks_when_and_a_preset_button_sets_it_after_the_zone(ck: Harness) -> None:
    """After Accept: "When should I check in?"; a preset asks for the zone first, then confirms both."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 12))
    accepted = await accept_plan(ck, ANN)
    assert "Plan accepted" in accepted.text and "When should I check in?" in accepted.text
    labels = [label for label, _ in accepted.buttons()]
    assert any("08:00" in x for x in labels) and any("20:00" in x for x in labels)
    assert any("Weekdays" in x for x in labels) and any("Custom" in x for x in labels)
    ask = (await ck.press(ANN, accepted, "☀️ Every morning"))[0]
    assert "Which time zone" in ask.text
    zone, done = await ck.say(ANN, "Berlin", expect=2)
    assert "Europe/Berlin" in zone.text and "09:12" in zone.text and "Saturday" in zone.text
    assert "every day at 08:00" in done.text and "Sun 29 Nov, 08:00" in done.text
    [row] = await rows(ck, CheckinSchedule, CheckinSchedule.kind == "checkin")
    assert (row.local_time, row.days) == ("08:00", 127)
    assert row.next_due_at == local("Europe/Berlin", 2026, 11, 29, 8, 0)
    [review] = await rows(ck, CheckinSchedule, CheckinSchedule.kind == "review")
    assert review.days == 1 << 6 and review.local_time == "19:00"
    assert review.next_due_at == local("Europe/Berlin", 2026, 11, 29, 19, 0)
    assert clock.now.tzinfo is not None


async def test_custom_button_takes_a_typed_time_and_days(ck: Harness) -> None:
    """Custom asks for a time; "19:00 mon,wed,fri" sets it (the zone was known already)."""
    clock_at(ck, local("America/New_York", 2026, 11, 28, 10, 0))
    accepted = await accept_plan(ck, ANN)
    await ck.say(ANN, "/timezone America/New_York")
    assert "Send the time" in (await ck.press(ANN, accepted, "✏️ Custom"))[0].text
    reply = (await ck.say(ANN, "19:00 mon,wed,fri"))[0]
    assert "on Mon, Wed, Fri at 19:00" in reply.text and "Mon 30 Nov, 19:00" in reply.text


async def test_checkin_command_sets_days_stops_and_explains_mistakes(ck: Harness) -> None:
    """/checkin HH:MM [days] sets the schedule, bad input is explained, /checkin off removes it."""
    clock_at(ck, local("America/New_York", 2026, 11, 28, 10, 0))
    await ck.say(ANN, "/timezone America/New_York")
    reply = (await ck.say(ANN, "/checkin 07:30"))[0]
    assert "every day at 07:30" in reply.text and "Sun 29 Nov, 07:30" in reply.text
    reply = (await ck.say(ANN, "/checkin 19:00 mon,wed,fri"))[0]
    assert "on Mon, Wed, Fri at 19:00" in reply.text
    [row] = await rows(ck, CheckinSchedule, CheckinSchedule.kind == "checkin")
    assert row.days == 0b10101 and row.next_due_at == local("America/New_York", 2026, 11, 30, 19, 0)
    assert "not a time" in (await ck.say(ANN, "/checkin 25:00"))[0].text
    assert "not a day" in (await ck.say(ANN, "/checkin 08:00 funday"))[0].text
    menu = (await ck.say(ANN, "/checkin"))[0]
    assert "on Mon, Wed, Fri at 19:00" in menu.text and menu.buttons()
    assert "off" in (await ck.say(ANN, "/checkin off"))[0].text
    assert await rows(ck, CheckinSchedule) == []


async def test_zones_from_iana_names_cities_and_a_shared_location(ck: Harness) -> None:
    """Until a zone is known Rein asks; a shared location (offline lookup) or a city name answers it."""
    clock_at(ck, datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    ask = (await ck.say(ANN, "/checkin 07:30"))[0]
    assert "Which time zone" in ask.text
    assert await rows(ck, CheckinSchedule) == [], "nothing is scheduled in an assumed UTC"
    before = len(ck.bot_api.messages(ANN))
    ck.bot_api.user_sends_message(ANN, {"location": ck.bot_api.location(-23.55, -46.63)})
    await ck.bot_api.wait_messages(ANN, before + 2)
    zone, done = ck.bot_api.messages(ANN)[-2:]
    assert "America/Sao_Paulo" in zone.text and "09:00" in zone.text
    assert "every day at 07:30" in done.text
    assert "Europe/Berlin" in (await ck.say(ANN, "/timezone berlin"))[0].text
    assert "America/Sao_Paulo" in (await ck.say(ANN, "/timezone São Paulo"))[0].text
    assert "Asia/Kolkata" in (await ck.say(ANN, "/timezone Asia/Kolkata"))[0].text
    assert "don't know" in (await ck.say(ANN, "/timezone Atlantis"))[0].text
    [user] = await rows(ck, User)
    assert user.timezone == "Asia/Kolkata"
    # A location nobody asked for gets the usual note instead.
    before = len(ck.bot_api.messages(ANN))
    ck.bot_api.user_sends_message(ANN, {"location": ck.bot_api.location(52.5, 13.4)})
    await ck.bot_api.wait_messages(ANN, before + 1)
    assert "I understand text, voice notes" in ck.bot_api.messages(ANN)[-1].text


# ----- the check-in itself ------------------------------------------------------------------------


async def test_a_due_checkin_is_written_by_the_coach_with_answer_buttons_and_ratings(ck: Harness) -> None:
    """At the due time the coach writes the check-in from the plan; Done/Partly/Missed/Snooze and 1–5 below it."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await accept_plan(ck, ANN)
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    stats = await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 7, 59))
    assert stats.sent == 0 and checkins_in(ck, ANN) == []
    stats = await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0, 20))
    assert stats.sent == 1
    [message] = checkins_in(ck, ANN)
    labels = [label for label, _ in message.buttons()]
    assert labels[:4] == ["✅ Done", "🟡 Partly", "❌ Missed", "⏰ Snooze 1 h"]
    assert labels[4:] == ["☆1", "☆2", "☆3", "☆4", "☆5"]
    request = ck.gemini.requests[-1]
    assert "scheduled check-in" in request.system and "This week's actions" in " ".join(request.user_texts)
    assert "This week's actions" not in request.system, "the user's plan is conversation, not instruction"
    assert "Streak: 0" in request.last_user_text
    [turn] = await rows(ck, Turn, Turn.kind == "checkin", Turn.role == "coach")
    assert turn.text == message.text
    [send] = await rows(ck, CheckinSend)
    assert (send.status, send.turn_id, send.due_at) == ("sent", turn.id, local("Europe/Berlin", 2026, 11, 29, 8, 0))
    assert (await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 5))).sent == 0, "never twice"


async def test_a_tap_records_progress_the_coach_answers_and_a_note_can_follow(ck: Harness) -> None:
    """Done stores a progress entry and gets a brief coach answer; the next text becomes its note, and the
    coach's next reply is written with that progress in view."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await accept_plan(ck, ANN)
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
    [message] = checkins_in(ck, ANN)
    answer = (await ck.press(ANN, message, "✅ Done"))[0]
    assert "Coach: My check-in answer: done" in answer.text and "Done recorded" in answer.text
    assert [label for label, _ in answer.buttons()] == ["☆1", "☆2", "☆3", "☆4", "☆5"]
    [answered] = checkins_in(ck, ANN)
    assert [label for label, _ in answered.buttons()] == ["☆1", "☆2", "☆3", "☆4", "☆5"], "answer buttons go"
    note = (await ck.say(ANN, "ran 5 km in the rain"))[0]
    assert "Noted" in note.text
    [entry] = await rows(ck, ProgressEntry)
    assert (entry.status, entry.note, entry.local_date) == ("done", "ran 5 km in the rain", date(2026, 11, 29))
    coach = (await ck.say(ANN, "What should I do tomorrow?"))[0]
    assert coach.text.startswith("Coach"), "after the note, texts go to the coach again"
    assert "2026-11-29: done (ran 5 km in the rain)" in " ".join(ck.gemini.requests[-1].user_texts), \
        "the coach sees progress"


async def test_three_misses_in_a_row_offer_to_adjust_the_plan(ck: Harness) -> None:
    """The third Missed in a row brings an offer to adjust the plan; its button starts the adjustment."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await accept_plan(ck, ANN)
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    for day in (29, 30):
        await tick(ck, clock, local("Europe/Berlin", 2026, 11, day, 8, 0))
        await ck.press(ANN, checkins_in(ck, ANN)[-1], "❌ Missed")
    await tick(ck, clock, local("Europe/Berlin", 2026, 12, 1, 8, 0))
    answer, offer = await ck.press(ANN, checkins_in(ck, ANN)[-1], "❌ Missed", expect=2)
    assert "Missed recorded" in answer.text and "three misses" in offer.text
    prompt = (await ck.press(ANN, offer, "✏️ Adjust my plan"))[0]
    assert "What should change" in prompt.text
    [user] = await rows(ck, User)
    assert user.stage == Stage.ADJUSTING


async def test_snooze_asks_again_in_an_hour(ck: Harness) -> None:
    """Snooze 1 h: the same kind of check-in comes one hour later, once."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
    reply = (await ck.press(ANN, checkins_in(ck, ANN)[-1], "⏰ Snooze"))[0]
    assert "09:00" in reply.text
    assert (await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 59))).sent == 0
    assert (await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 9, 0))).sent == 1
    assert (await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 10, 0))).sent == 0
    assert len(checkins_in(ck, ANN)) == 2


# ----- pause, quiet hours, blocked users ----------------------------------------------------------


async def test_pause_for_days_and_until_resume(ck: Harness) -> None:
    """/pause 2 skips two days of check-ins; /pause stops them until /resume."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    assert "paused for 2 days" in (await ck.say(ANN, "/pause 2"))[0].text
    for day in (29, 30):
        await tick(ck, clock, local("Europe/Berlin", 2026, 11, day, 8, 0))
    assert checkins_in(ck, ANN) == []
    await tick(ck, clock, local("Europe/Berlin", 2026, 12, 1, 8, 0))
    assert len(checkins_in(ck, ANN)) == 1
    assert "paused" in (await ck.say(ANN, "/pause"))[0].text
    for day in (2, 3):
        await tick(ck, clock, local("Europe/Berlin", 2026, 12, day, 8, 0))
    assert len(checkins_in(ck, ANN)) == 1
    resumed = (await ck.say(ANN, "/resume"))[0]
    assert "back on" in resumed.text and "Fri 4 Dec, 08:00" in resumed.text
    await tick(ck, clock, local("Europe/Berlin", 2026, 12, 4, 8, 0))
    assert len(checkins_in(ck, ANN)) == 2
    assert "/pause 3" in (await ck.say(ANN, "/pause soon"))[0].text


async def test_quiet_hours_hold_everything_but_a_check_in_chosen_inside_them(ck: Harness) -> None:
    """A check-in set at 23:00 comes at 23:00; a late catch-up in quiet hours is skipped; a snooze waits."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "23:00")
    await set_up(ck, BOB, "Europe/Berlin", "21:30")
    await tick(ck, clock, local("Europe/Berlin", 2026, 11, 28, 23, 0))
    assert len(checkins_in(ck, ANN)) == 1, "chosen inside the quiet hours, so it comes"
    assert checkins_in(ck, BOB) == [], "21:30 was missed; at 23:00 it would be a late catch-up in quiet hours"
    await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 21, 30))
    [bobs] = checkins_in(ck, BOB)
    reply = (await ck.press(BOB, bobs, "⏰ Snooze"))[0]
    assert "Mon 30 Nov, 07:00" in reply.text, "a snooze ending at 22:30 waits for the quiet hours to end"
    assert (await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 22, 30))).sent == 0
    assert (await tick(ck, clock, local("Europe/Berlin", 2026, 11, 30, 7, 0))).sent == 1
    changed = (await ck.say(BOB, "/quiet 18:00-09:00"))[0]
    assert "18:00–09:00" in changed.text
    [review] = await rows(ck, CheckinSchedule, CheckinSchedule.kind == "review",
                          CheckinSchedule.user_id == (await rows(ck, User, User.telegram_id == BOB))[0].id)
    assert review.local_time == "17:00", "the Sunday review moves before the quiet hours"
    assert "off" in (await ck.say(BOB, "/quiet off"))[0].text
    assert "not a time" in (await ck.say(BOB, "/quiet 25:00-07:00"))[0].text


async def test_a_blocked_user_is_paused_not_retried_and_start_resumes(ck: Harness) -> None:
    """403 Forbidden pauses the user's check-ins (no further sends); /start after unblocking resumes them."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    ck.bot_api.block(ANN, notify=False)
    stats = await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
    assert stats.blocked == 1
    [prefs] = await rows(ck, CheckinPrefs)
    assert (prefs.paused, prefs.pause_reason) == (True, "blocked")
    calls = len(ck.bot_api.calls_to("sendMessage"))
    for day in (30, 1):
        month = 11 if day == 30 else 12
        await tick(ck, clock, local("Europe/Berlin", 2026, month, day, 8, 0))
    assert len(ck.bot_api.calls_to("sendMessage")) == calls, "a blocked user is not retried"
    ck.bot_api.unblock(ANN, notify=False)
    back, *welcome = await ck.say(ANN, "/start", expect=3)
    assert "check-ins are on again" in back.text and "Rein" in welcome[0].text
    await tick(ck, clock, local("Europe/Berlin", 2026, 12, 2, 8, 0))
    assert len(checkins_in(ck, ANN)) == 1
    [send] = await rows(ck, CheckinSend, CheckinSend.status == "blocked")
    assert send.due_at == local("Europe/Berlin", 2026, 11, 29, 8, 0)


# ----- daylight saving ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        ("Europe/Berlin", date(2026, 3, 29), time(2, 30), ["2026-03-29T01:30", "2026-03-30T00:30"]),
        ("Europe/Berlin", date(2026, 10, 25), time(2, 30), ["2026-10-25T00:30", "2026-10-26T01:30"]),
        ("America/New_York", date(2026, 3, 8), time(2, 30), ["2026-03-08T07:30", "2026-03-09T06:30"]),
        ("America/New_York", date(2026, 11, 1), time(1, 30), ["2026-11-01T05:30", "2026-11-02T06:30"]),
    ],
    ids=["berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall"],
)
async def test_daylight_saving_days_get_exactly_one_checkin(ck: Harness, zone: str, day: date, at: time,
                                                            expected: list[str]) -> None:
    """Skipped local time: one check-in right after the gap; repeated hour: one, not two (10-minute passes)."""
    start = datetime.combine(day - timedelta(days=1), time(12), tzinfo=ZoneInfo(zone)).astimezone(UTC)
    clock = clock_at(ck, start)
    await set_up(ck, ANN, zone, at.strftime("%H:%M"))
    now = start
    while now < start + timedelta(hours=40):
        now += timedelta(minutes=10)
        await tick(ck, clock, now)
    sends = await rows(ck, CheckinSend, CheckinSend.kind == "checkin")
    assert [s.due_at.strftime("%Y-%m-%dT%H:%M") for s in sends] == expected
    assert all(s.status == "sent" for s in sends)
    assert len(checkins_in(ck, ANN)) == 2


# ----- restarts and crashes -----------------------------------------------------------------------


async def test_restart_sends_what_fell_due_inside_the_grace_window_once_and_skips_older(bot_api, gemini,
                                                                                       sqlite_url) -> None:
    """Start-up sends a check-in 30 min overdue exactly once; one 3 h overdue is skipped and rescheduled."""
    settings = make_settings(bot_api, gemini, sqlite_url)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    # A time six hours ahead, so no real occurrence falls in the last three hours; no quiet hours either.
    at = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(hours=6)).strftime("%H:00")
    for user in (ANN, BOB):
        await set_up(h, user, "Europe/Berlin", at)
        await h.say(user, "/quiet off")
    await stop_bot(app)
    now = datetime.now(UTC)
    h = Harness(None, bot_api, gemini)
    from storage.db import Database

    db = Database(sqlite_url)
    async with db.session() as session:
        for telegram_id, overdue in ((ANN, timedelta(minutes=30)), (BOB, timedelta(hours=3))):
            user = (await session.scalars(select(User).where(User.telegram_id == telegram_id))).one()
            await session.execute(update(CheckinSchedule)
                                  .where(CheckinSchedule.user_id == user.id, CheckinSchedule.kind == "checkin")
                                  .values(next_due_at=now - overdue))
    await db.dispose()

    for _ in range(2):  # two restarts: the second must not send again
        app = await start_bot(settings)
        try:
            await bot_api.wait_for(lambda: len(checkins_in(h, ANN)) == 1, timeout=5)
            timer = app.bot_data.services.checkins.scheduler
            # Whatever was due at the start has been handled once the timer waits for a later instant.
            await bot_api.wait_for(lambda t=timer: t.armed is not None and t.armed > datetime.now(UTC), timeout=5)
        finally:
            await stop_bot(app)
    assert len(checkins_in(h, ANN)) == 1 and checkins_in(h, BOB) == []
    db = Database(sqlite_url)
    async with db.session() as session:
        bob_row = (await session.scalars(select(CheckinSchedule).join(User, User.id == CheckinSchedule.user_id)
                                          .where(User.telegram_id == BOB, CheckinSchedule.kind == "checkin"))).one()
    await db.dispose()
    assert bob_row.next_due_at is not None and bob_row.next_due_at > now


async def test_the_timer_fires_a_checkin_set_for_the_next_moment(bot_api, gemini, sqlite_url) -> None:
    """With the real APScheduler timer, a check-in that falls due in under a second arrives once."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url))
    h = Harness(app, bot_api, gemini)
    try:
        await set_up(h, ANN, "Europe/Berlin", "08:00")
        when = datetime.now(UTC) + timedelta(seconds=0.4)
        async with h.services.db.session() as session:
            await session.execute(update(CheckinSchedule).where(CheckinSchedule.kind == "checkin")
                                  .values(next_due_at=when))
        assert h.services.checkins.scheduler is not None
        h.services.checkins.scheduler.poke(when)
        passes = h.services.checkins.scheduler.passes
        await bot_api.wait_for(lambda: len(checkins_in(h, ANN)) == 1, timeout=3)
        await bot_api.wait_for(lambda: h.services.checkins.scheduler.passes > passes, timeout=5)  # its pass ended
        assert len(checkins_in(h, ANN)) == 1
    finally:
        await stop_bot(app)


async def test_a_claim_never_handed_to_telegram_is_delivered_once_after_a_crash(ck: Harness) -> None:
    """Claimed, then the process died before sending: the next pass delivers it, once, and records it sent."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    due = local("Europe/Berlin", 2026, 11, 29, 8, 0)
    clock.now = due
    claimed, _ = await ck.services.checkins.dispatch.claim_due(due, 100)  # the crash: claimed, never delivered
    assert len(claimed) == 1
    scheduler = ck.services.checkins.scheduler
    assert scheduler is not None
    restarted = CheckinScheduler(dispatch=ck.services.checkins.dispatch, send=scheduler.send)
    stats = await restarted.run_due(due + timedelta(minutes=1))
    assert (stats.recovered, stats.sent) == (1, 1)
    assert len(checkins_in(ck, ANN)) == 1
    [send] = await rows(ck, CheckinSend)
    assert send.status == "sent" and send.turn_id is not None
    assert (await restarted.run_due(due + timedelta(minutes=2))).sent == 0, "never twice"
    assert len(checkins_in(ck, ANN)) == 1


async def test_a_claim_found_too_late_is_marked_expired_not_sent(ck: Harness) -> None:
    """Claimed, then down for longer than the grace window: the claim ends as expired, with why; nothing is sent."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    due = local("Europe/Berlin", 2026, 11, 29, 8, 0)
    clock.now = due
    await ck.services.checkins.dispatch.claim_due(due, 100)
    clock.now = due + timedelta(hours=3)
    scheduler = ck.services.checkins.scheduler
    assert scheduler is not None
    await scheduler.run_due(due + timedelta(hours=3))
    assert checkins_in(ck, ANN) == []
    [send] = await rows(ck, CheckinSend)
    assert (send.status, send.reason) == ("expired", "not sent within the grace window")


async def test_a_crash_between_send_and_record_still_sends_exactly_once(ck: Harness) -> None:
    """Sent, then the process died before recording it: after the restart nothing is sent again, and the send is
    marked uncertain."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    scheduler = ck.services.checkins.scheduler
    assert scheduler is not None
    real_send = scheduler.send

    class Crash(BaseException):
        """The process dies right after Telegram took the message."""

    async def send_then_die(chat_id: int, telegram_id: int, replies: list[Any], begin: Any) -> bool:
        await real_send(chat_id, telegram_id, replies, begin)
        raise Crash

    crashing = CheckinScheduler(dispatch=ck.services.checkins.dispatch, send=send_then_die)
    due = local("Europe/Berlin", 2026, 11, 29, 8, 0)
    clock.now = due
    with pytest.raises(Crash):
        await crashing.run_due(due)
    assert len(checkins_in(ck, ANN)) == 1
    restarted = CheckinScheduler(dispatch=ck.services.checkins.dispatch, send=real_send)
    for minutes in (0, 1, 30):
        await restarted.run_due(due + timedelta(minutes=minutes))
    assert len(checkins_in(ck, ANN)) == 1
    [send] = await rows(ck, CheckinSend)
    assert send.status == "uncertain"
    ck.bot_api.drop_next("sendMessage")  # a dropped connection is retried by the sender, still one message
    await restarted.run_due(local("Europe/Berlin", 2026, 11, 30, 8, 0))
    assert len(checkins_in(ck, ANN)) == 2


# ----- progress, export, delete -------------------------------------------------------------------


async def test_a_milestone_is_marked_reached_from_progress_by_its_owner_only(ck: Harness) -> None:
    """/progress offers the next milestone's Reached button; only its owner's press counts, and then
    /progress and the coach's plan show it reached."""
    await accept_plan(ck, ANN)
    # the process's first chart may pay for loading matplotlib: a wide margin
    photo = (await ck.say(ANN, "/progress", timeout=30))[0]
    assert "Milestones: 0 of" in (photo.caption or "")
    reached = next(d for label, d in photo.buttons() if label.startswith("🏁 Reached"))
    await ck.say(BOB, "/start", expect=2)
    forged = ck.bot_api.user_presses(BOB, photo.message_id, reached, chat_id=BOB)
    await ck.bot_api.wait_for(lambda: forged in ck.bot_api.callback_answers)
    await ck.bot_api.wait_for(lambda: "expired" in (ck.bot_api.messages(BOB)[-1].text or ""))
    done = (await ck.press(ANN, photo, "🏁 Reached"))[0]
    assert "Milestone reached" in (done.text or "")
    again = (await ck.say(ANN, "/progress"))[0]
    assert "Milestones: 1 of" in (again.caption or "")
    await ck.say(ANN, "How am I doing?")
    assert "(reached)" in " ".join(ck.gemini.requests[-1].user_texts)


async def test_export_includes_and_delete_removes_schedules_and_progress(ck: Harness) -> None:
    """/export carries schedules, sends and progress; /delete erases them with everything else."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
    await ck.press(ANN, checkins_in(ck, ANN)[-1], "✅ Done")
    document = (await ck.say(ANN, "/export"))[0]
    data = json.loads(document.file or b"{}")
    assert [s["kind"] for s in data["checkin_schedules"]] == ["checkin", "review"]
    assert data["progress"][0]["status"] == "done" and data["checkin_sends"][0]["status"] == "sent"
    confirm = (await ck.say(ANN, "/delete"))[0]
    await ck.press(ANN, confirm, "Yes, delete")
    for model in (CheckinSchedule, CheckinSend, ProgressEntry, CheckinPrefs):
        assert await rows(ck, model) == []


# ----- storage on both databases, tracing ---------------------------------------------------------


async def test_claims_are_unique_and_due_schedules_move_on_sqlite_and_postgres(database_url: str) -> None:
    """A (schedule, due time) is claimed once; a claimed schedule moves to its next occurrence (both databases)."""
    from pipeline.checkins.core import CheckinCore
    from pipeline.checkins.dispatch import Dispatch
    from storage import checkins as store
    from storage import users
    from storage.db import Database

    db = Database(database_url)
    await db.migrate()
    try:
        due = local("Europe/Berlin", 2026, 11, 29, 8, 0)
        async with db.session() as session:
            user = await users.get_or_create_user(session=session, telegram_id=ANN, chat_id=ANN)
            user.timezone = "Europe/Berlin"
            session.add(user)
            row = await store.put_schedule(session=session, user_id=user.id or 0, kind="checkin",
                                           local_time="08:00", days=127, next_due_at=due)
        service = Dispatch(CheckinCore(db=db, steps=None, clock=lambda: due))  # type: ignore[arg-type]
        claimed, stats = await service.claim_due(due + timedelta(seconds=30), 10)
        assert [(c.telegram_id, c.due_at) for c in claimed] == [(ANN, due)] and stats.seen == 1
        async with db.session() as session:
            assert await store.claim(session=session, schedule=row, due_at=due) is None
        assert (await service.claim_due(due + timedelta(minutes=1), 10))[0] == []
        assert await service.earliest_due() == local("Europe/Berlin", 2026, 11, 30, 8, 0)
        async with db.session() as session:
            exported = await store.export_for_user(session=session, user_id=user.id or 0)
            assert exported["checkin_sends"][0]["status"] == "claimed"
            await store.delete_for_user(session=session, user_id=user.id or 0)
        assert await service.earliest_due() is None
    finally:
        await db.dispose()


async def test_checkins_and_answers_are_traced_in_the_users_thread(bot_api, gemini, sqlite_url, opik_stub) -> None:
    """The check-in and the answer to a tap are each one Opik trace in the user's thread."""
    import opik

    settings = make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False, opik_track_disable=False,
                             opik_url_override=opik_stub.url, opik_flush_timeout_s=3)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        clock = clock_at(h, local("Europe/Berlin", 2026, 11, 28, 9, 0))
        await set_up(h, ANN, "Europe/Berlin", "08:00")
        with opik.record_traces_locally() as recorded:
            await tick(h, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
            await h.press(ANN, checkins_in(h, ANN)[-1], "🟡 Partly")
            trees = recorded.trace_trees
    finally:
        await stop_bot(app)
    [user] = await _rows_at(sqlite_url, User)
    turns = {t.kind: t for t in await _rows_at(sqlite_url, Turn) if t.role == "coach"}
    by_name = {t.name: t for t in trees}
    assert {"coach.checkin", "coach.checkin_reply"} <= set(by_name)
    for name, kind in (("coach.checkin", "checkin"), ("coach.checkin_reply", "coaching")):
        assert by_name[name].thread_id == user.thread_id
        assert by_name[name].id == turns[kind].trace_id
        assert [s for s in by_name[name].spans if s.type == "llm"], "the Gemini call is an LLM span"


async def _rows_at(url: str, model: Any) -> list[Any]:
    from storage.db import Database

    db = Database(url)
    try:
        async with db.session() as session:
            return list((await session.scalars(select(model))).all())
    finally:
        await db.dispose()


async def test_a_second_tap_on_the_same_checkin_changes_the_entry_without_another_llm_call(ck: Harness) -> None:
    """Tapping again (an old or forged button) updates the entry; only the first tap asks the coach."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    await tick(ck, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
    [message] = checkins_in(ck, ANN)
    missed = next(data for label, data in message.buttons() if "Missed" in label)
    await ck.press(ANN, message, "✅ Done")
    calls = len(ck.gemini.requests)
    ck.bot_api.user_presses(ANN, message.message_id, missed)
    await ck.bot_api.wait_for(lambda: "Changed to ❌ Missed" in (ck.bot_api.messages(ANN)[-1].text or ""))
    assert len(ck.gemini.requests) == calls
    [entry] = await rows(ck, ProgressEntry)
    assert entry.status == "missed"


async def test_the_sunday_review_sums_up_the_week_and_asks_one_question(ck: Harness) -> None:
    """Sunday 19:00 local: the coach gets the week's check-in results and writes a review (rated, no answer buttons)."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 30, 9, 0))
    await accept_plan(ck, ANN)
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    for day, label in ((1, "✅ Done"), (2, "❌ Missed"), (3, "🟡 Partly")):
        await tick(ck, clock, local("Europe/Berlin", 2026, 12, day, 8, 0))
        await ck.press(ANN, checkins_in(ck, ANN)[-1], label)
    before = len(ck.bot_api.messages(ANN))
    await tick(ck, clock, local("Europe/Berlin", 2026, 12, 6, 19, 0))
    review = ck.bot_api.messages(ANN)[-1]
    assert len(ck.bot_api.messages(ANN)) == before + 1, "Fri–Sun 08:00 fold into one, too late by now: skipped"
    request = ck.gemini.requests[-1]
    assert "weekly review" in request.system and "exactly one reflective question" in request.system
    assert "Tue: done, Wed: missed, Thu: partly" in request.last_user_text
    assert [label for label, _ in review.buttons()] == ["☆1", "☆2", "☆3", "☆4", "☆5"]
    [turn] = await rows(ck, Turn, Turn.kind == "review")
    assert turn.text == review.text


async def test_several_missed_occurrences_fold_into_one_send(sqlite_url: str) -> None:
    """Down for three days with a long grace window: one check-in for the latest occurrence, not three."""
    from pipeline.checkins.core import CheckinCore
    from pipeline.checkins.dispatch import Dispatch
    from storage import checkins as store
    from storage import users
    from storage.db import Database

    db = Database(sqlite_url)
    await db.migrate()
    try:
        first = local("Europe/Berlin", 2026, 11, 26, 8, 0)
        async with db.session() as session:
            user = await users.get_or_create_user(session=session, telegram_id=ANN, chat_id=ANN)
            user.timezone = "Europe/Berlin"
            session.add(user)
            await store.put_schedule(session=session, user_id=user.id or 0, kind="checkin", local_time="08:00",
                                     days=127, next_due_at=first)
        now = local("Europe/Berlin", 2026, 11, 29, 9, 0)
        service = Dispatch(CheckinCore(db=db, steps=None, grace_s=4 * 86400, clock=lambda: now))  # type: ignore[arg-type]
        claimed, _ = await service.claim_due(now, 10)
        assert [c.due_at for c in claimed] == [local("Europe/Berlin", 2026, 11, 29, 8, 0)]
        assert await service.earliest_due() == local("Europe/Berlin", 2026, 11, 30, 8, 0)
    finally:
        await db.dispose()
