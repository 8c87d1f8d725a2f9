"""The return-URL allowlist: entry parsing and the attacks an open redirect invites."""

import pytest

from portal_service.portal.return_urls import MAX_URL_LENGTH, ReturnUrlAllowlist

ENTRIES = [
    "https://app.example.com/billing",
    "https://app.example.com:8443",
    "http://localhost:3000",
    "myapp://",
    "partner://callback/done",
    "https://bücher.example",
    "http://[::1]:8080",
]
ALLOWLIST = ReturnUrlAllowlist.from_entries(ENTRIES)


class TestReturnUrlAllowlistFromEntries:
    @pytest.mark.parametrize(
        ("entry", "allowed", "refused"),
        [
            pytest.param(
                "https://app.example.com",
                "https://app.example.com/any/page",
                "https://other.example.com/",
                id="origin-allows-every-path",
            ),
            pytest.param(
                "https://app.example.com/",
                "https://app.example.com/any",
                "http://app.example.com/any",
                id="trailing-slash-origin",
            ),
            pytest.param(
                "https://app.example.com/billing/",
                "https://app.example.com/billing",
                "https://app.example.com/billingx",
                id="trailing-slash-prefix-is-segment-prefix",
            ),
            pytest.param(
                "  https://app.example.com  ",
                "https://app.example.com/",
                "https://app.example.com:444/",
                id="surrounding-whitespace-stripped",
            ),
            pytest.param(
                "HTTPS://App.Example.COM",
                "https://app.example.com/",
                "https://app.example.com.evil.test/",
                id="scheme-and-host-lowercased",
            ),
            pytest.param(
                "https://app.example.com:443",
                "https://app.example.com/",
                "https://app.example.com:8443/",
                id="explicit-default-https-port",
            ),
            pytest.param(
                "http://app.example.com:80/x",
                "http://app.example.com/x",
                "http://app.example.com:8080/x",
                id="explicit-default-http-port",
            ),
            pytest.param(
                "https://bücher.example",
                "https://xn--bcher-kva.example/",
                "https://bucher.example/",
                id="unicode-host-stored-as-punycode",
            ),
            pytest.param(
                "https://xn--bcher-kva.example",
                "https://bücher.example/",
                "https://xn--bcher-kvb.example/",
                id="punycode-host-matches-unicode-url",
            ),
            pytest.param(
                "myapp://",
                "myapp://anything/at/all",
                "otherapp://anything",
                id="custom-scheme-any-host",
            ),
            pytest.param(
                "myapp://callback/done",
                "myapp://callback/done/ok",
                "myapp://callback/other",
                id="custom-scheme-host-and-path",
            ),
            pytest.param(
                "http://[::1]:3000",
                "http://[0:0:0:0:0:0:0:1]:3000/",
                "http://[::2]:3000/",
                id="ipv6-literal-normalised",
            ),
        ],
    )
    def test_valid_entry_allows_matching_and_refuses_other(
        self, entry: str, allowed: str, refused: str
    ) -> None:
        allowlist = ReturnUrlAllowlist.from_entries([entry])

        assert allowlist.allows(allowed)
        assert not allowlist.allows(refused)

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            pytest.param("app.example.com", "expected scheme://", id="no-scheme"),
            pytest.param("//app.example.com", "expected scheme://", id="protocol-relative"),
            pytest.param("/billing", "expected scheme://", id="relative-path"),
            pytest.param(
                "https:app.example.com", "expected scheme://", id="scheme-without-slashes"
            ),
            pytest.param("1app://callback", "expected scheme://", id="scheme-starting-with-digit"),
            pytest.param("https://", "host is required", id="https-without-host"),
            pytest.param("https:///billing", "host is required", id="https-empty-host-with-path"),
            pytest.param("https://user@app.example.com", "userinfo", id="userinfo"),
            pytest.param("https://user:pw@app.example.com", "userinfo", id="userinfo-password"),
            pytest.param("https://app.example.com?next=1", "query or fragment", id="query"),
            pytest.param("https://app.example.com/billing?", "query or fragment", id="empty-query"),
            pytest.param("https://app.example.com#top", "query or fragment", id="fragment"),
            pytest.param("javascript:alert(1)", "expected scheme://", id="javascript-opaque"),
            pytest.param("javascript://app.example.com", "not allowed", id="javascript"),
            pytest.param("JavaScript://app.example.com", "not allowed", id="javascript-mixed-case"),
            pytest.param("data://text/html", "not allowed", id="data"),
            pytest.param("file:///etc/passwd", "not allowed", id="file"),
            pytest.param("vbscript://msgbox", "not allowed", id="vbscript"),
            pytest.param("ftp://files.example.com", "not allowed", id="ftp"),
            pytest.param("intent://scan", "not allowed", id="android-intent"),
            pytest.param("https://app.example.com:99999", "invalid host or port", id="port-range"),
            pytest.param("https://app.example.com:", "invalid host or port", id="empty-port"),
            pytest.param("https://app.example.com:https", "invalid host or port", id="named-port"),
            pytest.param("https://*.example.com", "invalid host or port", id="wildcard-host"),
            pytest.param("https://app.example.com.", "invalid host or port", id="trailing-dot"),
            pytest.param("https://app..example.com", "invalid host or port", id="empty-label"),
            pytest.param("https://faß.de", "invalid host or port", id="idna-deviation-char"),
            pytest.param("https://app example.com", "whitespace", id="space-in-host"),
            pytest.param("https://app.example.com\\billing", "not allowed", id="backslash"),
            pytest.param("https://app.example.com/../admin", "invalid path", id="dot-segment"),
            pytest.param(
                "https://app.example.com/%2e%2e", "invalid path", id="encoded-dot-segment"
            ),
            pytest.param("https://app.example.com//billing", "invalid path", id="empty-segment"),
            pytest.param("https://app.example.com/a%2fb", "invalid path", id="encoded-slash"),
            pytest.param("https://app.example.com/%zz", "invalid path", id="bad-escape"),
            pytest.param("myapp:///callback", "needs a host", id="custom-scheme-path-without-host"),
        ],
    )
    def test_malformed_entry_raises_value_error(self, entry: str, message: str) -> None:
        with pytest.raises(ValueError, match=message) as raised:
            ReturnUrlAllowlist.from_entries([entry])

        assert repr(entry) in str(raised.value)

    def test_blank_entries_are_skipped(self) -> None:
        allowlist = ReturnUrlAllowlist.from_entries(["", "  ", "https://app.example.com"])

        assert len(allowlist.entries) == 1
        assert allowlist.allows("https://app.example.com/")

    def test_one_malformed_entry_rejects_the_whole_list(self) -> None:
        with pytest.raises(ValueError, match="userinfo"):
            ReturnUrlAllowlist.from_entries(["https://app.example.com", "https://u@evil.test"])


