"""`portal-service portal-config diff|apply` (README.md, "Portal configurations as code"):
the file's portal configurations against Stripe's for the key's mode, and the writes that
make Stripe match.

Only what the file declares is compared and sent: a field the file leaves out stays as
Stripe (or the Dashboard) has it. Stripe calls happen first; the mirror write after them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.errors import DomainError
from portal_service.gateway import Fetched, Gateway, StripeObjectMissing
from portal_service.mirror.apply import apply_fetched
from portal_service.portal.config_diff import (
    Difference,
    compare,
    declared_params,
    leaves,
    mode_name,
)
from portal_service.portal.configs import PortalConfigFile
from portal_service.portal.toml_ids import with_ids


class ConfigSyncError(Exception):
    """diff/apply cannot go on; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One named configuration of the file, against Stripe's for this mode."""

    name: str
    configuration_id: str | None  # None: none for this mode yet, to create
    params: dict[str, Any]
    differences: tuple[Difference, ...]
    current: Fetched | None  # Stripe's configuration, when there is one
    # Found in Stripe by its `name` (the file had no id for this mode): the id is recorded.
    adopted: bool = False

    @property
    def changed(self) -> bool:
        return self.configuration_id is None or bool(self.differences)


@dataclass(frozen=True, slots=True)
class Written:
    name: str
    action: Literal["created", "updated", "unchanged"]
    fetched: Fetched

    @property
    def configuration_id(self) -> str:
        return str(self.fetched.object["id"])


def _stripe_failure(exc: DomainError, what: str) -> ConfigSyncError:
    return ConfigSyncError(f"{what}: {exc.detail}")


async def plan_configurations(
    gateway: Gateway, config_file: PortalConfigFile, *, livemode: bool
) -> list[Plan]:
    """Each named configuration (in name order) against Stripe's for this mode. One without
    an id for the mode that declares Stripe's `name` is matched to the mode's configuration
    of that name, if there is one (active ones first); several are an error."""
    plans = []
    by_name: dict[str, list[Fetched]] | None = None
    for name in sorted(config_file.configurations):
        configuration = config_file.configurations[name]
        params = declared_params(configuration)
        configuration_id = configuration.id_for(livemode=livemode)
        if configuration_id is None and configuration.name is not None:
            if by_name is None:
                by_name = await _configurations_by_name(gateway)
            found = _one_named(name, configuration.name, by_name.get(configuration.name, []))
            if found is not None:
                differences = tuple(compare(configuration, found.object))
                found_id = str(found.object["id"])
                plans.append(Plan(name, found_id, params, differences, found, adopted=True))
                continue
        if configuration_id is None:
            plans.append(Plan(name, None, params, (), None))
            continue
        try:
            current = await gateway.retrieve("billing_portal.configuration", configuration_id)
        except StripeObjectMissing:
            raise ConfigSyncError(
                f"configuration {name}: {configuration_id} does not exist in Stripe "
                f"({mode_name(livemode=livemode)} mode)"
            ) from None
        except DomainError as exc:
            raise _stripe_failure(exc, f"configuration {name}: reading {configuration_id}") from exc
        differences = tuple(compare(configuration, current.object))
        plans.append(Plan(name, configuration_id, params, differences, current))
    return plans


async def _configurations_by_name(gateway: Gateway) -> dict[str, list[Fetched]]:
    out: dict[str, list[Fetched]] = {}
    try:
        async for page in gateway.list_pages("billing_portal.configuration", params={"limit": 100}):
            for obj in page.objects:
                if isinstance(obj.get("name"), str):
                    out.setdefault(obj["name"], []).append(Fetched(obj, page.fetched_at))
    except DomainError as exc:
        raise _stripe_failure(exc, "listing portal configurations") from exc
    return out


