"""Erase one subject of one app now: every row any domain declared keyed by the identifiers the
app sent (lifecycle registry `register_subject_key`), in the request's one transaction.

Knowing the random identifiers is the authority, so unknown identifiers simply match nothing
and answer the same shape. Identifiers are hashed exactly as their domain hashes them on write,
per app, so another app's rows can never match (and the delete names this app only anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.kit.crypto.receipts import DeletionReceipts
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.context import TenantContext
from stateless.kit.data.db import after_commit, checkpoint_sqlite_wal, utcnow
from stateless.kit.data.tenancy import TenantScopedRepository
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.lifecycle.repository import ErasureCountRepository

log = structlog.get_logger("stateless.subjects")


async def _fold_wal(session: AsyncSession) -> None:
    """After the erasure commits on SQLite: no older copy of the erased rows stays in the WAL.
    Best effort (the next cleanup pass that deletes anything checkpoints too)."""
    try:
        await checkpoint_sqlite_wal(session)
    except Exception as exc:  # the erasure itself is committed; a later checkpoint finishes it
        log.warning("subject_erase_checkpoint_failed", error_type=type(exc).__name__)


@dataclass(frozen=True, slots=True)
class SubjectErasure:
    erased: dict[str, int]
    receipt: str


class SubjectErasureService:
    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        kit: PrivacyKit,
        lifecycle: LifecycleRegistry,
        receipts: DeletionReceipts,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session = session
        self.tenant = tenant
        self.kit = kit
        self.lifecycle = lifecycle
        self.receipts = receipts
        self.clock = clock

    async def erase(self, identifiers: Mapping[str, Sequence[str]]) -> SubjectErasure:
        """Delete this app's rows (live or expired) keyed by any of `identifiers`, count them
        per kind, and sign a receipt. Every statement joins the request's transaction, so
        the subject goes entirely or not at all."""
        app_id = self.tenant.app_id
        erased = dict.fromkeys(self.lifecycle.subject_kinds(), 0)
        # Rows written before a SECRET_KEY rotation carry hashes under a previous key.
        kits = self.kit.per_root()
        for key in self.lifecycle.subject_keys():
            values = identifiers.get(key.identifier, ())
            hashes = sorted({key.hash_of(kit, app_id, value) for kit in kits for value in values})
            if not hashes:
                continue
            kind = self.lifecycle.get(key.kind)
            repo = TenantScopedRepository.for_model(kind.model)(
                self.session, self.tenant, self.clock
            )
            if kind.before_delete is not None:
                rows = await repo.keyed_rows(key.column, hashes)
                if rows:
                    await kind.before_delete(rows)
            erased[key.kind] += await repo.erase_keyed(key.column, hashes)
        await ErasureCountRepository(self.session, self.tenant, self.clock).record(erased)
        if any(erased.values()) and self.session.get_bind().dialect.name == "sqlite":
            after_commit(self.session, _fold_wal)
        log.info("subject_erased", count=sum(erased.values()))
        return SubjectErasure(erased, self.receipts.sign(app_id, "subject", erased))
