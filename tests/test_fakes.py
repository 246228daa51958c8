"""Tests of the loopback fakes themselves: the Bot API server, the Gemini server and the Opik stub.

They drive each fake with the real client library (python-telegram-bot, google-genai, opik) or with
plain HTTP, so the fakes are known to speak the same wire format as the real services.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic import BaseModel, Field
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    ExtBot,
)

from tests.fakes import FakeBotAPI, FakeGemini, Fault, OpikStub
from tests.fakes.botapi import DEFAULT_SPEC_PATH, load_spec, parse_html, utf16_len
from tests.fakes.gemini import instance_from_schema

TOKEN = "123456:FAKES-test-token"
ANN = 501
BOB = 502
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    """A Bot API fake that knows Ann's and Bob's private chats (errors are expected in these tests)."""
    server = FakeBotAPI(TOKEN)
    await server.start()
    server.add_chat(ANN)
    server.add_chat(BOB, first_name="Bob")
    yield server
    await server.stop()


@pytest.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[Bot]:
    """A real PTB Bot talking to the fake."""
    async with Bot(TOKEN, base_url=fake.base_url, base_file_url=fake.base_file_url) as client:
        yield client


@pytest.fixture
async def http(fake: FakeBotAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Plain HTTP against the fake's bot endpoint, for calls PTB would refuse to make."""
    async with httpx.AsyncClient(base_url=f"{fake.url}/bot{TOKEN}/", timeout=10) as client:
        yield client


@pytest.fixture
async def gem() -> AsyncIterator[FakeGemini]:
    """A started Gemini fake."""
    server = FakeGemini()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def client(gem: FakeGemini) -> genai.Client:
    """The real google-genai client pointed at the fake."""
    return genai.Client(api_key="test-key", http_options=genai_types.HttpOptions(base_url=gem.url))


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def _keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(text, callback_data=data)] for text, data in pairs])


# --------------------------------------------------------------------------------------------------
# FakeBotAPI: protocol and spec validation


def test_the_spec_is_the_copy_in_the_repository() -> None:
    """By default the fake reads the Bot API 10.1 api.json kept beside it, with its license and origin."""
    folder = ROOT / "tests" / "fakes" / "telegram-bot-api"
    assert os.environ.get("REIN_BOT_API_SPEC") or folder / "api.json" == DEFAULT_SPEC_PATH
    spec = load_spec(str(folder / "api.json"))
    assert spec["version"] == "Bot API 10.1" and "sendMessageDraft" in spec["methods"]
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert "PaulSonOfLars/telegram-bot-api-spec" in (folder / "README.md").read_text()


async def test_get_me_returns_a_complete_bot_user(bot: Bot) -> None:
    """getMe answers a User PTB accepts, with is_bot and the configured username."""
    me = await bot.get_me()
    assert me.is_bot and me.username == "rein_test_bot" and me.id == 100
    assert me.can_join_groups is True


async def test_wrong_token_is_unauthorized(fake: FakeBotAPI) -> None:
    """A token the fake was not built with answers 401 Unauthorized, which PTB reports as InvalidToken."""
    with pytest.raises(InvalidToken):
        async with Bot("999:WRONG", base_url=fake.base_url):
            pass
    async with httpx.AsyncClient() as raw:
        response = await raw.post(f"{fake.url}/bot999:WRONG/getMe")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_a_client_that_hangs_up_mid_request_broke_no_rule(fake: FakeBotAPI) -> None:
    """A request whose client closes the connection before its body arrives (a cancelled draft) is noted as
    abandoned, not as an error of the bot, and the server goes on answering."""
    host, port = fake.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /bot{TOKEN}/sendMessageDraft HTTP/1.1\r\nHost: {host}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"chat_id\": ".encode())
    await writer.drain()
    await fake.wait_for(lambda: any(c["method"] == "sendMessageDraft" for c in fake.calls), what="the body read")
    writer.close()
    await writer.wait_closed()
    await fake.wait_for(lambda: bool(fake.abandoned), what="the hang-up noted")
    assert fake.abandoned == ["sendMessageDraft"] and fake.errors == []
    async with Bot(TOKEN, base_url=fake.base_url) as bot:
        assert (await bot.get_me()).is_bot


