"""The conversation: each text the user sends is stored, then answered by the step their stage calls for.

Crisis care comes first: every text passes the crisis screen before anything else happens to it (a hit gets
the care reply at once, without the model), and a text that reaches an LLM step is also classified by the
model beside its reply; a risk it sees replaces the reply with care (`pipeline.care`).

Bursts are read together: a text with newer texts of the same user waiting behind it is stored and left for
them, and the last one answers every message still waiting, in one LLM turn that sees them all in order. What
the flood guard holds back is answered by a follow-up once its window allows (`pipeline.followups`); what was
waiting when the process stopped is answered after it starts again (`answer_waiting`, once: the newest
message's `answered` marker is written with the reply).

State lives in the database, so a restart resumes exactly where the user was. What the user wrote is stored
before the LLM is asked, so a failure loses nothing and "Try again" can finish the turn. Every LLM step runs
through `Steps.run` (trace, usage, flood guard); a failure becomes a clear reply with a "Try again" button.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import limits, safety, speaker, texts
from pipeline.care import Care
from pipeline.coaching import Coaching, CoachingInputs
from pipeline.followups import FollowUps
from pipeline.i18n import N_, _, current
from pipeline.llm import LLMError
from pipeline.memory import Memory
from pipeline.planning import Planning
from pipeline.ratelimit import FloodNotice
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
WAITING_READ = 50  # newest waiting messages one reply reads at most
FLOOD_NOTICE = N_("That's a lot of messages at once. I'm keeping every one and will answer them together.")

# Takes a text that answers what a check-in asked the user; None lets the coach have it.
Answers = Callable[[Speaker, str], Awaitable[list[Reply] | None]]
# Whether newer texts of the user wait behind the one being handled (they answer it with theirs).
More = Callable[[], bool]
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
                 max_messages_per_day: int = 500, followups: FollowUps | None = None,
                 flood_notice: FloodNotice | None = None) -> None:
        self.db = db
        self.max_messages_per_day = max_messages_per_day  # texts stored per user per UTC day (`pipeline.limits`)
        self.followups = followups or FollowUps()
        self.flood_notice = flood_notice
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
                      counted: bool = False, more: More | None = None) -> list[Reply]:
        """A text message: stored first, then answered according to the user's stage. `answers` takes a text
        that answers what a check-in asked (the user's read says whether one waits). Past the day's cap on stored
        texts nothing is stored or asked of the model (`counted`: this text was counted already). With `more`
        saying newer texts wait behind it, it is stored and left for them: the last one answers all together."""
        text = clean_text(text)
        if not text:
            empty = Reply.plain(_("That message was empty. Write me a few words and I'll answer."))
            return [empty, *await self.answer_rest(who, more)]
        hit = safety.screen(text)  # before anything else: no storage step, no check-in answer, no model
        if hit is not None:
            return await self.care.screened(who, text, hit)
        notice = ([Reply.plain(_(FLOOD_NOTICE))] if self.flood_notice is not None
                  and self.flood_notice.note(who.telegram_id) else [])
        later = more is not None and more()
        async with self._admission, self.db.session() as session:
            user, awaiting = await speaker.load_awaiting(session, who)
            admission = limits.Admission.STORE if counted else limits.admit(user, self.max_messages_per_day)
            if admission is not limits.Admission.STORE:
                session.add(user)
            else:
                handover = answers is not None and awaiting is not None
                stored = None if handover else await self._store_text(session, who, user, text, read=not later)
        if admission is not limits.Admission.STORE:  # past the day's cap: nothing stored; what waits is answered
            logger.info("coach.over_daily_cap notified=%s", admission is limits.Admission.NOTIFY)
            over = [limits.over_cap_notice(self.max_messages_per_day)] if admission is limits.Admission.NOTIFY else []
            return [*over, *await self.answer_rest(who, more)]
        if stored is None:  # rare: a check-in asked this user something
            assert answers is not None
            taken = await answers(who, text)
            if taken is None:
                return [*notice, *await self.on_text(who, text, counted=True, more=more)]
            return [*notice, *taken, *await self.answer_rest(who, more)]
        if isinstance(stored, list):
            return [*notice, *stored, *await self.answer_rest(who, more)]
        if later:
            return notice
        user, turn, inputs = stored
        waiting = inputs.waiting if inputs is not None else None
        return [*notice, *await self._answer(who, user, turn, inputs,
                                             None if waiting is None else [*waiting, turn])]

    async def answer_waiting(self, who: Speaker) -> list[Reply]:
        """Answer every message of the user still waiting for a reply, in one turn (none waiting: nothing). For
        follow-ups and the start-up recovery: the caller holds the user's lock."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            waiting = await turns.waiting_turns(session=session, user_id=user.id or 0, limit=WAITING_READ)
        if not waiting:
            return []
        return await self._answer(who, user, waiting[-1], None, waiting)

    async def users_waiting(self, *, active_since: datetime, limit: int = 500) -> list[Speaker]:
        """Users with messages stored and never answered (the process stopped first), active since then."""
        async with self.db.session() as session:
            rows = await turns.users_waiting(session=session, active_since=active_since, limit=limit)
        return [Speaker(telegram_id=u.telegram_id, chat_id=u.chat_id, language_code=u.language_code) for u in rows]

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
        """The "Try again" button: finish an unanswered turn (with any waiting after it), if it is still the
        newest."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            latest = await turns.latest_user_turn(session=session, user_id=user.id or 0)
        if latest is None or latest.id != turn_id or latest.answered:
            return [Reply.plain(_("That message has already been answered, or a newer one replaced it."))]
        return await self.answer_waiting(who)

    async def answer_rest(self, who: Speaker, more: More | None) -> list[Reply]:
        """After a message that took no LLM turn of its own (a refused file too): the messages waiting before it get
        their answer, unless newer messages wait to give it."""
        if more is not None and more():
            return []
        return await self.answer_waiting(who)

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

    async def _store_text(self, session: AsyncSession, who: Speaker, user: User, text: str, *,
                          read: bool = True) -> list[Reply] | tuple[User, Turn, CoachingInputs | None]:
        """Store a text in the user's session: the reason for a rating (replies), or the user turn with what a
        coaching prompt needs (read here, in the same session, when `read`: it is answered now)."""
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
        if read and kind == "coaching" and not self.steps.flooded(who.telegram_id):
            inputs = await self.coaching.inputs(session, user)
        session.add(user)
        turn = await turns.add_turn(session=session, user=user, role="user", kind=kind, text=text)
        return user, turn, inputs

    async def _answer(self, who: Speaker, user: User, turn: Turn, inputs: CoachingInputs | None,
                      waiting: list[Turn] | None = None) -> list[Reply]:
        """Answer a stored user turn with the step of its kind, together with every message waiting before it
        (`waiting` ends with `turn`; None: read them)."""
        if waiting is None:
            async with self.db.session() as session:
                waiting = await turns.waiting_turns(session=session, user_id=user.id or 0, limit=WAITING_READ)
        earlier = [t for t in waiting if (t.id or 0) < (turn.id or 0)]
        step: StepFn
        if turn.kind == "coaching":
            async def coach(who: Speaker, step: Step, turn: Turn | None) -> list[Reply]:
                assert turn is not None
                read = inputs if inputs is not None else await self.coaching.inputs_for(user)
                if read.backlog:
                    self.memory.note_backlog(who)
                return await self.coaching.reply(step, turn, read, earlier, drafts=who.drafts)
            step = coach
        else:
            base = self.planning.make_plan if turn.kind == "adjust" else self.planning.clarify

            async def plan_step(who: Speaker, step: Step, turn: Turn | None) -> list[Reply]:
                replies = await base(who, step, _together(turn, earlier))
                async with self.db.session() as session:
                    await turns.mark_all_answered(session=session, user_id=user.id or 0,
                                                  turn_ids=[t.id or 0 for t in earlier])
                return replies
            step = plan_step if earlier else base
        assert turn.id is not None
        trace_input: dict[str, Any] = {"message": turn.text}
        if earlier:
            trace_input["waiting"] = [t.text for t in earlier]
        return await self._run(who, turn.kind, trace_input, step, turn=turn, user=user,
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
        except Flooded as exc:  # held back, never dropped: answered once the window allows
            self.followups.schedule(who, exc.retry_after_s)
            return []
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


def _together(turn: Turn | None, earlier: list[Turn]) -> Turn | None:
    """The turn a planning step answers: with messages waiting before it, one turn holding all their words (an
    adjustment asked in three messages is one request); never stored."""
    if turn is None or not earlier:
        return turn
    return Turn(id=turn.id, user_id=turn.user_id, goal_id=turn.goal_id, role=turn.role, kind=turn.kind,
                text="\n".join(t.text for t in [*earlier, turn]), thread_id=turn.thread_id)
