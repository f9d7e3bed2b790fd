"""ASGI guard in front of the predict route: auth, content type and body size are refused
with a 4xx before BentoML parses anything, and the body is never read past the limit."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable


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
    def __init__(self, app, paths: tuple[str, ...], max_body_bytes: int,
                 api_token: str | None = None,
                 health: Callable[[], tuple[bool, str]] | None = None):
        self.app = app
        self.paths = paths
        self.max_body_bytes = max_body_bytes
        self.api_token = api_token
        self.health = health

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/readyz" and self.health is not None:
            ready, reason = self.health()
            if not ready:
                return await _reply(send, 503, f"not ready: {reason}")
        if scope["type"] != "http" or scope["path"] not in self.paths:
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
        if media != "application/json":
            return await _reply(
                send, 415,
                f"content type {media or '(none)'!r} is not supported: send application/json",
            )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _reply(send, 413, f"body of {declared} bytes is over the limit of "
                                           f"{self.max_body_bytes} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _reply(send, 413, f"body is over the limit of "
                                               f"{self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body.strip():
            return await _reply(send, 400, 'empty body: send {"records": [{...}, ...]}')
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
