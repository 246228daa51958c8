"""Replies to Telegram HTML: everything escaped, split below 4096 characters, keyboards encoded."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from pipeline.replies import Button, Para, Reply

LIMIT = 4096
SAFE_LIMIT = 4000  # room for the odd entity Telegram counts differently

# callback_data: "<code>:<ref>" or "<code>:<ref>:<value>", ASCII only, always far below 64 bytes.
ACTION_CODES = {
    "skip": "sk",
    "retry": "rt",
    "accept": "pa",
    "regenerate": "pr",
    "adjust": "pj",
    "goal_new": "gy",
    "goal_keep": "gn",
    "delete_yes": "dy",
    "delete_no": "dn",
    "skip_reason": "rs",
    "milestone": "mr",
    "checkin_done": "kd",
    "checkin_partly": "kp",
    "checkin_missed": "km",
    "checkin_snooze": "kz",
    "checkin_set": "ks",
    "checkin_adjust": "ka",
    "care_resume": "cr",
    "language_set": "lg",
}
RATE_CODE = "r"
CODE_ACTIONS = {code: action for action, code in ACTION_CODES.items()}
_DATA = re.compile(r"^([a-z]{1,3}):(\d{1,15})(?::(\d{1,2}))?$")


@dataclass(frozen=True)
class Callback:
    """Parsed, validated button data."""

    action: str
    ref: int
    value: int | None = None


def encode(action: str, ref: int, value: int | None = None) -> str:
    """The callback_data of a button."""
    code = RATE_CODE if action == "rate" else ACTION_CODES[action]
    data = f"{code}:{ref}" + (f":{value}" if value is not None else "")
    assert len(data.encode()) <= 64
    return data


def decode(data: str | None) -> Callback | None:
    """Button data back to an action; None for anything malformed or unknown."""
    if not data or len(data) > 64:
        return None
    match = _DATA.fullmatch(data)
    if match is None:
        return None
    code, ref, value = match.groups()
    action = CODE_ACTIONS.get(code) or ("rate" if code == RATE_CODE else None)
    if action is None or (action == "rate") != (value is not None):
        return None
    return Callback(action, int(ref), int(value) if value is not None else None)


def keyboard(rows: list[list[Button]], *, rate_turn: int | None = None) -> InlineKeyboardMarkup | None:
    """Inline keyboard for abstract buttons, plus the 1–5 rating row for LLM-written messages."""
    markup = [[InlineKeyboardButton(b.label, callback_data=encode(b.action, b.ref)) for b in row] for row in rows]
    if rate_turn is not None:
        markup.append(rating_row(rate_turn))
    return InlineKeyboardMarkup(markup) if markup else None


def rating_row(turn_id: int, chosen: int | None = None) -> list[InlineKeyboardButton]:
    """Five star buttons; the chosen one is marked and every one stays pressable."""
    return [
        InlineKeyboardButton(f"★{v}" if v == chosen else f"☆{v}", callback_data=encode("rate", turn_id, v))
        for v in range(1, 6)
    ]


def _is_rating_row(row: tuple[InlineKeyboardButton, ...] | list[InlineKeyboardButton]) -> bool:
    return bool(row) and all(str(b.callback_data or "").startswith(RATE_CODE + ":") for b in row)


def with_rating(markup: InlineKeyboardMarkup | None, turn_id: int, chosen: int) -> InlineKeyboardMarkup:
    """The message's keyboard with its rating row showing the choice (other rows kept)."""
    rows = [list(row) for row in (markup.inline_keyboard if markup else ()) if not _is_rating_row(row)]
    return InlineKeyboardMarkup([*rows, rating_row(turn_id, chosen)])


def without_actions(markup: InlineKeyboardMarkup | None) -> InlineKeyboardMarkup | None:
    """The message's keyboard with only its rating row left (after an action button was used)."""
    rows = [list(row) for row in (markup.inline_keyboard if markup else ()) if _is_rating_row(row)]
    return InlineKeyboardMarkup(rows) if rows else None


def para_html(para: Para) -> str:
    """One paragraph as HTML; a heading's first line is bold."""
    if not para.heading:
        return html.escape(para.text, quote=False)
    head, _, rest = para.text.partition("\n")
    out = f"<b>{html.escape(head, quote=False)}</b>"
    return out + ("\n" + html.escape(rest, quote=False) if rest else "")


def render(reply: Reply, limit: int = SAFE_LIMIT) -> list[str]:
    """The reply as HTML messages, each below the limit, split at paragraph boundaries."""
    pieces: list[str] = []
    for para in reply.paras:
        for chunk in _paragraph_chunks(para.text):
            piece = para_html(Para(chunk, para.heading and chunk == para.text))
            # A paragraph too long for one message is cut as plain text, so no tag is ever split.
            pieces.append(piece if len(piece) <= limit else html.escape(chunk, quote=False))
    messages: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}\n\n{piece}" if current else piece
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            messages.append(current)
        current = piece
        while len(current) > limit:
            cut = _cut_point(current, limit)
            messages.append(current[:cut].rstrip())
            current = current[cut:].lstrip()
    if current.strip():
        messages.append(current)
    return messages or ["…"]


def _paragraph_chunks(text: str) -> list[str]:
    return [chunk for chunk in re.split(r"\n\s*\n", text) if chunk.strip()] or []


def _cut_point(text: str, limit: int) -> int:
    """Where to cut escaped plain text: a line break, else a space, never inside an entity."""
    window = text[:limit]
    for sep in ("\n", ". ", " "):
        at = window.rfind(sep)
        if at > limit // 2:
            cut = at + len(sep)
            break
    else:
        cut = limit
    amp = text.rfind("&", 0, cut)
    if amp != -1 and ";" not in text[amp:cut]:
        cut = amp
    return cut
