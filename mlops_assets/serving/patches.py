"""The one change this service makes to BentoML's internals, behind a version check.

BentoML 1.4's ``TimeoutMiddleware.__call__`` (bentoml/_internal/server/http/traffic.py) arms
a ``loop.call_later`` per request and never cancels it, so every answered request leaves a
timer handle, a future and a bound method alive for the whole ``traffic.timeout``: at ~2,000
req/s and 30 s, ~60,000 of each, which the collector scans at every full collection (pauses
growing to 40-150 ms under load: the concurrency-32 tail; docs/benchmarks.md).
``_timer_cancelling_timeout`` is BentoML's method with one change: the timer is cancelled
when the request is done. The timeout itself is unchanged: a 504 after traffic.timeout.

``tests/serving/test_patches.py`` runs BentoML's own method and fails once it no longer
leaks: then this module goes (the report to BentoML: docs/benchmarks.md, "Reports to
BentoML").
"""

from __future__ import annotations

import asyncio

import bentoml
from starlette.responses import JSONResponse

PATCHED_VERSIONS = ("1.4.",)  # the versions whose middleware _timer_cancelling_timeout mirrors


async def _timer_cancelling_timeout(self, scope, receive, send):
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message):
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:  # what _set_timer_out sets (asyncio.TimeoutError)
        if fut.cancel():
            await JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504)(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


def patch_timeout_middleware() -> bool:
    """Apply the fix if this BentoML is one it was made for; True if applied."""
    from bentoml._internal.server.http import traffic

    if not bentoml.__version__.startswith(PATCHED_VERSIONS):
        return False
    if traffic.TimeoutMiddleware.__call__ is not _timer_cancelling_timeout:
        traffic.TimeoutMiddleware.original_call = traffic.TimeoutMiddleware.__call__
        traffic.TimeoutMiddleware.__call__ = _timer_cancelling_timeout
    return True
