"""`python -m bench.stallwatch --port N`: the server `stateless serve` runs (same app, same
settings from the environment, same server and protocol: stateless.kit.runtime.draining), plus an event-loop stall detector.

A ticker on the server's loop sleeps 5 ms at a time and measures how much longer than that it
waited, minus the time the thread sat in the kernel's run queue (Linux schedstat): that is how
long other callbacks held the loop, blocking calls included, while a busy machine preempting the
process is not reported as a stall (elsewhere: the thread's CPU time). Past the threshold
(`--stall-ms`, default 250) it prints one JSON line to stderr naming the requests in flight:

    {"event": "loop_stall", "held_ms": 5600.1, "requests": ["POST /api/v1/affiliate/conversion"]}

bench/fuzz.py runs its target server this way and fails the run on any such line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

STALL_MARKER = '"event": "loop_stall"'
TICK_SECONDS = 0.005
_SCHEDSTAT = "/proc/thread-self/schedstat"


def _runqueue_seconds() -> float | None:
    """Time this thread has waited in the run queue (Linux), or None where unknown."""
    try:
        with open(_SCHEDSTAT) as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


async def held_tick() -> float:
    """Sleep one tick on the loop; return how long something else held the loop meanwhile."""
    wall, queued, cpu = time.perf_counter(), _runqueue_seconds(), time.thread_time()
    await asyncio.sleep(TICK_SECONDS)
    late = time.perf_counter() - wall - TICK_SECONDS
    queued_after = _runqueue_seconds()
    if queued is None or queued_after is None:
        return time.thread_time() - cpu  # no schedstat: CPU time only
    return max(0.0, late - (queued_after - queued))


class StallWatch:
    """ASGI wrapper: tracks requests in flight and runs the ticker from the first lifespan."""

    def __init__(self, app: Any, threshold_seconds: float) -> None:
        self.app = app
        self.threshold = threshold_seconds
        self.in_flight: dict[int, str] = {}
        self.since_tick: set[str] = set()  # a request that held the loop may finish before the tick
        self._ticker: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            held = await held_tick()
            if held > self.threshold:
                line = {
                    "event": "loop_stall",
                    "held_ms": round(held * 1000, 1),
                    "requests": sorted(self.since_tick | set(self.in_flight.values())),
                }
                print(json.dumps(line), file=sys.stderr, flush=True)
            self.since_tick = set(self.in_flight.values())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = id(scope)
        self.in_flight[key] = f"{scope['method']} {scope['path']}"
        self.since_tick.add(self.in_flight[key])
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.pop(key, None)


def main() -> None:
    from stateless.kit.runtime import draining
    from stateless.main import app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stall-ms", type=float, default=250.0)
    args = parser.parse_args()
    draining.run(
        StallWatch(app, args.stall_ms / 1000),
        host=args.host,
        port=args.port,
        access_log=False,
        log_config=None,
        server_header=False,
    )


if __name__ == "__main__":
    main()
