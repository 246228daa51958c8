"""The /progress chart: a PNG of the promised size in every script, drawn off the event loop, sent as a photo."""

from __future__ import annotations

import asyncio
import struct
import warnings
import zlib
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest

from pipeline.chart import HEIGHT, WIDTH, ChartSpec, chart_texts, drawable, milestone_x, render, render_chart, shorten
from pipeline.checkins.progress import Progress, ProgressReport
from pipeline.i18n import use_locale
from storage.models import Milestone
from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.test_checkins import ANN, accept_plan, checkins_in, clock_at, local, set_up, tick

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MONDAY = date(2026, 10, 12)
RATES = [None, 0.2, 0.5, 1.0, 0.75, None, 0.33, 0.86]
GOALS = {"en": "Run a 10k by June", "de": "Bis Juni 10 km laufen", "ru": "Пробежать 10 км к июню",
         "ar": "أن أركض عشرة كيلومترات بحلول يونيو"}


def spec(goal: str | None = "Run a 10k by June", rates: list[float | None] = RATES, streak: int = 3,
         milestone: tuple[str, date] | None = ("First 5 km", date(2026, 12, 20))) -> ChartSpec:
    return ChartSpec(goal=goal, weeks=[(MONDAY + timedelta(weeks=i), r) for i, r in enumerate(rates)],
                     streak=streak, milestone=milestone)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (checked: signature, chunk type and CRC, IEND last)."""
    assert data.startswith(SIGNATURE)
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
    assert data[-12:] == struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND") & 0xFFFFFFFF)
    width, height = struct.unpack(">II", body[:8])
    return width, height


def test_a_chart_is_a_png_of_at_least_800_by_400() -> None:
    """The chart decodes as a PNG of WIDTH × HEIGHT, which is at least 800 × 400."""
    assert png_size(render(spec())) == (WIDTH, HEIGHT)
    assert WIDTH >= 800 and HEIGHT >= 400


@pytest.mark.parametrize("code", ["en", "de", "ru", "ar"])
def test_a_chart_renders_in_each_script(code: str) -> None:
    """A chart with a goal, a milestone and the week labels in en, de, ru and ar renders to a PNG of the size."""
    with use_locale(code):
        data = render(spec(goal=GOALS[code], milestone=(GOALS[code], date(2026, 11, 20))), code)
    assert png_size(data) == (WIDTH, HEIGHT)


@pytest.mark.parametrize("case", [
    spec(rates=[None] * 8, streak=0, milestone=None), spec(goal=None, rates=[1.0]), spec(rates=[]),
    spec(rates=[-0.5, 2.0], milestone=("Long ago", date(2020, 1, 1))), spec(goal=" \n" + "x" * 500),
])
def test_odd_progress_still_draws_a_chart(case: ChartSpec) -> None:
    """No check-ins, no goal, no weeks, rates outside 0–1, an old milestone or a huge goal still give a chart."""
    assert png_size(render(case, "xx-unknown")) == (WIDTH, HEIGHT)


def test_the_texts_follow_the_locale() -> None:
    """Week labels are the week's Monday as the locale writes it (Babel), percentages too, texts from the catalog;
    Arabic is right to left; weeks without check-ins have no percentage."""
    english, german, russian, arabic = (chart_texts(spec(), code) for code in ("en", "de", "ru", "ar"))
    assert english.week_labels[:2] == ["12 Oct", "19 Oct"] and german.week_labels[-1] == "30. Nov."
    assert russian.week_labels[0] == "12 окт." and "أكتوبر" in arabic.week_labels[0]
    assert english.bar_labels == ["", "20%", "50%", "100%", "75%", "", "33%", "86%"]
    assert german.bar_labels[2] == "50\xa0%" and german.ticks[-1] == "100\xa0%"
    assert english.title == "Progress: Run a 10k by June" and english.streak == "Streak: 3 check-ins in a row"
    assert english.milestone == "Next milestone: First 5 km\n20 Dec 2026"
    assert german.title != english.title and german.title.endswith(": Run a 10k by June")  # the catalog's German
    assert arabic.rtl and not english.rtl and not russian.rtl
    assert chart_texts(spec(goal=None, streak=1), "en").title == "Your progress"
    assert chart_texts(spec(streak=1), "en").streak == "Streak: 1 check-in in a row"


def test_the_title_names_the_goal_shortened() -> None:
    """A long goal is cut at a word with an ellipsis, on one line; a short one is kept whole."""
    long = "Run a 10k by June without stopping,\nthree times a week, and feel good about it"
    cut = shorten(long, 48)
    assert len(cut) <= 48 and cut.endswith("…") and "\n" not in cut
    assert cut == "Run a 10k by June without stopping, three…"
    assert shorten("Learn Spanish", 48) == "Learn Spanish"
    assert len(shorten("x" * 100, 48)) == 48


def test_the_next_milestone_is_marked_at_its_week_or_ahead() -> None:
    """A milestone inside the weeks stands at its week; one after the last week at the right edge; none, none."""
    assert milestone_x(spec(milestone=("m", MONDAY + timedelta(weeks=3, days=3)))) == pytest.approx(3 - 0.5 + 3 / 7)
    assert milestone_x(spec(milestone=("m", date(2027, 5, 1)))) == len(RATES)
    assert milestone_x(spec(milestone=("m", date(2020, 1, 1)))) == -0.5
    assert milestone_x(spec(milestone=None)) is None


def test_progress_fills_the_chart_spec() -> None:
    """The /progress view hands the chart each week's Monday and completion, the streak, the goal and the next
    milestone."""
    weeks = [(MONDAY, 2, 0, 0, 2), (MONDAY + timedelta(weeks=1), 0, 0, 0, 0), (MONDAY + timedelta(weeks=2), 1, 2, 1, 4)]
    upcoming = Milestone(plan_id=1, title="First 5 km", target_date=date(2026, 11, 1), criterion="5 km")
    data = Progress(streak=2, weeks=weeks, reached=0, milestones=1, next_milestone=upcoming, goal="Run a 10k")
    made = ProgressReport.chart_spec(data)
    assert made == ChartSpec(goal="Run a 10k", weeks=[(MONDAY, 1.0), (weeks[1][0], None), (weeks[2][0], 0.5)],
                             streak=2, milestone=("First 5 km", date(2026, 11, 1)))


async def test_the_event_loop_keeps_running_while_a_chart_is_drawn() -> None:
    """`render_chart` draws in a worker thread: a ticker on the event loop advances while the chart is drawn."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    with use_locale("ar"):
        data = await render_chart(spec(goal=GOALS["ar"]))
    during = ticks - before
    stop.set()
    await task
    assert png_size(data) == (WIDTH, HEIGHT)
    assert during >= 3  # drawn on the loop itself, the ticker could not have run at all


