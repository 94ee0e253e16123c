"""Settings from the environment (and `.env`), with the refusal of unsafe production defaults."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_SECRET_KEY = "dev-secret-key-change-me-in-production-0000"  # noqa: S105 - refused in production
DEV_AFFILIATE_SALT = "dev-affiliate-salt-change-me-in-production"
MINIMUM_SECRET_LENGTH = 32
MINIO_DEFAULT_CREDENTIAL = "minioadmin"


class UnsafeSettingsError(RuntimeError):
    """Raised when production would start on secrets anyone can guess."""


class InvalidSettingsError(RuntimeError):
    """A setting that cannot work; the message is one line naming the variable and its need."""


def load_settings() -> Settings:
    """Settings from the environment, or `InvalidSettingsError` with one line (the first
    problem: `APNS_PRODUCTION_URL must be https:// ..., got ...`), never pydantic's report."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first.get("loc", ())).upper() or "settings"
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InvalidSettingsError(f"invalid {name}: {message}{more}") from None


def _readable(path: Path, *, directory: bool) -> None:
    """ValueError naming what is wrong with a file or directory setting."""
    import os

    kind = "directory" if directory else "file"
    if not path.exists():
        raise ValueError(f"{path} does not exist (a {kind} is needed)")
    if path.is_dir() != directory:
        raise ValueError(f"{path} is not a {kind}")
    if not os.access(path, os.R_OK | (os.X_OK if directory else 0)):
        raise ValueError(f"{path} is not readable by this process")


