"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (no client library
overhead), so one Python process can drive a server hard enough to compare two of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RequestFactory = Callable[[int], bytes]


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def build_request(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def run_load(
    host: str,
    port: int,
    make_request: RequestFactory,
    *,
    connections: int,
    seconds: float,
    warmup_seconds: float = 1.0,
) -> LoadResult:
    result = LoadResult()
    counter = 0
    measuring = False
    stop_at = 0.0

    async def connection() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                now = time.perf_counter()
                if measuring and now >= stop_at:
                    return
                counter += 1
                writer.write(make_request(counter))
                started = time.perf_counter()
                try:
                    status = await _read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                if measuring:
                    result.latencies.append(time.perf_counter() - started)
                    result.requests += 1
                    result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(warmup_seconds)
    measuring = True
    begin = time.perf_counter()
    stop_at = begin + seconds
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - begin
    return result
