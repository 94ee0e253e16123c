"""`make fuzz`: schemathesis against the real server, real tenants and keys, on SQLite and Postgres.

For each database it migrates a throwaway database, registers two tenants with the CLI (generous
rate limits, notify email, APNs key, webhook URL on 127.0.0.1 so the SSRF guard refuses it, a
Mastodon server, a bundle id), starts `stateless serve` on a free port and sends schemathesis'
positive and negative cases for every operation in /openapi.json, mostly with tenant A's secret
key, sometimes with its publishable key, tenant B's keys or none, and with path ids that exist
(A's and B's). Provider URLs point at 127.0.0.1 ports where nothing listens: nothing leaves the
machine and provider calls end as documented 502 problems.

Three kinds of cases per operation: positive and negative ones from the schema, and edge
ones: a positive case with one body field (at any depth) replaced by a hostile value from
bench/hostile.py (lone surrogates, nesting past 32 levels, decimals with huge exponents or
digit counts, integers past 64 bits, non-finite numbers, dates at the calendar's edges), sent as
raw JSON text, and sometimes a hostile value in a key header.

Checks per response: not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance, response_headers_conformance (edge cases: not_a_server_error and
problem+json for every 4xx); and for every case, loop_stall: the server runs under
bench/stallwatch.py, which reports any moment its event loop was held for more than 250 ms of
CPU, and such a report fails the run. The summary prints cases sent and failures by check;
exit status 1 when any check failed.

    python -m bench.fuzz [--examples 40] [--databases sqlite,postgres] [--max-seconds 600]
                         [--modes positive,negative,edge]

FUZZ_DATABASE_URL chooses the Postgres server (default postgresql://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from bench.hostile import hostile_header_value, mutate
from bench.http import free_port, wait_ready
from bench.stallwatch import STALL_MARKER

ADMIN_URL = os.environ.get("FUZZ_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent
HEX_TOKEN = "ab" * 32
ERASE_PATH = "/api/v1/admin/data"


@dataclass
class Tenant:
    app_id: str
    pk: str
    sk: str

    def headers(self, kind: str) -> dict[str, str]:
        key = self.sk if kind == "sk" else self.pk
        return {"X-App-ID": self.app_id, "Authorization": f"Bearer {key}"}


@dataclass
class Finding:
    check: str
    operation: str
    status: int
    title: str
    message: str
    curl: str
    count: int = 0


@dataclass
class Report:
    database: str
    cases: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    operation_statuses: dict[str, Counter[int]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    findings: dict[tuple[str, str, int, str], Finding] = field(default_factory=dict)
    transport_errors: Counter[str] = field(default_factory=Counter)
    cases_by_mode: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def record(
        self, check: str, label: str, status: int, title: str, message: str, curl: str
    ) -> None:
        key = (check, label, status, title)
        self.failures[check] += 1
        found = self.findings.get(key)
        if found is None:
            found = self.findings[key] = Finding(check, label, status, title, message, curl)
        found.count += 1


# Provider failures (nothing listens on the provider ports) answer these, documented per route.
PROVIDER_STATUSES = (502, 504)


def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' check, except documented provider problems (502/504): those are the API
    reporting an unreachable provider, not failing. 500 and 503 (the database is up) still fail."""
    from schemathesis.checks import not_a_server_error as builtin

    status = response.status_code
    if status in PROVIDER_STATUSES and str(status) in case.operation.definition.raw["responses"]:
        return None
    result: bool | None = builtin(ctx, response, case)
    return result


def _checks() -> list[Callable[..., Any]]:
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]


