"""SQLModel tables. Every timestamp is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Dialect, Index, UniqueConstraint
from sqlalchemy.types import DateTime as _DateTime
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class DateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware (SQLite drops the zone)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__()

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use an aware UTC datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Stage(StrEnum):
    """Where a user stands in the conversation (stored on the user row)."""

    NEW = "new"  # /start seen, waiting for the goal
    CLARIFYING = "clarifying"  # coach asked a clarifying question
    PLAN_REVIEW = "plan_review"  # plan shown, waiting for accept/regenerate/adjust
    ADJUSTING = "adjusting"  # user asked to adjust; next text is the change
    COACHING = "coaching"  # plan accepted; texts are coaching turns


class User(SQLModel, table=True):
    """One Telegram user; `opaque_id` is what leaves the database (traces, logs)."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    telegram_id: int = Field(sa_column=Column(BigInteger, unique=True, nullable=False, index=True))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    opaque_id: str = Field(max_length=36, unique=True)
    language_code: str | None = Field(default=None, max_length=16)  # the Telegram client's, as last seen
    language: str = Field(default="en", max_length=8)  # the catalog language Rein writes in (/language)
    stage: str = Field(default=Stage.NEW, max_length=20)
    active_goal_id: int | None = Field(default=None)
    clarify_rounds: int = 0
    summary: str = ""
    summary_upto_turn_id: int = 0
    thread_id: str = Field(max_length=64)
    timezone: str | None = Field(default=None, max_length=64)
    blocked: bool = False
    pending_rating_id: int | None = Field(default=None)  # a low rating whose reason the next text gives
    thread_closed: bool = False  # the current Opik thread went quiet and was scored
    session_prompted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    care_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # coach gently until then
    messages_day: date | None = Field(default=None)  # the UTC day `messages_today` counts (MAX_MESSAGES_PER_DAY)
    messages_today: int = 0  # texts stored that day; one over the cap once the notice was given
    exported_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # last /export
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    last_active_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)


class Goal(SQLModel, table=True):
    """What the user wants to change, and what the clarification learned."""

    __tablename__ = "goals"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    text: str
    status: str = Field(default="active", max_length=16)  # active | replaced | abandoned
    clarifications: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Resolution(SQLModel, table=True):
    """The goal restated: specific, measurable, time-bound, with a strategy."""

    __tablename__ = "resolutions"

    id: int | None = Field(default=None, primary_key=True)
    goal_id: int = Field(foreign_key="goals.id", index=True, ondelete="CASCADE")
    statement: str
    why: str
    metric: str
    deadline: date
    strategy: str
    weekly_minutes: int | None = Field(default=None)  # the time per week the user said they have (None: not said)
    safety_note: str = ""  # why an unsafe target was changed (empty when it was not)
    trace_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Plan(SQLModel, table=True):
    """A plan for a goal: phases (with weekly actions) as JSON; milestones in their own table."""

    __tablename__ = "plans"

    id: int | None = Field(default=None, primary_key=True)
    goal_id: int = Field(foreign_key="goals.id", index=True, ondelete="CASCADE")
    resolution_id: int | None = Field(default=None, foreign_key="resolutions.id", ondelete="CASCADE")
    version: int = 1
    status: str = Field(default="draft", max_length=16)  # draft | accepted | superseded
    summary: str = ""
    phases: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    trace_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    accepted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Milestone(SQLModel, table=True):
    """A dated, measurable checkpoint of a plan."""

    __tablename__ = "milestones"

    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="plans.id", index=True, ondelete="CASCADE")
    position: int = 0
    title: str
    target_date: date
    criterion: str
    reached_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Turn(SQLModel, table=True):
    """One message in the conversation, the user's or the coach's."""

    __tablename__ = "turns"
    __table_args__ = (Index("ix_turns_user_id_id", "user_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    goal_id: int | None = Field(default=None)
    role: str = Field(max_length=8)  # user | coach
    kind: str = Field(max_length=24)  # message | question | resolution | plan | coaching | checkin | error
    text: str
    trace_id: str | None = Field(default=None, max_length=64)
    thread_id: str | None = Field(default=None, max_length=64)  # the Opik thread (conversation) it belongs to
    answered: bool = False  # for user turns: a coach reply was produced
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Rating(SQLModel, table=True):
    """A user's 1–5 rating of one coach message; `synced` once it reached Opik."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("user_id", "turn_id", name="uq_ratings_user_turn"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    turn_id: int = Field(foreign_key="turns.id", ondelete="CASCADE")
    value: int
    reason: str | None = None
    reason_asked: bool = False
    synced: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Judgement(SQLModel, table=True):
    """One criterion the LLM judge scored (0–1) on a coach message's trace."""

    __tablename__ = "judgements"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    turn_id: int | None = Field(default=None, foreign_key="turns.id", ondelete="CASCADE")
    trace_id: str | None = Field(default=None, max_length=64)
    target: str = Field(max_length=16)  # resolution | plan | coaching | thread
    criterion: str = Field(max_length=32)
    score: float
    reason: str = ""
    prompt_version: str = Field(default="", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)


class LLMUsage(SQLModel, table=True):
    """Tokens and estimated cost of one LLM call (for /stats)."""

    __tablename__ = "llm_usage"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True, ondelete="CASCADE")
    purpose: str = Field(max_length=24)  # the turn kind, "judge", "summary", ...
    model: str = Field(max_length=64)
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)


