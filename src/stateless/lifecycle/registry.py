"""Which tables hold expiring data, and what must happen before their rows go (hooks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stateless.lifecycle.policy import TtlPolicy

# Called with the expiring rows of one batch before they are deleted (e.g. delete file bodies).
BeforeDelete = Callable[[Sequence[Any]], Awaitable[None]]


@dataclass(frozen=True)
class ExpiringKind:
    kind: str
    model: type[Any]
    before_delete: BeforeDelete | None = None


class LifecycleRegistry:
    def __init__(self, policy: TtlPolicy) -> None:
        self.policy = policy
        self._kinds: dict[str, ExpiringKind] = {}

    def register(
        self, kind: str, model: type[Any], before_delete: BeforeDelete | None = None
    ) -> None:
        self.policy.rule(kind)  # every kind must have a TTL rule
        self._kinds[kind] = ExpiringKind(kind, model, before_delete)

    def kinds(self) -> list[ExpiringKind]:
        return list(self._kinds.values())

    def get(self, kind: str) -> ExpiringKind:
        return self._kinds[kind]