# --- a throwaway database and server ------------------------------------------------------


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'fuzz.db'}"
        return
    import asyncio

    import asyncpg

    name = f"stateless_fuzz_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def server_env(database_url: str, workdir: Path) -> dict[str, str]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: provider calls fail fast
    env = {k: v for k, v in os.environ.items() if k != "WEBHOOK_ALLOW_PRIVATE_NETWORKS"}
    env.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "SECRET_KEY": "fuzz-secret-key-with-more-than-32-characters!!",
            "AFFILIATE_SALT": "fuzz-affiliate-salt-more-than-32-characters!!",
            "STORAGE_LOCAL_PATH": str(workdir / "storage"),
            "SENDGRID_API_KEY": "SG.fuzz",
            "SENDGRID_API_BASE_URL": dead,
            "APNS_PRODUCTION_URL": dead,
            "APNS_SANDBOX_URL": dead,
            "APPLE_VERIFY_RECEIPT_URL": dead + "/verifyReceipt",
            "APPLE_VERIFY_RECEIPT_SANDBOX_URL": dead + "/verifyReceipt",
            "APPLE_VERIFY_RECEIPT_TIMEOUT_SECONDS": "2",
            "BOT_TIMEOUT_SECONDS": "5",
            "CLEANUP_INTERVAL_SECONDS": "3600",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
        }
    )
    for name in ("REDIS_URL", "S3_BUCKET_NAME", "SMTP_URL", "METRICS_TOKEN"):
        env.pop(name, None)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "stateless"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"stateless {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def register(env: dict[str, str], app_id: str, workdir: Path) -> Tenant:
    keys = json.loads(cli(env, "tenants", "create", app_id, "--json"))
    p8 = workdir / f"{app_id}.p8"
    p8.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    limits = ["default", "bots.execute", "health"] + [
        f"{route}" for route in ("ios.push", "storage.upload", "storage.download")
    ]
    rate_args = [arg for route in limits for arg in ("--rate-limit", f"{route}=1000000/minute")]
    cli(
        env,
        "tenants",
        "configure",
        app_id,
        "--bundle-id",
        f"dev.stateless.{app_id}",
        "--app-apple-id",
        "1234567890",
        "--apns-team-id",
        "TEAM123456",
        "--apns-key-id",
        "KEY1234567",
        "--apns-key-file",
        str(p8),
        "--notify-email",
        f"ops@{app_id}.example.com",
        "--email-from",
        f"noreply@{app_id}.example.com",
        "--webhook-url",
        "http://127.0.0.1:9/hooks",
        "--mastodon-url",
        env["SENDGRID_API_BASE_URL"],
        "--mastodon-token",
        "fuzz-token",
        *rate_args,
    )
    return Tenant(keys["app_id"], keys["publishable_key"], keys["secret_key"])


@dataclass
class Server:
    base: str
    log: Any  # a reader of its own on the server's log file (the server appends)

    def stalls(self) -> list[dict[str, Any]]:
        """Loop stalls the server reported since the last call (bench/stallwatch.py lines)."""
        found = []
        for line in self.log.read().decode(errors="replace").splitlines():
            if STALL_MARKER in line:
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line[line.index("{") :]))
        return found


@contextmanager
def serve(env: dict[str, str], workdir: Path) -> Iterator[Server]:
    """`stateless serve`'s app and protocol, run under the loop-stall detector."""
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("ab") as writer, log_path.open("rb") as reader:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.stallwatch", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=writer,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base + "/health/ready", timeout=60)
            server = Server(base, reader)
            server.stalls()  # from here on
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            lines = log_path.read_bytes().decode(errors="replace").splitlines()
            errors = [line for line in lines if "error" in line]
            for line in errors[:20]:
                print("  server:", line[:400])
            if os.environ.get("FUZZ_SERVER_LOG"):  # full lines, for tracebacks
                Path(os.environ["FUZZ_SERVER_LOG"]).write_text("\n".join(errors))