async def test_unknown_method_is_not_found(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """A method missing from the spec answers 404 Not Found and is recorded as an error."""
    response = await http.post("sendMesage", data={"chat_id": ANN, "text": "hi"})
    assert response.status_code == 404
    assert response.json()["description"] == "Not Found"
    assert fake.errors[-1]["method"] == "sendMesage"


async def test_method_names_match_case_insensitively_but_are_noted(
    fake: FakeBotAPI, http: httpx.AsyncClient
) -> None:
    """'sendmessage' works like Telegram, is recorded under its canonical name and noted in warnings."""
    response = await http.post("sendmessage", data={"chat_id": ANN, "text": "hi"})
    assert response.status_code == 200
    assert fake.calls[-1]["method"] == "sendMessage" and fake.calls[-1]["raw_method"] == "sendmessage"
    assert any("sendmessage" in w for w in fake.warnings)


async def test_required_parameters_must_be_present(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """Missing chat_id or text answers 400 with Telegram's wording."""
    no_chat = await http.post("sendMessage", data={"text": "hi"})
    no_text = await http.post("sendMessage", data={"chat_id": ANN})
    assert no_chat.status_code == 400 and no_chat.json()["description"] == "Bad Request: chat_id is empty"
    assert no_text.json()["description"] == "Bad Request: message text is empty"
    assert len(fake.errors) == 2


async def test_unknown_parameters_are_refused(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """A parameter the method does not declare (here the pre-7.0 reply_to_message_id) answers 400."""
    response = await http.post("sendMessage", data={"chat_id": ANN, "text": "hi", "reply_to_message_id": 1})
    assert response.status_code == 400
    assert 'unknown parameter "reply_to_message_id"' in response.json()["description"]


async def test_values_must_coerce_to_declared_types(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """An Integer field given text, or a Boolean given 'yes', answers 400 naming the parameter."""
    bad_int = await http.post("deleteMessage", data={"chat_id": ANN, "message_id": "abc"})
    bad_bool = await http.post(
        "sendMessage", data={"chat_id": ANN, "text": "x", "disable_notification": "yes"}
    )
    assert 'parameter "message_id"' in bad_int.json()["description"]
    assert 'parameter "disable_notification"' in bad_bool.json()["description"]


async def test_nested_objects_are_validated_against_their_types(
    fake: FakeBotAPI, http: httpx.AsyncClient
) -> None:
    """reply_markup is checked field by field: an unknown button field or a non-array keyboard is refused."""
    odd_button = {"inline_keyboard": [[{"text": "a", "callback_data": "x", "colour": "red"}]]}
    not_rows = {"inline_keyboard": {"text": "a"}}
    first = await http.post(
        "sendMessage", data={"chat_id": ANN, "text": "x", "reply_markup": json.dumps(odd_button)}
    )
    second = await http.post(
        "sendMessage", data={"chat_id": ANN, "text": "x", "reply_markup": json.dumps(not_rows)}
    )
    assert "colour" in first.json()["description"]
    assert second.status_code == 400 and "reply_markup" in second.json()["description"]


async def test_json_bodies_are_accepted(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """A JSON body with native ints and objects works like the form encoding PTB uses."""
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    response = await http.post("sendMessage", json={"chat_id": ANN, "text": "hello", "reply_markup": markup})
    body = response.json()
    assert body["ok"] and body["result"]["text"] == "hello" and body["result"]["reply_markup"] == markup
    assert fake.messages(ANN)[0].buttons() == [("Go", "go")]


async def test_calls_record_raw_and_parsed_params(fake: FakeBotAPI, bot: Bot) -> None:
    """Each call keeps the raw form values PTB sent and the type-checked parsed values."""
    await bot.send_message(ANN, "hi", reply_markup=_keyboard(("A", "a")))
    call = fake.calls_to("sendMessage")[-1]
    assert call["status"] == 200 and call["params"]["chat_id"] == str(ANN)
    assert json.loads(call["params"]["reply_markup"]) == call["parsed"]["reply_markup"]
    assert call["parsed"]["chat_id"] == ANN


async def test_ptb_defaults_extras_are_ignored_like_telegram(fake: FakeBotAPI) -> None:
    """Parameters PTB's Defaults add to every call (parse_mode on a markup edit) are dropped, not refused."""
    defaults = Defaults(parse_mode="HTML", disable_notification=True, protect_content=True)
    async with ExtBot(TOKEN, base_url=fake.base_url, defaults=defaults) as ext_bot:
        sent = await ext_bot.send_message(ANN, "<b>hi</b>", reply_markup=_keyboard(("A", "a")))
        await ext_bot.edit_message_reply_markup(ANN, sent.message_id)
    call = fake.calls_to("editMessageReplyMarkup")[-1]
    assert call["status"] == 200 and set(call["ignored"]) == {
        "parse_mode",
        "disable_notification",
        "protect_content",
    }
    assert fake.messages(ANN)[0].text == "hi" and fake.errors == []


async def test_unknown_chat_is_not_found(fake: FakeBotAPI, bot: Bot) -> None:
    """Sending to a chat that never talked to the bot answers 400 chat not found."""
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(777, "hello?")


# --------------------------------------------------------------------------------------------------
# FakeBotAPI: Telegram's rules on content


async def test_valid_html_becomes_text_and_entities(fake: FakeBotAPI, bot: Bot) -> None:
    """Allowed tags and entities parse into visible text plus entities, as Telegram returns them."""
    html = (
        '<b>Bold <i>both</i></b> &lt;3 &amp; &#128512; <a href="https://example.com">link</a> '
        '<span class="tg-spoiler">s</span> <tg-spoiler>t</tg-spoiler> <u>u</u> <s>x</s> <code>c</code>\n'
        '<pre><code class="language-python">print(1)</code></pre>\n<blockquote expandable>quote</blockquote>'
    )
    message = await bot.send_message(ANN, html, parse_mode="HTML")
    assert message.text is not None and message.text.startswith("Bold both <3 & 😀 link s t u x c")
    kinds = {e.type for e in message.entities}
    assert kinds >= {"bold", "italic", "text_link", "spoiler", "underline", "strikethrough", "code", "pre"}
    assert "expandable_blockquote" in kinds
    pre = next(e for e in message.entities if e.type == "pre")
    assert pre.language == "python"
    emoji_link = next(e for e in message.entities if e.type == "text_link")
    assert emoji_link.offset == utf16_len("Bold both <3 & 😀 ")
    assert fake.messages(ANN)[0].raw_text == html


@pytest.mark.parametrize(
    ("html", "fragment"),
    [
        ("line<br>break", 'Unsupported start tag "br"'),
        ("a < b", 'Unsupported start tag ""'),
        ("Q&A", 'Unescaped "&"'),
        ("&nbsp;", 'Unescaped "&"'),
        ("<b>bold</i>", "Unmatched end tag"),
        ("<b>bold", "Can't find end tag"),
        ("text</b>", "Unexpected end tag"),
        ("<span>x</span>", 'must have class "tg-spoiler"'),
        ("<b", "Unclosed start tag"),
        ("<div>x</div>", 'Unsupported start tag "div"'),
    ],
)
async def test_invalid_html_is_refused(fake: FakeBotAPI, bot: Bot, html: str, fragment: str) -> None:
    """Unknown tags, bad nesting and unescaped '<' or '&' answer 400 can't parse entities."""
    with pytest.raises(BadRequest, match=r"(?i)an't parse entities") as info:
        await bot.send_message(ANN, html, parse_mode="HTML")
    assert fragment.lower() in str(info.value).lower()
    assert fake.errors[-1]["description"].startswith("Bad Request: can't parse entities")
    assert fake.messages(ANN) == []


def test_html_error_offsets_are_in_bytes() -> None:
    """Error offsets count UTF-8 bytes before the bad tag, as Telegram reports them."""
    with pytest.raises(ValueError, match="byte offset 3"):
        parse_html("é <x>")


def test_lone_greater_than_is_accepted() -> None:
    """A lone '>' passes, as on Telegram; only '<' and '&' must be escaped."""
    assert parse_html("2 > 1 &gt; 0") == ("2 > 1 > 0", [])


async def test_text_length_is_measured_after_entity_parsing(fake: FakeBotAPI, bot: Bot) -> None:
    """4096 visible characters pass even with tags around them; 4097 answer 'message is too long'."""
    await bot.send_message(ANN, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ANN, "a" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ANN, "&amp;" * 4097, parse_mode="HTML")
    assert len(fake.messages(ANN)) == 1


@pytest.mark.parametrize(("text", "mode"), [("   \n ", None), ("<b> </b>", "HTML"), ("\u00a0", None)])
async def test_blank_text_is_empty(bot: Bot, text: str, mode: str | None) -> None:
    """Whitespace-only text, also after removing tags, answers 'message text is empty'."""
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(ANN, text, parse_mode=mode)


async def test_caption_is_limited_to_1024(fake: FakeBotAPI, bot: Bot) -> None:
    """A 1025-character caption answers 'message caption is too long'; 1024 passes."""
    await bot.send_document(ANN, io.BytesIO(b"x"), filename="a.txt", caption="c" * 1024)
    with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
        await bot.send_document(ANN, io.BytesIO(b"x"), filename="a.txt", caption="c" * 1025)


async def test_callback_data_is_limited_to_64_bytes(fake: FakeBotAPI, bot: Bot) -> None:
    """callback_data is measured in UTF-8 bytes: 32 x 'é' (64 bytes) pass, 33 (66 bytes) are refused."""
    await bot.send_message(ANN, "ok", reply_markup=_keyboard(("A", "é" * 32)))
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(ANN, "too long", reply_markup=_keyboard(("A", "é" * 33)))


async def test_inline_buttons_need_exactly_one_action(http: httpx.AsyncClient) -> None:
    """A text-only inline button, or one with both url and callback_data, is refused."""
    text_only = {"inline_keyboard": [[{"text": "A"}]]}
    both = {"inline_keyboard": [[{"text": "A", "url": "https://example.com", "callback_data": "a"}]]}
    first = await http.post("sendMessage", json={"chat_id": ANN, "text": "x", "reply_markup": text_only})
    second = await http.post("sendMessage", json={"chat_id": ANN, "text": "x", "reply_markup": both})
    assert "Text buttons are unallowed" in first.json()["description"]
    assert "exactly one" in second.json()["description"]


@pytest.mark.parametrize("mode", ["MarkdownV2", "Markdown"])
async def test_only_html_is_parsed(fake: FakeBotAPI, bot: Bot, mode: str) -> None:
    """Rein sends HTML only: any other parse_mode answers 400 saying the test server supports HTML only."""
    with pytest.raises(BadRequest, match=r"(?i)supports HTML only"):
        await bot.send_message(ANN, "*Done* Next", parse_mode=mode)
    assert fake.errors[-1]["description"] == (
        f'Bad Request: unsupported parse_mode "{mode}": this test server supports HTML only'
    )
    assert fake.messages(ANN) == []


async def test_reply_to_a_missing_message_is_refused(fake: FakeBotAPI, bot: Bot) -> None:
    """reply_parameters naming a message that does not exist answers 'message to be replied not found'."""
    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(ANN, "re", reply_parameters=ReplyParameters(999))
    first = await bot.send_message(ANN, "first")
    reply = await bot.send_message(ANN, "second", reply_parameters=ReplyParameters(first.message_id))
    assert reply.reply_to_message is not None and reply.reply_to_message.text == "first"


async def test_chat_actions_are_recorded_and_checked(fake: FakeBotAPI, bot: Bot) -> None:
    """sendChatAction records known actions per chat and refuses unknown ones."""
    await bot.send_chat_action(ANN, "typing")
    with pytest.raises(BadRequest, match=r"(?i)wrong parameter action"):
        await bot.send_chat_action(ANN, "dancing")
    assert fake.chat_actions(ANN) == ["typing"]


# --------------------------------------------------------------------------------------------------
# FakeBotAPI: message state, edits, callback queries


async def test_message_ids_increase_per_chat(fake: FakeBotAPI, bot: Bot) -> None:
    """Message ids count per chat, shared with the user's own messages in that chat."""
    fake.user_sends(ANN, "hello")
    a1 = await bot.send_message(ANN, "one")
    a2 = await bot.send_message(ANN, "two")
    b1 = await bot.send_message(BOB, "one")
    assert (a1.message_id, a2.message_id, b1.message_id) == (2, 3, 1)
    assert [m.text for m in fake.messages(ANN)] == ["one", "two"]


async def test_identical_edit_is_not_modified(fake: FakeBotAPI, bot: Bot) -> None:
    """Editing to the same text and keyboard answers 'message is not modified'; a real change is stored."""
    keyboard = _keyboard(("Yes", "y"))
    sent = await bot.send_message(ANN, "<b>Plan</b>", parse_mode="HTML", reply_markup=keyboard)
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text(
            "<b>Plan</b>", ANN, sent.message_id, parse_mode="HTML", reply_markup=keyboard
        )
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_reply_markup(ANN, sent.message_id, reply_markup=keyboard)
    await bot.edit_message_text("Plan", ANN, sent.message_id, reply_markup=keyboard)  # bold removed: a change
    stored = fake.messages(ANN)[0]
    assert stored.edits == 1 and stored.entities == [] and stored.history[0]["text"] == "Plan"
    await bot.edit_message_reply_markup(ANN, sent.message_id)  # keyboard removed
    assert fake.messages(ANN)[0].reply_markup is None and fake.messages(ANN)[0].edits == 2


async def test_edit_and_delete_of_unknown_messages_fail(fake: FakeBotAPI, bot: Bot) -> None:
    """Unknown ids answer 'message to edit not found' / 'message to delete not found'; deleting twice too."""
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", ANN, 42)
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(ANN, 42)
    sent = await bot.send_message(ANN, "bye")
    assert await bot.delete_message(ANN, sent.message_id) is True
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(ANN, sent.message_id)
    assert fake.messages(ANN) == [] and fake.messages(ANN, include_deleted=True)[0].deleted


async def test_callback_query_can_be_answered_once(fake: FakeBotAPI, bot: Bot) -> None:
    """A pressed button's query is answered once; a second answer or an unknown id is 'query is too old'."""
    sent = await bot.send_message(ANN, "pick", reply_markup=_keyboard(("A", "a")))
    query_id = fake.user_presses(ANN, sent.message_id, "a")
    assert await bot.answer_callback_query(query_id, text="Saved") is True
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query_id)
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query("12345")
    assert fake.callback_answers[query_id]["text"] == "Saved"


async def test_press_carries_the_current_message(fake: FakeBotAPI, bot: Bot) -> None:
    """The callback query carries the message as currently edited, with chat_instance, and parses in PTB."""
    sent = await bot.send_message(ANN, "v1", reply_markup=_keyboard(("A", "a")))
    await bot.edit_message_text("v2", ANN, sent.message_id, reply_markup=_keyboard(("B", "b")))
    fake.user_presses(ANN, sent.message_id, "b")
    update = Update.de_json(_last_update(fake), bot)
    assert update is not None and update.callback_query is not None
    assert update.callback_query.chat_instance and update.callback_query.data == "b"
    pressed = update.callback_query.message
    assert isinstance(pressed, Message) and pressed.text == "v2"


def _last_update(fake: FakeBotAPI) -> dict[str, Any]:
    return next(u for u in reversed(fake.queued_updates()) if "callback_query" in u)


async def test_press_on_a_missing_message_is_inaccessible(fake: FakeBotAPI, bot: Bot) -> None:
    """Pressing a message that does not exist still sends the (forged) data, with an inaccessible message."""
    fake.user_presses(ANN, 999, "delete:all")
    update = Update.de_json(_last_update(fake), bot)
    assert update is not None and update.callback_query is not None
    message = update.callback_query.message
    assert message is not None and not message.is_accessible and message.message_id == 999
    assert update.callback_query.data == "delete:all"


async def test_blocked_user_gives_forbidden(fake: FakeBotAPI, bot: Bot) -> None:
    """While a user has blocked the bot, sends and edits answer 403; a my_chat_member update is queued."""
    sent = await bot.send_message(ANN, "hi")
    fake.block(ANN)
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(ANN, "still there?")
    with pytest.raises(Forbidden):
        await bot.edit_message_text("edit", ANN, sent.message_id)
    kinds = [next(k for k in u if k != "update_id") for u in fake.queued_updates()]
    assert kinds[-1] == "my_chat_member"
    fake.unblock(ANN)
    await bot.send_message(ANN, "welcome back")
    assert fake.errors == [], "403 is not a rule violation"


async def test_files_are_stored_and_downloadable(fake: FakeBotAPI, bot: Bot) -> None:
    """sendDocument/sendPhoto keep the uploaded bytes and filename; getFile serves them back."""
    doc = await bot.send_document(
        ANN, io.BytesIO(b"BEGIN:VCALENDAR"), filename="plan.ics", caption="<b>Plan</b>", parse_mode="HTML"
    )
    pic = await bot.send_photo(ANN, b"\x89PNG fake")
    stored_doc, stored_pic = fake.messages(ANN)
    assert (stored_doc.kind, stored_doc.file, stored_doc.filename) == (
        "document",
        b"BEGIN:VCALENDAR",
        "plan.ics",
    )
    assert stored_doc.caption == "Plan" and stored_pic.kind == "photo" and stored_pic.file == b"\x89PNG fake"
    assert doc.document is not None and doc.document.file_name == "plan.ics" and pic.photo
    downloaded = await (await bot.get_file(doc.document.file_id)).download_as_bytearray()
    assert bytes(downloaded) == b"BEGIN:VCALENDAR"


async def test_commands_menu_and_chat_round_trip(fake: FakeBotAPI, bot: Bot) -> None:
    """setMyCommands/getMyCommands/deleteMyCommands, setChatMenuButton and getChat answer like Telegram."""
    from telegram import BotCommand, MenuButtonCommands

    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Start!", "bad")])
    assert await bot.delete_my_commands() and await bot.get_my_commands() == ()
    assert await bot.set_chat_menu_button(ANN, MenuButtonCommands())
    chat = await bot.get_chat(ANN)
    assert chat.id == ANN and chat.type == "private"


# --------------------------------------------------------------------------------------------------
# FakeBotAPI: user side, getUpdates


async def test_user_messages_parse_in_ptb(fake: FakeBotAPI, bot: Bot) -> None:
    """Every builder yields an object valid for the spec and PTB parses the resulting updates."""
    samples = {
        "sticker": ("Sticker", FakeBotAPI.sticker()),
        "photo": ("Array of PhotoSize", FakeBotAPI.photo()),
        "voice": ("Voice", FakeBotAPI.voice()),
        "location": ("Location", FakeBotAPI.location(52.5, 13.4)),
        "contact": ("Contact", FakeBotAPI.contact()),
        "document": ("Document", FakeBotAPI.document()),
        "dice": ("Dice", FakeBotAPI.dice()),
        "poll": ("Poll", FakeBotAPI.poll()),
    }
    for name, (type_name, value) in samples.items():
        fake.validator.coerce(value, [type_name], name, {})
        update = Update.de_json(fake.user_sends_message(ANN, {name: value}), bot)
        assert update is not None and update.message is not None
        assert getattr(update.message, name), name


async def test_commands_get_a_bot_command_entity(fake: FakeBotAPI, bot: Bot) -> None:
    """Text starting with /command gets a bot_command entity covering the command and @botname."""
    update = Update.de_json(fake.user_sends(ANN, "/plan@rein_test_bot now"), bot)
    assert update is not None and update.message is not None
    entity = update.message.entities[0]
    assert (entity.type, entity.offset, entity.length) == ("bot_command", 0, len("/plan@rein_test_bot"))
    assert update.message.chat.id == ANN and update.message.from_user is not None
    group = fake.user_sends(BOB, "hi all", chat_id=-100500, chat_type="group")
    assert group["message"]["chat"] == {"id": -100500, "type": "group", "title": "Test group -100500"}


async def test_get_updates_long_polls(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """getUpdates holds the request until an update arrives, or answers [] when the timeout passes."""
    started = time.monotonic()
    empty = await http.post("getUpdates", data={"timeout": 1})
    waited = time.monotonic() - started
    assert empty.json() == {"ok": True, "result": []} and 0.9 <= waited < 2.0

    async def later() -> None:
        await asyncio.sleep(0.2)
        fake.user_sends(ANN, "hi")

    task = asyncio.create_task(later())
    started = time.monotonic()
    got = await http.post("getUpdates", data={"timeout": 10})
    await task
    assert got.json()["result"][0]["message"]["text"] == "hi"
    assert time.monotonic() - started < 1.0


async def test_offset_confirms_and_limit_caps(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """offset drops updates before it for good; limit caps the batch; negative offset keeps the tail."""
    ids = [fake.user_sends(ANN, f"m{i}")["update_id"] for i in range(4)]
    first = (await http.post("getUpdates", data={"limit": 2})).json()["result"]
    assert [u["update_id"] for u in first] == ids[:2]
    rest = (await http.post("getUpdates", data={"offset": ids[1] + 1})).json()["result"]
    assert [u["update_id"] for u in rest] == ids[2:]
    tail = (await http.post("getUpdates", data={"offset": -1})).json()["result"]
    assert [u["update_id"] for u in tail] == ids[3:] and fake.pending_updates == 1


async def test_allowed_updates_filter_and_persist(fake: FakeBotAPI, http: httpx.AsyncClient) -> None:
    """allowed_updates drops other update types and stays in force for later calls, as on Telegram."""
    fake.user_sends(ANN, "text")
    fake.user_presses(ANN, 1, "x")
    got = (await http.post("getUpdates", data={"allowed_updates": '["callback_query"]'})).json()["result"]
    assert [next(k for k in u if k != "update_id") for u in got] == ["callback_query"]
    fake.user_sends(ANN, "again")
    assert (await http.post("getUpdates", data={"offset": got[0]["update_id"] + 1})).json()["result"] == []


async def test_webhook_blocks_get_updates(fake: FakeBotAPI, bot: Bot) -> None:
    """With a webhook set, getUpdates answers 409 Conflict until deleteWebhook."""
    await bot.set_webhook("https://example.com/hook")
    assert (await bot.get_webhook_info()).url == "https://example.com/hook"
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates(timeout=0)
    await bot.delete_webhook()
    assert await bot.get_updates(timeout=0) == ()


async def test_full_application_round_trip(fake: FakeBotAPI) -> None:
    """A real PTB Application polls the fake: /start gets a keyboard, a press is answered and edits it."""

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(
            "<b>Welcome</b>", parse_mode="HTML", reply_markup=_keyboard(("Go", "go"))
        )

    async def press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer()
        await query.edit_message_text(f"pressed {query.data}")

    app = ApplicationBuilder().token(TOKEN).base_url(fake.base_url).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(press))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        fake.user_sends(ANN, "/start")
        (welcome,) = await fake.wait_messages(ANN, 1)
        assert welcome.text == "Welcome" and welcome.buttons() == [("Go", "go")]
        query_id = fake.user_presses(ANN, welcome.message_id, "go")
        await fake.wait_for(lambda: fake.messages(ANN)[0].edits == 1, what="edit after press")
        await app.updater.stop()
        await app.stop()
    assert fake.messages(ANN)[0].text == "pressed go" and query_id in fake.callback_answers
    assert fake.errors == []


async def test_wait_for_timeout_lists_recent_messages(fake: FakeBotAPI, bot: Bot) -> None:
    """A wait that times out raises TimeoutError whose message shows what the bot did send."""
    await bot.send_message(ANN, "the only reply")
    with pytest.raises(TimeoutError, match="the only reply"):
        await fake.wait_messages(ANN, 2, timeout=0.2)


# --------------------------------------------------------------------------------------------------
# FakeBotAPI: drafts, files users send, descriptions and command menus per language


def _png(width: int, height: int) -> bytes:
    """A real (black) PNG image of the given size."""
    rows = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _jpeg_header(width: int, height: int) -> bytes:
    """The start of a baseline JPEG (SOI, JFIF APP0, SOF0) and its end marker: enough to read its size."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


async def test_drafts_are_recorded_per_chat_in_order(fake: FakeBotAPI, bot: Bot) -> None:
    """sendMessageDraft records each draft's visible text per chat (empty = "Thinking..."), sending no message."""
    assert await bot.send_message_draft(ANN, 7) is True
    await bot.send_message_draft(ANN, 7, "<b>Plan</b> &amp; more", parse_mode="HTML")
    await bot.send_message_draft(BOB, 1, "for Bob")
    await bot.send_message_draft(ANN, 7, "Plan & more, done")
    assert fake.drafts(ANN) == ["", "Plan & more", "Plan & more, done"] and fake.drafts(BOB) == ["for Bob"]
    first_html = fake.draft_calls(ANN)[1]
    assert first_html["draft_id"] == 7 and first_html["raw_text"] == "<b>Plan</b> &amp; more"
    assert first_html["entities"] == [{"type": "bold", "offset": 0, "length": 4}]
    assert fake.messages(ANN) == [] and fake.errors == []


async def test_drafts_are_refused_outside_private_chats(fake: FakeBotAPI, bot: Bot) -> None:
    """A draft to a group answers 400 like Telegram (private chats only) and is not recorded."""
    fake.add_chat(-100500, chat_type="group")
    with pytest.raises(BadRequest, match=r"(?i)private chats only"):
        await bot.send_message_draft(-100500, 1, "hello group")
    assert fake.drafts(-100500) == [] and fake.errors[-1]["method"] == "sendMessageDraft"


@pytest.mark.parametrize(
    ("draft_id", "text", "mode", "fragment"),
    [
        (0, "x", None, "draft_id must be non-zero"),
        (1, "a" * 4097, None, "message is too long"),
        (1, "<b>open", "HTML", "can't parse entities"),
        (1, "*x*", "MarkdownV2", "supports HTML only"),
    ],
)
async def test_drafts_follow_the_message_rules(
    fake: FakeBotAPI, bot: Bot, draft_id: int, text: str, mode: str | None, fragment: str
) -> None:
    """A zero draft_id, more than 4096 visible characters, bad HTML or a non-HTML mode answer 400."""
    with pytest.raises(BadRequest) as info:
        await bot.send_message_draft(ANN, draft_id, text, parse_mode=mode)
    assert fragment.lower() in str(info.value).lower()
    assert fake.drafts(ANN) == []


async def test_drafts_do_not_count_against_flood_limits(fake: FakeBotAPI, bot: Bot) -> None:
    """Telegram publishes no draft limit: drafts never use up the chat's message budget."""
    fake.flood_limit_per_chat = 1.0
    for i in range(5):
        await bot.send_message_draft(ANN, 3, f"step {i}")
    await bot.send_message(ANN, "final answer")
    assert fake.flood_hits == 0 and [m.text for m in fake.messages(ANN)] == ["final answer"]


async def test_a_users_voice_note_downloads_through_get_file(fake: FakeBotAPI, bot: Bot) -> None:
    """user_sends_voice carries the given bytes: getFile gives a voice/ path whose download is those bytes."""
    data = b"OggS\x00\x02" + bytes(range(256)) * 10
    raw = fake.user_sends_voice(ANN, data, duration=4, caption="listen")
    assert raw["message"]["voice"]["duration"] == 4
    update = Update.de_json(raw, bot)
    assert update is not None and update.message is not None and update.message.voice is not None
    voice = update.message.voice
    assert voice.mime_type == "audio/ogg" and voice.file_size == len(data)
    assert update.message.caption == "listen"
    file = await bot.get_file(voice.file_id)
    assert file.file_path is not None and file.file_path.endswith(".oga") and "/voice/file_" in file.file_path
    assert file.file_size == len(data) and bytes(await file.download_as_bytearray()) == data


async def test_a_users_photo_has_telegrams_sizes_and_downloads(fake: FakeBotAPI, bot: Bot) -> None:
    """user_sends_photo lists PhotoSizes smallest first from the image's own size; each downloads the bytes."""
    data = _png(1000, 750)
    update = Update.de_json(fake.user_sends_photo(ANN, data, caption="my run"), bot)
    assert update is not None and update.message is not None
    sizes = update.message.photo
    assert [(p.width, p.height) for p in sizes] == [(90, 68), (320, 240), (800, 600), (1000, 750)]
    assert all(p.file_size == len(data) for p in sizes) and len({p.file_unique_id for p in sizes}) == 4
    assert update.message.caption == "my run"
    largest = await bot.get_file(sizes[-1].file_id)
    assert largest.file_path is not None and "/photos/file_" in largest.file_path
    assert bytes(await largest.download_as_bytearray()) == data
    jpeg = fake.user_sends_photo(BOB, _jpeg_header(4000, 3000))["message"]["photo"]
    assert [(p["width"], p["height"]) for p in jpeg][-2:] == [(1280, 960), (2560, 1920)]
    assert fake.errors == []


@pytest.mark.parametrize(
    ("send", "field", "folder", "suffix"),
    [("user_sends_audio", "audio", "music", ".mp3"), ("user_sends_document", "document", "documents", ".txt")],
)
async def test_a_users_audio_and_documents_download(
    fake: FakeBotAPI, bot: Bot, send: str, field: str, folder: str, suffix: str
) -> None:
    """Audio files and documents a user sends keep their name and type and download byte for byte."""
    data = b"ID3\x03" + b"\x01" * 300 if field == "audio" else "Notes: run 3 km ✓".encode()
    update = Update.de_json(getattr(fake, send)(ANN, data), bot)
    assert update is not None and update.message is not None
    sent = getattr(update.message, field)
    assert sent.file_size == len(data) and sent.file_name.endswith(suffix)
    file = await bot.get_file(sent.file_id)
    assert file.file_path is not None and f"/{folder}/file_" in file.file_path and file.file_path.endswith(suffix)
    assert bytes(await file.download_as_bytearray()) == data


async def test_get_file_refuses_unknown_ids_and_files_over_the_limit(fake: FakeBotAPI, bot: Bot) -> None:
    """getFile answers 'invalid file_id' for an unknown id and 'file is too big' past the 20 MB download limit."""
    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("AwACAgIAAxkBnope")
    fake.download_limit = 1000
    voice = fake.user_sends_voice(ANN, b"x" * 1001)["message"]["voice"]
    with pytest.raises(BadRequest, match=r"(?i)file is too big"):
        await bot.get_file(voice["file_id"])


async def test_file_downloads_need_the_token_and_a_path_from_get_file(fake: FakeBotAPI, bot: Bot) -> None:
    """/file/bot<token>/<path> serves only paths getFile gave out, and only with the bot's token."""
    voice = fake.user_sends_voice(ANN, b"OggS voice")["message"]["voice"]
    path = (await bot.get_file(voice["file_id"])).file_path
    assert path is not None
    relative = path.split(f"/file/bot{TOKEN}/", 1)[1]
    async with httpx.AsyncClient(base_url=fake.url) as raw:
        assert (await raw.get(f"/file/bot{TOKEN}/{relative}")).content == b"OggS voice"
        assert (await raw.get(f"/file/bot999:WRONG/{relative}")).status_code == 401
        assert (await raw.get(f"/file/bot{TOKEN}/voice/file_999.oga")).status_code == 404


async def test_descriptions_are_kept_per_language(fake: FakeBotAPI, bot: Bot) -> None:
    """set/getMyDescription and set/getMyShortDescription keep one text per language_code, "" for all others."""
    await bot.set_my_description("Your goal coach.")
    await bot.set_my_description("Dein Zielcoach.", language_code="de")
    await bot.set_my_short_description("Goals, plans, check-ins")
    await bot.set_my_short_description("Ziele, Pläne", language_code="de")
    assert (await bot.get_my_description(language_code="de")).description == "Dein Zielcoach."
    assert (await bot.get_my_description()).description == "Your goal coach."
    assert (await bot.get_my_short_description(language_code="de")).short_description == "Ziele, Pläne"
    assert fake.description_for("de") == "Dein Zielcoach." and fake.description_for("fr") == "Your goal coach."
    assert fake.short_description_for("es") == "Goals, plans, check-ins"
    await bot.set_my_description("", language_code="de")
    assert fake.description_for("de") == "Your goal coach." and fake.errors == []


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        ({"description": "d" * 513}, "description is too long"),
        ({"short_description": "s" * 121}, "short description is too long"),
        ({"description": "ok", "language_code": "deu"}, "two-letter"),
    ],
)
async def test_descriptions_are_checked(http: httpx.AsyncClient, call: dict[str, str], fragment: str) -> None:
    """A description over 512 characters, a short one over 120 or a language code that is not two letters is 400."""
    method = "setMyShortDescription" if "short_description" in call else "setMyDescription"
    response = await http.post(method, json=call)
    assert response.status_code == 400 and fragment in response.json()["description"]


async def test_command_menus_follow_language_and_scope(fake: FakeBotAPI, bot: Bot) -> None:
    """setMyCommands keeps a list per scope and language; a user sees their language's, else the default list."""
    from telegram import BotCommand, BotCommandScopeAllPrivateChats

    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
    await bot.set_my_commands([BotCommand("start", "Starten")], language_code="de")
    assert [c.description for c in await bot.get_my_commands(language_code="de")] == ["Starten"]
    assert [c["description"] for c in fake.commands_for(ANN, "de")] == ["Starten"]
    assert [c["command"] for c in fake.commands_for(ANN, "fr")] == ["start", "help"]
    await bot.set_my_commands([BotCommand("plan", "Plan")], scope=BotCommandScopeAllPrivateChats())
    assert [c["command"] for c in fake.commands_for(ANN, "de")] == ["plan"]
    with pytest.raises(BadRequest, match=r"(?i)two-letter"):
        await bot.set_my_commands([BotCommand("start", "Start")], language_code="EN")


# --------------------------------------------------------------------------------------------------
# FakeBotAPI: fault injection


async def test_fail_next_429_raises_retry_after(fake: FakeBotAPI, bot: Bot) -> None:
    """fail_next with 429 gives Telegram's retry_after parameter once; the next call succeeds."""
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(ANN, "a")
    assert _seconds(info.value.retry_after) == 3
    await bot.send_message(ANN, "b")
    assert [m.text for m in fake.messages(ANN)] == ["b"] and fake.errors == []


@pytest.mark.parametrize(("status", "description"), [(500, "Internal Server Error"), (502, "Bad Gateway")])
async def test_fail_next_server_errors_are_network_errors(
    bot: Bot, fake: FakeBotAPI, status: int, description: str
) -> None:
    """5xx injected with fail_next surface in PTB as NetworkError, for `times` calls."""
    fake.fail_next("sendMessage", status, description, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError):
            await bot.send_message(ANN, "x")
    await bot.send_message(ANN, "ok")


async def test_drop_next_closes_the_connection(fake: FakeBotAPI, bot: Bot) -> None:
    """drop_next closes the connection without an answer: PTB sees a NetworkError, then recovers."""
    fake.drop_next("sendMessage")
    with pytest.raises(NetworkError):
        await bot.send_message(ANN, "lost")
    await bot.send_message(ANN, "delivered")
    assert [m.text for m in fake.messages(ANN)] == ["delivered"]


async def test_flood_limit_per_chat(fake: FakeBotAPI, bot: Bot) -> None:
    """flood_limit_per_chat=1: a second message to one chat within a second gets 429 retry_after=1."""
    fake.flood_limit_per_chat = 1.0
    await bot.send_message(ANN, "one")
    await bot.send_message(BOB, "other chat is fine")
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(ANN, "two")
    assert _seconds(info.value.retry_after) == 1 and fake.flood_hits == 1


# --------------------------------------------------------------------------------------------------
# FakeGemini


class Kind(enum.StrEnum):
    """A closed choice."""

    habit = "habit"
    project = "project"


class Step(BaseModel):
    """A nested object with a date and a bounded integer."""

    title: str
    due: dt.date
    minutes: int = Field(ge=5, le=120)


class Plan(BaseModel):
    """The nested schema used for structured output tests."""

    goal: str
    kind: Kind
    steps: list[Step] = Field(min_length=1, max_length=5)
    note: str | None = None
    target_date: str
    confidence: float = Field(ge=0, le=1)
    ready: bool


def _plan_config(**extra: Any) -> genai_types.GenerateContentConfig:
    return genai_types.GenerateContentConfig(
        response_mime_type="application/json",
        response_schema=Plan,
        system_instruction="You are a coach.",
        temperature=0.2,
        **extra,
    )


def _check_plan(plan: Plan) -> None:
    today = dt.date.today()
    assert 1 <= len(plan.steps) <= 5 and plan.kind is Kind.habit
    assert all(s.due > today and 5 <= s.minutes <= 120 for s in plan.steps)
    assert dt.date.fromisoformat(plan.target_date) > today
    assert 0 <= plan.confidence <= 1 and plan.goal == "Sample goal"


async def test_structured_output_is_parsed_by_the_real_client(gem: FakeGemini, client: genai.Client) -> None:
    """client.aio gets .parsed as the nested pydantic model, valid against bounds, enums and future dates."""
    response = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="Get fit", config=_plan_config()
    )
    assert isinstance(response.parsed, Plan)
    _check_plan(response.parsed)
    request = gem.requests[-1]
    assert request.schema_field == "responseSchema" and request.schema is not None
    assert request.schema["type"] == "OBJECT" and request.system == "You are a coach."
    assert (
        request.temperature == 0.2
        and request.last_user_text == "Get fit"
        and request.model == "gemini-2.5-flash"
    )


async def test_structured_output_with_the_sync_client(gem: FakeGemini, client: genai.Client) -> None:
    """The synchronous client (httpx) gets .parsed too."""
    response = await asyncio.to_thread(
        client.models.generate_content, model="gemini-2.5-flash", contents="Get fit", config=_plan_config()
    )
    assert isinstance(response.parsed, Plan)
    _check_plan(response.parsed)


async def test_json_schema_form_is_understood(gem: FakeGemini, client: genai.Client) -> None:
    """response_json_schema ($defs, $ref, anyOf null) is answered with an instance pydantic accepts."""
    config = genai_types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=Plan.model_json_schema()
    )
    response = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="x", config=config)
    assert gem.requests[-1].schema_field == "responseJsonSchema"
    assert response.text is not None
    _check_plan(Plan.model_validate_json(response.text))


