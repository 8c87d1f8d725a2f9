"""Rows other writers build from a Stripe object, outside the ordered write path
(mirror/apply.py): a customer created on demand, a portal session recorded as it is made.
Projected with the kind's own columns (mirror/projections.py `KINDS`), with no watermark,
so any later event about the object applies over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from portal_service.mirror import stripe_models as sm
from portal_service.mirror import tables
from portal_service.mirror.projections import KINDS, MirrorKind
from portal_service.mirror.stripe_models import redact_session_urls


def _unwatermarked_row(
    kind: MirrorKind,
    model: Any,
    obj: dict[str, Any],
    *,
    account: str,
    fallback: Mapping[str, Any],
    fixed: Mapping[str, Any],
) -> tables.MirrorColumns:
    """A row projected from Stripe's object (`model`, parsed from `obj`) as `apply_object`
    writes it, but with no watermark (source_ts/source_event_id NULL), so any later event
    about it applies over it: for writers outside the ordered write path. `fallback`:
    values for the columns the object leaves empty; `fixed`: columns it does not know."""
    columns = KINDS[kind].columns(model, "upsert")
    for name, value in fallback.items():
        columns[name] = columns.get(name) or value
    created: datetime | None = getattr(model, "created", None)
    return KINDS[kind].model(
        id=str(getattr(model, "id", "")),
        livemode=getattr(model, "livemode", False),
        account=account,
        stripe_created=created,
        raw=redact_session_urls(obj),
        deleted=bool(getattr(model, "deleted", False)),
        **{**columns, **fixed},
    )


def customer_row(obj: dict[str, Any], *, account: str, app_user_id: str | None) -> tables.Customer:
    """A customer row created on demand (portal/customers.py)."""
    model = sm.Customer.model_validate(obj)
    fixed = {"app_user_id": app_user_id}
    row = _unwatermarked_row("customer", model, obj, account=account, fallback={}, fixed=fixed)
    return cast(tables.Customer, row)


def portal_session_row(
    session: sm.PortalSession,
    obj: dict[str, Any],
    *,
    account: str,
    fallback: Mapping[str, Any],
    **fixed: Any,
) -> tables.PortalSession:
    """A portal session row recorded by POST /portal-sessions (portal/sessions.py):
    `session` is `obj` parsed."""
    row = _unwatermarked_row(
        "billing_portal.session", session, obj, account=account, fallback=fallback, fixed=fixed
    )
    return cast(tables.PortalSession, row)