class CheckinPrefs(SQLModel, table=True):
    """A user's check-in preferences: quiet hours, pause, and what the next text answers (if anything)."""

    __tablename__ = "checkin_prefs"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", unique=True, ondelete="CASCADE")
    quiet_start: str = Field(default="22:00", max_length=5)  # local HH:MM; equal start and end = no quiet hours
    quiet_end: str = Field(default="07:00", max_length=5)
    paused: bool = False  # until /resume (or /start after a block)
    pause_reason: str | None = Field(default=None, max_length=16)  # user | blocked
    paused_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    awaiting: str | None = Field(default=None, max_length=16)  # timezone | custom | note
    awaiting_ref: int | None = Field(default=None)  # the preset waiting for a zone, or the entry a note is for
    awaiting_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class CheckinSchedule(SQLModel, table=True):
    """One recurring (or one-off) send for a user: a check-in, the weekly review, or a snooze."""

    __tablename__ = "checkin_schedules"
    __table_args__ = (UniqueConstraint("user_id", "kind", name="uq_checkin_schedules_user_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=8)  # checkin | review | snooze
    local_time: str = Field(max_length=5)  # HH:MM in the user's zone
    days: int = 127  # bit mask, Monday = 1; 0 = one-off (snooze)
    next_due_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class CheckinSend(SQLModel, table=True):
    """A claimed send: written (unique per schedule and due time) before the message goes out."""

    __tablename__ = "checkin_sends"
    __table_args__ = (UniqueConstraint("schedule_id", "due_at", name="uq_checkin_sends_schedule_due"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule_id: int = Field(foreign_key="checkin_schedules.id", ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=8)
    due_at: datetime = Field(sa_type=DateTime(timezone=True))
    # claimed → drafted (the coach's text stored) → sending (handed to Telegram) → sent | blocked | failed |
    # uncertain (the connection broke mid-send); or expired (never sent within the grace window)
    status: str = Field(default="claimed", max_length=12, index=True)
    reason: str | None = Field(default=None, max_length=64)  # why a send did not end as "sent"
    turn_id: int | None = Field(default=None)
    claimed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ProgressEntry(SQLModel, table=True):
    """What the user reported for one check-in: done, partly or missed, with an optional note."""

    __tablename__ = "progress_entries"
    __table_args__ = (UniqueConstraint("user_id", "turn_id", name="uq_progress_user_turn"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    goal_id: int | None = Field(default=None)
    turn_id: int | None = Field(default=None)  # the check-in message answered
    status: str = Field(max_length=8)  # done | partly | missed
    note: str | None = None
    local_date: date
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class InboxUpdate(SQLModel, table=True):
    """An update the webhook acknowledged and no replica has handled yet (handled per user in update order)."""

    __tablename__ = "inbox"

    id: int | None = Field(default=None, primary_key=True)
    update_id: int = Field(sa_column=Column(BigInteger, unique=True, nullable=False))
    telegram_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class CareEvent(SQLModel, table=True):
    """Crisis care given: which layer saw what, in which language (never the message itself)."""

    __tablename__ = "care_events"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    layer: str = Field(max_length=8)  # screen | model
    category: str = Field(max_length=16)  # suicide | self_harm | harm_others | abuse | medical
    language: str = Field(max_length=8)
    pattern: str | None = Field(default=None, max_length=32)  # the screen pattern's id
    trace_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)


class Erasure(SQLModel, table=True):
    """A deleted user's copies in Opik (traces, threads) still to erase: written in the transaction that removes
    the user's rows, kept until a search in Opik finds nothing of theirs."""

    __tablename__ = "erasures"

    id: int | None = Field(default=None, primary_key=True)
    opaque_id: str = Field(max_length=36, index=True)  # the id every trace of the user carries (metadata.user)
    thread_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    trace_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # known from rows
    requested_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)
    attempts: int = 0
    traces_deleted: int = 0
    last_error: str | None = Field(default=None, max_length=120)
    done_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
