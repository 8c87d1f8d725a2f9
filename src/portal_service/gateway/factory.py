"""build_gateway(settings): the Stripe gateway, or the offline stand-in without STRIPE_API_KEY."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal_service.gateway.base import Gateway
from portal_service.gateway.offline import MirroredObjects, OfflineGateway
from portal_service.gateway.stripe import StripeGateway

if TYPE_CHECKING:
    from fastapi import FastAPI

    from portal_service.config import Settings


def build_gateway(
    settings: Settings, app: FastAPI | None = None, *, mirrored: MirroredObjects | None = None
) -> Gateway:
    if settings.offline:
        # With `app`, the stand-in delivers its events to that app's own /webhooks; with
        # `mirrored`, it takes over customers the mirror holds and it does not.
        return OfflineGateway(
            settings.database_url,
            api_version=settings.stripe_api_version,
            app=app,
            mirrored=mirrored,
        )
    return StripeGateway(settings)
