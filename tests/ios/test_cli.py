"""`stateless tenants configure --apns-*`: the .p8 key is checked, then stored sealed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from stateless.config import Settings
from stateless.tenants.service import TenantService
from tests.conftest import run_tenant_service
from tests.ios.conftest import ApnsKey
from tests.privacy import assert_not_stored

STATELESS = str(Path(sys.executable).parent / "stateless")


async def run_cli(settings: Settings, cwd: Path, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": settings.secret_key,
        "AFFILIATE_SALT": settings.affiliate_salt,
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "console",
    }
    proc = await asyncio.create_subprocess_exec(
        STATELESS,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def pem_of(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


async def stored_key(settings: Settings, app_id: str) -> str | None:
    async def action(service: TenantService) -> str | None:
        tenant = await service.repo.get(app_id)
        assert tenant is not None
        return service.read_secrets(tenant).apns_key_p8

    result: str | None = await run_tenant_service(settings, action)
    return result


async def test_configure_apns_stores_a_good_key_and_refuses_bad_ones(
    settings: Settings, tmp_path: Path, apns_key: ApnsKey
) -> None:
    code, out, err = await run_cli(settings, tmp_path, "tenants", "create", "app-cli", "--json")
    assert code == 0, err
    assert json.loads(out)["app_id"] == "app-cli"

    good = tmp_path / "AuthKey_KEY1234567.p8"
    good.write_text(apns_key.private_pem)
    code, out, err = await run_cli(
        settings,
        tmp_path,
        "tenants",
        "configure",
        "app-cli",
        "--apns-team-id",
        "TEAM123456",
        "--apns-key-id",
        "KEY1234567",
        "--apns-key-file",
        str(good),
        "--bundle-id",
        "com.example.cli",
    )
    assert code == 0, err
    assert "apns_key_p8" in out and "bundle_id" in out
    assert "BEGIN PRIVATE KEY" not in out + err
    assert await stored_key(settings, "app-cli") == apns_key.private_pem

    rsa_file = tmp_path / "rsa.p8"
    rsa_file.write_bytes(pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    p384_file = tmp_path / "p384.p8"
    p384_file.write_bytes(pem_of(ec.generate_private_key(ec.SECP384R1())))
    junk_file = tmp_path / "junk.p8"
    junk_file.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    cases = {
        rsa_file: "must be a P-256 (ES256) EC private key",
        p384_file: "must be a P-256 (ES256) EC private key",
        junk_file: "is not a PEM private key",
        tmp_path / "missing.p8": "cannot read --apns-key-file",
    }
    for path, message in cases.items():
        code, out, err = await run_cli(
            settings, tmp_path, "tenants", "configure", "app-cli", "--apns-key-file", str(path)
        )
        assert code != 0, (path, out)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
        assert "Traceback" not in err and "PRIVATE KEY" not in err
    # the refused keys changed nothing
    assert await stored_key(settings, "app-cli") == apns_key.private_pem
    body = apns_key.private_pem.splitlines()[1]
    await assert_not_stored(settings, [body])