async def test_plain_text_echoes_and_reports_usage(gem: FakeGemini, client: genai.Client) -> None:
    """Without a schema the reply is 'Coach: ' + an echo of the last text part, with usage and STOP."""
    long_question = "How do I start? " * 30
    response = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents=["context first", long_question]
    )
    assert response.text is not None and response.text.startswith("Coach: How do I start?")
    assert len(response.text) <= len("Coach: ") + 200
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.candidates and response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert response.model_version == "gemini-2.5-flash"
    assert gem.requests[-1].user_texts == ["context first", long_question]


async def test_queue_comes_before_responder_before_default(gem: FakeGemini, client: genai.Client) -> None:
    """Queued replies are used first in order, then the responder, then the default."""
    gem.queue("first", {"answer": 2})
    calls: list[str] = []

    def responder(request: Any) -> object | None:
        calls.append(request.last_user_text)
        return "from responder" if request.last_user_text == "r" else None

    gem.responder = responder
    texts = []
    for prompt in ("q1", "q2", "r", "plain"):
        response = await client.aio.models.generate_content(model="m", contents=prompt)
        texts.append(response.text)
    assert texts == ["first", '{"answer": 2}', "from responder", "Coach: plain"]
    assert calls == ["r", "plain"]


async def test_429_is_a_client_error_with_retry_info(gem: FakeGemini, client: genai.Client) -> None:
    """Fault.status(429) raises ClientError carrying Google's RESOURCE_EXHAUSTED body with RetryInfo."""
    gem.queue(Fault.status(429, retry_delay="7s"))
    with pytest.raises(genai_errors.ClientError) as info:
        await client.aio.models.generate_content(model="m", contents="x")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    details = info.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in details


