"""Platform settings, read once at start from ``PANTHERA_*`` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_INTERNAL_TOKEN = "panthera-development-internal-token"  # noqa: S105
# Image uploads (``POST .../products/{id}/images``) end with this; they may carry
# ``max_image_bytes`` plus this much multipart framing and form fields.
IMAGE_UPLOAD_PATH_SUFFIX = "/images"
MULTIPART_ALLOWANCE_BYTES = 64 * 1024


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class EventTransportKind(StrEnum):
    EMBEDDED = "embedded"
    RABBITMQ = "rabbitmq"


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"
    TLS = "tls"
    NONE = "none"


class PaymentProviderKind(StrEnum):
    TEST = "test"
    STRIPE = "stripe"


class Settings(BaseSettings):
    """Everything an operator can set. Each field maps to ``PANTHERA_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="PANTHERA_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".panthera")
    log_level: str = "INFO"
    log_json: bool = True

    # Persistence. ``database_url`` is a template: ``{service}`` is replaced by the
    # service name, so one setting gives every service its own database. Empty
    # means one SQLite file per service under ``data_dir``.
    database_url: str = ""
    # Connections each service process keeps to PostgreSQL for SQLAlchemy, and how
    # many more it may open at a peak; the kernel's driver path (kernel/pgdirect.py)
    # lends up to the pool size again. Processes x services x (2 x pool + overflow)
    # must stay under the server's max_connections.
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=0, ge=0)
    # Shared servers of the distributed shape; empty means the in-process adapter.
    redis_url: str = ""
    amqp_url: str = ""
    event_transport: EventTransportKind = EventTransportKind.EMBEDDED
    # Prefix of every RabbitMQ name the platform uses: the ``<namespace>.events`` and
    # ``<namespace>.dlx`` exchanges and each consumer's ``<namespace>.<service>`` queues.
    # Deployments (or test runs) sharing one broker vhost stay apart with different ones.
    amqp_namespace: str = Field(default="panthera", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    # Where each service listens, for the gateway and service-to-service calls in
    # the distributed shape: ``PANTHERA_SERVICE_URLS='{"users": "http://127.0.0.1:8102"}'``,
    # or a list of its replicas' addresses, which callers take turns over.
    service_urls: dict[str, str | list[str]] = Field(default_factory=dict)
    internal_token: SecretStr = SecretStr(DEVELOPMENT_INTERNAL_TOKEN)
    http_timeout_seconds: float = 5.0
    http_retries: int = 2
    # How long a replica that refused a connection is passed over before it is tried again.
    replica_retry_after_seconds: float = Field(default=5.0, ge=0)
    # Circuit breakers per replica address: this many failures in a row (no
    # connection, timeout, 5xx) open one, and calls to that address then fail at
    # once for ``circuit_open_seconds`` before one trial call is let through.
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_open_seconds: float = Field(default=10.0, gt=0)

    # Tokens.
    jwt_issuer: str = "panthera"
    jwt_audience: str = "panthera-api"
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    signing_key_rotation_days: int = 30
    jwks_cache_seconds: int = 300

    # OAuth 2.0 clients that may use the authorization code flow, as
    # ``{"client_id": ["https://exact/redirect"]}``.
    oauth_clients: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "panthera-web": [
                "http://127.0.0.1:8000/auth/callback",
                "http://localhost:8000/auth/callback",
            ]
        }
    )
    authorization_code_ttl_seconds: int = 60

    # Abuse limits. Rates are requests per minute; burst is the bucket size.
    rate_limit_per_ip_per_minute: int = 600
    rate_limit_per_ip_burst: int = 120
    rate_limit_per_user_per_minute: int = 1200
    rate_limit_per_user_burst: int = 240
    # Units of a budget a gateway replica takes from Redis at once (at most an eighth
    # of the burst) while the budget is far from spent; 1 asks Redis on every request.
    rate_limit_lease: int = Field(default=16, ge=1)
    login_attempts_per_account: int = 10
    login_attempts_per_address: int = 30
    login_window_seconds: int = 900
    max_request_body_bytes: int = 1_048_576

    # Passwords: argon2id cost. OWASP's floor is 19 MiB, 2 iterations, 1 lane.
    password_memory_kib: int = 19_456
    password_time_cost: int = 2
    password_parallelism: int = 1

    # The seed's contract answers 409 for a taken address; that tells strangers who
    # has an account, so by default a taken address gets the ordinary 201 and its
    # owner a mail instead (see docs/decisions).
    registration_reveals_existing_email: bool = False
    migrate_on_start: bool = True
    verification_token_ttl_seconds: int = 48 * 3600
    reset_token_ttl_seconds: int = 3600
    public_base_url: str = "http://127.0.0.1:8000"
    # The shop's pricing currency (ISO 4217) where a product names none.
    currency: str = "USD"
    reservation_ttl_seconds: int = 900
    # The orders saga: how often its worker looks for due steps, how long a worker
    # holds an order before another may take over, how many times a forward step
    # (reserve, pay, commit) is tried before the order is compensated and cancelled,
    # and how long a payment may stay without an outcome.
    saga_poll_seconds: float = Field(default=1.0, gt=0)
    saga_lease_seconds: float = Field(default=15.0, gt=0)
    saga_step_attempts: int = Field(default=6, ge=1)
    saga_payment_timeout_seconds: float = Field(default=60.0, gt=0)
    # Where product images are served from: the gateway path, or a CDN in front of it.
    media_url_prefix: str = "/media"
    # Object storage of product images. An empty bucket keeps them as files under
    # ``data_dir/media``; a bucket name uses any S3-compatible store (AWS S3, MinIO,
    # Ceph, R2...), at ``s3_endpoint_url`` when set, else AWS's endpoint of the region.
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    # Empty keys use boto3's own credential chain (environment, instance role...).
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # Largest image upload accepted (10 MiB). Its route alone takes bodies this large
    # plus room for the multipart framing; every other body keeps max_request_body_bytes.
    max_image_bytes: int = 10 * 1024 * 1024
    mail_sender: str = "Panthera <no-reply@panthera.local>"
    # A shop's own message templates, searched before the built-in ones.
    templates_dir: Path | None = None
    # Email goes to this SMTP relay; empty writes each message as a .eml file
    # under ``data_dir/outbox`` instead (the embedded shape's developer mailbox).
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    # ``starttls`` upgrades a plain connection (port 587), ``tls`` connects over
    # TLS (port 465), ``none`` only for a relay on a trusted network.
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    # SMS through a Twilio-compatible Messages API; an empty URL writes each text
    # as a file under ``data_dir/outbox`` instead.
    sms_api_url: str = ""
    sms_account_sid: str = ""
    sms_auth_token: SecretStr = SecretStr("")
    sms_sender: str = ""
    # Push through an FCM HTTP v1-style endpoint (``.../messages:send``), with a
    # bearer token; empty writes each push as a file under ``data_dir/outbox``.
    push_api_url: str = ""
    push_api_token: SecretStr = SecretStr("")
    # A message whose provider keeps failing is retried with exponential backoff
    # and jitter, then marked failed for staff to resend.
    notification_max_attempts: int = Field(default=8, ge=1)
    notification_retry_base_seconds: float = Field(default=5.0, gt=0)
    notification_retry_max_seconds: float = Field(default=3600.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    # The built web app (Vite's output), relative to the working directory unless
    # absolute. Without an index.html there the gateway serves the API alone.
    web_dir: Path = Path("web/dist")
    # The gateway's cache of anonymous catalog reads (GET answered 200), emptied by
    # the catalog's events; the TTL only bounds how long an entry outlives a lost
    # event. In Redis when ``redis_url`` is set (shared by gateway replicas, and
    # required with the rabbitmq transport), else in memory up to
    # ``response_cache_max_bytes``.
    response_cache_enabled: bool = True
    response_cache_ttl_seconds: int = Field(default=300, ge=1)
    response_cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    relay_poll_seconds: float = 1.0
    # Events a commit wrote are published from memory right after it; their rows fall
    # due for the poll only this much later (0: every event waits for the relay's read).
    relay_hand_off_seconds: float = Field(default=5.0, ge=0)
    # How long a consumer remembers an event it applied (its inbox record), so that a
    # redelivered copy is a no-op; older records are purged every hour.
    inbox_retention_hours: float = Field(default=168.0, gt=0)
    # OpenTelemetry: where spans go (an OTLP/HTTP collector, e.g. http://collector:4318);
    # empty records none. New traces are kept with this probability; traces that
    # arrive sampled stay sampled.
    otlp_endpoint: str = ""
    otlp_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Payments. ``test`` is the built-in provider: it takes Stripe's test tokens
    # (tok_visa...) and answers through webhooks it signs itself; anyone could pay
    # with those, so the payments service refuses it in production.
    payment_provider: PaymentProviderKind = PaymentProviderKind.TEST
    # Stripe's secret API key (sk_live_... or sk_test_...); required with stripe.
    stripe_api_key: SecretStr = SecretStr("")
    # Where the Stripe API answers; a stripe-mock or an egress proxy may stand in.
    stripe_api_base: str = "https://api.stripe.com"
    # Signing secret (whsec_...) of the Stripe webhook endpoint; required with stripe.
    stripe_webhook_secret: SecretStr = SecretStr("")
    # Signed webhooks older (or further ahead) than this are refused as replays.
    payment_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    # Signing secret of the test provider's webhooks.
    test_provider_webhook_secret: SecretStr = SecretStr("whsec_panthera_test_provider")
    # A payment or refund that has waited this long for the provider's word (its
    # webhook lost, its answer lost) is asked about, and again after as long each
    # time; the reconciler looks every ``payment_reconcile_poll_seconds``.
    payment_reconcile_after_seconds: float = Field(default=10.0, gt=0)
    payment_reconcile_poll_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            if self.internal_token.get_secret_value() == DEVELOPMENT_INTERNAL_TOKEN:
                raise ValueError("PANTHERA_INTERNAL_TOKEN must be set in production")
            if not self.database_url:
                raise ValueError("PANTHERA_DATABASE_URL must be set in production")
        return self

    def body_limit_overrides(self) -> tuple[tuple[str, int], ...]:
        """Larger body limits by path suffix, the same in the gateway and the services."""
        return ((IMAGE_UPLOAD_PATH_SUFFIX, self.max_image_bytes + MULTIPART_ALLOWANCE_BYTES),)

    def replica_urls(self) -> dict[str, list[str]]:
        """Every configured service's replica addresses (one or more each)."""
        return {
            name: [urls] if isinstance(urls, str) else list(urls)
            for name, urls in self.service_urls.items()
            if urls
        }

    def database_url_for(self, service: str) -> str:
        """The SQLAlchemy URL of one service's own database."""
        if self.database_url:
            return self.database_url.replace("{service}", service)
        path = (self.data_dir / f"{service}.sqlite3").resolve()
        return f"sqlite+aiosqlite:///{path}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, parsed once."""
    return Settings()
