"""POST /portal-sessions as a service: everything is validated before Stripe is called,
refusals say why, and each created session is recorded (never its URL).

Order matters: request checks that need no database come first (who may ask for what,
locale, return URLs), then the Idempotency-Key's history, the customer (possibly created
in Stripe), the rate limit, the configuration, the flow against the mirror, and only
then the session itself. Every Stripe call happens outside a database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.auth import ApiKeyCaller, EndUser
from portal_service.config import Settings
from portal_service.db import utcnow
from portal_service.errors import (
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    ReturnUrlNotAllowed,
    ReturnUrlRequired,
    UnsupportedLocale,
)
from portal_service.gateway import Gateway, StripeIdempotencyConflict
from portal_service.mirror import stripe_models
from portal_service.mirror.rows import portal_session_row
from portal_service.mirror.tables import PLATFORM_ACCOUNT, PortalSession, table_of
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import SESSIONS_CREATED
from portal_service.portal.configs import PortalConfigFile
from portal_service.portal.configuration_choice import (
    MirroredConfiguration,
    configured_on_behalf_of,
    explicit_configuration,
    mirrored_configuration,
    rule_configuration,
)
from portal_service.portal.customers import ResolvedCustomer, resolve_by_id, resolve_for_user
from portal_service.portal.flows import TaxBehaviorCache, check_flow, flow_data
from portal_service.portal.idempotency import IdempotencyKey, canonical_request, is_replay
from portal_service.portal.locales import UnsupportedLocaleError, resolve_locale
from portal_service.portal.ratelimit import check_rate_limit
from portal_service.portal.schemas import (
    PortalSessionOut,
    PortalSessionRequest,
    RedirectAfterCompletion,
)
from portal_service.portal.startup import return_url_allowlist

log = get_logger("portal_service.portal.sessions")

Caller = EndUser | ApiKeyCaller


@dataclass(frozen=True, slots=True)
class CreatedSession:
    session: PortalSessionOut
    replayed: bool


@dataclass(frozen=True, slots=True)
class _SessionRecord:
    """What only this request knows about a session: Stripe's answer does not say it."""

    customer_id: str
    configuration_id: str | None
    locale: str
    flow_type: str | None
    return_url: str
    app_user_id: str | None
    caller: str
    idempotency_key_hash: str | None
    request_hash: str | None