@pytest.mark.parametrize(("code", "status"), [(503, "UNAVAILABLE"), (500, "INTERNAL")])
async def test_5xx_is_a_server_error(gem: FakeGemini, client: genai.Client, code: int, status: str) -> None:
    """Fault.status(503/500) raises ServerError with Google's status name."""
    gem.queue(Fault.status(code))
    with pytest.raises(genai_errors.ServerError) as info:
        await client.aio.models.generate_content(model="m", contents="x")
    assert info.value.code == code and info.value.status == status


async def test_fail_always_persists_until_reset(gem: FakeGemini, client: genai.Client) -> None:
    """fail_always answers every request with the fault until cleared."""
    gem.fail_always = Fault.status(503)
    for _ in range(3):
        with pytest.raises(genai_errors.ServerError):
            await client.aio.models.generate_content(model="m", contents="x")
    gem.reset()
    assert (await client.aio.models.generate_content(model="m", contents="x")).text == "Coach: x"


async def test_api_key_is_required(gem: FakeGemini) -> None:
    """A request without x-goog-api-key answers 403 PERMISSION_DENIED."""
    async with httpx.AsyncClient() as raw:
        response = await raw.post(f"{gem.url}/v1beta/models/m:generateContent", json={"contents": []})
    assert response.status_code == 403 and response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert gem.requests == []


