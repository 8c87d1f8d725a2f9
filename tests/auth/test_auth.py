"""End-user tokens (HS256 secret or JWKS) and API keys, and the 401/403 rules of README.md,
"Authentication": a missing or wrong credential is 401, a valid one on the wrong kind of route 403."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from auth.idp import AUDIENCE, ISSUER, JWKS_SETTINGS, IdentityProvider, SigningKey
from portal_service.auth import JwksCache
from portal_service.config import ConfigError
from portal_service.errors import AuthUnavailable, Unauthenticated
from support import ADMIN_KEY, BACKEND_KEY, JWT_SECRET, make_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hs256(claims: dict[str, Any], *, secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def expires() -> int:
    return int(time.time()) + 600


@pytest.mark.sqlite
class TestHs256Tokens:
    async def test_a_token_accepted_before_is_refused_once_expired(
        self, auth_client: Callable[..., Any]
    ) -> None:
        # Every route's bearer check shares the app's verified-token cache: a hit is still
        # held to the token's window. Valid for two more seconds (28 s past exp, within
        # PyJWT's 30 s leeway).
        token = hs256({"sub": "user_x", "exp": int(time.time()) - 28})
        async with auth_client() as client:
            first = await client.get("/user", headers=bearer(token))
            again = await client.get("/any", headers=bearer(token))
            await asyncio.sleep(2.5)
            expired = await client.get("/user", headers=bearer(token))
        assert (first.status_code, again.status_code) == (200, 200)
        assert expired.status_code == 401
        assert expired.json()["code"] == "unauthenticated"

    async def test_a_valid_token_names_the_user_and_email(
        self, auth_client: Callable[..., Any]
    ) -> None:
        async with auth_client() as client:
            response = await client.get(
                "/user", headers=bearer(make_token("user_1", email="ada@example.com"))
            )
        assert response.status_code == 200
        assert response.json() == {
            "user_id": "user_1",
            "email": "ada@example.com",
            "caller": "u:" + hashlib.sha256(b"user_1").hexdigest()[:16],
        }

    @pytest.mark.parametrize(
        "token",
        [
            pytest.param(hs256({"sub": "u", "exp": int(time.time()) - 120}), id="expired"),
            pytest.param(hs256({"sub": "u"}), id="no-exp"),
            pytest.param(hs256({"sub": "u", "exp": expires()}, secret="x" * 40), id="wrong-secret"),
            pytest.param(
                hs256({"sub": "u", "exp": expires()}, algorithm="HS512"), id="other-hmac-alg"
            ),
            pytest.param(
                jwt.encode({"sub": "u", "exp": expires()}, None, algorithm="none"), id="alg-none"
            ),
            pytest.param(
                hs256({"sub": "u", "exp": expires(), "nbf": int(time.time()) + 3600}),
                id="not-yet-valid",
            ),
            pytest.param("not.a.jwt", id="garbage"),
            pytest.param(hs256({"exp": expires()}), id="no-sub"),
            pytest.param(hs256({"sub": "", "exp": expires()}), id="empty-sub"),
            pytest.param(hs256({"sub": True, "exp": expires()}), id="boolean-sub"),
            pytest.param(hs256({"sub": "u" * 256, "exp": expires()}), id="sub-too-long"),
        ],
    )
    async def test_an_invalid_token_is_unauthenticated(
        self, auth_client: Callable[..., Any], token: str
    ) -> None:
        async with auth_client() as client:
            response = await client.get("/user", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_another_scheme_is_unauthenticated(self, auth_client: Callable[..., Any]) -> None:
        async with auth_client() as client:
            response = await client.get(
                "/user", headers={"Authorization": f"Basic {make_token('u')}"}
            )
        assert response.status_code == 401

    async def test_the_user_claim_is_configurable(self, auth_client: Callable[..., Any]) -> None:
        token = hs256({"sub": "auth0|x", "uid": 4217, "exp": expires()})
        async with auth_client(auth_user_claim="uid") as client:
            ok = await client.get("/user", headers=bearer(token))
            missing = await client.get("/user", headers=bearer(make_token("auth0|x")))
        assert ok.json()["user_id"] == "4217"
        assert missing.status_code == 401
        assert "uid" in missing.json()["detail"]

    @pytest.mark.parametrize(
        ("claims", "status"),
        [
            pytest.param({"aud": "portal-service", "iss": "https://id.example.com/"}, 200, id="ok"),
            pytest.param({"iss": "https://id.example.com/"}, 401, id="no-aud"),
            pytest.param({"aud": "other", "iss": "https://id.example.com/"}, 401, id="wrong-aud"),
            pytest.param({"aud": "portal-service", "iss": "https://evil/"}, 401, id="wrong-iss"),
            pytest.param({"aud": "portal-service"}, 401, id="no-iss"),
        ],
    )
    async def test_audience_and_issuer_are_checked_when_configured(
        self, auth_client: Callable[..., Any], claims: dict[str, str], status: int
    ) -> None:
        token = hs256({"sub": "u", "exp": expires(), **claims})
        async with auth_client(
            auth_jwt_audience="portal-service", auth_jwt_issuer="https://id.example.com/"
        ) as client:
            response = await client.get("/user", headers=bearer(token))
        assert response.status_code == status

    async def test_an_audience_is_not_required_when_none_is_configured(
        self, auth_client: Callable[..., Any]
    ) -> None:
        async with auth_client() as client:
            response = await client.get("/user", headers=bearer(make_token("u", aud="anything")))
        assert response.status_code == 200

    async def test_without_end_user_auth_configured_tokens_are_unauthenticated(
        self, auth_client: Callable[..., Any]
    ) -> None:
        async with auth_client(auth_jwt_secret=None) as client:
            response = await client.get("/user", headers=bearer(make_token("u")))
        assert response.status_code == 401


class TestJwksTokens:
    async def test_a_token_signed_by_a_published_key_is_accepted_and_keys_are_cached(
        self, jwks_client: httpx.AsyncClient, idp: IdentityProvider, rsa_key: SigningKey
    ) -> None:
        first = await jwks_client.get("/user", headers=bearer(rsa_key.token("user_1")))
        second = await jwks_client.get("/user", headers=bearer(rsa_key.token("user_2")))
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.json()["user_id"] == "user_2"
        assert idp.fetches == 1

    async def test_a_new_kid_is_fetched_at_once_after_a_key_rotation(
        self,
        jwks_client: httpx.AsyncClient,
        idp: IdentityProvider,
        rsa_key: SigningKey,
        rotated_key: SigningKey,
    ) -> None:
        assert (await jwks_client.get("/user", headers=bearer(rsa_key.token()))).status_code == 200
        idp.keys = [rsa_key.public_jwk(), rotated_key.public_jwk()]
        response = await jwks_client.get("/user", headers=bearer(rotated_key.token("user_9")))
        assert response.status_code == 200
        assert response.json()["user_id"] == "user_9"
        assert idp.fetches == 2

    async def test_unknown_kids_refetch_once_then_wait(
        self, jwks_client: httpx.AsyncClient, idp: IdentityProvider, rotated_key: SigningKey
    ) -> None:
        first = await jwks_client.get("/user", headers=bearer(rotated_key.token()))
        again = await jwks_client.get("/user", headers=bearer(rotated_key.token()))
        assert (first.status_code, again.status_code) == (401, 401)
        assert first.json()["detail"] == "The token's signing key is unknown."
        assert idp.fetches == 2  # the first load, one refetch; then the cooldown holds

    async def test_concurrent_tokens_with_a_new_kid_share_one_refetch(
        self,
        jwks_client: httpx.AsyncClient,
        idp: IdentityProvider,
        rsa_key: SigningKey,
        rotated_key: SigningKey,
    ) -> None:
        await jwks_client.get("/user", headers=bearer(rsa_key.token()))
        idp.keys = [rotated_key.public_jwk()]
        responses = await asyncio.gather(
            *(jwks_client.get("/user", headers=bearer(rotated_key.token())) for _ in range(5))
        )
        assert [r.status_code for r in responses] == [200] * 5
        assert idp.fetches == 2

    @pytest.mark.parametrize(
        "failure",
        [
            httpx.Response(500),
            httpx.Response(404),
            httpx.Response(200, text="<html>maintenance</html>"),
            httpx.Response(200, json={"keys": "none"}),
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
        ],
        ids=["500", "404", "not-json", "not-a-key-set", "connect-error", "timeout"],
    )
    async def test_a_jwks_fetch_failure_is_auth_unavailable(
        self,
        jwks_client: httpx.AsyncClient,
        idp: IdentityProvider,
        rsa_key: SigningKey,
        failure: httpx.Response | Exception,
    ) -> None:
        idp.failures.append(failure)
        response = await jwks_client.get("/user", headers=bearer(rsa_key.token()))
        assert response.status_code == 503
        assert response.json()["code"] == "auth_unavailable"

    async def test_a_failed_refetch_for_a_new_kid_is_auth_unavailable(
        self,
        jwks_client: httpx.AsyncClient,
        idp: IdentityProvider,
        rsa_key: SigningKey,
        rotated_key: SigningKey,
    ) -> None:
        await jwks_client.get("/user", headers=bearer(rsa_key.token()))
        idp.failures.append(httpx.Response(502))
        response = await jwks_client.get("/user", headers=bearer(rotated_key.token()))
        assert response.status_code == 503

    @pytest.mark.parametrize(
        "claims",
        [
            pytest.param({"exp": int(time.time()) - 120}, id="expired"),
            pytest.param({"exp": None}, id="no-exp"),
            pytest.param({"aud": "someone-else"}, id="wrong-aud"),
            pytest.param({"aud": None}, id="no-aud"),
            pytest.param({"iss": "https://evil.example.com/"}, id="wrong-iss"),
            pytest.param({"iss": None}, id="no-iss"),
        ],
    )
    async def test_exp_aud_and_iss_are_required(
        self, jwks_client: httpx.AsyncClient, rsa_key: SigningKey, claims: dict[str, Any]
    ) -> None:
        response = await jwks_client.get("/user", headers=bearer(rsa_key.token(**claims)))
        assert response.status_code == 401

    async def test_a_forged_signature_under_a_published_kid_is_refused(
        self, jwks_client: httpx.AsyncClient, stranger_key: SigningKey
    ) -> None:
        response = await jwks_client.get("/user", headers=bearer(stranger_key.token()))
        assert response.status_code == 401

    async def test_symmetric_tokens_are_refused_without_a_fetch(
        self, jwks_client: httpx.AsyncClient, idp: IdentityProvider
    ) -> None:
        token = jwt.encode(
            {"sub": "u", "exp": expires(), "aud": AUDIENCE, "iss": ISSUER},
            "x" * 40,
            algorithm="HS256",
            headers={"kid": "rsa-1"},
        )
        response = await jwks_client.get("/user", headers=bearer(token))
        assert response.status_code == 401
        assert idp.fetches == 0

    async def test_a_published_symmetric_key_is_never_used(
        self, jwks_client: httpx.AsyncClient, idp: IdentityProvider, rsa_key: SigningKey
    ) -> None:
        secret = "published-secret-published-secret-0123456789"
        k = jwt.utils.base64url_encode(secret.encode()).decode()
        idp.keys = [{"kty": "oct", "kid": "oct-1", "k": k}]
        token = jwt.encode(
            {"sub": "u", "exp": expires(), "aud": AUDIENCE, "iss": ISSUER},
            secret,
            algorithm="HS256",
            headers={"kid": "oct-1"},
        )
        response = await jwks_client.get("/user", headers=bearer(token))
        assert response.status_code == 401

    async def test_a_token_algorithm_other_than_the_keys_is_refused(
        self, jwks_client: httpx.AsyncClient, rsa_key: SigningKey
    ) -> None:
        response = await jwks_client.get("/user", headers=bearer(rsa_key.token(algorithm="PS256")))
        assert response.status_code == 401
        assert "algorithm" in response.json()["detail"]

    async def test_a_key_without_alg_verifies_the_tokens_rsa_algorithm(
        self, jwks_client: httpx.AsyncClient, idp: IdentityProvider, rsa_key: SigningKey
    ) -> None:
        idp.keys = [rsa_key.public_jwk(with_alg=False)]
        response = await jwks_client.get("/user", headers=bearer(rsa_key.token(algorithm="RS512")))
        assert response.status_code == 200

    async def test_a_key_of_another_type_cannot_verify(
        self, jwks_client: httpx.AsyncClient, idp: IdentityProvider, rotated_key: SigningKey
    ) -> None:
        # An EC key published without alg, and a token claiming RS256 under its kid.
        idp.keys = [rotated_key.public_jwk(with_alg=False)]
        header = jwt.utils.base64url_encode(b'{"alg":"RS256","kid":"ec-2","typ":"JWT"}')
        claims = f'{{"sub":"u","exp":{expires()},"aud":"{AUDIENCE}","iss":"{ISSUER}"}}'
        payload = jwt.utils.base64url_encode(claims.encode())
        token = f"{header.decode()}.{payload.decode()}.c2lnbmF0dXJl"
        response = await jwks_client.get("/user", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"

    async def test_the_portal_answers_auth_unavailable_when_the_provider_is_down(
        self, client_factory: Callable[..., Any], idp: IdentityProvider, rsa_key: SigningKey
    ) -> None:
        idp.failures.append(httpx.Response(503))
        async with client_factory(**JWKS_SETTINGS) as client:
            response = await client.post("/portal-sessions", headers=bearer(rsa_key.token()))
        assert response.status_code == 503
        assert response.json()["code"] == "auth_unavailable"


class TestJwksCache:
    async def test_an_unknown_kid_after_the_cooldown_refetches_again(
        self, idp: IdentityProvider, rotated_key: SigningKey
    ) -> None:
        cache = JwksCache("https://idp.example.com/.well-known/jwks.json", miss_cooldown_seconds=-1)
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                await cache.key_for(rotated_key.kid, "ES256")
        assert idp.fetches == 3

    async def test_keys_older_than_the_ttl_are_refetched(
        self, idp: IdentityProvider, rsa_key: SigningKey
    ) -> None:
        cache = JwksCache("https://idp.example.com/.well-known/jwks.json", ttl_seconds=-1)
        await cache.key_for(rsa_key.kid, "RS256")
        await cache.key_for(rsa_key.kid, "RS256")
        assert idp.fetches == 2

    async def test_a_token_without_kid_uses_the_only_key(
        self, idp: IdentityProvider, rsa_key: SigningKey
    ) -> None:
        cache = JwksCache("https://idp.example.com/.well-known/jwks.json")
        key = await cache.key_for(None, "RS256")
        assert key.algorithm_name == "RS256"

    async def test_a_fetch_failure_raises_auth_unavailable(self, idp: IdentityProvider) -> None:
        idp.failures.append(httpx.ConnectError("down"))
        cache = JwksCache("https://idp.example.com/.well-known/jwks.json")
        with pytest.raises(AuthUnavailable):
            await cache.key_for("rsa-1", "RS256")


@pytest.mark.sqlite
class TestCredentialKinds:
    @pytest.mark.parametrize(
        ("route", "headers", "status"),
        [
            # End-user routes
            pytest.param("/user", {}, 401, id="user-none"),
            pytest.param("/user", {"X-API-Key": BACKEND_KEY}, 403, id="user-backend-key"),
            pytest.param("/user", {"X-API-Key": "wrong"}, 401, id="user-wrong-key"),
            pytest.param("/user", bearer(make_token("u")), 200, id="user-token"),
            # Backend routes
            pytest.param("/backend", {}, 401, id="backend-none"),
            pytest.param("/backend", {"X-API-Key": BACKEND_KEY}, 200, id="backend-backend-key"),
            pytest.param("/backend", {"X-API-Key": ADMIN_KEY}, 200, id="backend-admin-key"),
            pytest.param("/backend", {"X-API-Key": BACKEND_KEY[:-1]}, 401, id="backend-key-prefix"),
            pytest.param("/backend", {"X-API-Key": ""}, 401, id="backend-empty-key"),
            pytest.param("/backend", bearer(make_token("u")), 403, id="backend-valid-token"),
            pytest.param("/backend", bearer("not-a-token"), 401, id="backend-invalid-token"),
            # Admin routes
            pytest.param("/admin", {}, 401, id="admin-none"),
            pytest.param("/admin", {"X-API-Key": BACKEND_KEY}, 403, id="admin-backend-key"),
            pytest.param("/admin", {"X-API-Key": ADMIN_KEY}, 200, id="admin-admin-key"),
            pytest.param("/admin", bearer(make_token("u")), 403, id="admin-valid-token"),
            pytest.param("/admin", {"X-API-Key": "wrong"}, 401, id="admin-wrong-key"),
            # Routes for both
            pytest.param("/any", {}, 401, id="any-none"),
            pytest.param("/any", bearer(make_token("u")), 200, id="any-token"),
            pytest.param("/any", {"X-API-Key": BACKEND_KEY}, 200, id="any-backend-key"),
            pytest.param(
                "/any", {"X-API-Key": "wrong", **bearer(make_token("u"))}, 401, id="any-wrong-key"
            ),
            pytest.param("/any", bearer("not-a-token"), 401, id="any-invalid-token"),
        ],
    )
    async def test_status_by_route_and_credential(
        self, auth_client: Callable[..., Any], route: str, headers: dict[str, str], status: int
    ) -> None:
        async with auth_client() as client:
            response = await client.get(route, headers=headers)
        assert response.status_code == status
        if status != 200:
            expected = "unauthenticated" if status == 401 else "forbidden"
            assert response.json()["code"] == expected

    async def test_api_key_callers_are_named_by_a_hash_of_the_key(
        self, auth_client: Callable[..., Any]
    ) -> None:
        async with auth_client() as client:
            response = await client.get("/backend", headers={"X-API-Key": ADMIN_KEY})
        assert response.json() == {
            "role": "admin",
            "caller": "k:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()[:16],
        }


@pytest.mark.sqlite
class TestAuthSettings:
    def test_secret_and_jwks_together_refuse_to_start(
        self, settings_factory: Callable[..., Any]
    ) -> None:
        settings = settings_factory(auth_jwks_url="https://idp.example.com/jwks.json")
        with pytest.raises(ConfigError, match="not both"):
            settings.check()

    def test_jwks_without_audience_and_issuer_refuses_to_start(
        self, settings_factory: Callable[..., Any]
    ) -> None:
        settings = settings_factory(
            auth_jwt_secret=None, auth_jwks_url="https://idp.example.com/jwks.json"
        )
        with pytest.raises(ConfigError, match="AUDIENCE"):
            settings.check()
