"""The `stateless` command: serve, migrate, cleanup, worker, and tenant administration."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from stateless.config import InvalidSettingsError, Settings, UnsafeSettingsError, load_settings
from stateless.kit.web.errors import ProblemError

if TYPE_CHECKING:
    from stateless.tenants.service import TenantService

app = typer.Typer(
    help="stateless-backend: a privacy-first, multi-tenant backend.", no_args_is_help=True
)
tenants_app = typer.Typer(
    help="Register and manage tenants (apps) and their keys.", no_args_is_help=True
)
app.add_typer(tenants_app, name="tenants")
entitlements_app = typer.Typer(
    help="Edit an app's entitlement map: which App Store products and Stripe prices grant "
    "each entitlement (e.g. `pro`).",
    no_args_is_help=True,
)
app.add_typer(entitlements_app, name="entitlements")

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _settings() -> Settings:
    try:
        return load_settings()
    except InvalidSettingsError as exc:  # one line naming the variable, no traceback
        _fail(str(exc))


def _require_database(settings: Settings) -> None:
    """Refuse to open a SQLite file that does not exist: opening it would create an empty
    database (and a stray var/ folder) wherever the command happens to run."""
    from stateless.migrations.runner import sqlite_file

    path = sqlite_file(settings)
    if path is not None and not path.exists():
        _fail(
            f"no database at {path} (DATABASE_URL={settings.database_url}, run in {Path.cwd()}): "
            "run `stateless migrate` to create it, or run this command where the server runs "
            "(or with the server's DATABASE_URL)"
        )


def _missing_schema(exc: BaseException) -> bool:
    """SQLite's "no such table" or Postgres' undefined_table (42P01): not migrated yet."""
    seen: list[BaseException | None] = [exc, getattr(exc, "orig", None), exc.__cause__]
    for error in seen:
        if error is None:
            continue
        if "no such table" in str(error) or getattr(error, "sqlstate", None) == "42P01":
            return True
        if type(error).__name__ == "UndefinedTableError":
            return True
    return False


def _run(factory: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    from stateless.migrations.runner import describe_database

    settings = _settings()
    _require_database(settings)
    try:
        return asyncio.run(factory(settings))
    except ProblemError as exc:
        _fail(exc.detail)
    except typer.Exit:
        raise
    except Exception as exc:
        if _missing_schema(exc):
            _fail(
                f"{describe_database(settings)} has no tables yet: run `stateless migrate` "
                "first (with the same DATABASE_URL)"
            )
        if type(exc).__module__.split(".")[0] in ("sqlalchemy", "asyncpg", "sqlite3"):
            _fail(f"cannot use {describe_database(settings)}: {_first_line(exc)}")
        if isinstance(exc, (ValueError, OSError)):
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        _fail(f"{type(exc).__name__}: {_first_line(exc)}")  # one line, never a traceback


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else "failed"


async def _with_tenants(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from stateless import domains
    from stateless.kit.data.db import session_scope
    from stateless.tenants.service import TenantService

    async with (
        domains.open_container(settings) as container,
        session_scope(container.sessionmaker) as session,
    ):
        return await action(TenantService(session, container.privacy))


def _exit_after_graceful_stop(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    workers: Annotated[int, typer.Option(envvar="WEB_CONCURRENCY")] = 1,
    forwarded_allow_ips: Annotated[str, typer.Option(envvar="FORWARDED_ALLOW_IPS")] = "127.0.0.1",
    graceful_timeout: Annotated[int, typer.Option(envvar="GRACEFUL_TIMEOUT_SECONDS")] = 20,
    migrate_first: Annotated[
        bool,
        typer.Option(
            "--migrate/--no-migrate",
            envvar="MIGRATE_ON_START",
            help="Upgrade the schema before serving (the container image's embedded default).",
        ),
    ] = False,
) -> None:
    """Serve the API with uvicorn (honours HOST, PORT, WEB_CONCURRENCY, FORWARDED_ALLOW_IPS).

    SIGTERM: stop accepting, let in-flight requests finish within GRACEFUL_TIMEOUT_SECONDS, stop
    background loops after their current unit, close pools, then exit 0 (a clean stop, not a crash).
    """
    from stateless.kit.observe.logging import configure_logging
    from stateless.kit.runtime import draining
    from stateless.kit.runtime.serving import (
        PortUnavailable,
        announce_address_on,
        check_port_available,
    )

    settings = _settings()
    try:
        settings.assert_safe_for_environment()
    except UnsafeSettingsError as exc:
        _fail(str(exc))
    if migrate_first:
        migrate()
    else:
        _require_database(settings)
    try:
        check_port_available(host, port)
    except PortUnavailable as exc:
        _fail(str(exc))
    # Logging is set up here too (not only in the app) so the parent of several workers logs
    # the same way; uvicorn's "running on" line becomes our `serving` event with real URLs.
    configure_logging(settings.log_level, settings.effective_log_format)
    announce_address_on()
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown; this handler turns
    # that into exit status 0 so orchestrators record a clean stop.
    signal.signal(signal.SIGTERM, _exit_after_graceful_stop)
    draining.run(
        "stateless.main:app",
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_graceful_shutdown=graceful_timeout,
        access_log=False,
        log_config=None,
        server_header=False,
    )


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the latest revision (safe on every deploy).

    Says which database it opened and what it did: created, upgraded, or nothing to do.
    """
    from stateless.migrations.runner import describe_database, upgrade

    settings = _settings()
    database = describe_database(settings)
    try:
        outcome = upgrade(settings)
    except Exception as exc:  # one line for the operator
        _fail(f"migration of {database} failed: {type(exc).__name__}: {_first_line(exc)}")
    if outcome.created:
        typer.echo(f"created the schema in {database} (revision {outcome.after}, the latest)")
    elif outcome.changed:
        typer.echo(
            f"upgraded {database} from revision {outcome.before} to the latest ({outcome.after})"
        )
    else:
        typer.echo(f"{database} is already at the latest revision ({outcome.after}); nothing to do")


