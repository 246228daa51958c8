"""From a goal to an accepted plan: clarifying questions, the resolution, the plan and its review.

The LLM steps (`clarify`, `make_plan`) run outside database sessions; everything the user said was
stored before they run, so a failure loses nothing and "Try again" finishes the turn. When a chat waits (the
speaker's draft sink), each step shows a status line at once, and a new resolution is stored and sent as soon as
it is written, before the plan is; a plan that then fails leaves it in place, and "Try again" writes the plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import drafting, prompts, speaker, texts, views
from pipeline.guard import OutputGuard
from pipeline.i18n import N_, _, format_date
from pipeline.judge import Score
from pipeline.llm import LLMError, user_content
from pipeline.replies import Button, Para, Reply
from pipeline.schedule import schedule_menu
from pipeline.schemas import ClarifyDecision, ResolutionDraft
from pipeline.speaker import Speaker
from pipeline.steps import Step
from pipeline.timezones import local_today
from storage import goals, turns
from storage.db import Database
from storage.models import Goal, Judgement, Resolution, Stage, Turn, User, utcnow

ACCEPTED = N_("Plan accepted. 🎉 From now on, tell me how it's going, ask for advice, or report what you did, and "
            "I'll coach you with your plan in mind. /plan shows it any time.")
ASK_CHANGE = N_("What would you like to change? Write it in your own words, e.g. \"I can only train on weekends\" "
              "or \"make the deadline June\".")
SKIP = N_("Skip, make my plan")
THINKING = N_("Thinking about your goal…")
WRITING_RESOLUTION = N_("Writing your resolution…")
DRAFTING_PLAN = N_("Drafting your plan…")


async def active_goal(session: AsyncSession, user: User) -> Goal:
    """The user's active goal; an `LLMError` when there is none (a step must not run without it)."""
    goal = None
    if user.active_goal_id is not None:
        goal = await goals.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
    if goal is None:
        raise LLMError("internal", "no active goal")
    return goal


