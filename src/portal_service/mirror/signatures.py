"""The webhook side's name for Stripe's signature scheme (gateway/signatures.py): intake
verifies with it, the offline stand-in signs with it."""

from portal_service.gateway.signatures import InvalidSignatureError, sign, verify_signature

__all__ = ["InvalidSignatureError", "sign", "verify_signature"]
