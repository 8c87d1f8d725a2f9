"""Security headers on every response, as the outermost pure-ASGI layer.

The header list is built once: per request the layer only checks which names the
response already set (a route's own, stricter policy wins, as the offline portal page's
does) and appends the rest. An HTML response (the /docs page loads Swagger UI's scripts)
gets only `frame-ancestors` from the default policy; everything else is JSON or text and
may load nothing at all.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    # Browsers ignore it over plain http; behind TLS it pins the service to https.
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
)
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HTML_CSP = (b"content-security-policy", b"frame-ancestors 'none'")
_NAMES = frozenset(name for name, _ in (*SECURITY_HEADERS, API_CSP))


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present: set[bytes] = set()
                html = False
                for name, value in headers:
                    lowered = name.lower()
                    if lowered in _NAMES:
                        present.add(lowered)
                    elif lowered == b"content-type":
                        html = value.startswith(b"text/html")
                if present:
                    headers += [h for h in SECURITY_HEADERS if h[0] not in present]
                else:
                    headers += SECURITY_HEADERS
                if API_CSP[0] not in present:
                    headers.append(HTML_CSP if html else API_CSP)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
