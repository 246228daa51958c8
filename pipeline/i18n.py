"""The message catalog: every text a user reads goes through `_` (`ngettext` for plurals), in the language of the
user the current task works for.

The language is a context variable: the bot sets it for each update (`use_locale`), the check-in dispatch for
each item it writes. Placeholders are named and filled after translation: `_("Time zone set: {zone}.", zone=z)`.
A module-level constant is marked with `N_` (so extraction finds it) and translated where it is used: `_(HELP)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

DEFAULT = "en"
_LOCALE: ContextVar[str] = ContextVar("rein_locale", default=DEFAULT)


def current() -> str:
    """The language of the task's user (a catalog code such as "de" or "pt_BR")."""
    return _LOCALE.get()


@contextlib.contextmanager
def use_locale(code: str | None) -> Iterator[str]:
    """Speak `code` inside the block (English when None)."""
    token = _LOCALE.set(code or DEFAULT)
    try:
        yield current()
    finally:
        _LOCALE.reset(token)


def set_locale(code: str | None) -> None:
    """Speak `code` for the rest of this task (an update's handler)."""
    _LOCALE.set(code or DEFAULT)


def _(message: str, /, **values: Any) -> str:
    """`message` in the task's language, with its named placeholders filled."""
    return message.format(**values) if values else message


def ngettext(singular: str, plural: str, n: int, /, **values: Any) -> str:
    """The singular or plural form for `n` in the task's language, placeholders filled (`n` among them)."""
    chosen = singular if n == 1 else plural
    return chosen.format(n=n, **values)


def N_(message: str, /) -> str:
    """Mark a constant for the catalog; translate it with `_` where it is used."""
    return message
