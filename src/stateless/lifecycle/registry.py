"""Which tables hold expiring data, what must happen before their rows go (hooks), and which
columns key a row to a subject (the identifiers an app holds: erasure on request, SPEC 14)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from stateless.kit.crypto.sealing import PrivacyKit
from stateless.lifecycle.policy import TtlPolicy

# Called with the expiring rows of one batch before they are deleted (e.g. delete file bodies).
BeforeDelete = Callable[[Sequence[Any]], Awaitable[None]]

# The identifiers `POST /api/v1/subjects/erase` accepts: the body's field names.
SubjectIdentifier = Literal["app_account_token", "device_ids", "subscriber_ids"]
SUBJECT_IDENTIFIERS: tuple[str, ...] = get_args(SubjectIdentifier)

# How a subject identifier becomes the value its rows store: (privacy kit, app id, identifier)
# -> keyed hash. The same function the domain uses when it writes the row.
HashOf = Callable[[PrivacyKit, str, str], str]


@dataclass(frozen=True)
class ExpiringKind:
    kind: str
    model: type[Any]
    before_delete: BeforeDelete | None = None


@dataclass(frozen=True)
class SubjectKey:
    """Rows of `kind` whose `column` holds `hash_of(kit, app_id, identifier)` belong to the
    subject that identifier names, and go when that subject is erased."""

    kind: str
    column: str
    identifier: SubjectIdentifier
    hash_of: HashOf


def _indexed_by_tenant_then(table: Any, column: str) -> bool:
    """Some index (or the primary key) starts with (app_id, column): erasing is a lookup."""
    candidates = [list(table.primary_key.columns), *(list(ix.columns) for ix in table.indexes)]
    return any([c.name for c in cols[:2]] == ["app_id", column] for cols in candidates)


class LifecycleRegistry:
    def __init__(self, policy: TtlPolicy) -> None:
        self.policy = policy
        self._kinds: dict[str, ExpiringKind] = {}
        self._subject_keys: list[SubjectKey] = []

    def register(
        self, kind: str, model: type[Any], before_delete: BeforeDelete | None = None
    ) -> None:
        self.policy.rule(kind)  # every kind must have a TTL rule
        self._kinds[kind] = ExpiringKind(kind, model, before_delete)

    def register_subject_key(
        self, kind: str, column: Any, *, identifier: SubjectIdentifier, hash_of: HashOf
    ) -> None:
        """Declare that rows of `kind` (registered first) are keyed to a subject by `column`,
        a column of its model such as `DeviceToken.device_hash`, holding
        `hash_of(kit, app_id, identifier)` for one value of the erase request's `identifier`
        field (`app_account_token` is passed as its canonical lowercase UUID string).

        The column must lead an index after `app_id` (the primary key or an `Index("...",
        "app_id", column)`), so erasing a subject is an index lookup. A kind may declare
        several keys (several columns, or several identifiers); erasure deletes the rows any
        of them matches and reports one count per kind.
        """
        expiring = self._kinds.get(kind)
        if expiring is None:
            raise ValueError(f"register the kind {kind!r} before its subject keys")
        if identifier not in SUBJECT_IDENTIFIERS:
            raise ValueError(f"unknown subject identifier {identifier!r}")
        table: Any = expiring.model.__table__
        name = str(getattr(column, "key", column))
        if name not in table.c or getattr(column, "class_", expiring.model) is not expiring.model:
            raise ValueError(f"{name!r} is not a column of {kind}'s table {table.name}")
        if not _indexed_by_tenant_then(table, name):
            raise ValueError(f"{table.name} needs an index on (app_id, {name}) to erase by it")
        self._subject_keys.append(SubjectKey(kind, name, identifier, hash_of))

    def kinds(self) -> list[ExpiringKind]:
        return list(self._kinds.values())

    def get(self, kind: str) -> ExpiringKind:
        return self._kinds[kind]

    def subject_keys(self) -> list[SubjectKey]:
        return list(self._subject_keys)

    def subject_kinds(self) -> list[str]:
        """The kinds erasure on request can reach, in registration order."""
        return list(dict.fromkeys(key.kind for key in self._subject_keys))
