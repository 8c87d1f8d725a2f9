"""Prometheus metrics (README.md, "The API at a glance": GET /metrics), aggregated across workers in multiprocess mode."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The `*_created` companion series double the output and nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

WEBHOOK_EVENTS = Counter(
    "portal_webhook_events",
    "Webhook events by type and result.",
    ["type", "result"],
)
WEBHOOK_APPLY_SECONDS = Histogram(
    "portal_webhook_apply_seconds",
    "Time to record and apply one webhook event.",
)
SESSIONS_CREATED = Counter("portal_sessions_created", "Portal sessions created.")
STRIPE_REQUESTS = Counter(
    "portal_stripe_requests",
    "Calls to Stripe by operation and outcome.",
    ["operation", "outcome"],
)
HTTP_REQUESTS = Counter(
    "portal_http_requests",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "portal_http_request_seconds",
    "HTTP request latency by route template.",
    ["route", "method"],
)
# Set from the database at scrape time, so every worker reports the same value.
WEBHOOK_FAILED_EVENTS = Gauge(
    "portal_webhook_failed_events",
    "Recorded events whose apply failed and awaits redelivery or replay.",
    multiprocess_mode="mostrecent",
)
WEBHOOK_OLDEST_PENDING_SECONDS = Gauge(
    "portal_webhook_oldest_pending_seconds",
    "Age of the oldest event recorded but not yet applied (failed or pending).",
    multiprocess_mode="mostrecent",
)

NOTIFICATIONS = Counter(
    "portal_notifications",
    "Outbound access.changed delivery attempts by result (delivered, failed, parked).",
    ["result"],
)
for _result in ("delivered", "failed", "parked"):
    NOTIFICATIONS.labels(result=_result)  # present at 0 before the first delivery
NOTIFICATIONS_OLDEST_UNDELIVERED_SECONDS = Gauge(
    "portal_notifications_oldest_undelivered_seconds",
    "Age of the oldest access.changed notification not delivered yet (pending).",
    multiprocess_mode="mostrecent",
)
NOTIFICATIONS_PARKED = Gauge(
    "portal_notifications_parked",
    "Notifications given up on after three days of failures (replay them).",
    multiprocess_mode="mostrecent",
)


def render_metrics() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus-client
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
