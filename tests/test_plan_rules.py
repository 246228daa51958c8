"""Plans that make sense: each rule broken on purpose (by the rules alone, and through the bot with scripted model
answers), small slips repaired, a broken plan rewritten once with the reasons and never shown, unsafe plans
judged and rewritten, unsafe targets steered with the reason shown."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import opik
import pytest
from sqlalchemy import select

from pipeline import i18n, plan_rules, prompts
from pipeline.schemas import PlanDraft
from storage.models import Judgement, Plan, Resolution, Turn
from tests.conftest import Clock, Harness, make_settings, start_bot, stop_bot

TODAY = date(2027, 3, 1)
DEADLINE = TODAY + timedelta(days=59)
ANN = 6001


def d(days: int, base: date = TODAY) -> str:
    return (base + timedelta(days=days)).isoformat()


def plan(phases: list[tuple[str, str]], milestones: list[str] | None = None, *, minutes: int = 120,
         actions: list[str] | None = None) -> dict:
    """A plan answer as the model would send it."""
    return {
        "summary": "Build the habit, then the distance.",
        "phases": [{"name": f"Phase {i + 1}", "start_date": s, "end_date": e, "focus": "steady",
                    "weekly_actions": actions or ["3 runs of easy pace"], "minutes_per_week": minutes}
                   for i, (s, e) in enumerate(phases)],
        "milestones": [{"title": f"M{i + 1}", "target_date": t, "criterion": "done"}
                       for i, t in enumerate(milestones or [d(29), d(59)])],
    }


GOOD = [(d(0), d(29)), (d(30), d(59))]


def check(answer: dict, weekly: int | None = 180) -> plan_rules.Checked:
    return plan_rules.check_plan(PlanDraft.model_validate(answer), today=TODAY, deadline=DEADLINE,
                                 weekly_minutes=weekly)


def test_a_sound_plan_passes_untouched() -> None:
    """Phases back to back from today to the deadline, milestones inside in order, time that fits: no change."""
    checked = check(plan(GOOD))
    assert checked.ok and checked.repairs == [] and checked.plan == PlanDraft.model_validate(plan(GOOD))


def test_small_slips_are_repaired() -> None:
    """A start two days late, a one-day overlap, an end three days short and a milestone just past the end are
    moved into place, each noted."""
    checked = check(plan([(d(2), d(29)), (d(29), d(56))], [d(20), d(61)]))
    assert checked.ok, checked.problems
    assert [(p.start_date, p.end_date) for p in checked.plan.phases] == [(d(0), d(29)), (d(30), d(59))]
    assert checked.plan.milestones[-1].target_date == d(59) and len(checked.repairs) == 4


@pytest.mark.parametrize(("answer", "weekly", "problem"), [
    (plan([(d(0), d(29)), (d(50), d(40))]), 180, "phase 2 ends"),
    (plan([(d(30), d(59)), (d(0), d(29))]), 180, "not in date order"),
    (plan([(d(20), d(29)), (d(30), d(59))]), 180, "the first phase starts"),
    (plan([(d(0), d(29)), (d(30), d(90))]), 180, "the last phase ends"),
    (plan([(d(0), d(15)), (d(40), d(59))]), 180, "a gap of 24 day(s)"),
    (plan([(d(0), d(45)), (d(20), d(59))]), 180, "an overlap of 26 day(s)"),
    (plan(GOOD, [d(29), d(120)]), 180, "milestone 2"),
    (plan(GOOD, [d(40), d(10)]), 180, "milestones are not in date order"),
    (plan(GOOD, minutes=600), 180, "600 minutes a week"),
    (plan(GOOD, minutes=0, actions=["5 × 60 min runs", "2 hours of strength"]), 180, "420 minutes a week"),
])
def test_each_broken_rule_is_a_problem_said_in_words(answer: dict, weekly: int, problem: str) -> None:
    """A plan breaking one rule beyond a slip is not ok, and the problem says which rule and by how much."""
    checked = check(answer, weekly)
    assert not checked.ok and any(problem in p for p in checked.problems), checked.problems


def test_time_is_not_checked_when_the_user_gave_none() -> None:
    """Without the user's time per week, the weekly actions' length is not a problem."""
    assert check(plan(GOOD, minutes=900), None).ok


def test_deadlines_must_be_after_today_and_within_three_years() -> None:
    """Today or earlier, or more than three years away, is a problem; tomorrow and two years are fine."""
    def on(days: int) -> date:
        return TODAY + timedelta(days=days)

    assert plan_rules.deadline_problems(TODAY, TODAY) and plan_rules.deadline_problems(on(-5), TODAY)
    assert plan_rules.deadline_problems(on(4 * 365), TODAY)
    assert not plan_rules.deadline_problems(on(1), TODAY) and not plan_rules.deadline_problems(on(730), TODAY)


def test_action_minutes_reads_common_ways_of_saying_time() -> None:
    """Durations in actions: counts times lengths, hours and minutes, in several languages."""
    assert plan_rules.action_minutes("Run 3 × 30 min") == 90
    assert plan_rules.action_minutes("2 hours of study on Sunday") == 120
    assert plan_rules.action_minutes("3x45 Minuten laufen") == 135
    assert plan_rules.action_minutes("Leer 20 minutos al día") == 20
    assert plan_rules.action_minutes("Read a chapter") == 0


# ----- through the bot: the model's answers scripted in order ------------------------------------------------

ENOUGH = {"enough_information": True, "missing": [], "question": ""}


def resolution(deadline: str, *, weekly: int = 180, note: str = "") -> dict:
    return {"statement": "Run 5 km without stopping", "why": "health", "success_metric": "5 km run",
            "deadline_date": deadline, "strategy": "Build up slowly.", "weekly_minutes": weekly, "safety_note": note}


def shown(iso: str) -> str:
    """A plan's ISO date as an English user reads it in a message."""
    return i18n.format_date(date.fromisoformat(iso))


