"""Fixtures of the auth tests: signing keys, an identity provider's JWKS endpoint behind
respx, and a small app with one route per kind of caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from auth.idp import JWKS_SETTINGS, JWKS_URL, IdentityProvider, SigningKey
from portal_service.auth import (
    AdminCaller,
    AnyCaller,
    BackendCaller,
    CurrentUser,
    JwksCache,
    VerifiedTokens,
)
from portal_service.config import Settings
from portal_service.errors import install_error_handlers


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return SigningKey(
        "rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )


@pytest.fixture(scope="session")
def rotated_key() -> SigningKey:
    return SigningKey("ec-2", "ES256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="session")
def stranger_key() -> SigningKey:
    """A key the identity provider never published."""
    return SigningKey(
        "rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )


@pytest.fixture
def idp(rsa_key: SigningKey) -> Iterator[IdentityProvider]:
    provider = IdentityProvider(keys=[rsa_key.public_jwk()])
    with respx.mock(assert_all_called=False) as router:
        router.get(JWKS_URL).mock(side_effect=provider.answer)
        yield provider


def build_auth_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    app.state.jwks = JwksCache(settings.auth_jwks_url) if settings.auth_jwks_url else None
    app.state.verified_tokens = VerifiedTokens()
    install_error_handlers(app)

    @app.get("/user")
    async def user_route(caller: CurrentUser) -> dict[str, Any]:
        return {"user_id": caller.user_id, "email": caller.email, "caller": caller.caller}

    @app.get("/backend")
    async def backend_route(caller: BackendCaller) -> dict[str, Any]:
        return {"role": caller.role, "caller": caller.caller}

    @app.get("/admin")
    async def admin_route(caller: AdminCaller) -> dict[str, Any]:
        return {"role": caller.role}

    @app.get("/any")
    async def any_route(caller: AnyCaller) -> dict[str, Any]:
        return {"caller": caller.caller}

    return app


@pytest.fixture
def auth_client(
    settings_factory: Callable[..., Settings],
) -> Callable[..., Any]:
    """`async with auth_client(**settings) as client:` the auth app with these settings."""

    class _Client:
        def __init__(self, overrides: dict[str, Any]) -> None:
            self._settings = settings_factory(**overrides)
            self._client: httpx.AsyncClient | None = None

        async def __aenter__(self) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=build_auth_app(self._settings))
            self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            return self._client

        async def __aexit__(self, *exc: object) -> None:
            assert self._client is not None
            await self._client.aclose()

    def factory(**overrides: Any) -> _Client:
        return _Client(overrides)

    return factory


@pytest.fixture
async def jwks_client(
    auth_client: Callable[..., Any], idp: IdentityProvider
) -> AsyncIterator[httpx.AsyncClient]:
    async with auth_client(**JWKS_SETTINGS) as client:
        yield client
