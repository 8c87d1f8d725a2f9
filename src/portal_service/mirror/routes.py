"""HTTP routes of the mirror package."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