async def _cleanup_once(settings: Settings) -> dict[str, Any]:
    from stateless import domains
    from stateless.lifecycle.wiring import cleanup_service

    async with domains.open_container(settings) as container:
        report = await cleanup_service(container).run_once()
        return {"deleted": report.deleted, "errors": report.errors}


@app.command()
def cleanup() -> None:
    """Delete every expired row once and exit (for cron, or to check a deployment)."""
    result = _run(_cleanup_once)
    typer.echo(json.dumps(result, sort_keys=True))
    if result["errors"]:
        raise typer.Exit(1)


async def _worker(settings: Settings) -> None:
    from stateless import domains
    from stateless.kit.observe.logging import configure_logging
    from stateless.kit.observe.looplag import watch_loop_lag

    configure_logging(settings.log_level, settings.effective_log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        container = await stack.enter_async_context(domains.open_container(settings))
        await stack.enter_async_context(watch_loop_lag(container.metrics))
        await domains.start_background_jobs(container, stack)
        typer.echo("worker running; SIGTERM stops it after the current unit of work", err=True)
        await stop.wait()


@app.command()
def worker(
    nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="Lower this process's CPU priority by this much (0: unchanged), so on a shared "
            "host the web process answers requests first while a broadcast or a cleanup runs.",
        ),
    ] = 10,
) -> None:
    """Run background work only (cleanup, async tasks), so web replicas can skip it."""
    if nice:
        os.nice(nice)
    _run(_worker)


