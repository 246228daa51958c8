"""Voice notes, audio files and photos, understood: what the user said or showed becomes the text of their turn.

Design: one structured LLM step, `media.understand` (through `Steps.run`, so it has its trace, LLM span and
usage row), gets the file as an inline part (`types.Part.from_bytes`) beside a line naming the user's goal, and
returns the words spoken (voice notes, audio) and a one-line description (photos, audio without speech). That
text then takes the path of a typed message (`Conversation.on_text`, with the check-in hand-over): the crisis
screen, a check-in note, the reason for a low rating, the coach's reply and its rating row work as they do for
text. A voice note is stored as its words; an audio file without words and a photo as one line,
"[audio] <description>" or "[photo] <description> — <caption>". The bytes are never stored: not in the
database, not in a trace (the step's trace input is kind, MIME type, size and duration; its output the text;
the LLM span records text parts only, `pipeline.steps._span_input`). While the model listens or looks, the chat's
draft shows a status line ("Listening to your recording…"); the coach's answer then streams like any other.

Limits come before the download (Telegram tells the duration and size): `MEDIA_MAX_SECONDS` (10 minutes) and
`MEDIA_MAX_BYTES`. The Bot API downloads at most 20 MB; inline parts travel base64-encoded in a Gemini request
that must stay under 20 MB, so the default is 14 MB (about 18.7 MB encoded). The format is read from the
file's first bytes, not from what the client declared: OGG/Opus, MP3, M4A/AAC, WAV (and FLAC, AIFF) for sound,
JPEG, PNG and WebP for pictures. Anything else, too long, too large, a failed download or a failed step gets a
clear message saying what works; nothing is stored for it, so nothing stored before is touched. A user past the
day's cap on stored messages gets the cap's notice (once) without the file being fetched or heard
(`Conversation.over_daily_cap`).

The understanding step does not count against the per-user flood guard (the coach's reply that follows does,
once, as for a typed message), but a user already over the cap is not listened to until the window allows: the
turn waits for the guard's room before the file is even fetched (`wait_for_room`, the status line showing), then
goes on by itself, so the file is never refused for it and no bytes are held while waiting.
No Telegram here: the bot downloads the file and hands over the bytes (`bot.media`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from google.genai import types
from pydantic import BaseModel, Field

from pipeline import prompts, speaker
from pipeline.i18n import N_, _
from pipeline.llm import LLMError
from pipeline.replies import Reply
from pipeline.speaker import Speaker
from pipeline.steps import Owner, Steps
from storage import goals
from storage.db import Database

logger = logging.getLogger(__name__)

BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses larger files
DESCRIPTION_CHARS = 300  # a photo's (or a sound's) description is one line
ROOM_WAIT_S = 120.0  # the longest a file waits for the flood guard's room (its window is a minute)
ROOM_MARGIN_S = 0.05  # past the window's edge, so the room is there when the wait ends

VOICE, AUDIO, PHOTO = "voice", "audio", "photo"
LISTENED = (VOICE, AUDIO)

# What the coach says when it cannot take a file in (marked for the catalog, translated where used).
WHAT_WORKS = N_("I understand text, voice notes, audio files (OGG, MP3, M4A, WAV) and photos. Stickers, videos, "
                "video notes and other files I can't take in yet: tell me in words or in a voice note.")
TOO_LONG = N_("That recording is too long for me: I listen to up to {minutes} minutes at a time. Send a shorter "
              "one, or tell me in words.")
TOO_LARGE = N_("That file is too large for me (up to {megabytes} MB). Send a smaller one, or tell me in words.")
NOT_DOWNLOADED = N_("I couldn't fetch that file from Telegram just now. Please send it again in a moment.")
NO_WORDS = N_("I couldn't make out any words in that voice note. Could you record it again, or type it?")
NOT_UNDERSTOOD = N_("I couldn't take that in just now. Please send it again in a minute, or tell me in words.")
LISTENING = N_("Listening to your recording…")
LOOKING = N_("Looking at your photo…")


@dataclass(frozen=True)
class Limits:
    """The longest recording (seconds) and the largest file (bytes) Rein takes in."""

    max_seconds: int = 600
    max_bytes: int = 14 * 1024 * 1024


@dataclass(frozen=True)
class Incoming:
    """What a message says of its file before it is downloaded (sizes and durations may be unknown)."""

    kind: str  # voice | audio | photo
    size: int | None = None
    duration: int | None = None
    caption: str = ""


class MediaReading(BaseModel):
    """What the model heard or saw."""

    words: str = Field(description="Every word spoken, verbatim, in the language spoken; empty when nobody "
                                   "speaks and for photos")
    description: str = Field(description="One short line: what the photo shows (with the numbers or text in it "
                                         "that matter), or what the sound is when nobody speaks")


def refusal(incoming: Incoming, limits: Limits) -> Reply | None:
    """The message for a file Rein will not download (too long or too large), else None."""
    if incoming.kind in LISTENED and incoming.duration is not None and incoming.duration > limits.max_seconds:
        return Reply.plain(_(TOO_LONG, minutes=max(1, limits.max_seconds // 60)))
    if incoming.size is not None and incoming.size > min(limits.max_bytes, BOT_API_DOWNLOAD_LIMIT):
        return too_large(limits)
    return None


def too_large(limits: Limits) -> Reply:
    """The message for a file over the size limit."""
    return Reply.plain(_(TOO_LARGE, megabytes=max(1, min(limits.max_bytes, BOT_API_DOWNLOAD_LIMIT) // 2**20)))


def not_downloaded() -> Reply:
    """The message for a file Telegram did not hand over."""
    return Reply.plain(_(NOT_DOWNLOADED))


def what_works() -> Reply:
    """The message for anything Rein cannot take in, saying what it can."""
    return Reply.plain(_(WHAT_WORKS))


def sniff(data: bytes) -> str | None:
    """The MIME type Gemini is given for a file, read from its first bytes; None for a format Rein does not take."""
    head = data[:16]
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3"):
        return "audio/mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio or ADTS frame header
        return "audio/aac" if (head[1] >> 1) & 0b11 == 0 else "audio/mp3"
    if head[4:8] == b"ftyp" and head[8:11] in (b"M4A", b"M4B", b"mp4", b"iso", b"das"):
        return "audio/mp4"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def one_line(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """Text on one line, trimmed to `limit` characters."""
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def turn_text(kind: str, reading: MediaReading, caption: str) -> str:
    """The text a file's turn is stored as: the words spoken, else one line describing it (with the caption)."""
    caption = caption.strip()
    words = reading.words.strip()
    if kind in LISTENED and words:
        return f"{words}\n\n{caption}" if caption else words
    label = "[photo]" if kind == PHOTO else "[audio]"
    line = f"{label} {one_line(reading.description)}"
    return f"{line} — {caption}" if caption else line


