"""Outbound access.changed notifications: outbox, delivery loop, access_until scheduler."""
