"""What the handlers use: the coach's parts, check-ins, the judge, storage and tracing, created once at start-up
(python-telegram-bot's `post_init`) and closed at shut-down."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.metrics import Metrics
from bot.ordering import UserLocks
from pipeline.account import Account
from pipeline.care import Care
from pipeline.checkins.answers import CheckinAnswers
from pipeline.checkins.core import CheckinCore
from pipeline.checkins.dispatch import Dispatch
from pipeline.checkins.prefs import Preferences
from pipeline.checkins.progress import ProgressReport
from pipeline.checkins.scheduler import CheckinScheduler
from pipeline.coaching import Coaching
from pipeline.conversation import Conversation
from pipeline.erasure import Erasures
from pipeline.followups import FollowUps
from pipeline.guard import OutputGuard
from pipeline.judge import Judge
from pipeline.language import Languages
from pipeline.llm import LLM
from pipeline.media import Limits, MediaReader
from pipeline.memory import Memory
from pipeline.planning import Planning
from pipeline.ratelimit import FloodNotice, SlidingWindow
from pipeline.ratings import Ratings
from pipeline.sessions import Sessions
from pipeline.settings import Settings
from pipeline.steps import Steps
from pipeline.tracing import Tracer
from storage.db import Database
from storage.leader import Leadership
from storage.locks import migration_lock

logger = logging.getLogger(__name__)

LeaderHook = Callable[[], Awaitable[None] | None]


@dataclass
class Checkins:
    """The check-in parts."""

    core: CheckinCore
    prefs: Preferences
    answers: CheckinAnswers
    progress: ProgressReport
    dispatch: Dispatch
    scheduler: CheckinScheduler | None = None  # set by the bot, which owns the sender


@dataclass
class Services:
    """Everything the handlers and jobs use."""

    settings: Settings
    db: Database
    llm: LLM
    tracer: Tracer
    steps: Steps
    conversation: Conversation
    planning: Planning
    memory: Memory
    ratings: Ratings
    sessions: Sessions
    account: Account
    erasures: Erasures
    judge: Judge
    checkins: Checkins
    media: MediaReader
    locks: UserLocks
    metrics: Metrics
    languages: Languages
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    leadership: Leadership | None = None
    leader_hooks: list[tuple[LeaderHook, LeaderHook]] = field(default_factory=list)

    def on_leader(self, start: LeaderHook, stop: LeaderHook) -> None:
        """Run `start` while this process leads (one replica at a time on PostgreSQL) and `stop` when it stops."""
        self.leader_hooks.append((start, stop))
        if self.leadership is not None and self.leadership.is_leader:
            self.background(_maybe_await(start()))

    async def start_leadership(self) -> None:
        """Start competing for the scheduler lock (SQLite: lead at once); CHECKIN_SCHEDULER=false never leads."""
        if not self.settings.checkin_scheduler:
            logger.info("leader.not_competing reason=CHECKIN_SCHEDULER=false")
            return
        self.leadership = Leadership(self.settings.database_url, on_start=self._lead, on_stop=self._unlead,
                                     retry_s=self.settings.leader_retry_s)
        await self.leadership.start()

    async def _lead(self) -> None:
        self.metrics.leader.set(1)
        for start, _ in self.leader_hooks:
            await _maybe_await(start())

    async def _unlead(self) -> None:
        self.metrics.leader.set(0)
        for _, stop in reversed(self.leader_hooks):
            await _maybe_await(stop())

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run work after the reply without delaying it; failures are logged, never raised. The work starts in
        a context of its own: a turn's open trace (or its locale) never leaks into it, even when it is started
        while the turn still runs (the resolution's judge, sent before the plan is written)."""
        task = asyncio.create_task(_logged(work), context=contextvars.Context())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for background work to finish."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)

    async def close(self) -> None:
        """Stop leading, finish background work, close the LLM client, flush traces, close the database."""
        if self.checkins.scheduler is not None:
            await self.checkins.scheduler.shutdown()
        if self.leadership is not None:
            await self.leadership.stop()
        await self.conversation.followups.close()
        await self.drain()
        await self.llm.aclose()
        await asyncio.to_thread(self.tracer.flush)
        await self.db.dispose()
        if self.locks.remote is not None:
            await self.locks.remote.dispose()


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result


async def _logged(work: Coroutine[Any, Any, Any]) -> None:
    try:
        await work
    except Exception:
        logger.exception("bot.background_failed")


async def create_services(settings: Settings, *, locks: UserLocks, metrics: Metrics) -> Services:
    """Database (migrated), tracing, the LLM path and every part of the coach."""
    db = Database(settings.database_url)
    async with migration_lock(settings.database_url):  # replicas starting together migrate one by one
        await db.migrate()
    tracer = Tracer(settings)
    llm = LLM(api_key=settings.gemini_api_key.get_secret_value(), model=settings.gemini_model,
              base_url=settings.gemini_base_url, timeout_s=settings.gemini_timeout_s,
              attempts=settings.gemini_attempts, backoff_s=settings.gemini_backoff_s, wrap=metrics.instrument_genai)
    steps = Steps(llm=llm, tracer=tracer, db=db, prices=(settings.price_input_per_mtok, settings.price_output_per_mtok),
                  flood=SlidingWindow(settings.llm_calls_per_minute))
    guard = OutputGuard()
    allowed = frozenset(settings.allowed_user_ids)
    planning = Planning(db=db, guard=guard, max_clarify_rounds=settings.max_clarify_rounds,
                        judge_plans=settings.judge_enabled, safe_threshold=settings.plan_safe_threshold)
    coaching = Coaching(db=db, guard=guard, history_turns=settings.history_turns)
    memory = Memory(db=db, steps=steps, history_turns=settings.history_turns)
    ratings = Ratings(db=db, tracer=tracer)
    core = CheckinCore(db=db, steps=steps, grace_s=settings.checkin_grace_s, quiet_hours=settings.checkin_quiet_hours,
                       review_time=settings.checkin_review_time, allowed=allowed)
    care = Care(db=db, steps=steps, core=core, gentle_hours=settings.care_gentle_hours)
    conversation = Conversation(db=db, steps=steps, planning=planning, coaching=coaching, memory=memory,
                                ratings=ratings, care=care, classify=settings.safety_classifier,
                                classify_timeout_s=settings.safety_classify_timeout_s,
                                max_messages_per_day=settings.max_messages_per_day, followups=FollowUps(),
                                flood_notice=FloodNotice(settings.flood_messages_per_minute))
    checkins = Checkins(core=core, prefs=Preferences(core), answers=CheckinAnswers(core),
                        progress=ProgressReport(core), dispatch=Dispatch(core))
    judge = Judge(db=db, steps=steps, sample_rate=settings.judge_sample_rate, enabled=settings.judge_enabled)
    erasures = Erasures(db=db, tracer=tracer, settle_s=settings.erasure_settle_s, retry_s=settings.erasure_retry_s)
    account = Account(db=db, erasures=erasures, export_cooldown_s=settings.export_cooldown_s,
                      export_part_bytes=settings.export_part_bytes)
    return Services(settings=settings, db=db, llm=llm, tracer=tracer, steps=steps, conversation=conversation,
                    planning=planning, memory=memory, ratings=ratings, sessions=Sessions(db=db, allowed=allowed),
                    account=account, erasures=erasures, judge=judge, checkins=checkins, locks=locks, metrics=metrics,
                    media=MediaReader(db=db, steps=steps, limits=Limits(settings.media_max_seconds,
                                                                         settings.media_max_bytes)),
                    languages=Languages(db=db))
