"""The message catalog: every text marked in the code is in the template, and every language translates every entry
(no empty or fuzzy one, the same placeholders, every plural form), compiled into the .mo files the bot reads."""

from __future__ import annotations

import gettext
import re
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po

from pipeline import i18n
from pipeline.i18n import _, ngettext, use_locale

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "pipeline" / "locales"
KEYWORDS = {"_": None, "ngettext": (1, 2), "N_": None}  # as `make catalog` extracts them
TRANSLATED = [code for code in i18n.LANGUAGES if code != i18n.DEFAULT]
PLACEHOLDER = re.compile(r"{(\w*)[^{}]*}")


def _key(message_id: Any) -> Any:
    return tuple(message_id) if isinstance(message_id, (list, tuple)) else message_id


def _entries(catalog: Catalog) -> dict[Any, Message]:
    return {_key(m.id): m for m in catalog if m.id}


def _template() -> Catalog:
    with (LOCALES / "rein.pot").open("rb") as f:
        return read_po(f)


def _catalog(code: str) -> Catalog:
    with (LOCALES / code / "LC_MESSAGES" / "rein.po").open("rb") as f:
        return read_po(f, locale=code)


def _placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def test_every_marked_text_in_the_code_is_in_the_template_and_nothing_else() -> None:
    """Extracting `_`, `ngettext` and `N_` from bot/ and pipeline/ gives exactly the template's entries."""
    found: set[Any] = set()
    for folder in ("bot", "pipeline"):
        for _file, _line, message, _comments, _context in extract_from_dir(
                ROOT / folder, keywords=KEYWORDS, comment_tags=("Translators:",)):
            key = _key(message)
            found.add(key[:2] if isinstance(key, tuple) else key)
    template = set(_entries(_template()))
    assert not found - template, f"marked in the code, missing from the template (run `make catalog`): " \
                                 f"{sorted(map(str, found - template))[:10]}"
    assert not template - found, f"in the template, no longer in the code (run `make catalog`): " \
                                 f"{sorted(map(str, template - found))[:10]}"


@pytest.mark.parametrize("code", TRANSLATED)
def test_every_entry_is_translated_with_the_same_placeholders(code: str) -> None:
    """No missing, empty or fuzzy entry; placeholders as in the English; every plural form the language has."""
    catalog = _catalog(code)
    entries = _entries(catalog)
    assert (catalog.num_plurals, catalog.plural_expr) == tuple(get_plural(code)), f"{code}: plural forms"
    problems: list[str] = []
    for key in _entries(_template()):
        message = entries.get(key)
        if message is None:
            problems.append(f"missing: {key!r}")
            continue
        if message.fuzzy:
            problems.append(f"fuzzy: {key!r}")
        if isinstance(key, tuple):
            forms = list(message.string or ())
            wanted = _placeholders(key[1]) | _placeholders(key[0])
            if len(forms) != catalog.num_plurals or not all(forms):
                problems.append(f"plural forms: {key[0]!r}")
            for form in forms:
                if not _placeholders(form) <= wanted or not _placeholders(form) >= wanted - {"n"}:
                    problems.append(f"placeholders: {key[0]!r} -> {form!r}")
        else:
            text = message.string if isinstance(message.string, str) else ""
            if not text.strip():
                problems.append(f"empty: {key!r}")
            elif _placeholders(text) != _placeholders(key):
                problems.append(f"placeholders: {key!r} -> {text!r}")
    assert not problems, f"{code}: {len(problems)} problems: {problems[:8]}"
    assert not [key for key in entries if key not in _entries(_template())], f"{code}: entries not in the template"


