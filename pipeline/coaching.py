"""Coaching replies: the user's message answered with their goal, plan, progress and recent history in mind.

The user's own words (goal, answers, notes, the summary of older turns) reach the model as conversation
content, never inside the system instruction: the system instruction is Rein's prompt alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.genai import types
from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import prompts, views
from pipeline.guard import OutputGuard
from pipeline.llm import LLMError, model_content, user_content
from pipeline.replies import Reply
from pipeline.steps import Step
from pipeline.streaming import DraftSink
from pipeline.timezones import local_today
from storage import checkins as checkin_store
from storage import goals, turns
from storage.db import Database
from storage.models import Goal, Milestone, Plan, ProgressEntry, Resolution, Turn, User, utcnow

PROGRESS_IN_PROMPT = 7  # newest check-in answers the coach sees
CONTEXT_ACK = "Understood. I'll coach with this in mind."


@dataclass(frozen=True)
class CoachingInputs:
    """What a coaching prompt is built from, read in one session."""

    user: User
    goal: Goal
    plan: Plan | None
    resolution: Resolution | None
    milestones: list[Milestone]
    progress: list[ProgressEntry]
    history: list[Turn]
    backlog: bool  # more unsummarised turns than the window: fold the older ones into the summary
    waiting: list[Turn] | None = None  # the user's messages waiting for a reply, as the window shows them


def waiting_in(window: list[Turn], *, complete: bool) -> list[Turn] | None:
    """The user's unanswered messages after their last answered one, oldest first, as far as `window` (their
    newest turns, oldest first) shows; None when the window may not reach back far enough (`complete` is False
    and it holds no answered message)."""
    waiting: list[Turn] = []
    for turn in reversed(window):
        if turn.role != "user":
            continue
        if turn.answered:
            return list(reversed(waiting))
        waiting.append(turn)
    return list(reversed(waiting)) if complete else None


def with_waiting(history: list[Turn], waiting: list[Turn], limit: int) -> list[Turn]:
    """Recent history with every waiting message in it: turns from the first waiting one on are all kept,
    older ones fill the rest of `limit`."""
    merged = sorted({t.id or 0: t for t in [*history, *waiting]}.values(), key=lambda t: t.id or 0)
    first = waiting[0].id or 0 if waiting else 0
    newer = [t for t in merged if (t.id or 0) >= first] if waiting else merged[-limit:]
    older = [t for t in merged if (t.id or 0) < first] if waiting else []
    room = max(0, limit - len(newer))
    return [*(older[-room:] if room else []), *newer]


def gentle(user: User) -> bool:
    """Whether the coach stays gentle with this user: crisis care was given recently (`care_until` lies ahead)."""
    return user.care_until is not None and user.care_until > utcnow()


def context_contents(context: str) -> list[types.Content]:
    """The user's material as the opening exchange of the conversation (not the system instruction)."""
    return [user_content("My goal, plan and progress, for you to keep in mind:\n\n" + context),
            model_content(CONTEXT_ACK)]


class Coaching:
    """Reads a coaching prompt's inputs and writes the reply."""

    def __init__(self, *, db: Database, guard: OutputGuard, history_turns: int = 12) -> None:
        self.db = db
        self.guard = guard
        self.history_turns = history_turns

    async def inputs(self, session: AsyncSession, user: User) -> CoachingInputs | None:
        """Goal, plan, resolution, milestones, recent check-ins and history: four indexed queries whatever the
        number of users or turns; None when the user has no active goal."""
        assert user.id is not None
        goal, plan, resolution = await goals.goal_context(session=session, goal_id=user.active_goal_id or 0,
                                                          user_id=user.id)
        if goal is None:
            return None
        milestones = await goals.milestones(session=session, plan_id=plan.id or 0) if plan else []
        progress = await checkin_store.recent_progress(session=session, user_id=user.id, limit=PROGRESS_IN_PROMPT)
        # One read serves the prompt and the backlog check: more than 2N unsummarised turns → summarise.
        window = await turns.recent_turns(session=session, user_id=user.id, limit=2 * self.history_turns + 1)
        backlog = len(window) > 2 * self.history_turns and (window[0].id or 0) > user.summary_upto_turn_id
        return CoachingInputs(user=user, goal=goal, plan=plan, resolution=resolution, milestones=milestones,
                              progress=progress, history=window[-self.history_turns:], backlog=backlog,
                              waiting=waiting_in(window, complete=len(window) <= 2 * self.history_turns))

    async def reply(self, step: Step, turn: Turn, inputs: CoachingInputs,
                    waiting: list[Turn] | None = None, drafts: DraftSink | None = None) -> list[Reply]:
        """Answer `turn` (stored already) together with the messages `waiting` before it (all of them reach the
        model, in order) and store the answer, in one transaction with the step's usage; with `drafts`, the
        answer is shown there while it is written."""
        user = inputs.user
        history = with_waiting(inputs.history, [*(waiting or []), turn], self.history_turns)
        context = views.coaching_context(inputs.goal, inputs.resolution, inputs.plan, inputs.milestones,
                                         user.summary, inputs.progress, today=local_today(user.timezone))
        contents = [*context_contents(context), *views.history_contents(history, upto=turn)]
        system = prompts.coach_system(gentle=gentle(user))
        text = self.guard.check(await step.text(system=system, contents=contents, drafts=drafts, guard=self.guard),
                                user=user.opaque_id)
        async with self.db.session() as session:  # the user row read above is current: this turn holds its lock
            written = await turns.add_turn(session=session, user=user, role="coach", kind="coaching", text=text,
                                           trace_id=step.trace_id)
            await turns.mark_answered(session=session, turn_id=turn.id or 0)
            await turns.mark_all_answered(session=session, user_id=user.id or 0,
                                          turn_ids=[t.id or 0 for t in waiting or [] if t.id != turn.id])
            session.add_all(step.take_usage())
        return [Reply.plain(text, kind="coaching", turn_id=written.id)]

    async def inputs_for(self, user: User) -> CoachingInputs:
        """The inputs read in a session of their own (a retry: nothing was read for it yet)."""
        async with self.db.session() as session:
            inputs = await self.inputs(session, user)
        if inputs is None:
            raise LLMError("internal", "no active goal")
        return inputs
