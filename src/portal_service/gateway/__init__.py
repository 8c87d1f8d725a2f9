"""The only code that talks to Stripe: an interface, the StripeClient one and the offline one."""

from portal_service.gateway.base import (
    Fetched,
    Gateway,
    GatewayDep,
    ObjectKind,
    StripeIdempotencyConflict,
    StripeObjectMissing,
)

__all__ = [
    "Fetched",
    "Gateway",
    "GatewayDep",
    "ObjectKind",
    "StripeIdempotencyConflict",
    "StripeObjectMissing",
]
