"""Fixed texts of the Telegram surface and the command menu."""

from __future__ import annotations

from pipeline import texts as pipeline_texts
from pipeline.media import WHAT_WORKS

COMMANDS: list[tuple[str, str]] = [
    ("start", "Start, or see where you are"),
    ("goal", "Start a new goal"),
    ("plan", "Show your current plan"),
    ("checkin", "When I check in: /checkin 07:30 mon,wed,fri or off"),
    ("progress", "Your streak, weeks and milestones, with a chart"),
    ("timezone", "Set your time zone: a city or Area/City"),
    ("pause", "Pause check-ins: /pause or /pause 3 (days)"),
    ("resume", "Resume check-ins"),
    ("quiet", "Quiet hours: /quiet 22:00-07:00 or off"),
    ("cancel", "Leave the step in progress"),
    ("export", "Download all your data (JSON)"),
    ("delete", "Erase all your data"),
    ("help", "What Rein can do"),
]

HELP = (
    "<b>Rein, your goal coach</b>\n"
    "Tell me what you want to change. I'll ask a few questions, write a resolution and a plan with "
    "milestones, and then coach you along the way. Just write to me in any language.\n\n"
    + "\n".join(f"/{name} — {description}" for name, description in COMMANDS)
)

NOT_TEXT = WHAT_WORKS  # stickers, videos, video notes, documents, locations nobody asked for…
GROUPS = "I coach one-to-one only. Message me privately to work on your goals."
UNKNOWN_COMMAND = "I don't know that command. /help lists the ones I understand."
NOT_ALLOWED = "Rein is in a private beta and this account isn't on the list yet. Sorry!"
EXPIRED = pipeline_texts.EXPIRED
NOT_YOURS = "This button isn't for you."
BUSY = "Something went wrong on my side. Please try again in a moment."
STORAGE_DOWN = (
    "I can't reach my memory right now, so I couldn't save or answer that message. "
    "Please send it again in a minute."
)