def seed_objects(base: str, a: Tenant, b: Tenant) -> dict[str, list[str]]:
    """Ids that exist, so generated path ids sometimes hit real rows (A's) and B's (-> 404)."""
    known: dict[str, list[str]] = {
        "draft_id": [],
        "object_id": [],
        "task_id": [],
        "app_id": [],
        "token": [],
        "code": [],
    }
    with httpx.Client(base_url=base, timeout=30) as client:
        for tenant in (a, b):
            draft = client.post(
                "/api/v1/drafts", json={"content": "x"}, headers=tenant.headers("sk")
            )
            known["draft_id"].append(draft.json()["id"])
            obj = client.post(
                "/api/v1/storage/objects",
                json={"content_type": "text/plain", "content_length": 3},
                headers=tenant.headers("sk"),
            )
            known["object_id"].append(obj.json()["object_id"])
            known["token"].append(obj.json()["upload"]["url"].rsplit("/", 1)[-1])
            code = client.post(
                "/api/v1/affiliate/generate",
                json={"code_id": "ref-1"},
                headers=tenant.headers("pk"),
            )
            known["code"].append(code.json()["code"])
            task = client.post(
                "/api/v1/bots/execute",
                json={"task_type": "email", "context": {"subject": "x"}, "mode": "async"},
                headers=tenant.headers("sk"),
            )
            known["task_id"].append(task.json()["task_id"])
            upload = obj.json()["upload"]
            client.request(
                upload["method"], upload["url"], content=b"abc", headers=upload["headers"]
            )
            stored = client.get(
                f"/api/v1/storage/objects/{obj.json()['object_id']}", headers=tenant.headers("sk")
            )
            if stored.json().get("download_url"):
                known["token"].append(stored.json()["download_url"].rsplit("/", 1)[-1])
            known["app_id"].append(tenant.app_id)
        client.post(
            "/api/v1/ios/register-token",
            json={"token": HEX_TOKEN, "device_id": "fuzz-device"},
            headers=a.headers("pk"),
        )
    return known


# --- bodies the schema cannot describe: task contexts, tokens and codes that verify ------------

_text = st.text(max_size=40)
_email = st.sampled_from(
    ["user@example.com", "Ünï@example.com", "not-an-email", "a@b", "x@[127.0.0.1]", ""]
)
_day = st.one_of(st.dates().map(str), _text)
TASK_CONTEXTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "email": st.fixed_dictionaries(
        {"subject": _text},
        optional={
            "to": st.one_of(_email, st.lists(_email, max_size=3)),
            "text": _text,
            "html": _text,
            "reply_to": _email,
            "template_id": _text,
            "dynamic_template_data": st.dictionaries(_text, _text, max_size=2),
        },
    ),
    "email_campaign": st.fixed_dictionaries(
        {
            "subject": _text,
            "recipients": st.lists(
                st.fixed_dictionaries(
                    {"to": _email},
                    optional={"substitutions": st.dictionaries(_text, _text, max_size=2)},
                ),
                max_size=3,
            ),
        },
        optional={"text": _text, "html": _text, "template_id": _text},
    ),
    "push": st.fixed_dictionaries(
        {},
        optional={
            "device_ids": st.lists(st.sampled_from(["fuzz-device", "other", ""]), max_size=3),
            "all": st.booleans(),
            "alert": st.fixed_dictionaries({"title": _text, "body": _text}),
            "badge": st.integers(-1, 10),
            "push_type": st.sampled_from(["alert", "background", "voip"]),
            "priority": st.sampled_from([1, 5, 10, 3]),
        },
    ),
    "webhook": st.fixed_dictionaries(
        {"event_type": _text}, optional={"data": st.dictionaries(_text, _text, max_size=2)}
    ),
    "data_export": st.fixed_dictionaries(
        {},
        optional={
            "kinds": st.lists(st.sampled_from(["drafts", "device_tokens", "nope", ""]), max_size=3),
            "ttl_seconds": st.integers(-10, 10**6),
        },
    ),
    "report_generation": st.fixed_dictionaries(
        {}, optional={"since": _day, "until": _day, "ttl_seconds": st.integers(-10, 10**6)}
    ),
    "social_post": st.fixed_dictionaries(
        {"status": _text},
        optional={
            "visibility": st.sampled_from(["public", "direct", "secret"]),
            "spoiler_text": _text,
            "language": st.sampled_from(["en", "deu", "EN", ""]),
            "sensitive": st.booleans(),
        },
    ),
}