async def create_portal_session(
    session: AsyncSession,
    *,
    caller: Caller,
    body: PortalSessionRequest,
    idempotency_key: str | None,
    accept_language: str | None,
    settings: Settings,
    gateway: Gateway,
    portal_config: PortalConfigFile | None,
    tax_cache: TaxBehaviorCache,
    service_url: str,
) -> CreatedSession:
    """`service_url`: this service's base URL as the caller reached it (offline mode's
    session pages are served there)."""
    livemode = settings.livemode
    await _autocommit(session)
    _check_target(caller, body)
    explicit = explicit_configuration(
        body.configuration, caller=caller, portal_config=portal_config, livemode=livemode
    )
    try:
        locale = resolve_locale(body.locale, accept_language)
    except UnsupportedLocaleError as exc:
        raise UnsupportedLocale(str(exc)) from exc
    _check_return_urls(body, settings)

    idempotency = (
        IdempotencyKey.build(
            caller=caller,
            key=idempotency_key,
            canonical_request=canonical_request(body, locale=locale),
        )
        if idempotency_key is not None
        else None
    )
    replay = idempotency is not None and await is_replay(session, idempotency, now=utcnow())

    customer = await _resolve_customer(
        session, gateway, caller=caller, body=body, settings=settings
    )
    app_user_id = (
        caller.user_id
        if isinstance(caller, EndUser)
        else (body.app_user_id or customer.app_user_id)
    )
    # Before the flow checks, which may read from Stripe: a limited caller costs nothing.
    if not replay:
        limit, window = settings.rate_limit
        await check_rate_limit(
            session,
            app_user_id=app_user_id,
            customer_id=customer.id,
            limit=limit,
            window_seconds=window,
            now=utcnow(),
        )
    selected = explicit or await rule_configuration(
        session, portal_config, customer=customer, settings=settings
    )
    # The mirrored configuration is read only when something needs it: the return URL's
    # last fallback, or a flow's check of its features (one round trip saved otherwise).
    configuration: MirroredConfiguration | None = None
    return_url = body.return_url or settings.portal_default_return_url
    if return_url is None or body.flow is not None:
        configuration = await mirrored_configuration(
            session, selected.configuration_id if selected else None, livemode=livemode
        )
    if return_url is None and configuration is not None:
        return_url = configuration.default_return_url
    if return_url is None:
        raise ReturnUrlRequired(
            "No return_url was given, PORTAL_DEFAULT_RETURN_URL is not set and the portal "
            "configuration has no default_return_url."
        )
    if body.flow is not None:
        await check_flow(
            session,
            gateway,
            flow=body.flow,
            customer_id=customer.id,
            livemode=livemode,
            configuration_features=configuration.features if configuration is not None else None,
            tax_cache=tax_cache,
        )

    params: dict[str, Any] = {"customer": customer.id, "return_url": return_url, "locale": locale}
    if selected is not None:
        params["configuration"] = selected.configuration_id
    if body.flow is not None:
        params["flow_data"] = flow_data(body.flow)
    on_behalf_of = body.on_behalf_of or configured_on_behalf_of(portal_config, selected)
    if on_behalf_of is not None:
        params["on_behalf_of"] = on_behalf_of

    await session.commit()  # end the reads (and release the connection) before calling Stripe
    try:
        created = await gateway.create_portal_session(
            params,
            idempotency_key=idempotency.stripe_key if idempotency else None,
            service_url=service_url,
        )
    except StripeIdempotencyConflict as exc:
        # A concurrent request with this key and another body reached Stripe first.
        raise IdempotencyKeyReused() from exc

    parsed = stripe_models.PortalSession.model_validate(created)
    recorded = not replay and await _record(
        session,
        created=created,
        parsed=parsed,
        defaults=_SessionRecord(
            customer_id=customer.id,
            configuration_id=selected.configuration_id if selected else None,
            locale=locale,
            flow_type=body.flow.type if body.flow else None,
            return_url=return_url,
            app_user_id=app_user_id,
            caller=caller.caller,
            idempotency_key_hash=idempotency.key_hash if idempotency else None,
            request_hash=idempotency.request_hash if idempotency else None,
        ),
    )
    if recorded:
        SESSIONS_CREATED.inc()
    log.info(
        "portal_session_created",
        session_id=parsed.id,
        customer_id=customer.id,
        flow_type=parsed.flow_type,
        caller=caller.caller,
        replayed=not recorded,
    )
    return CreatedSession(
        session=PortalSessionOut(
            id=parsed.id,
            url=str(created["url"]),
            customer_id=parsed.customer or customer.id,
            configuration_id=parsed.configuration,
            locale=parsed.locale or locale,
            return_url=parsed.return_url or return_url,
            flow_type=parsed.flow_type or (body.flow.type if body.flow else None),
            livemode=parsed.livemode,
            created_at=parsed.created or utcnow(),
        ),
        replayed=not recorded,
    )


def _check_target(caller: Caller, body: PortalSessionRequest) -> None:
    if isinstance(caller, EndUser):
        if body.customer_id is not None or body.app_user_id is not None:
            raise Forbidden(
                "customer_id and app_user_id are for API-key callers; an end user's "
                "customer comes from the token."
            )
        if body.on_behalf_of is not None:
            raise Forbidden(
                "on_behalf_of is for API-key callers; an end user gets the configuration's."
            )
        return
    if (body.customer_id is None) == (body.app_user_id is None):
        raise InvalidRequest("An API-key caller gives exactly one of customer_id or app_user_id.")


def _check_return_urls(body: PortalSessionRequest, settings: Settings) -> None:
    allowlist = return_url_allowlist(settings)
    if body.return_url is not None and not allowlist.allows(body.return_url):
        raise ReturnUrlNotAllowed(
            "return_url does not match any entry of PORTAL_RETURN_URL_ALLOWLIST."
        )
    after = body.flow.after_completion if body.flow is not None else None
    if isinstance(after, RedirectAfterCompletion) and not allowlist.allows(after.return_url):
        raise ReturnUrlNotAllowed(
            "flow.after_completion.return_url does not match any entry of "
            "PORTAL_RETURN_URL_ALLOWLIST."
        )