@pytest.fixture
async def ck(bot_api, gemini, sqlite_url) -> AsyncIterator[Harness]:
    """A running bot whose scheduler timer is off: the test runs the passes itself at chosen times."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


async def test_progress_sends_the_chart_as_a_photo(ck: Harness) -> None:
    """/progress over the loopback Bot API: "sending a photo" shows while the chart is drawn, then one photo, the
    chart as a PNG of the size, streak and counts in the caption."""
    clock = clock_at(ck, local("Europe/Berlin", 2026, 11, 28, 9, 0))
    await accept_plan(ck, ANN)
    await set_up(ck, ANN, "Europe/Berlin", "08:00")
    for day, label in ((29, "❌ Missed"), (30, "✅ Done"), (1, "🟡 Partly"), (2, "✅ Done")):
        month = 11 if day > 2 else 12
        await tick(ck, clock, local("Europe/Berlin", 2026, month, day, 8, 0))
        await ck.press(ANN, checkins_in(ck, ANN)[-1], label)
    assert "upload_photo" not in ck.bot_api.chat_actions(ANN)
    [photo] = await ck.say(ANN, "/progress", timeout=30)
    assert ck.bot_api.chat_actions(ANN)[-1] == "upload_photo"
    assert photo.kind == "photo" and photo.file is not None
    assert "Your progress" in (photo.caption or "") and "Streak: 3 check-ins in a row" in (photo.caption or "")
    assert "This week: 2 done · 1 partly · 0 missed (of 3 check-ins)" in (photo.caption or "")
    assert png_size(photo.file) == (WIDTH, HEIGHT)


def test_characters_the_font_lacks_are_left_out_not_drawn_as_boxes() -> None:
    """Emoji and CJK in a goal are dropped from the chart (no "missing glyph" box); a goal of nothing else gives
    the plain title."""
    assert drawable("Run 🏃 a 10k 跑步 by June 💪") == "Run a 10k by June"
    assert drawable("Пробежать 10 км") == "Пробежать 10 км" and drawable("أن أركض") == "أن أركض"
    assert drawable("🏃🏃 ✨") == ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = render(spec(goal="Run 🏃 a 10k 跑步", milestone=("🏁", date(2026, 12, 1))), "en")
        plain = render(spec(goal="🏃🏃"), "en")
    assert png_size(data) == png_size(plain) == (WIDTH, HEIGHT)
    assert not [w for w in caught if "missing from font" in str(w.message)]