EXECUTE = "POST /api/v1/bots/execute"


def enrich(
    label: str, body: dict[str, Any], draw: Any, known: dict[str, list[str]], variant: str | None
) -> None:
    """Give a positive body values that get past the first check, so deeper code runs too."""
    if label == EXECUTE and variant is not None:
        task_type = variant
        body["task_type"] = task_type
        body["context"] = draw(TASK_CONTEXTS[task_type])
    elif label == "POST /api/v1/ios/register-token":
        body["token"] = draw(st.sampled_from([HEX_TOKEN, "AB" * 100, "ab" * 101]))
    elif label == "POST /api/v1/ios/push":
        body.pop("all", None)
        body["device_ids"] = ["fuzz-device"]
        body.setdefault("alert", {"title": "t", "body": "b"})
    elif label == "POST /api/v1/affiliate/conversion":
        body["code"] = draw(st.sampled_from(known["code"]))
    elif label == "POST /api/v1/storage/objects":
        body["content_type"] = draw(st.sampled_from(["text/plain", "image/png", "TEXT/Plain "]))
    elif label == "POST /api/v1/ios/validate-receipt" and "receipt_data" in body:
        body["receipt_data"] = draw(st.sampled_from(["", "AAAA", "bm90IGEgcmVjZWlwdA=="]))


# --- the fuzzing loop -----------------------------------------------------------------------


EDGE_HEADERS = ("X-App-ID", "Authorization", "Idempotency-Key", "X-Request-ID")


def edge_call(
    case: Any,
    base: str,
    session: requests.Session,
    headers: dict[str, Any],
    draw: Any,
    pick: int,
) -> requests.Response:
    """Send the case with one body field replaced by a hostile value, as raw JSON text (lone
    surrogates as \\u escapes, NaN as NaN), and sometimes a hostile key header."""
    headers = dict(headers)
    if pick >= 6:
        headers[draw(st.sampled_from(EDGE_HEADERS))] = draw(hostile_header_value())
    content = None
    if isinstance(case.body, dict | list):
        body = mutate(case.body, draw)
        content = json.dumps(body, ensure_ascii=True, allow_nan=True).encode()
        headers["Content-Type"] = "application/json"
    return session.request(
        case.method,
        base + case.formatted_path,
        params=case.query,
        data=content,
        headers=headers,
        timeout=30,
    )


def edge_failures(response: requests.Response, case: Any) -> list[tuple[str, str]]:
    """What an edge case must never get: a 5xx (other than documented provider failures) or a
    4xx that is not a problem."""
    status = response.status_code
    documented = str(status) in case.operation.definition.raw["responses"]
    found = []
    if status >= 500 and not (status in PROVIDER_STATUSES and documented):
        found.append(("not_a_server_error", f"Server error {status}"))
    content_type = response.headers.get("content-type", "")
    if status >= 400 and not content_type.startswith("application/problem+json"):
        found.append(("problem_json", f"{status} answered as {content_type or 'nothing'}"))
    return found


