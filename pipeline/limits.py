"""Limits a person never meets and an abuser always does: the texts one user may have stored per day.

The count lives on the user row (`messages_day`, `messages_today`), written in the transaction that stores the
text, so it holds across restarts and replicas. Past the cap nothing is stored or sent to the model; the first text
over it gets one notice, later ones that day get no answer at all.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import Enum

from pipeline.i18n import _
from pipeline.replies import Reply
from storage.models import User


class Admission(Enum):
    """What to do with one more text of the user today."""

    STORE = "store"
    NOTIFY = "notify"  # the first text over the cap: tell the user, store nothing
    DROP = "drop"  # over the cap, already told: store nothing, answer nothing


def today() -> date:
    """The day the cap counts (UTC)."""
    return datetime.now(UTC).date()


def admit(user: User, cap: int, day: date | None = None) -> Admission:
    """Count one more text of the user's UTC day against `cap` (the row is changed; the caller's session stores
    it)."""
    day = day or today()
    if user.messages_day != day:
        user.messages_day, user.messages_today = day, 0
    if user.messages_today < cap:
        user.messages_today += 1
        return Admission.STORE
    if user.messages_today == cap:
        user.messages_today = cap + 1  # the notice is given once a day
        return Admission.NOTIFY
    return Admission.DROP


def over_cap_notice(cap: int) -> Reply:
    """The one notice a user gets on the day they pass the cap."""
    return Reply.plain(_("You have sent {cap} messages today, the most Rein keeps in a day. I'll read your messages "
                         "again tomorrow (from midnight UTC).", cap=cap))