@pytest.mark.parametrize("code", TRANSLATED)
def test_the_compiled_catalog_matches_its_source(code: str) -> None:
    """The committed .mo file holds exactly what the .po says (a fresh clone reads the current translations)."""
    with (LOCALES / code / "LC_MESSAGES" / "rein.mo").open("rb") as f:
        compiled = gettext.GNUTranslations(f)
    for key, message in _entries(_catalog(code)).items():
        if isinstance(key, tuple):
            forms = list(message.string)
            chosen = {compiled.ngettext(key[0], key[1], n) for n in (0, 1, 2, 3, 5, 11, 21, 100, 1000000)}
            assert chosen <= set(forms), f"{code}: {key[0]!r} is stale in rein.mo"
        else:
            assert compiled.gettext(key) == message.string, f"{code}: {key!r} is stale in rein.mo"


@pytest.mark.parametrize("code", TRANSLATED)
def test_every_translation_fills_its_placeholders(code: str) -> None:
    """Each translation formats with its msgid's values: no stray brace breaks a reply at run time."""
    with use_locale(code):
        for key in _entries(_template()):
            if isinstance(key, tuple):
                values = {name: "x" for name in _placeholders(key[1]) - {"n"}}
                for n in (0, 1, 2, 3, 5, 11, 100):
                    assert ngettext(key[0], key[1], n, **values)
            else:
                values = {name: "x" for name in _placeholders(key)}
                assert _(key, **values)


def test_plurals_follow_each_languages_rules() -> None:
    """ngettext picks the right form: Russian 1/3/5/21, Arabic 0/1/2/3/11/100, English and German 1/2."""
    one, many = "Streak: {n} check-in in a row", "Streak: {n} check-ins in a row"
    with use_locale("ru"):
        assert [ngettext(one, many, n) for n in (1, 3, 5, 21)] == [
            "Серия: 1 отметка подряд", "Серия: 3 отметки подряд", "Серия: 5 отметок подряд", "Серия: 21 отметка подряд"]
    with use_locale("ar"):
        forms = [ngettext(one, many, n) for n in (0, 1, 2, 3, 11, 100)]
        assert len(set(forms[2:5])) == 3 and "تذكيرات" in forms[3] and "تذكيرًا" in forms[4]
    with use_locale("de"):
        assert ngettext(one, many, 1) == "Serie: 1 Check-in in Folge"
        assert ngettext(one, many, 2) == "Serie: 2 Check-ins in Folge"
    assert ngettext(one, many, 1) == "Streak: 1 check-in in a row"


@pytest.mark.parametrize(("telegram", "expected"), [
    ("de", "de"), ("de-AT", "de"), ("pt-br", "pt_BR"), ("pt-PT", "pt_BR"), ("pt", "pt_BR"), ("es-419", "es"),
    ("ar", "ar"), ("uk", "uk"), ("zh-hans", "en"), ("en-GB", "en"), (None, "en"), ("", "en"), ("xx", "en"),
])
def test_the_nearest_supported_language_of_a_telegram_code(telegram: str | None, expected: str) -> None:
    """Telegram's language_code maps to the nearest language Rein speaks, English for any other."""
    assert i18n.nearest(telegram) == expected


def test_dates_times_and_percentages_follow_the_language() -> None:
    """Babel formats for the task's language: English keeps 24-hour times, Arabic and German their own forms."""
    from datetime import UTC, date, datetime

    instant = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    assert i18n.format_datetime(instant) == "Sun 29 Nov, 08:00"
    assert i18n.format_percent(0.75) == "75%"
    with use_locale("de"):
        assert i18n.format_datetime(instant) == "So., 29. Nov., 08:00"
        assert i18n.format_date(date(2026, 12, 28)) == "28.12.2026" and i18n.format_percent(0.75) == "75\xa0%"
    with use_locale("tr"):
        assert i18n.format_percent(0.75) == "%75"
    with use_locale("ar"):
        assert "نوفمبر" in i18n.format_datetime(instant)


def test_an_unknown_or_missing_language_speaks_english() -> None:
    """A stored code Rein does not have (or None) falls back to English texts."""
    with use_locale("xx"):
        assert i18n.current() == "en" and _("Try again") == "Try again"
    with use_locale(None):
        assert _("Welcome back! {hint}", hint="Hi") == "Welcome back! Hi"
