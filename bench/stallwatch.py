"""`python -m bench.stallwatch --port N`: the server `stateless serve` runs (same app, same
settings from the environment, same server and protocol: stateless.kit.serving), plus an event-loop stall detector.

A ticker on the server's loop sleeps 5 ms at a time and measures the CPU time the loop's thread
spent while it waited: that is how long other callbacks held the loop. CPU time, not wall
time, so a busy machine preempting the process is not reported as a stall. Past the threshold
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


class StallWatch:
    """ASGI wrapper: tracks requests in flight and runs the ticker from the first lifespan."""

    def __init__(self, app: Any, threshold_seconds: float) -> None:
        self.app = app
        self.threshold = threshold_seconds
        self.in_flight: dict[int, str] = {}
        self._ticker: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.thread_time()
            await asyncio.sleep(0.005)
            held = time.thread_time() - before
            if held > self.threshold:
                line = {
                    "event": "loop_stall",
                    "held_ms": round(held * 1000, 1),
                    "requests": sorted(self.in_flight.values()),
                }
                print(json.dumps(line), file=sys.stderr, flush=True)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = id(scope)
        self.in_flight[key] = f"{scope['method']} {scope['path']}"
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.pop(key, None)


def main() -> None:
    from stateless.kit import serving
    from stateless.main import app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stall-ms", type=float, default=250.0)
    args = parser.parse_args()
    serving.run(
        StallWatch(app, args.stall_ms / 1000),
        host=args.host,
        port=args.port,
        access_log=False,
        log_config=None,
        server_header=False,
    )


if __name__ == "__main__":
    main()
