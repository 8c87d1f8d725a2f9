"""A hook for code that must act on mirror writes in the same transaction (the outbox of
access.changed notifications): the mirror calls it and knows nothing of what it does.

An observer is put in `session.info[APPLY_OBSERVER]` by whoever builds the sessionmaker;
without one (the default), an apply costs nothing more than this dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

APPLY_OBSERVER = "portal_service.apply_observer"


class ApplyObserver(Protocol):
    async def before_write(
        self,
        session: AsyncSession,
        *,
        kind: str,
        object_id: str,
        account: str,
        livemode: bool,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any],
    ) -> None:
        """Called under the object's lock, right before an applied object is written:
        `before` is the row's stored object (None when there is no row or it holds none),
        `after` the object about to be written."""


def observer_of(session: AsyncSession) -> ApplyObserver | None:
    observer: ApplyObserver | None = session.info.get(APPLY_OBSERVER)
    return observer
