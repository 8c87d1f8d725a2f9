"""HTTP routes of the access package."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