class Planning:
    """Goal, clarification, resolution and plan: the steps and the buttons around them."""

    def __init__(self, *, db: Database, guard: OutputGuard, max_clarify_rounds: int = 3, judge_plans: bool = False,
                 safe_threshold: float = 0.5, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock  # the day a plan starts is the user's today by this clock
        self.guard = guard
        self.max_clarify_rounds = max_clarify_rounds
        self.judge_plans = judge_plans  # the judge scores each plan before it is shown (JUDGE_ENABLED)
        self.safe_threshold = safe_threshold  # below this on `safe`, a plan is written again (PLAN_SAFE_THRESHOLD)

    # ----- the LLM steps ------------------------------------------------------------------------

    async def clarify(self, who: Speaker, step: Step, turn: Turn | None) -> list[Reply]:
        """Ask one more clarifying question, or go on to the resolution and plan when enough is known."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            goal = await active_goal(session, user)
            rounds = user.clarify_rounds
        if rounds >= self.max_clarify_rounds:
            return await self.make_plan(who, step, turn)
        _status(who, THINKING)
        decision = await step.structured(ClarifyDecision, system=prompts.answering(prompts.CLARIFY.text),
                                         contents=[user_content(views.goal_brief(goal))], temperature=0.3)
        question = self.guard.check(decision.question.strip(), user=user.opaque_id)
        if decision.enough_information or not question:
            return await self.make_plan(who, step, turn)
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            user.clarify_rounds = rounds + 1
            session.add(user)
            await _mark_answered(session, turn)
            asked = await turns.add_turn(session=session, user=user, role="coach", kind="question", text=question,
                                         trace_id=step.trace_id)
        return [Reply(paras=[Para(question)], kind="question", turn_id=asked.id,
                      buttons=[[Button(_(SKIP), "skip", goal.id or 0)]])]

    async def make_plan(self, who: Speaker, step: Step, turn: Turn | None) -> list[Reply]:
        """Write the resolution (if the goal has none yet) and a new draft plan, or adjust the current one."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            goal = await active_goal(session, user)
            resolution = await goals.latest_resolution(session=session, goal_id=goal.id or 0)
            previous = await goals.current_plan(session=session, goal_id=goal.id or 0)
            old_milestones = await goals.milestones(session=session, plan_id=previous.id or 0) if previous else []
        today = local_today(user.timezone, self.clock())
        draft: ResolutionDraft | None = None
        sent: Resolution | None = None  # the resolution already stored and sent, before the plan
        if resolution is None:
            _status(who, WRITING_RESOLUTION)
            draft = await drafting.write_resolution(step, f"Today is {today}.\n{views.goal_brief(goal)}", today)
            if who.drafts is not None:
                sent = await self._send_resolution(who, step, draft)
        _status(who, DRAFTING_PLAN)
        request = f"Today is {today}.\n{views.goal_brief(goal)}\n"
        if resolution is not None:
            request += "\n" + views.resolution_brief(resolution)
        elif draft is not None:
            request += "\nResolution: " + json.dumps(draft.model_dump(), ensure_ascii=False)
        if turn is not None and turn.kind == "adjust" and previous is not None:
            request += (f"\n\nCurrent plan:\n{views.plan_brief(previous, old_milestones)}\n\n"
                        f"The user asks to change: {turn.text}")
        weekly: int | None
        if draft is not None:
            deadline, weekly = date.fromisoformat(draft.deadline_date), draft.weekly_minutes
        else:
            assert resolution is not None
            deadline, weekly = resolution.deadline, resolution.weekly_minutes
        drafted = await drafting.write_plan(step, request, today=today, deadline=deadline, weekly_minutes=weekly,
                                            context=views.goal_brief(goal), judge=self.judge_plans,
                                            safe_threshold=self.safe_threshold)
        plan_draft = drafted.plan
        if self.guard.leaks(plan_draft.model_dump_json()) or (draft is not None and self.guard.leaks(
                draft.model_dump_json())):
            raise LLMError("invalid", "the draft repeats a system prompt")
        replies: list[Reply] = []
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            goal = await active_goal(session, user)
            if sent is not None:
                resolution = sent
            elif draft is not None:
                resolution, shown = await _store_resolution(session, goal, user, draft, step)
                replies.append(shown)
            plan = await goals.save_plan(
                session=session, goal=goal, resolution=resolution, summary=plan_draft.summary,
                phases=[p.model_dump() for p in plan_draft.phases],
                milestones=[(m.title, date.fromisoformat(m.target_date), m.criterion) for m in plan_draft.milestones],
                trace_id=step.trace_id,
            )
            reply = views.plan_reply(plan, await goals.milestones(session=session, plan_id=plan.id or 0))
            written = await turns.add_turn(session=session, user=user, role="coach", kind="plan", text=reply.text,
                                           trace_id=step.trace_id)
            reply.turn_id = written.id
            reply.judged = bool(drafted.scores)
            _record_scores(session, step, user, written, drafted.scores)
            user.stage = Stage.PLAN_REVIEW
            session.add(user)
            await _mark_answered(session, turn)
        replies.append(reply)
        return replies

    async def _send_resolution(self, who: Speaker, step: Step, draft: ResolutionDraft) -> Resolution:
        """Store a new resolution and send it at once (the plan is still to be written)."""
        if self.guard.leaks(draft.model_dump_json()):
            raise LLMError("invalid", "the draft repeats a system prompt")
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            goal = await active_goal(session, user)
            resolution, shown = await _store_resolution(session, goal, user, draft, step)
        assert who.drafts is not None
        await who.drafts.send([shown])
        return resolution

    # ----- commands and buttons -----------------------------------------------------------------

    async def can_skip(self, who: Speaker, goal_id: int) -> Reply | None:
        """None when "Skip, make my plan" applies to the user's clarification now; else why not."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
        if user.stage != Stage.CLARIFYING or user.active_goal_id != goal_id:
            return Reply.plain(_(texts.EXPIRED) + " " + texts.stage_hint(user.stage))
        return None

    async def plan_action(self, who: Speaker, action: str, plan_id: int) -> list[Reply] | None:
        """Accept or Adjust a draft the user owns (the replies); None when the action is Regenerate and the
        plan is current (the caller runs the plan step)."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            plan = await goals.get_plan(session=session, plan_id=plan_id, user_id=user.id or 0)
            if plan is None or plan.status != "draft" or plan.goal_id != user.active_goal_id:
                if plan is not None and plan.status == "accepted" and action == "accept":
                    return [Reply.plain(_("This plan is already accepted. Tell me how it's going any time."))]
                return [Reply.plain(_(texts.PLAN_GONE))]
            if action == "accept":
                await goals.accept_plan(session=session, plan=plan)
                user.stage = Stage.COACHING
                session.add(user)
                return [schedule_menu(_(ACCEPTED))]
            if action == "adjust":
                user.stage = Stage.ADJUSTING
                session.add(user)
                return [Reply.plain(_(ASK_CHANGE))]
        return None

    async def show_plan(self, who: Speaker) -> list[Reply]:
        """/plan: the current plan, with its buttons while it is still a draft."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            if user.active_goal_id is None:
                return [Reply.plain(_("You don't have a plan yet.") + " " + _(texts.ASK_GOAL))]
            plan = await goals.current_plan(session=session, goal_id=user.active_goal_id)
            if plan is None:
                return [Reply.plain(_("Your plan isn't ready yet.") + " " + texts.stage_hint(user.stage))]
            milestones = await goals.milestones(session=session, plan_id=plan.id or 0)
            resolution = await goals.latest_resolution(session=session, goal_id=user.active_goal_id)
        replies = [views.resolution_reply(resolution)] if resolution is not None else []
        replies.append(views.plan_reply(plan, milestones))
        return replies

    async def new_goal(self, who: Speaker) -> list[Reply]:
        """/goal: start a new goal, asking first when one is active."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            if user.active_goal_id is None:
                user.stage = Stage.NEW
                session.add(user)
                return [Reply.plain(_(texts.ASK_GOAL))]
            goal = await goals.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
        title = goal.text[:200] if goal else _("your current goal")
        return [Reply(
            paras=[Para(_("You're working on: {goal}", goal=title)),
                   Para(_("Start a new goal instead? The current one will be set aside (it stays in /export)."))],
            buttons=[[Button(_("Yes, new goal"), "goal_new", user.active_goal_id),
                      Button(_("Keep current"), "goal_keep", user.active_goal_id)]],
        )]

    async def confirm_new_goal(self, who: Speaker, goal_id: int, confirmed: bool) -> list[Reply]:
        """The answer to /goal's question."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            if user.active_goal_id != goal_id:
                return [Reply.plain(_(texts.EXPIRED))]
            if not confirmed:
                return [Reply.plain(_("Okay, keeping your current goal.") + " " + texts.stage_hint(user.stage))]
            goal = await goals.get_goal(session=session, goal_id=goal_id, user_id=user.id or 0)
            if goal is not None:
                goal.status = "replaced"
                session.add(goal)
            user.active_goal_id = None
            user.stage = Stage.NEW
            session.add(user)
        return [Reply.plain(_(texts.ASK_GOAL))]

    async def cancel(self, who: Speaker) -> list[Reply]:
        """/cancel: leave the step in progress."""
        back = _("Cancelled. You're back on your previous goal and plan: /plan.")
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            if user.stage == Stage.ADJUSTING:
                user.stage = Stage.PLAN_REVIEW
                session.add(user)
                return [Reply.plain(_("Okay, no changes. Your draft plan is still there: /plan."))]
            if user.stage in (Stage.CLARIFYING, Stage.PLAN_REVIEW) and user.active_goal_id is not None:
                goal = await goals.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
                if goal is not None:
                    goal.status = "abandoned"
                    session.add(goal)
                restored = await goals.restore_previous_goal(session=session, user=user)
                session.add(user)
                return [Reply.plain(back if restored else
                                    _("Cancelled. Whenever you're ready, send /goal to start again."))]
            if user.stage == Stage.NEW and user.active_goal_id is None:
                restored = await goals.restore_previous_goal(session=session, user=user)
                session.add(user)
                if restored:
                    return [Reply.plain(back)]
        return [Reply.plain(_("There's nothing in progress to cancel."))]

    async def milestone_reached(self, who: Speaker, milestone_id: int) -> list[Reply]:
        """The "Reached" button under /progress: the milestone counts as reached from now on."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            milestone = await goals.reach_milestone(session=session, milestone_id=milestone_id, user_id=user.id or 0)
            if milestone is None:
                return [Reply.plain(_(texts.EXPIRED))]
            milestones = await goals.milestones(session=session, plan_id=milestone.plan_id)
        upcoming = next((m for m in milestones if m.reached_at is None), None)
        text = _("🏁 Milestone reached: {title}. Well done!", title=milestone.title)
        if upcoming is not None:
            text += "\n\n" + _("Next: {title} by {date}.", title=upcoming.title,
                                date=format_date(upcoming.target_date))
        else:
            text += "\n\n" + _("That was the last milestone of your plan.")
        return [Reply.plain(text)]

    async def record_answer(self, session: AsyncSession, user: User, text: str) -> None:
        """A clarification answer joins the goal's question/answer pairs."""
        goal = await active_goal(session, user)
        question = await turns.latest_coach_turn(session=session, user_id=user.id or 0, kind="question")
        goal.clarifications = [*goal.clarifications, {"q": question.text if question else "", "a": text}]
        session.add(goal)


def _status(who: Speaker, message: str) -> None:
    """A status line in the chat's draft while a structured step works (when a chat waits)."""
    if who.drafts is not None:
        who.drafts.status(_(message))


async def _store_resolution(session: AsyncSession, goal: Goal, user: User, draft: ResolutionDraft,
                            step: Step) -> tuple[Resolution, Reply]:
    """A resolution stored with the coach's turn that shows it; the reply to send."""
    resolution = await goals.save_resolution(session=session, goal=goal, fields={
        "statement": draft.statement, "why": draft.why, "metric": draft.success_metric,
        "deadline": date.fromisoformat(draft.deadline_date), "strategy": draft.strategy,
        "weekly_minutes": draft.weekly_minutes or None, "safety_note": draft.safety_note.strip(),
        "trace_id": step.trace_id})
    shown = views.resolution_reply(resolution)
    written = await turns.add_turn(session=session, user=user, role="coach", kind="resolution", text=shown.text,
                                   trace_id=step.trace_id)
    shown.turn_id = written.id
    return resolution, shown


def _record_scores(session: AsyncSession, step: Step, user: User, written: Turn, scores: list[Score]) -> None:
    """The judge's scores of a plan judged before it was shown: stored, and feedback scores on its trace."""
    for s in scores:
        session.add(Judgement(user_id=user.id or 0, turn_id=written.id, trace_id=step.trace_id, target="plan",
                              criterion=s.criterion, score=s.score, reason=s.reason,
                              prompt_version=prompts.JUDGE_PLAN.version))
        step.trace.score(f"judge_plan_{s.criterion}", s.score, s.reason)


async def _mark_answered(session: AsyncSession, turn: Turn | None) -> None:
    if turn is not None:
        await turns.mark_answered(session=session, turn_id=turn.id or 0)
