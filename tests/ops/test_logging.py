"""Structured logs: JSON by default, console on request, and never a secret, token or portal URL."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from portal_service.config import Settings
from portal_service.main import create_app
from portal_service.ops.logging import REDACTED, configure_logging, get_logger
from support import make_token

SECRETS = {
    "stripe_live_key": "sk_live_51Habc123DEF",
    "restricted_key": "rk_test_51Hxyz789",
    "webhook_secret": "whsec_q1w2e3r4t5",
    "portal_url": "https://billing.stripe.com/p/session/test_YWNjdF8xTjk5",
    "offline_portal_url": "http://127.0.0.1:8000/offline/portal/eyJjIjoiY3VzXzEifQ.ab12cd",
    "database_password": "s3cr3t-db-pass",
}


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Point the handler configure_logging installed at a buffer (it holds sys.stderr otherwise)."""
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield stream
    finally:
        handler.setStream(previous)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.sqlite
class TestLogFormat:
    def test_json_is_the_default(self) -> None:
        configure_logging()
        with captured_logs() as stream:
            get_logger("portal_service.test").info("thing_happened", count=3)
        (line,) = json_lines(stream)
        assert line["event"] == "thing_happened"
        assert line["count"] == 3
        assert line["level"] == "info"
        assert line["logger"] == "portal_service.test"
        assert line["timestamp"].endswith("Z")

    def test_console_format_is_for_humans(self) -> None:
        configure_logging(fmt="console")
        with captured_logs() as stream:
            get_logger("portal_service.test").info("thing_happened", count=3)
        output = stream.getvalue()
        assert "thing_happened" in output
        assert "count=3" in output
        with pytest.raises(json.JSONDecodeError):
            json.loads(output.splitlines()[0])

    def test_standard_library_records_share_the_format(self) -> None:
        configure_logging()
        with captured_logs() as stream:
            logging.getLogger("uvicorn.error").warning("worker %s started", 7)
        (line,) = json_lines(stream)
        assert line["event"] == "worker 7 started"
        assert line["logger"] == "uvicorn.error"

    def test_level_filters_lower_records(self) -> None:
        configure_logging(level="WARNING")
        with captured_logs() as stream:
            get_logger("portal_service.test").info("quiet")
            get_logger("portal_service.test").warning("loud")
        assert [line["event"] for line in json_lines(stream)] == ["loud"]

    def test_stripe_sdk_never_logs_below_info(self) -> None:
        # At DEBUG the SDK logs whole response bodies, portal session URLs included.
        configure_logging(level="DEBUG")
        assert logging.getLogger("stripe").getEffectiveLevel() == logging.INFO
        with captured_logs() as stream:
            logging.getLogger("stripe").debug("response body %s", "{...}")
            get_logger("portal_service.test").debug("ours")
        assert [line["event"] for line in json_lines(stream)] == ["ours"]


@pytest.mark.sqlite
class TestLogScrubbing:
    def test_secrets_in_messages_and_values_are_redacted(self) -> None:
        configure_logging()
        token = make_token("user_7")
        with captured_logs() as stream:
            get_logger("portal_service.test").warning(
                f"calling with {SECRETS['stripe_live_key']} and Bearer {token}",
                customer="cus_keep_me",
                restricted=SECRETS["restricted_key"],
                secrets=[SECRETS["webhook_secret"]],
                nested={"link": SECRETS["portal_url"], "ok": "visible"},
                redirect=SECRETS["offline_portal_url"],
                dsn=f"postgresql+asyncpg://portal:{SECRETS['database_password']}@db/portal",
                jwt=token,
            )
        output = stream.getvalue()
        for secret in [*SECRETS.values(), token]:
            assert secret not in output
        (line,) = json_lines(stream)
        assert line["customer"] == "cus_keep_me"
        assert line["nested"]["ok"] == "visible"
        assert line["restricted"] == REDACTED
        assert line["dsn"] == f"postgresql+asyncpg://portal:{REDACTED}@db/portal"

    def test_sensitive_keys_are_redacted_whatever_their_value(self) -> None:
        configure_logging()
        with captured_logs() as stream:
            get_logger("portal_service.test").info(
                "session_created",
                url="https://example.com/anything",
                headers={"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": "backend-key"},
                api_key="backend-key",
            )
        (line,) = json_lines(stream)
        assert line["url"] == REDACTED
        assert line["api_key"] == REDACTED
        assert line["headers"] == {"Authorization": REDACTED, "X-API-Key": REDACTED}
        assert "backend-key" not in stream.getvalue()

    def test_standard_library_records_are_scrubbed(self) -> None:
        configure_logging()
        with captured_logs() as stream:
            logging.getLogger("stripe").info("session %s", SECRETS["portal_url"])
        assert SECRETS["portal_url"] not in stream.getvalue()
        assert REDACTED in stream.getvalue()

    def test_tracebacks_are_scrubbed(self) -> None:
        configure_logging()
        with captured_logs() as stream:
            try:
                raise RuntimeError(f"bad secret {SECRETS['webhook_secret']}")
            except RuntimeError:
                get_logger("portal_service.test").exception("failed")
        (line,) = json_lines(stream)
        assert "RuntimeError" in line["exception"]
        assert SECRETS["webhook_secret"] not in stream.getvalue()

    async def test_requests_log_route_and_request_id_but_no_credentials(
        self, settings_factory: Callable[..., Settings]
    ) -> None:
        app = create_app(settings_factory())
        token = make_token("user_9")

        @app.get("/test-only/boom")
        async def boom() -> None:
            raise RuntimeError(f"leaked {SECRETS['stripe_live_key']}")

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                with captured_logs() as stream:
                    await client.get(
                        "/healthz",
                        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-1"},
                    )
                    await client.get(
                        "/test-only/boom",
                        headers={"X-API-Key": "backend-key-0123456789", "X-Request-ID": "log-2"},
                    )
        lines = json_lines(stream)
        requests = [line for line in lines if line["event"] == "http_request"]
        assert [(r["request_id"], r["route"], r["status"]) for r in requests] == [
            ("log-1", "/healthz", 200),
            ("log-2", "/test-only/boom", 500),
        ]
        (unhandled,) = [line for line in lines if line["event"] == "unhandled_error"]
        assert unhandled["request_id"] == "log-2"
        output = stream.getvalue()
        for secret in (token, "backend-key-0123456789", SECRETS["stripe_live_key"]):
            assert secret not in output
