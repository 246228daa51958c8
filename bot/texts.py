"""Fixed texts of the Telegram surface and the command menu, marked for the catalog (`N_` here, translated where
they are used: `_(texts.GROUPS)`, `help_text()`, `commands()`)."""

from __future__ import annotations

from pipeline import texts as pipeline_texts
from pipeline.i18n import N_, _
from pipeline.media import WHAT_WORKS

COMMANDS: list[tuple[str, str]] = [
    ("start", N_("Start, or see where you are")),
    ("goal", N_("Start a new goal")),
    ("plan", N_("Show your current plan")),
    ("checkin", N_("When I check in: /checkin 07:30 mon,wed,fri or off")),
    ("progress", N_("Your streak, weeks and milestones, with a chart")),
    ("timezone", N_("Set your time zone: a city or Area/City")),
    ("pause", N_("Pause check-ins: /pause or /pause 3 (days)")),
    ("resume", N_("Resume check-ins")),
    ("quiet", N_("Quiet hours: /quiet 22:00-07:00 or off")),
    ("language", N_("Choose the language I write in")),
    ("cancel", N_("Leave the step in progress")),
    ("export", N_("Download all your data (JSON)")),
    ("delete", N_("Erase all your data")),
    ("help", N_("What Rein can do")),
]
HELP_TITLE = N_("Rein, your goal coach")
HELP_INTRO = N_("Tell me what you want to change. I'll ask a few questions, write a resolution and a plan with "
                "milestones, and then coach you along the way. Just write to me in any language.")
# The bot's profile texts (setMyDescription: up to 512 characters; setMyShortDescription: up to 120).
DESCRIPTION = N_("Rein is your goal coach. Tell me what you want to change: I'll ask a few questions, write a "
                 "concrete plan with milestones, check in on the days you choose and keep you on track.")
SHORT_DESCRIPTION = N_("Your goal coach: a concrete plan, check-ins and progress you can see.")

NOT_TEXT = WHAT_WORKS  # stickers, videos, video notes, documents, locations nobody asked for…
GROUPS = N_("I coach one-to-one only. Message me privately to work on your goals.")
UNKNOWN_COMMAND = N_("I don't know that command. /help lists the ones I understand.")
NOT_ALLOWED = N_("Rein is in a private beta and this account isn't on the list yet. Sorry!")
EXPIRED = pipeline_texts.EXPIRED
NOT_YOURS = N_("This button isn't for you.")
BUSY = N_("Something went wrong on my side. Please try again in a moment.")
STORAGE_DOWN = N_("I can't reach my memory right now, so I couldn't save or answer that message. "
                  "Please send it again in a minute.")


def commands() -> list[tuple[str, str]]:
    """The command menu in the task's language."""
    return [(name, _(description)) for name, description in COMMANDS]


def help_text() -> str:
    """/help in the task's language (HTML)."""
    lines = "\n".join(f"/{name} — {description}" for name, description in commands())
    return f"<b>{_(HELP_TITLE)}</b>\n{_(HELP_INTRO)}\n\n{lines}"
