"""What the coach answers, independent of Telegram: paragraphs and abstract buttons."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Para:
    """A paragraph of plain text; with `heading`, its first line is a heading."""

    text: str
    heading: bool = False


@dataclass(frozen=True)
class Button:
    """A button: `action` names what pressing it does; `ref` is the id it acts on."""

    label: str
    action: str
    ref: int = 0


@dataclass
class Reply:
    """One message from the coach."""

    paras: list[Para]
    kind: str = "info"  # info | question | resolution | plan | coaching | error | checkin
    buttons: list[list[Button]] = field(default_factory=list)
    turn_id: int | None = None  # the stored coach turn (LLM-written replies only)
    document: tuple[str, bytes | Path] | None = None  # (filename, content or a file to read) sent as a file
    judged: bool = False  # the judge scored it before it was shown (not judged again after sending)

    @property
    def text(self) -> str:
        """The reply as plain text."""
        return "\n\n".join(p.text for p in self.paras)

    @classmethod
    def plain(cls, text: str, *, kind: str = "info", buttons: list[list[Button]] | None = None,
              turn_id: int | None = None) -> Reply:
        """A reply made of plain paragraphs separated by blank lines."""
        paras = [Para(chunk) for chunk in text.split("\n\n") if chunk.strip()]
        return cls(paras=paras, kind=kind, buttons=buttons or [], turn_id=turn_id)
