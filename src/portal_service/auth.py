"""Who is calling: end users with a JWT (HS256 secret or JWKS), backends and ops with API keys."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from portal_service.config import AppSettings, Settings
from portal_service.errors import AuthUnavailable, Forbidden, Unauthenticated
from portal_service.ops.logging import get_logger

log = get_logger("portal_service.auth")

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
JWKS_TTL_SECONDS = 600.0
JWKS_MIN_REFRESH_SECONDS = 30.0

_bearer = HTTPBearer(auto_error=False, description="End-user JWT from the app's identity provider")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="Backend or admin API key")


def fingerprint(value: str) -> str:
    """First 16 hex digits of SHA-256: names a user or key without revealing it."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class EndUser:
    user_id: str
    email: str | None

    @property
    def caller(self) -> str:
        return "u:" + fingerprint(self.user_id)


@dataclass(frozen=True, slots=True)
class ApiKeyCaller:
    role: Literal["backend", "admin"]
    key_fingerprint: str

    @property
    def caller(self) -> str:
        return "k:" + self.key_fingerprint


class JwksCache:
    """JWKS keys fetched with httpx (never PyJWT's blocking urllib client), cached, and
    refetched when a token names an unknown `kid`."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._url = url
        self._timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0

    async def _refresh(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(self._url, headers={"Accept": "application/json"})
                response.raise_for_status()
                jwk_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("jwks_fetch_failed", error=type(exc).__name__)
            raise AuthUnavailable() from exc
        self._keys = {key.key_id: key for key in jwk_set.keys if key.key_id}
        self._fetched_at = time.monotonic()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        age = time.monotonic() - self._fetched_at
        if (
            not self._keys
            or age > JWKS_TTL_SECONDS
            or (kid not in self._keys and age > JWKS_MIN_REFRESH_SECONDS)
        ):
            await self._refresh()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid is None or kid not in self._keys:
            raise Unauthenticated("The token's signing key is unknown.")
        return self._keys[kid]


async def _decode(token: str, settings: Settings, jwks: JwksCache | None) -> dict[str, Any]:
    options: dict[str, Any] = {"require": ["exp"], "verify_aud": bool(settings.auth_jwt_audience)}
    try:
        if settings.auth_jwt_secret is not None:
            key: Any = settings.auth_jwt_secret.get_secret_value()
            algorithms = ["HS256"]
        elif jwks is not None:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ASYMMETRIC_ALGORITHMS:
                raise Unauthenticated("The token's algorithm is not accepted.")
            key = await jwks.key_for(header.get("kid"))
            algorithms = [header["alg"]]
        else:
            raise Unauthenticated("End-user tokens are not accepted by this service.")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.auth_jwt_audience,
            issuer=settings.auth_jwt_issuer,
            options=options,  # type: ignore[arg-type]  # PyJWT's Options TypedDict
            leeway=30,
        )
    except jwt.PyJWTError as exc:
        raise Unauthenticated("The bearer token is invalid or expired.") from exc
    return claims


def _match_key(presented: str, keys: list[Any]) -> bool:
    # Compare against every key so timing says nothing about which one (or whether) matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.get_secret_value().encode())
    return matched


def _api_key_caller(presented: str, settings: Settings) -> ApiKeyCaller | None:
    if _match_key(presented, settings.admin_api_keys):
        return ApiKeyCaller(role="admin", key_fingerprint=fingerprint(presented))
    if _match_key(presented, settings.backend_api_keys):
        return ApiKeyCaller(role="backend", key_fingerprint=fingerprint(presented))
    return None


async def _end_user(
    request: Request, settings: Settings, credentials: HTTPAuthorizationCredentials
) -> EndUser:
    claims = await _decode(credentials.credentials, settings, request.app.state.jwks)
    user_id = claims.get(settings.auth_user_claim)
    if not isinstance(user_id, str | int) or isinstance(user_id, bool) or str(user_id) == "":
        raise Unauthenticated(f"The token has no '{settings.auth_user_claim}' claim.")
    email = claims.get("email")
    return EndUser(user_id=str(user_id), email=email if isinstance(email, str) else None)


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ApiKey = Annotated[str | None, Depends(_api_key)]


async def require_end_user(
    request: Request, settings: AppSettings, bearer: Bearer, api_key: ApiKey
) -> EndUser:
    if bearer is None:
        if api_key is not None and _api_key_caller(api_key, settings) is not None:
            raise Forbidden("This route is for end users (Bearer token), not API keys.")
        raise Unauthenticated()
    return await _end_user(request, settings, bearer)


async def require_backend(settings: AppSettings, bearer: Bearer, api_key: ApiKey) -> ApiKeyCaller:
    if api_key is not None:
        caller = _api_key_caller(api_key, settings)
        if caller is None:
            raise Unauthenticated("The API key is not valid.")
        return caller
    if bearer is not None:
        raise Forbidden("This route needs a backend API key (X-API-Key).")
    raise Unauthenticated()


async def require_admin(caller: Annotated[ApiKeyCaller, Depends(require_backend)]) -> ApiKeyCaller:
    if caller.role != "admin":
        raise Forbidden("This route needs an admin API key.")
    return caller


async def require_user_or_backend(
    request: Request, settings: AppSettings, bearer: Bearer, api_key: ApiKey
) -> EndUser | ApiKeyCaller:
    if api_key is not None:
        return await require_backend(settings, bearer, api_key)
    if bearer is not None:
        return await _end_user(request, settings, bearer)
    raise Unauthenticated()


CurrentUser = Annotated[EndUser, Depends(require_end_user)]
BackendCaller = Annotated[ApiKeyCaller, Depends(require_backend)]
AdminCaller = Annotated[ApiKeyCaller, Depends(require_admin)]
AnyCaller = Annotated[EndUser | ApiKeyCaller, Depends(require_user_or_backend)]
