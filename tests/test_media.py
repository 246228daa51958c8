"""Voice notes, audio files and photos over the loopback servers, with real media: a 1.2 s OGG/Opus clip
(tests/data/voice.ogg, a 220 Hz chord made with Python's `wave` and encoded by opusenc at 8 kbit/s) and a 64x48
JPEG (tests/data/log.jpg, drawn with Pillow); a WAV file is made here with `wave`."""

from __future__ import annotations

import base64
import io
import json
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipeline import media, prompts
from pipeline.media import MediaReading, sniff
from storage.models import ProgressEntry, Rating
from tests.conftest import Harness, make_settings, start_bot, stop_bot, user_snapshot
from tests.fakes.gemini import Fault
from tests.test_checkins import checkins_in, clock_at, local, set_up, tick

DATA = Path(__file__).parent / "data"
VOICE = (DATA / "voice.ogg").read_bytes()
JPEG = (DATA / "log.jpg").read_bytes()
ANN = 13001
BOB = 13002
WORDS = "I want to run a 10k by June"


def wav_bytes(seconds: float = 0.5, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV file of silence."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def encoded(data: bytes, shift: int) -> str:
    """A 40-character run of the base64 of `data` (either alphabet aligns with one of three shifts)."""
    return base64.b64encode(data[shift:]).decode()[8:48].replace("+", "-").replace("/", "_")


def heard(words: str = WORDS, description: str = "A person speaking") -> dict[str, str]:
    """What the model answers to `media.understand`."""
    return {"words": words, "description": description}


def media_requests(h: Harness) -> list[Any]:
    """The Gemini requests of the understanding step."""
    return [r for r in h.gemini.requests if r.system == prompts.MEDIA.text]


def inline_parts(request: Any) -> list[dict[str, Any]]:
    """The inline parts of a Gemini request, as sent on the wire."""
    found = [part["inlineData"] for content in request.body["contents"] for part in content["parts"]
             if "inlineData" in part]
    return [{"mimeType": p.get("mimeType", p.get("mime_type")), "data": base64.urlsafe_b64decode(p["data"])}
            for p in found]


async def user_turns(h: Harness, user_id: int) -> list[str]:
    """The user's stored turns, oldest first."""
    data = await user_snapshot(h, user_id)
    return [t["text"] for t in data["turns"] if t["role"] == "user"]


async def sends(h: Harness, user_id: int, send: Any, *, expect: int = 1) -> list[Any]:
    """Queue a user's media message (through `send`) and wait for the bot's `expect` answers."""
    before = len(h.bot_api.messages(user_id))
    send()
    await h.bot_api.wait_messages(user_id, before + expect)
    return h.bot_api.messages(user_id)[before:]


async def to_coaching(h: Harness, user_id: int) -> None:
    """Walk a user to an accepted plan (texts from here on are coaching)."""
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(user_id, "/start", expect=2)
    await h.say(user_id, "Run a 10k by June", expect=2)
    await h.press(user_id, h.bot_api.messages(user_id)[-1], "✅ Accept")


@pytest.fixture
async def db_harness(bot_api, gemini, database_url) -> AsyncIterator[Harness]:
    """A running bot on SQLite or PostgreSQL."""
    app = await start_bot(make_settings(bot_api, gemini, database_url))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


# ----- voice notes --------------------------------------------------------------------------------


async def test_a_voice_note_is_heard_and_answered_like_a_typed_message(db_harness: Harness) -> None:
    """A voice note reaches Gemini as an inline audio/ogg part of its very bytes; its words are stored as the user's
    turn (the goal, here), the coach answers them as typed text, and /export has them (SQLite and PostgreSQL)."""
    h = db_harness
    await h.say(ANN, "/start", expect=2)
    h.gemini.queue(heard())
    h.gemini.latency = 0.6  # longer than a chat's draft interval: the status line is shown
    [question] = await sends(h, ANN, lambda: h.bot_api.user_sends_voice(ANN, VOICE, duration=1))
    [understand] = media_requests(h)
    assert inline_parts(understand) == [{"mimeType": "audio/ogg", "data": VOICE}]
    assert understand.schema is not None and "words" in json.dumps(understand.schema)
    assert h.gemini.requests[-1].system == prompts.answering(prompts.CLARIFY.text)
    assert f"Goal: {WORDS}" in h.gemini.requests[-1].user_texts
    assert question.text == "Sample question" and question.buttons(), "answered as a typed goal: a question"
    assert "Listening to your recording…" in h.bot_api.drafts(ANN), "a status line while the model listens"
    assert await user_turns(h, ANN) == [WORDS]
    export = json.loads((await h.say(ANN, "/export"))[0].file or b"")
    assert export["goals"][0]["text"] == WORDS and WORDS in [t["text"] for t in export["turns"]]
    assert not any(encoded(VOICE, n) in json.dumps(export) for n in (0, 1, 2))
    await h.settled()


async def test_the_goal_reaches_the_listening_prompt_and_a_caption_follows_the_words(harness: Harness) -> None:
    """Coaching: the understanding step sees the user's goal; the words (then the caption) are the turn, and the
    coach's reply to them carries the rating row."""
    await to_coaching(harness, ANN)
    harness.gemini.queue(heard("Ran 5 km this morning"))
    [reply] = await sends(harness, ANN, lambda: harness.bot_api.user_sends_voice(ANN, VOICE, caption="felt good"))
    [understand] = media_requests(harness)
    assert "My goal: Run a 10k by June" in understand.user_texts[0]
    assert reply.text == "Coach: Ran 5 km this morning felt good"
    assert len([d for _, d in reply.buttons() if d.startswith("r:")]) == 5
    assert (await user_turns(harness, ANN))[-1] == "Ran 5 km this morning\n\nfelt good"


async def test_the_words_of_a_long_voice_note_are_stored_whole(harness: Harness) -> None:
    """Nine minutes of speech (about 9,000 characters, over a typed message's 4096) is stored as one whole turn."""
    await to_coaching(harness, ANN)
    words = " ".join(f"step{i}" for i in range(1300))
    assert len(words) > 9000
    harness.gemini.queue(heard(words))
    await sends(harness, ANN, lambda: harness.bot_api.user_sends_voice(ANN, VOICE, duration=540))
    assert (await user_turns(harness, ANN))[-1] == words


async def test_a_voice_answer_to_a_check_in_is_recorded_like_a_typed_one(bot_api, gemini, sqlite_url) -> None:
    """After a check-in tap, a voice note's words become the progress entry's note, as a typed note would."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False))
    h = Harness(app, bot_api, gemini)
    try:
        clock = clock_at(h, local("Europe/Berlin", 2026, 11, 28, 9, 0))
        await to_coaching(h, ANN)
        await set_up(h, ANN, "Europe/Berlin", "08:00")
        await tick(h, clock, local("Europe/Berlin", 2026, 11, 29, 8, 0))
        await h.press(ANN, checkins_in(h, ANN)[-1], "✅ Done")
        gemini.queue(heard("ran 5 km in the rain"))
        [noted] = await sends(h, ANN, lambda: bot_api.user_sends_voice(ANN, VOICE))
        assert "Noted" in noted.text
        async with h.services.db.session() as session:
            [entry] = (await session.scalars(select(ProgressEntry))).all()
        assert (entry.status, entry.note) == ("done", "ran 5 km in the rain")
    finally:
        await stop_bot(app)


async def test_a_voice_reason_after_a_low_rating_is_kept_as_the_reason(harness: Harness) -> None:
    """After a 1-star press, a voice note's words are the rating's reason, not a coaching message."""
    await to_coaching(harness, ANN)
    reply = (await harness.say(ANN, "I ran today"))[0]
    one = next(d for _, d in reply.buttons() if d.startswith("r:") and d.endswith(":1"))
    harness.bot_api.user_presses(ANN, reply.message_id, one)
    await harness.bot_api.wait_for(lambda: "What would have helped" in harness.bot_api.messages(ANN)[-1].text)
    harness.gemini.queue(heard("More concrete steps please"))
    [thanks] = await sends(harness, ANN, lambda: harness.bot_api.user_sends_voice(ANN, VOICE))
    assert "Thank you" in thanks.text
    async with harness.services.db.session() as session:
        rating = (await session.scalars(select(Rating))).one()
    assert (rating.value, rating.reason) == (1, "More concrete steps please")


async def test_an_audio_file_is_heard_by_its_format_not_its_label(harness: Harness) -> None:
    """An audio file labelled audio/mpeg whose bytes are WAV reaches Gemini as audio/wav; without words it is
    stored as one line describing the sound."""
    await to_coaching(harness, ANN)
    data = wav_bytes()
    harness.gemini.queue(heard("", "Birdsong on a morning walk"))
    [reply] = await sends(harness, ANN, lambda: harness.bot_api.user_sends_audio(ANN, data, duration=1))
    assert inline_parts(media_requests(harness)[0])[0]["mimeType"] == "audio/wav"
    assert (await user_turns(harness, ANN))[-1] == "[audio] Birdsong on a morning walk"
    assert reply.text.startswith("Coach: [audio] Birdsong")


# ----- photos -------------------------------------------------------------------------------------


async def test_a_photo_is_seen_in_its_largest_size_and_stored_as_one_line(db_harness: Harness, sqlite_url: str,
                                                                           database_url: str) -> None:
    """A photo with a caption: the largest size is fetched, reaches Gemini as image/jpeg, is stored as
    "[photo] <description> — <caption>" and answered by the coach; its bytes are nowhere in the database
    (SQLite and PostgreSQL)."""
    h = db_harness
    await to_coaching(h, ANN)
    h.gemini.queue(heard("", "A training log: 3 runs,\n14 km in total"))
    h.gemini.latency = 0.6  # longer than a chat's draft interval: the status line is shown
    sent = {}

    def send() -> None:
        sent.update(h.bot_api.user_sends_photo(ANN, JPEG, caption="my week", width=1280, height=960))

    [reply] = await sends(h, ANN, send)
    sizes = sent["message"]["photo"]
    assert len(sizes) > 1
    assert [c["params"]["file_id"] for c in h.bot_api.calls_to("getFile")] == [sizes[-1]["file_id"]]
    assert inline_parts(media_requests(h)[0]) == [{"mimeType": "image/jpeg", "data": JPEG}]
    line = "[photo] A training log: 3 runs, 14 km in total — my week"
    assert "Looking at your photo…" in h.bot_api.drafts(ANN)
    assert (await user_turns(h, ANN))[-1] == line
    assert reply.text == f"Coach: {line}" and reply.buttons()
    stored = json.dumps(await user_snapshot(h, ANN), ensure_ascii=False)
    assert not any(encoded(JPEG, n) in stored for n in (0, 1, 2))
    await h.settled()
    if database_url == sqlite_url:
        await h.services.db.dispose()
        path = Path(sqlite_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        assert JPEG[200:260] not in raw and encoded(JPEG, 0).encode() not in raw


# ----- traces -------------------------------------------------------------------------------------


async def test_the_understanding_is_traced_without_the_file(bot_api, gemini, sqlite_url, opik_stub) -> None:
    """The step is a `media.understand` trace in the user's thread with kind, type, size and duration in, the
    description out; nothing Opik receives holds the file's bytes (raw or base64)."""
    import opik

    settings = make_settings(bot_api, gemini, sqlite_url, opik_track_disable=False,
                             opik_url_override=opik_stub.url, opik_flush_timeout_s=3)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    opik_stub.reset()
    try:
        await to_coaching(h, ANN)
        with opik.record_traces_locally() as recorded:
            gemini.queue(heard("", "A handwritten training log: 3 runs, 14 km"))
            await sends(h, ANN, lambda: bot_api.user_sends_photo(ANN, JPEG, caption="my week"))
            await h.settled()
            trees = recorded.trace_trees
    finally:
        await stop_bot(app)
    [trace] = [t for t in trees if t.name == "media.understand"]
    assert trace.input == {"kind": "photo", "mime_type": "image/jpeg", "bytes": len(JPEG), "seconds": None}
    assert trace.output == {"description": "A handwritten training log: 3 runs, 14 km", "words": 0}
    assert [s for s in trace.spans if s.type == "llm"], "the Gemini call is an LLM span"
    sent = repr([body for _, _, body in opik_stub.requests])
    assert opik_stub.traces and "media.understand" in sent
    assert not any(encoded(JPEG, n) in sent for n in (0, 1, 2)) and repr(JPEG[:40])[2:-1] not in sent


# ----- the format, read from the bytes ------------------------------------------------------------


@pytest.mark.parametrize(("data", "mime"), [
    (VOICE, "audio/ogg"), (JPEG, "image/jpeg"), (wav_bytes(), "audio/wav"),
    (b"ID3\x04\x00" + b"\x00" * 20, "audio/mp3"),
    (b"\xff\xfb\x90\x00" + b"\x00" * 20, "audio/mp3"), (b"\xff\xf1\x50\x80" + b"\x00" * 20, "audio/aac"),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "audio/mp4"), (b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, "image/png"),
    (b"fake file AwACAgIAAxkB", None), (b"%PDF-1.7", None), (b"", None),
])
def test_the_format_is_read_from_the_first_bytes(data: bytes, mime: str | None) -> None:
    """OGG, MP3 (ID3 or a frame), ADTS AAC, M4A, WAV, JPEG and PNG are told apart by their bytes; others are None."""
    assert sniff(data) == mime


