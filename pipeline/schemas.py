"""Structured outputs asked of the LLM (pydantic models, also sent as response schemas)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator


def _iso_date(value: str) -> str:
    date.fromisoformat(value.strip())
    return value.strip()


class Missing(StrEnum):
    """What a goal can still lack before it becomes a resolution."""

    baseline = "baseline"
    why = "why"
    time_per_week = "time_per_week"
    deadline = "deadline"
    obstacles = "obstacles"


class ClarifyDecision(BaseModel):
    """Whether enough is known to write a resolution, and if not, the next question."""

    enough_information: bool = Field(description="True when baseline, why, time and deadline are known")
    missing: list[Missing] = Field(description="What is still unknown")
    question: str = Field(description="One short question about the most important missing item")


class ResolutionDraft(BaseModel):
    """A specific, measurable, time-bound resolution."""

    statement: str = Field(description="One sentence: what, how much, by when")
    why: str = Field(description="Why it matters to the user, in their words")
    success_metric: str = Field(description="The measurable criterion of success")
    deadline_date: str = Field(description="ISO date YYYY-MM-DD")
    strategy: str = Field(description="The approach in two or three sentences")
    weekly_minutes: int = Field(0, ge=0, le=10080, description="Minutes per week the user can give; 0 if not said")
    safety_note: str = Field("", description="What unsafe target was changed and why; empty if none was")

    @field_validator("deadline_date")
    @classmethod
    def _deadline(cls, value: str) -> str:
        return _iso_date(value)


class PhaseDraft(BaseModel):
    """One phase of a plan with its weekly actions."""

    name: str
    start_date: str = Field(description="ISO date YYYY-MM-DD")
    end_date: str = Field(description="ISO date YYYY-MM-DD")
    focus: str
    weekly_actions: list[str] = Field(min_length=1, max_length=7)
    minutes_per_week: int = Field(0, ge=0, le=10080, description="Total minutes per week of the weekly actions")

    @field_validator("start_date", "end_date")
    @classmethod
    def _dates(cls, value: str) -> str:
        return _iso_date(value)


class MilestoneDraft(BaseModel):
    """A dated, measurable checkpoint."""

    title: str
    target_date: str = Field(description="ISO date YYYY-MM-DD")
    criterion: str = Field(description="How to tell it is reached")

    @field_validator("target_date")
    @classmethod
    def _date(cls, value: str) -> str:
        return _iso_date(value)


class PlanDraft(BaseModel):
    """Phases with date ranges, milestones and weekly actions."""

    summary: str = Field(description="One or two sentences")
    phases: list[PhaseDraft] = Field(min_length=1, max_length=6)
    milestones: list[MilestoneDraft] = Field(min_length=1, max_length=12)
