"""A local Telegram Bot API server for tests that enforces Telegram's rules.

The bot under test talks to it over real HTTP (``ApplicationBuilder().base_url(f"{fake.url}/bot")``).
Every call is checked against the official method list (``telegram-bot-api/api.json`` beside this file,
Bot API 10.1): the method must exist, required parameters must be present, unknown parameters are refused
and values must have the declared types, nested objects included. On top of that it applies the rules a bot
breaks most often: text length after entity parsing, caption length, HTML parsing, inline keyboard buttons,
``callback_data`` size, "message is not modified", unknown messages and callback queries, blocked users,
optional flood limits. A violation answers like Telegram (HTTP 400 with ``Bad Request: ...``; 404
``Not Found`` for a method that does not exist) and is appended to ``errors``, so a test can end with
``assert fake.errors == []``. Rein formats with HTML only, so that is the one parse mode the fake knows:
MarkdownV2 or Markdown answer 400 "supports HTML only".

Tests play the user with the synchronous ``user_sends``/``user_presses``/... helpers, which queue
updates for ``getUpdates`` (real long polling). ``user_sends_voice``, ``user_sends_photo``,
``user_sends_audio`` and ``user_sends_document`` carry real bytes: ``getFile`` gives such a file a
``file_path`` (``voice/file_0.oga``, ``photos/file_1.jpg``, ...) and ``/file/bot<token>/<file_path>``
serves the bytes, as Telegram does (up to 20 MB, ``download_limit``). The bot is observed through
``messages(chat_id)``, ``drafts(chat_id)`` (every ``sendMessageDraft`` text, in order), ``calls``,
``chat_actions``, ``callback_answers``, and per language ``commands_for(chat_id, language_code)``,
``description_for(language_code)`` and ``short_description_for(language_code)``.

Deliberate choices, where Telegram is looser or undocumented:
- ``&`` that does not start ``&lt;``, ``&gt;``, ``&amp;``, ``&quot;`` or a numeric entity is refused
  (Telegram itself passes it through; escaping everything is the safe habit). A lone ``>`` is accepted,
  as Telegram does.
- Text length is counted in Unicode code points of the visible text, leading/trailing whitespace
  trimmed (entity offsets are in UTF-16 units, as in the Bot API).
- Sending to a chat the fake has never seen (no update mentioned it, no ``add_chat``) answers
  400 "chat not found" unless ``require_known_chats=False``.
- Flood limits count ``send*``/``copy*``/``forward*`` calls (not ``sendChatAction`` or
  ``sendMessageDraft``, for which Telegram publishes no limit; not edits).
- ``sendMessageDraft`` to a chat that is not private answers 400 (Telegram allows private chats only).
- Unknown parameters are refused, except those python-telegram-bot's ``Defaults`` inject into every
  call (``PTB_DEFAULT_PARAMS``: parse_mode, disable_notification, protect_content, ...), which are
  dropped as Telegram would ignore them (listed in the call's ``ignored``).

Run it as its own process with ``python -m tests.fakes.botapi --port 8081 --token 123:ABC``; the
``/_fake/<action>`` endpoints then drive the user side over HTTP (see ``_handle_control``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import itertools
import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.server import LoopbackServer, serve_until_interrupted

logger = logging.getLogger(__name__)

def _default_spec_path() -> Path:
    """The official method list: $REIN_BOT_API_SPEC, else the copy beside this file (telegram-bot-api/)."""
    if os.environ.get("REIN_BOT_API_SPEC"):
        return Path(os.environ["REIN_BOT_API_SPEC"])
    return Path(__file__).resolve().parent / "telegram-bot-api" / "api.json"


DEFAULT_SPEC_PATH = _default_spec_path()

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
DESCRIPTION_LIMIT = 512
SHORT_DESCRIPTION_LIMIT = 120
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses bigger files
CALLBACK_ANSWER_LIMIT = 200
MAX_INLINE_BUTTONS = 100

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
BLOCKED = "Forbidden: bot was blocked by the user"

DEFAULT_UPDATE_TYPES_EXCLUDED = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# python-telegram-bot's ``Defaults`` adds these to every call that *could* take them (edits get
# ``disable_notification``, ``sendLocation`` gets ``parse_mode``...). Telegram ignores parameters a
# method does not have, so the fake drops these silently instead of refusing them.
PTB_DEFAULT_PARAMS = frozenset(
    {
        "parse_mode",
        "disable_notification",
        "protect_content",
        "link_preview_options",
        "allow_sending_without_reply",
        "explanation_parse_mode",
        "question_parse_mode",
        "text_parse_mode",
    }
)
_BUTTON_PLAIN_FIELDS = frozenset({"text", "icon_custom_emoji_id", "style"})
_COMMAND_RE = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_BOT_COMMAND_NAME_RE = re.compile(r"[a-z0-9_]{1,32}")
_INT_RE = re.compile(r"[+-]?\d+")
_DISCRIMINATOR_RE = re.compile(r"(?:must be|always) \"?([a-z_]+)\"?")
_LANGUAGE_CODE_RE = re.compile(r"[a-z]{2}")
# Where Telegram keeps a file of each kind (the first part of getFile's file_path), and its extensions.
_FILE_FOLDERS = {
    "photo": "photos",
    "voice": "voice",
    "audio": "music",
    "document": "documents",
    "sticker": "stickers",
    "video": "videos",
    "video_note": "video_notes",
    "animation": "animations",
}
_EXTENSIONS = {
    "audio/ogg": ".oga",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/wav": ".wav",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}
_KIND_PREFIXES = {
    "photo": "AgACAgIAAxkB",
    "voice": "AwACAgIAAxkB",
    "audio": "CQACAgIAAxkB",
    "document": "BQACAgIAAxkB",
    "sticker": "CAACAgIAAxkB",
    "video": "BAACAgIAAxkB",
    "video_note": "DQACAgIAAxkB",
    "animation": "CgACAgIAAxkB",
}
# Telegram's photo sizes: the longest side of each smaller copy it keeps of a photo (the original is capped).
PHOTO_BOXES = (90, 320, 800, 1280)
PHOTO_MAX_SIDE = 2560


# --------------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """A Telegram-shaped failure: becomes ``{"ok": false, "error_code": status, ...}``."""

    def __init__(
        self, status: int, description: str, *, retry_after: int | None = None, record: bool = True
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.record = record


class EntityParseError(ValueError):
    """Text with a parse mode that Telegram would refuse with "can't parse entities"."""


class _Mismatch(ValueError):
    """A value does not fit the declared Bot API type."""


# --------------------------------------------------------------------------------------------------
# Text helpers: UTF-16 lengths, HTML


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of Bot API entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


_HTML_TAGS: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}
_HTML_ENTITY_RE = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


@dataclass
class _OpenTag:
    name: str
    start: int  # UTF-16 offset in the visible text
    byte: int
    attrs: dict[str, str]
    language: str | None = None


class _TextBuilder:
    """Accumulates visible text while tracking its UTF-16 length."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.u16 = 0

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.u16 += utf16_len(chunk)

    def text(self) -> str:
        return "".join(self.parts)


def _decode_entity(match: re.Match[str]) -> str | None:
    named, dec, hexa = match.groups()
    if named:
        return _NAMED_ENTITIES[named]
    code = int(dec) if dec else int(hexa, 16)
    if code <= 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def _decode_attr_value(value: str) -> str:
    def repl(match: re.Match[str]) -> str:
        return _decode_entity(match) or match.group(0)

    return _HTML_ENTITY_RE.sub(repl, value)


def _trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Trim surrounding whitespace as Telegram does and clip entities to the trimmed text."""
    stripped = text.strip()
    if stripped == text:
        return text, _sorted_entities(entities)
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    out = []
    for ent in entities:
        start = max(0, ent["offset"] - lead)
        end = min(size, ent["offset"] - lead + ent["length"])
        if end > start:
            out.append({**ent, "offset": start, "length": end - start})
    return stripped, _sorted_entities(out)


def _sorted_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"]))


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram HTML into (visible text, entities); raise EntityParseError like Telegram."""
    out = _TextBuilder()
    stack: list[_OpenTag] = []
    entities: list[dict[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "&":
            match = _HTML_ENTITY_RE.match(text, i)
            decoded = _decode_entity(match) if match else None
            if match is None or decoded is None:
                raise EntityParseError(
                    f'Unescaped "&" at byte offset {_byte_offset(text, i)}; write it as "&amp;"'
                )
            out.add(decoded)
            i = match.end()
        elif ch == "<" and text.startswith("</", i):
            end = text.find(">", i + 2)
            if end == -1:
                raise EntityParseError(f"Unclosed end tag at byte offset {_byte_offset(text, i)}")
            name = text[i + 2 : end].strip().lower()
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(text, i)}")
            top = stack.pop()
            if top.name != name:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {_byte_offset(text, i)}, expected "</{top.name}>", '
                    f'found "</{name}>"'
                )
            _close_html_tag(top, stack, out.u16, entities)
            i = end + 1
        elif ch == "<":
            i = _open_html_tag(text, i, out.u16, stack)
        else:
            out.add(ch)
            i += 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    return _trim(out.text(), entities)


