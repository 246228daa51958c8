"""The message catalog: every text a user reads goes through `_` (`ngettext` for plurals), in the language of the
user the current task works for.

The language is a context variable: the bot sets it for each update (`use_locale`), the check-in dispatch for
each item it writes. Placeholders are named and filled after translation: `_("Time zone set: {zone}.", zone=z)`.
A module-level constant is marked with `N_` (so extraction finds it) and translated where it is used: `_(HELP)`.

The catalogs are gettext files made with Babel (`make catalog`, docs/TRANSLATIONS.md):
`pipeline/locales/<code>/LC_MESSAGES/rein.po`, compiled to the `rein.mo` beside it (committed, so a fresh clone
speaks every language). Dates, times and percentages are formatted for the language with Babel.
"""

from __future__ import annotations

import contextlib
import functools
import gettext
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from babel import Locale, dates, numbers

DEFAULT = "en"
DOMAIN = "rein"
LOCALE_DIR = Path(__file__).parent / "locales"
# Every language Rein speaks, named in itself (the /language menu shows these names).
LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Español",
    "pt_BR": "Português (Brasil)",
    "de": "Deutsch",
    "fr": "Français",
    "it": "Italiano",
    "ru": "Русский",
    "uk": "Українська",
    "tr": "Türkçe",
    "ar": "العربية",
}
_LOCALE: ContextVar[str] = ContextVar("rein_locale", default=DEFAULT)


def current() -> str:
    """The language of the task's user (a catalog code such as "de" or "pt_BR")."""
    return _LOCALE.get()


def nearest(language_code: str | None) -> str:
    """The supported language nearest to a Telegram `language_code` ("de-AT" -> "de", "pt-PT" -> "pt_BR"),
    English for anything else. A catalog code comes back as it is."""
    if not language_code:
        return DEFAULT
    if language_code in LANGUAGES:
        return language_code
    parts = language_code.replace("-", "_").split("_")
    base = parts[0].lower()
    full = f"{base}_{parts[1].upper()}" if len(parts) > 1 else base
    if full in LANGUAGES:
        return full
    return next((code for code in LANGUAGES if code.split("_")[0] == base), DEFAULT)


def supported(code: str | None) -> str:
    """`code` if Rein speaks it, else English (a stored or pressed value is checked with this)."""
    return code if code in LANGUAGES else DEFAULT


@contextlib.contextmanager
def use_locale(code: str | None) -> Iterator[str]:
    """Speak `code` inside the block (English when None)."""
    token = _LOCALE.set(supported(code))
    try:
        yield current()
    finally:
        _LOCALE.reset(token)


def set_locale(code: str | None) -> None:
    """Speak `code` for the rest of this task (an update's handler)."""
    _LOCALE.set(supported(code))


@functools.cache
def translations(code: str) -> gettext.NullTranslations:
    """The compiled catalog of a language (English has none: its texts are the msgids)."""
    if code == DEFAULT:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[code], fallback=True)


def _(message: str, /, **values: Any) -> str:
    """`message` in the task's language, with its named placeholders filled."""
    translated = translations(current()).gettext(message) if message else message
    return translated.format(**values) if values else translated


def ngettext(singular: str, plural: str, n: int, /, **values: Any) -> str:
    """The singular or plural form for `n` in the task's language, placeholders filled (`n` among them)."""
    chosen = translations(current()).ngettext(singular, plural, n)
    return chosen.format(n=n, **values)


def N_(message: str, /) -> str:
    """Mark a constant for the catalog; translate it with `_` where it is used."""
    return message


# ----- formatting for the task's language ------------------------------------------------------------------


@functools.cache
def _babel_locale(code: str) -> Locale:
    # Rein's English is British English: 24-hour times and day-month dates ("Sun 29 Nov, 08:00").
    return Locale.parse("en_GB" if code == DEFAULT else code)


def locale() -> Locale:
    """The task's language as a Babel locale."""
    return _babel_locale(current())


def language_name(code: str | None = None, *, in_language: str = DEFAULT) -> str:
    """A language's name in English (for prompts), or in another language."""
    return Locale.parse(supported(code or current())).get_display_name(in_language) or DEFAULT


def format_date(day: date, format: str = "medium") -> str:
    """A date for the task's language ("28 Dec 2026", "28.12.2026", "٢٨‏/١٢‏/٢٠٢٦")."""
    return dates.format_date(day, format=format, locale=locale())


def format_day(day: date | datetime) -> str:
    """A short date with its weekday ("Sun, Nov 29", "So., 29. Nov.")."""
    return dates.format_skeleton("MMMEd", day, locale=locale())


def format_time(at: time | datetime) -> str:
    """A time of day for the task's language, 24 hours or 12 as the language writes it."""
    return dates.format_time(at, format="short", locale=locale())


def format_datetime(instant: datetime) -> str:
    """A weekday, a date and a time ("Sun, Nov 29, 8:00 AM"), in the zone `instant` carries."""
    return _(
        "{day}, {time}", day=format_day(instant), time=dates.format_time(instant, format="short", locale=locale(),
                                                                          tzinfo=instant.tzinfo))


def format_weekday(day: date | datetime) -> str:
    """The weekday's full name."""
    return dates.format_date(day, "EEEE", locale=locale())


def format_percent(fraction: float) -> str:
    """A fraction as a whole percentage ("75%", "75 %", "%75", "٪٧٥")."""
    return numbers.format_percent(fraction, locale=locale())
