"""Portal locales: the explicit choice and Accept-Language negotiation."""

import pytest

from portal_service.portal.locales import (
    PORTAL_LOCALES,
    UnsupportedLocaleError,
    resolve_locale,
)

# Copied from STRIPE.md ("Billing portal sessions") on purpose: the test is the spec.
STRIPE_PORTAL_LOCALES = {
    "auto", "bg", "cs", "da", "de", "el", "en", "en-AU", "en-CA", "en-GB", "en-IE",
    "en-IN", "en-NZ", "en-SG", "es", "es-419", "et", "fi", "fil", "fr", "fr-CA", "hr",
    "hu", "id", "it", "ja", "ko", "lt", "lv", "ms", "mt", "nb", "nl", "pl", "pt", "pt-BR",
    "ro", "ru", "sk", "sl", "sv", "th", "tr", "vi", "zh", "zh-HK", "zh-TW",
}  # fmt: skip


class TestPortalLocales:
    def test_matches_stripe_list_exactly(self) -> None:
        assert set(PORTAL_LOCALES) == STRIPE_PORTAL_LOCALES

    @pytest.mark.parametrize(
        "locale",
        [
            pytest.param("en-US", id="en-US"),
            pytest.param("es-ES", id="es-ES"),
            pytest.param("zh-CN", id="zh-CN"),
            pytest.param("pt-br", id="lowercase-spelling"),
        ],
    )
    def test_excludes_locales_stripe_does_not_have(self, locale: str) -> None:
        assert locale not in PORTAL_LOCALES