def _open_html_tag(text: str, start: int, position: int, stack: list[_OpenTag]) -> int:
    n = len(text)
    j = start + 1
    while j < n and not text[j].isspace() and text[j] != ">":
        j += 1
    if j >= n:
        raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, start)}")
    name = text[start + 1 : j].lower()
    if name not in _HTML_TAGS:
        raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, start)}')
    attrs: dict[str, str] = {}
    while True:
        while j < n and text[j].isspace():
            j += 1
        if j >= n:
            raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, start)}")
        if text[j] == ">":
            j += 1
            break
        k = j
        while j < n and not text[j].isspace() and text[j] not in "=>":
            j += 1
        attr = text[k:j].lower()
        if not attr:
            raise EntityParseError(
                f'Empty attribute name in the tag "{name}" at byte offset {_byte_offset(text, k)}'
            )
        while j < n and text[j].isspace():
            j += 1
        value = ""
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j].isspace():
                j += 1
            if j >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, start)}")
            if text[j] in "'\"":
                close = text.find(text[j], j + 1)
                if close == -1:
                    raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, start)}")
                value = text[j + 1 : close]
                j = close + 1
            else:
                k = j
                while j < n and not text[j].isspace() and text[j] != ">":
                    j += 1
                value = text[k:j]
        attrs[attr] = _decode_attr_value(value)
    offset = _byte_offset(text, start)
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise EntityParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
    if name == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
        raise EntityParseError(f'Tag "tg-emoji" must have a numeric "emoji-id" at byte offset {offset}')
    if name == "tg-time" and not _INT_RE.fullmatch(attrs.get("unix", "")):
        raise EntityParseError(f'Tag "tg-time" must have a numeric "unix" attribute at byte offset {offset}')
    stack.append(_OpenTag(name=name, start=position, byte=offset, attrs=attrs))
    return j


def _close_html_tag(tag: _OpenTag, stack: list[_OpenTag], position: int, out: list[dict[str, Any]]) -> None:
    length = position - tag.start
    kind = _HTML_TAGS[tag.name]
    entity: dict[str, Any] = {"type": kind, "offset": tag.start, "length": length}
    if tag.name == "code":
        cls = tag.attrs.get("class", "")
        parent = stack[-1] if stack else None
        if (
            parent is not None
            and parent.name == "pre"
            and parent.start == tag.start
            and cls.startswith("language-")
        ):
            parent.language = cls.removeprefix("language-")
            return
    elif tag.name == "pre" and tag.language:
        entity["language"] = tag.language
    elif tag.name == "a":
        href = tag.attrs.get("href")
        if not href:
            return
        entity["url"] = href
    elif tag.name == "blockquote" and "expandable" in tag.attrs:
        entity["type"] = "expandable_blockquote"
    elif tag.name == "tg-emoji":
        entity["custom_emoji_id"] = tag.attrs["emoji-id"]
    elif tag.name == "tg-time":
        entity["unix_time"] = int(tag.attrs["unix"])
        if tag.attrs.get("format"):
            entity["date_time_format"] = tag.attrs["format"]
    if length > 0:
        out.append(entity)


