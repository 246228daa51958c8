"""The /progress chart: completion per week as a bar chart a person can read, drawn by matplotlib.

What it shows (`ChartSpec` in, PNG bytes out, `WIDTH` × `HEIGHT` pixels): a title naming the goal (shortened),
the current streak, one bar per week labelled with that week's Monday as the user's locale writes a date
(Babel), a percentage axis and the percentage on each bar, the next milestone marked with a dashed line (at
its week, or at the right edge when it lies ahead), and a legend. Weeks at 50 % or more are Okabe-Ito blue,
weeks below are Okabe-Ito orange and hatched, weeks without check-ins say so in grey words: they differ in
lightness and pattern too, so red-green colour blindness (or a grey-scale print) loses nothing.

Scripts: every text is drawn in DejaVu Sans, which matplotlib ships (no system font is needed, so a fresh clone
draws the same picture) and which covers Latin, Cyrillic and Arabic (so all ten languages of the catalog);
characters of a user's goal it lacks (most emoji, CJK, ...) are left out rather than drawn as boxes. matplotlib
3.11 lays text out with libraqm (bundled in its wheel: HarfBuzz shaping and bidirectional order), so Arabic
letters are joined and read right to left without any extra package (matplotlib before 3.11 drew them isolated
and reversed, hence `matplotlib>=3.11` in pyproject.toml). For a right-to-left language (Babel's
`character_order`) the weeks also run from right to left and the percentage axis stands on the right. The
rendered samples for Latin, Cyrillic and Arabic are in docs/images/ (`python -m benchmarks.chart --samples
docs/images`).

matplotlib is imported when `render` first runs (the bot does not pay for it until the first /progress) and a chart
is drawn in a worker thread (`render_chart`), so the event loop never waits for it. Charts are drawn one at a
time, in one thread of their own (not `asyncio.to_thread`'s shared pool: matplotlib caches its fonts per
thread) and under a lock (matplotlib is not thread-safe): that also bounds the memory a burst of /progress
can take.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date

from babel.dates import format_skeleton

from pipeline.i18n import _, current, format_date, format_percent, locale, ngettext, use_locale

WIDTH, HEIGHT, DPI = 1000, 500, 100
TITLE_CHARS = 48  # the goal's text in the title is cut (at a word) to this many characters
MILESTONE_CHARS = 32
FONT = "DejaVu Sans"
BLUE, ORANGE, GREY, INK = "#0072B2", "#E69F00", "#9A9A9A", "#222222"  # Okabe-Ito blue and orange
TOP = 1.32  # the value axis ends here: room above 100 % for the bars' labels and the milestone's
TICKS = [0.0, 0.25, 0.5, 0.75, 1.0]
GOOD = 0.5  # a week at this completion or more is drawn blue, below it orange and hatched
_LOCK = threading.Lock()
# One worker thread of its own: matplotlib keeps its fonts per thread, so the default executor's many threads
# would each hold a copy (100 charts over asyncio.to_thread: +36 MB; over this one thread: +15 MB, then flat).
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rein-chart")


@dataclass(frozen=True)
class ChartSpec:
    """What the /progress chart shows; the view fills it, `render_chart` draws it."""

    goal: str | None  # the goal as the user wrote it; None without an active goal
    weeks: list[tuple[date, float | None]]  # (Monday, completion 0–1 or None without check-ins), oldest first
    streak: int
    milestone: tuple[str, date] | None = None  # the next milestone not reached: (title, target date)


@dataclass(frozen=True)
class ChartTexts:
    """Every text on the chart, in the locale it was made for."""

    title: str
    streak: str
    week_labels: list[str]
    bar_labels: list[str]  # the percentage above each bar ("" for a week without check-ins)
    axis: str
    ticks: list[str]  # the percentage axis's labels, at TICKS
    legend: tuple[str, str, str]  # at or above GOOD, below GOOD, and the words in a week without check-ins
    milestone: str | None
    rtl: bool


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut at a word boundary to at most `limit` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:.-") + "…"


def chart_texts(spec: ChartSpec, code: str | None = None) -> ChartTexts:
    """The chart's texts for `spec` in the task's language (or `code`): catalog texts, Babel dates and numbers."""
    with use_locale(code or current()):
        title = (_("Progress: {goal}", goal=shorten(spec.goal, TITLE_CHARS)) if spec.goal
                 else _("Your progress"))
        streak = ngettext("Streak: {n} check-in in a row", "Streak: {n} check-ins in a row", spec.streak)
        weeks = [format_skeleton("MMMd", monday, locale=locale()) for monday, _rate in spec.weeks]
        bars = ["" if rate is None else format_percent(_clamp(rate)) for _monday, rate in spec.weeks]
        half = format_percent(GOOD)
        milestone = None
        if spec.milestone is not None:
            name, when = spec.milestone
            milestone = _("Next milestone: {title}", title=shorten(name, MILESTONE_CHARS)) + "\n" + format_date(when)
        return ChartTexts(title=title, streak=streak, week_labels=weeks, bar_labels=bars,
                          axis=_("Check-ins done, by week"), ticks=[format_percent(t) for t in TICKS],
                          legend=(f"≥ {half}", f"< {half}", _("no check-ins")), milestone=milestone,
                          rtl=locale().character_order == "right-to-left")


def _clamp(rate: float) -> float:
    return min(1.0, max(0.0, rate))


def milestone_x(spec: ChartSpec) -> float | None:
    """Where the next milestone stands on the week axis (bar i spans i ± 0.5); past the last week it stands
    at the right edge of the plot (`len(weeks)`, in the space kept free for it); None without one."""
    if spec.milestone is None or not spec.weeks:
        return None
    offset = (spec.milestone[1] - spec.weeks[0][0]).days / 7 - 0.5
    return min(max(offset, -0.5), float(len(spec.weeks)))


async def render_chart(spec: ChartSpec) -> bytes:
    """The chart as PNG bytes, drawn in the chart's worker thread in the task's language (the event loop goes
    on meanwhile; the task's context, and so its language, goes with it as with `asyncio.to_thread`)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_WORKER, context.run, render, spec, current())


def render(spec: ChartSpec, code: str | None = None) -> bytes:
    """The chart as PNG bytes (blocking: call `render_chart` from the event loop)."""
    with _LOCK:
        goal = drawable(spec.goal or "")
        milestone = spec.milestone and (drawable(spec.milestone[0]) or "…", spec.milestone[1])
        spec = replace(spec, goal=goal or None, milestone=milestone or None)
        return _draw(spec, chart_texts(spec, code))


def drawable(text: str) -> str:
    """`text` without the characters the chart's font lacks (emoji, CJK, ...: they would be boxes), on one line;
    "" when no letter or digit is left."""
    covered = _charmap()
    kept = " ".join("".join(c for c in text if ord(c) in covered).split())
    return kept if any(c.isalnum() for c in kept) else ""


@functools.cache
def _charmap() -> frozenset[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_manager.findfont(FONT, fallback_to_default=False)).get_charmap())


