"""build_gateway(settings): the Stripe gateway, or the offline stand-in without STRIPE_API_KEY."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal_service.gateway.base import Gateway
from portal_service.gateway.offline import OfflineGateway
from portal_service.gateway.stripe import StripeGateway

if TYPE_CHECKING:
    from fastapi import FastAPI

    from portal_service.config import Settings


def build_gateway(settings: Settings, app: FastAPI | None = None) -> Gateway:
    if settings.offline:
        # With `app`, the stand-in delivers its events to that app's own /webhooks.
        return OfflineGateway(
            settings.database_url, api_version=settings.stripe_api_version, app=app
        )
    return StripeGateway(settings)
