"""Webhooks in, SQL mirror out."""
