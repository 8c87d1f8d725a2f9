"""HTTP routes of the notify package: GET /admin/notifications and the replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from portal_service.auth import AdminCaller
from portal_service.db import DbSession
from portal_service.errors import Forbidden, InvalidRequest, Unauthenticated, problem_responses
from portal_service.notify.admin import (
    NotificationNotFound,
    list_notifications,
    replay_notification,
)
from portal_service.notify.schemas import NotificationOut, NotificationPage, NotificationStatus
from portal_service.pagination import PageParams

router = APIRouter(tags=["admin"])


@router.get(
    "/admin/notifications",
    summary="Outbound access.changed notifications, newest first",
    responses=problem_responses(Unauthenticated, Forbidden, InvalidRequest),
)
async def admin_list_notifications(
    _caller: AdminCaller,
    session: DbSession,
    page: PageParams,
    status: Annotated[
        NotificationStatus | None, Query(description="Only notifications in this status.")
    ] = None,
) -> NotificationPage:
    return await list_notifications(session, status=status, page=page)


@router.post(
    "/admin/notifications/{id}/replay",
    summary="Deliver one notification again",
    description=(
        "Queues the notification for delivery now, whatever its status, with three more "
        "days of retries. Still in order: the customer's later pending ones wait for it."
    ),
    responses=problem_responses(Unauthenticated, Forbidden, NotificationNotFound, InvalidRequest),
)
async def admin_replay_notification(
    _caller: AdminCaller,
    session: DbSession,
    # `{id}` in the path, as README.md, "Being told when access changes", names it.
    notification_id: Annotated[str, Path(alias="id", max_length=64)],
) -> NotificationOut:
    return await replay_notification(session, notification_id)
