"""Idempotency-Key for /bots/execute: the first answer to a key is stored (sealed) and sent again
to a repeat with the same body; another body with the same key is a conflict.

Records are written in their own short transactions (not the request's), like task records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.bots.models import BotIdempotencyRecord
from stateless.bots.repository import IdempotencyRepository
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.context import TenantContext
from stateless.kit.data.db import session_scope, utcnow
from stateless.kit.web.errors import Conflict, ProblemError, problem_body
from stateless.lifecycle.policy import TtlPolicy

KEY_PURPOSE = "bots-idempotency-key"
BODY_PURPOSE = "bots-idempotency-body"
RESPONSE_PURPOSE = "bots-idempotency-response"
# A pending claim older than this belongs to a request that died; a retry may take it over.
PENDING_ABANDON_GRACE_SECONDS = 60.0
# How a stored success says it was queued (the record keeps the status it was answered with).
_QUEUED_STATUS, _DONE_STATUS = 202, 200


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class ReplayedProblem(ProblemError):
    """A stored error answer of an earlier request with the same Idempotency-Key."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.status = int(body["status"])
        self.code = str(body["code"])
        self.title = str(body["title"])
        known = {"type", "title", "status", "detail", "code", "request_id"}
        super().__init__(
            str(body.get("detail") or self.title),
            headers={"Idempotent-Replayed": "true"},
            extra={k: v for k, v in body.items() if k not in known},
        )


@dataclass
class Outcome:
    """What an execution came to: the accepted task (queued or finished), or the problem
    raised after the task ran (kept so a replay answers the same)."""

    queued: bool = False
    body: dict[str, Any] = field(default_factory=dict)
    problem: ProblemError | None = None
    replayed: bool = False


def _in_progress() -> ProblemError:
    return IdempotencyInProgress("A request with this Idempotency-Key is in progress")


class IdempotencyKeys:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        kit: PrivacyKit,
        policy: TtlPolicy,
        tenant: TenantContext,
        abandon_after_seconds: float,
    ) -> None:
        self.maker = maker
        self.kit = kit
        self.policy = policy
        self.tenant = tenant
        self.abandon_after = timedelta(seconds=abandon_after_seconds)

    def key_hash(self, key: str) -> str:
        return self.kit.keyed_hash(KEY_PURPOSE, self.tenant.app_id, key)

    async def claim(self, key_hash: str, request: BaseModel) -> Outcome | None:
        """Reserve the key (None), or the outcome of the first request with it."""
        canonical = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        body_hash = self.kit.keyed_hash(BODY_PURPOSE, self.tenant.app_id, canonical)
        for _ in range(2):
            try:
                async with session_scope(self.maker) as session:
                    repo = IdempotencyRepository(session, self.tenant)
                    record = await repo.by_key(key_hash)
                    if record is not None:
                        earlier = self._replay(record, body_hash)
                        if earlier is not None:
                            return earlier
                        await repo.delete_where(BotIdempotencyRecord.key_hash == key_hash)
                    else:
                        await repo.drop_expired(key_hash)
                    repo.add(
                        BotIdempotencyRecord(
                            key_hash=key_hash, body_hash=body_hash, state="pending"
                        ),
                        self.policy.expires_at("idempotency", None, utcnow()),
                    )
                    await session.flush()
                return None
            except IntegrityError:
                continue  # a concurrent request took the key first: read what it left
        raise _in_progress()

    def _replay(self, record: BotIdempotencyRecord, body_hash: str) -> Outcome | None:
        """The stored outcome; None if the record is an abandoned claim we may take over."""
        if record.body_hash != body_hash:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request body"
            )
        if record.state != "done" or record.response_sealed is None:
            if utcnow() > record.created_at + self.abandon_after:
                return None
            raise _in_progress()
        stored = orjson.loads(
            self.kit.decrypt(RESPONSE_PURPOSE, self.tenant.app_id, record.response_sealed)
        )
        if stored.get("problem"):
            return Outcome(problem=ReplayedProblem(stored["body"]), replayed=True)
        queued = int(record.response_status or _DONE_STATUS) == _QUEUED_STATUS
        return Outcome(queued=queued, body=stored["body"], replayed=True)

    async def release(self, key_hash: str) -> None:
        """The execution failed unexpectedly: free the key for a retry."""
        async with session_scope(self.maker) as session:
            await IdempotencyRepository(session, self.tenant).release(key_hash)

    async def store(self, key_hash: str, outcome: Outcome) -> None:
        if outcome.problem is not None:
            p = outcome.problem
            status = p.status
            stored = {
                "problem": True,
                "body": problem_body(
                    p.status, code=p.code, title=p.title, detail=p.detail, extra=p.extra
                ),
            }
        else:
            status = _QUEUED_STATUS if outcome.queued else _DONE_STATUS
            stored = {"problem": False, "body": outcome.body}
        sealed = self.kit.encrypt(RESPONSE_PURPOSE, self.tenant.app_id, orjson.dumps(stored))
        async with session_scope(self.maker) as session:
            await IdempotencyRepository(session, self.tenant).update_where(
                {"state": "done", "response_status": status, "response_sealed": sealed},
                BotIdempotencyRecord.key_hash == key_hash,
            )
