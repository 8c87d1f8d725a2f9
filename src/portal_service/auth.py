"""Who is calling: end users with a JWT (HS256 secret or JWKS), backends and ops with API keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from portal_service.app_state import app_state
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
JWT_LEEWAY_SECONDS = 30
JWKS_MIN_REFRESH_SECONDS = 30.0
_ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
# The app_user_id columns are 255 wide.
MAX_USER_ID_LENGTH = 255

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
    """JWKS keys fetched with httpx (never PyJWT's blocking urllib client), cached for
    JWKS_TTL_SECONDS, and refetched at once when a token names an unknown `kid` (a key
    rotation). A refetch that does not find the kid blocks further unknown-kid refetches
    for JWKS_MIN_REFRESH_SECONDS, so tokens with made-up kids cannot hammer the provider."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        ttl_seconds: float = JWKS_TTL_SECONDS,
        miss_cooldown_seconds: float = JWKS_MIN_REFRESH_SECONDS,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._ttl = ttl_seconds
        self._miss_cooldown = miss_cooldown_seconds
        self._keys: list[dict[str, Any]] = []
        self._fetched_at: float | None = None
        self._useless_refetch_at: float | None = None
        self._generation = 0
        self._lock = asyncio.Lock()

    async def _refresh(self, seen_generation: int) -> None:
        async with self._lock:
            if self._generation != seen_generation:
                return  # another request refreshed while this one waited
            try:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.get(self._url, headers={"Accept": "application/json"})
                    response.raise_for_status()
                    document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("jwks_fetch_failed", error=type(exc).__name__)
                raise AuthUnavailable() from exc
            keys = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(keys, list):
                log.warning("jwks_fetch_failed", error="not a JWK set")
                raise AuthUnavailable("The identity provider's JWKS document is not a key set.")
            # Only public signing keys: a symmetric (`oct`) key published in a JWKS would
            # let anyone who reads it sign tokens.
            self._keys = [
                key
                for key in keys
                if isinstance(key, dict)
                and key.get("kty") in _ASYMMETRIC_KEY_TYPES
                and key.get("use", "sig") == "sig"
            ]
            self._fetched_at = time.monotonic()
            self._generation += 1

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return self._keys[0] if len(self._keys) == 1 else None
        return next((key for key in self._keys if key.get("kid") == kid), None)

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        generation = self._generation
        if self._fetched_at is None or time.monotonic() - self._fetched_at > self._ttl:
            await self._refresh(generation)
            generation = self._generation
        jwk = self._find(kid)
        if jwk is None and self._may_refetch_unknown_kid():
            await self._refresh(generation)
            jwk = self._find(kid)
            if jwk is None:
                self._useless_refetch_at = time.monotonic()
        if jwk is None:
            raise Unauthenticated("The token's signing key is unknown.")
        declared = jwk.get("alg")
        if declared is not None and declared != algorithm:
            raise Unauthenticated("The token's algorithm does not match its signing key.")
        try:
            return jwt.PyJWK(jwk, algorithm=algorithm)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The token's signing key cannot verify it.") from exc

    def _may_refetch_unknown_kid(self) -> bool:
        last = self._useless_refetch_at
        return last is None or time.monotonic() - last > self._miss_cooldown


async def _decode(token: str, settings: Settings, jwks: JwksCache | None) -> dict[str, Any]:
    options: dict[str, Any] = {"require": ["exp"], "verify_aud": bool(settings.auth_jwt_audience)}
    try:
        if settings.auth_jwt_secret is not None:
            key: Any = settings.auth_jwt_secret.get_secret_value()
            algorithms = ["HS256"]
        elif jwks is not None:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                raise Unauthenticated("The token's algorithm is not accepted.")
            kid = header.get("kid")
            key = await jwks.key_for(kid if isinstance(kid, str) else None, algorithm)
            algorithms = [algorithm]
        else:
            raise Unauthenticated("End-user tokens are not accepted by this service.")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.auth_jwt_audience,
            issuer=settings.auth_jwt_issuer,
            options=options,  # type: ignore[arg-type]  # PyJWT's Options TypedDict
            leeway=JWT_LEEWAY_SECONDS,
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
    state = app_state(request)
    return await state.verified_tokens.end_user(credentials.credentials, settings, state.jwks)


def _user_of(claims: dict[str, Any], settings: Settings) -> EndUser:
    user_id = claims.get(settings.auth_user_claim)
    if not isinstance(user_id, str | int) or isinstance(user_id, bool) or str(user_id) == "":
        raise Unauthenticated(f"The token has no '{settings.auth_user_claim}' claim.")
    if len(str(user_id)) > MAX_USER_ID_LENGTH:
        raise Unauthenticated(
            f"The token's '{settings.auth_user_claim}' claim is longer than "
            f"{MAX_USER_ID_LENGTH} characters."
        )
    email = claims.get("email")
    return EndUser(user_id=str(user_id), email=email if isinstance(email, str) else None)


@dataclass(frozen=True, slots=True)
class _Verified:
    settings: Settings
    user: EndUser
    valid_from: float
    valid_until: float


class VerifiedTokens:
    """HS256 tokens already verified, keyed by the exact token string, so a client polling
    with one token pays for its signature and claims once (one per app, in AppState: every
    route's bearer check and the entitlements lane use it). Only the secret's tokens: one
    secret, no key rotation to follow (JWKS tokens are verified every time). `exp`, `nbf`
    and `iat` are still checked on every request, with PyJWT's rule and leeway; a token
    outside its window is verified again, and refused as before. Bounded: emptied when full.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._entries: dict[str, _Verified] = {}

    async def end_user(self, token: str, settings: Settings, jwks: JwksCache | None) -> EndUser:
        now = time.time()
        hit = self._entries.get(token)
        if hit is not None and hit.settings is settings:
            if hit.valid_from <= now < hit.valid_until:
                return hit.user
            del self._entries[token]
        claims = await _decode(token, settings, jwks)
        user = _user_of(claims, settings)
        if settings.auth_jwt_secret is not None:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            valid_from, valid_until = _window(claims)
            self._entries[token] = _Verified(settings, user, valid_from, valid_until)
        return user


def _window(claims: dict[str, Any]) -> tuple[float, float]:
    """When PyJWT accepts claims it has accepted once (its `_validate_iat`, `_validate_nbf`
    and `_validate_exp`, leeway included): from the latest of iat and nbf, until exp."""
    starts = [int(claims[name]) for name in ("iat", "nbf") if name in claims]
    valid_from = max(starts) - JWT_LEEWAY_SECONDS if starts else float("-inf")
    return valid_from, int(claims["exp"]) + JWT_LEEWAY_SECONDS


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


async def require_backend(
    request: Request, settings: AppSettings, bearer: Bearer, api_key: ApiKey
) -> ApiKeyCaller:
    if api_key is not None:
        caller = _api_key_caller(api_key, settings)
        if caller is None:
            raise Unauthenticated("The API key is not valid.")
        return caller
    if bearer is not None:
        # Only a *valid* credential of the wrong kind is 403; a bad token stays 401.
        await _end_user(request, settings, bearer)
        raise Forbidden("This route needs a backend API key (X-API-Key), not an end-user token.")
    raise Unauthenticated()


async def require_admin(caller: Annotated[ApiKeyCaller, Depends(require_backend)]) -> ApiKeyCaller:
    if caller.role != "admin":
        raise Forbidden("This route needs an admin API key.")
    return caller


async def require_user_or_backend(
    request: Request, settings: AppSettings, bearer: Bearer, api_key: ApiKey
) -> EndUser | ApiKeyCaller:
    if api_key is not None:
        return await require_backend(request, settings, bearer, api_key)
    if bearer is not None:
        return await _end_user(request, settings, bearer)
    raise Unauthenticated()


CurrentUser = Annotated[EndUser, Depends(require_end_user)]
BackendCaller = Annotated[ApiKeyCaller, Depends(require_backend)]
AdminCaller = Annotated[ApiKeyCaller, Depends(require_admin)]
AnyCaller = Annotated[EndUser | ApiKeyCaller, Depends(require_user_or_backend)]