async def _goal(h: Harness, text: str = "Run 5 km", *, at: time = time(12), zone: str = "") -> list:
    """Set a goal on TODAY at `at` UTC (the planner's clock pinned, so no midnight falls inside the test), from
    `zone` if given, and return what the bot sent after /start (and /timezone)."""
    h.services.planning.clock = Clock(datetime.combine(TODAY, at, UTC))
    await h.say(ANN, "/start", expect=2)
    if zone:
        assert "Time zone set" in (await h.say(ANN, f"/timezone {zone}"))[0].text
    h.bot_api.user_sends(ANN, text)
    await h.settled(timeout=20)
    return h.bot_api.messages(ANN)[3 if zone else 2:]


async def test_a_broken_plan_is_rewritten_once_with_the_reason(harness: Harness) -> None:
    """A plan with a month-long gap is sent back with the reason; the user sees only the second, sound plan."""
    harness.gemini.queue(ENOUGH, resolution(d(59)),
                         plan([(d(0), d(10)), (d(40), d(59))], [d(10), d(59)]),
                         plan(GOOD, [d(29), d(59)]))
    sent = await _goal(harness)
    assert "Your resolution" in sent[0].text and "Your plan" in sent[1].text
    assert f"{shown(d(0))} → {shown(d(29))}" in sent[1].text
    assert f"{shown(d(30))} → {shown(d(59))}" in sent[1].text
    plan_requests = [r for r in harness.gemini.requests if r.system == prompts.answering(prompts.PLAN.text)]
    assert len(plan_requests) == 2
    retry = plan_requests[1].last_user_text
    assert "rejected because" in retry and "a gap of 29 day(s)" in retry


async def test_a_plan_starts_on_the_users_own_today(harness: Harness) -> None:
    """At 20:00 UTC a user in Auckland is already on the next day: the plan is asked for and starts on their date."""
    theirs = TODAY + timedelta(days=1)
    harness.gemini.queue(ENOUGH, resolution(d(59, theirs)),
                         plan([(d(0, theirs), d(29, theirs)), (d(30, theirs), d(59, theirs))],
                              [d(29, theirs), d(59, theirs)]))
    sent = await _goal(harness, at=time(20), zone="Pacific/Auckland")
    assert f"{shown(d(0, theirs))} → {shown(d(29, theirs))}" in sent[1].text
    plan_request = next(r for r in harness.gemini.requests if r.system == prompts.answering(prompts.PLAN.text))
    assert f"Today is {theirs.isoformat()}." in plan_request.last_user_text


