"""/export written as it is read: JSON streamed to temporary files, split into documents under a size limit.

Each document is a JSON object of its own (`{"part": 1, "user": {...}, "goals": [...], ...}`); a section that does
not fit goes on in the next document under the same name, so the parts together hold every row once. A single row
larger than the limit gets a document of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

CLOSING = b"]}"  # what closing a document may still need


class ExportWriter:
    """Writes sections of rows into documents of at most `part_bytes` each, in `folder`."""

    def __init__(self, folder: Path, *, part_bytes: int, stem: str = "rein-export") -> None:
        self.folder = folder
        self.part_bytes = part_bytes
        self.stem = stem
        self.parts: list[Path] = []
        self._file: IO[bytes] | None = None
        self._size = 0
        self._section: str | None = None  # the list section open in the current document
        self._items = 0  # items of that section in the current document
        self._filled = False  # the current document holds a value or a row

    def value(self, key: str, value: Any) -> None:
        """A section that is one value (the user's row, a summary)."""
        self._close_section()
        encoded = _encode(value)
        self._fit(len(key) + len(encoded) + 8)
        self._write(b', "%s": ' % _key(key) + encoded)
        self._filled = True

    def rows(self, key: str, rows: list[dict[str, Any]]) -> None:
        """The next rows of a list section (call again with more rows of the same section)."""
        if self._section != key:
            self._close_section()
        if self._file is None or self._section != key:
            self._open_section(key)
        for row in rows:
            encoded = _encode(row)
            if self._filled and self._size + len(encoded) + 1 + len(CLOSING) > self.part_bytes:
                self._close_part()
                self._open_section(key)
            self._write((b"," if self._items else b"") + encoded)
            self._items += 1
            self._filled = True

    def close(self) -> list[Path]:
        """Finish the last document; the documents, in order (one is named `<stem>.json`)."""
        self._close_section()
        if self._file is None:
            self._open_part()
        self._close_part()
        if len(self.parts) == 1:
            single = self.parts[0].with_name(f"{self.stem}.json")
            self.parts[0].rename(single)
            self.parts = [single]
        return self.parts

    # ----- documents

    def _fit(self, size: int) -> None:
        """Start a new document when `size` more bytes would not fit in this one (unless it is still empty)."""
        if self._file is None:
            self._open_part()
        elif self._size + size + len(CLOSING) > self.part_bytes and self._filled:
            self._close_part()
            self._open_part()

    def _open_section(self, key: str) -> None:
        self._fit(len(key) + 8)
        self._write(b', "%s": [' % _key(key))
        self._section, self._items = key, 0

    def _close_section(self) -> None:
        if self._file is not None and self._section is not None:
            self._write(b"]")
        self._section, self._items = None, 0

    def _open_part(self) -> None:
        path = self.folder / f"{self.stem}-{len(self.parts) + 1}.json"
        self.parts.append(path)
        self._file = path.open("wb")
        self._size = 0
        self._write(b'{"part": %d' % len(self.parts))
        self._filled = False

    def _close_part(self) -> None:
        self._close_section()
        if self._file is not None:
            self._write(b"}")
            self._file.close()
            self._file = None

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._size += len(data)


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _key(key: str) -> bytes:
    return json.dumps(key).strip('"').encode()
