"""Imports every model so Alembic and the cleanup registry see the whole schema."""

from stateless.drafts.models import Draft
from stateless.kit.db import Base
from stateless.tenants.models import ApiKey, Tenant

__all__ = ["ApiKey", "Base", "Draft", "Tenant"]