class Settings(BaseSettings):
    """Every knob of SPEC section 11; defaults run the embedded stack (SQLite, local files)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `KEY=` in .env means "use the default", as .env.example shows
    )

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./var/stateless.db"
    secret_key: str = DEV_SECRET_KEY
    affiliate_salt: str = DEV_AFFILIATE_SALT
    # Older SECRET_KEYs, comma-separated: ciphertexts sealed under them still open after rotation.
    previous_secret_keys: Annotated[list[str], NoDecode] = []
    redis_url: str | None = None
    # Prefix of every Redis key we write; lets several deployments (or test runs) share one Redis.
    redis_key_prefix: str = "stateless"

    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_region: str = "us-east-1"
    s3_bucket_name: str | None = None
    s3_endpoint_url: str | None = None
    # Every body lives under this prefix of the bucket; the orphan sweep and the S3 lifecycle
    # rule operators add (docs/storage.md) touch nothing outside it.
    s3_key_prefix: str = "stateless"
    storage_local_path: Path = Path("./var/storage")
    public_base_url: str | None = None

    sendgrid_api_key: str | None = None
    sendgrid_api_base_url: str = "https://api.sendgrid.com"
    smtp_url: str | None = None
    email_from: str = "no-reply@localhost"

    cleanup_interval_seconds: float = Field(default=60.0, gt=0)
    # Rows per DELETE batch (no rows reach Python); kinds with a before-delete hook (file
    # bodies) load their rows, so they use the smaller CLEANUP_HOOK_BATCH_SIZE.
    cleanup_batch_size: int = Field(default=50_000, ge=1, le=500_000)
    cleanup_hook_batch_size: int = Field(default=500, ge=1, le=10_000)
    max_data_ttl_days: int = Field(default=90, ge=1)
    # Per-kind TTL overrides, e.g. {"drafts": {"default": 3600, "max": 86400}} (JSON in env).
    ttl_overrides: dict[str, dict[str, int]] = {}
    max_request_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    bot_timeout_seconds: float = Field(default=30.0, gt=0)
    # Async bot tasks: attempts before giving up, first retry delay (doubles, with jitter).
    bot_max_attempts: int = Field(default=5, ge=1, le=20)
    bot_retry_base_seconds: float = Field(default=10.0, gt=0)
    bot_worker_concurrency: int = Field(default=4, ge=1, le=64)
    bot_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # A push to `all`, or to more listed ids than this, is a broadcast: queued as a resumable job
    # (202 with a task id), bounded by PUSH_BROADCAST_MAX_SECONDS instead of BOT_TIMEOUT_SECONDS.
    push_sync_max: int = Field(default=1000, ge=1, le=10_000)
    push_broadcast_max_seconds: float = Field(default=3600.0, gt=0)

    db_pool_size: int = Field(default=20, ge=1)
    # Overflow connections are closed when returned, so any overflow churns connections under
    # steady load (a TCP + auth handshake each); a fixed pool queues the excess instead.
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    # Longest a statement may wait for Postgres before the request answers 503 (a frozen or
    # overloaded server must not hold requests for asyncpg's default 30 s or longer).
    db_statement_timeout_seconds: float = Field(default=5.0, gt=0, le=300)

    apns_production_url: str = "https://api.push.apple.com"
    apns_sandbox_url: str = "https://api.sandbox.push.apple.com"
    # Extra CA bundle the APNs client trusts instead of the system store (tests, TLS proxies).
    apns_ca_file: Path | None = None
    # Concurrent HTTP/2 streams per process towards APNs (Apple allows ~1000 per connection).
    apns_max_concurrency: int = Field(default=256, ge=1, le=4000)
    # ... and per tenant, so one app's broadcast cannot take every stream from the others.
    apns_tenant_max_concurrency: int = Field(default=128, ge=1, le=4000)
    # Seconds for one APNs attempt (stream opened to complete answer); then it is retried.
    apns_request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    apple_verify_receipt_url: str = "https://buy.itunes.apple.com/verifyReceipt"
    apple_verify_receipt_sandbox_url: str = "https://sandbox.itunes.apple.com/verifyReceipt"
    apple_root_certs_dir: Path | None = None
    apple_verify_receipt_timeout_seconds: float = Field(default=15.0, gt=0)

    # Entitlements (SPEC 13): the App Store Server API (production and sandbox hosts) and Stripe's
    # API. Plain http:// only towards a loopback test peer (checked below).
    appstore_api_url: str = "https://api.storekit.apple.com"
    appstore_api_sandbox_url: str = "https://api.storekit-sandbox.apple.com"
    stripe_api_url: str = "https://api.stripe.com"
    entitlement_reconcile_seconds: float = Field(default=3600.0, gt=0)
    # Seconds for one App Store Server API or Stripe API call (then retried on 429/5xx).
    store_api_timeout_seconds: float = Field(default=15.0, gt=0, le=120)

    webhook_allow_private_networks: bool = False
    # Web Push: subscription endpoints may be private addresses (tests only), the CA bundle
    # trusted for push services instead of the system store, concurrency and patience.
    webpush_allow_private_networks: bool = False
    webpush_ca_file: Path | None = None
    webpush_max_concurrency: int = Field(default=256, ge=1, le=4000)
    webpush_timeout_seconds: float = Field(default=15.0, gt=0)
    metrics_token: str | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "console"] | None = None
    run_background_jobs: bool = True
    # A debugging switch: False serves every route with FastAPI's own handler and router
    # (kit/web/fastroute.py, kit/web/dispatch.py), to tell whether a difference comes from the fast path.
    fast_routes: bool = True

    auth_cache_seconds: float = Field(default=2.0, ge=0, le=4.0)
    rate_limit_default: str = "600/minute"
    rate_limit_health: str = "10/minute"
    rate_limit_bots_execute: str = "30/minute"
    # Failed authentications (401s) per client address, per app id and overall (SPEC 2).
    auth_failure_limit_per_app: str = "20/minute"
    auth_failure_limit: str = "60/minute"

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Accept the plain URLs hosts hand out (Render's `postgres://`) and add the async driver."""
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix) :]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value[len("sqlite:///") :]
        return value

    @field_validator("appstore_api_url", "appstore_api_sandbox_url", "stripe_api_url")
    @classmethod
    def _store_api_url(cls, value: str) -> str:
        """https, or plain http towards a loopback address (a local test peer): a store's API
        carries signed credentials that must never cross a network in the clear."""
        from stateless.kit.wire.urls import require_https_or_loopback

        return require_https_or_loopback(value)

    @field_validator(
        "apns_production_url",
        "apns_sandbox_url",
        "sendgrid_api_base_url",
        "apple_verify_receipt_url",
        "apple_verify_receipt_sandbox_url",
    )
    @classmethod
    def _credential_url(cls, value: str) -> str:
        """https, or plain http towards a loopback address (a local test peer): provider
        tokens, API keys and receipts must never cross a network in the clear."""
        from stateless.kit.wire.urls import require_https_or_loopback

        return require_https_or_loopback(value)

    @field_validator("s3_endpoint_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """http(s) with a host: S3-compatible stores often listen on plain http inside a
        private network (MinIO in docker compose)."""
        from stateless.kit.wire.urls import require_url

        return require_url(value, ("https", "http"), "https://host") if value else None

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        from stateless.kit.wire.urls import require_url

        return require_url(value, ("smtp", "smtps"), "smtp://user:pass@host:587") if value else None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        from stateless.kit.wire.urls import require_url

        if not value or (value.startswith("unix://") and len(value) > len("unix://")):
            return value or None
        return require_url(value, ("redis", "rediss"), "redis://localhost:6379/0")

    @field_validator("apns_ca_file", "webpush_ca_file")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        """A readable PEM bundle of CA certificates, loaded once here so a bad one is refused
        at startup, not on the first push."""
        if value is None:
            return None
        _readable(value, directory=False)
        import ssl

        try:
            ssl.create_default_context(cafile=str(value))
        except (ssl.SSLError, ValueError):
            raise ValueError(f"{value} holds no PEM CA certificate") from None
        return value

    @field_validator("apple_root_certs_dir")
    @classmethod
    def _certs_dir(cls, value: Path | None) -> Path | None:
        if value is not None:
            _readable(value, directory=True)
        return value

    @field_validator("storage_local_path")
    @classmethod
    def _storage_dir(cls, value: Path) -> Path:
        """Created when missing; a file in its place cannot hold files."""
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @field_validator("auth_failure_limit_per_app", "auth_failure_limit")
    @classmethod
    def _limit_text(cls, value: str) -> str:
        """Refuse a malformed limit at start-up, not on the first failed authentication."""
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"invalid rate limit {value!r} (expected e.g. 20/minute)") from exc
        return value

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("redis_url", "s3_bucket_name", "sendgrid_api_key", "smtp_url", "metrics_token")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @cached_property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format:
            return self.log_format
        return "json" if self.is_production else "console"

    def unsafe_production_settings(self) -> list[str]:
        """Name every secret that is a default or too short; empty when safe."""
        offenders: list[str] = []
        for name, default in (
            ("SECRET_KEY", DEV_SECRET_KEY),
            ("AFFILIATE_SALT", DEV_AFFILIATE_SALT),
        ):
            value = getattr(self, name.lower())
            if value == default:
                offenders.append(f"{name} is the development default")
            elif len(value) < MINIMUM_SECRET_LENGTH:
                offenders.append(f"{name} is shorter than {MINIMUM_SECRET_LENGTH} characters")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if getattr(self, name.lower()) == MINIO_DEFAULT_CREDENTIAL:
                offenders.append(f"{name} is the minioadmin default")
        return offenders

    def assert_safe_for_environment(self) -> None:
        if not self.is_production:
            return
        offenders = self.unsafe_production_settings()
        if offenders:
            raise UnsafeSettingsError("refusing to start in production: " + "; ".join(offenders))
