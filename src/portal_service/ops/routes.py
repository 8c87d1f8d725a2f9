"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from portal_service.app_state import app_state
from portal_service.db import create_sessionmaker, for_reads, utcnow
from portal_service.migrations import schema_state
from portal_service.mirror.inbox import awaiting_retry
from portal_service.mirror.tables import StripeEvent
from portal_service.notify.admin import refresh_notification_gauges
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import (
    WEBHOOK_FAILED_EVENTS,
    WEBHOOK_OLDEST_PENDING_SECONDS,
    render_metrics,
)

router = APIRouter(tags=["ops"])
log = get_logger("portal_service.ops")
READY_TIMEOUT_SECONDS = 3.0


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: Literal["ok", "unreachable"]
    schema_: Literal["current", "ahead", "behind", "empty", "unknown"] = Field(alias="schema")

    model_config = ConfigDict(populate_by_name=True)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Ready for traffic: database reachable and not behind the code's migrations",
    responses={503: {"model": Readiness, "description": "Database unreachable or behind"}},
    response_model=Readiness,
    response_model_by_alias=True,
)
async def readyz(request: Request) -> JSONResponse:
    try:
        state = await asyncio.wait_for(
            schema_state(app_state(request).engine), READY_TIMEOUT_SECONDS
        )
        database = "ok"
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        log.warning("readiness_database_error", error=type(exc).__name__)
        state, database = "unknown", "unreachable"
    ready = database == "ok" and state in ("current", "ahead")
    body = {
        "status": "ready" if ready else "not_ready",
        "database": database,
        "schema": state,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def _refresh_event_gauges(request: Request) -> None:
    # Alerting gauges come from the database, so every replica and worker agrees.
    # The primary (a replica may lag), read-only: on SQLite a scrape must not queue for
    # the write lock behind a webhook being applied.
    async with create_sessionmaker(for_reads(app_state(request).engine))() as session:
        # Events stuck `pending` past the in-flight window count as failed (ARCHITECTURE.md, "Webhook processing").
        failed = await session.scalar(
            select(func.count()).select_from(StripeEvent).where(awaiting_retry(utcnow()))
        )
        oldest = await session.scalar(
            select(func.min(StripeEvent.received_at)).where(
                col(StripeEvent.status).in_(("failed", "pending"))
            )
        )
        if app_state(request).settings.notify_url is not None:
            await refresh_notification_gauges(session)
    WEBHOOK_FAILED_EVENTS.set(failed or 0)
    WEBHOOK_OLDEST_PENDING_SECONDS.set(
        max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    try:
        await _refresh_event_gauges(request)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("metrics_database_error", error=type(exc).__name__)
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