class MediaReader:
    """Checks a file's limits and format and has the model hear or look at it (`media.understand`)."""

    def __init__(self, *, db: Database, steps: Steps, limits: Limits) -> None:
        self.db = db
        self.steps = steps
        self.limits = limits

    def refusal(self, incoming: Incoming) -> Reply | None:
        """The message for a file Rein will not download, else None."""
        return refusal(incoming, self.limits)

    async def wait_for_room(self, who: Speaker, incoming: Incoming) -> None:
        """Wait until the flood guard has room for the user's next LLM call (at most `ROOM_WAIT_S`), the chat's
        draft saying the file is being taken in; at once when there is room."""
        waited = 0.0
        while (wait := self.steps.room_in(who.telegram_id)) > 0 and waited < ROOM_WAIT_S:
            if not waited:
                logger.info("media.waits_for_room in_s=%.1f", wait)
                if who.drafts is not None:
                    who.drafts.status(_(LOOKING if incoming.kind == PHOTO else LISTENING))
            wait = min(wait + ROOM_MARGIN_S, ROOM_WAIT_S - waited)
            await asyncio.sleep(wait)
            waited += wait

    async def understand(self, who: Speaker, incoming: Incoming, data: bytes) -> str | list[Reply]:
        """The text of the user's turn for a downloaded file, or the replies saying why there is none."""
        if len(data) > min(self.limits.max_bytes, BOT_API_DOWNLOAD_LIMIT):
            return [too_large(self.limits)]
        mime = sniff(data)
        wanted = "image/" if incoming.kind == PHOTO else "audio/"
        if mime is None or not mime.startswith(wanted):
            logger.info("media.unreadable kind=%s", incoming.kind)
            return [what_works()]
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            goal = await goals.get_goal(session=session, goal_id=user.active_goal_id or 0, user_id=user.id or 0)
        owner = Owner(user.id, user.opaque_id, user.thread_id)
        if who.drafts is not None:  # a status line in the chat's draft while the model listens or looks
            who.drafts.status(_(LOOKING if incoming.kind == PHOTO else LISTENING))
        described = {"kind": incoming.kind, "mime_type": mime, "bytes": len(data), "seconds": incoming.duration}
        try:
            async with self.steps.run("media.understand", purpose="media", owner=owner, input=described,
                                      metadata={"stage": user.stage}, tags=["media", incoming.kind]) as step:
                reading = await step.structured(MediaReading, system=prompts.MEDIA.text,
                                                contents=[_content(incoming, mime, data, goal.text if goal else "")])
                text = turn_text(incoming.kind, reading, incoming.caption)
                step.set_output({"description": one_line(reading.description), "words": len(reading.words.split())})
        except LLMError as exc:
            logger.warning("media.not_understood kind=%s error=%s", incoming.kind, exc.kind)
            return [Reply.plain(_(NOT_UNDERSTOOD))]
        if incoming.kind == VOICE and not reading.words.strip():
            return [Reply.plain(_(NO_WORDS))]
        return text


def _content(incoming: Incoming, mime: str, data: bytes, goal: str) -> types.Content:
    """The user's file as an inline part, after a line naming what it is, their goal and their caption."""
    what = {VOICE: "a voice note", AUDIO: "an audio file", PHOTO: "a photo"}[incoming.kind]
    lines = [f"I sent my goal coach {what}."]
    if goal:
        lines.append(f"My goal: {goal}")
    if incoming.caption.strip():
        lines.append(f"My caption: {incoming.caption.strip()}")
    return types.Content(role="user", parts=[types.Part(text="\n".join(lines)),
                                             types.Part.from_bytes(data=data, mime_type=mime)])
