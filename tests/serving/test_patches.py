"""The one patch of BentoML's internals (serving/patches.py): it works, and it is still
needed (the second test fails once BentoML cancels its own timers: then the patch goes)."""

from __future__ import annotations

import asyncio

import bentoml
import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from mlops_assets.serving import patches


async def _app(scope, receive, send):
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _run(path: str, timeout: float) -> list[dict]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": path, "method": "GET", "headers": []}
    await TimeoutMiddleware(_app, timeout=timeout)(scope, receive, send)
    return sent


def _armed_timers_after(requests: int) -> int:
    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(requests):
            assert (await _run("/fast", 30))[0]["status"] == 200
        return len([h for h in loop._scheduled if not h.cancelled()])  # asyncio's timer heap

    return asyncio.run(main())


def test_the_request_timeout_leaves_no_timer_behind_and_still_answers_504():
    """A request that is answered cancels its timer, and a request slower than the timeout
    still gets BentoML's 504."""
    assert patches.patch_timeout_middleware(), f"BentoML {bentoml.__version__} is not patched"
    assert _armed_timers_after(100) == 0  # 100 answered requests, no 30-s timer left armed
    slow = asyncio.run(_run("/slow", 0.05))
    assert slow[0]["status"] == 504 and b"0.05 seconds" in slow[1]["body"]


def test_bentoml_still_needs_the_patch(monkeypatch):
    """BentoML's own middleware, unpatched: each answered request leaves its timer armed.
    When this fails, BentoML has fixed it: delete serving/patches.py and this file."""
    patches.patch_timeout_middleware()
    original = getattr(TimeoutMiddleware, "original_call", None)
    if original is None:
        pytest.fail(f"BentoML {bentoml.__version__} is not one the patch was made for: "
                    "check whether it still leaks a timer per request")
    monkeypatch.setattr(TimeoutMiddleware, "__call__", original)
    assert _armed_timers_after(100) == 100, (
        "BentoML's TimeoutMiddleware no longer leaks a timer per request: remove the patch")
