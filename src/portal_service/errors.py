"""Domain errors and their one rendering: RFC 9457 problem+json with a stable `code`."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://portal-service.dev/problems/"


class Problem(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[PROBLEM_TYPE_BASE + "customer_not_found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["No billing customer is linked to this user."])
    code: str = Field(examples=["customer_not_found"])


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


class DomainError(Exception):
    """An expected outcome that the API answers with a 4xx/5xx problem."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    default_detail: ClassVar[str] = "The request could not be processed."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        self.headers = headers
        self.extra = extra
        super().__init__(self.detail)

    def to_response(self) -> JSONResponse:
        return problem_response(
            self.status, self.code, self.detail, headers=self.headers, extra=self.extra
        )


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"
    default_detail = "Missing or invalid credentials."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    default_detail = "These credentials may not do this."


class CustomerNotFound(DomainError):
    status = 404
    code = "customer_not_found"
    default_detail = "No billing customer was found."


class SubscriptionNotFound(DomainError):
    status = 404
    code = "subscription_not_found"
    default_detail = "The subscription does not exist or does not belong to this customer."


class EventNotFound(DomainError):
    status = 404
    code = "event_not_found"
    default_detail = "No event with this id has been recorded."


class NotFound(DomainError):
    status = 404
    code = "not_found"
    default_detail = "Nothing lives at this address."


class MethodNotAllowed(DomainError):
    status = 405
    code = "method_not_allowed"
    default_detail = "This method is not allowed here."


class PortalActionUnavailable(DomainError):
    status = 409
    code = "portal_action_unavailable"
    default_detail = "The customer portal cannot do this to this subscription."


class IdempotencyKeyExpired(DomainError):
    status = 409
    code = "idempotency_key_expired"
    default_detail = "This Idempotency-Key was used more than 5 minutes ago; use a new key."


class InvalidRequest(DomainError):
    status = 422
    code = "invalid_request"
    default_detail = "The request is not valid."


class ReturnUrlNotAllowed(DomainError):
    status = 422
    code = "return_url_not_allowed"
    default_detail = "The return URL is not in PORTAL_RETURN_URL_ALLOWLIST."


class ReturnUrlRequired(DomainError):
    status = 422
    code = "return_url_required"
    default_detail = "No return_url was given and no default is configured."


class UnsupportedLocale(DomainError):
    status = 422
    code = "unsupported_locale"
    default_detail = "The locale is not one of Stripe's customer portal locales."


class IdempotencyKeyReused(DomainError):
    status = 422
    code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used with a different request."


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    default_detail = "Too many portal sessions; try again later."


class StripeError(DomainError):
    """Stripe refused the request (a 4xx from Stripe)."""

    status = 502
    code = "stripe_error"
    default_detail = "Stripe refused the request."


class StripeUnavailable(DomainError):
    """Stripe could not be reached, timed out, failed (5xx) or rate-limited us."""

    status = 503
    code = "stripe_unavailable"
    default_detail = "Stripe is unavailable; try again shortly."


class AuthUnavailable(DomainError):
    status = 503
    code = "auth_unavailable"
    default_detail = "The identity provider's keys could not be fetched."


class WebhooksNotConfigured(DomainError):
    status = 503
    code = "webhooks_not_configured"
    default_detail = "STRIPE_WEBHOOK_SECRETS is not set."


class InvalidSignature(DomainError):
    status = 400
    code = "invalid_signature"
    default_detail = "The Stripe-Signature header does not verify."


class InvalidPayload(DomainError):
    status = 400
    code = "invalid_payload"
    default_detail = "The body is not a Stripe event."


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: documents each error status as problem+json with its codes."""
    out: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = out.setdefault(
            error.status,
            {"content": {PROBLEM_JSON: {"schema": PROBLEM_REF}}, "description": ""},
        )
        codes = entry["description"].split(", ") if entry["description"] else []
        if f"`{error.code}`" not in codes:
            codes.append(f"`{error.code}`")
        entry["description"] = ", ".join(codes)
    return out


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the API does: every error is problem+json.

    FastAPI documents request validation errors as its own `HTTPValidationError` JSON;
    ours render as problem+json with code `invalid_request`, so rewrite those responses.
    """
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            validation = responses.get("422")
            if validation and PROBLEM_JSON not in validation.get("content", {}):
                responses["422"] = {
                    "description": "`invalid_request`",
                    "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
                }
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return schema


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            # Its loc is ("body", <character offset>): say what is wrong instead.
            parts.append("body: not valid JSON")
            continue
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{location}: {err.get('msg', 'invalid')}" if location else err.get("msg", ""))
    return "; ".join(parts) or "The request is not valid."


def internal_error_response(request_id: str | None) -> JSONResponse:
    extra = {"request_id": request_id} if request_id else None
    return problem_response(
        500,
        "internal_error",
        "An unexpected error occurred; it has been logged with this request id.",
        extra=extra,
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_unexpected_error(_request: Request, _exc: Exception) -> JSONResponse:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        return internal_error_response(request_id if isinstance(request_id, str) else None)

    async def on_domain_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)  # noqa: S101 - registered for DomainError only
        return exc.to_response()

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return problem_response(
            422, "invalid_request", _validation_detail(exc), extra={"errors": errors}
        )

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101
        if exc.status_code == 404:
            return NotFound().to_response()
        if exc.status_code == 405:
            return MethodNotAllowed(headers=dict(exc.headers or {})).to_response()
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers a body that is not UTF-8 with a bare 400, where malformed
            # JSON is a 422 validation error: the same input error, the same answer.
            return InvalidRequest("The request body is not valid UTF-8 JSON.").to_response()
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return problem_response(
            exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
        )

    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
