"""ASGI guard in front of the predict routes: auth, content type and body size are refused
with a 4xx before BentoML parses anything, and the body is never read past the limit. A 5xx
that BentoML answered with its generic message gets the reason back (``reason``: what the
batched route raised, e.g. the prediction log's full disk)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """What one guarded route accepts."""

    media_types: tuple[str, ...]
    max_body_bytes: int
    empty_hint: str  # what to send instead of an empty body


async def _reply(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app, routes: Mapping[str, Route], api_token: str | None = None,
                 health: Callable[[], tuple[bool, str]] | None = None,
                 reason: Callable[[], str | None] | None = None):
        self.app = app
        self.reason = reason
        self.routes = dict(routes)
        self.api_token = api_token
        self.health = health

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/readyz" and self.health is not None:
            ready, reason = self.health()
            if not ready:
                return await _reply(send, 503, f"not ready: {reason}")
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_token is not None:
            # Compared as bytes: a header with non-ASCII characters is simply wrong.
            given = headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, f"Bearer {self.api_token}".encode()):
                return await _reply(send, 401, "missing or wrong bearer token",
                                    [(b"www-authenticate", b"Bearer")])
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in route.media_types:
            return await _reply(
                send, 415, f"content type {media or '(none)'!r} is not supported: send "
                           f"{' or '.join(route.media_types)}",
            )
        limit = route.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _reply(send, 413, f"body of {declared} bytes is over the limit of "
                                           f"{limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _reply(send, 413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body.strip():
            return await _reply(send, 400, f"empty body: send {route.empty_hint}")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, self._with_reason(send))

    def _with_reason(self, send):
        """``send`` that answers a 5xx with ``reason()`` as its error (when there is one)."""
        if self.reason is None:
            return send
        replaced = False

        async def _send(message):
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] >= 500:
                reason = self.reason()
                if reason is not None:
                    replaced = True
                    return await _reply(send, message["status"], reason)
            if not replaced:
                await send(message)

        return _send
