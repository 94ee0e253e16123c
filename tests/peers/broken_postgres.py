"""Postgres wire-protocol peers for two outages that `make faults` found answering 500s.

`starting_postgres()` refuses every connection the way a restarting server does: it answers the
SSL/GSS probes with 'N', reads the startup packet, and sends the ErrorResponse a real server
sends while it replays its WAL after a crash: FATAL 57P03 "the database system is starting up".
`frozen_postgres()` accepts TCP connections and never answers (a stopped or partitioned host).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b""
    for tag, value in (("S", "FATAL"), ("V", "FATAL"), ("C", sqlstate), ("M", message)):
        fields += tag.encode() + value.encode() + b"\0"
    fields += b"\0"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


@dataclass
class StartingPostgres:
    port: int = 0
    refused: int = 0
    sqlstate: str = "57P03"
    message: str = "the database system is starting up"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length, code = struct.unpack("!II", await reader.readexactly(8))
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    writer.write(b"N")
                    await writer.drain()
                    continue
                await reader.readexactly(length - 8)  # the rest of the startup packet
                break
            writer.write(_error_response(self.sqlstate, self.message))
            await writer.drain()
            self.refused += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def starting_postgres() -> AsyncIterator[StartingPostgres]:
    peer = StartingPostgres()
    server = await asyncio.start_server(peer._handle, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class FrozenPostgres:
    port: int = 0
    accepted: int = 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"


@asynccontextmanager
async def frozen_postgres() -> AsyncIterator[FrozenPostgres]:
    peer = FrozenPostgres()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.accepted += 1
        writers.append(writer)  # held open, never answered

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
