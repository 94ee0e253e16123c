from __future__ import annotations

from sqlalchemy import delete

from stateless.kit.tenancy import TenantScopedRepository
from stateless.storekit.models import Entitlement, NotificationReceipt


class EntitlementRepository(TenantScopedRepository[Entitlement]):
    model = Entitlement

    async def by_hash(self, original_transaction_hash: str) -> Entitlement | None:
        return await self.first(Entitlement.original_transaction_hash == original_transaction_hash)

    async def purge_expired(self, original_transaction_hash: str) -> None:
        """Drop this tenant's expired row with this key (cleanup may not have run yet) so a fresh
        row can take its primary key. Touches expired data only, like the cleanup service."""
        await self.session.execute(
            delete(Entitlement).where(
                Entitlement.app_id == self.app_id,
                Entitlement.original_transaction_hash == original_transaction_hash,
                Entitlement.expires_at <= self.clock(),
            )
        )


class NotificationReceiptRepository(TenantScopedRepository[NotificationReceipt]):
    model = NotificationReceipt

    async def seen(self, notification_hash: str) -> bool:
        return (
            await self.first(NotificationReceipt.notification_hash == notification_hash)
        ) is not None

    async def purge_expired(self, notification_hash: str) -> None:
        """See EntitlementRepository.purge_expired."""
        await self.session.execute(
            delete(NotificationReceipt).where(
                NotificationReceipt.app_id == self.app_id,
                NotificationReceipt.notification_hash == notification_hash,
                NotificationReceipt.expires_at <= self.clock(),
            )
        )