async def test_broken_json_leaves_parsed_none(gem: FakeGemini, client: genai.Client) -> None:
    """Fault.malformed_json and Fault.schema_violation give text but .parsed None, without raising."""
    gem.queue(Fault.malformed_json(), Fault.schema_violation())
    broken = await client.aio.models.generate_content(model="m", contents="x", config=_plan_config())
    incomplete = await client.aio.models.generate_content(model="m", contents="x", config=_plan_config())
    assert broken.parsed is None and broken.text is not None
    assert incomplete.parsed is None and incomplete.text is not None
    assert "goal" not in json.loads(incomplete.text)


async def test_safety_and_empty_candidates_have_no_text(gem: FakeGemini, client: genai.Client) -> None:
    """Fault.safety gives finishReason SAFETY without text; Fault.empty_candidates gives no candidates."""
    gem.queue(Fault.safety(), Fault.empty_candidates())
    blocked = await client.aio.models.generate_content(model="m", contents="x")
    empty = await client.aio.models.generate_content(model="m", contents="x")
    assert blocked.candidates and blocked.candidates[0].finish_reason == genai_types.FinishReason.SAFETY
    assert blocked.text is None
    assert not empty.candidates and empty.text is None


async def test_long_text_fault_has_paragraphs(gem: FakeGemini, client: genai.Client) -> None:
    """Fault.long_text(n) answers exactly n characters in several blank-line separated paragraphs."""
    gem.queue(Fault.long_text(5000))
    response = await client.aio.models.generate_content(model="m", contents="x")
    assert response.text is not None and len(response.text) == 5000
    assert response.text.count("\n\n") >= 3


