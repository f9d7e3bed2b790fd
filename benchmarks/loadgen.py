"""A small closed-loop HTTP/1.1 load generator on asyncio with keep-alive connections.

Every request's latency is recorded as measured (send to last byte), so the percentiles are
the raw ones, not corrected for coordinated omission (a request waits for the previous one
on its connection). Bounded in time; loopback only."""

from __future__ import annotations

import asyncio
import time

import numpy as np


async def _connection(host: str, port: int, request: bytes, stop_at: float,
                      latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


def run(host: str, port: int, path: str, body: bytes, concurrency: int,
        seconds: float, content_type: str = "application/json") -> dict:
    """Closed loop: ``concurrency`` connections each send the next request when the last
    answer arrived, for ``seconds``."""
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []

    async def main():
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(_connection(host, port, request, stop_at, latencies, errors)
                               for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(ms), "errors": len(errors), "seconds": round(elapsed, 2),
        "throughput_rps": len(ms) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "max_ms": float(ms.max()) if len(ms) else float("nan"),
        "pauses_over_50ms": int((ms > 50).sum()),
    }
