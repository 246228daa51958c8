"""Check-in times in the user's own zone: parsing, next occurrences (daylight saving included), quiet hours.

Occurrences are computed here with zoneinfo rather than by APScheduler's cron trigger (which has
daylight-saving bugs, agronholm/apscheduler #606 and #529). Every local date that matches the days gets
exactly one instant: the wall time read with ``fold=0``. On a spring-forward day a time inside the gap
(02:30 in Berlin) lands on the first instant after the gap (03:30 summer time); on a fall-back day a time
inside the repeated hour gets its first occurrence only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from babel import dates

from pipeline import i18n
from pipeline.i18n import N_, _
from pipeline.replies import Button, Para, Reply

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = 0b1111111
WEEKDAYS = 0b0011111
WEEKENDS = 0b1100000
SUNDAY = 1 << 6

_TIME_RE = re.compile(r"^(\d{1,2})(?:[:.h](\d{2}))?\s*(am|pm)?$", re.IGNORECASE)
_DAY_WORDS = {
    "daily": EVERY_DAY,
    "everyday": EVERY_DAY,
    "every day": EVERY_DAY,
    "weekdays": WEEKDAYS,
    "workdays": WEEKDAYS,
    "weekends": WEEKENDS,
    "weekend": WEEKENDS,
}


@dataclass(frozen=True)
class Preset:
    """A one-tap schedule from the menu (`label` is marked for the catalog, with the time as `{time}`)."""

    label: str
    at: time
    days: int


PRESETS: dict[int, Preset] = {
    1: Preset(N_("☀️ Every morning {time}"), time(8, 0), EVERY_DAY),
    2: Preset(N_("🌙 Every evening {time}"), time(20, 0), EVERY_DAY),
    3: Preset(N_("💼 Weekdays {time}"), time(8, 0), WEEKDAYS),
}
CUSTOM = 0


class ScheduleError(ValueError):
    """Input that is not a time, days or range Rein understands; the message says what is expected."""


def parse_time(text: str) -> time:
    """"07:30", "7:30", "19.00", "7", "7pm" -> a time of day."""
    match = _TIME_RE.match(text.strip())
    if match is None:
        raise ScheduleError(_("“{text}” is not a time: use HH:MM, e.g. 07:30 or 19:00", text=text[:20]))
    hour, minute, half = int(match.group(1)), int(match.group(2) or 0), (match.group(3) or "").lower()
    if half:
        if not 1 <= hour <= 12:
            raise ScheduleError(_("with am/pm the hour goes from 1 to 12"))
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        raise ScheduleError(_("“{text}” is not a time of day: hours 0–23, minutes 0–59", text=text[:20]))
    return time(hour, minute)


def parse_days(text: str) -> int:
    """"mon,wed,fri", "weekdays", "sat sun", "mon-fri" -> a bit mask (Monday = bit 0)."""
    cleaned = text.strip().lower()
    if not cleaned:
        return EVERY_DAY
    if cleaned in _DAY_WORDS:
        return _DAY_WORDS[cleaned]
    mask = 0
    for part in re.split(r"[,\s/]+", cleaned):
        if not part:
            continue
        if part in _DAY_WORDS:
            mask |= _DAY_WORDS[part]
            continue
        if "-" in part:
            first, _dash, last = part.partition("-")
            a, b = _day_index(first), _day_index(last)
            span = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
            for index in span:
                mask |= 1 << index
            continue
        mask |= 1 << _day_index(part)
    return mask


def _day_index(word: str) -> int:
    key = word[:3]
    if len(word) >= 2 and key in DAY_NAMES:
        return DAY_NAMES.index(key)
    local = _local_days().get(word.strip(".").lower())
    if local is None:
        raise ScheduleError(_("“{word}” is not a day: use mon, tue, wed, thu, fri, sat, sun", word=word[:12]))
    return local


def _local_days() -> dict[str, int]:
    """The user's language's day names, wide and abbreviated ("mo", "montag", "lun"…) -> index (Monday 0)."""
    found: dict[str, int] = {}
    for width in ("wide", "abbreviated", "short"):
        for index, name in dates.get_day_names(width, locale=i18n.locale()).items():
            found.setdefault(name.strip(".").lower(), index)
    return found


def parse_checkin(text: str) -> tuple[time, int]:
    """"19:00 mon,wed,fri" -> (19:00, mask); the days are optional (every day)."""
    parts = text.strip().split(maxsplit=1)
    if not parts:
        raise ScheduleError(_("give a time, e.g. /checkin 07:30 or /checkin 19:00 mon,wed,fri"))
    at = parse_time(parts[0])
    days = parse_days(parts[1]) if len(parts) > 1 else EVERY_DAY
    if days == 0:
        raise ScheduleError(_("give at least one day"))
    return at, days


def parse_range(text: str) -> tuple[time, time]:
    """"22:00-07:00" -> (22:00, 07:00)."""
    first, sep, last = text.replace("–", "-").partition("-")
    if not sep:
        raise ScheduleError(_("give a range, e.g. /quiet 22:00-07:00"))
    return parse_time(first), parse_time(last)


def format_time(at: time) -> str:
    """07:30 (as stored; `i18n.format_time` writes a time for the user)."""
    return at.strftime("%H:%M")


def describe(at: time, days: int) -> str:
    """"every day at 08:00", "on Mon, Wed, Fri at 19:00", in the user's language."""
    shown = i18n.format_time(at)
    if days == EVERY_DAY:
        return _("every day at {time}", time=shown)
    if days == WEEKDAYS:
        return _("on weekdays at {time}", time=shown)
    if days == WEEKENDS:
        return _("at weekends at {time}", time=shown)
    names = dates.get_day_names("abbreviated", locale=i18n.locale())
    return _("on {days} at {time}", days=", ".join(names[i] for i in range(7) if days & (1 << i)), time=shown)


