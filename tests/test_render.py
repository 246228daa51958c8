"""Rendering: HTML escaping, splitting below Telegram's limit, and button data."""

from __future__ import annotations

import pytest

from bot import render
from pipeline.replies import Button, Para, Reply


def test_user_and_llm_text_is_escaped() -> None:
    """Anything that looks like HTML is escaped; headings become bold."""
    out = render.render(Reply(paras=[Para("Plan <b>x</b>\nA & B", heading=True)]))
    assert out == ["<b>Plan &lt;b&gt;x&lt;/b&gt;</b>\nA &amp; B"]


def test_long_replies_split_at_paragraph_boundaries() -> None:
    """A reply over the limit is split between paragraphs, each part under 4096 characters."""
    paras = [Para(f"paragraph {i} " + "x" * 900) for i in range(10)]
    parts = render.render(Reply(paras=paras))
    assert len(parts) >= 3 and all(len(p) <= 4096 for p in parts)
    assert all(p.startswith("paragraph") for p in parts)
    assert sum(p.count("paragraph") for p in parts) == 10


def test_one_huge_paragraph_is_cut_without_breaking_entities() -> None:
    """A single paragraph longer than the limit is cut at spaces, never inside an &entity;."""
    text = "&<>" * 3000
    parts = render.render(Reply(paras=[Para(text, heading=True)]))
    assert all(len(p) <= 4096 for p in parts)
    for part in parts:
        assert "<b>" not in part
        tail = part[part.rfind("&"):]
        assert ";" in tail


def test_callback_data_round_trips_and_fits_64_bytes() -> None:
    """Encoded button data decodes to the same action and stays within 64 bytes."""
    for action in render.ACTION_CODES:
        data = render.encode(action, 10**14)
        assert len(data.encode()) <= 64
        assert render.decode(data) == render.Callback(action, 10**14)
    assert render.decode("r:12:4") == render.Callback("rate", 12, 4)


@pytest.mark.parametrize("data", ["", "x", "pa:", "pa:-1", "pa:1:2:3", "zz:1", "pa:1e5", "pa:" + "9" * 20,
                                  "pa:1\n", "ü:1", None])
def test_malformed_callback_data_is_refused(data: str | None) -> None:
    """Forged or malformed button data decodes to None."""
    assert render.decode(data) is None


def test_keyboard_uses_encoded_data() -> None:
    """Abstract buttons become inline buttons carrying the encoded action."""
    markup = render.keyboard([[Button("Accept", "accept", 5)]])
    assert markup is not None
    assert markup.inline_keyboard[0][0].callback_data == "pa:5"
    assert render.keyboard([]) is None
