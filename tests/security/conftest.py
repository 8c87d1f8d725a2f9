"""Fixtures of the security tests: readers of the committed rows."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.conftest import Rows


@pytest.fixture
def rows(engine: AsyncEngine) -> Rows:
    return Rows(engine)
