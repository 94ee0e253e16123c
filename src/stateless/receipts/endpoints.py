"""GET /.well-known/jwks.json (no key): the public keys deletion receipts are signed with."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stateless.deps import ContainerDep
from stateless.kit.web.fastroute import FastRoute

router = APIRouter(route_class=FastRoute, tags=["receipts"])


class Jwk(BaseModel):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class Jwks(BaseModel):
    keys: list[Jwk]


@router.get(
    "/.well-known/jwks.json",
    name="receipts.jwks",
    summary="Get the deletion receipts' public keys",
    response_model=Jwks,
)
async def jwks(container: ContainerDep) -> JSONResponse:
    """The public keys (Ed25519, RFC 8037) that verify deletion receipts, matched by `kid`.

    The first key signs new receipts; keys of previous secrets stay listed after a rotation,
    so receipts signed before it keep verifying. Any JOSE library verifies a receipt with
    these keys (algorithm EdDSA).
    """
    return JSONResponse(container.receipts.jwks(), headers={"Cache-Control": "public, max-age=300"})
