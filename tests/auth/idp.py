"""The identity provider of the auth tests: signing keys, tokens and a JWKS endpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

JWKS_URL = "https://idp.example.com/.well-known/jwks.json"
ISSUER = "https://idp.example.com/"
AUDIENCE = "portal-service"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def public_jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig")
        if with_alg:
            jwk["alg"] = self.algorithm
        return jwk

    def token(self, sub: str = "user_1", *, algorithm: str | None = None, **claims: Any) -> str:
        payload = {
            "sub": sub,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "exp": int(time.time()) + 600,
            **claims,
        }
        payload = {key: value for key, value in payload.items() if value is not None}
        return jwt.encode(
            payload, self.private, algorithm=algorithm or self.algorithm, headers={"kid": self.kid}
        )


@dataclass
class IdentityProvider:
    """The JWKS endpoint: `keys` is what it publishes now; `failures` queue answers first."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    failures: list[httpx.Response | Exception] = field(default_factory=list)
    fetches: int = 0

    def answer(self, _request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return httpx.Response(200, json={"keys": self.keys})


JWKS_SETTINGS: dict[str, Any] = {
    "auth_jwt_secret": None,
    "auth_jwks_url": JWKS_URL,
    "auth_jwt_audience": AUDIENCE,
    "auth_jwt_issuer": ISSUER,
}
