"""A small bar chart of weekly completion as a PNG, written with zlib and struct only."""

from __future__ import annotations

import struct
import zlib

WIDTH, HEIGHT = 480, 240
MARGIN_X, TOP, BOTTOM = 24, 20, 24  # plot area: x in [MARGIN_X, WIDTH - MARGIN_X), y in [TOP, HEIGHT - BOTTOM)
BACKGROUND = (255, 255, 255)
GRID = (225, 228, 232)
AXIS = (120, 124, 130)
EMPTY = (200, 204, 210)  # a week without check-ins: a short grey stub
GOOD, FAIR, POOR = (46, 160, 67), (230, 160, 30), (215, 58, 73)
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def weekly_chart(rates: list[float | None]) -> bytes:
    """One bar per week (oldest left), height = completion 0–1; None = no check-ins that week."""
    pixels = [bytearray(bytes(BACKGROUND) * WIDTH) for _ in range(HEIGHT)]
    base = HEIGHT - BOTTOM
    span = base - TOP

    def fill(x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        for y in range(max(0, y0), min(HEIGHT, y1)):
            row = pixels[y]
            row[x0 * 3:x1 * 3] = bytes(color) * (x1 - x0)

    for fraction in (0.5, 1.0):  # grid at 50 % and 100 %
        y = base - round(span * fraction)
        fill(MARGIN_X, y, WIDTH - MARGIN_X, y + 1, GRID)
    count = max(1, len(rates))
    slot = (WIDTH - 2 * MARGIN_X) // count
    gap = max(2, slot // 4)
    for index, rate in enumerate(rates):
        x0 = MARGIN_X + index * slot + gap // 2
        x1 = x0 + slot - gap
        if rate is None:
            fill(x0, base - 3, x1, base, EMPTY)
            continue
        value = min(1.0, max(0.0, rate))
        height = max(3, round(span * value))
        color = GOOD if value >= 0.8 else FAIR if value >= 0.5 else POOR
        fill(x0, base - height, x1, base, color)
    fill(MARGIN_X, base, WIDTH - MARGIN_X, base + 2, AXIS)
    return encode_png(WIDTH, HEIGHT, pixels)


def encode_png(width: int, height: int, rows: list[bytearray]) -> bytes:
    """An 8-bit RGB PNG from rows of width * 3 bytes."""
    raw = b"".join(b"\x00" + bytes(row) for row in rows)  # filter type 0 for every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of a PNG written by `encode_png`; ValueError if it is not a valid one."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG signature")
    at, chunks = len(SIGNATURE), []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        tag, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        if zlib.crc32(tag + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {tag!r}")
        chunks.append((tag, body))
        at += 12 + length
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("IHDR must come first and IEND last")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if (depth, color, interlace) != (8, 2, 0):
        raise ValueError("only 8-bit RGB, not interlaced")
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    stride = width * 3 + 1
    if len(raw) != stride * height:
        raise ValueError("image data has the wrong size")
    rows = []
    for y in range(height):
        line = raw[y * stride:(y + 1) * stride]
        if line[0] != 0:
            raise ValueError("unsupported filter")
        rows.append(line[1:])
    return width, height, rows


def count_bars(data: bytes) -> int:
    """How many bars (runs of non-background, non-grid colour) stand just above the axis."""
    width, height, rows = decode_png(data)
    row = rows[height - BOTTOM - 1]
    bars, inside = 0, False
    for x in range(width):
        pixel = tuple(row[x * 3:x * 3 + 3])
        filled = pixel not in (BACKGROUND, GRID)
        if filled and not inside:
            bars += 1
        inside = filled
    return bars
