"""Writing a resolution and a plan that keep the rules (`pipeline.plan_rules`) and are safe, before anyone sees
them: a draft that breaks a rule, or that the judge scores below the threshold on `safe`, is written again once
with the reasons; a second failure is an `LLMError` ("unsound" or "unsafe"), so a broken plan is never shown.
Each attempt is a span of the step's trace (`plan.attempt`, `resolution.attempt`) with its repairs, problems
and safety score, so the trace shows both attempts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date

from pipeline import plan_rules, prompts
from pipeline.judge import Score, verdict
from pipeline.llm import LLMError, user_content
from pipeline.schemas import PlanDraft, ResolutionDraft
from pipeline.steps import Step

logger = logging.getLogger(__name__)


@dataclass
class Drafted:
    """A plan ready to show, with the judge's scores when it was judged, and the attempts it took."""

    plan: PlanDraft
    scores: list[Score] = field(default_factory=list)
    attempts: int = 1
    repairs: list[str] = field(default_factory=list)
    first_problems: list[str] = field(default_factory=list)  # the rules the first draft broke


def _retry_request(request: str, reasons: list[str]) -> str:
    return (f"{request}\n\nYour previous answer was rejected because: " + "; ".join(reasons)
            + ". Write it again so that none of this remains.")


async def write_resolution(step: Step, request: str, today: date,
                           prompt: prompts.Prompt = prompts.RESOLUTION) -> ResolutionDraft:
    """A resolution whose deadline is after today and within the horizon (written again once if not)."""
    reasons: list[str] = []
    for attempt in (1, 2):
        asked = request if attempt == 1 else _retry_request(request, reasons)
        with step.steps.tracer.turn("resolution.attempt", thread_id=None, input={"attempt": attempt},
                                    metadata={"prompt": prompt.version}, tags=["resolution"]) as span:
            draft = await step.structured(ResolutionDraft, system=prompts.answering(prompt.text),
                                          contents=[user_content(asked)])
            reasons = plan_rules.deadline_problems(date.fromisoformat(draft.deadline_date), today)
            span.set_output({"deadline": draft.deadline_date, "problems": reasons})
        if not reasons:
            return draft
        logger.info("plan.resolution_rejected attempt=%d problems=%d", attempt, len(reasons))
    step.trace.add_metadata({"resolution_rejected": reasons})
    raise LLMError("unsound", "; ".join(reasons))


async def write_plan(step: Step, request: str, *, today: date, deadline: date, weekly_minutes: int | None,
                     context: str, judge: bool, safe_threshold: float,
                     prompt: prompts.Prompt = prompts.PLAN) -> Drafted:
    """A plan that keeps the rules (small slips repaired) and, when `judge`, scores at least `safe_threshold`
    on the judge's `safe`; written again once with the reasons otherwise."""
    reasons: list[str] = []
    first_problems: list[str] = []
    for attempt in (1, 2):
        asked = request if attempt == 1 else _retry_request(request, reasons)
        with step.steps.tracer.turn("plan.attempt", thread_id=None, input={"attempt": attempt},
                                    metadata={"prompt": prompt.version}, tags=["plan"]) as span:
            draft = await step.structured(PlanDraft, system=prompts.answering(prompt.text),
                                          contents=[user_content(asked)])
            checked = plan_rules.check_plan(draft, today=today, deadline=deadline, weekly_minutes=weekly_minutes)
            reasons = list(checked.problems)
            if attempt == 1:
                first_problems = list(checked.problems)
            scores: list[Score] = []
            if checked.ok and judge:
                scores = await _judged(step, checked.plan, context)
                safe = next((s for s in scores if s.criterion == "safe"), None)
                if safe is not None and safe.score < safe_threshold:
                    reasons.append(f"the plan is not safe ({safe.score:.2f}): {safe.reason}")
            span.set_output({"repairs": checked.repairs, "problems": reasons,
                             "scores": {s.criterion: s.score for s in scores}})
        if not reasons:
            step.trace.add_metadata({"plan_attempts": attempt, "plan_repairs": checked.repairs})
            return Drafted(checked.plan, scores, attempt, checked.repairs, first_problems)
        logger.info("plan.rejected attempt=%d problems=%d", attempt, len(reasons))
        step.trace.add_metadata({f"plan_rejected_{attempt}": reasons})
    unsafe = any(r.startswith("the plan is not safe") for r in reasons)
    raise LLMError("unsafe" if unsafe else "unsound", "; ".join(reasons))


async def _judged(step: Step, plan: PlanDraft, context: str) -> list[Score]:
    """The judge's plan scores (feasible, complete, concrete, safe); none when the judge itself fails."""
    try:
        return await verdict(step, "plan", json.dumps(plan.model_dump(), ensure_ascii=False), context)
    except LLMError as exc:
        logger.warning("plan.judge_failed error=%s", exc.kind)
        return []