class TestResolveLocale:
    @pytest.mark.parametrize(
        ("explicit", "expected"),
        [
            pytest.param("fr", "fr", id="plain"),
            pytest.param("auto", "auto", id="auto"),
            pytest.param("AUTO", "auto", id="auto-uppercase"),
            pytest.param("pt-BR", "pt-BR", id="canonical-region"),
            pytest.param("pt-br", "pt-BR", id="lowercase-region"),
            pytest.param("PT-BR", "pt-BR", id="uppercase"),
            pytest.param("zh-tw", "zh-TW", id="zh-tw"),
            pytest.param("ES-419", "es-419", id="numeric-region"),
            pytest.param("Fil", "fil", id="three-letter-language"),
        ],
    )
    def test_explicit_locale_returns_stripe_spelling(self, explicit: str, expected: str) -> None:
        assert resolve_locale(explicit, "de-DE,de;q=0.9") == expected

    @pytest.mark.parametrize(
        "explicit",
        [
            pytest.param("xx", id="unknown"),
            pytest.param("en-US", id="unlisted-region"),
            pytest.param("es-ES", id="es-ES-not-stripe-spelling"),
            pytest.param("fr-CH", id="not-negotiated-when-explicit"),
            pytest.param("zh-Hant-TW", id="script-subtag"),
            pytest.param("pt_BR", id="underscore"),
            pytest.param(" fr", id="surrounding-space"),
            pytest.param("", id="empty"),
        ],
    )
    def test_explicit_unsupported_locale_raises(self, explicit: str) -> None:
        with pytest.raises(UnsupportedLocaleError) as raised:
            resolve_locale(explicit, "fr")

        assert isinstance(raised.value, ValueError)
        assert raised.value.locale == explicit
        assert repr(explicit) in str(raised.value)

    @pytest.mark.parametrize(
        ("accept_language", "expected"),
        [
            # README.md, "Sending a user to the portal".
            pytest.param("fr-CH", "fr", id="fr-CH"),
            pytest.param("es-MX", "es-419", id="es-MX"),
            pytest.param("pt-PT", "pt", id="pt-PT"),
            pytest.param("zh-Hant-TW", "zh-TW", id="zh-Hant-TW"),
            pytest.param("xx", "auto", id="unknown"),
            # Exact matches, in Stripe's spelling whatever the case sent.
            pytest.param("de", "de", id="exact"),
            pytest.param("en-GB", "en-GB", id="exact-region"),
            pytest.param("en-gb", "en-GB", id="exact-region-lowercase"),
            pytest.param("fr-CA", "fr-CA", id="fr-CA"),
            pytest.param("pt-BR", "pt-BR", id="pt-BR"),
            pytest.param("fil", "fil", id="fil"),
            # Spanish.
            pytest.param("es", "es", id="es"),
            pytest.param("es-ES", "es", id="es-ES"),
            pytest.param("es-419", "es-419", id="es-419"),
            pytest.param("es-AR", "es-419", id="es-AR"),
            pytest.param("es-CO", "es-419", id="es-CO"),
            pytest.param("es-US", "es-419", id="es-US"),
            pytest.param("es-cl", "es-419", id="es-cl-lowercase"),
            pytest.param("es-GQ", "es", id="es-other-region"),
            # Portuguese.
            pytest.param("pt", "pt", id="pt"),
            pytest.param("pt-AO", "pt", id="pt-AO"),
            pytest.param("pt-Latn-BR", "pt-BR", id="pt-script-BR"),
            # Chinese: the script decides, the region only when no script is given.
            pytest.param("zh", "zh", id="zh"),
            pytest.param("zh-TW", "zh-TW", id="zh-TW"),
            pytest.param("zh-Hant", "zh-TW", id="zh-Hant"),
            pytest.param("zh-HK", "zh-HK", id="zh-HK"),
            pytest.param("zh-Hant-HK", "zh-HK", id="zh-Hant-HK"),
            pytest.param("zh-MO", "zh-HK", id="zh-MO"),
            pytest.param("zh-CN", "zh", id="zh-CN"),
            pytest.param("zh-Hans", "zh", id="zh-Hans"),
            pytest.param("zh-Hans-CN", "zh", id="zh-Hans-CN"),
            pytest.param("zh-Hans-HK", "zh", id="zh-Hans-HK-script-wins"),
            pytest.param("zh-SG", "zh", id="zh-SG"),
            # Norwegian, Tagalog, English.
            pytest.param("nn", "nb", id="nn"),
            pytest.param("no", "nb", id="no"),
            pytest.param("nb-NO", "nb", id="nb-NO"),
            pytest.param("nn-NO", "nb", id="nn-NO"),
            pytest.param("tl", "fil", id="tl"),
            pytest.param("tl-PH", "fil", id="tl-PH"),
            pytest.param("en-US", "en", id="en-US"),
            pytest.param("en-ZA", "en", id="en-ZA"),
            pytest.param("en-GB-oxendict", "en-GB", id="region-then-variant"),
            pytest.param("en-Latn-AU", "en-AU", id="script-then-region"),
            pytest.param("fr-CA-x-quebec", "fr-CA", id="private-use-suffix"),
            # Primary language fallback and no match.
            pytest.param("de-AT", "de", id="de-AT"),
            pytest.param("sv-FI", "sv", id="sv-FI"),
            pytest.param("sr-Latn", "auto", id="unsupported-language"),
            pytest.param("x-klingon", "auto", id="private-use-tag"),
            pytest.param("auto", "auto", id="auto-is-not-a-language"),
        ],
    )
    def test_single_language_maps_to_portal_locale(
        self, accept_language: str, expected: str
    ) -> None:
        assert resolve_locale(None, accept_language) == expected

    @pytest.mark.parametrize(
        ("accept_language", "expected"),
        [
            pytest.param("en-US,en;q=0.9,fr;q=0.8", "en", id="browser-default"),
            pytest.param("es-MX,es;q=0.9,en;q=0.8", "es-419", id="browser-es-MX"),
            pytest.param("de;q=0.5, fr;q=0.9", "fr", id="higher-q-wins"),
            pytest.param("de;q=0.9, fr", "fr", id="missing-q-is-one"),
            pytest.param("pt-PT;q=0.8, de;q=0.8", "pt", id="tie-keeps-header-order"),
            pytest.param("de;q=0.8, pt-PT;q=0.8", "de", id="tie-keeps-header-order-reversed"),
            pytest.param("auto, fr;q=0.5", "fr", id="auto-tag-skipped"),
            pytest.param("fr;q=0, de;q=0.1", "de", id="q-zero-not-acceptable"),
            pytest.param("fr;q=0.000, de;q=0.001", "de", id="q-zero-with-decimals"),
            pytest.param("fr;q=0", "auto", id="only-q-zero"),
            pytest.param("sw, fr;q=0.5", "fr", id="unmapped-first-choice-skipped"),
            pytest.param("sw, xx;q=0.9", "auto", id="nothing-maps"),
            pytest.param("*, fr;q=0.1", "fr", id="wildcard-ignored"),
            pytest.param("*", "auto", id="only-wildcard"),
            pytest.param("fr;q=abc, de;q=0.5", "de", id="non-numeric-q-ignored"),
            pytest.param("fr;q=1.5, de;q=0.2", "de", id="q-above-one-ignored"),
            pytest.param("fr;q=0.8888, de;q=0.2", "de", id="q-four-decimals-ignored"),
            pytest.param("fr;q=-1, de;q=0.2", "de", id="negative-q-ignored"),
            pytest.param("fr;q, de;q=0.2", "de", id="q-without-value-ignored"),
            pytest.param("fr;Q=0.9, de;q=0.5", "fr", id="q-name-case-insensitive"),
            pytest.param("en_US, de;q=0.1", "de", id="underscore-tag-ignored"),
            pytest.param("123, de;q=0.1", "de", id="numeric-tag-ignored"),
            pytest.param("toolongtag, de;q=0.1", "de", id="subtag-over-8-ignored"),
            pytest.param(";q=0.9, de;q=0.1", "de", id="empty-tag-ignored"),
            pytest.param(",,, de", "de", id="empty-parts-ignored"),
            pytest.param(" fr-CH ; q=0.9 , de ; q=0.5", "fr", id="whitespace-tolerated"),
            pytest.param("fr;level=1;q=0.9, de;q=0.5", "fr", id="unknown-parameter-ignored"),
            pytest.param("FR-ch", "fr", id="tag-case-insensitive"),
            pytest.param("zh-Hant-TW;q=0.4, zh-CN;q=0.7", "zh", id="chinese-by-q"),
        ],
    )
    def test_accept_language_negotiated_by_quality(
        self, accept_language: str, expected: str
    ) -> None:
        assert resolve_locale(None, accept_language) == expected

    @pytest.mark.parametrize(
        "accept_language",
        [
            pytest.param(None, id="none"),
            pytest.param("", id="empty"),
            pytest.param("   ", id="blank"),
        ],
    )
    def test_no_accept_language_gives_auto(self, accept_language: str | None) -> None:
        assert resolve_locale(None, accept_language) == "auto"

    def test_explicit_locale_wins_over_accept_language(self) -> None:
        assert resolve_locale("ja", "fr-CH,fr;q=0.9") == "ja"
        assert resolve_locale(None, "fr-CH,fr;q=0.9") == "fr"
