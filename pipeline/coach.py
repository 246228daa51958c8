"""The coach: goal → clarification → resolution → plan → coaching, one stored stage per user.

Every method takes who is speaking and returns the replies to send. State lives in the database, so a
restart resumes exactly where the user was. LLM calls run outside database sessions; what the user wrote
is stored before the LLM is asked, so a failure loses nothing and a "Try again" can finish the turn.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.genai import types

from pipeline import logcontext, prompts
from pipeline.guard import OutputGuard
from pipeline.llm import (
    LLM,
    LLMError,
    Usage,
    collect_usage,
    drain_usage,
    estimate_cost,
    model_content,
    user_content,
)
from pipeline.ratelimit import SlidingWindow
from pipeline.replies import Button, Para, Reply
from pipeline.schedule import schedule_menu
from pipeline.schemas import ClarifyDecision, PlanDraft, ResolutionDraft
from pipeline.tracing import Feedback, Tracer, TurnTrace
from storage import checkins as checkin_store
from storage import repository as repo
from storage.db import Database
from storage.models import Goal, LLMUsage, Milestone, Plan, ProgressEntry, Resolution, Stage, Turn, User

logger = logging.getLogger(__name__)

# The user row a turn already loaded, for the step it runs (each update is handled in its own task).
_TURN_USER: ContextVar[User | None] = ContextVar("rein_turn_user", default=None)

MAX_TEXT = 4000
PROGRESS_IN_PROMPT = 7  # newest check-in answers the coach sees
MAX_INPUT = 4096  # Telegram's own limit: a user's message is stored whole
USER_RATING = "user_rating"  # Opik feedback score name: the user's 1–5 rating of one coach message

ERROR_TEXT = {
    "busy": "The coaching model is overloaded right now. Your message is saved: tap Try again in a minute.",
    "unavailable": "I couldn't reach the coaching model just now. Your message is saved: tap Try again.",
    "timeout": "The coaching model took too long to answer. Your message is saved: tap Try again.",
    "invalid": "The coaching model's answer came back garbled. Your message is saved: tap Try again.",
    "empty": "The coaching model returned an empty answer. Your message is saved: tap Try again.",
    "blocked": "The coaching model declined to answer that for safety reasons. Could you put it another way?",
    "internal": "Something went wrong on my side. Your message is saved: tap Try again.",
}

WELCOME = (
    "Hi, I'm Rein, your goal coach. I help you turn something you want to change into a concrete plan, "
    "then check in and keep you on track."
)
ASK_GOAL = "What do you want to achieve? Tell me in a sentence or two, e.g. \"get fit\" or \"learn Spanish\"."
EXPIRED = "This button has expired."
SLOW_DOWN = ("You're writing faster than I can coach. I've kept every message: give me a minute, then "
             "tap Try again or send your next one, and I'll answer with all of it in mind.")


RATEABLE = frozenset({"question", "resolution", "plan", "coaching", "checkin", "review", "session"})
SESSION_RATING = "session_rating"  # Opik thread score: the user's 1–5 answer to "How was this session?"
SESSION_PROMPT = "How was this session? Tap a star: it helps me coach you better."
ASK_REASON = "Sorry that wasn't helpful. What would have helped? Just write it, or tap Skip."


@dataclass
class RateOutcome:
    """What a rating press did: `ok` False means the data was not the user's or not valid."""

    ok: bool
    value: int = 0
    followup: list[Reply] | None = None


@dataclass(frozen=True)
class ClosedThread:
    """A conversation that went quiet: its thread is scored; `prompt` asks the user to rate it."""

    who: Who
    user_id: int
    thread_id: str
    prompt: Reply | None


@dataclass(frozen=True)
class CoachingInputs:
    """What a coaching prompt is built from, read in one session."""

    user: User
    goal: Goal
    plan: Plan | None
    resolution: Resolution | None
    stones: list[Milestone]
    progress: list[ProgressEntry]
    history: list[Turn]
    backlog: bool  # more unsummarised turns than the window: compact after the reply


@dataclass(frozen=True)
class Who:
    """Who is speaking: the Telegram user, their private chat and their client language."""

    telegram_id: int
    chat_id: int
    language_code: str | None = None


# Messages being stored and read for their prompt at once (see Coach._admission).
ADMISSION = 8

# Takes a text that answers what a check-in asked the user; None lets the coach have it.
Answers = Callable[[Who, str], Awaitable[list[Reply] | None]]


def clean_text(text: str) -> str:
    """User text with control and zero-width characters removed, trimmed and capped."""
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\n\t" or category not in ("Cc", "Cf") or char in "\u200d\u200c\u200e\u200f":
            kept.append(char)
    cleaned = re.sub(r"\n{3,}", "\n\n", "".join(kept)).strip()
    if not any(unicodedata.category(char)[0] not in "CZ" for char in cleaned):
        return ""  # only joiners, marks or spaces: nothing to answer
    return cleaned[:MAX_INPUT]