def test_a_turn_is_the_words_or_one_line_with_the_caption() -> None:
    """Words (then the caption) for sound with speech; "[photo] <one line> — <caption>" for a photo."""
    assert media.turn_text("voice", MediaReading(words=" hi ", description="x"), "") == "hi"
    photo = media.turn_text("photo", MediaReading(words="", description="A plate\nof pasta  " + "x" * 400), "lunch")
    assert photo.startswith("[photo] A plate of pasta x") and photo.endswith("… — lunch") and "\n" not in photo


# ----- what is refused, and nothing is lost --------------------------------------------------------


async def refused(h: Harness, send: Any) -> str:
    """Send media as a user who has a goal; return the one answer, checking nothing stored changed (but the
    tokens an understanding spent) and no coaching call was made."""

    async def stored() -> dict[str, Any]:
        data = await user_snapshot(h, ANN)
        data.pop("llm_usage", None)
        return data

    before = await stored()
    calls = len(h.gemini.requests)
    [answer] = await sends(h, ANN, send)
    await h.settled()
    assert await stored() == before, "nothing stored is lost or added"
    assert len([r for r in h.gemini.requests[calls:] if r.system != prompts.MEDIA.text]) == 0, "no coaching"
    return str(answer.text)


async def test_a_recording_over_ten_minutes_is_refused_before_download(harness: Harness) -> None:
    """A 601-second voice note gets "up to 10 minutes" without a getFile or a Gemini call."""
    await harness.say(ANN, "/start", expect=2)
    text = await refused(harness, lambda: harness.bot_api.user_sends_voice(ANN, VOICE, duration=601))
    assert "too long" in text and "10 minutes" in text
    assert harness.bot_api.calls_to("getFile") == [] and media_requests(harness) == []


