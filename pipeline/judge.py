"""The LLM judge: scores resolutions, plans, a sample of coaching replies and quiet sessions.

Each criterion is a 0–1 feedback score, with the judge's reason, on the trace that produced the text
(and, for sessions, on the Opik thread). Judging runs after the reply was sent; it never raises. Its traces carry
the user's opaque id (so /delete finds them in Opik), and a user deleted while the judge worked gets nothing
written: no judgement rows, no usage, no scores in Opik.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import prompts
from pipeline.llm import LLMError, user_content
from pipeline.steps import Owner, Step, Steps
from pipeline.tracing import Feedback
from storage import goals, turns
from storage.db import Database
from storage.models import Judgement, Turn, User

logger = logging.getLogger(__name__)


class Criterion(BaseModel):
    """One criterion: a score from 0 (fails) to 1 (fully meets) and a one-sentence reason."""

    score: float = Field(ge=0, le=1)
    reason: str


class ResolutionVerdict(BaseModel):
    """SMART criteria of a resolution."""

    specific: Criterion
    measurable: Criterion
    achievable: Criterion
    relevant: Criterion
    time_bound: Criterion


class PlanVerdict(BaseModel):
    """Quality and safety of a plan."""

    feasible: Criterion
    complete: Criterion
    concrete: Criterion
    safe: Criterion


class ReplyVerdict(BaseModel):
    """Quality of a coaching reply."""

    helpful: Criterion
    empathetic: Criterion
    actionable: Criterion
    safe: Criterion


class SessionVerdict(BaseModel):
    """Quality of a whole coaching session (an Opik thread)."""

    session_quality: Criterion


VERDICTS: dict[str, tuple[type[BaseModel], prompts.Prompt]] = {
    "resolution": (ResolutionVerdict, prompts.JUDGE_RESOLUTION),
    "plan": (PlanVerdict, prompts.JUDGE_PLAN),
    "coaching": (ReplyVerdict, prompts.JUDGE_REPLY),
    "thread": (SessionVerdict, prompts.JUDGE_SESSION),
}


@dataclass(frozen=True)
class Score:
    """One judged criterion."""

    criterion: str
    score: float
    reason: str


def score_name(target: str, criterion: str) -> str:
    """The Opik feedback score name, e.g. `judge_plan_feasible`."""
    return f"judge_{target}_{criterion}"


async def verdict(step: Step, target: str, text: str, context: str) -> list[Score]:
    """The judge's scores for one text (`target` names the rubric); raises LLMError when the judge fails."""
    schema, prompt = VERDICTS[target]
    request = f"Context:\n{context[:6000]}\n\nText to judge:\n{text[:6000]}"
    result = await step.structured(schema, system=prompt.text, contents=[user_content(request)], temperature=0.0)
    return [Score(name, float(getattr(result, name).score), getattr(result, name).reason[:500])
            for name in schema.model_fields]