def wall_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The one UTC instant of a local wall time on a date (fold=0: gaps move forward, repeats count once)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def next_occurrence(after: datetime, at: time, days: int, zone: str) -> datetime | None:
    """The first occurrence strictly after `after` (aware), in UTC; None when no day is selected."""
    if days & EVERY_DAY == 0:
        return None
    tz = ZoneInfo(zone)
    start = after.astimezone(tz).date() - timedelta(days=1)
    for offset in range(10):
        day = start + timedelta(days=offset)
        if not days & (1 << day.weekday()):
            continue
        instant = wall_instant(day, at, tz)
        if instant > after:
            return instant
    return None  # pragma: no cover - a selected weekday always occurs within 8 days


def latest_occurrence(first_due: datetime, now: datetime, at: time, days: int, zone: str) -> datetime:
    """The last occurrence at or before `now`, given that `first_due` (<= now) was one."""
    latest = first_due
    probe = max(first_due, now - timedelta(days=8))
    while True:
        following = next_occurrence(probe, at, days, zone)
        if following is None or following > now:
            return latest
        latest = probe = following


def in_quiet(local: time, start: time, end: time) -> bool:
    """Whether a local time of day falls in the quiet hours [start, end) (which may wrap midnight)."""
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


def quiet_end(now: datetime, zone: str, end: time) -> datetime:
    """The next instant the quiet hours end (local `end`) after `now`."""
    found = next_occurrence(now, end, EVERY_DAY, zone)
    assert found is not None
    return found


ASK_WHEN = N_("When should I check in? Pick a time, or choose Custom to set your own (any time, any days).")


def schedule_menu(current: str | None = None) -> Reply:
    """"When should I check in?" with the presets and Custom (shown after a plan is accepted and by /checkin)."""
    paras = [Para(_(ASK_WHEN))]
    if current:
        paras.insert(0, Para(current))
    rows = [[Button(_(p.label, time=i18n.format_time(p.at)), "checkin_set", key)] for key, p in PRESETS.items()]
    rows.append([Button(_("✏️ Custom"), "checkin_set", CUSTOM)])
    return Reply(paras=paras, buttons=rows)