def _draw(spec: ChartSpec, texts: ChartTexts) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.06 if texts.rtl else 0.09, 0.17, 0.85, 0.63))  # the value axis's side is wider
    count = len(spec.weeks)
    positions = list(range(count))
    rates = [rate for _monday, rate in spec.weeks]
    heights = [0.0 if rate is None else _clamp(rate) for rate in rates]
    colours = [GREY if r is None else BLUE if _clamp(r) >= GOOD else ORANGE for r in rates]
    bars = ax.bar(positions, heights, width=0.7, color=colours, edgecolor=INK, linewidth=0.8, zorder=3)
    for bar, rate in zip(bars, rates, strict=True):
        if rate is not None and _clamp(rate) < GOOD:
            bar.set_hatch("//")
    for x, height, label, rate in zip(positions, heights, texts.bar_labels, rates, strict=True):
        if rate is None:  # no bar: the words, upright in the week's place
            ax.text(x, 0.03, texts.legend[2], ha="center", va="bottom", rotation=90, fontsize=10, fontfamily=FONT,
                    color=GREY, zorder=4)
        else:
            ax.text(x, height + 0.02, label, ha="center", va="bottom", fontsize=11, fontfamily=FONT, color=INK,
                    zorder=4)
    ax.set_ylim(0, TOP)
    ax.set_yticks(TICKS, texts.ticks, fontfamily=FONT, fontsize=10)
    ax.set_xticks(positions, texts.week_labels, fontfamily=FONT, fontsize=10)
    ax.set_ylabel(texts.axis, fontfamily=FONT, fontsize=10)
    ax.grid(axis="y", color="#DDDDDD", linewidth=0.8, zorder=0)
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
    where = milestone_x(spec)
    right = count - 0.5 + (1.0 if where is not None and where > count - 0.5 else 0.2)
    ax.set_xlim(-0.7, right)
    if where is not None and texts.milestone is not None:
        ax.axvline(where, color=INK, linestyle=(0, (6, 4)), linewidth=1.6, zorder=5)
        ax.plot([where], [TOP - 0.06], marker="D", color=INK, markersize=7, zorder=5, clip_on=False)
        late = where > count / 2  # the label stands on the side of the line towards the middle
        ax.text(where - 0.12 if late else where + 0.12, TOP - 0.06, texts.milestone,
                ha="right" if late != texts.rtl else "left", va="center", fontsize=10, fontfamily=FONT, color=INK,
                zorder=6, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 2})
    if texts.rtl:
        ax.invert_xaxis()
        ax.yaxis.tick_right()
        ax.yaxis.set_label_position("right")
    fig.text(0.5, 0.93, texts.title, ha="center", va="center", fontsize=16, fontweight="bold", fontfamily=FONT,
             color=INK)
    fig.text(0.5, 0.865, texts.streak, ha="center", va="center", fontsize=12, fontfamily=FONT, color=INK)
    handles = [Patch(facecolor=BLUE, edgecolor=INK, label=texts.legend[0]),
               Patch(facecolor=ORANGE, edgecolor=INK, hatch="//", label=texts.legend[1])]
    fig.legend(handles=handles, loc="lower center", ncols=2, frameon=False, prop={"family": FONT, "size": 10},
               bbox_to_anchor=(0.5, 0.0))
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, facecolor="white")
    return out.getvalue()
