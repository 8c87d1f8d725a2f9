"""Reads for apps: /me/*, entitlements and portal capabilities."""
