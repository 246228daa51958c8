"""The coach's fixed texts that several parts share (each part keeps its own one-off texts beside its code).

Constants are marked with `N_` for the catalog and translated with `_` where they are used."""

from __future__ import annotations

from pipeline.i18n import N_, _
from storage.models import Stage

ERROR_TEXT = {
    "busy": N_("The coaching model is overloaded right now. Your message is saved: tap Try again in a minute."),
    "unavailable": N_("I couldn't reach the coaching model just now. Your message is saved: tap Try again."),
    "timeout": N_("The coaching model took too long to answer. Your message is saved: tap Try again."),
    "invalid": N_("The coaching model's answer came back garbled. Your message is saved: tap Try again."),
    "empty": N_("The coaching model returned an empty answer. Your message is saved: tap Try again."),
    "blocked": N_("The coaching model declined to answer that for safety reasons. Could you put it another way?"),
    "internal": N_("Something went wrong on my side. Your message is saved: tap Try again."),
    "unsound": N_("I couldn't make a plan whose dates and weekly time hold together this time. Your answers are "
                  "saved: tap Try again, or tell me more about your deadline and the time you have each week."),
    "unsafe": N_("I couldn't make a plan for this target that is safe to follow. Could we aim for a gentler pace or a "
                 "nearer target? Tell me what would work for you, or tap Try again."),
}
WELCOME = N_("Hi, I'm Rein, your goal coach. I help you turn something you want to change into a concrete plan, "
             "then check in and keep you on track.")
ASK_GOAL = N_("What do you want to achieve? Tell me in a sentence or two, e.g. \"get fit\" or \"learn Spanish\".")
EXPIRED = N_("This button has expired.")
TRY_AGAIN = N_("Try again")
PLAN_GONE = N_("This plan is no longer current. Send /plan to see the one in force.")


def error_text(kind: str) -> str:
    """What the user reads when an LLM step failed with `kind`, in their language."""
    return _(ERROR_TEXT.get(kind, ERROR_TEXT["internal"]))


def stage_hint(stage: str) -> str:
    """What the user can do next, where they stand (in their language)."""
    hints: dict[str, str] = {
        Stage.NEW: ASK_GOAL,
        Stage.CLARIFYING: N_("We were clarifying your goal: answer my last question, or tap Skip."),
        Stage.PLAN_REVIEW: N_("Your draft plan is waiting: /plan to see it, then Accept or Adjust."),
        Stage.ADJUSTING: N_("Tell me what to change in your plan, or /cancel."),
        Stage.COACHING: N_("Tell me how it's going, or ask me anything about your plan."),
    }
    hint = hints.get(stage, "")
    return _(hint) if hint else ""
