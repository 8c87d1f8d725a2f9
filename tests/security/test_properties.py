"""Property-based tests (hypothesis, fixed seed, bounded examples) of the hostile-input
parsers: the Stripe-Signature check, the return-URL allowlist and Accept-Language.

Each property is checked against an independent oracle (other parsers, a table of
expected mappings), with a positive control so that a property cannot hold vacuously.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal_service.gateway.signatures import InvalidSignatureError, _digest, sign, verify_signature
from portal_service.portal.locales import PORTAL_LOCALES, resolve_locale
from portal_service.portal.return_urls import ReturnUrlAllowlist

BOUNDED = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # a fixed seed: the same examples on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NOW = 1_760_000_000
TOLERANCE = 300
SECRETS = ["whsec_current", "whsec_rolled"]

payloads = st.binary(max_size=256)
secrets_ = st.text(st.characters(codec="ascii", min_codepoint=33), min_size=1, max_size=40)


def verifies(payload: bytes, header: str | None, secrets: list[str]) -> bool:
    try:
        verify_signature(payload, header, secrets, tolerance=TOLERANCE, now=NOW)
    except InvalidSignatureError:
        return False
    return True


@pytest.mark.sqlite
class TestSignatureProperties:
    @BOUNDED
    @given(payload=payloads, secret=secrets_, skew=st.integers(-TOLERANCE, TOLERANCE))
    def test_a_signature_made_with_any_configured_secret_verifies(
        self, payload: bytes, secret: str, skew: int
    ) -> None:
        header = sign(payload, secret, timestamp=NOW + skew)
        assert verifies(payload, header, ["whsec_other", secret])

    @BOUNDED
    @given(payload=payloads, other=payloads, secret=secrets_)
    def test_another_body_never_verifies(self, payload: bytes, other: bytes, secret: str) -> None:
        header = sign(payload, secret, timestamp=NOW)
        assert verifies(other, header, [secret]) == (other == payload)

    @BOUNDED
    @given(payload=payloads, secret=secrets_, wrong=secrets_)
    def test_a_secret_not_configured_never_verifies(
        self, payload: bytes, secret: str, wrong: str
    ) -> None:
        header = sign(payload, wrong, timestamp=NOW)
        assert verifies(payload, header, [secret]) == (secret == wrong)

    @BOUNDED
    @given(
        payload=payloads,
        skew=st.one_of(st.integers(TOLERANCE + 1, 10**9), st.integers(-(10**9), -(TOLERANCE + 1))),
    )
    def test_a_timestamp_outside_the_window_either_way_never_verifies(
        self, payload: bytes, skew: int
    ) -> None:
        assert not verifies(payload, sign(payload, SECRETS[0], timestamp=NOW + skew), SECRETS)

    @BOUNDED
    @given(
        payload=payloads,
        junk=st.lists(
            st.sampled_from(
                ["v0=abc", "v1=deadbeef", "v2=00", "x=1", "v1=", "v0=" + "0" * 64, "v1=ZZ"]
            ),
            max_size=4,
        ),
        position=st.integers(0, 5),
    )
    def test_extra_elements_neither_break_nor_replace_a_valid_v1(
        self, payload: bytes, junk: list[str], position: int
    ) -> None:
        valid = sign(payload, SECRETS[1], timestamp=NOW).split(",")
        elements = [*junk]
        elements.insert(min(position, len(elements)), valid[1])
        header = ",".join([valid[0], *elements])
        assert verifies(payload, header, SECRETS)
        # The same header without the real v1 never verifies, whatever else it carries.
        assert not verifies(payload, ",".join([valid[0], *junk]), SECRETS)

    @BOUNDED
    @given(payload=payloads)
    def test_a_v0_signature_alone_is_never_enough(self, payload: bytes) -> None:
        digest = _digest(payload, SECRETS[0], NOW)
        assert not verifies(payload, f"t={NOW},v0={digest}", SECRETS)
        assert verifies(payload, f"t={NOW},v0={digest},v1={digest}", SECRETS)

    @BOUNDED
    @given(
        header=st.one_of(
            st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
        )
    )
    def test_any_header_text_is_refused_cleanly(self, header: str) -> None:
        # Never an exception other than the refusal, never a pass without the HMAC.
        assert not verifies(b"{}", header, SECRETS)

    @BOUNDED
    @given(header=st.text(st.sampled_from("tv01=,;x9 "), max_size=60))
    def test_near_miss_headers_are_refused_cleanly(self, header: str) -> None:
        assert not verifies(b"{}", header, SECRETS)


ALLOWLIST = ReturnUrlAllowlist.from_entries(
    ["https://app.example.com/billing", "https://app.example.com:8443", "myapp://"]
)
SCHEMES = ["https://"] * 30 + [
    "http://",
    "HTTPS://",
    "https:",
    "https:/",
    "https:///",
    "myapp://",
    "javascript://",
    "//",
    "",
]
HOSTS = ["app.example.com"] * 24 + [
    "APP.Example.com",
    "app.example.com.",
    "evil.test",
    "app.example.com.evil.test",
    "app.example.com@evil.test",
    "user:pass@app.example.com",
    "evil.test#@app.example.com",
    "evil.test?@app.example.com",
    "[::1]",
    "\uff41\uff50\uff50.example.com",
    "app.example.com%2eevil.test",
    "",
]
PORTS = (
    [""] * 12 + [":8443"] * 3 + [":8443", ":443", ":80", ":", ":08443", ":8443@evil.test", ":99999"]
)
SEGMENTS = ["/billing"] * 4 + [
    "/billingx",
    "/billing/",
    "/invoices",
    "/x",
    "/..",
    "/.",
    "/%2e%2e",
    "/%2E.",
    "/.%2e",
    "/%252e%252e",
    "/%2f",
    "/%5c",
    "\\",
    "//",
    "//evil.test",
    "/..;",
    "/%00",
    "/%0d%0a",
    "/%c0%ae%c0%ae",
    "/ ",
    "/\t",
    "/é",
    "/%e2%80%ae",
]
TAILS = [""] * 4 + ["?next=https://evil.test", "#@evil.test", "?a=1#b", "#", "?"]
urls = st.builds(
    lambda scheme, host, port, first, path, tail: (
        scheme + host + port + first + "".join(path) + tail
    ),
    st.sampled_from(SCHEMES),
    st.sampled_from(HOSTS),
    st.sampled_from(PORTS),
    st.sampled_from(["/billing"] * 3 + [""]),
    st.lists(st.sampled_from(SEGMENTS), max_size=5),
    st.sampled_from(TAILS),
)


def oracle_allows(url: str) -> bool:
    """What the allowlist means, judged by two other parsers that must both agree."""
    if "\\" in url or any(ch.isspace() for ch in url):
        return False
    split = urlsplit(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    scheme = split.scheme.lower()
    if scheme == "myapp":
        return parsed.scheme == "myapp" and "@" not in split.netloc
    if scheme != "https" or parsed.scheme != "https":
        return False
    if split.username is not None or split.password is not None or parsed.userinfo:
        return False
    if split.hostname != "app.example.com" or parsed.host != "app.example.com":
        return False
    port = split.port or 443
    if port != (parsed.port or 443):
        return False
    if port == 8443:
        return True
    if port != 443:
        return False
    # The path as a server would finally read it: decoded until stable, dots resolved.
    path = split.path
    for _ in range(5):
        path = unquote(path)
    resolved = posixpath.normpath(path) if path else "/"
    return resolved == "/billing" or resolved.startswith("/billing/")


@pytest.mark.sqlite
class TestReturnUrlProperties:
    @BOUNDED
    @given(url=urls)
    def test_no_generated_url_outside_the_allowlist_is_accepted(self, url: str) -> None:
        if ALLOWLIST.allows(url):
            assert oracle_allows(url), url

    @BOUNDED
    @given(url=st.text(max_size=80).map(lambda tail: "https://app.example.com/billing" + tail))
    def test_any_suffix_after_an_allowed_prefix_stays_inside_it(self, url: str) -> None:
        if ALLOWLIST.allows(url):
            assert oracle_allows(url), url

    @BOUNDED
    @given(
        segments=st.lists(st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True), max_size=4),
        query=st.sampled_from(["", "?tab=invoices", "#top"]),
    )
    def test_plain_urls_under_an_allowed_prefix_are_accepted(
        self, segments: list[str], query: str
    ) -> None:
        # The positive control: the property above is not satisfied by refusing everything.
        url = "https://app.example.com/billing" + "".join("/" + s for s in segments) + query
        assert ALLOWLIST.allows(url)
        assert ALLOWLIST.allows("https://app.example.com:8443" + "".join("/" + s for s in segments))


# Tag → the portal locale it must give (None: not a portal language, never chosen).
LANGUAGE_TABLE: dict[str, str | None] = {
    "fr": "fr",
    "fr-CH": "fr",
    "FR-ch": "fr",
    "fr-CA": "fr-CA",
    "de": "de",
    "de-AT": "de",
    "en": "en",
    "en-GB": "en-GB",
    "en-US": "en",
    "es": "es",
    "es-MX": "es-419",
    "es-ES": "es",
    "pt": "pt",
    "pt-PT": "pt",
    "pt-BR": "pt-BR",
    "zh": "zh",
    "zh-Hant-TW": "zh-TW",
    "zh-Hans-CN": "zh",
    "zh-HK": "zh-HK",
    "nb": "nb",
    "no": "nb",
    "ja": "ja",
    "xx": None,
    "tlh": None,
    "*": None,
    "i-klingon": None,
    "x-private": None,
}
QUALITIES = ["", ";q=1", ";q=0.9", ";q=0.5", ";q=0.001", ";q=0", ";q=0.000", ";q=2", ";q=abc"]


def quality_of(param: str) -> float | None:
    value = param.removeprefix(";q=") if param else "1"
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0 <= number <= 1 else None


@pytest.mark.sqlite
class TestAcceptLanguageProperties:
    @BOUNDED
    @given(
        entries=st.lists(
            st.tuples(st.sampled_from(sorted(LANGUAGE_TABLE)), st.sampled_from(QUALITIES)),
            max_size=6,
        )
    )
    def test_the_best_acceptable_portal_language_wins(self, entries: list[tuple[str, str]]) -> None:
        header = ", ".join(tag + q for tag, q in entries)
        candidates = []
        for order, (tag, param) in enumerate(entries):
            quality = quality_of(param)
            locale = LANGUAGE_TABLE[tag]
            if quality and locale is not None:
                candidates.append((-quality, order, locale))
        expected = min(candidates)[2] if candidates else "auto"
        assert resolve_locale(None, header) == expected, header

    @BOUNDED
    @given(header=st.text(max_size=120))
    def test_any_header_gives_a_portal_locale_and_never_raises(self, header: str) -> None:
        assert resolve_locale(None, header) in PORTAL_LOCALES

    @BOUNDED
    @given(locale=st.sampled_from(sorted(PORTAL_LOCALES)), header=st.text(max_size=40))
    def test_an_explicit_locale_always_beats_the_header(self, locale: str, header: str) -> None:
        assert resolve_locale(locale.upper(), header) == locale
