"""`stateless entitlements set|list|remove` and the purchase options of `tenants configure`
(SPEC 9, 13), run as an operator runs them: real subprocesses on the test database."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stateless.config import Settings
from stateless.tenants.service import MASKED, TenantService
from tests.conftest import ClientFactory, TenantFactory, run_tenant_service
from tests.privacy import assert_not_stored
from tests.test_cli import run_cli

ISSUER_ID = "57246542-96fe-1a63-e053-0824d011072a"
KEY_ID = "2X9R4HXF34"
STRIPE_SECRET_KEY = "rk_test_cli_" + "k" * 24
STRIPE_WEBHOOK_SECRET = "whsec_cli_" + "w" * 32


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def listed(settings: Settings, app_id: str, cwd: Path) -> dict[str, Any]:
    result = run_cli(settings, "entitlements", "list", app_id, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


def p8_key(curve: ec.EllipticCurve) -> str:
    key = ec.generate_private_key(curve)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


async def test_set_list_remove_round_trip(
    settings: Settings, make_client: ClientFactory, make_tenant: TenantFactory, tmp_path: Path
) -> None:
    tenant = await make_tenant("shop")
    empty = run_cli(settings, "entitlements", "list", "shop", cwd=tmp_path)
    assert empty.returncode == 0 and empty.stdout == ""
    assert "stateless entitlements set shop" in empty.stderr
    assert listed(settings, "shop", tmp_path) == {"app_id": "shop", "entitlements": {}}

    pro = run_cli(
        settings,
        "entitlements",
        "set",
        "shop",
        "pro",
        "--product",
        "com.example.pro.monthly",
        "--product",
        "price_1Pxyz",
        "--product",
        "com.example.pro.monthly",
        cwd=tmp_path,
    )
    assert pro.returncode == 0, pro.stderr
    assert pro.stdout.strip() == "shop: pro granted by com.example.pro.monthly, price_1Pxyz"
    team = run_cli(
        settings, "entitlements", "set", "shop", "team", "--product", "prod_Team", cwd=tmp_path
    )
    assert team.returncode == 0, team.stderr
    # Setting one entitlement again replaces its list and keeps the others.
    again = run_cli(
        settings, "entitlements", "set", "shop", "pro", "--product", "price_2Yearly", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    plain = run_cli(settings, "entitlements", "list", "shop", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == ["pro: price_2Yearly", "team: prod_Team"]
    assert listed(settings, "shop", tmp_path) == {
        "app_id": "shop",
        "entitlements": {
            "pro": {"products": ["price_2Yearly"]},
            "team": {"products": ["prod_Team"]},
        },
    }

    # The server reads the same map: /check lists every mapped entitlement.
    client = await make_client()
    token = str(uuid.uuid4())
    checked = await client.post(
        "/api/v1/entitlements/check", json={"app_account_token": token}, headers=tenant.pk
    )
    assert checked.status_code == 200, checked.text
    assert set(checked.json()["entitlements"]) == {"pro", "team"}

    # A refused change leaves the map as it was.
    one_line_error(run_cli(settings, "entitlements", "remove", "shop", "gold", cwd=tmp_path))
    removed = run_cli(settings, "entitlements", "remove", "shop", "team", cwd=tmp_path)
    assert removed.returncode == 0 and removed.stdout.strip() == "shop: removed team"
    assert listed(settings, "shop", tmp_path)["entitlements"] == {
        "pro": {"products": ["price_2Yearly"]}
    }
    client.app.state.container.directory.invalidate()
    checked = await client.post(
        "/api/v1/entitlements/check", json={"app_account_token": token}, headers=tenant.pk
    )
    assert set(checked.json()["entitlements"]) == {"pro"}

    # And the other way round: a map set through the admin API is what the CLI lists.
    put = await client.put(
        "/api/v1/admin/entitlements",
        json={"entitlements": {"plus": {"products": ["com.example.plus"]}}},
        headers=tenant.sk,
    )
    assert put.status_code == 200, put.text
    assert listed(settings, "shop", tmp_path)["entitlements"] == {
        "plus": {"products": ["com.example.plus"]}
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("entitlements", "set", "exists", "Pro!", "--product", "x"), "'Pro!'"),
        (("entitlements", "set", "exists", "pro", "--product", "bad id"), "product ids"),
        (("entitlements", "set", "exists", "pro"), "--product"),
        (("entitlements", "remove", "exists", "unknown"), "no entitlement 'unknown'"),
        (("entitlements", "set", "missing", "pro", "--product", "x"), "no tenant missing"),
        (("entitlements", "list", "missing"), "no tenant missing"),
        (("entitlements", "remove", "missing", "pro"), "no tenant missing"),
        (("tenants", "configure", "exists", "--stripe-secret-key", "pk_live_abc123"), "sk_"),
        (("tenants", "configure", "exists", "--stripe-webhook-secret", "sk_abc123"), "whsec_"),
        (("tenants", "configure", "exists", "--appstore-key-file", "/nonexistent.p8"), "read"),
        (("tenants", "configure", "exists", "--appstore-key-file", "{junk}"), "PEM"),
        (("tenants", "configure", "exists", "--appstore-key-file", "{p384}"), "P-256"),
    ],
)
async def test_bad_input_exits_non_zero_with_one_line(
    settings: Settings,
    make_tenant: TenantFactory,
    tmp_path: Path,
    args: tuple[str, ...],
    expected: str,
) -> None:
    await make_tenant("exists")
    (tmp_path / "junk.p8").write_text("not a key\n")
    (tmp_path / "p384.p8").write_text(p8_key(ec.SECP384R1()))
    args = tuple(a.format(junk=tmp_path / "junk.p8", p384=tmp_path / "p384.p8") for a in args)
    line = one_line_error(run_cli(settings, *args, cwd=tmp_path))
    assert expected in line, line
    if "--appstore-key-file" in args:
        assert "--appstore-key-file" in line and "--apns-key-file" not in line
    if args[-1].startswith(("pk_live", "sk_abc")):
        assert args[-1] not in line  # a secret given in the wrong place is not echoed


async def test_configure_purchase_options(
    settings: Settings, make_tenant: TenantFactory, tmp_path: Path
) -> None:
    await make_tenant("shop")
    pem = p8_key(ec.SECP256R1())
    key_file = tmp_path / f"SubscriptionKey_{KEY_ID}.p8"
    key_file.write_text(pem)
    result = run_cli(
        settings,
        "tenants",
        "configure",
        "shop",
        "--appstore-issuer-id",
        ISSUER_ID,
        "--appstore-key-id",
        KEY_ID,
        "--appstore-key-file",
        str(key_file),
        "--stripe-secret-key",
        STRIPE_SECRET_KEY,
        "--stripe-webhook-secret",
        STRIPE_WEBHOOK_SECRET,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "updated shop: appstore_issuer_id, appstore_key_id, appstore_api_key_p8, "
        "stripe_secret_key, stripe_webhook_secret"
    )

    shown_run = run_cli(settings, "tenants", "show", "shop", "--json", cwd=tmp_path)
    assert shown_run.returncode == 0, shown_run.stderr
    shown = json.loads(shown_run.stdout)
    assert shown["settings"]["appstore_issuer_id"] == ISSUER_ID
    assert shown["settings"]["appstore_key_id"] == KEY_ID
    for name in ("appstore_api_key_p8", "stripe_secret_key", "stripe_webhook_secret"):
        assert shown["secrets"][name] == MASKED
    key_body = pem.splitlines()[1]
    for secret in (STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, key_body):
        assert secret not in result.stdout + result.stderr + shown_run.stdout

    async def read(service: TenantService) -> Any:
        tenant = await service.repo.get("shop")
        assert tenant is not None
        return service.read_secrets(tenant)

    sealed = await run_tenant_service(settings, read)
    assert sealed.appstore_api_key_p8 == pem
    assert sealed.stripe_secret_key == STRIPE_SECRET_KEY
    assert sealed.stripe_webhook_secret == STRIPE_WEBHOOK_SECRET
    await assert_not_stored(settings, [STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, key_body])
