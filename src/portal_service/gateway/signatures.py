"""Stripe webhook signature checks (`Stripe-Signature`, scheme v1) with a two-sided timestamp window."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

# Bounded so a hostile header cannot make int() chew on thousands of digits;
# ASCII only because str.isdigit() and int() also accept other scripts' digits.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class InvalidSignatureError(Exception):
    """The webhook body is not proven to come from Stripe; the message never holds a secret."""


def _digest(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, *, timestamp: int) -> str:
    return f"t={timestamp},v1={_digest(payload, secret, timestamp)}"


def _parse(header: str) -> tuple[int, list[str]]:
    timestamps: list[str] = []
    v1: list[str] = []
    for element in header.split(","):
        key, sep, value = element.strip().partition("=")
        if not sep or not key:
            raise InvalidSignatureError("malformed Stripe-Signature header")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            v1.append(value)
        # v0 is Stripe's test-only scheme: honouring it would allow a downgrade, so it
        # is skipped like any scheme Stripe may add later.
    if len(timestamps) != 1:
        # Two timestamps make it ambiguous which one was signed.
        raise InvalidSignatureError("Stripe-Signature header needs exactly one timestamp")
    if not _TIMESTAMP.fullmatch(timestamps[0]):
        raise InvalidSignatureError("Stripe-Signature timestamp is not an integer")
    if not v1:
        raise InvalidSignatureError("Stripe-Signature header has no v1 signature")
    return int(timestamps[0]), v1


def verify_signature(
    payload: bytes, header: str | None, secrets: Sequence[str], *, tolerance: int, now: int
) -> None:
    if tolerance < 0:
        raise ValueError("tolerance must not be negative")
    if header is None or not header.strip():
        raise InvalidSignatureError("missing Stripe-Signature header")
    timestamp, candidates = _parse(header)
    # An empty secret would be an HMAC key anyone can use (e.g. from a stray comma in
    # the configuration), so it never verifies anything.
    keys = [secret for secret in secrets if secret]
    if not keys:
        raise InvalidSignatureError("no webhook secret configured")
    expected = [_digest(payload, key, timestamp).encode("ascii") for key in keys]
    # Compare bytes: compare_digest raises TypeError on non-ASCII str, and the header
    # is attacker-controlled. Every pair is compared so timing does not reveal which
    # secret (or which v1 position) matched.
    matched = False
    for candidate in candidates:
        raw = candidate.encode("utf-8", "surrogatepass")
        for digest in expected:
            matched |= hmac.compare_digest(raw, digest)
    if not matched:
        raise InvalidSignatureError("no v1 signature matches a configured secret")
    # Checked in both directions: a timestamp far in the future would otherwise let a
    # captured delivery be replayed until that moment (stripe.Webhook only checks age).
    if abs(now - timestamp) > tolerance:
        when = "in the future" if timestamp > now else "old"
        raise InvalidSignatureError(
            f"Stripe-Signature timestamp is {abs(now - timestamp)} s {when}, "
            f"beyond the {tolerance} s tolerance"
        )