async def test_hang_and_latency_delay_answers_concurrently(gem: FakeGemini, client: genai.Client) -> None:
    """Fault.hang delays one answer; latency delays every answer without serialising requests."""
    gem.queue(Fault.hang(0.3))
    started = time.monotonic()
    response = await client.aio.models.generate_content(model="m", contents="slow")
    assert time.monotonic() - started >= 0.3 and response.text == "Coach: slow"
    gem.latency = 0.3
    started = time.monotonic()
    replies = await asyncio.gather(
        *(client.aio.models.generate_content(model="m", contents=str(i)) for i in range(8))
    )
    elapsed = time.monotonic() - started
    assert [r.text for r in replies] == [f"Coach: {i}" for i in range(8)]
    assert 0.3 <= elapsed < 1.2


async def test_enum_mime_type_answers_an_enum_value(gem: FakeGemini, client: genai.Client) -> None:
    """response_mime_type text/x.enum with an Enum schema gets the first value, parsed as the Enum."""
    config = genai_types.GenerateContentConfig(response_mime_type="text/x.enum", response_schema=Kind)
    response = await client.aio.models.generate_content(model="m", contents="x", config=config)
    assert response.parsed == Kind.habit


async def test_streaming_is_served_as_sse(gem: FakeGemini, client: genai.Client) -> None:
    """streamGenerateContent answers SSE chunks that join to the full reply."""
    chunks = [
        c.text or "" async for c in await client.aio.models.generate_content_stream(model="m", contents="hey")
    ]
    assert "".join(chunks) == "Coach: hey"


