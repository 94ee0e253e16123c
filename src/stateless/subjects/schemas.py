"""Request and response bodies of POST /api/v1/subjects/erase."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from stateless.kit.wire.bounds import BoundedInput

MAX_IDS_PER_LIST = 100

# As register-token and subscribe bound them.
SubjectId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class EraseSubjectIn(BoundedInput):
    """The identifiers your app holds for one user (at least one)."""

    model_config = ConfigDict(extra="forbid")

    app_account_token: UUID | None = Field(
        default=None,
        description="The UUID your app sets as StoreKit's appAccountToken: the purchase "
        "records (entitlement sources) kept for it go.",
    )
    device_ids: list[SubjectId] = Field(
        default_factory=list,
        max_length=MAX_IDS_PER_LIST,
        description="Device ids given to /ios/register-token (at most 100).",
    )
    subscriber_ids: list[SubjectId] = Field(
        default_factory=list,
        max_length=MAX_IDS_PER_LIST,
        description="Subscriber ids given to /web/subscribe (at most 100).",
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> EraseSubjectIn:
        if self.app_account_token is None and not self.device_ids and not self.subscriber_ids:
            raise ValueError("give app_account_token, device_ids or subscriber_ids")
        return self

    def identifiers(self) -> dict[str, list[str]]:
        """Each identifier field's values as text; the token in canonical lowercase form."""
        token = [] if self.app_account_token is None else [str(self.app_account_token)]
        return {
            "app_account_token": token,
            "device_ids": list(self.device_ids),
            "subscriber_ids": list(self.subscriber_ids),
        }


class EraseSubjectOut(BaseModel):
    erased: dict[str, int] = Field(
        description="Rows erased per kind; every kind erasure can reach is listed, 0 included."
    )
    receipt: str = Field(
        description="Deletion receipt: a compact JWS (EdDSA) verifiable with the keys at "
        "/.well-known/jwks.json. It names no identifier."
    )