class TestReturnUrlAllowlistAllows:
    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("https://app.example.com/billing", id="prefix-itself"),
            pytest.param("https://app.example.com/billing/", id="prefix-trailing-slash"),
            pytest.param("https://app.example.com/billing/x", id="below-prefix"),
            pytest.param("https://app.example.com/billing/a/b/c", id="deep-below-prefix"),
            pytest.param("https://app.example.com/billing?x=1", id="prefix-with-query"),
            pytest.param("https://app.example.com/billing#plans", id="prefix-with-fragment"),
            pytest.param(
                "https://app.example.com/billing?next=%2Fadmin", id="encoded-slash-in-query"
            ),
            pytest.param("https://app.example.com/billing?email=a@b.test", id="at-sign-in-query"),
            pytest.param("https://app.example.com/billing#/x/../y", id="dots-in-fragment"),
            pytest.param("https://app.example.com:443/billing", id="explicit-default-port"),
            pytest.param("HTTPS://APP.EXAMPLE.COM/billing", id="uppercase-scheme-and-host"),
            pytest.param("https://app.example.com/%62illing/x", id="encoded-unreserved-char"),
            pytest.param("https://app.example.com/billing/my%20invoices", id="encoded-space"),
            pytest.param("https://app.example.com/billing/caf%C3%A9", id="encoded-utf8"),
            pytest.param("https://app.example.com/billing/v1.2", id="dot-inside-segment"),
            pytest.param("https://app.example.com/billing/...", id="three-dots-not-dot-segment"),
            pytest.param("https://app.example.com:8443", id="origin-entry-no-path"),
            pytest.param("https://app.example.com:8443/admin", id="origin-entry-any-path"),
            pytest.param("https://app.example.com:8443?x=1", id="origin-entry-query-only"),
            pytest.param("http://localhost:3000", id="localhost"),
            pytest.param("http://localhost:3000/settings", id="localhost-path"),
            pytest.param("http://LOCALHOST:3000/", id="localhost-uppercase"),
            pytest.param("myapp://", id="custom-scheme-bare"),
            pytest.param("myapp://callback", id="custom-scheme-host"),
            pytest.param("myapp://callback/path?state=1", id="custom-scheme-path-query"),
            pytest.param("MYAPP://callback", id="custom-scheme-uppercase"),
            pytest.param("partner://callback/done", id="custom-scheme-prefix"),
            pytest.param("partner://callback/done/ok", id="custom-scheme-below-prefix"),
            pytest.param("https://bücher.example/x", id="unicode-host"),
            pytest.param("https://BÜCHER.example/x", id="unicode-host-uppercase"),
            pytest.param("https://bu\u0308cher.example/x", id="unicode-host-decomposed"),
            pytest.param("https://xn--bcher-kva.example/x", id="punycode-host"),
            pytest.param("https://XN--BCHER-KVA.EXAMPLE/x", id="punycode-host-uppercase"),
            pytest.param("http://[::1]:8080/", id="ipv6"),
            pytest.param("http://[0:0:0:0:0:0:0:1]:8080/x", id="ipv6-uncompressed"),
        ],
    )
    def test_allows_listed_url(self, url: str) -> None:
        assert ALLOWLIST.allows(url)

    @pytest.mark.parametrize(
        "url",
        [
            # Userinfo: browsers go to whatever follows the last @.
            pytest.param("https://app.example.com@evil.test/billing", id="userinfo-host-lookalike"),
            pytest.param("https://user:pw@app.example.com/billing", id="userinfo-password"),
            pytest.param("https://user@app.example.com/billing", id="userinfo-user"),
            pytest.param("https://@app.example.com/billing", id="userinfo-empty"),
            pytest.param("https://app.example.com:8443@evil.test/", id="userinfo-port-lookalike"),
            pytest.param("https://app.example.com%40evil.test/billing", id="encoded-at-in-host"),
            pytest.param(
                "https://app.example.com\uff20evil.test/billing", id="fullwidth-at-in-host"
            ),
            # Backslashes: browsers read them as slashes in http(s) URLs.
            pytest.param("https://app.example.com\\@evil.test/billing", id="backslash-userinfo"),
            pytest.param("https:\\\\evil.test/billing", id="backslash-authority"),
            pytest.param("https://app.example.com/billing\\..\\admin", id="backslash-path"),
            pytest.param("https://app.example.com/billing?next=\\evil", id="backslash-query"),
            pytest.param("https://app.example.com/billing#\\evil", id="backslash-fragment"),
            pytest.param("https://app.example.com/billing/%5c..%5cadmin", id="encoded-backslash"),
            # Whitespace and control characters: browsers strip or trim them first.
            pytest.param(" https://app.example.com/billing", id="leading-space"),
            pytest.param("https://app.example.com/billing ", id="trailing-space"),
            pytest.param("https://app.example.com/bil\tling", id="tab"),
            pytest.param("https://app.example.com/billing\n", id="newline"),
            pytest.param("https://app.example.com/billing\r\nX: y", id="crlf"),
            pytest.param("https://app.example.com/billing\x00", id="nul"),
            pytest.param("https://app.example.com/billing\x7f", id="del"),
            pytest.param("https://app.example.com/billing\u00a0", id="nbsp"),
            pytest.param("https://app.example.com/billing\u2028", id="line-separator"),
            pytest.param("https://app.example.com/billing/\u202etxt.exe", id="bidi-override"),
            pytest.param("https://app\u200b.example.com/billing", id="zero-width-space-in-host"),
            pytest.param("https://app.example.com/billing/%00", id="encoded-nul"),
            pytest.param("https://app.example.com/billing/%0d%0aSet-Cookie:x", id="encoded-crlf"),
            # Relative and protocol-relative URLs resolve against whatever page reads them.
            pytest.param("//evil.test", id="protocol-relative"),
            pytest.param("//app.example.com/billing", id="protocol-relative-listed-host"),
            pytest.param("///evil.test", id="triple-slash"),
            pytest.param("/billing", id="relative-absolute-path"),
            pytest.param("billing/x", id="relative-path"),
            pytest.param("?x=1", id="query-only"),
            pytest.param("", id="empty"),
            pytest.param("https:evil.test", id="scheme-without-slashes"),
            pytest.param("https:/evil.test", id="scheme-single-slash"),
            pytest.param("https:///evil.test", id="https-empty-host"),
            # Schemes.
            pytest.param("javascript:alert(1)", id="javascript"),
            pytest.param(
                "javascript://app.example.com/billing%0aalert(1)", id="javascript-slashes"
            ),
            pytest.param("JaVaScRiPt:alert(1)", id="javascript-mixed-case"),
            pytest.param("data:text/html,<script>alert(1)</script>", id="data"),
            pytest.param("data://app.example.com/billing", id="data-slashes"),
            pytest.param("file:///etc/passwd", id="file"),
            pytest.param("vbscript:msgbox(1)", id="vbscript"),
            pytest.param("ftp://app.example.com/billing", id="unlisted-special-scheme"),
            pytest.param("otherapp://callback", id="unlisted-custom-scheme"),
            pytest.param("http://app.example.com/billing", id="http-for-https-entry"),
            pytest.param("https://localhost:3000/", id="https-for-http-entry"),
            pytest.param("ws://localhost:3000/", id="ws-for-http-entry"),
            # Hosts.
            pytest.param(
                "https://app.example.com.evil.test/billing", id="listed-host-as-subdomain"
            ),
            pytest.param("https://evilapp.example.com/billing", id="host-suffix"),
            pytest.param("https://billing.app.example.com/billing", id="subdomain-of-listed-host"),
            pytest.param("https://example.com/billing", id="parent-domain"),
            pytest.param("https://evil.test/app.example.com/billing", id="listed-host-in-path"),
            pytest.param(
                "https://evil.test?https://app.example.com/billing", id="listed-url-in-query"
            ),
            pytest.param(
                "https://evil.test#https://app.example.com/billing", id="listed-url-in-fragment"
            ),
            pytest.param("https://app.example.com./billing", id="trailing-dot"),
            pytest.param("https://app.example.com../billing", id="double-trailing-dot"),
            pytest.param("https://app%2eexample.com/billing", id="encoded-dot-in-host"),
            pytest.param("https://app\u3002example\u3002com/billing", id="ideographic-dots"),
            pytest.param(
                "https://evil.test\uff0fapp.example.com/billing", id="fullwidth-slash-in-host"
            ),
            pytest.param("https://\u0430pp.example.com/billing", id="cyrillic-homograph"),
            pytest.param("https://[::1]:8080/", id="ipv6-wrong-scheme"),
            pytest.param("http://[::1%25lo]:8080/", id="ipv6-zone-id"),
            pytest.param("http://[::1]x:8080/", id="ipv6-trailing-garbage"),
            # Ports.
            pytest.param("https://app.example.com:444/billing", id="other-port"),
            pytest.param("https://app.example.com:8443x/billing", id="port-garbage"),
            pytest.param("https://app.example.com:443.evil.test/billing", id="port-lookalike-host"),
            pytest.param("https://app.example.com:/billing", id="empty-port"),
            pytest.param("https://app.example.com:99999/billing", id="port-out-of-range"),
            pytest.param("https://app.example.com:-443/billing", id="negative-port"),
            pytest.param("http://localhost/", id="missing-port"),
            pytest.param("http://localhost:80/", id="default-port-not-listed"),
            pytest.param("partner://callback:1/done", id="custom-scheme-port"),
            # Paths.
            pytest.param("https://app.example.com/billingx", id="partial-segment"),
            pytest.param("https://app.example.com/billing.evil", id="partial-segment-dot"),
            pytest.param("https://app.example.com/Billing", id="path-case-differs"),
            pytest.param("https://app.example.com/", id="root-above-prefix"),
            pytest.param("https://app.example.com", id="no-path-above-prefix"),
            pytest.param("https://app.example.com?x=/billing", id="prefix-in-query"),
            pytest.param("https://app.example.com/admin", id="sibling"),
            pytest.param("https://app.example.com/billing/../admin", id="dot-dot"),
            pytest.param("https://app.example.com/billing/..", id="trailing-dot-dot"),
            pytest.param("https://app.example.com/billing/./x", id="single-dot"),
            pytest.param("https://app.example.com/billing/%2e%2e/admin", id="encoded-dot-dot"),
            pytest.param(
                "https://app.example.com/billing/%2E%2E/admin", id="encoded-dot-dot-upper"
            ),
            pytest.param("https://app.example.com/billing/.%2e/admin", id="half-encoded-dot-dot"),
            pytest.param("https://app.example.com/billing/%2e/x", id="encoded-single-dot"),
            pytest.param("https://app.example.com/billing%2f..%2fadmin", id="encoded-slashes"),
            pytest.param(
                "https://app.example.com/billing%2F..%2Fadmin", id="encoded-slashes-upper"
            ),
            pytest.param("https://app.example.com/billing/..%2fadmin", id="dot-dot-encoded-slash"),
            pytest.param(
                "https://app.example.com/billing/%252e%252e/admin", id="double-encoded-dot-dot"
            ),
            pytest.param(
                "https://app.example.com/billing%252f..%252fadmin", id="double-encoded-slash"
            ),
            pytest.param(
                "https://app.example.com/billing/%25252525252e%25252525252e/admin",
                id="deeply-nested-encoding",
            ),
            pytest.param("https://app.example.com/billing/..;/admin", id="dot-dot-path-parameter"),
            pytest.param(
                "https://app.example.com/billing/%c0%ae%c0%ae/admin", id="overlong-utf8-dots"
            ),
            pytest.param(
                "https://app.example.com/billing/%ef%bc%8e%ef%bc%8e/admin", id="fullwidth-dots"
            ),
            pytest.param("https://app.example.com/billing//evil.test", id="empty-segment"),
            pytest.param("https://app.example.com//billing", id="leading-empty-segment"),
            pytest.param("https://app.example.com/billing/%", id="lone-percent"),
            pytest.param("https://app.example.com/billing/%zz", id="bad-escape"),
            pytest.param("https://app.example.com/billing/café", id="raw-non-ascii-path"),
            pytest.param("https://app.example.com/billing?q=café", id="raw-non-ascii-query"),
            pytest.param('https://app.example.com/billing?x="><script>', id="raw-quote-and-angle"),
            pytest.param("partner://callback/donex", id="custom-scheme-partial-segment"),
            pytest.param("partner://callback/other", id="custom-scheme-other-path"),
            pytest.param("partner://evil/done", id="custom-scheme-other-host"),
            pytest.param("partner:///done", id="custom-scheme-empty-host"),
        ],
    )
    def test_refuses_unlisted_or_ambiguous_url(self, url: str) -> None:
        assert not ALLOWLIST.allows(url)

    def test_empty_allowlist_allows_nothing(self) -> None:
        allowlist = ReturnUrlAllowlist.from_entries([])

        assert not allowlist.allows("https://app.example.com/billing")
        assert not allowlist.allows("myapp://callback")

    def test_custom_scheme_refused_unless_listed(self) -> None:
        allowlist = ReturnUrlAllowlist.from_entries(["https://app.example.com"])

        assert allowlist.allows("https://app.example.com/")
        assert not allowlist.allows("myapp://callback")

    def test_idna_deviation_character_does_not_match_its_ascii_folding(self) -> None:
        # Python's IDNA 2003 codec folds ß to "ss"; browsers send faß.de to xn--fa-hia.de.
        allowlist = ReturnUrlAllowlist.from_entries(["https://fass.de"])

        assert allowlist.allows("https://fass.de/")
        assert not allowlist.allows("https://faß.de/")
        assert not allowlist.allows("https://FAẞ.de/")

    @pytest.mark.parametrize(
        ("extra", "allowed"),
        [
            pytest.param(0, True, id="at-limit"),
            pytest.param(1, False, id="over-limit"),
        ],
    )
    def test_length_limit(self, extra: int, allowed: bool) -> None:
        base = "https://app.example.com/billing/"
        url = base + "a" * (MAX_URL_LENGTH - len(base) + extra)

        assert ALLOWLIST.allows(url) is allowed
