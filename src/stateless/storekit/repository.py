from __future__ import annotations

from stateless.kit.data.tenancy import TenantScopedRepository
from stateless.storekit.models import Entitlement, NotificationReceipt


class EntitlementRepository(TenantScopedRepository[Entitlement]):
    model = Entitlement

    async def by_hash(self, original_transaction_hash: str) -> Entitlement | None:
        return await self.first(Entitlement.original_transaction_hash == original_transaction_hash)

    async def drop_expired(self, original_transaction_hash: str) -> None:
        """Drop this tenant's expired row with this key (cleanup may not have run yet) so a fresh
        row can take its primary key. Touches expired data only, like the cleanup service."""
        await self.purge_expired(Entitlement.original_transaction_hash == original_transaction_hash)


class NotificationReceiptRepository(TenantScopedRepository[NotificationReceipt]):
    model = NotificationReceipt

    async def seen(self, notification_hash: str) -> bool:
        return (
            await self.first(NotificationReceipt.notification_hash == notification_hash)
        ) is not None

    async def drop_expired(self, notification_hash: str) -> None:
        """See EntitlementRepository.drop_expired."""
        await self.purge_expired(NotificationReceipt.notification_hash == notification_hash)
