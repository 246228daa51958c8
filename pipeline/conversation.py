"""The conversation: each text the user sends is stored, then answered by the step their stage calls for.

Crisis care comes first: every text passes the crisis screen before anything else happens to it (a hit gets
the care reply at once, without the model), and a text that reaches an LLM step is also classified by the
model beside its reply; a risk it sees replaces the reply with care (`pipeline.care`).

State lives in the database, so a restart resumes exactly where the user was. What the user wrote is stored
before the LLM is asked, so a failure loses nothing and "Try again" can finish the turn. Every LLM step runs
through `Steps.run` (trace, usage, flood guard); a failure becomes a clear reply with a "Try again" button.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import limits, safety, speaker, texts
from pipeline.care import Care
from pipeline.coaching import Coaching, CoachingInputs
from pipeline.i18n import _, current
from pipeline.llm import LLMError
from pipeline.memory import Memory
from pipeline.planning import Planning
from pipeline.ratings import Ratings
from pipeline.replies import Button, Reply
from pipeline.speaker import Speaker, clean_text
from pipeline.steps import Flooded, Owner, Step, Steps
from storage import goals, turns, users
from storage.db import Database
from storage.models import Stage, Turn, User

logger = logging.getLogger(__name__)

# Messages being stored and read for their prompt at once: in a burst, the first messages reach the LLM (and
# their replies Telegram's send queue) while later ones are still being read (docs/PERFORMANCE.md, B1).
ADMISSION = 8

# Takes a text that answers what a check-in asked the user; None lets the coach have it.
Answers = Callable[[Speaker, str], Awaitable[list[Reply] | None]]
# One LLM step of the conversation: the speaker, the open step and the user turn it answers (if any).
StepFn = Callable[[Speaker, Step, Turn | None], Awaitable[list[Reply]]]

KIND_OF_STAGE = {
    Stage.NEW: "goal",
    Stage.CLARIFYING: "answer",
    Stage.PLAN_REVIEW: "adjust",
    Stage.ADJUSTING: "adjust",
    Stage.COACHING: "coaching",
}


class Conversation:
    """Routes texts and the step buttons (Skip, Regenerate, Try again) to planning and coaching."""

    def __init__(self, *, db: Database, steps: Steps, planning: Planning, coaching: Coaching, memory: Memory,
                 ratings: Ratings, care: Care, classify: bool = True, classify_timeout_s: float = 8.0,
                 max_messages_per_day: int = 500) -> None:
        self.db = db
        self.max_messages_per_day = max_messages_per_day  # texts stored per user per UTC day (`pipeline.limits`)
        self.care = care
        self.classify = classify  # layer 2 (the model's risk classification) beside every LLM reply to a text
        self.classify_timeout_s = classify_timeout_s
        self.steps = steps
        self.planning = planning
        self.coaching = coaching
        self.memory = memory
        self.ratings = ratings
        self._admission = asyncio.Semaphore(ADMISSION)

    async def start(self, who: Speaker) -> list[Reply]:
        """/start: welcome, then ask for the goal (or remind a returning user where they are)."""
        async with self.db.session() as session:
            stage = (await speaker.load(session, who)).stage
        if stage == Stage.NEW:
            return [Reply.plain(_(texts.WELCOME)), Reply.plain(_(texts.ASK_GOAL))]
        return [Reply.plain(_("Welcome back! {hint}", hint=texts.stage_hint(stage)))]

    async def on_text(self, who: Speaker, text: str, *, answers: Answers | None = None,
                      counted: bool = False) -> list[Reply]:
        """A text message: stored first, then answered according to the user's stage. `answers` takes a text
        that answers what a check-in asked (the user's read says whether one waits). Past the day's cap on stored
        texts nothing is stored or asked of the model (`counted`: this text was counted already)."""
        text = clean_text(text)
        if not text:
            return [Reply.plain(_("That message was empty. Write me a few words and I'll answer."))]
        hit = safety.screen(text)  # before anything else: no storage step, no check-in answer, no model
        if hit is not None:
            return await self.care.screened(who, text, hit)
        async with self._admission, self.db.session() as session:
            user, awaiting = await speaker.load_awaiting(session, who)
            admission = limits.Admission.STORE if counted else limits.admit(user, self.max_messages_per_day)
            if admission is not limits.Admission.STORE:
                session.add(user)
                logger.info("coach.over_daily_cap notified=%s", admission is limits.Admission.NOTIFY)
                notice = limits.over_cap_notice(self.max_messages_per_day)
                return [notice] if admission is limits.Admission.NOTIFY else []
            handover = answers is not None and awaiting is not None
            stored = None if handover else await self._store_text(session, who, user, text)
        if stored is None:  # rare: a check-in asked this user something
            assert answers is not None
            taken = await answers(who, text)
            return taken if taken is not None else await self.on_text(who, text, counted=True)
        if isinstance(stored, list):
            return stored
        user, turn, inputs = stored
        return await self._answer(who, user, turn, inputs)

    async def over_daily_cap(self, who: Speaker) -> list[Reply] | None:
        """For what must not even be read past the day's cap (a voice note or photo the model would transcribe): the
        notice (once) or nothing when the user is at the cap, counting it; None when there is room (`on_text`
        counts the text then)."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            today = limits.today()
            if user.messages_day != today or user.messages_today < self.max_messages_per_day:
                return None
            admission = limits.admit(user, self.max_messages_per_day, today)
            session.add(user)
        return [limits.over_cap_notice(self.max_messages_per_day)] if admission is limits.Admission.NOTIFY else []

    async def retry(self, who: Speaker, turn_id: int) -> list[Reply]:
        """The "Try again" button: finish an unanswered turn, if it is still the newest."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            latest = await turns.latest_user_turn(session=session, user_id=user.id or 0)
        if latest is None or latest.id != turn_id or latest.answered:
            return [Reply.plain(_("That message has already been answered, or a newer one replaced it."))]
        return await self._answer(who, user, latest, None)

    async def skip_clarification(self, who: Speaker, goal_id: int) -> list[Reply]:
        """The "Skip, make my plan" button."""
        refused = await self.planning.can_skip(who, goal_id)
        if refused is not None:
            return [refused]
        return await self._run(who, "plan", {"action": "skip"}, self.planning.make_plan,
                               retry=Button(_(texts.TRY_AGAIN), "skip", goal_id))

    async def plan_action(self, who: Speaker, action: str, plan_id: int) -> list[Reply]:
        """Accept, Regenerate or Adjust on a plan the user owns."""
        replies = await self.planning.plan_action(who, action, plan_id)
        if replies is not None:
            return replies
        return await self._run(who, "plan", {"action": "regenerate"}, self.planning.make_plan,
                               retry=Button(_(texts.TRY_AGAIN), "regenerate", plan_id))

    # ----- storing and answering a text -------------------------------------------------------------

    async def _store_text(self, session: AsyncSession, who: Speaker, user: User,
                          text: str) -> list[Reply] | tuple[User, Turn, CoachingInputs | None]:
        """Store a text in the user's session: the reason for a rating (replies), or the user turn with what a
        coaching prompt needs (read here, in the same session)."""
        if user.pending_rating_id is not None:
            return await self.ratings.save_reason(session, user, text)
        if user.thread_closed:  # the last conversation went quiet and was scored: a new one starts
            user.thread_id = users.new_thread_id(user.opaque_id)
            user.thread_closed = False
        kind = KIND_OF_STAGE.get(user.stage, "coaching")  # type: ignore[call-overload]
        if kind == "goal":
            await goals.create_goal(session=session, user=user, text=text)
            user.stage = Stage.CLARIFYING
            user.clarify_rounds = 0
            user.thread_id = users.new_thread_id(user.opaque_id)
        elif kind == "answer":
            await self.planning.record_answer(session, user, text)
        elif user.stage == Stage.ADJUSTING:
            user.stage = Stage.PLAN_REVIEW
        # A coaching turn reads what its prompt needs here, in the session that stores the message (not for a
        # user over the flood guard's cap: that turn gets no LLM call).
        inputs = None
        if kind == "coaching" and not self.steps.flooded(who.telegram_id):
            inputs = await self.coaching.inputs(session, user)
        session.add(user)
        turn = await turns.add_turn(session=session, user=user, role="user", kind=kind, text=text)
        return user, turn, inputs

    async def _answer(self, who: Speaker, user: User, turn: Turn, inputs: CoachingInputs | None) -> list[Reply]:
        """Answer a stored user turn with the step of its kind."""
        step: StepFn
        if turn.kind == "coaching":
            async def coach(who: Speaker, step: Step, turn: Turn | None) -> list[Reply]:
                assert turn is not None
                read = inputs if inputs is not None else await self.coaching.inputs_for(user)
                if read.backlog:
                    self.memory.note_backlog(who)
                return await self.coaching.reply(step, turn, read, drafts=who.drafts)
            step = coach
        else:
            step = self.planning.make_plan if turn.kind == "adjust" else self.planning.clarify
        assert turn.id is not None
        return await self._run(who, turn.kind, {"message": turn.text}, step, turn=turn, user=user,
                               retry=Button(_(texts.TRY_AGAIN), "retry", turn.id), screen=self.classify)

    async def _run(self, who: Speaker, kind: str, trace_input: dict[str, Any], fn: StepFn, *, retry: Button,
                   turn: Turn | None = None, user: User | None = None, screen: bool = False) -> list[Reply]:
        """Run one LLM step; on failure, answer clearly and offer a retry. With `screen`, the model classifies the
        user's text for risk beside the step, and a risk it sees replaces the step's replies with care."""
        if user is None:
            async with self.db.session() as session:
                user = await speaker.load(session, who)
        owner = Owner(user.id, user.opaque_id, user.thread_id, answers=who.telegram_id)
        trace_id = None
        try:
            async with self.steps.run(f"coach.{kind}", purpose=kind, owner=owner, input=trace_input,
                                      metadata={"stage": user.stage, "goal_id": user.active_goal_id},
                                      tags=[kind]) as step:
                trace_id = step.trace_id
                if screen and turn is not None:
                    replies = await self._classified(who, step, turn, fn)
                else:
                    replies = await fn(who, step, turn)
                step.set_output({"reply": "\n\n".join(r.text for r in replies)})
        except Flooded as exc:
            return [Reply.plain(_(texts.SLOW_DOWN), kind="error", buttons=[[retry]])] if exc.notify else []
        except LLMError as exc:
            logger.warning("coach.llm_failed kind=%s error=%s trace=%s", kind, exc.kind, trace_id)
            buttons = [] if exc.kind == "blocked" else [[retry]]
            return [Reply.plain(texts.error_text(exc.kind), kind="error",
                                buttons=buttons)]
        except Exception:
            logger.exception("coach.step_failed kind=%s trace=%s", kind, trace_id)
            return [Reply.plain(texts.error_text("internal"), kind="error", buttons=[[retry]])]
        return replies

    async def _classified(self, who: Speaker, step: Step, turn: Turn, fn: StepFn) -> list[Reply]:
        """The step and the model's risk classification of the user's text, side by side (the reply waits for
        the classification at most `classify_timeout_s` from the start). A risk withholds the step's replies
        (their stored turns are removed: never shown) and gives care; no verdict (a failure, a time-out) lets
        the replies through."""
        started = asyncio.get_running_loop().time()
        task = asyncio.create_task(safety.classify(step, turn.text))
        try:
            replies = await fn(who, step, turn)
        except LLMError:
            verdict = await self._verdict(task, started)
            if verdict.category is None:
                raise
            return await self._model_care(who, step, turn, verdict.category, [])
        except BaseException:
            task.cancel()  # the turn failed otherwise: no verdict is waited for
            raise
        verdict = await self._verdict(task, started)
        step.trace.add_metadata({"risk_check": verdict.category or verdict.failed or "none",
                                 "risk_check_ms": round(verdict.seconds * 1000)})
        if verdict.category is None:
            return replies
        return await self._model_care(who, step, turn, verdict.category, replies)

    async def _verdict(self, task: asyncio.Task[safety.Verdict], started: float) -> safety.Verdict:
        remaining = self.classify_timeout_s - (asyncio.get_running_loop().time() - started)
        done, _pending = await asyncio.wait({task}, timeout=max(0.0, remaining))
        if not done:
            task.cancel()
            logger.warning("safety.classify_timeout seconds=%.1f", self.classify_timeout_s)
            return safety.Verdict(None, failed="timeout", seconds=self.classify_timeout_s)
        return task.result()

    async def _model_care(self, who: Speaker, step: Step, turn: Turn, category: str,
                          withheld: list[Reply]) -> list[Reply]:
        ids = [r.turn_id for r in withheld if r.turn_id is not None]
        if ids:
            async with self.db.session() as session:
                await turns.delete_coach_turns(session=session, user_id=turn.user_id, turn_ids=ids)
        return await self.care.give(who, category=category, language=current(), layer="model",
                                    trace=step.trace, answered_turn_id=turn.id)