def test_schema_instances_respect_constraints() -> None:
    """The instance builder honours min/max items and lengths, exclusive bounds, refs and date-like names."""
    schema = {
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"n": {"type": "integer", "exclusiveMinimum": 10}},
                "required": ["n"],
            }
        },
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 3, "maxItems": 3},
            "code": {"type": "string", "minLength": 20, "maxLength": 25},
            "short": {"type": "STRING", "max_length": 4},
            "update_note": {"type": "string"},
            "startDate": {"type": "string"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "number", "maximum": -2}]},
        },
        "required": ["items"],
    }
    value = instance_from_schema(schema, today=dt.date(2030, 1, 1))
    assert [i["n"] for i in value["items"]] == [11, 11, 11]
    assert 20 <= len(value["code"]) <= 25 and len(value["short"]) <= 4
    assert value["update_note"] == "Sample update_note" and value["startDate"] == "2030-01-31"
    assert value["maybe"] == -2.0


# --------------------------------------------------------------------------------------------------
# OpikStub


@pytest.fixture
def opik_in_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpikStub]:
    """An OpikStub in its own thread with the Opik SDK configured to use it (and reset afterwards)."""
    from opik.api_objects import opik_client

    stub = OpikStub()
    stub.start_in_thread()
    monkeypatch.setenv("OPIK_URL_OVERRIDE", stub.url)
    monkeypatch.setenv("OPIK_SENTRY_ENABLE", "false")
    monkeypatch.setenv("OPIK_ANALYTICS_ENABLE", "false")
    monkeypatch.setenv("OPIK_PROJECT_NAME", "rein-test")
    monkeypatch.delenv("OPIK_TRACK_DISABLE", raising=False)
    opik_client.reset_global_client()
    yield stub
    opik_client.reset_global_client()  # flushes into the stub while it is still up
    stub.stop_thread()


