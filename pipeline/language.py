"""The language Rein writes in, per user: the nearest supported language of Telegram's `language_code` at first
contact (English otherwise), changed with /language, stored in `users.language` (and so in /export).

The coach's own replies follow the language of the message they answer (the prompts name the setting and say
so); every fixed text, button and date follows the setting.
"""

from __future__ import annotations

from pipeline import i18n, speaker
from pipeline.i18n import _
from pipeline.replies import Button, Para, Reply
from pipeline.speaker import Speaker
from storage import users
from storage.db import Database

CODES: tuple[str, ...] = tuple(i18n.LANGUAGES)  # a menu button's ref is the index of its language here


def code_at(index: int) -> str | None:
    """The language of a menu button's ref; None for anything that is not one (expired or forged data)."""
    return CODES[index] if 0 <= index < len(CODES) else None


class Languages:
    """/language and the language each update is answered in."""

    def __init__(self, *, db: Database) -> None:
        self.db = db

    async def stored(self, who: Speaker) -> str:
        """The user's language: the stored setting, or for someone new the nearest to their client's."""
        async with self.db.session() as session:
            stored = await users.get_language(session=session, telegram_id=who.telegram_id)
        return i18n.supported(stored) if stored is not None else i18n.nearest(who.language_code)

    async def menu(self, who: Speaker) -> list[Reply]:
        """/language: the current language and a button for each one, named in itself."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
        current = i18n.LANGUAGES[i18n.supported(user.language)]
        buttons = [Button(name, "language_set", index) for index, name in enumerate(i18n.LANGUAGES.values())]
        rows = [buttons[i:i + 2] for i in range(0, len(buttons), 2)]
        return [Reply(paras=[Para(_("I write to you in {language}. Choose another language:", language=current))],
                      buttons=rows)]

    async def choose(self, who: Speaker, index: int) -> list[Reply]:
        """A language button: stored, and from this reply on Rein writes in it."""
        code = code_at(index)
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            if code is None:
                return [Reply.plain(_("This button has expired. /language shows the choices."))]
            user.language = code
            session.add(user)
        i18n.set_locale(code)
        return [Reply.plain(_("Done: from now on I write to you in {language}. /language changes it again.",
                              language=i18n.LANGUAGES[code]))]
