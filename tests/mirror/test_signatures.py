import hashlib
import hmac

import pytest

from portal_service.mirror.signatures import InvalidSignatureError, sign, verify_signature

NOW = 1_763_000_000
TOLERANCE = 300
OLD_SECRET = "whsec_old_0123456789abcdef"
NEW_SECRET = "whsec_new_fedcba9876543210"
BODY = b'{"id":"evt_1","object":"event","type":"customer.updated"}'


def v1(secret: str, timestamp: int, body: bytes = BODY) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class TestSign:
    def test_builds_a_v1_header_over_timestamp_and_body(self) -> None:
        assert sign(BODY, NEW_SECRET, timestamp=NOW) == f"t={NOW},v1={v1(NEW_SECRET, NOW)}"

    def test_signature_is_lower_case_hex_sha256(self) -> None:
        digest = sign(BODY, NEW_SECRET, timestamp=NOW).split("v1=")[1]
        assert len(digest) == 64
        assert digest == digest.lower()
        int(digest, 16)


class TestVerifySignature:
    @pytest.mark.parametrize(
        ("header", "secrets"),
        [
            pytest.param(f"t={NOW},v1={v1(NEW_SECRET, NOW)}", [NEW_SECRET], id="valid"),
            pytest.param(
                f"t={NOW},v1={v1(OLD_SECRET, NOW)},v1={v1(NEW_SECRET, NOW)}",
                [NEW_SECRET],
                id="rotation-second-v1-matches",
            ),
            pytest.param(
                f"t={NOW},v1={v1(NEW_SECRET, NOW)}",
                [OLD_SECRET, NEW_SECRET],
                id="rotation-second-configured-secret",
            ),
            pytest.param(
                f"t={NOW},v1={v1(NEW_SECRET, NOW)},v0={'0' * 64}",
                [NEW_SECRET],
                id="v0-alongside-valid-v1-ignored",
            ),
            pytest.param(
                f"t={NOW},v1={v1(NEW_SECRET, NOW)},v9=future-scheme",
                [NEW_SECRET],
                id="unknown-scheme-ignored",
            ),
            pytest.param(
                f"t={NOW - TOLERANCE},v1={v1(NEW_SECRET, NOW - TOLERANCE)}",
                [NEW_SECRET],
                id="exactly-tolerance-old",
            ),
            pytest.param(
                f"t={NOW + TOLERANCE},v1={v1(NEW_SECRET, NOW + TOLERANCE)}",
                [NEW_SECRET],
                id="exactly-tolerance-ahead",
            ),
        ],
    )
    def test_accepts(self, header: str, secrets: list[str]) -> None:
        verify_signature(BODY, header, secrets, tolerance=TOLERANCE, now=NOW)

    @pytest.mark.parametrize(
        ("header", "body", "secrets", "reason"),
        [
            pytest.param(
                f"t={NOW},v0={v1(NEW_SECRET, NOW)}", BODY, [NEW_SECRET], "no v1", id="v0-only"
            ),
            pytest.param(
                f"t={NOW},v1={v1(OLD_SECRET, NOW)}",
                BODY,
                [NEW_SECRET],
                "no v1 signature matches",
                id="wrong-secret",
            ),
            pytest.param(
                f"t={NOW + 600},v1={v1(NEW_SECRET, NOW + 600)}",
                BODY,
                [NEW_SECRET],
                "600 s in the future",
                id="ten-minutes-ahead",
            ),
            pytest.param(
                f"t={NOW - 600},v1={v1(NEW_SECRET, NOW - 600)}",
                BODY,
                [NEW_SECRET],
                "600 s old",
                id="ten-minutes-old",
            ),
            pytest.param(
                f"t={NOW},v1={v1(NEW_SECRET, NOW)}",
                BODY.replace(b"customer.updated", b"customer.deleted"),
                [NEW_SECRET],
                "no v1 signature matches",
                id="body-tampered",
            ),
            pytest.param(
                f"t={NOW + 1},v1={v1(NEW_SECRET, NOW)}",
                BODY,
                [NEW_SECRET],
                "no v1 signature matches",
                id="timestamp-swapped",
            ),
            pytest.param(
                f"t={NOW},v1={v1(NEW_SECRET, NOW).upper()}",
                BODY,
                [NEW_SECRET],
                "no v1 signature matches",
                id="upper-case-hex",
            ),
            pytest.param(
                f"t={NOW},v1={v1(NEW_SECRET, NOW)}", BODY, [], "no webhook secret", id="no-secrets"
            ),
            pytest.param(
                f"t={NOW},v1={v1('', NOW)}",
                BODY,
                ["", NEW_SECRET],
                "no v1 signature matches",
                id="empty-secret-never-verifies",
            ),
        ],
    )
    def test_rejects(self, header: str, body: bytes, secrets: list[str], reason: str) -> None:
        with pytest.raises(InvalidSignatureError, match=reason):
            verify_signature(body, header, secrets, tolerance=TOLERANCE, now=NOW)

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param(None, id="none"),
            pytest.param("", id="empty"),
            pytest.param("   ", id="blank"),
        ],
    )
    def test_rejects_missing_header(self, header: str | None) -> None:
        with pytest.raises(InvalidSignatureError, match="missing"):
            verify_signature(BODY, header, [NEW_SECRET], tolerance=TOLERANCE, now=NOW)

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param("garbage", id="no-pairs"),
            pytest.param(f"t={NOW};v1={v1(NEW_SECRET, NOW)}", id="wrong-separator"),
            pytest.param(f"v1={v1(NEW_SECRET, NOW)}", id="no-timestamp"),
            pytest.param(f"t=,v1={v1(NEW_SECRET, NOW)}", id="empty-timestamp"),
            pytest.param(f"t=soon,v1={v1(NEW_SECRET, NOW)}", id="word-timestamp"),
            pytest.param(f"t={NOW}.5,v1={v1(NEW_SECRET, NOW)}", id="fractional-timestamp"),
            pytest.param(f"t=-{NOW},v1={v1(NEW_SECRET, NOW)}", id="negative-timestamp"),
            pytest.param(f"t={'9' * 5000},v1=00", id="huge-timestamp"),
            pytest.param(f"t=١٢٣,v1={v1(NEW_SECRET, NOW)}", id="non-ascii-digits"),
            pytest.param(f"t={NOW},t={NOW},v1={v1(NEW_SECRET, NOW)}", id="two-timestamps"),
            pytest.param(f"t={NOW}", id="no-signature"),
            pytest.param(f"t={NOW},v1={v1(NEW_SECRET, NOW)},", id="trailing-comma"),
            pytest.param(f"t={NOW},=abc,v1={v1(NEW_SECRET, NOW)}", id="empty-key"),
        ],
    )
    def test_rejects_garbled_header(self, header: str) -> None:
        with pytest.raises(InvalidSignatureError):
            verify_signature(BODY, header, [NEW_SECRET], tolerance=TOLERANCE, now=NOW)

    def test_non_ascii_signature_is_rejected_not_crashing(self) -> None:
        header = f"t={NOW},v1=é{v1(NEW_SECRET, NOW)[1:]}"
        with pytest.raises(InvalidSignatureError, match="no v1 signature matches"):
            verify_signature(BODY, header, [NEW_SECRET], tolerance=TOLERANCE, now=NOW)

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param(f"t={NOW},v1={v1(OLD_SECRET, NOW)}", id="bad-signature"),
            pytest.param(f"t={NOW - 3600},v1={v1(NEW_SECRET, NOW - 3600)}", id="stale"),
            pytest.param("t=x", id="garbled"),
        ],
    )
    def test_error_messages_never_carry_secrets(self, header: str) -> None:
        with pytest.raises(InvalidSignatureError) as caught:
            verify_signature(BODY, header, [NEW_SECRET], tolerance=TOLERANCE, now=NOW)
        text = f"{caught.value!s} {caught.value!r}"
        assert NEW_SECRET not in text
        assert NEW_SECRET.removeprefix("whsec_") not in text

    def test_negative_tolerance_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="tolerance"):
            verify_signature(
                BODY, sign(BODY, NEW_SECRET, timestamp=NOW), [NEW_SECRET], tolerance=-1, now=NOW
            )

    def test_round_trips_with_sign_for_every_configured_secret(self) -> None:
        for secret in (OLD_SECRET, NEW_SECRET):
            header = sign(BODY, secret, timestamp=NOW)
            verify_signature(BODY, header, [OLD_SECRET, NEW_SECRET], tolerance=0, now=NOW)
            with pytest.raises(InvalidSignatureError):
                verify_signature(BODY, header, [OLD_SECRET, NEW_SECRET], tolerance=0, now=NOW + 1)