def fuzz_operation(
    operation: Any,
    mode: Any,
    *,
    server: Server,
    identities: list[dict[str, str]],
    known: dict[str, list[str]],
    examples: int,
    report: Report,
    session: requests.Session,
    deadline: float,
    run_seed: int,
    variant: str | None = None,
    edge: bool = False,
) -> None:
    from schemathesis import GenerationMode

    checks = _checks()
    base = server.base
    label = f"{operation.method.upper()} {operation.path}"
    path_names = [p.name for p in operation.path_parameters]
    positive = mode.name == "POSITIVE"
    mode_name = "edge" if edge else mode.name.lower()
    if edge:
        mode = GenerationMode.POSITIVE

    @seed(run_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        who=st.integers(0, len(identities) - 1),
        pick=st.integers(0, 7),
        data=st.data(),
    )
    def run(case: Any, who: int, pick: int, data: Any) -> None:
        if time.monotonic() > deadline:
            return
        for name in path_names:
            if pick < len(known.get(name, [])) * 2:  # ~1 case in 4: an id that exists (A's or B's)
                case.path_parameters[name] = known[name][pick % len(known[name])]
        if positive and pick % 2 == 0 and isinstance(case.body, dict):
            enrich(label, case.body, data.draw, known, variant)
        headers = identities[who]
        try:
            if edge:
                response = edge_call(case, base, session, headers, data.draw, pick)
            else:
                response = case.call(base_url=base, session=session, headers=headers, timeout=30)
        except (requests.RequestException, ValueError, UnicodeError) as exc:
            report.transport_errors[type(exc).__name__] += 1  # unsendable by the client itself
            return
        report.cases += 1
        report.cases_by_mode[mode_name] += 1
        curl = ""
        for stall in server.stalls():
            curl = curl or case.as_curl_command(headers=headers, base_url=base)[:1500]
            report.record(
                "loop_stall",
                label,
                response.status_code,
                f"event loop held for {stall.get('held_ms')} ms",
                f"{mode_name} case; in flight: {stall.get('requests')}",
                curl,
            )
        report.by_operation[label] += 1
        report.operation_statuses.setdefault(label, Counter())[response.status_code] += 1
        if os.environ.get("FUZZ_TRACE") and response.status_code == int(os.environ["FUZZ_TRACE"]):
            print(label, headers.get("Authorization", "")[:10], response.text[:300])
            print("   ", case.as_curl_command(headers=headers, base_url=base)[:600])
        report.statuses[response.status_code] += 1
        if edge:
            for check_name, title in edge_failures(response, case):
                report.record(
                    check_name,
                    label,
                    response.status_code,
                    title,
                    f"edge case: {response.text[:300]}",
                    curl or case.as_curl_command(headers=headers, base_url=base)[:1500],
                )
            return
        for check in checks:
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # FailureGroup: a group of Failure
                failures = getattr(exc, "exceptions", [exc])
                for failure in failures:
                    title = str(getattr(failure, "title", type(failure).__name__))
                    report.record(
                        check.__name__,
                        label,
                        response.status_code,
                        title,
                        str(getattr(failure, "message", failure))[:800],
                        case.as_curl_command(headers=headers, base_url=base)[:1500],
                    )

    with contextlib.suppress(Unsatisfiable):  # nothing negative for an operation without inputs
        run()


def plain_document(env: dict[str, str]) -> dict[str, Any]:
    """FastAPI's own document, before kit/web/openapi.py amends it: the "before" figures."""
    from fastapi import FastAPI

    from stateless.config import Settings
    from stateless.main import create_app

    keys = ("DATABASE_URL", "SECRET_KEY", "AFFILIATE_SALT", "ENVIRONMENT")
    settings = Settings(_env_file=None, **{k.lower(): env[k] for k in keys})  # type: ignore[call-arg]
    document: dict[str, Any] = FastAPI.openapi(create_app(settings))
    return document


