"""Which URLs the portal may send a customer back to (PORTAL_RETURN_URL_ALLOWLIST).

Anything a browser or mobile OS might read differently than we do is refused, not guessed.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MAX_URL_LENGTH = 2048

_DEFAULT_PORTS = {"https": 443, "http": 80}
_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
# Underscores are not valid in DNS hostnames but browsers accept them (docker hosts).
_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_ESCAPE_RE = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# Schemes that run code, read local data or are special to browsers: never a return URL,
# even if someone lists them.
_FORBIDDEN_SCHEMES = frozenset(
    {
        "javascript",
        "vbscript",
        "data",
        "file",
        "blob",
        "about",
        "filesystem",
        "view-source",
        "ftp",
        "ws",
        "wss",
        "mailto",
        "tel",
        "sms",
        "intent",
        "chrome",
        "chrome-extension",
        "moz-extension",
        "ms-settings",
        "jar",
    }
)

# Browsers serialise these percent-encoded, so a raw one means the URL was not produced
# by a browser and may be aimed at whoever renders it.
_NEVER_RAW = frozenset('"<>\\')

# Bounded so that a deeply nested %25 encoding cannot keep the decoder busy.
_MAX_DECODE_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int | None
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    scheme: str
    host: str | None  # None: any host of a listed custom scheme (`myapp://`)
    port: int | None
    path: tuple[str, ...]

    def matches(self, target: _Target) -> bool:
        if target.scheme != self.scheme:
            return False
        if self.host is not None and (target.host, target.port) != (self.host, self.port):
            return False
        return target.path[: len(self.path)] == self.path


@dataclass(frozen=True, slots=True)
class ReturnUrlAllowlist:
    entries: tuple[_Entry, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> ReturnUrlAllowlist:
        parsed = []
        for raw in entries:
            text = raw.strip()
            # A trailing comma in PORTAL_RETURN_URL_ALLOWLIST should not break start-up.
            if text:
                parsed.append(_parse_entry(text))
        return cls(entries=tuple(parsed))

    def allows(self, url: str) -> bool:
        target = _parse_target(url)
        if target is None:
            return False
        return any(entry.matches(target) for entry in self.entries)


def _parse_entry(text: str) -> _Entry:
    problem = _check_characters(text)
    if problem:
        raise ValueError(f"return URL allowlist entry {text!r}: {problem}")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise ValueError(
            f"return URL allowlist entry {text!r}: expected scheme://host[:port][/path], "
            "e.g. https://app.example.com/billing or myapp://"
        )
    if scheme in _FORBIDDEN_SCHEMES:
        raise ValueError(f"return URL allowlist entry {text!r}: scheme {scheme!r} is not allowed")
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"return URL allowlist entry {text!r}: a query or fragment cannot be allowlisted"
        )
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        raise ValueError(f"return URL allowlist entry {text!r}: userinfo (@) is not allowed")
    special = scheme in _DEFAULT_PORTS
    if not authority:
        if special:
            raise ValueError(f"return URL allowlist entry {text!r}: a host is required")
        if slash:
            raise ValueError(
                f"return URL allowlist entry {text!r}: a path needs a host (myapp://host/path)"
            )
        return _Entry(scheme=scheme, host=None, port=None, path=())
    host_port = _parse_authority(authority, scheme)
    if host_port is None:
        raise ValueError(f"return URL allowlist entry {text!r}: invalid host or port")
    segments = _parse_path(slash + path)
    if segments is None:
        raise ValueError(
            f"return URL allowlist entry {text!r}: invalid path (empty or dot segments, "
            "encoded slashes or malformed percent-encoding)"
        )
    host, port = host_port
    return _Entry(scheme=scheme, host=host, port=port, path=segments)


def _parse_target(url: str) -> _Target | None:
    if len(url) > MAX_URL_LENGTH or _check_characters(url):
        return None
    # Requiring "scheme://" rejects relative and protocol-relative URLs, and the
    # `https:evil.test` / `https:/evil.test` forms that browsers quietly repair.
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME_RE.fullmatch(scheme) or scheme in _FORBIDDEN_SCHEMES:
        return None
    end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter)
        if index != -1:
            end = min(end, index)
    authority, remainder = rest[:end], rest[end:]
    if "@" in authority:
        return None
    if authority:
        host_port = _parse_authority(authority, scheme)
        if host_port is None:
            return None
        host, port = host_port
    elif scheme in _DEFAULT_PORTS:
        return None  # `https:///evil.test` is read by browsers as https://evil.test
    else:
        host, port = "", None
    # Only the host may be an IRI; everywhere else browsers would percent-encode it first.
    if not remainder.isascii():
        return None
    segments = _parse_path(remainder.partition("#")[0].partition("?")[0])
    if segments is None:
        return None
    return _Target(scheme=scheme, host=host, port=port, path=segments)


def _check_characters(text: str) -> str | None:
    for ch in text:
        if ch in _NEVER_RAW:
            return f"character {ch!r} is not allowed"
        # Browsers strip tabs and newlines and trim spaces before parsing, so what we
        # check would differ from what they follow; format characters hide text.
        if ch.isspace() or unicodedata.category(ch)[0] in "CZ":
            return "whitespace and control characters are not allowed"
    return None


def _parse_authority(authority: str, scheme: str) -> tuple[str, int | None] | None:
    if authority.startswith("["):
        bracket = authority.find("]")
        if bracket == -1:
            return None
        host = _normalise_ipv6(authority[1:bracket])
        after = authority[bracket + 1 :]
        if after and not after.startswith(":"):
            return None
        port_text: str | None = after[1:] if after else None
    else:
        host_text, colon, port_part = authority.partition(":")
        host = _normalise_hostname(host_text)
        port_text = port_part if colon else None
    if host is None:
        return None
    port = _DEFAULT_PORTS.get(scheme)
    if port_text is not None:
        # An empty port (`host:`) is accepted by browsers but never written by a client
        # on purpose; refusing it keeps the comparison simple.
        if not _PORT_RE.fullmatch(port_text) or int(port_text) > 65535:
            return None
        port = int(port_text)
    return host, port


def _normalise_ipv6(text: str) -> str | None:
    if "%" in text:  # zone ids mean nothing to a remote browser
        return None
    try:
        return f"[{ipaddress.IPv6Address(text).compressed}]"
    except ValueError:
        return None


def _normalise_hostname(text: str) -> str | None:
    host = text.lower() if text.isascii() else _to_punycode(text)
    if host is None:
        return None
    # Empty labels rule out the trailing dot (`app.example.com.`) and `..`.
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    return host


def _to_punycode(text: str) -> str | None:
    # Python's codec is IDNA 2003, browsers use UTS 46: they disagree on characters the
    # older standard maps away (sharp s to "ss", ZWJ, final sigma) and both fold fullwidth
    # forms into `/` or `@`. Only a host that round-trips unchanged is spelled the same
    # by both and carries no hidden delimiter, so only that passes.
    expected = unicodedata.normalize("NFC", text).lower()
    try:
        ascii_host = expected.encode("idna").decode("ascii")
        if ascii_host.encode("ascii").decode("idna") != expected:
            return None
    except UnicodeError:
        return None
    return ascii_host.lower()


# Decoded segments for prefix matching, or None when a server could read the path as
# somewhere else.
def _parse_path(path: str) -> tuple[str, ...] | None:
    if not path or path == "/":
        return ()
    if not path.startswith("/"):
        return None
    raw_segments = path[1:].split("/")
    # A trailing slash is the same place for prefix matching: `/billing/` is under `/billing`.
    if raw_segments[-1] == "":
        raw_segments.pop()
    segments = []
    for raw in raw_segments:
        segment = _decode_segment(raw)
        if segment is None:
            return None
        segments.append(segment)
    return tuple(segments)


def _decode_segment(raw: str) -> str | None:
    # `//` would let a path read as a protocol-relative URL wherever it is re-joined.
    if not raw or not raw.isascii() or _BAD_ESCAPE_RE.search(raw):
        return None
    once = _percent_decode(raw)
    if once is None:
        return None
    # Servers and proxies differ in how many times they decode and whether they fold
    # Unicode, so judge the segment in every form it might take along the way.
    forms = [once]
    current = once
    for _ in range(_MAX_DECODE_ROUNDS):
        if not _ESCAPE_RE.search(current):
            break
        decoded = _percent_decode(current)
        if decoded is None:
            return None
        current = decoded
        forms.append(current)
    if _ESCAPE_RE.search(current):
        return None
    forms.append(unicodedata.normalize("NFKC", current))
    if any(_is_unsafe_segment(form) for form in forms):
        return None
    return once


def _percent_decode(text: str) -> str | None:
    try:
        # Strict UTF-8 refuses overlong forms such as %c0%ae, an old way to spell `.`.
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _is_unsafe_segment(segment: str) -> bool:
    # Encoded spaces or quotes are ordinary path characters; separators and controls
    # (a NUL or CR/LF that truncates or splits the path downstream) are not.
    if "/" in segment or "\\" in segment:
        return True
    if any(unicodedata.category(ch) == "Cc" for ch in segment):
        return True
    # `..;` is how Tomcat-style path parameters smuggle a parent reference.
    name = segment.partition(";")[0]
    return name in {".", ".."}
