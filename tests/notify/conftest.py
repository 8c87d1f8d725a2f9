"""Fixtures of the notification tests: a real receiver and the settings pointing at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mirror.conftest import (  # noqa: F401  (fixtures: a real fault in an apply, a faked Stripe)
    refuse_subscription_status,
    stripe_client,
    stripe_mock,
)
from notify.receiver import NOTIFY_SECRET, Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as found:
        yield found
    assert found.refused == [], "a delivery did not verify"


@pytest.fixture
def notify_settings(receiver: Receiver) -> Callable[..., dict[str, Any]]:
    def settings(**overrides: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "notify_url": receiver.url,
            "notify_secret": NOTIFY_SECRET,
            "notify_coalesce_seconds": 0,
            "notify_timeout": 2,
        }
        values.update(overrides)
        return values

    return settings
