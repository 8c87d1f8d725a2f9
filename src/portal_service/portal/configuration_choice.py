"""Which portal configuration a session opens with, and for which Connect account: the
caller's explicit choice, else the first matching rule of PORTAL_CONFIG_FILE, checked
against the mirrored configurations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.access.facts import customer_subscriptions, subscription_facts
from portal_service.access.policy import AccessPolicy, grants_access
from portal_service.auth import ApiKeyCaller, EndUser
from portal_service.config import Settings
from portal_service.db import utcnow
from portal_service.errors import Forbidden, InvalidRequest
from portal_service.mirror.tables import PLATFORM_ACCOUNT, PortalConfiguration
from portal_service.portal.configs import CONFIGURATION_ID_PATTERN, PortalConfigFile, Selected
from portal_service.portal.customers import ResolvedCustomer


def configured_on_behalf_of(
    portal_config: PortalConfigFile | None, selected: Selected | None
) -> str | None:
    """The Connect account the chosen configuration of the file acts for, if it names one."""
    if portal_config is None or selected is None or selected.name is None:
        return None
    configuration = portal_config.configurations.get(selected.name)
    return configuration.on_behalf_of if configuration is not None else None


def explicit_configuration(
    value: str | None,
    *,
    caller: EndUser | ApiKeyCaller,
    portal_config: PortalConfigFile | None,
    livemode: bool,
) -> Selected | None:
    if value is None:
        return None
    listed = portal_config.lookup(value, livemode=livemode) if portal_config else None
    if listed is not None:
        if listed.configuration_id is None:
            mode = "live" if livemode else "test"
            raise InvalidRequest(
                f"configuration {value!r} has no {mode}-mode id in PORTAL_CONFIG_FILE yet "
                "(run `portal-service portal-config apply`)."
            )
        return listed
    if isinstance(caller, EndUser):
        raise Forbidden("End users may only choose a configuration listed in PORTAL_CONFIG_FILE.")
    # Stripe ids are ASCII letters, digits and underscores (not any Unicode letter).
    if re.fullmatch(CONFIGURATION_ID_PATTERN, value):
        return Selected(name=None, configuration_id=value)
    raise InvalidRequest(
        f"configuration {value!r} is neither a name in PORTAL_CONFIG_FILE nor a bpc_ id."
    )


async def rule_configuration(
    session: AsyncSession,
    portal_config: PortalConfigFile | None,
    *,
    customer: ResolvedCustomer,
    settings: Settings,
) -> Selected | None:
    if portal_config is None or not portal_config.rules:
        return None
    subscriptions = await customer_subscriptions(session, customer.id, livemode=settings.livemode)
    facts = await subscription_facts(session, subscriptions)
    policy = AccessPolicy(
        past_due_grace_days=settings.access_past_due_grace_days,
        access_during_paused_collection=settings.access_during_paused_collection,
    )
    now = utcnow()
    # "Active product": one the customer has access to now, by the same policy as /me/*.
    products = {
        item.product_id
        for sub in facts.values()
        if grants_access(sub, policy=policy, now=now)
        for item in sub.items
        if item.product_id is not None
    }
    return portal_config.select(
        livemode=settings.livemode, active_products=products, metadata=customer.metadata
    )


@dataclass(frozen=True, slots=True)
class MirroredConfiguration:
    """What a session reads of a mirrored configuration."""

    id: str
    default_return_url: str | None
    features: dict[str, Any] | None


def _mirrored(*chosen: Any) -> Any:
    # Only the columns a session reads (not `raw`, the whole object as JSON), built once.
    return (
        select(
            col(PortalConfiguration.id),
            col(PortalConfiguration.default_return_url),
            col(PortalConfiguration.features),
        )
        .where(
            col(PortalConfiguration.livemode) == bindparam("livemode"),
            col(PortalConfiguration.account) == PLATFORM_ACCOUNT,
            col(PortalConfiguration.deleted).is_(False),
            *chosen,
        )
        .limit(1)
    )


_CHOSEN = _mirrored(col(PortalConfiguration.id) == bindparam("configuration_id"))
_MODE_DEFAULT = _mirrored(
    col(PortalConfiguration.is_default).is_(True), col(PortalConfiguration.active).is_(True)
)


async def mirrored_configuration(
    session: AsyncSession, configuration_id: str | None, *, livemode: bool
) -> MirroredConfiguration | None:
    """The chosen configuration as mirrored, or the mode's default when none is chosen."""
    connection = await session.connection()
    if configuration_id is not None:
        result = await connection.execute(
            _CHOSEN, {"livemode": livemode, "configuration_id": configuration_id}
        )
    else:
        result = await connection.execute(_MODE_DEFAULT, {"livemode": livemode})
    row = result.first()
    if row is None:
        return None
    return MirroredConfiguration(id=row[0], default_return_url=row[1], features=row[2])
