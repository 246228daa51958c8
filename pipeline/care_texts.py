"""The texts of the crisis-care reply, marked for the catalog (`N_` here, `say` where used): their translations
live in the message catalog with every other text (pipeline/locales), so there is one mechanism."""

from __future__ import annotations

from pipeline.i18n import N_, _, nearest, use_locale

HEARD = {
    "suicide": N_("Thank you for telling me. It sounds like you are carrying something really painful right now, "
                  "and you deserve support with it."),
    "harm_others": N_("Thank you for telling me. It sounds like things feel overwhelming right now, and it matters "
                      "that you reached out before anyone gets hurt."),
    "abuse": N_("Thank you for telling me. No one deserves to be hurt, and what is happening is not your fault."),
    "medical": N_("This could be a medical emergency. Please get help right away."),
}
HEARD["self_harm"] = HEARD["suicide"]
NOT_A_SERVICE = N_("I'm Rein, a goal coach, not a crisis service, so I can't give you the help this needs. "
                   "These people can, right now:")
EMERGENCY_NUMBER = N_("If you or someone else is in danger now, call {number} (emergency services).")
EMERGENCY_LOCAL = N_("If you or someone else is in danger now, call your local emergency number.")
DIRECTORY = N_("A free, confidential helpline in your country: {url}")
CLOSING = N_("If you can, tell someone you trust how you are feeling. I'm here whenever you want to talk about "
             "your goals again.")
PAUSED = N_("I've paused your check-ins for the next 24 hours. Tap below if you'd like them back sooner.")
RESUME = N_("Resume check-ins")


def catalog_code(language: str | None) -> str:
    """The catalog language for a screen language or a Telegram language code ("pt-br" -> "pt_BR")."""
    return nearest(language)


def say(text: str, language: str, **values: str) -> str:
    """`text` in `language` (a catalog code), placeholders filled."""
    with use_locale(language):
        return _(text, **values)
