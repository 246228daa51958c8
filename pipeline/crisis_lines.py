"""Where to get help now: emergency numbers and national crisis lines, by the country of the user's time zone.

Telegram does not tell a bot where a user is; the time zone they set (/timezone, a city, a shared location) is
the best hint Rein has, so a user without one gets the emergency guidance and the directory only. Every number
below was checked against the page named beside it (stored copies of public pages, read 2026-12); a country
whose lines could not be checked is left out and gets https://findahelpline.com, the directory every reply
carries.
"""

from __future__ import annotations

from dataclasses import dataclass

DIRECTORY = "https://findahelpline.com"  # source: https://findahelpline.com/AU (the directory's country pages)


@dataclass(frozen=True)
class Line:
    """A helpline: its own name (not translated) and how to reach it."""

    name: str
    contact: str


@dataclass(frozen=True)
class Country:
    """What to call in one country: the emergency number (None where not checked) and the crisis lines."""

    code: str
    emergency: str | None
    lines: tuple[Line, ...]


# The single European emergency number 112 works in every EU member state (https://www.news.lt/Law-And-Order-
# Crime/Need-help-Dial-112.im, quoting ec.europa.eu).
EU_EMERGENCY = "112"

COUNTRIES: dict[str, Country] = {
    # https://health.wyo.gov/publichealth/prevention/wivpp/suicide-prevention/988-suicide-crisis-lifeline
    # ("call or text 988 ... If you or someone you know is in immediate danger ... call 911")
    "US": Country("US", "911", (Line("988 Suicide & Crisis Lifeline", "call or text 988, chat 988lifeline.org"),)),
    # https://mentalhealthcommission.ca/catalyst/988-launches-in-canada/ ("call or text 988 ... call 9-1-1")
    "CA": Country("CA", "911", (Line("9-8-8 Suicide Crisis Helpline", "call or text 988"),)),
    # https://www.samaritans.org/how-we-can-help/contact-samaritan/ ("free to call ... 116 123")
    "GB": Country("GB", None, (Line("Samaritans", "116 123"),)),
    # https://www.newstalk.com/reader/47.301/69999/0/ (116 123 free to call on the whole island of Ireland)
    "IE": Country("IE", EU_EMERGENCY, (Line("Samaritans", "116 123"),)),
    # https://domradio.de/node/277480 ("0800/1110111 und 0800/1110222 ... kostenlos und jederzeit anonym")
    "DE": Country("DE", EU_EMERGENCY, (Line("TelefonSeelsorge", "0800 111 0 111 or 0800 111 0 222"),)),
    # https://www.katholisch.at/telefonseelsorge ("Unter der Rufnummer 142 ... rund um die Uhr und kostenlos")
    "AT": Country("AT", EU_EMERGENCY, (Line("TelefonSeelsorge", "142"),)),
    # https://www.143.ch/ticino/Consulenza/Servizio-di-consulenza/Notte (Die Dargebotene Hand / Telefono Amico 143)
    "CH": Country("CH", None, (Line("Die Dargebotene Hand / La Main Tendue / Telefono Amico", "143"),)),
    # https://3114.fr/que-se-passe-t-il-quand-je-contacte-le-3114/ and https://www.service-public.fr/particuliers/
    # actualites/A15206 ("Le 3114 est un numéro de téléphone gratuit, accessible 24 heures sur 24")
    "FR": Country("FR", EU_EMERGENCY, (Line("3114", "3114"),)),
    # https://www.rtve.es/noticias/20220509/sanidad-presenta-telefono-prevencion-suicidio/2347183.shtml
    # ("la línea 024 de atención a las conductas suicidas ... gratuito ... las 24 horas")
    "ES": Country("ES", EU_EMERGENCY, (Line("024", "024"),)),
    # https://alleyoop.ilsole24ore.com/2025/10/10/salute-mentale-300-richieste-di-aiuto-al-giorno-per-telefono-amico-
    # italia/ ("servizio telefonico (raggiungibile allo 02 2327 2327)"); open 10:00-24:00 (ilgiorno.it, 2023)
    "IT": Country("IT", EU_EMERGENCY, (Line("Telefono Amico Italia", "02 2327 2327 (10:00-24:00)"),)),
    # https://pt.wikipedia.org/wiki/Centro_de_Valoriza%C3%A7%C3%A3o_da_Vida ("telefone (188 grátis para todo
    # Brasil)"), site cvv.org.br
    "BR": Country("BR", None, (Line("CVV", "188"),)),
    # https://dzerkalo.media/news/v-ukraini-zapratsyue-garyacha-liniya-psihologichnoi-pidtrimki-dlya-veteraniv-viyni
    # ("Гаряча лінія працюватиме 24/7 за номером 7333")
    "UA": Country("UA", None, (Line("Lifeline Ukraine", "7333"),)),
    # https://www.upday.com/nl/binnenland/nummer-113-nu-gratis-betere-hulp-bij-zelfdodingsgedachten/pj8neqt
    # ("Bel dan 24/7 gratis en anoniem 113 of chat op 113.nl"); 0800-0113: https://www.nu.nl/binnenland/6062813/
    "NL": Country("NL", EU_EMERGENCY, (Line("113 Zelfmoordpreventie", "113 or 0800-0113"),)),
    # https://lifelineh2h.org.au/get-help/telephone-crisis-support/faqs/ ("What happens when I call 13 11 14?
    # ... If you are in immediate danger call 000")
    "AU": Country("AU", "000", (Line("Lifeline", "13 11 14"),)),
}

