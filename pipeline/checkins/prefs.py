"""When Rein checks in: the schedule menu and commands, the time zone, pauses and quiet hours, and the texts
that answer what Rein asked (a zone, a custom time, a note)."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import i18n, speaker
from pipeline.checkins.core import CheckinCore, local_label
from pipeline.i18n import N_, _, ngettext
from pipeline.replies import Reply
from pipeline.schedule import (
    CUSTOM,
    EVERY_DAY,
    PRESETS,
    ScheduleError,
    describe,
    format_time,
    parse_checkin,
    parse_range,
    parse_time,
    schedule_menu,
)
from pipeline.speaker import Speaker
from pipeline.timezones import from_location, resolve
from storage import checkins as store
from storage import users
from storage.models import CheckinPrefs, User, utcnow

ASK_ZONE = N_(
    "Which time zone are you in? Send your city (e.g. Berlin or São Paulo), a zone name like "
    "Europe/Berlin, or share your location (📎 → Location)."
)
ASK_CUSTOM = N_("Send the time, and the days if not every day, e.g. 07:30 or 19:00 mon,wed,fri.")
NO_CHECKINS = N_("You have no check-ins set. /checkin sets them.")
# A custom time waiting for the zone is kept in `awaiting_ref` as CUSTOM_BASE + minutes * 128 + days.
CUSTOM_BASE = 1000


def _custom_ref(at: time, days: int) -> int:
    return CUSTOM_BASE + (at.hour * 60 + at.minute) * 128 + days


def _unknown_zone(text: str) -> str:
    return _("I don't know the time zone of “{place}”. Try a bigger city nearby, a zone name like "
             "America/New_York, or share your location.", place=text.strip()[:40])


class Preferences:
    """/checkin, /timezone, /pause, /resume, /quiet and the answers to Rein's questions about them."""

    def __init__(self, core: CheckinCore) -> None:
        self.core = core
        self.db = core.db

    async def menu(self, who: Speaker) -> list[Reply]:
        """/checkin: the schedule menu, with the current schedule if there is one."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            row = await store.get_schedule(session=session, user_id=user.id or 0, kind="checkin")
            prefs = await store.find_prefs(session=session, user_id=user.id or 0)
        current = None
        if row is not None:
            current = _("Your check-ins: {when} ({zone}).", when=describe(parse_time(row.local_time), row.days),
                        zone=user.timezone or "UTC")
            if prefs is not None and (prefs.paused or (prefs.paused_until and prefs.paused_until > self.core.clock())):
                current += " " + _("Paused: /resume turns them back on.")
            current += " " + _("/checkin off stops them.")
        return [schedule_menu(current)]

    async def choose(self, who: Speaker, preset: int) -> list[Reply]:
        """A menu button: a preset time, or Custom."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if preset == CUSTOM:
                self.core.expect(prefs, "custom", None)
                return [Reply.plain(_(ASK_CUSTOM))]
            choice = PRESETS.get(preset)
            if choice is None:
                return [Reply.plain(_("This button has expired. /checkin shows the choices."))]
            if user.timezone is None:
                self.core.expect(prefs, "timezone", preset)
                return [Reply.plain(_(ASK_ZONE))]
            return [await self.core.apply(session, user, prefs, choice.at, choice.days)]

    async def command(self, who: Speaker, args: str) -> list[Reply]:
        """/checkin [HH:MM [days] | off]."""
        args = args.strip()
        if not args:
            return await self.menu(who)
        if args.lower() in ("off", "stop", "none"):
            async with self.db.session() as session:
                user = await speaker.load(session, who)
                gone = await store.drop_schedules(session=session, user_id=user.id or 0,
                                                  kinds=("checkin", "review", "snooze"))
            if not gone:
                return [Reply.plain(_(NO_CHECKINS))]
            return [Reply.plain(_("Check-ins are off. /checkin turns them on again whenever you like."))]
        try:
            at, days = parse_checkin(args)
        except ScheduleError as exc:
            return [Reply.plain(_("Sorry, {problem}.", problem=exc))]
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if user.timezone is None:
                self.core.expect(prefs, "timezone", _custom_ref(at, days))
                return [Reply.plain(_(ASK_ZONE))]
            return [await self.core.apply(session, user, prefs, at, days)]

    async def timezone(self, who: Speaker, args: str) -> list[Reply]:
        """/timezone [Area/City | city]."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if not args.strip():
                self.core.expect(prefs, "timezone", None)
                now = self.core.clock()
                known = (_("Your time zone is {zone} (it's {when} there).", zone=user.timezone,
                           when=local_label(now, user.timezone)) + " " if user.timezone else "")
                return [Reply.plain(known + _(ASK_ZONE))]
            zone = resolve(args)
            if zone is None:
                return [Reply.plain(_unknown_zone(args))]
            return await self._set_zone(session, user, prefs, zone)

    async def location(self, who: Speaker, latitude: float, longitude: float) -> list[Reply] | None:
        """A shared location: sets the zone while Rein is asking for one; None otherwise."""
        async with self.db.session() as session:
            found = await store.awaiting_prefs(session=session, telegram_id=who.telegram_id)
            if found is None or not self.core.expects(found[1], "timezone"):
                return None
            user, prefs = found
            zone = from_location(latitude, longitude)
            if zone is None:
                return [Reply.plain(_("I couldn't tell the time zone of that place. Send your city instead."))]
            return await self._set_zone(session, user, prefs, zone)

    async def intercept(self, who: Speaker, text: str) -> list[Reply] | None:
        """A text that answers what Rein asked (zone, custom time, a note); None lets the coach have it."""
        async with self.db.session() as session:
            found = await store.awaiting_prefs(session=session, telegram_id=who.telegram_id)
            if found is None:
                return None
            user, prefs = found
            awaiting = prefs.awaiting
            assert awaiting is not None
            if not self.core.expects(prefs, awaiting):
                return self._pass_on(session, prefs)
            chatty = len(text.split()) > 5
            if awaiting == "note":
                if text.rstrip().endswith("?"):  # a question for the coach, not a note
                    return self._pass_on(session, prefs)
                entry = await store.get_progress(session=session, entry_id=prefs.awaiting_ref or 0,
                                                 user_id=user.id or 0)
                self._pass_on(session, prefs)
                if entry is None:
                    return None
                entry.note = text[:1000]
                session.add(entry)
                return [Reply.plain(_("Noted. ✍️ /progress shows how your weeks are going."))]
            if awaiting == "timezone":
                zone = resolve(text)
                if zone is None:
                    return self._pass_on(session, prefs) if chatty else [Reply.plain(_unknown_zone(text))]
                return await self._set_zone(session, user, prefs, zone)
            try:
                at, days = parse_checkin(text)
            except ScheduleError as exc:
                return self._pass_on(session, prefs) if chatty else [Reply.plain(_("Sorry, {problem}.", problem=exc))]
            prefs.awaiting = None
            if user.timezone is None:
                self.core.expect(prefs, "timezone", _custom_ref(at, days))
                return [Reply.plain(_(ASK_ZONE))]
            return [await self.core.apply(session, user, prefs, at, days)]

    async def pause(self, who: Speaker, args: str) -> list[Reply]:
        """/pause [days]: no check-ins until /resume, or for that many days."""
        args = args.strip()
        if args and (not args.isdigit() or not 1 <= int(args) <= 365):
            return [Reply.plain(_("Use /pause for a pause until /resume, or /pause 3 for three days (1–365)."))]
        now = self.core.clock()
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if args:
                prefs.paused, prefs.pause_reason = False, None
                prefs.paused_until = now + timedelta(days=int(args))
                await self.core.reschedule(session, user, prefs, now)
                until = local_label(prefs.paused_until, user.timezone or "UTC")
                text = ngettext("Check-ins paused for {n} day, until {until}. /resume ends it.",
                                "Check-ins paused for {n} days, until {until}. /resume ends it.", int(args),
                                until=until)
            else:
                prefs.paused, prefs.pause_reason, prefs.paused_until = True, "user", None
                await self.core.reschedule(session, user, prefs, now)
                text = _("Check-ins paused. /resume turns them back on.")
            session.add(prefs)
        return [Reply.plain(text)]

    async def resume(self, who: Speaker) -> list[Reply]:
        """/resume: check-ins on again from now."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            was_paused = prefs.paused or prefs.paused_until is not None
            prefs.paused, prefs.pause_reason, prefs.paused_until = False, None, None
            session.add(prefs)
            rows = await self.core.reschedule(session, user, prefs, self.core.clock())
        checkin = next((r for r in rows if r.kind == "checkin"), None)
        if checkin is None or checkin.next_due_at is None:
            return [Reply.plain(_(NO_CHECKINS))]
        lead = _("Check-ins are back on.") if was_paused else _("Check-ins weren't paused.")
        return [Reply.plain(lead + " " + _("Next: {when}.", when=local_label(checkin.next_due_at,
                                                                             user.timezone or "UTC")))]

    async def resume_after_block(self, who: Speaker) -> list[Reply]:
        """/start after the user had blocked the bot: their check-ins start again."""
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
            if user is None:
                return []
            prefs = await store.find_prefs(session=session, user_id=user.id or 0)
            if prefs is None or not prefs.paused or prefs.pause_reason != "blocked":
                return []
            prefs.paused, prefs.pause_reason = False, None
            session.add(prefs)
            rows = await self.core.reschedule(session, user, prefs, self.core.clock())
        if not any(r.kind == "checkin" and r.next_due_at for r in rows):
            return []
        return [Reply.plain(_("Good to have you back. Your check-ins are on again (/pause stops them)."))]

    async def quiet(self, who: Speaker, args: str) -> list[Reply]:
        """/quiet [HH:MM-HH:MM | off]: the local hours in which Rein sends nothing unasked."""
        args = args.strip().lower()
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if not args:
                start, end = self.core.quiet(prefs)
                state = _("off") if start == end else f"{i18n.format_time(start)}–{i18n.format_time(end)}"
                return [Reply.plain(_("Quiet hours: {state} (your local time). Change them with /quiet 22:00-07:00, "
                                      "or /quiet off. A check-in you schedule inside them still comes.", state=state))]
            if args == "off":
                start = end = time(0, 0)
            else:
                try:
                    start, end = parse_range(args)
                except ScheduleError as exc:
                    return [Reply.plain(_("Sorry, {problem}.", problem=exc))]
            prefs.quiet_start, prefs.quiet_end = format_time(start), format_time(end)
            prefs.updated_at = utcnow()
            session.add(prefs)
            await self.core.reschedule(session, user, prefs, self.core.clock())
        if start == end:
            return [Reply.plain(_("Quiet hours are off."))]
        return [Reply.plain(_("Quiet hours set: {start}–{end} your time.", start=i18n.format_time(start),
                                      end=i18n.format_time(end)))]

    @staticmethod
    def _pass_on(session: Any, prefs: CheckinPrefs) -> list[Reply] | None:
        """Rein no longer waits for an answer: None, so the text goes to the coach."""
        prefs.awaiting = None
        session.add(prefs)
        return None

    async def _set_zone(self, session: Any, user: User, prefs: CheckinPrefs, zone: str) -> list[Reply]:
        pending = prefs.awaiting_ref if prefs.awaiting == "timezone" else None
        prefs.awaiting = None
        user.timezone = zone
        session.add_all([user, prefs])
        await self.core.reschedule(session, user, prefs, self.core.clock())
        local = self.core.clock().astimezone(ZoneInfo(zone))
        replies = [Reply.plain(_("Time zone set: {zone}. It's {time} on {weekday} there now, if I got that right. "
                                 "(/timezone changes it.)", zone=zone, time=i18n.format_time(local),
                                 weekday=i18n.format_weekday(local)))]
        if pending is not None and pending in PRESETS:
            replies.append(await self.core.apply(session, user, prefs, PRESETS[pending].at, PRESETS[pending].days))
        elif pending is not None and pending >= CUSTOM_BASE:
            minutes, days = divmod(pending - CUSTOM_BASE, 128)
            replies.append(await self.core.apply(session, user, prefs, time(*divmod(minutes, 60)), days or EVERY_DAY))
        return replies