def _one_named(name: str, stripe_name: str, found: list[Fetched]) -> Fetched | None:
    active = [f for f in found if f.object.get("active") is not False]
    candidates = active or found
    if len(candidates) > 1:
        ids = ", ".join(sorted(str(f.object["id"]) for f in candidates))
        raise ConfigSyncError(
            f"configuration {name}: several Stripe configurations are named "
            f"{stripe_name!r} ({ids}); put the right one in its ids"
        )
    return candidates[0] if candidates else None


async def check_catalog(
    gateway: Gateway, config_file: PortalConfigFile, *, livemode: bool
) -> list[str]:
    """One line per product or price the file names that this mode's Stripe lacks, or
    per price listed under a product it does not belong to."""
    listed: dict[str, set[str]] = {}
    for configuration in config_file.configurations.values():
        update = configuration.features.subscription_update
        for entry in update.products if update is not None else []:
            listed.setdefault(entry.product, set()).update(entry.prices)
    mode = mode_name(livemode=livemode)
    problems = []
    for product_id in sorted(listed):
        try:
            await gateway.retrieve("product", product_id)
        except StripeObjectMissing:
            problems.append(f"product {product_id}: not found in Stripe ({mode} mode)")
        except DomainError as exc:
            raise _stripe_failure(exc, f"reading product {product_id}") from exc
        for price_id in sorted(listed[product_id]):
            try:
                price = await gateway.retrieve("price", price_id)
            except StripeObjectMissing:
                problems.append(f"price {price_id}: not found in Stripe ({mode} mode)")
                continue
            except DomainError as exc:
                raise _stripe_failure(exc, f"reading price {price_id}") from exc
            owner = price.object.get("product")
            if isinstance(owner, dict):
                owner = owner.get("id")
            if owner != product_id:
                problems.append(
                    f"price {price_id}: belongs to product {owner}, not {product_id} "
                    "(listed under it in the file)"
                )
    return problems


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def idempotency_key(plan: Plan, *, livemode: bool) -> str:
    """The same plan gives the same key, so a retried apply (after a timeout, a crash
    before the ids were recorded) gets Stripe's first answer instead of a second
    configuration. An update's key also covers the state it changes: after someone
    edits the configuration in the Dashboard, the next apply is a new request, not a
    replay of the previous one."""
    before = [[d.path, d.actual] for d in plan.differences]
    material = {
        "mode": mode_name(livemode=livemode),
        "id": plan.configuration_id,
        "params": plan.params,
        "before": before,
    }
    return f"portal-config-{plan.name}-{_digest(material)}"