async def _resolve_customer(
    session: AsyncSession,
    gateway: Gateway,
    *,
    caller: Caller,
    body: PortalSessionRequest,
    settings: Settings,
) -> ResolvedCustomer:
    if isinstance(caller, EndUser):
        return await resolve_for_user(
            session,
            gateway,
            app_user_id=caller.user_id,
            email=caller.email,
            livemode=settings.livemode,
            auto_create=settings.auto_create_customers,
        )
    if body.app_user_id is not None:
        return await resolve_for_user(
            session,
            gateway,
            app_user_id=body.app_user_id,
            email=None,
            livemode=settings.livemode,
            auto_create=settings.auto_create_customers,
        )
    assert body.customer_id is not None  # noqa: S101 - _check_target guarantees one of them
    return await resolve_by_id(
        session, gateway, customer_id=body.customer_id, livemode=settings.livemode
    )


async def _autocommit(session: AsyncSession) -> None:
    """On PostgreSQL, run the session's next statements outside a transaction (until the
    next commit hands its connection back to the pool).

    For the reads before the Stripe call and for the record's single INSERT: under READ
    COMMITTED every statement takes its own snapshot even inside a transaction, so BEGIN
    and COMMIT around them are two round trips that buy nothing. A path that writes more
    than one statement (a new customer, a flow's subscription fetched from Stripe) commits
    first, and its next transaction is an ordinary one again: the option lasts only as
    long as the connection is held. SQLite keeps its transaction (its BEGIN is local)."""
    if session.in_transaction() or session.get_bind().dialect.name != "postgresql":
        return
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


_SESSIONS = table_of(PortalSession)
_INSERT_NEW_SESSION: dict[str, Insert] = {
    # Nothing on any conflict: a row with this id (the webhook's), or this key's hash
    # (a concurrent request with the same Idempotency-Key), is handled below.
    "postgresql": postgresql.insert(_SESSIONS).on_conflict_do_nothing().returning(_SESSIONS.c.id),
    "sqlite": sqlite.insert(_SESSIONS).on_conflict_do_nothing().returning(_SESSIONS.c.id),
}


def _row_values(row: PortalSession) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in _SESSIONS.columns}


async def _record(
    session: AsyncSession,
    *,
    created: dict[str, Any],
    parsed: stripe_models.PortalSession,
    defaults: _SessionRecord,
) -> bool:
    """Write the session's row (never its URL); False if another request already did
    (a concurrent use of the same Idempotency-Key).

    The usual case is one statement: INSERT .. ON CONFLICT DO NOTHING (on PostgreSQL
    outside a transaction, so it is also the commit). Only when it inserts nothing is the
    row read: the webhook may have recorded the session first."""
    fresh = portal_session_row(
        parsed,
        created,
        account=PLATFORM_ACCOUNT,
        fallback={
            "customer_id": defaults.customer_id,
            "configuration_id": defaults.configuration_id,
            "locale": defaults.locale,
            "flow_type": defaults.flow_type,
            "return_url": defaults.return_url,
        },
        app_user_id=defaults.app_user_id,
        caller=defaults.caller,
        created=utcnow(),
        idempotency_key_hash=defaults.idempotency_key_hash,
        request_hash=defaults.request_hash,
    )
    await _autocommit(session)
    connection = await session.connection()
    insert = _INSERT_NEW_SESSION[connection.dialect.name]
    inserted = (await connection.execute(insert, _row_values(fresh))).first()
    if inserted is not None:
        return True
    await session.commit()  # the conflict's handling below is a transaction of its own
    row = await session.get(PortalSession, parsed.id, populate_existing=True)
    if row is None:
        # Refused by the key's unique index: another request with this key recorded it.
        log.warning("portal_session_key_conflict", session_id=parsed.id)
        return False
    if row.caller is not None:
        return False
    # The billing_portal.session.created webhook recorded it first: add what only this
    # request knows, leave what the webhook applied (raw, watermark) alone.
    try:
        async with session.begin_nested():
            row.app_user_id = defaults.app_user_id
            row.caller = defaults.caller
            row.idempotency_key_hash = defaults.idempotency_key_hash
            row.request_hash = defaults.request_hash
            row.customer_id = row.customer_id or defaults.customer_id
            row.configuration_id = row.configuration_id or defaults.configuration_id
            row.locale = row.locale or defaults.locale
            row.flow_type = row.flow_type or defaults.flow_type
            row.return_url = row.return_url or defaults.return_url
    except IntegrityError:
        log.warning("portal_session_key_conflict", session_id=parsed.id)
        return False
    return True