# Time zones of those countries (the IANA database's zone.tab, plus the common older names).
_ZONES: dict[str, tuple[str, ...]] = {
    "US": ("America/New_York", "America/Detroit", "America/Kentucky/Louisville", "America/Kentucky/Monticello",
           "America/Indiana/Indianapolis", "America/Indiana/Vincennes", "America/Indiana/Winamac",
           "America/Indiana/Marengo", "America/Indiana/Petersburg", "America/Indiana/Vevay", "America/Chicago",
           "America/Indiana/Tell_City", "America/Indiana/Knox", "America/Menominee", "America/North_Dakota/Center",
           "America/North_Dakota/New_Salem", "America/North_Dakota/Beulah", "America/Denver", "America/Boise",
           "America/Phoenix", "America/Los_Angeles", "America/Anchorage", "America/Juneau", "America/Sitka",
           "America/Metlakatla", "America/Yakutat", "America/Nome", "America/Adak", "Pacific/Honolulu",
           "America/Indianapolis", "America/Fort_Wayne", "America/Louisville", "Navajo"),
    "CA": ("America/St_Johns", "America/Halifax", "America/Glace_Bay", "America/Moncton", "America/Goose_Bay",
           "America/Blanc-Sablon", "America/Toronto", "America/Iqaluit", "America/Atikokan", "America/Winnipeg",
           "America/Resolute", "America/Rankin_Inlet", "America/Regina", "America/Swift_Current", "America/Edmonton",
           "America/Cambridge_Bay", "America/Inuvik", "America/Creston", "America/Dawson_Creek", "America/Fort_Nelson",
           "America/Whitehorse", "America/Dawson", "America/Vancouver", "America/Montreal", "America/Thunder_Bay",
           "America/Nipigon", "America/Rainy_River", "America/Yellowknife", "America/Pangnirtung"),
    "GB": ("Europe/London", "Europe/Belfast", "GB", "GB-Eire"),
    "IE": ("Europe/Dublin", "Eire"),
    "DE": ("Europe/Berlin", "Europe/Busingen"),
    "AT": ("Europe/Vienna",),
    "CH": ("Europe/Zurich",),
    "FR": ("Europe/Paris",),
    "ES": ("Europe/Madrid", "Africa/Ceuta", "Atlantic/Canary"),
    "IT": ("Europe/Rome",),
    "BR": ("America/Noronha", "America/Belem", "America/Fortaleza", "America/Recife", "America/Araguaina",
           "America/Maceio", "America/Bahia", "America/Sao_Paulo", "America/Campo_Grande", "America/Cuiaba",
           "America/Santarem", "America/Porto_Velho", "America/Boa_Vista", "America/Manaus", "America/Eirunepe",
           "America/Rio_Branco"),
    "UA": ("Europe/Kyiv", "Europe/Kiev", "Europe/Uzhgorod", "Europe/Zaporozhye"),
    "NL": ("Europe/Amsterdam",),
    "AU": ("Australia/Lord_Howe", "Australia/Hobart", "Australia/Melbourne", "Australia/Sydney",
           "Australia/Broken_Hill", "Australia/Brisbane", "Australia/Lindeman", "Australia/Adelaide",
           "Australia/Darwin", "Australia/Perth", "Australia/Eucla"),
}
_PREFIXES = {"US/": "US", "Canada/": "CA", "Australia/": "AU", "Brazil/": "BR"}
ZONE_COUNTRY: dict[str, str] = {zone: code for code, zones in _ZONES.items() for zone in zones}


def country_of(zone: str | None) -> str | None:
    """The country (ISO code) of a time zone, for the countries Rein has lines for; None otherwise."""
    if not zone:
        return None
    if zone in ZONE_COUNTRY:
        return ZONE_COUNTRY[zone]
    return next((code for prefix, code in _PREFIXES.items() if zone.startswith(prefix)), None)


def help_for(zone: str | None) -> Country | None:
    """The emergency number and lines for the user's time zone, if Rein knows that country's."""
    code = country_of(zone)
    return COUNTRIES.get(code) if code else None
