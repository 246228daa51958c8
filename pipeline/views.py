"""The coach's material as prompt text (briefs, context, history) and as messages (resolution, plan)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from google.genai import types

from pipeline.i18n import _, format_date
from pipeline.llm import model_content, user_content
from pipeline.replies import Button, Para, Reply
from storage.models import Goal, Milestone, Plan, ProgressEntry, Resolution, Turn

MAX_TEXT = 4000  # characters of one past message in a prompt


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
    brief = (f"Resolution: {resolution.statement}\nWhy: {resolution.why}\nMetric: {resolution.metric}\n"
             f"Deadline: {resolution.deadline.isoformat()}\nStrategy: {resolution.strategy}")
    if resolution.weekly_minutes:
        brief += f"\nTime per week: {resolution.weekly_minutes} minutes"
    return brief



def plan_brief(plan: Plan, milestones: list[Milestone]) -> str:
    """The plan, compact, for prompts."""
    lines = [f"Plan summary: {plan.summary}"]
    for phase in plan.phases:
        actions = "; ".join(phase.get("weekly_actions", []))
        lines.append(f"- {phase.get('name')} ({phase.get('start_date')} to {phase.get('end_date')}): {actions}")
    for milestone in milestones:
        done = " (reached)" if milestone.reached_at else ""
        lines.append(f"* Milestone {milestone.target_date.isoformat()}: {milestone.title}: {milestone.criterion}{done}")
    return "\n".join(lines)



def coaching_context(goal: Goal, resolution: Resolution | None, plan: Plan | None, milestones: list[Milestone],
                     summary: str, progress: Sequence[ProgressEntry] = (), *, today: date) -> str:
    """Everything the coach should keep in mind on the user's `today`, bounded in size."""
    parts = [f"Today is {today.isoformat()}.", goal_brief(goal)[:2000]]
    if resolution is not None:
        parts.append(resolution_brief(resolution))
    if plan is not None:
        parts.append(plan_brief(plan, milestones)[:3000])
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



def _day(value: object) -> str:
    """An ISO date from a plan as the user's language writes it (left as it is when it is not a date)."""
    try:
        return format_date(value if isinstance(value, date) else date.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def resolution_reply(resolution: Resolution, *, turn_id: int | None = None) -> Reply:
    """The resolution as a message."""
    return Reply(
        paras=[
            Para(_("🎯 Your resolution") + "\n" + resolution.statement, heading=True),
            Para(_("Why: {why}", why=resolution.why)),
            Para(_("Success metric: {metric}", metric=resolution.metric) + "\n"
                 + _("Deadline: {date}", date=_day(resolution.deadline))),
            Para(_("Strategy: {strategy}", strategy=resolution.strategy)),
            *([Para(_("⚠️ Why I changed your target: {note}", note=resolution.safety_note))]
              if resolution.safety_note else []),
        ],
        kind="resolution",
        turn_id=turn_id,
    )



def plan_reply(plan: Plan, milestones: list[Milestone]) -> Reply:
    """The plan as a message, with Accept · Regenerate · Adjust while it is a draft."""
    heading = (_("🗺 Your plan (version {version}, accepted)", version=plan.version) if plan.status == "accepted"
               else _("🗺 Your plan (version {version}, draft)", version=plan.version))
    paras = [Para(f"{heading}\n{plan.summary}", heading=True)]
    for phase in plan.phases:
        actions = "\n".join(f"• {a}" for a in phase.get("weekly_actions", []))
        paras.append(Para(
            f"{phase.get('name')} · {_day(phase.get('start_date'))} → {_day(phase.get('end_date'))}\n"
            + _("Focus: {focus}", focus=phase.get("focus")) + "\n" + _("Every week:") + f"\n{actions}",
            heading=True,
        ))
    if milestones:
        lines = "\n".join(f"• {_day(s.target_date)} {s.title}: {s.criterion}" for s in milestones)
        paras.append(Para(_("Milestones") + f"\n{lines}", heading=True))
    buttons: list[list[Button]] = []
    if plan.status == "draft":
        ref = plan.id or 0
        buttons = [[Button(_("✅ Accept"), "accept", ref), Button(_("🔄 Regenerate"), "regenerate", ref),
                    Button(_("✏️ Adjust"), "adjust", ref)]]
    return Reply(paras=paras, kind="plan", buttons=buttons)
