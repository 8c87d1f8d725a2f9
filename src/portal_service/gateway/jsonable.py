"""to_jsonable: what the SDK returns (StripeObject, Decimal, datetime, ...) as plain JSON values,
so a payload crosses the gateway as data the mirror can store as it is.

Hand-written because the SDK's own dump is not exact: stripe v16's
`StripeObject.to_dict(for_json=True)` recurses into StripeObjects and lists of them only, so a
Decimal inside a plain list of a list stays a Decimal; it writes a Decimal with `str()`
(`Decimal("1E+3")` becomes "1E+3", where Stripe's JSON says "1000"); it turns a datetime
into a Unix timestamp; and it lets NaN and Infinity through, which jsonb refuses. No
library in the lock does this conversion either (pydantic's `to_jsonable_python` writes
Decimals as "1E+3" and passes NaN on).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


def to_jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        # JSON has no NaN/Infinity and jsonb refuses them: fail loudly, not silently.
        if not math.isfinite(obj):
            raise ValueError(f"{obj!r} has no JSON form")
        return obj
    if isinstance(obj, decimal.Decimal):
        # Stripe's JSON carries *_decimal fields as strings; "f" avoids 1E+3 forms.
        if not obj.is_finite():
            raise ValueError(f"{obj!r} has no JSON form")
        return format(obj, "f")
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(item) for item in obj]
    # StripeObject stopped being a dict in stripe 15; to_dict() is its documented dump.
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_jsonable(to_dict())
    raise TypeError(f"{type(obj).__name__} has no JSON form")
