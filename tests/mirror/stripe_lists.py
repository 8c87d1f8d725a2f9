"""A respx fake of Stripe's list and retrieve endpoints for the sync tests: lists newest first
with `limit`, `starting_after` and `has_more`, the filters the service sends, a chosen
`Date` header, and queued failures per request.

Import as `from mirror.stripe_lists import StripeLists`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import respx

from mirror.stripe_payloads import http_date

STRIPE_API = "https://api.stripe.com"
_ITEM = re.compile(r"^/v1/(customers|subscriptions|invoices|payment_methods|tax_ids)/([^/]+)$")
# Lists that exist (maybe empty) without being arranged.
_ALWAYS_LISTED = re.compile(
    r"^/v1/(entitlements/active_entitlements|customers/[^/]+/(payment_methods|tax_ids)|events)$"
)
_RETRIEVABLE = {
    "customers": "/v1/customers",
    "subscriptions": "/v1/subscriptions",
    "invoices": "/v1/invoices",
}


@dataclass(frozen=True)
class Sent:
    path: str
    query: dict[str, str]


@dataclass
class StripeLists:
    """`lists[path]`: the objects Stripe would list there, newest first. `fail(match, answer)`
    serves `answer` for requests `match` accepts (`times` of them, or always)."""

    router: respx.MockRouter
    date: int
    page_size: int | None = None  # the largest page served, whatever `limit` asks
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Sent] = field(default_factory=list)
    _failures: list[tuple[Callable[[Sent], bool], httpx.Response, int | None]] = field(
        default_factory=list
    )

    def __post_init__(self) -> None:
        self.router.route(method="GET", url__regex=rf"^{re.escape(STRIPE_API)}/v1/").mock(
            side_effect=self._answer
        )

    def fail(
        self, match: Callable[[Sent], bool], answer: httpx.Response, *, times: int | None = None
    ) -> None:
        self._failures.append((match, answer, times))

    def heal(self) -> None:
        """Stripe recovers: no more queued failures."""
        self._failures.clear()

    def sent(self, path: str) -> list[Sent]:
        return [r for r in self.requests if r.path == path]

    def _answer(self, request: httpx.Request) -> httpx.Response:
        sent = Sent(request.url.path, dict(parse_qsl(request.url.query.decode())))
        self.requests.append(sent)
        for index, (match, answer, times) in enumerate(self._failures):
            if match(sent):
                if times is not None:
                    if times <= 1:
                        self._failures.pop(index)
                    else:
                        self._failures[index] = (match, answer, times - 1)
                return answer
        if sent.path in self.lists or _ALWAYS_LISTED.match(sent.path):
            return self._list(sent)
        item = _ITEM.match(sent.path)
        if item is not None:
            return self._retrieve(item.group(1), item.group(2))
        return error(404, code="resource_missing")

    def _list(self, sent: Sent) -> httpx.Response:
        objects = list(self.lists.get(sent.path, []))
        for name in ("customer", "status"):
            value = sent.query.get(name)
            if value is not None and not (name == "status" and value == "all"):
                objects = [o for o in objects if o.get(name) == value]
        gte = sent.query.get("created[gte]")
        if gte is not None:
            objects = [o for o in objects if o.get("created", 0) >= int(gte)]
        after = sent.query.get("starting_after")
        if after is not None:
            ids = [o["id"] for o in objects]
            objects = objects[ids.index(after) + 1 :]
        limit = int(sent.query.get("limit", "10"))
        if self.page_size is not None:
            limit = min(limit, self.page_size)
        page = objects[:limit]
        body = {"object": "list", "data": page, "has_more": len(objects) > limit, "url": sent.path}
        return ok(body, date=self.date)

    def _retrieve(self, collection: str, object_id: str) -> httpx.Response:
        if object_id in self.deleted:
            return ok(self.deleted[object_id], date=self.date)
        for obj in self.lists.get(_RETRIEVABLE.get(collection, ""), []):
            if obj["id"] == object_id:
                return ok(obj, date=self.date)
        return error(404, code="resource_missing")


def ok(body: dict[str, Any], *, date: int) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"Date": http_date(date), "Request-Id": "req_1"})


def error(status: int, *, code: str | None = None, **headers: str) -> httpx.Response:
    body: dict[str, Any] = {"error": {"type": "invalid_request_error", "message": "fake"}}
    if code is not None:
        body["error"]["code"] = code
    if status == 429:
        body["error"]["type"] = "rate_limit_error"
    return httpx.Response(status, json=body, headers={"Request-Id": f"req_{status}", **headers})