class Judge:
    """Runs the judge over stored coach turns and records the scores (database and Opik)."""

    def __init__(self, *, db: Database, steps: Steps, sample_rate: float = 0.2, enabled: bool = True,
                 rng: random.Random | None = None) -> None:
        self.enabled = enabled
        self.db = db
        self.steps = steps
        self.sample_rate = sample_rate
        self._rng = rng or random.Random()

    def wants(self, kind: str) -> bool:
        """Whether a message of this kind is judged (coaching replies are sampled)."""
        if not self.enabled:
            return False
        if kind in ("resolution", "plan"):
            return True
        return kind == "coaching" and self._rng.random() < self.sample_rate

    async def judge_turns(self, turn_ids: list[int]) -> int:
        """Judge the given coach turns (those the sampling picks); returns how many scores were recorded."""
        recorded = 0
        for turn_id in turn_ids:
            try:
                recorded += await self._judge_turn(turn_id)
            except Exception:
                logger.warning("judge.failed turn=%s", turn_id, exc_info=True)
        return recorded

    async def _judge_turn(self, turn_id: int) -> int:
        async with self.db.session() as session:
            turn = await session.get(Turn, turn_id)
            if turn is None or turn.role != "coach" or turn.kind not in ("resolution", "plan", "coaching"):
                return 0
            user = await session.get(User, turn.user_id)
            if user is None:
                return 0
            context = await self._context(session, turn)
        return await self._judge_and_record(turn.kind, turn.text, context, user_id=turn.user_id,
                                            opaque_id=user.opaque_id, turn_id=turn_id, trace_id=turn.trace_id,
                                            thread_id=turn.thread_id)

    async def judge_thread(self, user_id: int, thread_id: str) -> int:
        """Judge a finished session from its transcript; the score lands on the Opik thread."""
        async with self.db.session() as session:
            user = await session.get(User, user_id)
            if user is None:
                return 0
            thread = await turns.thread_turns(session=session, user_id=user_id, thread_id=thread_id, limit=40)
        if len(thread) < 2:
            return 0
        transcript = "\n".join(f"{t.role}: {t.text[:800]}" for t in thread)
        try:
            return await self._judge_and_record("thread", transcript, "A coaching session.", user_id=user_id,
                                                opaque_id=user.opaque_id, turn_id=None, trace_id=None,
                                                thread_id=thread_id)
        except Exception:
            logger.warning("judge.thread_failed thread=%s", thread_id, exc_info=True)
            return 0

    async def _judge_and_record(self, target: str, text: str, context: str, *, user_id: int, opaque_id: str,
                                turn_id: int | None, trace_id: str | None, thread_id: str | None) -> int:
        _, prompt = VERDICTS[target]
        owner = Owner(user_id=user_id, opaque_id=opaque_id)
        try:
            async with self.steps.run(f"judge.{target}", purpose="judge", owner=owner, input={"text": text[:2000]},
                                      metadata={"judged_trace": trace_id, "prompt": f"{prompt.name}@{prompt.version}"},
                                      tags=["judge"]) as step:
                scores = await verdict(step, target, text, context)
                step.set_output({s.criterion: s.score for s in scores})
                async with self.db.session() as session:
                    if not await _still_there(session, user_id, opaque_id):
                        logger.info("judge.user_deleted target=%s", target)
                        step.take_usage()  # the user's usage rows went with them
                        return 0
                    session.add_all([Judgement(user_id=user_id, turn_id=turn_id, trace_id=trace_id, target=target,
                                               criterion=s.criterion, score=s.score, reason=s.reason,
                                               prompt_version=prompt.version) for s in scores])
                    session.add_all(step.take_usage())
        except LLMError as exc:
            logger.warning("judge.llm_failed target=%s error=%s", target, exc.kind)
            return 0
        feedback = [
            Feedback(target_id, score_name(target, s.criterion), s.score, s.reason, thread=target == "thread")
            for s in scores
            for target_id in ([thread_id] if target == "thread" else [trace_id])
            if target_id
        ]
        if feedback:
            await asyncio.to_thread(self.steps.tracer.send_feedback, feedback)
        return len(scores)

    @staticmethod
    async def _context(session: AsyncSession, turn: Turn) -> str:
        goal = await goals.get_goal(session=session, goal_id=turn.goal_id or 0, user_id=turn.user_id)
        parts = [f"Goal: {goal.text}" if goal else "Goal: (unknown)"]
        for qa in (goal.clarifications if goal else []):
            parts.append(f"Q: {qa.get('q', '')} A: {qa.get('a', '')}")
        if turn.kind == "coaching":
            previous = await turns.turns_between(session=session, user_id=turn.user_id,
                                                after_id=max(0, (turn.id or 0) - 6), before_id=turn.id or 0)
            parts += [f"{t.role}: {t.text[:800]}" for t in previous]
        return "\n".join(parts)


async def _still_there(session: AsyncSession, user_id: int, opaque_id: str) -> bool:
    """Whether the user the work began for still exists (not deleted, the id not taken by someone new); the row is
    locked on PostgreSQL until the session ends, so a /delete waits for what is written with it."""
    user = await session.get(User, user_id, with_for_update=True)
    return user is not None and user.opaque_id == opaque_id
