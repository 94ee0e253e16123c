"""A local peer shaped like Mastodon's POST /api/v1/statuses (JSON or form body).

Checks the Bearer token, answers 200 with a Status entity (id, url, visibility, content), and
honours Idempotency-Key like Mastodon: the same key returns the same status, no second post.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.peers.webhook import Answer, Received, serve_http


@dataclass
class MastodonPeer:
    token: str
    statuses: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    by_idempotency_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def respond(self, request: Received) -> Answer:
        self.requests.append(request)
        if request.method != "POST" or request.path != "/api/v1/statuses":
            return Answer(404, b'{"error":"Record not found"}')
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(401, b'{"error":"The access token is invalid"}')
        if request.headers.get("content-type", "").startswith("application/json"):
            params = json.loads(request.body)
        else:
            params = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        key = request.headers.get("idempotency-key")
        if key and key in self.by_idempotency_key:
            return self._ok(self.by_idempotency_key[key])
        if not params.get("status"):
            return Answer(422, b'{"error":"Validation failed: Text can\'t be blank"}')
        status_id = str(109_000_000_000_000_000 + len(self.statuses))
        entity = {
            "id": status_id,
            "uri": f"{self.url}/users/bot/statuses/{status_id}",
            "url": f"{self.url}/@bot/{status_id}",
            "visibility": params.get("visibility", "public"),
            "content": f"<p>{params['status']}</p>",
            "spoiler_text": params.get("spoiler_text", ""),
        }
        self.statuses.append(entity)
        if key:
            self.by_idempotency_key[key] = entity
        return self._ok(entity)

    def _ok(self, entity: dict[str, Any]) -> Answer:
        return Answer(200, json.dumps(entity).encode(), {"Content-Type": "application/json"})


@contextmanager
def running_mastodon(token: str) -> Iterator[MastodonPeer]:
    peer = MastodonPeer(token=token)
    with serve_http(peer.respond) as port:
        peer.port = port
        yield peer
