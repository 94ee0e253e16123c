"""The Render Blueprint wires what the app reads: checked against Settings, not by eye."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stateless.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# Read by `stateless serve` (cli.py) rather than Settings.
SERVE_OPTIONS = {
    "HOST",
    "PORT",
    "WEB_CONCURRENCY",
    "FORWARDED_ALLOW_IPS",
    "GRACEFUL_TIMEOUT_SECONDS",
    "MIGRATE_ON_START",
}
SECRET_NAMES = {
    "SECRET_KEY",
    "AFFILIATE_SALT",
    "METRICS_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SENDGRID_API_KEY",
    "SMTP_URL",
    "PREVIOUS_SECRET_KEYS",
}


def blueprint() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "render.yaml").read_text())
    assert isinstance(data, dict)
    return data


def service(kind: str) -> dict[str, Any]:
    (found,) = [s for s in blueprint()["services"] if s["type"] == kind]
    return found


def env_of(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every variable a service sees, its own and its groups', by key."""
    groups = {g["name"]: g["envVars"] for g in blueprint()["envVarGroups"]}
    merged: dict[str, dict[str, Any]] = {}
    for entry in svc["envVars"]:
        if "fromGroup" in entry:
            for var in groups[entry["fromGroup"]]:
                merged[var["key"]] = {**var, "group": entry["fromGroup"]}
        else:
            merged[entry["key"]] = entry
    return merged


def test_web_service_is_docker_with_readiness_and_migrations() -> None:
    web = service("web")
    assert web["runtime"] == "docker"
    assert web["dockerfilePath"] == "./Dockerfile"
    assert web["healthCheckPath"] == "/health/ready"
    assert web["preDeployCommand"] == "stateless migrate"
    env = env_of(web)
    assert env["RUN_BACKGROUND_JOBS"]["value"] == "false"
    assert env["MIGRATE_ON_START"]["value"] == "false"  # preDeployCommand did it once
    assert env["ENVIRONMENT"]["value"] == "production"
    assert web["numInstances"] >= 2


def test_one_worker_runs_background_jobs_from_the_same_image() -> None:
    worker = service("worker")
    assert worker["runtime"] == "docker"
    assert worker["dockerCommand"] == "stateless worker"
    assert worker["numInstances"] == 1
    assert env_of(worker)["RUN_BACKGROUND_JOBS"]["value"] == "true"


def test_postgres_and_key_value_are_wired_and_private() -> None:
    (db,) = blueprint()["databases"]
    kv = service("keyvalue")
    assert db["ipAllowList"] == [] and kv["ipAllowList"] == []
    for svc in (service("web"), service("worker")):
        env = env_of(svc)
        assert env["DATABASE_URL"]["fromDatabase"] == {
            "name": db["name"],
            "property": "connectionString",
        }
        assert env["REDIS_URL"]["fromService"] == {
            "type": "keyvalue",
            "name": kv["name"],
            "property": "connectionString",
        }


def test_render_connection_strings_get_the_async_driver() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url="postgres://stateless:pw@dpg-x-a:5432/stateless"
    )
    assert settings.database_url == "postgresql+asyncpg://stateless:pw@dpg-x-a:5432/stateless"


def test_shared_secrets_are_generated_once_for_both_services() -> None:
    web, worker = env_of(service("web")), env_of(service("worker"))
    for key in ("SECRET_KEY", "AFFILIATE_SALT"):
        assert web[key].get("generateValue") is True
        # the same group, so the same generated value: hashes and ciphertexts match across them
        assert web[key]["group"] == worker[key]["group"]
        for svc in blueprint()["services"]:
            own = [e for e in svc.get("envVars", []) if e.get("key") == key]
            assert not own, f"{svc['name']} would get its own {key}"


def test_no_secret_value_in_the_file_and_every_key_is_read_by_the_app() -> None:
    known = {name.upper() for name in Settings.model_fields} | SERVE_OPTIONS
    for svc in (service("web"), service("worker")):
        for key, var in env_of(svc).items():
            assert key in known, f"{key} is not read by the app"
            if key in SECRET_NAMES:
                assert "value" not in var, f"{key} has a literal value in render.yaml"
                assert var.get("generateValue") or var.get("sync") is False
            assert (
                len(
                    [
                        k
                        for k in ("value", "generateValue", "sync", "fromDatabase", "fromService")
                        if k in var
                    ]
                )
                == 1
            )


def test_production_settings_from_the_blueprint_pass_the_safety_check() -> None:
    web = env_of(service("web"))
    values = {k.lower(): v["value"] for k, v in web.items() if "value" in v}
    values.update(secret_key="g" * 64, affiliate_salt="h" * 64)  # what generateValue yields
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert settings.is_production and not settings.run_background_jobs
    assert settings.unsafe_production_settings() == []