def parse_formatted(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Visible text and entities for ``text`` under ``parse_mode``: "HTML" or None (plain)."""
    if parse_mode is None:
        return _trim(text, [])
    if parse_mode.lower() != "html":
        raise ValueError(f"the test Bot API server parses HTML only, not {parse_mode!r}")
    return parse_html(text)


# --------------------------------------------------------------------------------------------------
# The spec


@functools.lru_cache(maxsize=4)
def load_spec(path: str) -> dict[str, Any]:
    """The parsed ``api.json`` (cached per path)."""
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


@dataclass
class UploadedFile:
    """A file part of a multipart request."""

    filename: str
    content_type: str
    data: bytes

    def summary(self) -> dict[str, Any]:
        return {"filename": self.filename, "content_type": self.content_type, "size": len(self.data)}


@dataclass
class StoredFile:
    """A file the fake holds: sent by a user (its bytes given by the test) or uploaded by the bot."""

    data: bytes
    kind: str  # "photo", "voice", "audio", "document", ... (the message field it came in)
    file_unique_id: str
    file_name: str | None = None
    mime_type: str | None = None
    file_path: str | None = None  # given out by the first getFile


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's or JPEG's header, or None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def photo_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """The (width, height) of each copy Telegram keeps of a photo, smallest first, the original last."""
    longest = max(width, height)
    scale = min(1.0, PHOTO_MAX_SIDE / longest)
    out = [(max(1, round(width * box / longest)), max(1, round(height * box / longest)))
           for box in PHOTO_BOXES if box < longest * scale]
    out.append((max(1, round(width * scale)), max(1, round(height * scale))))
    return out


class SpecValidator:
    """Checks call parameters against the Bot API method and type definitions."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.methods: dict[str, dict[str, Any]] = {name.lower(): m for name, m in spec["methods"].items()}
        self.types: dict[str, dict[str, Any]] = spec["types"]
        self._discriminators: dict[str, str] = {}
        for name, tdef in self.types.items():
            for f in tdef.get("fields", []):
                match = _DISCRIMINATOR_RE.search(f.get("description", "")) if f["name"] == "type" else None
                if match:
                    self._discriminators[name] = match.group(1)
        button = self.types.get("InlineKeyboardButton", {})
        self.button_actions = frozenset(
            f["name"] for f in button.get("fields", []) if f["name"] not in _BUTTON_PLAIN_FIELDS
        )

    def field_names(self, method: str) -> frozenset[str]:
        """Parameter names the method declares."""
        return frozenset(f["name"] for f in self.methods[method.lower()].get("fields", []))

    def canonical(self, method: str) -> str | None:
        entry = self.methods.get(method.lower())
        return entry["name"] if entry else None

    def validate(self, method: str, params: dict[str, Any], files: dict[str, UploadedFile]) -> dict[str, Any]:
        """Return the params with values coerced to their declared types, or raise ApiError."""
        entry = self.methods[method.lower()]
        fields = {f["name"]: f for f in entry.get("fields", [])}
        for name in params:
            if name not in fields:
                raise ApiError(400, f'Bad Request: unknown parameter "{name}" for method {entry["name"]}')
        for name, spec in fields.items():
            if spec["required"] and (name not in params or params[name] in ("", None)):
                if name == "chat_id":
                    raise ApiError(400, "Bad Request: chat_id is empty")
                if name == "text":
                    raise ApiError(400, "Bad Request: message text is empty")
                raise ApiError(400, f'Bad Request: parameter "{name}" is required')
        coerced: dict[str, Any] = {}
        for name, value in params.items():
            try:
                coerced[name] = self.coerce(value, fields[name]["types"], name, files, top=True)
            except _Mismatch as exc:
                raise ApiError(400, f'Bad Request: can\'t parse parameter "{name}": {exc}') from None
        return coerced

    def coerce(
        self, value: Any, types: list[str], where: str, files: dict[str, UploadedFile], *, top: bool = False
    ) -> Any:
        errors: list[str] = []
        for type_name in types:
            try:
                return self._coerce_one(value, type_name, where, files, top=top)
            except _Mismatch as exc:
                errors.append(str(exc))
        raise _Mismatch(errors[-1] if len(errors) == 1 else "; ".join(dict.fromkeys(errors)))

    def _coerce_one(
        self, value: Any, type_name: str, where: str, files: dict[str, UploadedFile], *, top: bool
    ) -> Any:
        if type_name == "Integer":
            if isinstance(value, bool):
                raise _Mismatch(f"{where} must be an Integer")
            if isinstance(value, int):
                return value
            if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
                return int(value)
            raise _Mismatch(f"{where} must be an Integer")
        if type_name == "Float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise _Mismatch(f"{where} must be a Float")
        if type_name == "Boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise _Mismatch(f"{where} must be a Boolean (true or false)")
        if type_name == "String":
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise _Mismatch(f"{where} must be a String")
        if type_name == "InputFile":
            if isinstance(value, UploadedFile):
                return value
            if isinstance(value, str) and value.startswith("attach://") and value[9:] in files:
                return files[value[9:]]
            raise _Mismatch(f"{where} must be an uploaded file")
        if isinstance(value, UploadedFile):
            raise _Mismatch(f"{where} must not be a file")
        if type_name.startswith("Array of "):
            items = self._json(value, where, list)
            inner = type_name.removeprefix("Array of ")
            return [self.coerce(item, [inner], f"{where}[{i}]", files) for i, item in enumerate(items)]
        if type_name in self.types:
            if type_name == "KeyboardButton" and isinstance(value, str) and not top:
                return value
            return self._object(self._json(value, where, dict), type_name, where, files)
        return value

    @staticmethod
    def _json(value: Any, where: str, kind: type) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _Mismatch(f"{where} is not valid JSON") from None
        if not isinstance(value, kind):
            raise _Mismatch(f"{where} must be a JSON {'array' if kind is list else 'object'}")
        return value

    def _object(self, obj: dict[str, Any], type_name: str, where: str, files: dict[str, UploadedFile]) -> Any:
        spec = self.types[type_name]
        subtypes: list[str] = spec.get("subtypes", [])
        if subtypes:
            chosen = [s for s in subtypes if self._discriminator(s) == obj.get("type")] or subtypes
            errors = []
            for sub in chosen:
                try:
                    return self._object(obj, sub, where, files)
                except _Mismatch as exc:
                    errors.append(str(exc))
            raise _Mismatch(errors[0] if len(chosen) == 1 else f"{where} does not match any {type_name}")
        fields = {f["name"]: f for f in spec.get("fields", [])}
        if not fields:
            return obj
        for name in obj:
            if name not in fields:
                raise _Mismatch(f'field "{where}.{name}" is unknown in {type_name}')
        out: dict[str, Any] = {}
        for name, fspec in fields.items():
            if name not in obj:
                if fspec["required"]:
                    raise _Mismatch(f'field "{where}.{name}" is required in {type_name}')
                continue
            out[name] = self.coerce(obj[name], fspec["types"], f"{where}.{name}", files)
        discriminator = self._discriminator(type_name)
        if discriminator and out.get("type") != discriminator:
            raise _Mismatch(f'field "{where}.type" must be "{discriminator}"')
        return out

    def _discriminator(self, type_name: str) -> str | None:
        return self._discriminators.get(type_name)


# --------------------------------------------------------------------------------------------------
# Objects a user sends (builders)

_file_counter = itertools.count(1)


def _file_ids(prefix: str) -> dict[str, str]:
    n = next(_file_counter)
    return {"file_id": f"{prefix}{n:08d}AAQCAAM", "file_unique_id": f"AQAD{prefix[:2]}{n:06d}"}


def sticker(emoji: str = "👍") -> dict[str, Any]:
    """A regular static Sticker."""
    return {
        **_file_ids("CAACAgIAAxkB"),
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": emoji,
        "set_name": "TestPack",
        "file_size": 12000,
    }


def photo() -> list[dict[str, Any]]:
    """A photo as Telegram sends it: several PhotoSize entries, smallest first."""
    ids = _file_ids("AgACAgIAAxkB")
    return [
        {**ids, "file_id": ids["file_id"] + "s", "width": 90, "height": 67, "file_size": 1200},
        {**ids, "file_id": ids["file_id"] + "m", "width": 320, "height": 240, "file_size": 16000},
        {**ids, "file_id": ids["file_id"] + "x", "width": 1280, "height": 960, "file_size": 120000},
    ]


def voice(duration: int = 3) -> dict[str, Any]:
    """A voice note."""
    return {**_file_ids("AwACAgIAAxkB"), "duration": duration, "mime_type": "audio/ogg", "file_size": 8000}


def location(latitude: float = 52.52, longitude: float = 13.405) -> dict[str, Any]:
    """A Location (default: Berlin)."""
    return {"latitude": latitude, "longitude": longitude}


def contact(
    phone_number: str = "+15550100", first_name: str = "Ann", user_id: int | None = None
) -> dict[str, Any]:
    """A shared Contact."""
    out: dict[str, Any] = {"phone_number": phone_number, "first_name": first_name}
    if user_id is not None:
        out["user_id"] = user_id
    return out


def document(file_name: str = "notes.txt", mime_type: str = "text/plain") -> dict[str, Any]:
    """A Document."""
    return {**_file_ids("BQACAgIAAxkB"), "file_name": file_name, "mime_type": mime_type, "file_size": 2048}


def dice(emoji: str = "🎲", value: int = 4) -> dict[str, Any]:
    """A Dice."""
    return {"emoji": emoji, "value": value}


def poll(question: str = "Ready?", options: tuple[str, ...] = ("Yes", "No")) -> dict[str, Any]:
    """A regular anonymous Poll (Bot API 10.1 fields)."""
    n = next(_file_counter)
    return {
        "id": str(5_000_000_000 + n),
        "question": question,
        "options": [
            {"persistent_id": f"opt{n}_{i}", "text": text, "voter_count": 0} for i, text in enumerate(options)
        ],
        "total_voter_count": 0,
        "is_closed": False,
        "is_anonymous": True,
        "type": "regular",
        "allows_multiple_answers": False,
        "allows_revoting": True,
        "members_only": False,
    }


# --------------------------------------------------------------------------------------------------
# What the bot sent


@dataclass
class SentMessage:
    """A message the bot sent, in its current state (edits applied).

    ``text``/``caption`` are the visible texts as Telegram stores them (tags parsed away, surrounding
    whitespace trimmed); ``raw_text``/``raw_caption`` are what the bot sent.
    """

    message_id: int
    chat_id: int
    text: str | None = None
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    kind: str = "text"
    file: bytes | None = None
    filename: str | None = None
    caption: str | None = None
    edits: int = 0
    deleted: bool = False
    raw_text: str | None = None
    raw_caption: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    caption_entities: list[dict[str, Any]] = field(default_factory=list)
    date: int = 0
    edit_date: int | None = None
    mime_type: str | None = None
    file_id: str | None = None
    reply_to_message_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def buttons(self) -> list[tuple[str, str]]:
        """(text, callback_data) of every callback button of the inline keyboard, row by row."""
        return [(b["text"], b["callback_data"]) for b in self.all_buttons() if "callback_data" in b]

    def all_buttons(self) -> list[dict[str, Any]]:
        """Every inline keyboard button (any kind), row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly view (no file bytes)."""
        return {
            "message_id": self.message_id,
            "chat_id": self.chat_id,
            "kind": self.kind,
            "text": self.text,
            "caption": self.caption,
            "parse_mode": self.parse_mode,
            "reply_markup": self.reply_markup,
            "filename": self.filename,
            "file_size": len(self.file) if self.file is not None else None,
            "edits": self.edits,
            "deleted": self.deleted,
        }


@dataclass
class _Fault:
    status: int | None
    description: str
    retry_after: int | None
    remaining: int


class _Bucket:
    """Token bucket: ``rate`` per second, bursts of ``max(1, rate)``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> int | None:
        """Consume a token; return None, or the seconds to wait when empty."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


# --------------------------------------------------------------------------------------------------
# The server


class FakeBotAPI(LoopbackServer):
    """A Bot API server on 127.0.0.1 that validates every call and plays the user side."""

    sticker = staticmethod(sticker)
    photo = staticmethod(photo)
    voice = staticmethod(voice)
    location = staticmethod(location)
    contact = staticmethod(contact)
    document = staticmethod(document)
    dice = staticmethod(dice)
    poll = staticmethod(poll)

    def __init__(
        self,
        token: str,
        *,
        bot_id: int = 100,
        bot_username: str = "rein_test_bot",
        spec_path: str | Path = DEFAULT_SPEC_PATH,
        host: str = "127.0.0.1",
        port: int = 0,
        require_known_chats: bool = True,
        flood_limit_per_chat: float | None = None,
        flood_limit_total: float | None = None,
        tolerated_params: frozenset[str] = PTB_DEFAULT_PARAMS,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.tolerated_params = tolerated_params
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.require_known_chats = require_known_chats
        self.flood_limit_per_chat = flood_limit_per_chat
        self.flood_limit_total = flood_limit_total
        self.validator = SpecValidator(load_spec(str(spec_path)))

        self.calls: list[dict[str, Any]] = []
        # Every sendMessage answered 200, in the order they completed (chat_id, time of arrival, raw text).
        self.delivered: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        # Requests whose client hung up before its body arrived (a draft cancelled because the reply went first):
        # nothing is answered and no rule was broken.
        self.abandoned: list[str] = []
        self.warnings: list[str] = []
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.menu_buttons: dict[int | None, dict[str, Any]] = {}
        self.webhook_url = ""
        self.left_chats: set[int] = set()
        self.flood_hits = 0

        self._messages: dict[int, list[SentMessage]] = {}
        self._user_messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._next_message_id: dict[int, int] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._blocked: set[int] = set()
        self._chat_actions: dict[int, list[str]] = {}
        self._pending_queries: dict[str, dict[str, Any]] = {}
        self._files: dict[str, StoredFile] = {}
        self._file_ids_by_path: dict[str, str] = {}
        self._file_numbers = itertools.count(0)
        self.download_limit = DOWNLOAD_LIMIT
        self._drafts: dict[int, list[dict[str, Any]]] = {}
        self.descriptions: dict[str, str] = {}  # language code ("" = every other language) -> description
        self.short_descriptions: dict[str, str] = {}
        self._updates: deque[dict[str, Any]] = deque()
        self._update_ids = itertools.count(1)
        self._created = 0
        self._query_ids = itertools.count(4_242_000_000_001)
        self._allowed_updates: frozenset[str] | None = None
        self._poller: object | None = None
        self._faults: dict[str, deque[_Fault]] = {}
        self.delays: dict[str, float] = {}  # method -> seconds the fake waits before it answers
        self.in_flight: dict[str, int] = {}  # method -> calls being answered now
        self.peak_in_flight: dict[str, int] = {}  # method -> most calls answered at once
        self._chat_buckets: dict[int, _Bucket] = {}
        self._total_bucket: _Bucket | None = None

        self._event = asyncio.Event()
        self._closing = False
        self._handlers: dict[str, Callable[[_Ctx], Any]] = {
            name.lower().removeprefix("_m_"): getattr(self, name)
            for name in dir(self)
            if name.startswith("_m_")
        }

    # ------------------------------------------------------------------ lifecycle

    def routes(self, app: web.Application) -> None:
        """Bot API methods, file downloads and the ``/_fake`` control endpoints."""
        app.router.add_route("*", "/bot{token}/{method}", self._handle_bot)
        app.router.add_route("GET", "/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/_fake/{action}", self._handle_control)

    @property
    def base_url(self) -> str:
        """What ``ApplicationBuilder().base_url(...)`` wants."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """What ``ApplicationBuilder().base_file_url(...)`` wants."""
        return f"{self.url}/file/bot"

    @property
    def bot_user(self) -> dict[str, Any]:
        """The bot as a Telegram User."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Rein",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def start(self) -> str:
        """Start serving in the running loop; return ``url`` (the bot uses ``f"{url}/bot"`` as base_url)."""
        self._event = asyncio.Event()
        self._closing = False
        return await super().start()

    async def stop(self) -> None:
        """Release pending long polls and stop serving."""
        self._closing = True
        self._wake()
        await super().stop()

    # ------------------------------------------------------------------ user side

    def add_chat(
        self,
        chat_id: int,
        *,
        chat_type: str = "private",
        first_name: str = "Ann",
        username: str | None = None,
        title: str | None = None,
    ) -> dict[str, Any]:
        """Make a chat known (as if the user had started the bot) without sending an update."""
        if chat_type == "private":
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
            if username:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": title or f"Test {chat_type} {chat_id}"}
            if username:
                chat["username"] = username
        self._chats.setdefault(chat_id, chat)
        return self._chats[chat_id]

    def _user(
        self,
        user_id: int,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        user = self._users.get(user_id) or {"id": user_id, "is_bot": False, "first_name": "Ann"}
        if first_name is not None:
            user["first_name"] = first_name
        if username is not None:
            user["username"] = username
        if language_code is not None:
            user["language_code"] = language_code
        self._users[user_id] = user
        return user

    def _base_message(
        self, user: dict[str, Any], chat_id: int | None, chat_type: str
    ) -> tuple[int, dict[str, Any]]:
        if chat_id is None:
            if chat_type == "private":
                chat_id = user["id"]
            elif chat_type == "supergroup":
                chat_id = -1_000_000_000_000 - user["id"]
            else:
                chat_id = -user["id"]
        chat = self.add_chat(
            chat_id, chat_type=chat_type, first_name=user["first_name"], username=user.get("username")
        )
        message = {
            "message_id": self._new_message_id(chat_id),
            "date": int(time.time()),
            "chat": dict(chat),
            "from": dict(user),
        }
        return chat_id, message

    def user_sends(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        first_name: str = "Ann",
        username: str | None = None,
        language_code: str = "en",
    ) -> dict[str, Any]:
        """Queue a text message from a user; a leading /command gets its bot_command entity."""
        user = self._user(user_id, first_name, username, language_code)
        chat_id, message = self._base_message(user, chat_id, chat_type)
        message["text"] = text
        match = _COMMAND_RE.match(text)
        if match:
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(match.group(0))}]
        self._user_messages[(chat_id, message["message_id"])] = message
        return self._enqueue({"message": message})

    def user_sends_message(
        self, user_id: int, fields: dict[str, Any], *, chat_id: int | None = None, chat_type: str = "private"
    ) -> dict[str, Any]:
        """Queue a message whose body is the usual envelope merged with ``fields`` (sticker, photo, ...)."""
        user = self._user(user_id)
        chat_id, message = self._base_message(user, chat_id, chat_type)
        message.update(fields)
        self._register_user_files(fields)
        self._user_messages[(chat_id, message["message_id"])] = message
        return self._enqueue({"message": message})

    def add_file(
        self, data: bytes, *, kind: str = "document", file_name: str | None = None, mime_type: str | None = None
    ) -> dict[str, str]:
        """Hold ``data`` as a file a user sent; return its ``file_id`` and ``file_unique_id``.

        getFile then gives it a ``file_path`` and ``/file/bot<token>/<file_path>`` serves these bytes.
        """
        n = next(_file_counter)
        ids = {"file_id": f"{_KIND_PREFIXES.get(kind, 'BQACAgIAAxkB')}{n:08d}AAQCAAM",
               "file_unique_id": f"AQADu{n:08d}"}
        self._files[ids["file_id"]] = StoredFile(data, kind, ids["file_unique_id"], file_name, mime_type)
        return ids

    def _user_file_message(
        self, user_id: int, kind: str, value: Any, caption: str | None, chat_id: int | None, chat_type: str
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {kind: value}
        if caption is not None:
            fields["caption"] = caption
        return self.user_sends_message(user_id, fields, chat_id=chat_id, chat_type=chat_type)

    def user_sends_voice(
        self,
        user_id: int,
        data: bytes,
        *,
        duration: int = 3,
        mime_type: str = "audio/ogg",
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
    ) -> dict[str, Any]:
        """Queue a voice note whose file holds ``data`` (Telegram's are OGG/Opus); return the update."""
        ids = self.add_file(data, kind="voice", mime_type=mime_type)
        voice_note = {**ids, "duration": duration, "mime_type": mime_type, "file_size": len(data)}
        return self._user_file_message(user_id, "voice", voice_note, caption, chat_id, chat_type)

    def user_sends_audio(
        self,
        user_id: int,
        data: bytes,
        *,
        duration: int = 30,
        mime_type: str = "audio/mpeg",
        file_name: str = "audio.mp3",
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
    ) -> dict[str, Any]:
        """Queue an audio file (music, a recording shared as a file) holding ``data``; return the update."""
        ids = self.add_file(data, kind="audio", file_name=file_name, mime_type=mime_type)
        audio = {**ids, "duration": duration, "file_name": file_name, "mime_type": mime_type, "file_size": len(data)}
        return self._user_file_message(user_id, "audio", audio, caption, chat_id, chat_type)

    def user_sends_photo(
        self,
        user_id: int,
        data: bytes,
        *,
        caption: str | None = None,
        width: int | None = None,
        height: int | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
    ) -> dict[str, Any]:
        """Queue a photo: PhotoSize entries smallest first, as Telegram sends them; return the update.

        The size comes from the PNG or JPEG header of ``data`` (else ``width``/``height``, else 1280x960).
        The fake does not resize: every entry downloads ``data`` and reports its length as ``file_size``.
        """
        found = image_size(data)
        if width is None or height is None:
            width, height = found or (1280, 960)
        sizes = []
        for w, h in photo_sizes(width, height):
            ids = self.add_file(data, kind="photo", mime_type="image/jpeg")
            sizes.append({**ids, "width": w, "height": h, "file_size": len(data)})
        return self._user_file_message(user_id, "photo", sizes, caption, chat_id, chat_type)

    def user_sends_document(
        self,
        user_id: int,
        data: bytes,
        *,
        file_name: str = "notes.txt",
        mime_type: str = "text/plain",
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
    ) -> dict[str, Any]:
        """Queue a document holding ``data``; return the update."""
        ids = self.add_file(data, kind="document", file_name=file_name, mime_type=mime_type)
        doc = {**ids, "file_name": file_name, "mime_type": mime_type, "file_size": len(data)}
        return self._user_file_message(user_id, "document", doc, caption, chat_id, chat_type)

    def user_presses(self, user_id: int, message_id: int, data: str, *, chat_id: int | None = None) -> str:
        """Queue a callback query for a button on ``message_id``; return the query id.

        The message is sent as it currently is; a missing or deleted message is sent in the
        InaccessibleMessage shape (date 0), so forged presses can be tested.
        """
        user = self._user(user_id)
        chat_id = user_id if chat_id is None else chat_id
        chat = self._chats.get(chat_id) or self.add_chat(chat_id, first_name=user["first_name"])
        sent = self._find(chat_id, message_id)
        if sent is not None and not sent.deleted:
            message = self._message_dict(sent)
        else:
            message = {"chat": dict(chat), "message_id": message_id, "date": 0}
        query_id = str(next(self._query_ids))
        query = {
            "id": query_id,
            "from": dict(user),
            "message": message,
            "chat_instance": str(abs(chat_id) * 1_000_003 + 17),
            "data": data,
        }
        self._pending_queries[query_id] = query
        self._enqueue({"callback_query": query})
        return query_id

    def add_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue any raw update body (edited_message, my_chat_member, ...); update_id is assigned."""
        self._register_chats(payload)
        return self._enqueue(dict(payload))

    def block(self, user_id: int, *, notify: bool = True) -> None:
        """The user blocks the bot: sends/edits to their chat answer 403 (and a my_chat_member update)."""
        self._blocked.add(user_id)
        if notify:
            self._member_update(user_id, "member", "kicked")

    def unblock(self, user_id: int, *, notify: bool = True) -> None:
        """The user unblocks the bot."""
        self._blocked.discard(user_id)
        if notify:
            self._member_update(user_id, "kicked", "member")

    def _member_update(self, user_id: int, old: str, new: str) -> None:
        user = self._user(user_id)
        chat = self._chats.get(user_id) or self.add_chat(user_id, first_name=user["first_name"])

        def member(status: str) -> dict[str, Any]:
            out: dict[str, Any] = {"status": status, "user": self.bot_user}
            if status == "kicked":
                out["until_date"] = 0
            return out

        self._enqueue(
            {
                "my_chat_member": {
                    "chat": dict(chat),
                    "from": dict(user),
                    "date": int(time.time()),
                    "old_chat_member": member(old),
                    "new_chat_member": member(new),
                }
            }
        )

    @property
    def updates_created(self) -> int:
        """How many updates users have produced so far (each one is for the bot to handle once)."""
        return self._created

    def _enqueue(self, body: dict[str, Any]) -> dict[str, Any]:
        self._created += 1
        update = {"update_id": next(self._update_ids), **body}
        self._updates.append(update)
        self._wake()
        return update

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running() and threading.current_thread() is not self._loop_thread:
            loop.call_soon_threadsafe(self._event.set)
        else:
            self._event.set()

    def _register_chats(self, obj: Any) -> None:
        if isinstance(obj, dict):
            if obj.get("type") in ("private", "group", "supergroup", "channel") and isinstance(
                obj.get("id"), int
            ):
                self._chats.setdefault(obj["id"], dict(obj))
            for value in obj.values():
                self._register_chats(value)
        elif isinstance(obj, list):
            for value in obj:
                self._register_chats(value)

    def _register_user_files(self, obj: Any, kind: str = "document") -> None:
        """Files in a user's message that no test gave bytes for get filler bytes of their ``file_size``."""
        if isinstance(obj, dict):
            file_id = obj.get("file_id")
            if isinstance(file_id, str) and file_id not in self._files:
                size = int(obj.get("file_size") or 0)
                filler = (f"fake file {file_id} ".encode() * (size // 20 + 1))[:size] if size else b"fake file"
                self._files[file_id] = StoredFile(
                    filler, kind, str(obj.get("file_unique_id") or f"u{file_id}"), obj.get("file_name"),
                    obj.get("mime_type"),
                )
            for key, value in obj.items():
                self._register_user_files(value, key if key in _FILE_FOLDERS else kind)
        elif isinstance(obj, list):
            for value in obj:
                self._register_user_files(value, kind)

    # ------------------------------------------------------------------ observation

    def messages(self, chat_id: int, *, include_deleted: bool = False) -> list[SentMessage]:
        """The bot's messages in a chat, in send order, as they are now."""
        return [m for m in self._messages.get(chat_id, []) if include_deleted or not m.deleted]

    def all_messages(self) -> list[SentMessage]:
        """Every message the bot sent, across chats, in send order."""
        out = [m for msgs in self._messages.values() for m in msgs]
        return sorted(out, key=lambda m: (m.date, m.chat_id, m.message_id))

    def last_message(self, chat_id: int) -> SentMessage:
        """The bot's latest (not deleted) message in a chat."""
        msgs = self.messages(chat_id)
        if not msgs:
            raise AssertionError(f"the bot sent nothing to chat {chat_id}; {self.describe()}")
        return msgs[-1]

    def drafts(self, chat_id: int) -> list[str]:
        """The visible texts of every sendMessageDraft the bot made in a chat, in order ("" = "Thinking...")."""
        return [d["text"] for d in self._drafts.get(chat_id, [])]

    def draft_calls(self, chat_id: int) -> list[dict[str, Any]]:
        """Every draft in a chat with draft_id, text, raw_text, entities, parse_mode, message_thread_id, at."""
        return [dict(d) for d in self._drafts.get(chat_id, [])]

    def commands_for(self, chat_id: int, language_code: str = "") -> list[dict[str, Any]]:
        """The command menu a user with ``language_code`` sees in their private chat ``chat_id``.

        Telegram's order: the chat's own scope, then all private chats, then the default scope; within each,
        the user's language before the list set without a language.
        """
        scopes: list[dict[str, Any]] = [{"type": "chat", "chat_id": chat_id}, {"type": "all_private_chats"},
                                        {"type": "default"}]
        for scope in scopes:
            for language in dict.fromkeys((language_code, "")):
                key = self._commands_key({"scope": scope, "language_code": language})
                if key in self.commands:
                    return list(self.commands[key])
        return []

    def description_for(self, language_code: str = "") -> str:
        """The description a user with ``language_code`` sees (their language's, else the one for all)."""
        return self.descriptions.get(language_code) or self.descriptions.get("", "")

    def short_description_for(self, language_code: str = "") -> str:
        """The short description a user with ``language_code`` sees (their language's, else the one for all)."""
        return self.short_descriptions.get(language_code) or self.short_descriptions.get("", "")

    def chat_actions(self, chat_id: int) -> list[str]:
        """Chat actions (typing, ...) the bot sent to a chat, in order."""
        return list(self._chat_actions.get(chat_id, []))

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        """Recorded calls of one method (canonical name, case-insensitive)."""
        return [c for c in self.calls if c["method"].lower() == method.lower()]

    def queued_updates(self) -> list[dict[str, Any]]:
        """Updates queued for getUpdates and not yet confirmed by an offset, oldest first."""
        return list(self._updates)

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by an offset."""
        return len(self._updates)

    def describe(self, limit: int = 10) -> str:
        """Recent messages, calls and errors, for failure messages."""
        lines = ["recent bot messages:"]
        for m in self.all_messages()[-limit:]:
            body = m.text if m.text is not None else f"[{m.kind}] {m.caption or m.filename or ''}"
            flags = " (deleted)" if m.deleted else ""
            lines.append(f"  chat {m.chat_id} #{m.message_id}{flags}: {body!r} buttons={m.buttons()}")
        recent = [f"{c['method']}->{c.get('status')}" for c in self.calls[-limit:]]
        lines.append(f"recent calls: {recent}")
        if self.errors:
            lines.append(f"errors: {[e['description'] for e in self.errors[-limit:]]}")
        return "\n".join(lines)

    async def wait_messages(
        self,
        chat_id: int,
        count: int,
        timeout: float = 5.0,
    ) -> list[SentMessage]:
        """Wait until the bot has at least ``count`` (not deleted) messages in the chat; return them."""
        await self.wait_for(
            lambda: len(self.messages(chat_id)) >= count, timeout, what=f"{count} messages in chat {chat_id}"
        )
        return self.messages(chat_id)

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` ("*" = any) with this error."""
        key = "*" if method == "*" else method.lower()
        self._faults.setdefault(key, deque()).append(_Fault(status, description, retry_after, times))

    def drop_next(self, method: str, times: int = 1) -> None:
        """Close the connection without answering for the next ``times`` calls of ``method``."""
        key = "*" if method == "*" else method.lower()
        self._faults.setdefault(key, deque()).append(_Fault(None, "", None, times))

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method.lower(), "*"):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.popleft()
                return fault
        return None

    # ------------------------------------------------------------------ HTTP plumbing

    async def _read_params(
        self, request: web.Request
    ) -> tuple[dict[str, Any], dict[str, UploadedFile], bool]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, UploadedFile] = {}
        if request.method != "POST" or not request.can_read_body:
            return params, files, True
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: JSON body must be an object")
            params.update(body)
            return params, files, False
        if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    upload = UploadedFile(value.filename or key, value.content_type, value.file.read())
                    files[key] = upload
                    params[key] = upload
                else:
                    params[key] = value
            return params, files, True
        await request.read()
        return params, files, True

    @staticmethod
    def _reply(status: int, payload: dict[str, Any]) -> web.Response:
        return web.json_response(payload, status=status)

    def _error_response(self, exc: ApiError) -> web.Response:
        payload: dict[str, Any] = {"ok": False, "error_code": exc.status, "description": exc.description}
        if exc.retry_after is not None:
            payload["parameters"] = {"retry_after": exc.retry_after}
        return self._reply(exc.status, payload)

    async def _handle_bot(self, request: web.Request) -> web.StreamResponse:
        raw_method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            self.errors.append(
                {
                    "method": raw_method,
                    "params": {},
                    "description": "Unauthorized (wrong token)",
                    "status": 401,
                }
            )
            return self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        method = self.validator.canonical(raw_method) or raw_method
        call: dict[str, Any] = {"method": method, "raw_method": raw_method, "params": {}, "at": time.time()}
        self.calls.append(call)
        self.in_flight[method] = self.in_flight.get(method, 0) + 1
        self.peak_in_flight[method] = max(self.peak_in_flight.get(method, 0), self.in_flight[method])
        try:
            if self.delays.get(method):
                await asyncio.sleep(self.delays[method])
            return await self._answer(request, call, method, raw_method)
        finally:
            self.in_flight[method] -= 1

    async def _answer(self, request: web.Request, call: dict[str, Any], method: str,
                      raw_method: str) -> web.StreamResponse:
        try:
            params, files, _ = await self._read_params(request)
            call["params"] = _printable(params)
            call["parsed"] = None
            fault = self._take_fault(method)
            if fault is not None:
                call["status"] = fault.status or 0
                if fault.status is None:
                    if request.transport is not None:
                        request.transport.close()
                    return web.Response()
                raise ApiError(fault.status, fault.description, retry_after=fault.retry_after, record=False)
            result = await self._dispatch(call, raw_method, params, files, request)
        except ApiError as exc:
            call["status"] = exc.status
            if exc.record:
                self.errors.append(
                    {
                        "method": method,
                        "params": call["params"],
                        "description": exc.description,
                        "status": exc.status,
                    }
                )
            return self._error_response(exc)
        except ConnectionResetError:  # the client went away mid-request: there is nobody to answer
            call["status"] = 0
            self.abandoned.append(method)
            return web.Response()
        except Exception as exc:  # a bug in the fake itself: make it loud
            logger.exception("FakeBotAPI failed on %s", method)
            call["status"] = 500
            description = f"Internal Server Error (fake): {exc!r}"
            self.errors.append(
                {"method": method, "params": call["params"], "description": description, "status": 500}
            )
            return self._reply(500, {"ok": False, "error_code": 500, "description": description})
        call["status"] = 200
        if method == "sendMessage":
            self.delivered.append({"chat_id": int(params["chat_id"]), "at": time.time(),
                                   "text": str(params.get("text", ""))})
        return self._reply(200, {"ok": True, "result": result})

    async def _dispatch(
        self,
        call: dict[str, Any],
        raw_method: str,
        params: dict[str, Any],
        files: dict[str, UploadedFile],
        request: web.Request,
    ) -> Any:
        if self.validator.canonical(raw_method) is None:
            raise ApiError(404, "Not Found")
        method: str = call["method"]
        if raw_method != method:
            self.warnings.append(f"method {raw_method!r} called with non-canonical case ({method!r})")
        declared = self.validator.field_names(method)
        ignored = [k for k in params if k not in declared and k in self.tolerated_params]
        if ignored:
            call["ignored"] = ignored
            params = {k: v for k, v in params.items() if k not in ignored}
        params = self.validator.validate(method, params, files)
        call["parsed"] = {k: (v.summary() if isinstance(v, UploadedFile) else v) for k, v in params.items()}
        self._check_semantics(method, params)
        ctx = _Ctx(method=method, params=params, request=request)
        chat_id = self._resolve_chat(ctx)
        lower = method.lower()
        if (
            chat_id is not None
            and chat_id in self._blocked
            and lower.startswith(("send", "edit", "copy", "forward"))
        ):
            raise ApiError(403, BLOCKED, record=False)
        if (
            lower.startswith(("send", "copy", "forward"))
            and lower not in ("sendchataction", "sendmessagedraft")
            and chat_id is not None
        ):
            self._flood_check(chat_id)
        handler = self._handlers.get(lower)
        if handler is None:
            return self._generic(ctx)
        result = handler(ctx)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    def _resolve_chat(self, ctx: _Ctx) -> int | None:
        if "chat_id" not in ctx.params:
            return None
        raw = ctx.params["chat_id"]
        if isinstance(raw, str):
            if not raw.startswith("@"):
                raise ApiError(400, "Bad Request: chat not found")
            for chat_id, chat in self._chats.items():
                if chat.get("username", "").lower() == raw[1:].lower():
                    ctx.params["chat_id"] = chat_id
                    return chat_id
            raise ApiError(400, "Bad Request: chat not found")
        if raw not in self._chats:
            if self.require_known_chats:
                raise ApiError(400, "Bad Request: chat not found")
            self.add_chat(raw, chat_type="private" if raw > 0 else "group")
        if raw in self.left_chats and ctx.method.lower().startswith(("send", "edit", "copy", "forward")):
            raise ApiError(403, "Forbidden: bot is not a member of the group chat", record=False)
        return int(raw)

    def _flood_check(self, chat_id: int) -> None:
        waits = []
        if self.flood_limit_per_chat:
            bucket = self._chat_buckets.get(chat_id)
            if bucket is None or bucket.rate != self.flood_limit_per_chat:
                bucket = self._chat_buckets[chat_id] = _Bucket(self.flood_limit_per_chat)
            waits.append(bucket.take())
        if self.flood_limit_total:
            if self._total_bucket is None or self._total_bucket.rate != self.flood_limit_total:
                self._total_bucket = _Bucket(self.flood_limit_total)
            waits.append(self._total_bucket.take())
        delays = [w for w in waits if w is not None]
        if delays:
            self.flood_hits += 1
            retry = max(delays)
            raise ApiError(429, f"Too Many Requests: retry after {retry}", retry_after=retry, record=False)

    # ------------------------------------------------------------------ rules

    def _check_semantics(self, method: str, params: dict[str, Any]) -> None:
        mode = params.get("parse_mode")
        if mode is not None and mode.lower() != "html":
            # Telegram also knows MarkdownV2 and Markdown; Rein sends HTML only, and so the fake parses only that.
            raise ApiError(400, f'Bad Request: unsupported parse_mode "{mode}": this test server supports HTML only')
        lower = method.lower()
        if "text" in params and lower in ("sendmessage", "editmessagetext"):
            params["_visible_text"], params["_entities"] = self._parse_text(
                params, "text", "entities", TEXT_LIMIT
            )
        if lower == "sendmessagedraft":
            if params["draft_id"] == 0:
                raise ApiError(400, "Bad Request: draft_id must be non-zero")
            params.setdefault("text", "")
            params["_visible_text"], params["_entities"] = self._parse_text(
                params, "text", "entities", TEXT_LIMIT, allow_empty=True
            )
        language = params.get("language_code")
        if language and not _LANGUAGE_CODE_RE.fullmatch(language):
            raise ApiError(400, "Bad Request: language_code must be a two-letter ISO 639-1 code or empty")
        if len(params.get("description", "")) > DESCRIPTION_LIMIT and lower == "setmydescription":
            raise ApiError(400, "Bad Request: description is too long")
        if len(params.get("short_description", "")) > SHORT_DESCRIPTION_LIMIT:
            raise ApiError(400, "Bad Request: short description is too long")
        if "caption" in params:
            params["_visible_caption"], params["_caption_entities"] = self._parse_text(
                params, "caption", "caption_entities", CAPTION_LIMIT
            )
        markup = params.get("reply_markup")
        if isinstance(markup, dict):
            if "inline_keyboard" in markup:
                self._check_inline_keyboard(markup)
            if "keyboard" in markup:
                for row in markup["keyboard"]:
                    for button in row:
                        text = button if isinstance(button, str) else button.get("text", "")
                        if not text.strip():
                            raise ApiError(400, "Bad Request: keyboard button text must be non-empty")
        if lower == "answercallbackquery" and len(params.get("text", "")) > CALLBACK_ANSWER_LIMIT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        if lower == "sendchataction" and params["action"] not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        if lower == "setmycommands":
            commands = params["commands"]
            if len(commands) > 100:
                raise ApiError(400, "Bad Request: too many commands")
            for command in commands:
                if not _BOT_COMMAND_NAME_RE.fullmatch(command["command"]):
                    raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
                if not 1 <= len(command["description"].strip()) <= 256:
                    raise ApiError(400, "Bad Request: command description is empty or too long")

    def _parse_text(
        self, params: dict[str, Any], key: str, entities_key: str, limit: int, *, allow_empty: bool = False
    ) -> tuple[str, list[dict[str, Any]]]:
        raw: str = params[key]
        mode = params.get("parse_mode")
        if mode is not None:
            try:
                visible, entities = parse_formatted(raw, mode)
            except EntityParseError as exc:
                raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        else:
            visible, entities = raw.strip(), list(params.get(entities_key, []))
            size = utf16_len(raw)
            for ent in entities:
                if ent["offset"] < 0 or ent["length"] <= 0 or ent["offset"] + ent["length"] > size:
                    raise ApiError(
                        400,
                        "Bad Request: can't parse entities: entity beginning at UTF-16 offset "
                        f"{ent['offset']} ends after the end of the text",
                    )
            if visible != raw:
                visible, entities = _trim(raw, entities)
        if key == "text":
            if not visible and not allow_empty:
                raise ApiError(400, "Bad Request: message text is empty")
            if len(visible) > limit:
                raise ApiError(400, "Bad Request: message is too long")
        elif len(visible) > limit:
            raise ApiError(400, "Bad Request: message caption is too long")
        return visible, entities

    def _check_inline_keyboard(self, markup: dict[str, Any]) -> None:
        rows = markup["inline_keyboard"]
        if sum(len(row) for row in rows) > MAX_INLINE_BUTTONS:
            raise ApiError(400, "Bad Request: reply markup is too long")
        for row in rows:
            for button in row:
                actions = [k for k in button if k in self.validator.button_actions]
                if not actions:
                    raise ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the "
                        "inline keyboard",
                    )
                if len(actions) > 1:
                    raise ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: exactly one of "
                        f"{', '.join(sorted(self.validator.button_actions))} must be used, got {actions}",
                    )
                if not button["text"].strip():
                    raise ApiError(400, "Bad Request: inline keyboard button text must be non-empty")
                if "callback_data" in button and not 1 <= len(button["callback_data"].encode("utf-8")) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                if "url" in button and not re.match(r"(https?|tg)://\S+$", button["url"]):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")

    # ------------------------------------------------------------------ message store

    def _new_message_id(self, chat_id: int) -> int:
        mid = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = mid + 1
        return mid

    def _find(self, chat_id: int, message_id: int) -> SentMessage | None:
        for m in self._messages.get(chat_id, []):
            if m.message_id == message_id:
                return m
        return None

    def _chat_dict(self, chat_id: int) -> dict[str, Any]:
        return dict(self._chats.get(chat_id) or {"id": chat_id, "type": "private", "first_name": "Ann"})

    def _message_dict(self, m: SentMessage, *, with_reply: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": m.message_id,
            "from": self.bot_user,
            "chat": self._chat_dict(m.chat_id),
            "date": m.date,
        }
        if m.edit_date is not None:
            out["edit_date"] = m.edit_date
        if m.text is not None:
            out["text"] = m.text
            if m.entities:
                out["entities"] = m.entities
        if m.kind == "document":
            out["document"] = {
                "file_id": m.file_id,
                "file_unique_id": f"u{m.file_id}",
                "file_name": m.filename,
                "mime_type": m.mime_type or "application/octet-stream",
                "file_size": len(m.file or b""),
            }
        elif m.kind == "photo":
            size = len(m.file or b"")
            out["photo"] = [
                {
                    "file_id": f"{m.file_id}s",
                    "file_unique_id": f"u{m.file_id}s",
                    "width": 90,
                    "height": 90,
                    "file_size": size,
                },
                {
                    "file_id": m.file_id,
                    "file_unique_id": f"u{m.file_id}",
                    "width": 800,
                    "height": 800,
                    "file_size": size,
                },
            ]
        elif m.extra:
            out.update(m.extra)
        if m.caption is not None:
            out["caption"] = m.caption
            if m.caption_entities:
                out["caption_entities"] = m.caption_entities
        if m.reply_markup is not None and "inline_keyboard" in m.reply_markup:
            out["reply_markup"] = m.reply_markup
        if with_reply and m.reply_to_message_id is not None:
            original = self._find(m.chat_id, m.reply_to_message_id)
            if original is not None:
                out["reply_to_message"] = self._message_dict(original, with_reply=False)
            elif (m.chat_id, m.reply_to_message_id) in self._user_messages:
                out["reply_to_message"] = self._user_messages[(m.chat_id, m.reply_to_message_id)]
        return out

    def _store(self, ctx: _Ctx, kind: str, **values: Any) -> SentMessage:
        p = ctx.params
        chat_id = int(p["chat_id"])
        reply_to = self._reply_target(chat_id, p.get("reply_parameters"))
        msg = SentMessage(
            message_id=self._new_message_id(chat_id),
            chat_id=chat_id,
            kind=kind,
            date=int(time.time()),
            parse_mode=p.get("parse_mode"),
            reply_markup=p.get("reply_markup"),
            reply_to_message_id=reply_to,
            **values,
        )
        if "caption" in p:
            msg.caption, msg.raw_caption = p["_visible_caption"], p["caption"]
            msg.caption_entities = p["_caption_entities"]
        self._messages.setdefault(chat_id, []).append(msg)
        return msg

    def _reply_target(self, chat_id: int, reply: dict[str, Any] | None) -> int | None:
        if not reply:
            return None
        target_chat = reply.get("chat_id", chat_id)
        if isinstance(target_chat, str):
            target_chat = chat_id
        mid = reply["message_id"]
        bot_msg = self._find(target_chat, mid)
        exists = (bot_msg is not None and not bot_msg.deleted) or (target_chat, mid) in self._user_messages
        if not exists:
            if reply.get("allow_sending_without_reply"):
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        return int(mid)

    def _new_file(self, data: bytes, filename: str, mime: str, prefix: str, kind: str) -> str:
        n = next(_file_counter)
        file_id = f"{prefix}{n:08d}fake"
        self._files[file_id] = StoredFile(data, kind, f"AQADb{n:08d}", filename, mime)
        return file_id

    def _input_file(self, ctx: _Ctx, key: str, prefix: str) -> tuple[bytes | None, str | None, str, str]:
        value = ctx.params[key]
        if isinstance(value, UploadedFile):
            file_id = self._new_file(value.data, value.filename, value.content_type, prefix, key)
            return value.data, value.filename, value.content_type, file_id
        if value in self._files:
            known = self._files[value]
            return known.data, known.file_name, known.mime_type or "", value
        if re.match(r"https?://", value):
            name = value.rstrip("/").rsplit("/", 1)[-1] or "file"
            return None, name, "application/octet-stream", self._new_file(b"", name, "", prefix, key)
        raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")

    # ------------------------------------------------------------------ methods

    def _m_getme(self, ctx: _Ctx) -> Any:
        return self.bot_user

    async def _m_getupdates(self, ctx: _Ctx) -> Any:
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
                "the webhook first",
            )
        p = ctx.params
        limit = min(max(p.get("limit", 100), 1), 100)
        timeout = max(p.get("timeout", 0), 0)
        if "allowed_updates" in p:
            self._allowed_updates = frozenset(p["allowed_updates"]) or None
        self._confirm(p.get("offset"))
        token = object()
        self._poller = token
        self._wake()  # a still waiting older request ends with 409, as on Telegram
        deadline = time.monotonic() + timeout
        while True:
            if self._poller is not token:
                self.warnings.append("a getUpdates request was terminated by a newer one (409)")
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
                    "is running",
                    record=False,
                )
            batch = self._deliverable(limit)
            remaining = deadline - time.monotonic()
            if batch or self._closing or remaining <= 0:
                if self._poller is token:
                    self._poller = None
                return batch
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)

    def _confirm(self, offset: int | None) -> None:
        if offset is None:
            return
        if offset < 0:
            keep = list(self._updates)[offset:]
            self._updates.clear()
            self._updates.extend(keep)
            return
        while self._updates and self._updates[0]["update_id"] < offset:
            self._updates.popleft()

    def _deliverable(self, limit: int) -> list[dict[str, Any]]:
        out = []
        for update in list(self._updates):
            kind = next((k for k in update if k != "update_id"), "")
            allowed = (
                kind in self._allowed_updates
                if self._allowed_updates is not None
                else kind not in DEFAULT_UPDATE_TYPES_EXCLUDED
            )
            if not allowed:
                self._updates.remove(update)
                continue
            out.append(update)
            if len(out) >= limit:
                break
        return out

    def _m_setwebhook(self, ctx: _Ctx) -> Any:
        self.webhook_url = ctx.params["url"]
        if ctx.params.get("drop_pending_updates"):
            self._updates.clear()
        self._wake()
        return True

    def _m_deletewebhook(self, ctx: _Ctx) -> Any:
        self.webhook_url = ""
        if ctx.params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _m_getwebhookinfo(self, ctx: _Ctx) -> Any:
        info: dict[str, Any] = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self._allowed_updates is not None:
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    def _m_logout(self, ctx: _Ctx) -> Any:
        return True

    def _m_close(self, ctx: _Ctx) -> Any:
        return True

    @staticmethod
    def _commands_key(params: dict[str, Any]) -> str:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps([scope, params.get("language_code", "")], sort_keys=True)

    def _m_setmycommands(self, ctx: _Ctx) -> Any:
        self.commands[self._commands_key(ctx.params)] = ctx.params["commands"]
        return True

    def _m_getmycommands(self, ctx: _Ctx) -> Any:
        return self.commands.get(self._commands_key(ctx.params), [])

    def _m_deletemycommands(self, ctx: _Ctx) -> Any:
        self.commands.pop(self._commands_key(ctx.params), None)
        return True

    def _m_setchatmenubutton(self, ctx: _Ctx) -> Any:
        self.menu_buttons[ctx.params.get("chat_id")] = ctx.params.get("menu_button") or {"type": "default"}
        return True

    def _m_getchatmenubutton(self, ctx: _Ctx) -> Any:
        return self.menu_buttons.get(ctx.params.get("chat_id"), {"type": "commands"})

    def _m_sendmessage(self, ctx: _Ctx) -> Any:
        p = ctx.params
        msg = self._store(ctx, "text", text=p["_visible_text"], raw_text=p["text"], entities=p["_entities"])
        return self._message_dict(msg)

    def _m_senddocument(self, ctx: _Ctx) -> Any:
        data, name, mime, file_id = self._input_file(ctx, "document", "BQACAgIAAxkD")
        msg = self._store(ctx, "document", file=data, filename=name, mime_type=mime, file_id=file_id)
        return self._message_dict(msg)

    def _m_sendphoto(self, ctx: _Ctx) -> Any:
        data, name, mime, file_id = self._input_file(ctx, "photo", "AgACAgIAAxkD")
        msg = self._store(ctx, "photo", file=data, filename=name, mime_type=mime, file_id=file_id)
        return self._message_dict(msg)

    def _m_sendchataction(self, ctx: _Ctx) -> Any:
        self._chat_actions.setdefault(int(ctx.params["chat_id"]), []).append(ctx.params["action"])
        return True

    def _edit_target(self, ctx: _Ctx) -> SentMessage:
        p = ctx.params
        if "inline_message_id" in p:
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        if "chat_id" not in p or "message_id" not in p:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        chat_id, message_id = int(p["chat_id"]), p["message_id"]
        msg = self._find(chat_id, message_id)
        if msg is None or msg.deleted:
            if (chat_id, message_id) in self._user_messages:
                raise ApiError(400, "Bad Request: message can't be edited")
            raise ApiError(400, "Bad Request: message to edit not found")
        return msg

    @staticmethod
    def _same_markup(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    def _remember(self, msg: SentMessage) -> None:
        msg.history.append(
            {"text": msg.text, "caption": msg.caption, "reply_markup": msg.reply_markup, "at": msg.edit_date}
        )
        msg.edits += 1
        msg.edit_date = int(time.time())

    def _m_editmessagetext(self, ctx: _Ctx) -> Any:
        p = ctx.params
        msg = self._edit_target(ctx)
        if "text" not in p:
            raise ApiError(400, "Bad Request: message text is empty")
        if msg.kind != "text":
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        markup = p.get("reply_markup")
        same_text = p["_visible_text"] == msg.text and p["_entities"] == msg.entities
        if same_text and self._same_markup(markup, msg.reply_markup):
            raise ApiError(400, NOT_MODIFIED)
        self._remember(msg)
        msg.text, msg.raw_text, msg.entities = p["_visible_text"], p["text"], p["_entities"]
        msg.parse_mode, msg.reply_markup = p.get("parse_mode"), markup
        return self._message_dict(msg)

    def _m_editmessagecaption(self, ctx: _Ctx) -> Any:
        p = ctx.params
        msg = self._edit_target(ctx)
        if msg.kind == "text":
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        caption = p.get("_visible_caption")
        markup = p.get("reply_markup")
        if caption == msg.caption and self._same_markup(markup, msg.reply_markup):
            raise ApiError(400, NOT_MODIFIED)
        self._remember(msg)
        msg.caption, msg.raw_caption = caption, p.get("caption")
        msg.caption_entities = p.get("_caption_entities", [])
        msg.reply_markup = markup
        return self._message_dict(msg)

    def _m_editmessagereplymarkup(self, ctx: _Ctx) -> Any:
        msg = self._edit_target(ctx)
        markup = ctx.params.get("reply_markup")
        if self._same_markup(markup, msg.reply_markup):
            raise ApiError(400, NOT_MODIFIED)
        self._remember(msg)
        msg.reply_markup = markup
        return self._message_dict(msg)

    def _m_deletemessage(self, ctx: _Ctx) -> Any:
        chat_id, message_id = int(ctx.params["chat_id"]), ctx.params["message_id"]
        msg = self._find(chat_id, message_id)
        if msg is not None and not msg.deleted:
            msg.deleted = True
            return True
        if self._user_messages.pop((chat_id, message_id), None) is not None:
            return True
        raise ApiError(400, "Bad Request: message to delete not found")

    def _m_deletemessages(self, ctx: _Ctx) -> Any:
        chat_id = int(ctx.params["chat_id"])
        for message_id in ctx.params["message_ids"]:
            msg = self._find(chat_id, message_id)
            if msg is not None:
                msg.deleted = True
            self._user_messages.pop((chat_id, message_id), None)
        return True

    def _m_answercallbackquery(self, ctx: _Ctx) -> Any:
        query_id = ctx.params["callback_query_id"]
        if query_id not in self._pending_queries:
            raise ApiError(400, QUERY_TOO_OLD)
        del self._pending_queries[query_id]
        self.callback_answers[query_id] = {k: v for k, v in ctx.params.items() if not k.startswith("_")}
        return True

    def _m_leavechat(self, ctx: _Ctx) -> Any:
        self.left_chats.add(int(ctx.params["chat_id"]))
        return True

    def _m_getchat(self, ctx: _Ctx) -> Any:
        chat = self._chat_dict(int(ctx.params["chat_id"]))
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }

    def _m_getchatmember(self, ctx: _Ctx) -> Any:
        user_id = ctx.params["user_id"]
        if user_id == self.bot_id:
            return {"status": "member", "user": self.bot_user}
        user = self._users.get(user_id)
        if user is None:
            raise ApiError(400, "Bad Request: user not found")
        return {"status": "member", "user": user}

    def _m_getchatmembercount(self, ctx: _Ctx) -> Any:
        return 2

    def _m_getfile(self, ctx: _Ctx) -> Any:
        file_id = ctx.params["file_id"]
        known = self._files.get(file_id)
        if known is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(known.data) > self.download_limit:
            raise ApiError(400, "Bad Request: file is too big")
        if known.file_path is None:
            suffix = _EXTENSIONS.get(known.mime_type or "") or Path(known.file_name or "").suffix
            folder = _FILE_FOLDERS.get(known.kind, "documents")
            known.file_path = f"{folder}/file_{next(self._file_numbers)}{suffix}"
            self._file_ids_by_path[known.file_path] = file_id
        return {
            "file_id": file_id,
            "file_unique_id": known.file_unique_id,
            "file_size": len(known.data),
            "file_path": known.file_path,
        }

    def _m_sendmessagedraft(self, ctx: _Ctx) -> Any:
        p = ctx.params
        chat_id = int(p["chat_id"])
        if self._chat_dict(chat_id).get("type") != "private":
            raise ApiError(400, "Bad Request: message drafts can be sent to private chats only")
        self._drafts.setdefault(chat_id, []).append(
            {
                "draft_id": p["draft_id"],
                "text": p["_visible_text"],
                "raw_text": p["text"],
                "entities": p["_entities"],
                "parse_mode": p.get("parse_mode"),
                "message_thread_id": p.get("message_thread_id"),
                "at": time.time(),
            }
        )
        return True

    def _m_setmydescription(self, ctx: _Ctx) -> Any:
        language = ctx.params.get("language_code", "")
        description = ctx.params.get("description", "")
        if description:
            self.descriptions[language] = description
        else:
            self.descriptions.pop(language, None)
        return True

    def _m_getmydescription(self, ctx: _Ctx) -> Any:
        return {"description": self.descriptions.get(ctx.params.get("language_code", ""), "")}

    def _m_setmyshortdescription(self, ctx: _Ctx) -> Any:
        language = ctx.params.get("language_code", "")
        short = ctx.params.get("short_description", "")
        if short:
            self.short_descriptions[language] = short
        else:
            self.short_descriptions.pop(language, None)
        return True

    def _m_getmyshortdescription(self, ctx: _Ctx) -> Any:
        return {"short_description": self.short_descriptions.get(ctx.params.get("language_code", ""), "")}

    def _m_copymessage(self, ctx: _Ctx) -> Any:
        msg = self._store(ctx, "copy", extra={})
        return {"message_id": msg.message_id}

    def _m_sendmediagroup(self, ctx: _Ctx) -> Any:
        out = []
        for item in ctx.params["media"]:
            msg = self._store(ctx, f"media:{item.get('type', '?')}", extra={})
            out.append(self._message_dict(msg))
        return out

    def _generic(self, ctx: _Ctx) -> Any:
        """Any other spec method: sends create a message, everything else answers true."""
        entry = self.validator.methods[ctx.method.lower()]
        if entry.get("returns") == ["Message"] and "chat_id" in ctx.params:
            kind = (
                ctx.method.lower().removeprefix("send")
                if ctx.method.lower().startswith("send")
                else ctx.method
            )
            extra: dict[str, Any] = {}
            p = ctx.params
            if kind in ("location", "venue") and "latitude" in p:
                extra["location"] = {"latitude": p["latitude"], "longitude": p["longitude"]}
            elif kind == "contact":
                extra["contact"] = {"phone_number": p["phone_number"], "first_name": p["first_name"]}
            elif kind == "dice":
                extra["dice"] = {"emoji": p.get("emoji", "🎲"), "value": 1}
            return self._message_dict(self._store(ctx, kind, extra=extra))
        return True

    # ------------------------------------------------------------------ files and control

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401, text="Unauthorized")
        file_id = self._file_ids_by_path.get(request.match_info["path"])
        if file_id is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=self._files[file_id].data)

    async def _handle_control(self, request: web.Request) -> web.StreamResponse:
        """Drive the fake over HTTP (for a fake running in another process).

        POST /_fake/user_sends {"user_id", "text", ...}, /_fake/users_send {"messages": [...]},
        /_fake/user_sends_voice|audio|photo|document {"user_id", "data_base64", ...},
        /_fake/user_presses {"user_id", "message_id", "data"}, /_fake/add_update {...},
        /_fake/block|unblock {"user_id"}, /_fake/fail_next {...},
        /_fake/drop_next {...}, /_fake/flood {"per_chat", "total"}, /_fake/clear;
        GET /_fake/messages?chat_id=N, /_fake/drafts?chat_id=N, /_fake/draft_calls?chat_id=N, /_fake/stats.
        """
        action = request.match_info["action"]
        body: dict[str, Any] = await request.json() if request.can_read_body else {}
        if action == "user_sends":
            return web.json_response(self.user_sends(**body))
        if action == "users_send":  # many users' messages queued at one moment (the benchmarks' bursts)
            return web.json_response([self.user_sends(**message) for message in body["messages"]])
        if action == "user_sends_message":
            return web.json_response(self.user_sends_message(**body))
        if action in ("user_sends_voice", "user_sends_audio", "user_sends_photo", "user_sends_document"):
            data = base64.b64decode(body.pop("data_base64"))
            return web.json_response(getattr(self, action)(data=data, **body))
        if action == "user_presses":
            return web.json_response({"query_id": self.user_presses(**body)})
        if action == "add_update":
            return web.json_response(self.add_update(body))
        if action in ("block", "unblock"):
            getattr(self, action)(**body)
            return web.json_response({"ok": True})
        if action == "fail_next":
            self.fail_next(**body)
            return web.json_response({"ok": True})
        if action == "drop_next":
            self.drop_next(**body)
            return web.json_response({"ok": True})
        if action == "flood":
            self.flood_limit_per_chat = body.get("per_chat")
            self.flood_limit_total = body.get("total")
            return web.json_response({"ok": True})
        if action == "clear":
            self.calls.clear()
            self.errors.clear()
            return web.json_response({"ok": True})
        if action == "sent":
            # Every delivered sendMessage from index `since` on: chat, time of arrival, visible text.
            since = int(request.query.get("since", 0))
            return web.json_response({"total": len(self.delivered), "sent": self.delivered[since:]})
        if action == "messages":
            chat_id = int(request.query["chat_id"])
            return web.json_response([m.summary() for m in self.messages(chat_id, include_deleted=True)])
        if action == "drafts":
            return web.json_response(self.drafts(int(request.query["chat_id"])))
        if action == "draft_calls":
            return web.json_response(self.draft_calls(int(request.query["chat_id"])))
        if action == "stats":
            return web.json_response(
                {
                    "calls": len(self.calls),
                    "methods": Counter(c["method"] for c in self.calls),
                    "errors": self.errors,
                    "pending_updates": len(self._updates),
                    "messages": sum(len(v) for v in self._messages.values()),
                    "flood_hits": self.flood_hits,
                }
            )
        return web.json_response({"ok": False, "description": f"unknown action {action}"}, status=404)


@dataclass
class _Ctx:
    method: str
    params: dict[str, Any]
    request: web.Request


def _printable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.summary() if isinstance(v, UploadedFile) else v) for k, v in params.items()}


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeBotAPI until interrupted: ``python -m tests.fakes.botapi --port 8081``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default="123456:TEST-TOKEN")
    parser.add_argument("--bot-username", default="rein_test_bot")
    parser.add_argument("--spec", default=str(DEFAULT_SPEC_PATH))
    parser.add_argument("--any-chat", action="store_true", help="accept sends to chats never seen")
    parser.add_argument("--flood-per-chat", type=float, default=None)
    parser.add_argument("--flood-total", type=float, default=None)
    args = parser.parse_args(argv)
    fake = FakeBotAPI(
        args.token,
        bot_username=args.bot_username,
        spec_path=args.spec,
        host=args.host,
        port=args.port,
        require_known_chats=not args.any_chat,
        flood_limit_per_chat=args.flood_per_chat,
        flood_limit_total=args.flood_total,
    )
    serve_until_interrupted(fake, lambda server: f"FakeBotAPI listening on {server.url} (token {args.token})")


if __name__ == "__main__":
    main()
