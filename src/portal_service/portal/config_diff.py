"""What `portal-config diff` compares (config_sync.py): the parameters a file's configuration
declares, and where they differ from Stripe's configuration. Only what the file declares is
compared; lists Stripe may reorder are compared as sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from portal_service.portal.configs import NamedConfiguration

# Lists Stripe may return in another order than the file's: compared as sets.
_UNORDERED = frozenset(
    {"allowed_updates", "options", "default_allowed_updates", "prices", "conditions"}
)


# File keys that are not Stripe configuration parameters.
_NOT_SENT = frozenset({"ids", "on_behalf_of"})


_PRODUCTS = "features.subscription_update.products"


@dataclass(frozen=True, slots=True)
class Difference:
    path: str
    declared: Any
    actual: Any


def mode_name(*, livemode: bool) -> Literal["live", "test"]:
    return "live" if livemode else "test"


def declared_params(configuration: NamedConfiguration) -> dict[str, Any]:
    """Stripe's create/update parameters for what the file declares (unset fields left out)."""
    return configuration.model_dump(mode="json", exclude_none=True, exclude=set(_NOT_SENT))


def _products_by_id(products: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(products, list):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for entry in products:
        if isinstance(entry, dict) and isinstance(entry.get("product"), str):
            out[entry["product"]] = {k: v for k, v in entry.items() if k != "product"}
    return out


def leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if path == _PRODUCTS:
        products = _products_by_id(value)
        yield path, sorted(products)
        for product_id in sorted(products):
            yield from leaves(products[product_id], f"{path}[{product_id}]")
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from leaves(value[key], f"{path}.{key}" if path else key)
    else:
        yield path, value


def _actual_at(obj: dict[str, Any], path: str) -> Any:
    if path == _PRODUCTS:
        return sorted(_products_by_id(_walk(obj, path.split("."))))
    match = re.fullmatch(re.escape(_PRODUCTS) + r"\[([^\]]+)\]\.(.+)", path)
    if match is not None:
        products = _products_by_id(_walk(obj, _PRODUCTS.split(".")))
        return _walk(products.get(match.group(1)), match.group(2).split("."))
    return _walk(obj, path.split("."))


def _walk(value: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _normalised(path: str, value: Any) -> Any:
    if isinstance(value, list) and path.rsplit(".", 1)[-1] in _UNORDERED:
        return sorted(value, key=str)
    return value


def compare(configuration: NamedConfiguration, stripe_object: dict[str, Any]) -> list[Difference]:
    """The declared fields whose value differs in Stripe's configuration, in path order."""
    differences = []
    for path, declared in leaves(declared_params(configuration), ""):
        actual = _actual_at(stripe_object, path)
        if _normalised(path, declared) != _normalised(path, actual):
            differences.append(Difference(path=path, declared=declared, actual=actual))
    return differences