def fuzz(
    kind: str,
    examples: int,
    max_seconds: float,
    run_seed: int,
    plain_fastapi_document: bool = False,
    modes: tuple[str, ...] = ("positive", "negative", "edge"),
) -> Report:
    import schemathesis
    from schemathesis import GenerationMode

    report = Report(database=kind)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stateless-fuzz-") as tmp:
        workdir = Path(tmp)
        with database(kind, workdir) as url:
            env = server_env(url, workdir)
            cli(env, "migrate")
            a = register(env, "fuzz-a", workdir)
            b = register(env, "fuzz-b", workdir)
            with serve(env, workdir) as server:
                base = server.base
                if plain_fastapi_document:
                    schema = schemathesis.openapi.from_dict(plain_document(env))
                else:
                    schema = schemathesis.openapi.from_url(base + "/openapi.json")
                sk, pk = a.headers("sk"), a.headers("pk")
                # Mostly A's secret key; sometimes A's pk, B's keys, or nothing at all.
                identities = [sk, sk, sk, sk, sk, pk, pk, b.headers("sk"), b.headers("pk"), {}]
                deadline = started + max_seconds
                operations = [result.ok() for result in schema.get_all_operations()]
                # erasing everything goes last; the ids that exist are made again before each
                operations.sort(key=lambda op: (op.method, op.path) == ("delete", ERASE_PATH))
                with requests.Session() as session:
                    for operation in operations:
                        known = seed_objects(base, a, b)
                        label = f"{operation.method.upper()} {operation.path}"
                        runs: list[tuple[Any, str | None, int, bool]] = []
                        if "positive" in modes:
                            runs.append((GenerationMode.POSITIVE, None, examples, False))
                        if "negative" in modes:
                            runs.append((GenerationMode.NEGATIVE, None, examples, False))
                        if "edge" in modes:
                            runs.append((GenerationMode.POSITIVE, None, examples, True))
                        if label == EXECUTE and "positive" in modes:  # every task type's context
                            runs += [
                                (GenerationMode.POSITIVE, task_type, max(examples // 2, 1), False)
                                for task_type in sorted(TASK_CONTEXTS)
                            ]
                        if label == EXECUTE and "edge" in modes:
                            runs += [
                                (GenerationMode.POSITIVE, task_type, max(examples // 2, 1), True)
                                for task_type in sorted(TASK_CONTEXTS)
                            ]
                        for mode, variant, count, edge in runs:
                            fuzz_operation(
                                operation,
                                mode,
                                variant=variant,
                                edge=edge,
                                server=server,
                                identities=identities,
                                known=known,
                                examples=count,
                                report=report,
                                session=session,
                                deadline=deadline,
                                run_seed=run_seed,
                            )
    report.seconds = time.monotonic() - started
    return report


def print_report(report: Report, verbose: bool) -> None:
    print(f"\n== {report.database}: {report.cases} cases in {report.seconds:.0f} s")
    print("   cases: " + ", ".join(f"{k}: {v}" for k, v in sorted(report.cases_by_mode.items())))
    print("   statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items())))
    if verbose:
        for label, statuses in sorted(report.operation_statuses.items()):
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
            print(f"   {label}: {counts}")
    if report.transport_errors:
        print(f"   not sendable by the client (skipped): {dict(report.transport_errors)}")
    for name in [c.__name__ for c in _checks()] + ["problem_json", "loop_stall"]:
        print(f"   {name}: {report.failures.get(name, 0)} failures")
    for finding in report.findings.values():
        print(
            f"\n-- {finding.check} x{finding.count}: {finding.operation} -> {finding.status}"
            f" ({finding.title})\n{finding.message}\n{finding.curl}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--examples", type=int, default=40, help="per operation and mode (positive, negative)"
    )
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--max-seconds", type=float, default=600, help="per database")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--verbose", action="store_true", help="statuses per operation")
    parser.add_argument(
        "--modes", default="positive,negative,edge", help="which kinds of cases to send"
    )
    parser.add_argument(
        "--plain-fastapi-document",
        action="store_true",
        help="check against FastAPI's document without our problem responses (before figures)",
    )
    args = parser.parse_args()
    began = time.monotonic()
    reports = [
        fuzz(
            kind.strip(),
            args.examples,
            args.max_seconds,
            args.seed,
            args.plain_fastapi_document,
            tuple(mode.strip() for mode in args.modes.split(",") if mode.strip()),
        )
        for kind in args.databases.split(",")
        if kind.strip()
    ]
    for report in reports:
        print_report(report, args.verbose)
    total = sum(r.cases for r in reports)
    failed = sum(sum(r.failures.values()) for r in reports)
    print(
        f"\nTOTAL: {total} cases, {failed} failures, {len(reports)} database(s), "
        f"{time.monotonic() - began:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