@tenants_app.command("create")
def tenants_create(
    app_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Register an app and print its publishable and secret keys, once."""
    keys = _run(lambda s: _with_tenants(s, lambda svc: svc.create(app_id)))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "app_id": keys.app_id,
                    "publishable_key": keys.publishable_key,
                    "secret_key": keys.secret_key,
                }
            )
        )
        return
    typer.echo(f"app_id:          {keys.app_id}")
    typer.echo(f"publishable key: {keys.publishable_key}")
    typer.echo(f"secret key:      {keys.secret_key}")
    typer.echo("These keys are shown once; only their hashes are stored.", err=True)


@tenants_app.command("list")
def tenants_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List apps and their key prefixes (never the keys)."""
    rows = _run(lambda s: _with_tenants(s, lambda svc: svc.list_tenants()))
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        active = [k["prefix"] for k in row["keys"] if k["active"]]
        typer.echo(f"{row['app_id']}\tactive keys: {', '.join(active) or '-'}")


@tenants_app.command("show")
def tenants_show(
    app_id: Annotated[str, typer.Argument(metavar="APP_ID", help="The app to show.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print an app's keys (prefixes only) and settings; secrets show only whether they are set."""
    shown = _run(lambda s: _with_tenants(s, lambda svc: svc.show(app_id)))
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    typer.echo(f"app_id:     {shown['app_id']}")
    typer.echo(f"created_at: {shown['created_at']}")
    typer.echo("keys:")
    for key in shown["keys"]:
        state = "active" if key["active"] else "inactive"
        until = f", until {key['expires_at']}" if key["expires_at"] else ""
        typer.echo(f"  {key['prefix']}  {key['kind']}, {state}{until}")
    typer.echo("settings:")
    for name, value in shown["settings"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        typer.echo(f"  {name}: {value if value not in (None, '') else '-'}")
    typer.echo("secrets (stored encrypted, never shown):")
    for name, value in shown["secrets"].items():
        typer.echo(f"  {name}: {'set' if value else '-'}")


@tenants_app.command("rotate-key")
def tenants_rotate_key(
    app_id: str,
    grace_seconds: Annotated[
        int, typer.Option(help="How long the old keys keep working (0 = stop now).")
    ] = 86400,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Issue a new key pair; the old pair keeps working for --grace-seconds (default 24 h)."""
    keys = _run(lambda s: _with_tenants(s, lambda svc: svc.rotate_key(app_id, grace_seconds)))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "app_id": keys.app_id,
                    "publishable_key": keys.publishable_key,
                    "secret_key": keys.secret_key,
                    "old_keys_grace_seconds": grace_seconds,
                }
            )
        )
        return
    typer.echo(f"publishable key: {keys.publishable_key}")
    typer.echo(f"secret key:      {keys.secret_key}")
    typer.echo(f"old keys stop working in {grace_seconds} s", err=True)


@tenants_app.command("revoke-key")
def tenants_revoke_key(app_id: str, key_prefix: str) -> None:
    """Revoke one key by its prefix (e.g. sk_1a2b3c4d5e6f); it stops working within 5 s."""
    prefix = _run(lambda s: _with_tenants(s, lambda svc: svc.revoke_key(app_id, key_prefix)))
    typer.echo(f"revoked {prefix}")


@tenants_app.command("delete")
def tenants_delete(app_id: str) -> None:
    """Delete an app, its keys and settings (erase its data first with DELETE /admin/data)."""
    _run(lambda s: _with_tenants(s, lambda svc: svc.delete(app_id)))
    typer.echo(f"deleted {app_id}")


def _read_p8_key(path: Path, option: str) -> str:
    """An Apple .p8 private key (APNs or App Store Server API) as PEM text; `option` names the
    command-line option in errors."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        pem = path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {option}: {exc.strerror or exc}")
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        _fail(f"{option} is not a PEM private key (.p8 from Apple's developer portal)")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        _fail(f"{option} must be a P-256 (ES256) EC private key")
    return pem.decode("ascii")


def _check_prefix(option: str, value: str | None, prefixes: tuple[str, ...], what: str) -> None:
    """A Stripe secret must carry its kind's prefix; the value itself is never echoed."""
    if value is None:
        return
    if not value.startswith(prefixes) or len(value) <= 6 or any(c.isspace() for c in value):
        wanted = " or ".join(f"{p}..." for p in prefixes)
        _fail(f"{option} must be a Stripe {what} ({wanted})")


# `tenants configure` options, grouped in --help by what they set up. Each help text ends with
# an example; new options follow the same pattern (an Annotated parameter with a panel).
_APPLE = "Apple: push (APNs) and purchases (StoreKit)"
_EMAIL = "Email"
_OUTBOUND = "Webhooks and social posts"
_WEB = "Browsers, limits and uploads"
_PURCHASES = "Purchases: App Store Server API and Stripe"


@tenants_app.command("configure")
def tenants_configure(
    app_id: Annotated[str, typer.Argument(metavar="APP_ID", help="The app to change.")],
    bundle_id: Annotated[
        str | None,
        typer.Option(
            "--bundle-id",
            metavar="BUNDLE_ID",
            help="The iOS app's bundle id: the APNs topic, and the bundle StoreKit purchases "
            "must name. E.g. --bundle-id com.example.app",
            rich_help_panel=_APPLE,
        ),
    ] = None,
    app_apple_id: Annotated[
        int | None,
        typer.Option(
            "--app-apple-id",
            metavar="NUMBER",
            help="The app's Apple ID from App Store Connect (App Information), needed to accept "
            "production purchases. E.g. --app-apple-id 1234567890",
            rich_help_panel=_APPLE,
        ),
    ] = None,
    apns_team_id: Annotated[
        str | None,
        typer.Option(
            "--apns-team-id",
            metavar="TEAM_ID",
            help="Your Apple developer Team ID (10 characters). E.g. --apns-team-id ABCDE12345",
            rich_help_panel=_APPLE,
        ),
    ] = None,
    apns_key_id: Annotated[
        str | None,
        typer.Option(
            "--apns-key-id",
            metavar="KEY_ID",
            help="The Key ID of the APNs auth key (.p8). E.g. --apns-key-id 2X9R4HXF34",
            rich_help_panel=_APPLE,
        ),
    ] = None,
    apns_key_file: Annotated[
        Path | None,
        typer.Option(
            "--apns-key-file",
            metavar="PATH",
            help="The APNs auth key downloaded from Apple (stored encrypted). "
            "E.g. --apns-key-file ~/Downloads/AuthKey_2X9R4HXF34.p8",
            rich_help_panel=_APPLE,
        ),
    ] = None,
    appstore_shared_secret: Annotated[
        str | None,
        typer.Option(
            "--appstore-shared-secret",
            metavar="SECRET",
            help="App Store Connect's app-specific shared secret, for legacy receipts (stored "
            "encrypted). E.g. --appstore-shared-secret 3f9a1c0e5b7d4e2a9c8b...",
            rich_help_panel=_APPLE,
        ),
    ] = None,
    notify_email: Annotated[
        str | None,
        typer.Option(
            "--notify-email",
            metavar="ADDRESS",
            help="Where email tasks without a `to` go (stored encrypted). "
            "E.g. --notify-email ops@example.com",
            rich_help_panel=_EMAIL,
        ),
    ] = None,
    email_from: Annotated[
        str | None,
        typer.Option(
            "--email-from",
            metavar="ADDRESS",
            help="Sender of this app's emails (default EMAIL_FROM). "
            "E.g. --email-from hello@example.com",
            rich_help_panel=_EMAIL,
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(
            "--webhook-url",
            metavar="URL",
            help="Target of `webhook` tasks; the first time, prints the signing secret once. "
            "E.g. --webhook-url https://hooks.example.com/stateless",
            rich_help_panel=_OUTBOUND,
        ),
    ] = None,
    mastodon_url: Annotated[
        str | None,
        typer.Option(
            "--mastodon-url",
            metavar="URL",
            help="The Mastodon-compatible server `social_post` tasks post to. "
            "E.g. --mastodon-url https://mastodon.social",
            rich_help_panel=_OUTBOUND,
        ),
    ] = None,
    mastodon_token: Annotated[
        str | None,
        typer.Option(
            "--mastodon-token",
            metavar="TOKEN",
            help="An access token with write:statuses on that server (stored encrypted). "
            "E.g. --mastodon-token 9f8e7d...",
            rich_help_panel=_OUTBOUND,
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="A browser origin allowed to call the API with this app's keys; repeat for "
            "several (replaces the list). E.g. --cors-origin https://app.example.com",
            rich_help_panel=_WEB,
        ),
    ] = None,
    rate_limit: Annotated[
        list[str] | None,
        typer.Option(
            "--rate-limit",
            metavar="ROUTE=LIMIT",
            help="Override a route's limit for this app; repeatable. ROUTE is an operation "
            "name (bots.execute, health, drafts.create, ... or `default` for every other "
            "route); LIMIT is COUNT/second|minute|hour|day. Defaults: health 10/minute, "
            "bots.execute 30/minute, others 600/minute. E.g. --rate-limit bots.execute=60/minute",
            rich_help_panel=_WEB,
        ),
    ] = None,
    allowed_content_type: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-content-type",
            metavar="TYPE",
            help="Restrict uploads to these media types (`type/*` allowed); repeat for several. "
            "E.g. --allowed-content-type image/png --allowed-content-type 'image/*'",
            rich_help_panel=_WEB,
        ),
    ] = None,
    webpush_generate_keys: Annotated[
        bool,
        typer.Option(
            "--webpush-generate-keys",
            help="Create a new VAPID key pair for Web Push and print its public key (the "
            "private key is stored encrypted). Subscriptions made with the old key stop "
            "working. E.g. --webpush-generate-keys",
        ),
    ] = False,
    webpush_contact: Annotated[
        str | None,
        typer.Option(
            "--webpush-contact",
            help="Contact push services may reach you by (VAPID `sub`): a mailto: address or "
            "an https: URL. E.g. --webpush-contact mailto:ops@example.com",
        ),
    ] = None,
    appstore_issuer_id: Annotated[
        str | None,
        typer.Option(
            "--appstore-issuer-id",
            metavar="ISSUER_ID",
            help="The Issuer ID of your App Store Connect API keys (Users and Access, "
            "Integrations), used to reconcile purchases with the App Store Server API. "
            "E.g. --appstore-issuer-id 57246542-96fe-1a63-e053-0824d011072a",
            rich_help_panel=_PURCHASES,
        ),
    ] = None,
    appstore_key_id: Annotated[
        str | None,
        typer.Option(
            "--appstore-key-id",
            metavar="KEY_ID",
            help="The Key ID of the In-App Purchase key (.p8) for the App Store Server API. "
            "E.g. --appstore-key-id 2X9R4HXF34",
            rich_help_panel=_PURCHASES,
        ),
    ] = None,
    appstore_key_file: Annotated[
        Path | None,
        typer.Option(
            "--appstore-key-file",
            metavar="PATH",
            help="The In-App Purchase key (.p8) downloaded from App Store Connect, for the "
            "App Store Server API (stored encrypted). "
            "E.g. --appstore-key-file ~/Downloads/SubscriptionKey_2X9R4HXF34.p8",
            rich_help_panel=_PURCHASES,
        ),
    ] = None,
    stripe_secret_key: Annotated[
        str | None,
        typer.Option(
            "--stripe-secret-key",
            metavar="KEY",
            help="A Stripe secret key (sk_...) or restricted key (rk_...) for Checkout and "
            "subscription lookups (stored encrypted). E.g. --stripe-secret-key rk_live_51H...",
            rich_help_panel=_PURCHASES,
        ),
    ] = None,
    stripe_webhook_secret: Annotated[
        str | None,
        typer.Option(
            "--stripe-webhook-secret",
            metavar="SECRET",
            help="The signing secret (whsec_...) of the Stripe webhook endpoint pointing at "
            "/api/v1/entitlements/stripe/webhook/APP_ID (stored encrypted). "
            "E.g. --stripe-webhook-secret whsec_3f9a1c...",
            rich_help_panel=_PURCHASES,
        ),
    ] = None,
) -> None:
    """Set an app's options; secrets (keys, tokens, addresses) are stored encrypted."""
    from email_validator import EmailNotValidError, validate_email

    from stateless.tenants.service import ConfigureRequest

    for label, address in (("--notify-email", notify_email), ("--email-from", email_from)):
        if address is not None:
            try:
                validate_email(address, check_deliverability=False)
            except EmailNotValidError as exc:
                _fail(f"{label}: {exc}")
    _check_prefix(
        "--stripe-secret-key", stripe_secret_key, ("sk_", "rk_"), "secret or restricted key"
    )
    _check_prefix(
        "--stripe-webhook-secret", stripe_webhook_secret, ("whsec_",), "webhook signing secret"
    )
    request = ConfigureRequest(
        bundle_id=bundle_id,
        app_apple_id=app_apple_id,
        apns_team_id=apns_team_id,
        apns_key_id=apns_key_id,
        apns_key_p8=_read_p8_key(apns_key_file, "--apns-key-file") if apns_key_file else None,
        appstore_shared_secret=appstore_shared_secret,
        notify_email=notify_email,
        email_from=email_from,
        webhook_url=webhook_url,
        cors_origins=cors_origin or None,
        rate_limits=rate_limit or None,
        mastodon_url=mastodon_url,
        mastodon_token=mastodon_token,
        allowed_content_types=allowed_content_type or None,
        webpush_generate_keys=webpush_generate_keys,
        webpush_contact=webpush_contact,
        appstore_issuer_id=appstore_issuer_id,
        appstore_key_id=appstore_key_id,
        appstore_api_key_p8=(
            _read_p8_key(appstore_key_file, "--appstore-key-file") if appstore_key_file else None
        ),
        stripe_secret_key=stripe_secret_key,
        stripe_webhook_secret=stripe_webhook_secret,
    )
    result = _run(lambda s: _with_tenants(s, lambda svc: svc.configure(app_id, request)))
    typer.echo(f"updated {app_id}: {', '.join(result.changed) or 'nothing'}")
    if result.webhook_secret:
        typer.echo(f"webhook signing secret (shown once): {result.webhook_secret}")
    if result.webpush_public_key:
        typer.echo(f"webpush public key: {result.webpush_public_key}")


_APP_ID_ARG = Annotated[str, typer.Argument(metavar="APP_ID", help="The app whose map to use.")]


async def _read_entitlements(settings: Settings, app_id: str) -> dict[str, list[str]]:
    """The app's entitlement map from its plain settings (its sealed secrets stay closed)."""
    from stateless.kit.web.errors import NotFound

    async def read(service: TenantService) -> dict[str, list[str]]:
        tenant = await service.repo.get(app_id)
        if tenant is None:
            raise NotFound(f"no tenant {app_id}")
        return service.read_config(tenant).entitlements

    return await _with_tenants(settings, read)


def _change_entitlements(
    app_id: str, change: Callable[[dict[str, list[str]]], dict[str, list[str]]]
) -> dict[str, list[str]]:
    """Rewrite the map in one transaction; a ProblemError raised by `change` (an invalid map,
    an unknown name) rolls it back and becomes a one-line error."""
    return _run(lambda s: _with_tenants(s, lambda svc: svc.change_entitlements(app_id, change)))


@entitlements_app.command("set")
def entitlements_set(
    app_id: _APP_ID_ARG,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The entitlement the app asks about: 1-64 of a-z 0-9 _ . - (lowercase). E.g. pro",
        ),
    ],
    product: Annotated[
        list[str] | None,
        typer.Option(
            "--product",
            metavar="ID",
            help="An App Store product id or a Stripe price or product id that grants NAME; "
            "repeat for several (replaces NAME's list). "
            "E.g. --product com.example.pro.monthly --product price_1Pxyz",
        ),
    ] = None,
) -> None:
    """Set (replace) the products granting one entitlement; the others stay as they are.

    E.g. stateless entitlements set my-app pro --product com.example.pro.monthly
    --product price_1Pxyz
    """
    from stateless.entitlements.catalog import validate_map

    if not product:
        _fail(
            f"give at least one --product for {name}, e.g. "
            f"`stateless entitlements set {app_id} {name} --product com.example.pro.monthly` "
            f"(to drop it: `stateless entitlements remove {app_id} {name}`)"
        )
    products = list(product)
    stored = _change_entitlements(app_id, lambda current: validate_map({**current, name: products}))
    typer.echo(f"{app_id}: {name} granted by {', '.join(stored[name])}")


@entitlements_app.command("list")
def entitlements_list(
    app_id: _APP_ID_ARG,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON object: {"app_id", "entitlements": {NAME: {"products": [...]}}}.',
        ),
    ] = False,
) -> None:
    """Print an app's entitlements and the products granting each, one `NAME: id, id` a line.

    E.g. stateless entitlements list my-app --json
    """
    entitlements = _run(lambda s: _read_entitlements(s, app_id))
    if as_json:
        shown = {name: {"products": products} for name, products in entitlements.items()}
        typer.echo(json.dumps({"app_id": app_id, "entitlements": shown}))
        return
    if not entitlements:
        typer.echo(
            f"{app_id} has no entitlements yet; add one with "
            f"`stateless entitlements set {app_id} pro --product PRODUCT_ID`",
            err=True,
        )
    for name, products in entitlements.items():
        typer.echo(f"{name}: {', '.join(products)}")


@entitlements_app.command("remove")
def entitlements_remove(
    app_id: _APP_ID_ARG,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The entitlement to drop. E.g. pro")],
) -> None:
    """Remove one entitlement from the map (its purchases no longer grant anything).

    E.g. stateless entitlements remove my-app pro
    """
    from stateless.kit.web.errors import NotFound

    def drop(current: dict[str, list[str]]) -> dict[str, list[str]]:
        if name not in current:
            known = ", ".join(current) or "none"
            raise NotFound(f"{app_id} has no entitlement {name[:80]!r} (it has: {known})")
        return {key: value for key, value in current.items() if key != name}

    _change_entitlements(app_id, drop)
    typer.echo(f"{app_id}: removed {name}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
