"""415 for a body of another media type on a JSON endpoint (SPEC 1), instead of a schema error.

FastAPI parses a body as JSON only when it is declared as JSON; a form, text or undeclared body
reaches validation as raw bytes and fails with "Input should be a valid dictionary", which
hides the real mistake. The problem renderer (kit/web/errors.py) asks
`unsupported_body_detail` first whenever a body fails validation, and answers 415 when it
names one (this module knows media types, not problems: errors.py imports it, never back).
"""

from __future__ import annotations

import re
from email.message import Message

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")


def is_json_media_type(content_type: str) -> bool:
    """application/json and any application/*+json, parameters (charset) ignored."""
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def unsupported_body_detail(request: Request, exc: RequestValidationError) -> str | None:
    """What a 415 says when a JSON body failed because it was not sent as JSON.

    FastAPI hands a body to validation as raw bytes exactly when it did not parse it as JSON
    (another or no Content-Type), so a body error on bytes input is the signal.
    """
    content_type = request.headers.get("content-type") or ""
    if content_type and is_json_media_type(content_type):
        return None
    if not any(
        tuple(error.get("loc", ()))[:1] == ("body",)
        and isinstance(error.get("input"), (bytes, bytearray))
        and error.get("input")
        for error in exc.errors()
    ):
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    sent = f" (got {media_type})" if _MEDIA_TYPE.match(media_type) else " (got no Content-Type)"
    return "This endpoint takes a JSON body: send it with Content-Type: application/json" + sent
