"""portal-service: Stripe's hosted customer portal behind one small async API."""

__version__ = "0.1.0"
