"""A portal session URL is a bearer credential: no log line of a successful request holds
it, nor the caller's token, even at LOG_LEVEL=DEBUG. Checked before the scrubbing
processor (nothing is logged in the first place) and in the rendered output."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog

from portal.fakes import StripeFake
from support import BACKEND_KEY, make_token


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        return [f"{r.name} {r.getMessage()} {r.__dict__!r}" for r in self.records]


@contextmanager
def recorded() -> Iterator[_Records]:
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@contextmanager
def rendered_output() -> Iterator[io.StringIO]:
    """The app's own log handler, pointed at a buffer."""
    stream = io.StringIO()
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(stream) for h in handlers]
    try:
        yield stream
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setStream(old)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _secrets_of(url: str, token: str) -> list[str]:
    path = urlsplit(url).path
    return [url, path, path.rsplit("/", 1)[-1], token, BACKEND_KEY]


class TestSessionLogs:
    async def test_a_successful_request_logs_the_session_id_and_never_its_url(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake
    ) -> None:
        token = make_token("user_1", email="ada@example.com")
        async with stripe_client(log_level="DEBUG") as client:
            with recorded() as stdlib, structlog.testing.capture_logs() as events:
                response = await client.post(
                    "/portal-sessions",
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"},
                )
        assert response.status_code == 201
        body = response.json()
        logged = [repr(event) for event in events] + stdlib.texts()
        assert any(body["id"] in line for line in logged), "the session id is logged"
        assert any("portal_session_created" in line for line in logged)
        for secret in _secrets_of(body["url"], token):
            assert not any(secret in line for line in logged), f"{secret[:24]}... was logged"

    async def test_the_rendered_log_output_holds_no_url_or_token(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake
    ) -> None:
        token = make_token("user_1")
        async with stripe_client(log_level="DEBUG") as client:
            with rendered_output() as stream:
                response = await client.post(
                    "/portal-sessions", headers={"Authorization": f"Bearer {token}"}
                )
        output = stream.getvalue()
        assert response.json()["id"] in output
        for secret in _secrets_of(response.json()["url"], token):
            assert secret not in output

    @pytest.mark.sqlite
    async def test_offline_links_are_not_logged_when_created_or_opened(
        self, client_factory: Callable[..., Any]
    ) -> None:
        token = make_token("user_1")
        async with client_factory(log_level="DEBUG") as client:
            with recorded() as stdlib, structlog.testing.capture_logs() as events:
                response = await client.post(
                    "/portal-sessions", headers={"Authorization": f"Bearer {token}"}
                )
                page = await client.get(urlsplit(response.json()["url"]).path)
        assert page.status_code == 200
        logged = [repr(event) for event in events] + stdlib.texts()
        assert any(response.json()["id"] in line for line in logged)
        for secret in _secrets_of(response.json()["url"], token):
            assert not any(secret in line for line in logged)
