"""POST /portal-sessions: what Stripe receives, what the caller gets back, what is recorded,
and who may ask for which customer and configuration."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from portal.fakes import PORTAL_URL_PREFIX, Mirror, StripeFake
from portal_service.mirror.tables import Customer, PortalSession
from support import backend_headers, user_headers

RESPONSE_FIELDS = {
    "id",
    "url",
    "customer_id",
    "configuration_id",
    "locale",
    "return_url",
    "flow_type",
    "livemode",
    "created_at",
}


def sessions_created() -> float:
    return REGISTRY.get_sample_value("portal_sessions_created_total") or 0.0


class TestCreatePortalSession:
    async def test_first_visit_creates_the_customer_then_the_session(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        before = sessions_created()
        response = await stripe_app.post(
            "/portal-sessions", headers=user_headers("user_42", email="ada@example.com")
        )

        assert response.status_code == 201, response.json()
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == RESPONSE_FIELDS
        assert body["url"].startswith(PORTAL_URL_PREFIX)
        assert body["return_url"] == "https://app.example.com/account"
        assert body["locale"] == "auto"
        assert body["flow_type"] is None
        assert body["livemode"] is False

        (created,) = stripe_fake.customers_sent
        digest = hashlib.sha256(b"user_42").hexdigest()[:32]
        assert created.headers["Idempotency-Key"] == f"portal-customer:{digest}:0"
        assert created.form == {"email": "ada@example.com", "metadata[app_user_id]": "user_42"}
        (sent,) = stripe_fake.sessions_sent
        assert sent.form == {
            "customer": body["customer_id"],
            "return_url": "https://app.example.com/account",
            "locale": "auto",
        }
        for request in stripe_fake.requests:
            assert request.headers["Stripe-Version"] == "2026-10-28.endive"
            assert request.headers["Authorization"] == "Bearer sk_test_123"

        (customer,) = await mirror.all(Customer)
        assert (customer.id, customer.app_user_id, customer.email) == (
            body["customer_id"],
            "user_42",
            "ada@example.com",
        )
        assert customer.source_ts is None
        assert customer.raw["metadata"] == {"app_user_id": "user_42"}
        assert sessions_created() == before + 1

    async def test_the_session_row_never_holds_the_url(
        self, stripe_app: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        response = await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))
        body = response.json()
        row = await mirror.get(PortalSession, body["id"])
        assert row.customer_id == body["customer_id"]
        assert row.app_user_id == "user_42"
        assert row.caller == "u:" + hashlib.sha256(b"user_42").hexdigest()[:16]
        assert row.return_url == "https://app.example.com/account"
        assert row.idempotency_key_hash is None
        assert body["url"] not in repr(row.model_dump())
        assert "url" not in row.raw

    async def test_second_visit_reuses_the_linked_customer(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        first = await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))
        second = await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))
        assert first.json()["customer_id"] == second.json()["customer_id"]
        assert len(stripe_fake.customers_sent) == 1
        assert len(stripe_fake.sessions_sent) == 2

    async def test_token_without_email_creates_a_customer_without_email(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))
        (created,) = stripe_fake.customers_sent
        assert "email" not in created.form

    async def test_without_auto_creation_an_unlinked_user_is_customer_not_found(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake
    ) -> None:
        async with stripe_client(auto_create_customers=False) as client:
            response = await client.post("/portal-sessions", headers=user_headers("user_42"))
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"
        assert stripe_fake.requests == []

    async def test_a_user_whose_customer_was_deleted_gets_a_new_one(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        first = await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))
        # customer.deleted tombstones the row and clears the link (the mirror's job).
        await mirror.update(Customer, first.json()["customer_id"], deleted=True, app_user_id=None)

        second = await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))

        assert second.status_code == 201
        assert second.json()["customer_id"] != first.json()["customer_id"]
        keys = [r.headers["Idempotency-Key"] for r in stripe_fake.customers_sent]
        assert [key.rsplit(":", 1)[1] for key in keys] == ["0", "1"]

    async def test_a_replayed_creation_of_a_deleted_customer_moves_to_the_next_key(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        first = await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))
        old = first.json()["customer_id"]
        # A deletion whose payload lost the metadata: only the replay can tell it is stale.
        await mirror.update(Customer, old, deleted=True, app_user_id=None, raw={"id": old})

        second = await stripe_app.post("/portal-sessions", headers=user_headers("user_42"))

        assert second.status_code == 201
        assert second.json()["customer_id"] != old
        keys = [r.headers["Idempotency-Key"].rsplit(":", 1)[1] for r in stripe_fake.customers_sent]
        assert keys == ["0", "0", "1"]

    async def test_an_empty_body_is_the_same_as_no_body(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        response = await stripe_app.post(
            "/portal-sessions", headers=user_headers("user_42"), json={}
        )
        assert response.status_code == 201
        assert len(stripe_fake.sessions_sent) == 1

    async def test_unknown_body_fields_are_refused_before_stripe(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        response = await stripe_app.post(
            "/portal-sessions", headers=user_headers("user_42"), json={"after_expiration": {}}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"
        assert stripe_fake.requests == []

    async def test_without_credentials_is_unauthenticated(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        response = await stripe_app.post("/portal-sessions")
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        assert stripe_fake.requests == []


class TestCallerTarget:
    @pytest.mark.parametrize(
        "body", [{"customer_id": "cus_1"}, {"app_user_id": "user_9"}], ids=["customer", "user"]
    )
    @pytest.mark.sqlite
    async def test_end_user_naming_a_customer_or_user_is_forbidden(
        self, client: httpx.AsyncClient, body: dict[str, str]
    ) -> None:
        response = await client.post("/portal-sessions", headers=user_headers("user_1"), json=body)
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"

    @pytest.mark.parametrize(
        "body", [{}, {"customer_id": "cus_1", "app_user_id": "user_9"}], ids=["neither", "both"]
    )
    @pytest.mark.sqlite
    async def test_api_key_caller_names_exactly_one_target(
        self, client: httpx.AsyncClient, body: dict[str, str]
    ) -> None:
        response = await client.post("/portal-sessions", headers=backend_headers(), json=body)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    async def test_backend_session_for_a_mirrored_customer(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_9")
        response = await stripe_app.post(
            "/portal-sessions", headers=backend_headers(), json={"customer_id": "cus_1"}
        )
        assert response.status_code == 201
        assert stripe_fake.sessions_sent[0].form["customer"] == "cus_1"
        (row,) = await mirror.all(PortalSession)
        assert row.app_user_id == "user_9"
        assert row.caller is not None
        assert row.caller.startswith("k:")

    async def test_backend_session_for_a_customer_only_stripe_knows(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        stripe_fake.customers["cus_new"] = StripeFake.customer_object("cus_new")
        response = await stripe_app.post(
            "/portal-sessions", headers=backend_headers(), json={"customer_id": "cus_new"}
        )
        assert response.status_code == 201
        assert len(stripe_fake.sent("/v1/customers/cus_new")) == 1

    @pytest.mark.parametrize(
        "setup",
        ["unknown", "deleted", "other_mode", "connect_account"],
    )
    async def test_backend_customer_outside_this_mode_and_account_is_not_found(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror, setup: str
    ) -> None:
        if setup == "deleted":
            await mirror.customer("cus_x", deleted=True)
        elif setup == "other_mode":
            await mirror.customer("cus_x", livemode=True)
        elif setup == "connect_account":
            await mirror.customer("cus_x", account="acct_1")
        response = await stripe_app.post(
            "/portal-sessions", headers=backend_headers(), json={"customer_id": "cus_x"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"
        assert stripe_fake.sessions_sent == []

    async def test_backend_session_for_an_app_user_creates_its_customer(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        response = await stripe_app.post(
            "/portal-sessions", headers=backend_headers(), json={"app_user_id": "user_9"}
        )
        assert response.status_code == 201
        (created,) = stripe_fake.customers_sent
        assert created.form == {"metadata[app_user_id]": "user_9"}
        (customer,) = await mirror.all(Customer)
        assert customer.app_user_id == "user_9"


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "portal.toml"
    path.write_text(text)
    return str(path)


CONFIG = """
[configurations.basic]
ids = { test = "bpc_test_basic", live = "bpc_live_basic" }
[configurations.pro]
ids = { test = "bpc_test_pro" }
[configurations.gold]
ids = { live = "bpc_live_gold" }

