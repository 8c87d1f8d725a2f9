"""The portal session's locale: an explicit choice checked against Stripe, or negotiated."""

from __future__ import annotations

import re

# Stripe's billing portal locales (STRIPE.md), spelled as Stripe expects them.
PORTAL_LOCALES: frozenset[str] = frozenset(
    {
        "auto",
        "bg",
        "cs",
        "da",
        "de",
        "el",
        "en",
        "en-AU",
        "en-CA",
        "en-GB",
        "en-IE",
        "en-IN",
        "en-NZ",
        "en-SG",
        "es",
        "es-419",
        "et",
        "fi",
        "fil",
        "fr",
        "fr-CA",
        "hr",
        "hu",
        "id",
        "it",
        "ja",
        "ko",
        "lt",
        "lv",
        "ms",
        "mt",
        "nb",
        "nl",
        "pl",
        "pt",
        "pt-BR",
        "ro",
        "ru",
        "sk",
        "sl",
        "sv",
        "th",
        "tr",
        "vi",
        "zh",
        "zh-HK",
        "zh-TW",
    }
)

_AUTO = "auto"
_CANONICAL = {locale.lower(): locale for locale in PORTAL_LOCALES}

# Spanish as written in Latin America and the US, which Stripe serves as es-419: the
# UN M.49 regions for Latin America and its parts, and the countries themselves.
_LATIN_AMERICAN_SPANISH_REGIONS = frozenset(
    {
        "419", "005", "013", "029",
        "ar", "bo", "bz", "cl", "co", "cr", "cu", "do", "ec", "gt", "hn", "mx",
        "ni", "pa", "pe", "pr", "py", "sv", "us", "uy", "ve",
    }
)  # fmt: skip

# Macau writes Traditional Chinese much as Hong Kong does.
_HONG_KONG_CHINESE_REGIONS = frozenset({"hk", "mo"})

# Deprecated or macrolanguage codes that browsers still send for a language Stripe has.
_LANGUAGE_ALIASES = {"no": "nb", "nn": "nb", "tl": "fil"}

# RFC 4647 basic language range (what Accept-Language carries) and RFC 9110 qvalue.
_LANGUAGE_RANGE_RE = re.compile(r"[a-z]{1,8}(?:-[a-z0-9]{1,8})*")
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


class UnsupportedLocaleError(ValueError):
    def __init__(self, locale: str) -> None:
        super().__init__(
            f"unsupported locale {locale!r}; expected one of: {', '.join(sorted(PORTAL_LOCALES))}"
        )
        self.locale = locale


def resolve_locale(explicit: str | None, accept_language: str | None) -> str:
    if explicit is not None:
        canonical = _CANONICAL.get(explicit.lower())
        if canonical is None:
            raise UnsupportedLocaleError(explicit)
        return canonical
    for language_range in _ranked_languages(accept_language or ""):
        locale = _portal_locale_for(language_range)
        if locale is not None:
            return locale
    return _AUTO


def _ranked_languages(header: str) -> list[str]:
    weighted: list[tuple[float, str]] = []
    for part in header.split(","):
        tag, *params = (piece.strip() for piece in part.split(";"))
        tag = tag.lower()
        # `*` says "anything else is fine", which is what `auto` already means.
        if not _LANGUAGE_RANGE_RE.fullmatch(tag):
            continue
        quality = _quality(params)
        # q=0 means "not acceptable": never pick it, even as a fallback.
        if quality is not None and quality > 0:
            weighted.append((quality, tag))
    # sorted() is stable, so equal weights keep the order the client sent them in.
    return [tag for _, tag in sorted(weighted, key=lambda item: -item[0])]


def _quality(params: list[str]) -> float | None:
    quality = 1.0
    for param in params:
        name, sep, value = param.partition("=")
        if name.strip().lower() != "q":
            continue  # no other parameter is defined for Accept-Language
        value = value.strip()
        if not sep or not _QVALUE_RE.fullmatch(value):
            return None
        quality = float(value)
    return quality


def _portal_locale_for(language_range: str) -> str | None:
    exact = _CANONICAL.get(language_range)
    if exact is not None and exact != _AUTO:
        return exact
    language, script, region = _split_tag(language_range)
    if language == "zh":
        return _chinese(script, region)
    if language == "es":
        return "es-419" if region in _LATIN_AMERICAN_SPANISH_REGIONS else "es"
    if language == "pt":
        return "pt-BR" if region == "br" else "pt"
    language = _LANGUAGE_ALIASES.get(language, language)
    if region is not None:
        regional = _CANONICAL.get(f"{language}-{region}")
        if regional is not None:
            return regional
    return _CANONICAL.get(language) if language != _AUTO else None


def _split_tag(language_range: str) -> tuple[str, str | None, str | None]:
    language, *subtags = language_range.split("-")
    script = region = None
    for subtag in subtags:
        if len(subtag) == 1:
            break  # an extension or private-use section: the rest is not script or region
        if script is None and region is None and len(subtag) == 4 and subtag.isalpha():
            script = subtag
        elif region is None and (
            (len(subtag) == 2 and subtag.isalpha()) or (len(subtag) == 3 and subtag.isdigit())
        ):
            region = subtag
        else:
            break  # variants follow; they do not change the portal locale
    return language, script, region


def _chinese(script: str | None, region: str | None) -> str:
    # The script decides Simplified (Stripe's `zh`) or Traditional; the region only
    # fills in when no script is given, and picks Hong Kong's variant of Traditional.
    traditional = script == "hant" or (script is None and region in {"tw", "hk", "mo"})
    if not traditional:
        return "zh"
    return "zh-HK" if region in _HONG_KONG_CHINESE_REGIONS else "zh-TW"