async def test_a_file_over_the_size_limit_is_refused_before_download(bot_api, gemini, sqlite_url) -> None:
    """With MEDIA_MAX_BYTES=1000 a 2 kB voice note and a 1.2 kB photo are refused as too large, never fetched."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, media_max_bytes=1000))
    h = Harness(app, bot_api, gemini)
    try:
        await h.say(ANN, "/start", expect=2)
        assert "too large" in await refused(h, lambda: bot_api.user_sends_voice(ANN, VOICE))
        assert "too large" in await refused(h, lambda: bot_api.user_sends_photo(ANN, JPEG))
        assert bot_api.calls_to("getFile") == [] and media_requests(h) == []
    finally:
        await stop_bot(app)


VIDEO_NOTE = {"video_note": {"file_id": "DQACAgIAAxkBnote0001", "file_unique_id": "AgADnote1", "length": 240,
                             "duration": 4, "file_size": 90000}}
VIDEO = {"video": {"file_id": "BAACAgIAAxkBvideo0002", "file_unique_id": "AgADvid2", "width": 640, "height": 360,
                   "duration": 5}}


@pytest.mark.parametrize("kind", ["sticker", "video_note", "video", "document"])
async def test_kinds_rein_cannot_take_in_get_what_works(harness: Harness, kind: str) -> None:
    """A sticker, a video note, a video or a document gets the note of what works, with nothing fetched."""
    await harness.say(ANN, "/start", expect=2)
    api = harness.bot_api
    fields = {"sticker": {"sticker": api.sticker()}, "video_note": VIDEO_NOTE, "video": VIDEO,
              "document": {"document": api.document()}}[kind]
    text = await refused(harness, lambda: api.user_sends_message(ANN, fields))
    assert text == media.WHAT_WORKS and "voice notes" in text and "photos" in text
    assert api.calls_to("getFile") == []


async def test_a_file_that_is_no_sound_gets_what_works_without_a_model_call(harness: Harness) -> None:
    """An "audio" file whose bytes are a PDF is fetched, found to be no sound, and refused without Gemini."""
    await harness.say(ANN, "/start", expect=2)
    text = await refused(harness, lambda: harness.bot_api.user_sends_audio(ANN, b"%PDF-1.7 not a song"))
    assert text == media.WHAT_WORKS and media_requests(harness) == []


@pytest.mark.parametrize("failure", ["refused", "dropped"])
async def test_a_failed_download_gets_a_clear_message_and_the_bot_goes_on(harness: Harness, failure: str) -> None:
    """getFile answering 400, or its connection dropped, gets "couldn't fetch"; the next text is answered."""
    await harness.say(ANN, "/start", expect=2)
    if failure == "refused":
        harness.bot_api.fail_next("getFile", 400, "Bad Request: file is too big")
    else:
        harness.bot_api.drop_next("getFile")
    text = await refused(harness, lambda: harness.bot_api.user_sends_voice(ANN, VOICE))
    assert "couldn't fetch that file" in text and media_requests(harness) == []
    assert (await harness.say(ANN, "Run a 10k"))[0].text == "Sample question"


async def test_a_voice_note_without_words_is_not_stored(harness: Harness) -> None:
    """When the model hears no words, the user is asked to record again and nothing is stored."""
    await harness.say(ANN, "/start", expect=2)
    harness.gemini.queue(heard("", "Wind noise"))
    assert "couldn't make out any words" in await refused(harness, lambda: harness.bot_api.user_sends_voice(ANN, VOICE))


async def test_a_failed_understanding_gets_a_clear_message(harness: Harness) -> None:
    """Gemini down while listening: a clear message, nothing stored, and the next voice note works."""
    await harness.say(ANN, "/start", expect=2)
    harness.gemini.fail_always = Fault.status(503)
    assert "couldn't take that in" in await refused(harness, lambda: harness.bot_api.user_sends_voice(ANN, VOICE))
    harness.gemini.fail_always = None
    harness.gemini.queue(heard())
    await sends(harness, ANN, lambda: harness.bot_api.user_sends_voice(ANN, VOICE))
    assert await user_turns(harness, ANN) == [WORDS]


async def test_past_the_days_cap_a_file_is_neither_fetched_nor_heard(bot_api, gemini, sqlite_url) -> None:
    """With MAX_MESSAGES_PER_DAY=1, after one stored text a voice note gets the day's one notice, a photo after it
    nothing; neither is fetched or sent to Gemini, and nothing is stored."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, max_messages_per_day=1))
    h = Harness(app, bot_api, gemini)
    try:
        await h.say(ANN, "/start", expect=2)
        await h.say(ANN, "Run a 10k")
        [notice] = await sends(h, ANN, lambda: bot_api.user_sends_voice(ANN, VOICE))
        assert "messages today" in notice.text
        bot_api.user_sends_photo(ANN, JPEG)
        await h.settled()
        assert bot_api.messages(ANN)[-1].message_id == notice.message_id, "told once a day"
        assert bot_api.calls_to("getFile") == [] and media_requests(h) == []
        assert await user_turns(h, ANN) == ["Run a 10k"]
    finally:
        await stop_bot(app)