[[rules]]
configuration = "gold"
metadata = { tier = "gold" }
[[rules]]
configuration = "pro"
products = ["prod_pro"]
[[rules]]
configuration = "basic"
metadata = { tier = "basic" }
"""


class TestConfigurationChoice:
    @pytest.mark.parametrize(
        ("requested", "sent"),
        [
            pytest.param("pro", "bpc_test_pro", id="name"),
            pytest.param("bpc_test_basic", "bpc_test_basic", id="declared-id"),
        ],
    )
    async def test_end_user_may_choose_a_listed_configuration(
        self,
        stripe_client: Callable[..., Any],
        stripe_fake: StripeFake,
        tmp_path: Path,
        requested: str,
        sent: str,
    ) -> None:
        async with stripe_client(portal_config_file=write_config(tmp_path, CONFIG)) as client:
            response = await client.post(
                "/portal-sessions", headers=user_headers("u1"), json={"configuration": requested}
            )
        assert response.status_code == 201
        assert stripe_fake.sessions_sent[0].form["configuration"] == sent
        assert response.json()["configuration_id"] == sent

    @pytest.mark.parametrize("requested", ["bpc_unlisted", "bpc_live_basic", "platinum"])
    async def test_end_user_choosing_an_unlisted_configuration_is_forbidden(
        self,
        stripe_client: Callable[..., Any],
        stripe_fake: StripeFake,
        tmp_path: Path,
        requested: str,
    ) -> None:
        async with stripe_client(portal_config_file=write_config(tmp_path, CONFIG)) as client:
            response = await client.post(
                "/portal-sessions", headers=user_headers("u1"), json={"configuration": requested}
            )
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
        assert stripe_fake.requests == []

    async def test_end_user_choosing_any_configuration_without_a_file_is_forbidden(
        self, stripe_app: httpx.AsyncClient
    ) -> None:
        response = await stripe_app.post(
            "/portal-sessions", headers=user_headers("u1"), json={"configuration": "bpc_1"}
        )
        assert response.status_code == 403

    async def test_api_key_caller_may_pass_any_configuration_id(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1")
        response = await stripe_app.post(
            "/portal-sessions",
            headers=backend_headers(),
            json={"customer_id": "cus_1", "configuration": "bpc_anything"},
        )
        assert response.status_code == 201
        assert stripe_fake.sessions_sent[0].form["configuration"] == "bpc_anything"

    async def test_api_key_caller_naming_an_unknown_configuration_is_invalid(
        self, stripe_app: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1")
        response = await stripe_app.post(
            "/portal-sessions",
            headers=backend_headers(),
            json={"customer_id": "cus_1", "configuration": "platinum"},
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    @pytest.mark.parametrize(
        "requested", ["bpc_\u00e9t\u00e9", "bpc_\u0661\u0662", "bpc_", "bpc_a-b"]
    )
    async def test_api_key_caller_naming_a_malformed_id_is_invalid_before_stripe(
        self,
        stripe_app: httpx.AsyncClient,
        stripe_fake: StripeFake,
        mirror: Mirror,
        requested: str,
    ) -> None:
        await mirror.customer("cus_1")
        response = await stripe_app.post(
            "/portal-sessions",
            headers=backend_headers(),
            json={"customer_id": "cus_1", "configuration": requested},
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"
        assert stripe_fake.sessions_sent == []

    async def test_a_name_without_an_id_for_this_mode_is_invalid(
        self, stripe_client: Callable[..., Any], tmp_path: Path
    ) -> None:
        async with stripe_client(portal_config_file=write_config(tmp_path, CONFIG)) as client:
            response = await client.post(
                "/portal-sessions", headers=user_headers("u1"), json={"configuration": "gold"}
            )
        assert response.status_code == 422
        assert "portal-config apply" in response.json()["detail"]

    @pytest.mark.parametrize(
        ("metadata", "product", "expected"),
        [
            pytest.param({"tier": "basic"}, "prod_pro", "bpc_test_pro", id="product-rule-first"),
            pytest.param({"tier": "basic"}, "prod_other", "bpc_test_basic", id="metadata-rule"),
            # gold matches first but has no test-mode id: the next matching rule applies.
            pytest.param({"tier": "gold"}, "prod_pro", "bpc_test_pro", id="skips-rule-without-id"),
            pytest.param({}, "prod_other", None, id="no-match-stripe-default"),
        ],
    )
    async def test_rules_choose_by_active_product_then_metadata(
        self,
        stripe_client: Callable[..., Any],
        stripe_fake: StripeFake,
        mirror: Mirror,
        tmp_path: Path,
        metadata: dict[str, str],
        product: str,
        expected: str | None,
    ) -> None:
        await mirror.customer("cus_1", app_user_id="u1", metadata=metadata)
        await mirror.subscription(
            "sub_1", customer_id="cus_1", items=[{"id": "si_1", "product_id": product}]
        )
        async with stripe_client(portal_config_file=write_config(tmp_path, CONFIG)) as client:
            response = await client.post("/portal-sessions", headers=user_headers("u1"))
        assert response.status_code == 201
        assert stripe_fake.sessions_sent[0].form.get("configuration") == expected

    async def test_a_product_without_access_does_not_match(
        self,
        stripe_client: Callable[..., Any],
        stripe_fake: StripeFake,
        mirror: Mirror,
        tmp_path: Path,
    ) -> None:
        await mirror.customer("cus_1", app_user_id="u1")
        await mirror.subscription(
            "sub_1",
            customer_id="cus_1",
            status="canceled",
            items=[{"id": "si_1", "product_id": "prod_pro"}],
        )
        async with stripe_client(portal_config_file=write_config(tmp_path, CONFIG)) as client:
            await client.post("/portal-sessions", headers=user_headers("u1"))
        assert "configuration" not in stripe_fake.sessions_sent[0].form


class TestCors:
    async def test_allowed_origin_may_read_the_created_session(
        self, client_factory: Callable[..., Any]
    ) -> None:
        async with client_factory(cors_allow_origins="https://app.example.com") as client:
            response = await client.post(
                "/portal-sessions",
                headers={**user_headers("u1"), "Origin": "https://app.example.com"},
            )
            other = await client.post(
                "/portal-sessions",
                headers={**user_headers("u2"), "Origin": "https://evil.example.com"},
            )
        assert response.status_code == 201
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "access-control-allow-origin" not in other.headers
