"""Fixtures of the fault tests: readers of the committed rows and the apply log."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from faults.services import apply_log
from mirror.conftest import Rows


@pytest.fixture
def rows(engine: AsyncEngine) -> Rows:
    return Rows(engine)


@pytest.fixture
async def logged(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with apply_log(engine) as logging_engine:
        yield logging_engine