async def test_a_voice_note_past_the_flood_guard_waits_for_its_room_and_is_answered(bot_api, gemini,
                                                                                     sqlite_url) -> None:
    """With the one LLM call a window allows used, a voice note is not refused: the turn waits (status line in
    the draft) until the guard has room, is not fetched before, then is heard and answered by the coach."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, llm_calls_per_minute=1))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        limiter = h.services.steps.flood
        assert limiter is not None
        limiter.window_s = 3.0  # the cap's minute, shortened so the wait ends within the test
        await h.say(ANN, "I ran 2 km today")  # the window's one call
        room_in = limiter.wait_s(ANN)
        assert room_in > 1.0, "the user is over the cap when the voice note comes"
        fetched_before = len(bot_api.calls_to("getFile"))
        gemini.queue(heard("I ran 3 km"))
        started = time.monotonic()
        [answer] = await sends(h, ANN, lambda: bot_api.user_sends_voice(ANN, VOICE, duration=1))
        assert time.monotonic() - started >= room_in - 0.2, "heard only once the window allowed"
        assert answer.text == "Coach: I ran 3 km" and answer.buttons(), "answered by the coach, with its rating row"
        assert len(bot_api.calls_to("getFile")) == fetched_before + 1
        assert "Listening to your recording…" in bot_api.drafts(ANN)
        assert not any("again" in (m.text or "") for m in bot_api.messages(ANN)), "nobody was asked to resend"
        assert (await user_turns(h, ANN))[-1] == "I ran 3 km"
    finally:
        await stop_bot(app)


# ----- in a burst ---------------------------------------------------------------------------------


def coaching_requests(h: Harness, since: int) -> list[Any]:
    """The Gemini requests after `since` that are not the understanding step."""
    return [r for r in h.gemini.requests[since:] if r.system != prompts.MEDIA.text]


async def behind_a_slow_turn(h: Harness, *, duration: int, expect: int) -> tuple[int, list[Any]]:
    """Walk ANN to coaching and send "first" (answered slowly); while its turn is in flight, send the text
    "I ran 2 km today" and a voice note of `duration` seconds (heard as "and 3 km yesterday"); wait for `expect`
    replies. Return the index of the first Gemini request after "first" was sent, and the replies."""
    await to_coaching(h, ANN)
    h.gemini.responder = lambda req: (heard("and 3 km yesterday") if req.system == prompts.MEDIA.text
                                      else Fault.hang(2.0) if req.last_user_text == "first" else None)
    calls, before = len(h.gemini.requests), len(h.bot_api.messages(ANN))
    h.bot_api.user_sends(ANN, "first")
    await h.bot_api.wait_for(lambda: any(r.last_user_text == "first" for r in h.gemini.requests[calls:]), timeout=5)
    h.bot_api.user_sends(ANN, "I ran 2 km today")
    h.bot_api.user_sends_voice(ANN, VOICE, duration=duration)
    await h.bot_api.wait_messages(ANN, before + expect)
    await h.settled()
    return calls, h.bot_api.messages(ANN)[before:]


async def test_a_text_and_a_voice_note_that_waited_together_get_one_answer_that_reads_both(
        db_harness: Harness) -> None:
    """A text and a voice note sent while a turn is in flight wait together: one coaching call that reads the text,
    then the voice note's words, answers both in one reply (SQLite and PostgreSQL)."""
    h = db_harness
    calls, sent = await behind_a_slow_turn(h, duration=1, expect=2)
    assert [m.text for m in sent] == ["Coach: first", "Coach: and 3 km yesterday"], "one reply for the two"
    assert [r.last_user_text for r in coaching_requests(h, calls)] == ["first", "and 3 km yesterday"]
    assert coaching_requests(h, calls)[-1].user_texts[-2:] == ["I ran 2 km today", "and 3 km yesterday"]
    assert sent[-1].buttons(), "the reply has its rating row"
    assert (await user_turns(h, ANN))[-3:] == ["first", "I ran 2 km today", "and 3 km yesterday"]


async def test_a_text_followed_by_a_refused_voice_note_is_still_answered(harness: Harness) -> None:
    """A text, then a voice note too long to take in, waiting together behind a turn in flight: the refusal says why,
    and the text that waited for the voice note is answered after it (nobody is left in silence)."""
    calls, replies = await behind_a_slow_turn(harness, duration=601, expect=3)
    sent = [m.text or "" for m in replies]
    assert sent[0] == "Coach: first" and "too long" in sent[1] and sent[2] == "Coach: I ran 2 km today", sent
    assert len(sent) == 3 and coaching_requests(harness, calls)[-1].last_user_text == "I ran 2 km today"
    assert harness.bot_api.calls_to("getFile") == []
