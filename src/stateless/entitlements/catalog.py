"""The entitlement map (per tenant, kept in its settings): entitlement names and the App Store
product ids and Stripe price or product ids that grant each one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence

from stateless.kit.data.context import TenantConfig
from stateless.kit.web.errors import Unprocessable

NAME_PATTERN = re.compile(r"^[a-z0-9_.-]{1,64}$")
PRODUCT_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
MAX_ENTITLEMENTS = 50
MAX_PRODUCTS = 100


class InvalidEntitlementMap(Unprocessable):
    code, title = "invalid_entitlement_map", "Invalid entitlement map"


class InvalidAppAccountToken(Unprocessable):
    code, title = "invalid_app_account_token", "Invalid app account token"


def validate_map(entitlements: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The map as stored: names and products checked, products de-duplicated in order."""
    if len(entitlements) > MAX_ENTITLEMENTS:
        raise InvalidEntitlementMap(f"at most {MAX_ENTITLEMENTS} entitlements per app")
    clean: dict[str, list[str]] = {}
    for name, products in entitlements.items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise InvalidEntitlementMap(
                f"entitlement names match ^[a-z0-9_.-]{{1,64}}$, got {str(name)[:80]!r}"
            )
        if isinstance(products, str) or len(products) > MAX_PRODUCTS:
            raise InvalidEntitlementMap(f"{name}: a list of at most {MAX_PRODUCTS} product ids")
        seen: list[str] = []
        for product in products:
            if not isinstance(product, str) or not PRODUCT_PATTERN.fullmatch(product):
                raise InvalidEntitlementMap(
                    f"{name}: product ids are 1-200 of A-Z a-z 0-9 _ . : -, "
                    f"got {str(product)[:80]!r}"
                )
            if product not in seen:
                seen.append(product)
        clean[name] = seen
    return clean


def names_for(config: TenantConfig, *product_ids: str | None) -> list[str]:
    """The entitlements a purchase of these products (price and its product) grants."""
    wanted = {p for p in product_ids if p}
    return [name for name, products in config.entitlements.items() if wanted & set(products)]


def is_mapped(config: TenantConfig, product_id: str) -> bool:
    return any(product_id in products for products in config.entitlements.values())


def canonical_token(raw: str) -> str:
    """An app account token as StoreKit hands it back: a UUID, lowercase, hyphenated."""
    if not isinstance(raw, str) or len(raw) > 64:
        raise InvalidAppAccountToken("app_account_token must be a UUID")
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise InvalidAppAccountToken("app_account_token must be a UUID") from None


def token_or_none(raw: object) -> str | None:
    """The canonical token of an upstream value, or None when it is not a UUID."""
    if not isinstance(raw, str):
        return None
    try:
        return canonical_token(raw)
    except InvalidAppAccountToken:
        return None
