"""The rules a resolution and a plan must keep before a user sees them, with the small slips repaired.

- The deadline is after today and at most `HORIZON` away.
- Phases each start on or before they end, are in date order, and run back to back from today to the
  deadline: no gap, no overlap.
- Milestones lie inside the plan, in date order.
- Each phase's weekly actions fit the time per week the user gave (declared minutes, or the durations the
  actions name, whichever is more), with `TIME_SLACK`.

A date off by at most `SLIP` (a phase starting tomorrow, ending a few days short of the deadline, a one-day
overlap, a milestone just past the end) is moved into place and noted as a repair. Anything else is a problem,
said in words the model can act on: the plan is written again once with them, and never shown while any
remains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from pipeline.schemas import PlanDraft

HORIZON = timedelta(days=3 * 365)
SLIP = timedelta(days=7)
TIME_SLACK = 1.15

_HOURS = r"(?:h|hr|hrs|hour|hours|std|stunde|stunden|hora|horas|ore|heure|heures|час|часа|часов|год|години|saat)"
_MINUTES = (r"(?:min|mins|minute|minutes|minuten|minuto|minutos|minuti|мин|минут|минуты|минута|хв|хвилин|dakika|dk|"
            r"دقيقه|دقائق)")
_TIMES = re.compile(rf"(\d+)\s*(?:x|×|times|mal|veces|vezes|volte|fois|раз[а]?|kez)\s*(\d+(?:[.,]\d+)?)\s*"
                    rf"({_HOURS}|{_MINUTES})\b", re.IGNORECASE)
_ONCE = re.compile(rf"(\d+(?:[.,]\d+)?)\s*({_HOURS}|{_MINUTES})\b", re.IGNORECASE)


def action_minutes(action: str) -> int:
    """The minutes a week an action names ("3 × 30 min" is 90, "2 hours" is 120); 0 when it names none."""
    match = _TIMES.search(action)
    if match:
        count, amount, unit = int(match.group(1)), float(match.group(2).replace(",", ".")), match.group(3)
        return round(count * amount * (60 if re.fullmatch(_HOURS, unit, re.IGNORECASE) else 1))
    match = _ONCE.search(action)
    if match:
        amount, unit = float(match.group(1).replace(",", ".")), match.group(2)
        return round(amount * (60 if re.fullmatch(_HOURS, unit, re.IGNORECASE) else 1))
    return 0


def deadline_problems(deadline: date, today: date) -> list[str]:
    """What is wrong with a resolution's deadline (nothing when it is after today and within the horizon)."""
    if deadline <= today:
        return [f"the deadline {deadline.isoformat()} is not after today ({today.isoformat()})"]
    if deadline > today + HORIZON:
        return [f"the deadline {deadline.isoformat()} is more than three years away; choose a nearer first "
                f"resolution (by {(today + HORIZON).isoformat()} at the latest)"]
    return []


@dataclass
class Checked:
    """A plan after the check: repaired where a slip allowed, with what was repaired and what is still wrong."""

    plan: PlanDraft
    repairs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem remains."""
        return not self.problems


def _near(a: date, b: date) -> bool:
    return abs(a - b) <= SLIP


def check_plan(draft: PlanDraft, *, today: date, deadline: date, weekly_minutes: int | None) -> Checked:
    """Check a plan against the rules and repair its small slips (the draft itself is not changed)."""
    plan = draft.model_copy(deep=True)
    out = Checked(plan)
    spans = [[date.fromisoformat(p.start_date), date.fromisoformat(p.end_date)] for p in plan.phases]
    for index, (start, end) in enumerate(spans, start=1):
        if end < start:
            out.problems.append(f"phase {index} ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    if any(spans[i + 1][0] < spans[i][0] for i in range(len(spans) - 1)):
        out.problems.append("the phases are not in date order")
    if out.problems:
        return out
    _fit_ends(out, spans, today, deadline)
    _close_gaps(out, spans)
    for index, (start, end) in enumerate(spans, start=1):
        if end < start and not any(p.startswith(f"phase {index} ") for p in out.problems):
            out.problems.append(f"phase {index} is too short to fit between its neighbours")
    for phase, (start, end) in zip(plan.phases, spans, strict=True):
        phase.start_date, phase.end_date = start.isoformat(), end.isoformat()
    _check_milestones(out, today, deadline)
    _check_time(out, weekly_minutes)
    return out


def _fit_ends(out: Checked, spans: list[list[date]], today: date, deadline: date) -> None:
    first, last = spans[0][0], spans[-1][1]
    if first != today:
        if _near(first, today):
            spans[0][0] = today
            out.repairs.append(f"first phase moved to start today ({today.isoformat()})")
        else:
            out.problems.append(f"the first phase starts on {first.isoformat()}, not today ({today.isoformat()})")
    if last != deadline:
        if _near(last, deadline):
            spans[-1][1] = deadline
            out.repairs.append(f"last phase moved to end on the deadline ({deadline.isoformat()})")
        else:
            out.problems.append(f"the last phase ends on {last.isoformat()}, not on the deadline "
                                f"({deadline.isoformat()})")


def _close_gaps(out: Checked, spans: list[list[date]]) -> None:
    for index in range(1, len(spans)):
        expected = spans[index - 1][1] + timedelta(days=1)
        start = spans[index][0]
        if start == expected:
            continue
        days = (start - expected).days
        kind = f"a gap of {days} day(s)" if days > 0 else f"an overlap of {-days} day(s)"
        if _near(start, expected):
            spans[index][0] = expected
            out.repairs.append(f"phase {index + 1} moved to start on {expected.isoformat()} ({kind} closed)")
        else:
            out.problems.append(f"phase {index + 1} starts on {start.isoformat()}, {kind} after phase {index} "
                                f"ends on {spans[index - 1][1].isoformat()}; phases must run back to back")


def _check_milestones(out: Checked, today: date, deadline: date) -> None:
    dates = [date.fromisoformat(m.target_date) for m in out.plan.milestones]
    if any(dates[i + 1] < dates[i] for i in range(len(dates) - 1)):
        out.problems.append("the milestones are not in date order")
        return
    for index, (milestone, when) in enumerate(zip(out.plan.milestones, dates, strict=True), start=1):
        if today <= when <= deadline:
            continue
        bound = today if when < today else deadline
        if _near(when, bound):
            milestone.target_date = bound.isoformat()
            out.repairs.append(f"milestone {index} moved to {bound.isoformat()}")
        else:
            out.problems.append(f"milestone {index} ({when.isoformat()}) lies outside the plan "
                                f"({today.isoformat()} to {deadline.isoformat()})")


def _check_time(out: Checked, weekly_minutes: int | None) -> None:
    if not weekly_minutes:
        return
    for index, phase in enumerate(out.plan.phases, start=1):
        named = sum(action_minutes(a) for a in phase.weekly_actions)
        needed = max(phase.minutes_per_week, named)
        if needed > weekly_minutes * TIME_SLACK:
            out.problems.append(f"phase {index}'s weekly actions take about {needed} minutes a week, but the user "
                                f"has {weekly_minutes}")