class Coach:
    """The conversation logic; no Telegram here."""

    def __init__(self, *, db: Database, llm: LLM, tracer: Tracer, history_turns: int = 12,
                 max_clarify_rounds: int = 3, llm_calls_per_minute: int = 0) -> None:
        self.db = db
        self.llm = llm
        self.tracer = tracer
        self.history_turns = history_turns
        self.max_clarify_rounds = max_clarify_rounds
        # Per-user cap on LLM turns (0: none); what the user wrote is stored before the check.
        self.limiter = SlidingWindow(llm_calls_per_minute) if llm_calls_per_minute else None
        self.guard = OutputGuard()
        self._sync_lock = asyncio.Lock()
        self._compact_due: set[int] = set()  # users whose history outgrew the window (checked per coaching turn)
        # Messages are stored and their prompts read a few at a time, in arrival order: in a burst, the first
        # messages reach the LLM (and their replies Telegram's send queue) while later ones are still being
        # read, instead of every message waiting for all the others' reads (docs/PERFORMANCE.md, B1).
        self._admission = asyncio.Semaphore(ADMISSION)

    # ----- entry points -------------------------------------------------------------------------

    async def start(self, who: Who) -> list[Reply]:
        """/start: welcome, then ask for the goal (or remind a returning user where they are)."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            stage = user.stage
        if stage == Stage.NEW:
            return [Reply.plain(WELCOME), Reply.plain(ASK_GOAL)]
        return [Reply.plain(f"Welcome back! {self._stage_hint(stage)}")]

    async def on_text(self, who: Who, text: str, *, answers: Answers | None = None) -> list[Reply]:
        """A text message: stored first, then answered according to the user's stage. `answers` takes a text
        that answers what a check-in asked (the user's read says whether one waits; None: let it pass)."""
        text = clean_text(text)
        if not text:
            return [Reply.plain("That message was empty. Write me a few words and I'll answer.")]
        async with self._admission, self.db.session() as session:
            user, awaiting = await self._speaker(session, who)
            handover = answers is not None and awaiting is not None
            stored = None if handover else await self._store_text(session, who, user, text)
        if stored is None:  # rare: a check-in asked this user something
            assert answers is not None
            taken = await answers(who, text)
            return taken if taken is not None else await self.on_text(who, text)
        if isinstance(stored, list):
            return stored
        user, turn, inputs = stored
        assert turn.id is not None
        return await self._advance(who, turn.id, loaded=(user, turn), inputs=inputs)

    async def _store_text(self, session: Any, who: Who, user: User,
                          text: str) -> list[Reply] | tuple[User, Turn, CoachingInputs | None]:
        """Store a text in the user's session: the reason for a rating (replies), or the user turn with what a
        coaching prompt needs (read here, in the same session)."""
        if user.pending_rating_id is not None:
            return await self._save_reason(session, user, text)
        if user.thread_closed:  # the last conversation went quiet and was scored: a new one starts
            user.thread_id = repo.new_thread_id(user.opaque_id)
            user.thread_closed = False
        kind = {
            Stage.NEW: "goal",
            Stage.CLARIFYING: "answer",
            Stage.PLAN_REVIEW: "adjust",
            Stage.ADJUSTING: "adjust",
            Stage.COACHING: "coaching",
        }.get(user.stage, "coaching")
        if kind == "goal":
            await repo.create_goal(session=session, user=user, text=text)
            user.stage = Stage.CLARIFYING
            user.clarify_rounds = 0
            user.thread_id = repo.new_thread_id(user.opaque_id)
        elif kind == "answer":
            await self._record_answer(session, user, text)
        elif user.stage == Stage.ADJUSTING:
            user.stage = Stage.PLAN_REVIEW
        # A coaching turn reads what its prompt needs here, in the session that stores the message (not
        # for a user over the per-user LLM cap: that turn gets no LLM call).
        capped = self.limiter is not None and self.limiter.full(who.telegram_id)
        inputs = await self._coaching_inputs(session, user) if kind == "coaching" and not capped else None
        session.add(user)
        turn = await repo.add_turn(session=session, user=user, role="user", kind=kind, text=text)
        return user, turn, inputs

    async def retry(self, who: Who, turn_id: int) -> list[Reply]:
        """The "Try again" button: finish an unanswered turn, if it is still the newest."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            assert user.id is not None
            latest = await repo.latest_user_turn(session=session, user_id=user.id)
        if latest is None or latest.id != turn_id or latest.answered:
            return [Reply.plain("That message has already been answered, or a newer one replaced it.")]
        return await self._advance(who, turn_id)

    async def skip_clarification(self, who: Who, goal_id: int) -> list[Reply]:
        """The "Skip, make my plan" button."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            if user.stage != Stage.CLARIFYING or user.active_goal_id != goal_id:
                return [Reply.plain(EXPIRED + " " + self._stage_hint(user.stage))]
        return await self._guarded(who, "plan", {"action": "skip"}, self._make_plan_step,
                                   retry=Button("Try again", "skip", goal_id))

    async def plan_action(self, who: Who, action: str, plan_id: int) -> list[Reply]:
        """Accept, Regenerate or Adjust on a plan the user owns."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            assert user.id is not None
            plan = await repo.get_plan(session=session, plan_id=plan_id, user_id=user.id)
            if plan is None or plan.status != "draft" or plan.goal_id != user.active_goal_id:
                if plan is not None and plan.status == "accepted" and action == "accept":
                    return [Reply.plain("This plan is already accepted. Tell me how it's going any time.")]
                return [Reply.plain("This plan is no longer current. Send /plan to see the one in force.")]
            if action == "accept":
                await repo.accept_plan(session=session, plan=plan)
                user.stage = Stage.COACHING
                session.add(user)
                return [schedule_menu(
                    "Plan accepted. 🎉 From now on, tell me how it's going, ask for advice, or report what "
                    "you did, and I'll coach you with your plan in mind. /plan shows it any time."
                )]
            if action == "adjust":
                user.stage = Stage.ADJUSTING
                session.add(user)
                return [Reply.plain("What would you like to change? Write it in your own words, e.g. "
                                    "\"I can only train on weekends\" or \"make the deadline June\".")]
        return await self._guarded(who, "plan", {"action": "regenerate"}, self._make_plan_step,
                                   retry=Button("Try again", "regenerate", plan_id))

    async def show_plan(self, who: Who) -> list[Reply]:
        """/plan: the current plan, with its buttons while it is still a draft."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            if user.active_goal_id is None:
                return [Reply.plain("You don't have a plan yet. " + ASK_GOAL)]
            plan = await repo.current_plan(session=session, goal_id=user.active_goal_id)
            if plan is None:
                return [Reply.plain("Your plan isn't ready yet. " + self._stage_hint(user.stage))]
            stones = await repo.milestones(session=session, plan_id=plan.id or 0)
            resolution = await repo.latest_resolution(session=session, goal_id=user.active_goal_id)
        replies = []
        if resolution is not None:
            replies.append(resolution_reply(resolution))
        replies.append(plan_reply(plan, stones))
        return replies

    async def new_goal(self, who: Who) -> list[Reply]:
        """/goal: start a new goal, asking first when one is active."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            if user.active_goal_id is None:
                user.stage = Stage.NEW
                session.add(user)
                return [Reply.plain(ASK_GOAL)]
            goal = await repo.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
        title = goal.text[:200] if goal else "your current goal"
        return [Reply(
            paras=[Para(f"You're working on: {title}"), Para("Start a new goal instead? The current one will be "
                                                              "set aside (it stays in /export).")],
            buttons=[[Button("Yes, new goal", "goal_new", user.active_goal_id),
                      Button("Keep current", "goal_keep", user.active_goal_id)]],
        )]

    async def confirm_new_goal(self, who: Who, goal_id: int, confirmed: bool) -> list[Reply]:
        """The answer to /goal's question."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            if user.active_goal_id != goal_id:
                return [Reply.plain(EXPIRED)]
            if not confirmed:
                return [Reply.plain("Okay, keeping your current goal. " + self._stage_hint(user.stage))]
            goal = await repo.get_goal(session=session, goal_id=goal_id, user_id=user.id or 0)
            if goal is not None:
                goal.status = "replaced"
                session.add(goal)
            user.active_goal_id = None
            user.stage = Stage.NEW
            session.add(user)
        return [Reply.plain(ASK_GOAL)]

    async def cancel(self, who: Who) -> list[Reply]:
        """/cancel: leave the step in progress."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            if user.stage == Stage.ADJUSTING:
                user.stage = Stage.PLAN_REVIEW
                session.add(user)
                return [Reply.plain("Okay, no changes. Your draft plan is still there: /plan.")]
            if user.stage in (Stage.CLARIFYING, Stage.PLAN_REVIEW) and user.active_goal_id is not None:
                goal = await repo.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
                if goal is not None:
                    goal.status = "abandoned"
                    session.add(goal)
                restored = await repo.restore_previous_goal(session=session, user=user)
                session.add(user)
                if restored:
                    return [Reply.plain("Cancelled. You're back on your previous goal and plan: /plan.")]
                return [Reply.plain("Cancelled. Whenever you're ready, send /goal to start again.")]
            if user.stage == Stage.NEW and user.active_goal_id is None:
                restored = await repo.restore_previous_goal(session=session, user=user)
                session.add(user)
                if restored:
                    return [Reply.plain("Cancelled. You're back on your previous goal and plan: /plan.")]
        return [Reply.plain("There's nothing in progress to cancel.")]

    async def export(self, who: Who) -> Reply:
        """/export: everything stored about the user, as a JSON document."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            data = await repo.export_user(session=session, user=user)
        data["exported_at"] = datetime.now(UTC).isoformat()
        content = json.dumps(data, ensure_ascii=False, indent=2).encode()
        return Reply(paras=[Para("Here is everything Rein stores about you.")],
                     document=("rein-export.json", content))

    async def delete_request(self, who: Who) -> list[Reply]:
        """/delete: ask for confirmation."""
        async with self.db.session() as session:
            user = await repo.get_user(session=session, telegram_id=who.telegram_id)
        if user is None:
            return [Reply.plain("Rein stores nothing about you.")]
        return [Reply(
            paras=[Para("This erases your goals, plans, conversation and ratings for good. Are you sure?")],
            buttons=[[Button("Yes, delete everything", "delete_yes", user.id or 0),
                      Button("No, keep it", "delete_no", user.id or 0)]],
        )]

    async def delete_confirm(self, who: Who, user_ref: int, confirmed: bool) -> list[Reply]:
        """The answer to /delete's question; only the owner's own confirmation counts."""
        async with self.db.session() as session:
            user = await repo.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.id != user_ref:
                return [Reply.plain(EXPIRED)]
            if not confirmed:
                return [Reply.plain("Nothing was deleted.")]
            await repo.delete_user(session=session, user=user)
        return [Reply.plain("All your data has been deleted. Send /start if you ever want to begin again.")]

    async def set_blocked(self, who: Who, blocked: bool) -> None:
        """The user blocked (or unblocked) the bot: nothing more is sent until they come back."""
        async with self.db.session() as session:
            user = await repo.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.blocked == blocked:
                return
            logcontext.set_user(user.opaque_id)
            user.blocked = blocked
            session.add(user)
        logger.info("coach.blocked_changed blocked=%s", blocked)

    async def rate(self, who: Who, turn_id: int, value: int) -> RateOutcome:
        """A 1–5 rating of one of the user's coach messages; a new press replaces the old value."""
        if not 1 <= value <= 5:
            return RateOutcome(ok=False)
        async with self.db.session() as session:
            user = await repo.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.id is None:
                return RateOutcome(ok=False)
            turn = await repo.get_turn(session=session, turn_id=turn_id, user_id=user.id)
            if turn is None or turn.role != "coach" or turn.kind not in RATEABLE:
                return RateOutcome(ok=False)
            rating = await repo.upsert_rating(session=session, user_id=user.id, turn_id=turn_id, value=value)
            followup = None
            if value <= 2 and not rating.reason_asked:
                rating.reason_asked = True
                user.pending_rating_id = rating.id
                session.add_all([rating, user])
                followup = [Reply(paras=[Para(ASK_REASON)], buttons=[[Button("Skip", "skip_reason", rating.id or 0)]])]
            logger.info("coach.rated user=%s turn=%s value=%d trace=%s", user.opaque_id, turn_id, value, turn.trace_id)
        return RateOutcome(ok=True, value=value, followup=followup)

    async def milestone_reached(self, who: Who, milestone_id: int) -> list[Reply]:
        """The "Reached" button under /progress: the milestone counts as reached from now on."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            milestone = await repo.reach_milestone(session=session, milestone_id=milestone_id, user_id=user.id or 0)
            if milestone is None:
                return [Reply.plain(EXPIRED)]
            stones = await repo.milestones(session=session, plan_id=milestone.plan_id)
        upcoming = next((s for s in stones if s.reached_at is None), None)
        text = f"🏁 Milestone reached: {milestone.title}. Well done!"
        if upcoming is not None:
            text += f"\n\nNext: {upcoming.title} by {upcoming.target_date.isoformat()}."
        else:
            text += "\n\nThat was the last milestone of your plan."
        return [Reply.plain(text)]

    async def skip_reason(self, who: Who, rating_id: int) -> list[Reply]:
        """The Skip button under "what would have helped?"."""
        async with self.db.session() as session:
            user = await repo.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.pending_rating_id != rating_id:
                return [Reply.plain(EXPIRED)]
            user.pending_rating_id = None
            session.add(user)
        return [Reply.plain("No problem. " + self._stage_hint(user.stage))]

    async def _save_reason(self, session: Any, user: User, text: str) -> list[Reply]:
        rating = await repo.get_rating(session=session, rating_id=user.pending_rating_id or 0, user_id=user.id or 0)
        user.pending_rating_id = None
        session.add(user)
        if rating is not None and rating.id is not None:
            await repo.change_rating(session=session, rating_id=rating.id, reason=text[:1000])
        return [Reply.plain("Thank you, that helps me get better. " + self._stage_hint(user.stage))]

    async def sync_ratings(self) -> int:
        """Send ratings Opik has not confirmed yet (after an outage, too); returns how many it took."""
        if not self.tracer.enabled:
            return 0
        async with self._sync_lock:  # one pass at a time, so a newer value never lands before an older one
            return await self._sync_ratings()

    async def _sync_ratings(self) -> int:
        async with self.db.session() as session:
            pending = await repo.unsynced_ratings(session=session)
        if not pending:
            return 0
        scores = [
            Feedback(thread_id or "", SESSION_RATING, float(rating.value), rating.reason, thread=True)
            if kind == "session" else Feedback(trace_id or "", USER_RATING, float(rating.value), rating.reason)
            for rating, trace_id, thread_id, kind in pending
        ]
        if not await asyncio.to_thread(self.tracer.send_feedback, scores):
            return 0
        async with self.db.session() as session:
            await repo.mark_ratings_synced(session=session,
                                           versions=[(r.id or 0, r.updated_at) for r, *_ in pending])
        return len(pending)

    async def close_quiet_threads(self, *, quiet_s: float, now: datetime | None = None,
                                  limit: int = 200) -> list[ClosedThread]:
        """Close conversations quiet for `quiet_s`; offer "How was this session?" at most once a day."""
        now = now or datetime.now(UTC)
        closed: list[ClosedThread] = []
        async with self.db.session() as session:
            for user in await repo.quiet_open_threads(session=session, before=now - timedelta(seconds=quiet_s),
                                                      limit=limit):
                assert user.id is not None
                user.thread_closed = True
                session.add(user)
                prompt = None
                coached = await repo.count_thread_turns(session=session, user_id=user.id, thread_id=user.thread_id,
                                                        role="coach")
                recently = user.session_prompted_at and now - user.session_prompted_at < timedelta(days=1)
                if coached >= 2 and not recently and not user.blocked:
                    turn = await repo.add_turn(session=session, user=user, role="coach", kind="session",
                                               text=SESSION_PROMPT)
                    user.session_prompted_at = now
                    prompt = Reply(paras=[Para(SESSION_PROMPT)], kind="session", turn_id=turn.id)
                closed.append(ClosedThread(Who(user.telegram_id, user.chat_id), user.id, user.thread_id, prompt))
        return closed

    async def compact_history(self, who: Who) -> None:
        """Fold turns older than the recent window into the user's summary (bounded prompts)."""
        if who.telegram_id not in self._compact_due:
            return  # the last coaching turn saw no backlog beyond the recent window
        if self.limiter is not None and self.limiter.full(who.telegram_id):
            return  # a flooding user's summary waits, so their LLM calls stay bounded
        self._compact_due.discard(who.telegram_id)
        async with self.db.session() as session:
            user = await repo.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.id is None:
                return
            pending = await repo.count_turns_after(session=session, user_id=user.id,
                                                   after_id=user.summary_upto_turn_id)
            if pending <= 2 * self.history_turns:
                return
            recent = await repo.recent_turns(session=session, user_id=user.id, limit=self.history_turns)
            old = await repo.turns_between(session=session, user_id=user.id,
                                           after_id=user.summary_upto_turn_id, before_id=recent[0].id or 0)
            summary, thread_id = user.summary, user.thread_id
        if not old:
            return
        transcript = "\n".join(f"{t.role}: {t.text}" for t in old)
        request = f"Earlier summary:\n{summary or '(none)'}\n\nNew conversation:\n{transcript}"
        try:
            with self.tracer.turn("coach.summary", thread_id=thread_id, input={"turns": len(old)},
                                  metadata={"prompt": prompts.SUMMARY.version}, tags=["summary"]) as trace:
                new_summary = await self.llm.text(system=prompts.SUMMARY.text, contents=[user_content(request)],
                                                  temperature=0.2)
                trace.set_output({"summary": new_summary})
        except LLMError:
            logger.warning("coach.summary_failed user=%s", user.opaque_id)
            return
        async with self.db.session() as session:
            fresh = await repo.get_user(session=session, telegram_id=who.telegram_id)
            if fresh is not None:
                fresh.summary = new_summary[:4000]
                fresh.summary_upto_turn_id = old[-1].id or 0
                session.add(fresh)

    # ----- the steps ---------------------------------------------------------------------------

    async def _advance(self, who: Who, turn_id: int, *, loaded: tuple[User, Turn] | None = None,
                       inputs: CoachingInputs | None = None) -> list[Reply]:
        """Answer a stored user turn (`loaded`: the user and turn, when the caller just wrote them;
        `inputs`: what a coaching turn's prompt needs, when the caller read it already)."""
        if loaded is None:
            async with self.db.session() as session:
                user = await self._user(session, who)
                found = await repo.get_turn(session=session, turn_id=turn_id, user_id=user.id or 0)
            assert found is not None
            loaded = (user, found)
        user, turn = loaded
        step = {"goal": self._clarify_step, "answer": self._clarify_step, "adjust": self._make_plan_step,
                "coaching": functools.partial(self._coaching_step, inputs=inputs)}[turn.kind]
        return await self._guarded(who, turn.kind, {"message": turn.text}, step, turn=turn,
                                   retry=Button("Try again", "retry", turn_id), user=user)

    async def _guarded(self, who: Who, kind: str, trace_input: dict[str, Any], step: Any, *,
                       retry: Button, turn: Turn | None = None, user: User | None = None) -> list[Reply]:
        """Run one LLM step inside its trace; on failure, answer clearly and offer a retry."""
        if user is None:
            async with self.db.session() as session:
                user = await self._user(session, who)
        if self.limiter is not None:
            decision = self.limiter.check(who.telegram_id)
            if not decision.allowed:
                logger.info("coach.rate_limited kind=%s notify=%s", kind, decision.notify)
                return [Reply.plain(SLOW_DOWN, kind="error", buttons=[[retry]])] if decision.notify else []
        metadata = {"stage": user.stage, "goal_id": user.active_goal_id, "model": self.llm.model,
                    "user": user.opaque_id}
        trace = TurnTrace()
        usage: list[Usage] = []
        try:
            _TURN_USER.set(user)
            with collect_usage() as usage, self.tracer.turn(
                f"coach.{kind}", thread_id=user.thread_id, input=trace_input, metadata=metadata, tags=[kind]
            ) as trace:
                logcontext.set_trace(trace.id)
                replies: list[Reply] = await step(who, trace, turn)
                trace.set_output({"reply": "\n\n".join(r.text for r in replies)})
        except LLMError as exc:
            logger.warning("coach.llm_failed kind=%s error=%s user=%s trace=%s", kind, exc.kind,
                           user.opaque_id, trace.id)
            buttons = [] if exc.kind == "blocked" else [[retry]]
            return [Reply.plain(ERROR_TEXT.get(exc.kind, ERROR_TEXT["internal"]), kind="error", buttons=buttons)]
        except Exception:
            logger.exception("coach.step_failed kind=%s user=%s trace=%s", kind, user.opaque_id, trace.id)
            return [Reply.plain(ERROR_TEXT["internal"], kind="error", buttons=[[retry]])]
        finally:
            await self._save_usage(user.id, kind, usage)
        return replies

    async def _save_usage(self, user_id: int | None, purpose: str, usage: list[Usage]) -> None:
        """Store tokens and estimated cost of the turn's LLM calls not stored yet (for /stats)."""
        if not usage:
            return
        try:
            async with self.db.session() as session:
                session.add_all(self._usage_rows(user_id, purpose, usage))
        except Exception:
            logger.warning("coach.usage_not_saved purpose=%s", purpose, exc_info=True)

    def _usage_rows(self, user_id: int | None, purpose: str, usage: list[Usage]) -> list[LLMUsage]:
        return [LLMUsage(user_id=user_id, purpose=purpose, model=u.model, prompt_tokens=u.prompt_tokens,
                         output_tokens=u.output_tokens,
                         cost_usd=estimate_cost(u.prompt_tokens, u.output_tokens, self.tracer.prices))
                for u in usage]

    async def _clarify_step(self, who: Who, trace: TurnTrace, turn: Turn | None) -> list[Reply]:
        async with self.db.session() as session:
            user = await self._user(session, who)
            goal = await self._active_goal(session, user)
            rounds = user.clarify_rounds
        if rounds >= self.max_clarify_rounds:
            return await self._make_plan_step(who, trace, turn)
        decision = await self.llm.structured(
            ClarifyDecision, system=prompts.CLARIFY.text, contents=[user_content(goal_brief(goal))], temperature=0.3
        )
        question = self.guard.check(decision.question.strip(), user=user.opaque_id)
        if decision.enough_information or not question:
            return await self._make_plan_step(who, trace, turn)
        async with self.db.session() as session:
            user = await self._user(session, who)
            user.clarify_rounds = rounds + 1
            session.add(user)
            await self._mark_answered(session, turn)
            coach_turn = await repo.add_turn(session=session, user=user, role="coach", kind="question",
                                             text=question, trace_id=trace.id)
        return [Reply(paras=[Para(question)], kind="question", turn_id=coach_turn.id,
                      buttons=[[Button("Skip, make my plan", "skip", goal.id or 0)]])]

    async def _make_plan_step(self, who: Who, trace: TurnTrace, turn: Turn | None) -> list[Reply]:
        async with self.db.session() as session:
            user = await self._user(session, who)
            goal = await self._active_goal(session, user)
            resolution = await repo.latest_resolution(session=session, goal_id=goal.id or 0)
            previous = await repo.current_plan(session=session, goal_id=goal.id or 0)
            old_stones = await repo.milestones(session=session, plan_id=previous.id or 0) if previous else []
        today = date.today().isoformat()
        replies: list[Reply] = []
        if resolution is None:
            draft = await self.llm.structured(
                ResolutionDraft, system=prompts.RESOLUTION.text,
                contents=[user_content(f"Today is {today}.\n{goal_brief(goal)}")],
            )
            resolution_fields = {"statement": draft.statement, "why": draft.why, "metric": draft.success_metric,
                                 "deadline": date.fromisoformat(draft.deadline_date), "strategy": draft.strategy,
                                 "trace_id": trace.id}
        request = f"Today is {today}.\n{goal_brief(goal)}\n"
        if resolution is not None:
            request += "\n" + resolution_brief(resolution)
        else:
            request += "\nResolution: " + json.dumps(draft.model_dump(), ensure_ascii=False)
        if turn is not None and turn.kind == "adjust" and previous is not None:
            request += f"\n\nCurrent plan:\n{plan_brief(previous, old_stones)}\n\nThe user asks to change: {turn.text}"
        plan_draft = await self.llm.structured(PlanDraft, system=prompts.PLAN.text,
                                               contents=[user_content(request)])
        if self.guard.leaks(plan_draft.model_dump_json()) or (resolution is None and self.guard.leaks(
                draft.model_dump_json())):
            raise LLMError("invalid", "the draft repeats a system prompt")
        async with self.db.session() as session:
            user = await self._user(session, who)
            goal = await self._active_goal(session, user)
            if resolution is None:
                resolution = await repo.save_resolution(session=session, goal=goal, fields=resolution_fields)
                res_turn = await repo.add_turn(session=session, user=user, role="coach", kind="resolution",
                                               text=resolution_reply(resolution).text, trace_id=trace.id)
                replies.append(resolution_reply(resolution, turn_id=res_turn.id))
            plan = await repo.save_plan(
                session=session, goal=goal, resolution=resolution, summary=plan_draft.summary,
                phases=[p.model_dump() for p in plan_draft.phases],
                milestones=[(m.title, date.fromisoformat(m.target_date), m.criterion) for m in plan_draft.milestones],
                trace_id=trace.id,
            )
            stones = await repo.milestones(session=session, plan_id=plan.id or 0)
            reply = plan_reply(plan, stones)
            plan_turn = await repo.add_turn(session=session, user=user, role="coach", kind="plan", text=reply.text,
                                            trace_id=trace.id)
            reply.turn_id = plan_turn.id
            user.stage = Stage.PLAN_REVIEW
            session.add(user)
            await self._mark_answered(session, turn)
        replies.append(reply)
        return replies

    async def _coaching_step(self, who: Who, trace: TurnTrace, turn: Turn | None, *,
                             inputs: CoachingInputs | None = None) -> list[Reply]:
        assert turn is not None
        if inputs is None:  # a retry: nothing was read for it yet
            async with self.db.session() as session:
                inputs = await self._coaching_inputs(session, _TURN_USER.get() or await self._user(session, who))
        if inputs is None:
            raise LLMError("internal", "no active goal")
        user = inputs.user
        if inputs.backlog:
            self._compact_due.add(who.telegram_id)
        history = inputs.history
        if not history or (history[-1].id or 0) < (turn.id or 0):  # read before the message was stored
            history = [*history, turn][-self.history_turns:]
        context = coaching_context(inputs.goal, inputs.resolution, inputs.plan, inputs.stones, user.summary,
                                   inputs.progress)
        contents = history_contents(history, upto=turn)
        text = await self.llm.text(system=prompts.COACH.text + "\n\n" + context, contents=contents)
        text = self.guard.check(text, user=user.opaque_id)
        async with self.db.session() as session:  # the user row read above is current: this turn holds its lock
            coach_turn = await repo.add_turn(session=session, user=user, role="coach", kind="coaching", text=text,
                                             trace_id=trace.id)
            await self._mark_answered(session, turn)
            session.add_all(self._usage_rows(user.id, "coaching", drain_usage()))
        reply = Reply.plain(text, kind="coaching")
        reply.turn_id = coach_turn.id
        return [reply]

    # ----- helpers -----------------------------------------------------------------------------

    async def _coaching_inputs(self, session: Any, user: User) -> CoachingInputs | None:
        """Goal, plan, resolution, milestones, recent check-ins and history for a coaching prompt: four
        indexed queries whatever the number of users or turns; None when the user has no active goal."""
        assert user.id is not None
        goal, plan, resolution = await repo.goal_context(session=session, goal_id=user.active_goal_id or 0,
                                                         user_id=user.id)
        if goal is None:
            return None
        stones = await repo.milestones(session=session, plan_id=plan.id or 0) if plan else []
        progress = await checkin_store.recent_progress(session=session, user_id=user.id, limit=PROGRESS_IN_PROMPT)
        # One read serves the prompt and the backlog check: more than 2N unsummarised turns → compact.
        window = await repo.recent_turns(session=session, user_id=user.id, limit=2 * self.history_turns + 1)
        backlog = len(window) > 2 * self.history_turns and (window[0].id or 0) > user.summary_upto_turn_id
        return CoachingInputs(user=user, goal=goal, plan=plan, resolution=resolution, stones=stones,
                              progress=progress, history=window[-self.history_turns:], backlog=backlog)

    async def _user(self, session: Any, who: Who) -> User:
        user = await repo.get_or_create_user(session=session, telegram_id=who.telegram_id, chat_id=who.chat_id,
                                             language_code=who.language_code)
        return self._seen(session, user)

    async def _speaker(self, session: Any, who: Who) -> tuple[User, str | None]:
        """The user and what a check-in waits for from them, in one query."""
        user, awaiting = await repo.get_or_create_user_awaiting(
            session=session, telegram_id=who.telegram_id, chat_id=who.chat_id, language_code=who.language_code)
        return self._seen(session, user), awaiting

    @staticmethod
    def _seen(session: Any, user: User) -> User:
        logcontext.set_user(user.opaque_id)
        if user.blocked:  # they are writing to us, so they no longer block the bot
            user.blocked = False
            session.add(user)
        return user

    async def _active_goal(self, session: Any, user: User) -> Goal:
        goal = None
        if user.active_goal_id is not None:
            goal = await repo.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
        if goal is None:
            raise LLMError("internal", "no active goal")
        return goal

    async def _record_answer(self, session: Any, user: User, text: str) -> None:
        goal = await self._active_goal(session, user)
        question = await repo.latest_coach_turn(session=session, user_id=user.id or 0, kind="question")
        goal.clarifications = [*goal.clarifications, {"q": question.text if question else "", "a": text}]
        session.add(goal)

    @staticmethod
    async def _mark_answered(session: Any, turn: Turn | None) -> None:
        if turn is not None:
            await repo.mark_answered(session=session, turn_id=turn.id or 0)

    @staticmethod
    def _stage_hint(stage: str) -> str:
        return {
            Stage.NEW: ASK_GOAL,
            Stage.CLARIFYING: "We were clarifying your goal: answer my last question, or tap Skip.",
            Stage.PLAN_REVIEW: "Your draft plan is waiting: /plan to see it, then Accept or Adjust.",
            Stage.ADJUSTING: "Tell me what to change in your plan, or /cancel.",
            Stage.COACHING: "Tell me how it's going, or ask me anything about your plan.",
        }.get(stage, "")


def goal_brief(goal: Goal) -> str:
    """The goal and the clarification so far, for prompts."""
    return goal_brief_text(goal.text, goal.clarifications)


def goal_brief_text(text: str, clarifications: list[dict[str, str]]) -> str:
    """A goal and its question/answer pairs as prompt text."""
    lines = [f"Goal: {text}"]
    for qa in clarifications:
        lines.append(f"Coach asked: {qa.get('q', '')}\nUser answered: {qa.get('a', '')}")
    return "\n".join(lines)


def resolution_brief(resolution: Resolution) -> str:
    """The resolution, compact, for prompts."""
    return (f"Resolution: {resolution.statement}\nWhy: {resolution.why}\nMetric: {resolution.metric}\n"
            f"Deadline: {resolution.deadline.isoformat()}\nStrategy: {resolution.strategy}")


def plan_brief(plan: Plan, stones: list[Milestone]) -> str:
    """The plan, compact, for prompts."""
    lines = [f"Plan summary: {plan.summary}"]
    for phase in plan.phases:
        actions = "; ".join(phase.get("weekly_actions", []))
        lines.append(f"- {phase.get('name')} ({phase.get('start_date')} to {phase.get('end_date')}): {actions}")
    for stone in stones:
        done = " (reached)" if stone.reached_at else ""
        lines.append(f"* Milestone {stone.target_date.isoformat()}: {stone.title}: {stone.criterion}{done}")
    return "\n".join(lines)


def coaching_context(goal: Goal, resolution: Resolution | None, plan: Plan | None, stones: list[Milestone],
                     summary: str, progress: Sequence[ProgressEntry] = ()) -> str:
    """Everything the coach should keep in mind, bounded in size."""
    parts = [f"Today is {date.today().isoformat()}.", goal_brief(goal)[:2000]]
    if resolution is not None:
        parts.append(resolution_brief(resolution))
    if plan is not None:
        parts.append(plan_brief(plan, stones)[:3000])
    if progress:
        lines = [f"- {p.local_date.isoformat()}: {p.status}" + (f" ({p.note[:200]})" if p.note else "")
                 for p in progress]
        parts.append("Recent check-ins, newest first:\n" + "\n".join(lines))
    if summary:
        parts.append(f"Summary of the earlier conversation: {summary}")
    return "\n\n".join(parts)


def history_contents(history: list[Turn], *, upto: Turn) -> list[types.Content]:
    """Recent turns as alternating contents, ending with the user's message being answered."""
    contents: list[types.Content] = []
    for turn in history:
        if (turn.id or 0) > (upto.id or 0):
            break
        text = turn.text[:MAX_TEXT]
        if turn.role == "user":
            if contents and contents[-1].role == "user" and contents[-1].parts:
                contents[-1].parts.append(types.Part(text=text))
            else:
                contents.append(user_content(text))
        elif contents:
            contents.append(model_content(text))
    if not contents or contents[-1].role != "user":
        contents.append(user_content(upto.text))
    return contents


def resolution_reply(resolution: Resolution, *, turn_id: int | None = None) -> Reply:
    """The resolution as a message."""
    return Reply(
        paras=[
            Para(f"🎯 Your resolution\n{resolution.statement}", heading=True),
            Para(f"Why: {resolution.why}"),
            Para(f"Success metric: {resolution.metric}\nDeadline: {resolution.deadline.isoformat()}"),
            Para(f"Strategy: {resolution.strategy}"),
        ],
        kind="resolution",
        turn_id=turn_id,
    )


def plan_reply(plan: Plan, stones: list[Milestone]) -> Reply:
    """The plan as a message, with Accept · Regenerate · Adjust while it is a draft."""
    status = "accepted" if plan.status == "accepted" else "draft"
    paras = [Para(f"🗺 Your plan (version {plan.version}, {status})\n{plan.summary}", heading=True)]
    for phase in plan.phases:
        actions = "\n".join(f"• {a}" for a in phase.get("weekly_actions", []))
        paras.append(Para(
            f"{phase.get('name')} · {phase.get('start_date')} → {phase.get('end_date')}\n"
            f"Focus: {phase.get('focus')}\nEvery week:\n{actions}",
            heading=True,
        ))
    if stones:
        lines = "\n".join(f"• {s.target_date.isoformat()} {s.title}: {s.criterion}" for s in stones)
        paras.append(Para(f"Milestones\n{lines}", heading=True))
    buttons: list[list[Button]] = []
    if plan.status == "draft":
        buttons = [[Button("✅ Accept", "accept", plan.id or 0), Button("🔄 Regenerate", "regenerate", plan.id or 0),
                    Button("✏️ Adjust", "adjust", plan.id or 0)]]
    return Reply(paras=paras, kind="plan", buttons=buttons)