def test_opik_sdk_records_locally_and_reaches_the_stub(opik_in_thread: OpikStub) -> None:
    """@opik.track inside record_traces_locally records a trace tree; scores by id reach recorder and stub."""
    import opik
    from opik import opik_context

    stub = opik_in_thread

    @opik.track(name="inner")
    def inner(x: int) -> int:
        return x * 2

    @opik.track(name="outer")
    def outer(x: int) -> str:
        opik_context.update_current_trace(thread_id="thread-1")
        inner(x)
        data = opik_context.get_current_trace_data()
        assert data is not None
        return data.id

    with opik.record_traces_locally() as recorder:
        trace_id = outer(3)
        client = opik.Opik()
        client.log_traces_feedback_scores([{"id": trace_id, "name": "helpful", "value": 1.0, "reason": "r"}])
        client.log_threads_feedback_scores([{"id": "thread-1", "name": "tone", "value": 0.5}])
        started = time.monotonic()
        client.flush()
        flush_seconds = time.monotonic() - started
        (tree,) = recorder.trace_trees
    assert flush_seconds < 1.0, f"flush took {flush_seconds:.2f}s"
    assert tree.name == "outer" and tree.spans[0].spans[0].name == "inner"
    assert [s.name for s in tree.feedback_scores] == ["helpful"]
    stub.wait_until(lambda: trace_id in stub.traces_by_id() and len(stub.spans_by_id()) == 2)
    assert stub.traces_by_id()[trace_id]["thread_id"] == "thread-1"
    assert [(s["id"], s["name"]) for s in stub.feedback_scores] == [(trace_id, "helpful")]
    assert [(s["thread_id"], s["name"]) for s in stub.thread_feedback_scores] == [("thread-1", "tone")]
    assert set(stub.paths()) <= {
        "POST /v1/private/traces/batch",
        "POST /v1/private/spans/batch",
        "PUT /v1/private/traces/feedback-scores",
        "PUT /v1/private/traces/threads/feedback-scores",
        "GET /is-alive/ping",
    }


async def test_opik_stub_down_and_delay_modes() -> None:
    """down answers 503 to everything; delay holds every answer; both are recorded."""
    async with OpikStub() as stub, httpx.AsyncClient(base_url=stub.url) as raw:
        stub.down = True
        assert (await raw.get("/is-alive/ping")).status_code == 503
        stub.down, stub.delay = False, 0.2
        started = time.monotonic()
        response = await raw.get("/is-alive/ping")
        assert response.status_code == 200 and time.monotonic() - started >= 0.2
        assert [r[:2] for r in stub.requests] == [("GET", "/is-alive/ping")] * 2


async def test_opik_stub_decodes_gzip_batches_and_patches() -> None:
    """Gzip batches are decoded into traces/spans; PATCH merges into traces_by_id; anything else gets {}."""
    async with OpikStub() as stub, httpx.AsyncClient(base_url=stub.url) as raw:
        body = gzip.compress(json.dumps({"traces": [{"id": "t1", "name": "a"}]}).encode())
        batch = await raw.post(
            "/v1/private/traces/batch", content=body, headers={"Content-Type": "application/json"}
        )
        patch = await raw.patch("/v1/private/traces/t1", json={"output": {"ok": True}})
        spans = await raw.post("/v1/private/spans/batch", json={"spans": [{"id": "s1", "trace_id": "t1"}]})
        other = await raw.get("/v1/private/anything")
    assert (batch.status_code, patch.status_code, spans.status_code) == (204, 204, 204)
    assert other.status_code == 200 and other.json() == {}
    assert stub.traces_by_id()["t1"] == {"id": "t1", "name": "a", "output": {"ok": True}}
    assert stub.spans == [{"id": "s1", "trace_id": "t1"}]


async def test_users_send_queues_many_users_messages_at_one_moment(fake: FakeBotAPI) -> None:
    """POST /_fake/users_send queues every listed message as one update each, in the order given."""
    async with httpx.AsyncClient(base_url=fake.url) as client:
        response = await client.post("/_fake/users_send", json={"messages": [
            {"user_id": ANN, "text": "one"}, {"user_id": BOB, "text": "two"}]})
        assert response.status_code == 200
    async with Bot(TOKEN, base_url=fake.base_url) as bot:
        updates = await bot.get_updates(timeout=0)
    assert [(u.effective_user.id, u.message.text) for u in updates if u.message and u.effective_user] == [
        (ANN, "one"), (BOB, "two")]


# --------------------------------------------------------------------------------------------------
# The scaffold all three share


@pytest.mark.parametrize(
    ("make", "probe"),
    [
        (lambda: FakeBotAPI(TOKEN), f"/bot{TOKEN}/getMe"),
        (FakeGemini, "/_fake/stats"),
        (OpikStub, "/is-alive/ping"),
    ],
)
def test_every_fake_serves_from_a_thread_and_names_itself_on_timeout(make: Any, probe: str) -> None:
    """Each fake serves from its own thread on a free port; a wait that times out names the fake; stop frees it."""
    server = make()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    url = server.start_in_thread()
    try:
        assert url.startswith("http://127.0.0.1:") and server.port != 0
        assert httpx.post(url + probe, timeout=5).status_code == 200
        with pytest.raises(TimeoutError, match=rf"^{type(server).__name__}: condition \(never\) not met"):
            server.wait_until(lambda: False, timeout=0.05, what="never")
    finally:
        server.stop_thread()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url


# --------------------------------------------------------------------------------------------------
# All three as processes


@pytest.mark.parametrize(
    ("module", "probe"),
    [
        ("tests.fakes.botapi", "/bot123456:TEST-TOKEN/getMe"),
        ("tests.fakes.gemini", "/_fake/stats"),
        ("tests.fakes.opik_stub", "/is-alive/ping"),
    ],
)
def test_fakes_run_as_their_own_process(module: str, probe: str) -> None:
    """`python -m <module> --port 0` prints its URL and serves until terminated."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        method = "POST" if "/bot" in probe else "GET"
        response = httpx.request(method, url + probe, timeout=5)
        assert response.status_code == 200, response.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
