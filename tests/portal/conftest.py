"""Fixtures of the portal tests: the Stripe fake behind respx on the SDK's httpx transport,
apps talking to it, and mirror rows.

Any request to a host or path the fake does not route fails the test: nothing leaves
the machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy.ext.asyncio import AsyncEngine

from portal.fakes import STRIPE_KEY, Mirror, StripeFake


@pytest.fixture
def stripe_fake() -> Iterator[StripeFake]:
    with respx.mock(assert_all_called=False) as router:
        yield StripeFake(router)


@pytest.fixture
def stripe_client(
    client_factory: Callable[..., Any], stripe_fake: StripeFake
) -> Callable[..., Any]:
    """`async with stripe_client(**settings) as client:` an app whose gateway is the real
    StripeGateway talking to the fake (no SDK retries unless asked for)."""

    def factory(**overrides: Any) -> Any:
        values = {"stripe_api_key": STRIPE_KEY, "stripe_max_network_retries": 0, **overrides}
        return client_factory(**values)

    return factory


@pytest.fixture
async def stripe_app(stripe_client: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    """An app on the Stripe fake with the default test settings."""
    async with stripe_client() as client:
        yield client


@pytest.fixture
def mirror(engine: AsyncEngine) -> Mirror:
    return Mirror(engine)
