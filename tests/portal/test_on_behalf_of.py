"""POST /portal-sessions passes `on_behalf_of` (Connect) from the backend caller or the
chosen configuration of PORTAL_CONFIG_FILE, validated; end users cannot choose it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from portal.fakes import Mirror, StripeFake
from support import backend_headers, user_headers

CONFIG = """
[configurations.connected]
ids = { test = "bpc_test_connected" }
on_behalf_of = "acct_1Connected"
[configurations.plain]
ids = { test = "bpc_test_plain" }
"""


def config_file(tmp_path: Path) -> str:
    path = tmp_path / "portal.toml"
    path.write_text(CONFIG)
    return str(path)


class TestOnBehalfOf:
    async def test_backend_caller_passes_it_to_stripe(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1")
        response = await stripe_app.post(
            "/portal-sessions",
            headers=backend_headers(),
            json={"customer_id": "cus_1", "on_behalf_of": "acct_9Xy"},
        )
        assert response.status_code == 201, response.json()
        assert stripe_fake.sessions_sent[0].form["on_behalf_of"] == "acct_9Xy"

    async def test_the_configuration_of_the_file_supplies_it(
        self,
        stripe_client: Callable[..., Any],
        stripe_fake: StripeFake,
        tmp_path: Path,
    ) -> None:
        async with stripe_client(portal_config_file=config_file(tmp_path)) as client:
            connected = await client.post(
                "/portal-sessions", headers=user_headers("u1"), json={"configuration": "connected"}
            )
            plain = await client.post(
                "/portal-sessions", headers=user_headers("u1"), json={"configuration": "plain"}
            )
        assert (connected.status_code, plain.status_code) == (201, 201)
        first, second = stripe_fake.sessions_sent
        assert first.form["on_behalf_of"] == "acct_1Connected"
        assert "on_behalf_of" not in second.form

    async def test_end_user_may_not_choose_it(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        response = await stripe_app.post(
            "/portal-sessions", headers=user_headers("u1"), json={"on_behalf_of": "acct_1"}
        )
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
        assert stripe_fake.sessions_sent == []

    @pytest.mark.parametrize("value", ["cus_1", "acct_", "acct_1/acct_2", "x" * 300])
    async def test_anything_but_an_account_id_is_invalid(
        self, stripe_app: httpx.AsyncClient, mirror: Mirror, value: str
    ) -> None:
        await mirror.customer("cus_1")
        response = await stripe_app.post(
            "/portal-sessions",
            headers=backend_headers(),
            json={"customer_id": "cus_1", "on_behalf_of": value},
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"