def _update_params(params: dict[str, Any]) -> dict[str, Any]:
    # The SDK sends nothing for an empty list; Stripe clears a list given "".
    def clear(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clear(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clear(v) for v in value] if value else ""
        return value

    cleared: dict[str, Any] = clear(params)
    return cleared


async def write_configurations(
    gateway: Gateway,
    plans: list[Plan],
    *,
    livemode: bool,
    created: dict[str, str],
) -> list[Written]:
    """Create or update each changed plan's configuration; `created` receives name → id
    of each configuration created, as soon as Stripe answers (recorded even if a later
    write fails)."""
    written = []
    for plan in plans:
        key = idempotency_key(plan, livemode=livemode)
        try:
            if plan.configuration_id is None:
                fetched = await gateway.create_portal_configuration(
                    plan.params, idempotency_key=key
                )
                created[plan.name] = str(fetched.object["id"])
                written.append(Written(plan.name, "created", fetched))
            elif plan.differences:
                fetched = await gateway.update_portal_configuration(
                    plan.configuration_id,
                    _update_params(plan.params),
                    idempotency_key=key,
                )
                written.append(Written(plan.name, "updated", fetched))
            else:
                assert plan.current is not None  # noqa: S101 - a plan with an id was read
                written.append(Written(plan.name, "unchanged", plan.current))
        except DomainError as exc:
            verb = "creating" if plan.configuration_id is None else "updating"
            raise _stripe_failure(exc, f"configuration {plan.name}: {verb}") from exc
    return written


async def mirror_configurations(
    sessionmaker: async_sessionmaker[AsyncSession], written: list[Written], *, livemode: bool
) -> None:
    """Stripe's answers into `portal_configurations`, in one transaction."""
    async with sessionmaker() as session:
        for item in written:
            await apply_fetched(
                session,
                "billing_portal.configuration",
                item.fetched.object,
                item.fetched.fetched_at,
                livemode=livemode,
            )
        await session.commit()


class CatalogProblems(ConfigSyncError):
    """Products or prices the file names are missing in Stripe: nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"nothing written: {len(problems)} product(s) or price(s) missing or misplaced"
        )


@dataclass(frozen=True, slots=True)
class Applied:
    written: list[Written]
    recorded: dict[str, str]  # name → id of the configurations created, now in the file


async def apply_file(
    gateway: Gateway,
    sessionmaker: async_sessionmaker[AsyncSession],
    path: str | Path,
    config_file: PortalConfigFile,
    *,
    livemode: bool,
) -> Applied:
    """Read Stripe, check the catalog, write Stripe, record new ids in the file, then the
    mirror. ConfigSyncError (CatalogProblems before any write) when it cannot go on."""
    created: dict[str, str] = {}
    try:
        plans = await plan_configurations(gateway, config_file, livemode=livemode)
        # Found by name: recorded like a created one, so the next run reads it by id.
        created.update({p.name: str(p.configuration_id) for p in plans if p.adopted})
        problems = await check_catalog(gateway, config_file, livemode=livemode)
        if problems:
            raise CatalogProblems(problems)
        written = await write_configurations(gateway, plans, livemode=livemode, created=created)
    finally:
        # Even when a later write failed: an id left unrecorded is a configuration the next
        # apply creates again once Stripe's idempotency window (24 hours) has passed.
        if created:
            await asyncio.to_thread(record_ids, path, created, livemode=livemode)
    try:
        await mirror_configurations(sessionmaker, written, livemode=livemode)
    except (SQLAlchemyError, OSError) as exc:
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigSyncError(f"Stripe is updated, but the mirror write failed: {first}") from exc
    return Applied(written=written, recorded=created)


# ---- recording ids in the file -------------------------------------------------------


def record_ids(path: str | Path, ids: dict[str, str], *, livemode: bool) -> None:
    """Write `ids` (configuration name → id) into the file's `ids` for this mode, leaving
    every other line as it was. ConfigSyncError, and the file untouched, if the edit
    cannot be made safely."""
    path = Path(path)
    mode = mode_name(livemode=livemode)
    edited = with_ids(path.read_bytes().decode(), ids, mode=mode)
    if edited is None:
        listing = ", ".join(f"{name} = {ids[name]}" for name in sorted(ids))
        raise ConfigSyncError(
            f"could not record the {mode} ids in {path}; add them by hand: {listing}"
        )
    # Atomically, keeping the file's permissions: a crash leaves the old or the new file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(edited.encode())
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---- output ----------------------------------------------------------------------------


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def diff_lines(plans: list[Plan], *, livemode: bool) -> list[tuple[str, str | None]]:
    """(line, rich style) of the diff: `-` Stripe's value, `+` the file's."""
    mode = mode_name(livemode=livemode)
    out: list[tuple[str, str | None]] = []
    for plan in plans:
        if plan.configuration_id is None:
            out.append((f"+ configuration {plan.name}: to create ({mode} mode)", "green"))
            for path, value in leaves(plan.params, ""):
                out.append((f"+   {path} = {_shown(value)}", "green"))
        elif plan.differences:
            found = ", found by name" if plan.adopted else ""
            out.append((f"~ configuration {plan.name} ({plan.configuration_id}{found})", "yellow"))
            for difference in plan.differences:
                out.append((f"-   {difference.path} = {_shown(difference.actual)}", "red"))
                out.append((f"+   {difference.path} = {_shown(difference.declared)}", "green"))
        else:
            out.append((f"  configuration {plan.name} ({plan.configuration_id}): identical", None))
    return out
