"""Time zones from what a user can tell: an IANA name, a city name, or a shared location (offline)."""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, available_timezones

# Common places whose name is not the last part of an IANA zone name.
ALIASES: dict[str, str] = {
    "new york city": "America/New_York",
    "nyc": "America/New_York",
    "washington": "America/New_York",
    "boston": "America/New_York",
    "miami": "America/New_York",
    "atlanta": "America/New_York",
    "san francisco": "America/Los_Angeles",
    "seattle": "America/Los_Angeles",
    "la": "America/Los_Angeles",
    "houston": "America/Chicago",
    "dallas": "America/Chicago",
    "austin": "America/Chicago",
    "munich": "Europe/Berlin",
    "münchen": "Europe/Berlin",
    "hamburg": "Europe/Berlin",
    "frankfurt": "Europe/Berlin",
    "cologne": "Europe/Berlin",
    "köln": "Europe/Berlin",
    "barcelona": "Europe/Madrid",
    "milan": "Europe/Rome",
    "florence": "Europe/Rome",
    "manchester": "Europe/London",
    "edinburgh": "Europe/London",
    "geneva": "Europe/Zurich",
    "st petersburg": "Europe/Moscow",
    "rio de janeiro": "America/Sao_Paulo",
    "rio": "America/Sao_Paulo",
    "brasilia": "America/Sao_Paulo",
    "delhi": "Asia/Kolkata",
    "new delhi": "Asia/Kolkata",
    "mumbai": "Asia/Kolkata",
    "bangalore": "Asia/Kolkata",
    "bengaluru": "Asia/Kolkata",
    "beijing": "Asia/Shanghai",
    "shenzhen": "Asia/Shanghai",
    "osaka": "Asia/Tokyo",
    "kyoto": "Asia/Tokyo",
    "ho chi minh city": "Asia/Ho_Chi_Minh",
    "saigon": "Asia/Ho_Chi_Minh",
    "kiev": "Europe/Kyiv",
    "melbourne": "Australia/Melbourne",
    "canberra": "Australia/Sydney",
    "utc": "UTC",
    "gmt": "UTC",
}


def _fold(text: str) -> str:
    """Lower case, accents removed, separators as single spaces: "São_Paulo" -> "sao paulo"."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\s_\-.,]+", " ", plain).strip().lower()


@functools.cache
def _index() -> tuple[dict[str, str], dict[str, str]]:
    """IANA names by lower-case name, and by folded city (last part of the name)."""
    names = {name for name in available_timezones() if "/" in name and not name.startswith(("Etc/", "SystemV/"))}
    by_name = {name.lower(): name for name in names | {"UTC"}}
    by_city: dict[str, str] = {}
    for name in sorted(names):
        city = _fold(name.rsplit("/", 1)[-1])
        # Prefer the canonical continents over legacy areas (US/..., Brazil/...) for the same city.
        if city not in by_city or name.split("/")[0] in ("Europe", "America", "Asia", "Africa", "Australia"):
            by_city[city] = name
    for alias, name in ALIASES.items():
        by_city.setdefault(_fold(alias), name)
    return by_name, by_city


def resolve(text: str) -> str | None:
    """The IANA zone for an IANA name ("Europe/Berlin") or a city ("Berlin", "São Paulo"); None if unknown."""
    cleaned = text.strip()
    if not cleaned or len(cleaned) > 80:
        return None
    by_name, by_city = _index()
    exact = by_name.get(cleaned.lower().replace(" ", "_"))
    if exact:
        return exact
    folded = _fold(cleaned)
    if folded in by_city:
        return by_city[folded]
    head = _fold(cleaned.split(",")[0])  # "Berlin, Germany"
    return by_city.get(head)


def from_location(latitude: float, longitude: float) -> str | None:
    """The zone at a point, looked up offline (tzfpy); None in the open ocean or for bad coordinates."""
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    import tzfpy

    name = tzfpy.get_tz(longitude, latitude)
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (KeyError, ValueError):
        return None
    return name if not name.startswith("Etc/") else None


def local_today(zone: str | None, now: datetime | None = None) -> date:
    """The date on the user's calendar (UTC when they have not said where they are): the day a plan starts and
    the day the coach calls today."""
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(zone or "UTC")).date()
