"""The newcomer's path in a real browser: `portal-service migrate` and `serve` started as
processes on a fresh SQLite database in offline development mode (what `make run` does),
the demo token taken from the start-up line, and the offline portal clicked through in
headless Chromium with JavaScript off.

Playwright drives Debian's `chromium` (scripts/test.sh installs it when missing; Playwright
never downloads a browser here). A browser that cannot start fails the test: no skip.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = os.environ.get("PORTAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BIN = Path(sys.executable).parent
_STARTUP_SECONDS = 60
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Service:
    base_url: str
    token: str
    output: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(tmp: Path, port: int) -> dict[str, str]:
    # Only what a newcomer's shell has: no Stripe key, no secrets, the default environment.
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'portal.db'}",
        "PORTAL_RETURN_URL_ALLOWLIST": f"http://127.0.0.1:{port}",
        "LOG_FORMAT": "console",
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("offline-e2e")
    port = _free_port()
    env = _environment(tmp, port)
    subprocess.run(  # noqa: S603 - our own entry point
        [str(BIN / "portal-service"), "migrate"], env=env, cwd=tmp, check=True, timeout=120
    )
    output = tmp / "serve.log"
    with output.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - our own entry point
            [str(BIN / "portal-service"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        token = _wait_for_startup(process, output, base_url)
        yield Service(base_url=base_url, token=token, output=output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_startup(process: subprocess.Popen[bytes], output: Path, base_url: str) -> str:
    deadline = time.monotonic() + _STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{output.read_text()}")
        text = output.read_text()
        match = re.search(r"^\s*(curl .*/portal-sessions.*)$", text, flags=re.M)
        if match and f"API docs: {base_url}/docs" in text:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    return _token_of(match.group(1), base_url)
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"serve did not start within {_STARTUP_SECONDS}s:\n{output.read_text()}")


def _token_of(curl: str, base_url: str) -> str:
    """The demo token of the printed line, checked to be the request it claims to be."""
    words = shlex.split(curl)
    assert words[:4] == ["curl", "-s", "-X", "POST"]
    assert words[4] == f"{base_url}/portal-sessions"
    assert words[5] == "-H"
    assert words[6].startswith("Authorization: Bearer ")
    return words[6].removeprefix("Authorization: Bearer ")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # No try/skip: a browser that cannot start is a failure of this test.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # JavaScript off: the portal is plain HTML forms.
    context = browser.new_context(java_script_enabled=False, locale="en-US")
    try:
        yield context.new_page()
    finally:
        context.close()


def _session(service: Service, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(
        f"{service.base_url}/portal-sessions", headers=service.headers(), json=body, timeout=30
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _me(service: Service, path: str) -> dict[str, Any]:
    response = httpx.get(f"{service.base_url}{path}", headers=service.headers(), timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestOfflinePortalInABrowser:
    def test_cancel_at_period_end_then_back_on_the_return_url(
        self, service: Service, page: Page
    ) -> None:
        created = _session(service)
        return_url = f"{service.base_url}/offline/return"
        assert created["return_url"] == return_url
        page.goto(created["url"])
        assert page.locator("h1").inner_text() == "Billing"
        assert "Demo SaaS" in page.content()
        screenshot = os.environ.get("PORTAL_SCREENSHOT")
        if screenshot:
            page.set_viewport_size({"width": 900, "height": 1200})
            page.screenshot(path=screenshot, full_page=True)

        page.get_by_role("link", name="Cancel subscription").click()
        page.get_by_role("button", name="Cancel at the end of the period").click()
        assert page.get_by_role("status").inner_text() == "Your change was saved."
        page.get_by_role("link", name="Return to Demo SaaS").click()
        assert page.url == return_url
        assert page.locator("h1").inner_text() == "Back in the app"

        (sub,) = _me(service, "/me/subscriptions")["data"]
        assert sub["cancel_at_period_end"] is True
        assert sub["status"] == "active"

        # Renewing it again from the portal puts it back (and keeps the next test's start).
        page.goto(created["url"])
        page.get_by_role("button", name="Renew subscription").click()
        (sub,) = _me(service, "/me/subscriptions")["data"]
        assert sub["cancel_at_period_end"] is False
        # The link is a bearer credential: the service never logs it.
        assert created["url"].rsplit("/", 1)[1] not in service.output.read_text()

    def test_a_quantity_change_shows_in_entitlements(self, service: Service, page: Page) -> None:
        (sub,) = _me(service, "/me/subscriptions")["data"]
        done_url = f"{service.base_url}/offline/return"
        created = _session(
            service,
            {
                "locale": "de",
                "flow": {
                    "type": "subscription_update",
                    "subscription_id": sub["id"],
                    "after_completion": {"type": "redirect", "return_url": done_url},
                },
            },
        )
        page.goto(created["url"])
        # The deep link opens straight on the update, in the session's language.
        assert page.locator("h2").first.inner_text() == "Abonnement ändern"
        page.get_by_label("Menge").fill("3")
        page.get_by_role("button", name="Bestätigen").click()
        assert page.url == done_url

        entitlements = _me(service, "/me/entitlements")
        assert entitlements["has_access"] is True
        assert [p["quantity"] for p in entitlements["products"]] == [3]
