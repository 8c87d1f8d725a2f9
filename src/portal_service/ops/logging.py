"""Structured logs (JSON, or console for humans) that never carry secrets or portal URLs."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

# Values that must never reach a log line, whatever logged them: Stripe keys, webhook
# secrets, bearer tokens, and portal session URLs (bearer credentials themselves).
_SECRET_PATTERNS = (
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+"),
    re.compile(r"\bwhsec_[A-Za-z0-9]+"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"https?://[^\s\"']*/(?:p/session|session|offline/portal)/[^\s\"']+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
)
# The password of a URL's userinfo (DATABASE_URL in a connection error, say); user and host stay.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_SENSITIVE_KEYS = frozenset(
    {
        "url",
        "authorization",
        "api_key",
        "x-api-key",
        "token",
        "secret",
        "password",
        "stripe_api_key",
    }
)
REDACTED = "[redacted]"


def scrub(value: Any) -> Any:
    if isinstance(value, str):
        for pattern in _SECRET_PATTERNS:
            value = pattern.sub(REDACTED, value)
        return _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", value)
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in _SENSITIVE_KEYS else scrub(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _scrub_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    return {
        k: REDACTED if k.lower() in _SENSITIVE_KEYS else scrub(v) for k, v in event_dict.items()
    }


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _scrub_processor,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our middleware logs each request; uvicorn's access log would log the raw path twice.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # At DEBUG the SDK logs whole response bodies, portal session URLs included.
    logging.getLogger("stripe").setLevel(max(logging.INFO, logging.getLevelName(level)))
    # Readiness probes read the schema version through Alembic, which logs each look at INFO.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
