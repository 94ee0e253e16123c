"""Request and response shapes of the storage API, and the value other parts get back."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from stateless.kit.wire.bounds import BoundedInput
from stateless.kit.wire.timestamps import Timestamp

MAX_FILENAME_CHARS = 255
# type/subtype with optional simple parameters ("text/plain; charset=utf-8"), RFC 6838 characters.
_MEDIA_CHARS = r"[a-z0-9!#$&^_.+-]{1,127}"
CONTENT_TYPE_PATTERN = re.compile(
    rf"^{_MEDIA_CHARS}/{_MEDIA_CHARS}(\s*;\s*[a-z0-9_-]{{1,32}}=[a-z0-9._-]{{1,64}})*$"
)
_UNSAFE_FILENAME_CHARS = re.compile(r'[\x00-\x1f\x7f"\\/<>:|?*]')


def normalize_content_type(raw: str) -> str:
    """Lower-case and trim; raise ValueError unless it is a well-formed media type."""
    value = raw.strip().lower()
    if len(value) > 255 or not CONTENT_TYPE_PATTERN.fullmatch(value):
        raise ValueError("content_type must be a media type such as image/png")
    return value


def media_type_of(content_type: str) -> str:
    """The type/subtype without parameters, for allow-list checks and comparisons."""
    return content_type.split(";", 1)[0].strip().lower()


def sanitize_filename(raw: str | None) -> str | None:
    """Keep a display name only: the last path segment, no control or path characters, no
    leading dots. It is metadata and is never used to build a path or a key."""
    if raw is None:
        return None
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("_", name).strip().lstrip(".").strip()
    return name[:MAX_FILENAME_CHARS] or None


class CreateObjectIn(BoundedInput):
    content_type: str = Field(description="Media type the upload will carry, e.g. image/png.")
    content_length: int = Field(ge=0, description="Exact size of the upload in bytes.")
    ttl_seconds: int | None = Field(
        default=None, description="Lifetime in seconds (default 24 h, at most 7 d)."
    )
    filename: str | None = Field(
        default=None,
        max_length=1024,
        description="Display name only (sanitised, stored encrypted, never used in paths).",
    )

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        return normalize_content_type(value)


class UploadInstruction(BaseModel):
    method: Literal["PUT"]
    url: str
    headers: dict[str, str]
    expires_at: Timestamp


class CreatedObject(BaseModel):
    object_id: str
    upload: UploadInstruction
    expires_at: Timestamp


class ObjectOut(BaseModel):
    object_id: str
    status: Literal["pending", "uploaded"]
    content_type: str
    content_length: int
    filename: str | None
    created_at: Timestamp
    expires_at: Timestamp
    uploaded_at: Timestamp | None
    download_url: str | None
    download_url_expires_at: Timestamp | None
    tenant: str


class UploadDone(BaseModel):
    object_id: str
    status: Literal["uploaded"] = "uploaded"
    size_bytes: int


class Deleted(BaseModel):
    status: str = "deleted"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What `StorageService.put_bytes` hands back to other parts (exports, reports)."""

    object_id: str
    download_url: str
    expires_at: datetime
    content_type: str
    size_bytes: int