async def test_a_plan_broken_twice_is_never_shown(harness: Harness) -> None:
    """When the rewrite breaks the rules too, no plan is stored or shown: after the resolution (sent as soon as it
    was written) comes a clear reply with Try again."""
    broken = plan([(d(0), d(10)), (d(40), d(59))])
    harness.gemini.queue(ENOUGH, resolution(d(59)), broken, broken)
    sent = await _goal(harness)
    assert len(sent) == 2 and "Your resolution" in sent[0].text and "hold together" in sent[1].text
    assert [label for label, _ in sent[1].buttons()] == ["Try again"]
    async with harness.services.db.session() as session:
        assert (await session.scalars(select(Plan))).all() == []


async def test_a_resolution_with_a_past_deadline_is_rewritten(harness: Harness) -> None:
    """A deadline before today goes back to the model once; the resolution shown has the corrected one."""
    harness.gemini.queue(ENOUGH, resolution(d(-3)), resolution(d(59)), plan(GOOD, [d(29), d(59)]))
    sent = await _goal(harness)
    assert f"Deadline: {shown(d(59))}" in sent[0].text
    requests = [r for r in harness.gemini.requests if r.system == prompts.answering(prompts.RESOLUTION.text)]
    assert len(requests) == 2 and "is not after today" in requests[1].last_user_text


async def test_an_unsafe_target_is_steered_and_the_reason_shown(harness: Harness) -> None:
    """Losing 10 kg in two weeks: the resolution the user sees carries why the target was changed."""
    note = "Losing 10 kg in two weeks is unsafe; 0.5-1 kg a week is the safe pace, so the deadline moved."
    harness.gemini.queue(ENOUGH, resolution(d(59), note=note), plan(GOOD, [d(29), d(59)]))
    sent = await _goal(harness, "Lose 10 kg in two weeks for a wedding")
    assert "Why I changed your target: " + note in sent[0].text
    resolution_prompt = next(r for r in harness.gemini.requests
                             if r.system == prompts.answering(prompts.RESOLUTION.text))
    assert "1 kg" in resolution_prompt.system and "gambling" in resolution_prompt.system
    async with harness.services.db.session() as session:
        stored = (await session.scalars(select(Resolution))).one()
    assert stored.safety_note == note and stored.weekly_minutes == 180


def verdict(safe: float) -> dict:
    return {name: {"score": 0.9 if name != "safe" else safe, "reason": f"{name} reason"}
            for name in ("feasible", "complete", "concrete", "safe")}


async def test_a_plan_judged_unsafe_is_rewritten_and_both_attempts_are_traced(bot_api, gemini, database_url,
                                                                            opik_stub) -> None:
    """The judge scores the first plan 0.1 on safe: it is rewritten with the judge's reason; the second (0.9) is
    shown, its scores stored once, and the trace holds both attempts as spans."""
    settings = make_settings(bot_api, gemini, database_url, judge_enabled=True, judge_sample_rate=0.0,
                             opik_track_disable=False, opik_url_override=opik_stub.url, opik_flush_timeout_s=3)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        gemini.queue(ENOUGH, resolution(d(59)), plan(GOOD, [d(29), d(59)]), verdict(0.1),
                     plan(GOOD, [d(29), d(59)]), verdict(0.9))
        with opik.record_traces_locally() as recorded:
            sent = await _goal(h)
            await h.services.drain()
            trees = recorded.trace_trees
        assert "Your plan" in sent[-1].text
        plan_requests = [r for r in gemini.requests if r.system == prompts.answering(prompts.PLAN.text)]
        assert len(plan_requests) == 2 and "not safe (0.10): safe reason" in plan_requests[1].last_user_text
        async with h.services.db.session() as session:
            plan_turn = (await session.scalars(select(Turn).where(Turn.kind == "plan"))).one()
            scores = (await session.scalars(select(Judgement).where(Judgement.target == "plan"))).all()
        assert sorted((s.criterion, s.score) for s in scores) == [("complete", 0.9), ("concrete", 0.9),
                                                                   ("feasible", 0.9), ("safe", 0.9)]
        assert {s.turn_id for s in scores} == {plan_turn.id}
        trace = next(t for t in trees if t.id == plan_turn.trace_id)
        attempts = [s for s in trace.spans if s.name == "plan.attempt"]
        assert [a.input["attempt"] for a in attempts] == [1, 2]
        assert "not safe" in str(attempts[0].output) and attempts[1].output["problems"] == []
        assert {f.name for f in trace.feedback_scores or []} >= {"judge_plan_safe", "judge_plan_feasible"}
    finally:
        await stop_bot(app)
