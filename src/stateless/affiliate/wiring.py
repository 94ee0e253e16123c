"""Builds the affiliate keyring once per app: per-tenant code keys derived from AFFILIATE_SALT."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from stateless.affiliate.codes import CodeKeys
from stateless.kit.crypto import PrivacyKit

if TYPE_CHECKING:
    from stateless.container import Container

SERVICE_KEY = "affiliate_keyring"


class AffiliateKeyring:
    """Per-tenant code keys (HKDF through the privacy kit, rooted in AFFILIATE_SALT, not
    SECRET_KEY): rotating SECRET_KEY leaves printed codes valid; changing the salt voids them."""

    def __init__(self, affiliate_salt: str) -> None:
        self._kit = PrivacyKit(affiliate_salt)

    def keys_for(self, app_id: str) -> CodeKeys:
        return CodeKeys(
            payload_key=self._kit.derive("affiliate-code-payload", app_id),
            mac_key=self._kit.derive("affiliate-code-mac", app_id),
        )


def keyring(container: Container) -> AffiliateKeyring:
    """The app's keyring; built on first use for containers assembled without SERVICES."""
    found = container.services.get(SERVICE_KEY)
    if isinstance(found, AffiliateKeyring):
        return found
    built = AffiliateKeyring(container.settings.affiliate_salt)
    container.services[SERVICE_KEY] = built
    return built


async def setup(container: Container, stack: AsyncExitStack) -> None:
    container.services[SERVICE_KEY] = AffiliateKeyring(container.settings.affiliate_salt)
