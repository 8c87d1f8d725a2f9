"""The OpenAPI document describes every access route's response model, errors and 304."""

from __future__ import annotations

from typing import Any

import pytest

from portal_service.config import Settings
from portal_service.main import create_app

ROUTES: dict[str, tuple[str, set[int]]] = {
    "/me": ("BillingCustomer", {401, 403, 404, 503}),
    "/me/subscriptions": ("BillingSubscriptionPage", {401, 403, 404, 422, 503}),
    "/me/entitlements": ("Entitlements", {304, 401, 403, 422, 503}),
    "/me/invoices": ("BillingInvoicePage", {401, 403, 404, 422, 503}),
    "/me/payment-methods": ("BillingPaymentMethodPage", {401, 403, 404, 422, 503}),
    "/customers/{customer_id}/entitlements": ("Entitlements", {304, 401, 403, 404, 422}),
    "/users/{app_user_id}/entitlements": ("Entitlements", {304, 401, 403, 422}),
}
ERROR_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "customer_not_found",
    422: "invalid_request",
    503: "auth_unavailable",
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    settings = Settings(_env_file=None, environment="test")  # type: ignore[call-arg]
    return create_app(settings).openapi()


@pytest.mark.sqlite
class TestAccessOpenApi:
    @pytest.mark.parametrize("path", list(ROUTES))
    def test_success_names_its_response_model(self, spec: dict[str, Any], path: str) -> None:
        schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert schema["schema"] == {"$ref": f"#/components/schemas/{ROUTES[path][0]}"}

    @pytest.mark.parametrize("path", list(ROUTES))
    def test_every_error_is_a_documented_problem(self, spec: dict[str, Any], path: str) -> None:
        responses = spec["paths"][path]["get"]["responses"]
        errors = {int(status) for status in responses if status not in ("200", "304")}
        assert errors | ({304} if "304" in responses else set()) == ROUTES[path][1]
        for status in errors:
            documented = responses[str(status)]
            assert f"`{ERROR_CODES[status]}`" in documented["description"]
            assert documented["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }

    @pytest.mark.parametrize(
        "path", [p for p, (model, _) in ROUTES.items() if model == "Entitlements"]
    )
    def test_entitlement_routes_document_etag_and_304(
        self, spec: dict[str, Any], path: str
    ) -> None:
        operation = spec["paths"][path]["get"]
        assert "ETag" in operation["responses"]["200"]["headers"]
        assert "ETag" in operation["responses"]["304"]["headers"]
        assert "content" not in operation["responses"]["304"]
        assert {"name": "if-none-match", "in": "header"}.items() <= next(
            p for p in operation["parameters"] if p["in"] == "header"
        ).items()

    def test_paged_lists_document_limit_and_cursor(self, spec: dict[str, Any]) -> None:
        for path in ("/me/subscriptions", "/me/invoices", "/me/payment-methods"):
            params = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"]}
            assert params["limit"]["schema"]["maximum"] == 100
            assert params["limit"]["schema"]["default"] == 20
            assert "cursor" in params

    def test_page_envelope_is_data_and_next_cursor(self, spec: dict[str, Any]) -> None:
        page = spec["components"]["schemas"]["BillingInvoicePage"]
        assert set(page["properties"]) == {"data", "next_cursor"}
        assert page["properties"]["data"]["items"] == {
            "$ref": "#/components/schemas/BillingInvoice"
        }

    def test_entitlements_schema_is_the_contract(self, spec: dict[str, Any]) -> None:
        schemas = spec["components"]["schemas"]
        assert set(schemas["Entitlements"]["properties"]) == {
            "customer_id",
            "has_access",
            "products",
            "features",
            "evaluated_at",
        }
        assert set(schemas["EntitledProduct"]["properties"]) == {
            "product_id",
            "price_id",
            "subscription_id",
            "status",
            "quantity",
            "access_until",
        }

    def test_no_schema_exposes_raw(self, spec: dict[str, Any]) -> None:
        for name, schema in spec["components"]["schemas"].items():
            assert "raw" not in schema.get("properties", {}), name
