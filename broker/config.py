"""Every setting of the broker: its environment variable, its default, its validation."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from limits import parse_many

from .naming import mime_type_matches

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

Clock = Callable[[], float]
"""Returns the current Unix time in seconds; injectable so tests can freeze it."""

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""Tenant and bucket names: lowercase, URL- and path-safe, at most 63 characters."""

MIME_PATTERN_RE = re.compile(r"^(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)$")
SECRET_FILE = "secret_key"  # noqa: S105  (a file name, not a secret)
MIN_SECRET_LENGTH = 32
DB_TIMEOUT = 5  # seconds a request waits for a locked database before its 503
MAX_DB_TIMEOUT = 60
MIN_ADMIN_KEY_LENGTH = 16
RATE_LIMIT = "100/second;3000/minute"
"""Requests per caller by default: bursts of 100 a second, at most 3,000 a minute (50/s
sustained), so one key hammering the API is stopped within 3,000 requests a minute."""
QUOTA_PENDING_FILES = 10_000
QUOTA_PENDING_BYTES = 100 * GiB


_ONE_LIMIT = r"[1-9][0-9]{0,8}/(?:[1-9][0-9]{0,5} ?)?(?:second|minute|hour|day)s?"
RATE_LIMIT_PATTERN = f"^{_ONE_LIMIT}(?:;{_ONE_LIMIT}){{0,3}}$"
"""A key's ``rate_limit`` as the API takes it: up to four of flask-limiter's limits
(``100/second;3000/minute``, ``10/5 minutes``), each at least 1."""


def rate_limit(value: Any) -> str:
    """A rate limit in flask-limiter's notation (``100/second;3000/minute``), each at least
    1; ValueError when it does not parse."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a string like '100/second;3000/minute'")
    try:
        items = parse_many(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit like '100/second;3000/minute'") from None
    if not items or any(item.amount < 1 for item in items):
        raise ValueError(f"{value!r} must allow at least 1 request per window")
    return value.strip()


class ConfigError(Exception):
    """The environment does not describe a runnable broker; the message lists every problem
    on one line (what start-up prints, under gunicorn as under ``broker serve``)."""


@dataclass(frozen=True)
class BucketPolicy:
    """What a bucket accepts: size cap, MIME patterns, longest URL lifetime, multipart cut-over."""

    name: str
    max_size: int = 5 * GiB
    allowed_mime_types: tuple[str, ...] = ("*/*",)
    max_url_ttl: int = 3600
    multipart_threshold: int = 100 * MiB
    part_size: int = 16 * MiB
    """Preferred part size of a multipart upload; larger when a file needs > 10,000 parts."""
    rate_limit: str | None = None
    """Declares into this bucket each caller may make (flask-limiter notation), beside the
    caller's own request limit; None: no limit of the bucket's own."""

    def allows(self, mime_type: str) -> bool:
        """Whether a declared MIME type (parameters ignored) matches one of the patterns."""
        return mime_type_matches(self.allowed_mime_types, mime_type)


class _Env:
    """Reads typed values from an environment, collecting a line for each bad one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str | None:
        """The stripped value, or ``default`` when unset or empty."""
        value = self.env.get(name, "").strip()
        return value or default

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        """An integer of at least ``minimum``."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not an integer")
            return default
        if value < minimum:
            self.problems.append(f"{name}={value} must be at least {minimum}")
        return value

    def number(self, name: str, default: float, minimum: float = 0) -> float:
        """A decimal number (seconds) of at least ``minimum``."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not a number")
            return default
        if not value >= minimum or value == float("inf"):
            self.problems.append(f"{name}={value} must be a finite number of at least {minimum}")
            return default
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        """One of ``allowed`` (case-insensitive)."""
        raw = (self.text(name, default) or default).lower()
        if raw not in allowed:
            self.problems.append(f"{name}={raw!r} must be one of {', '.join(allowed)}")
            return default
        return raw

    def boolean(self, name: str, default: bool) -> bool:
        """``1/true/yes/on`` or ``0/false/no/off``."""
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")
        return default

    def limit(self, name: str, default: int) -> int | None:
        """A positive integer, or None for ``off``."""
        raw = self.text(name)
        if raw is not None and raw.lower() == "off":
            return None
        return self.integer(name, default, minimum=1)

    def rate(self, name: str, default: str) -> str | None:
        """A rate limit in flask-limiter's notation, or None for ``off``."""
        raw = self.text(name, default) or default
        if raw.lower() == "off":
            return None
        try:
            return rate_limit(raw)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return None

    def redis_url(self) -> str | None:
        """``BROKER_REDIS_URL``, else the platforms' ``REDIS_URL`` (Heroku's add-on)."""
        url = self.text("BROKER_REDIS_URL") or self.text("REDIS_URL")
        if url is not None and not re.match(r"^(redis|rediss|unix)://", url):
            self.problems.append("BROKER_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return url

    def database_url(self, default: str) -> str:
        """``BROKER_DATABASE_URL``, else the platforms' ``DATABASE_URL`` (Heroku Postgres);
        ``postgres://`` (what most hosts hand out) and ``postgresql://`` both mean psycopg 3,
        the driver installed (SQLAlchemy's bare scheme would mean psycopg2)."""
        name = "BROKER_DATABASE_URL" if self.text("BROKER_DATABASE_URL") else "DATABASE_URL"
        url = self.text(name, default) or default
        if not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", url):
            self.problems.append(f"{name} must be a sqlite:///, postgres:// or postgresql:// URL")
        elif re.match(r"^postgres(ql)?(\+psycopg)?://", url):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    def check(self) -> None:
        """Raise ConfigError listing every problem found so far."""
        if self.problems:
            raise ConfigError("invalid configuration: " + "; ".join(self.problems))


@dataclass(frozen=True)
class ServerSettings:
    """How gunicorn serves the broker (``broker/gunicorn_conf.py`` and ``broker serve``)."""

    bind: str
    """``BROKER_BIND``; default ``0.0.0.0:$PORT`` when ``PORT`` is set (a platform routes
    to us), else loopback only, ``127.0.0.1:8000``."""
    workers: int
    """``WEB_CONCURRENCY``: worker processes (default 2)."""
    threads: int
    """``BROKER_THREADS``: request threads per worker (default 8)."""
    worker_timeout: int
    """``BROKER_WORKER_TIMEOUT``: seconds without a heartbeat before a worker is replaced."""
    forwarded_allow_ips: str
    """``FORWARDED_ALLOW_IPS``: proxies whose X-Forwarded-* headers are trusted."""
    malloc_tuning: bool
    """``BROKER_MALLOC_TUNING``: keep freed large buffers in the worker (glibc only)."""
    control_socket: bool
    """``BROKER_GUNICORN_CONTROL_SOCKET``: gunicorn's control socket (off by default)."""
    metrics_dir: str | None = None
    """``PROMETHEUS_MULTIPROC_DIR``: where workers keep their metrics so ``/metrics`` sums
    them; None: a fresh directory per server start (``gunicorn_conf.py``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        """Read and validate the server settings; ConfigError names each bad variable."""
        read = _Env(env)
        port = read.integer("PORT", 0, minimum=1) if read.text("PORT") else None
        default_bind = f"0.0.0.0:{port}" if port else "127.0.0.1:8000"
        settings = cls(
            bind=read.text("BROKER_BIND", default_bind) or default_bind,
            workers=read.integer("WEB_CONCURRENCY", 2, minimum=1),
            threads=read.integer("BROKER_THREADS", 8, minimum=1),
            worker_timeout=read.integer("BROKER_WORKER_TIMEOUT", 60, minimum=1),
            forwarded_allow_ips=read.text("FORWARDED_ALLOW_IPS", "127.0.0.1,::1") or "",
            malloc_tuning=read.boolean("BROKER_MALLOC_TUNING", True),
            control_socket=read.boolean("BROKER_GUNICORN_CONTROL_SOCKET", False),
            metrics_dir=read.text("PROMETHEUS_MULTIPROC_DIR"),
        )
        read.check()
        return settings


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one broker process."""

    storage: Literal["local", "s3"]
    data_dir: Path
    database_url: str
    secret_key: str
    admin_key: str | None
    public_url: str | None
    buckets: Mapping[str, BucketPolicy]
    s3_bucket: str | None
    s3_endpoint_url: str | None
    s3_region: str
    cors_origins: tuple[str, ...]
    allow_anonymous: bool
    upload_ttl: int
    download_ttl: int
    max_json_bytes: int
    auto_migrate: bool
    port: int
    log_level: str
    db_timeout: int
    """``BROKER_DB_TIMEOUT``: seconds a request waits for a locked database (SQLite's busy
    timeout, the group commit's turn) before answering 503 ``database.unavailable``."""
    key_cache_ttl: int
    """Seconds a process trusts a verified API key before looking it up again (so a
    revocation takes effect everywhere within this time); 0 looks every request up."""
    storage_timeout: float = 10.0
    """``BROKER_STORAGE_TIMEOUT``: seconds one S3 operation may wait for an answer, every
    attempt included (``storage/guard.py`` derives botocore's connect and read time-outs and
    attempts from it); the health probe waits at most ``min(3, this / 2)``."""
    storage_concurrency: int = 6
    """``BROKER_STORAGE_CONCURRENCY``: S3 calls in flight at once per worker process (the
    bulkhead); default ``BROKER_THREADS - 2`` (at least 1), so two threads always serve
    requests that need no storage."""
    storage_breaker_failures: int = 5
    """``BROKER_STORAGE_BREAKER_FAILURES``: consecutive S3 failures that open the circuit."""
    storage_breaker_cooldown: float = 5.0
    """``BROKER_STORAGE_BREAKER_COOLDOWN``: seconds the open circuit answers 503 at once
    before one call probes S3 again."""
    rate_limit: str | None = RATE_LIMIT
    """``BROKER_RATE_LIMIT``: requests each caller (key, token, or client address before
    authentication) may make, in flask-limiter's notation; None (``off``): unlimited."""
    redis_url: str | None = None
    """``BROKER_REDIS_URL`` (else ``REDIS_URL``): where rate-limit counters live, shared by
    every instance; None: in each process's memory."""
    quota_pending_files: int | None = QUOTA_PENDING_FILES
    """``BROKER_QUOTA_PENDING_FILES``: unexpired pending uploads a tenant may hold at once
    (None: ``off``)."""
    quota_pending_bytes: int | None = QUOTA_PENDING_BYTES
    """``BROKER_QUOTA_PENDING_BYTES``: the sum of their declared sizes (None: ``off``)."""
    s3_conditional_writes: bool = True
    """``BROKER_S3_CONDITIONAL_WRITES``: sign ``If-None-Match: *`` into upload URLs and send
    it with the broker's own writes, so S3 writes each object once; ``off`` for a service
    that ignores or refuses conditional writes (README: Storage)."""
    log_format: Literal["text", "json"] = "text"
    """``BROKER_LOG_FORMAT``: ``text``, ``json`` (one object per line), or ``auto`` (text on
    a terminal, else json), resolved here."""
    metrics: Literal["off", "public", "token"] = "token"
    """``BROKER_METRICS``: who may read ``/metrics``: nobody (404), anyone, or a caller
    presenting ``BROKER_METRICS_TOKEN`` as a bearer token (the default; without a token
    set, nobody)."""
    metrics_token: str | None = None
    """``BROKER_METRICS_TOKEN``: the bearer token ``/metrics`` asks for (≥ 16 characters)."""
    demo: bool = False
    """``BROKER_DEMO``: serve the demo page at ``/demo`` (and its token route, which hands
    any visitor a browser token minted with ``BROKER_ADMIN_KEY``: development only)."""

    @property
    def is_sqlite(self) -> bool:
        """Whether metadata lives in an SQLite file (single-host deployments)."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:  # noqa: PLR0912
        """Read and validate every setting; raise ConfigError naming each bad variable."""
        read = _Env(env)
        problems = read.problems
        text, integer, boolean = read.text, read.integer, read.boolean

        storage = text("BROKER_STORAGE", "local")
        if storage not in ("local", "s3"):
            problems.append(f"BROKER_STORAGE={storage!r} must be 'local' or 's3'")
            storage = "local"

        data_dir = Path(text("BROKER_DATA_DIR", "broker-data") or "broker-data").resolve()
        database_url = read.database_url(f"sqlite:///{data_dir / 'broker.sqlite3'}")

        secret_key = text("BROKER_SECRET_KEY")
        if secret_key is not None and len(secret_key) < MIN_SECRET_LENGTH:
            problems.append(f"BROKER_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")

        admin_key = text("BROKER_ADMIN_KEY")
        if admin_key is not None and len(admin_key) < MIN_ADMIN_KEY_LENGTH:
            problems.append(f"BROKER_ADMIN_KEY must be at least {MIN_ADMIN_KEY_LENGTH} characters")

        public_url = text("BROKER_PUBLIC_URL")
        if public_url is not None:
            if not re.match(r"^https?://[^/\s]+(/\S*)?$", public_url):
                problems.append(f"BROKER_PUBLIC_URL={public_url!r} is not an http(s) URL")
            public_url = public_url.rstrip("/")

        buckets: Mapping[str, BucketPolicy] = {"default": BucketPolicy("default")}
        buckets_path = text("BROKER_BUCKETS")
        if buckets_path is not None:
            try:
                buckets = load_buckets(Path(buckets_path))
            except ConfigError as exc:
                problems.append(f"BROKER_BUCKETS: {exc}")

        s3_bucket = text("BROKER_S3_BUCKET")
        if storage == "s3" and s3_bucket is None:
            problems.append("BROKER_S3_BUCKET is required when BROKER_STORAGE=s3")

        origins = tuple(
            o.strip().rstrip("/")
            for o in env.get("BROKER_CORS_ORIGINS", "").split(",")
            if o.strip()
        )
        for origin in origins:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                problems.append(
                    f"BROKER_CORS_ORIGINS entry {origin!r} is not an origin like https://app.example"
                )

        log_level = (text("BROKER_LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"BROKER_LOG_LEVEL={log_level!r} must be DEBUG, INFO, WARNING or ERROR")

        settings = {
            "rate_limit": read.rate("BROKER_RATE_LIMIT", RATE_LIMIT),
            "redis_url": read.redis_url(),
            "quota_pending_files": read.limit("BROKER_QUOTA_PENDING_FILES", QUOTA_PENDING_FILES),
            "quota_pending_bytes": read.limit("BROKER_QUOTA_PENDING_BYTES", QUOTA_PENDING_BYTES),
            "storage": storage,
            "data_dir": data_dir,
            "database_url": database_url,
            "admin_key": admin_key,
            "public_url": public_url,
            "buckets": buckets,
            "s3_bucket": s3_bucket,
            "s3_endpoint_url": text("BROKER_S3_ENDPOINT_URL"),
            "s3_region": text("BROKER_S3_REGION", "us-east-1") or "us-east-1",
            "cors_origins": origins,
            "allow_anonymous": boolean("BROKER_ALLOW_ANONYMOUS", False),
            "upload_ttl": integer("BROKER_UPLOAD_TTL", 900, minimum=1),
            "download_ttl": integer("BROKER_DOWNLOAD_TTL", 300, minimum=1),
            "max_json_bytes": integer("BROKER_MAX_JSON_BYTES", 1 * MiB, minimum=1024),
            "auto_migrate": boolean("BROKER_AUTO_MIGRATE", database_url.startswith("sqlite")),
            "port": integer("PORT", 8000, minimum=1),
            "log_level": log_level,
            "key_cache_ttl": integer("BROKER_KEY_CACHE_TTL", 5, minimum=0),
            "db_timeout": integer("BROKER_DB_TIMEOUT", DB_TIMEOUT, minimum=1),
            "storage_timeout": read.number("BROKER_STORAGE_TIMEOUT", 10.0, minimum=1.0),
            "storage_concurrency": integer(
                "BROKER_STORAGE_CONCURRENCY",
                max(1, integer("BROKER_THREADS", 8, minimum=1) - 2),
                minimum=1,
            ),
            "storage_breaker_failures": integer("BROKER_STORAGE_BREAKER_FAILURES", 5, minimum=1),
            "storage_breaker_cooldown": read.number(
                "BROKER_STORAGE_BREAKER_COOLDOWN", 5.0, minimum=0.1
            ),
            "s3_conditional_writes": boolean("BROKER_S3_CONDITIONAL_WRITES", True),
            **_observability(read),
        }
        settings["demo"] = boolean("BROKER_DEMO", False)
        if settings["demo"] and admin_key is None:
            problems.append("BROKER_DEMO needs BROKER_ADMIN_KEY (the demo mints tokens with it)")
        if settings["db_timeout"] > MAX_DB_TIMEOUT:
            problems.append(f"BROKER_DB_TIMEOUT must be at most {MAX_DB_TIMEOUT} seconds")
        read.check()
        if secret_key is None:
            secret_key = ensure_secret_key(data_dir)
        return cls(secret_key=secret_key, **settings)


def _observability(read: _Env) -> dict[str, Any]:
    """``BROKER_LOG_FORMAT``, ``BROKER_METRICS`` and ``BROKER_METRICS_TOKEN``."""
    log_format = read.choice("BROKER_LOG_FORMAT", "text", ("text", "json", "auto"))
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    token = read.text("BROKER_METRICS_TOKEN")
    if token is not None and len(token) < MIN_ADMIN_KEY_LENGTH:
        read.problems.append(
            f"BROKER_METRICS_TOKEN must be at least {MIN_ADMIN_KEY_LENGTH} characters"
        )
    return {
        "log_format": log_format,
        "metrics": read.choice("BROKER_METRICS", "token", ("off", "public", "token")),
        "metrics_token": token,
    }


def load_buckets(path: Path) -> dict[str, BucketPolicy]:
    """Read bucket policies from a TOML or JSON file: ``{"buckets": {"name": {...}}}``."""
    try:
        raw_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        document: Any = tomllib.loads(raw_text) if path.suffix == ".toml" else json.loads(raw_text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}"
        ) from exc
    table = document.get("buckets") if isinstance(document, dict) else None
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{path} must define at least one bucket under 'buckets'")
    policies: dict[str, BucketPolicy] = {}
    for name, spec in table.items():
        policies[name] = _bucket_policy(name, spec)
    return policies


def _bucket_policy(name: str, spec: Any) -> BucketPolicy:
    """Validate one bucket table; every mistake is named with the bucket and field."""
    where = f"bucket {name!r}"
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: names are 1-63 of a-z, 0-9, '-', '_', starting alphanumeric")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a table of settings")
    known = {
        "max_size",
        "allowed_mime_types",
        "max_url_ttl",
        "multipart_threshold",
        "part_size",
        "rate_limit",
    }
    unknown = set(spec) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    defaults = BucketPolicy(name)
    values: dict[str, Any] = {}
    for key, low in (
        ("max_size", 0),
        ("max_url_ttl", 1),
        ("multipart_threshold", 5 * MiB),
        ("part_size", 5 * MiB),
    ):
        value = spec.get(key, getattr(defaults, key))
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{where}: {key} must be an integer >= {low}")
        values[key] = value
    if values["max_size"] > 5 * TiB:
        raise ConfigError(f"{where}: max_size cannot exceed 5 TiB (the S3 object limit)")
    if values["multipart_threshold"] > 5 * GiB:
        raise ConfigError(f"{where}: multipart_threshold cannot exceed 5 GiB (S3's largest PUT)")
    if values["part_size"] > 5 * GiB:
        raise ConfigError(f"{where}: part_size cannot exceed 5 GiB (S3's largest part)")
    if values["max_url_ttl"] > 7 * 24 * 3600:
        raise ConfigError(f"{where}: max_url_ttl cannot exceed 7 days (the SigV4 limit)")
    patterns = spec.get("allowed_mime_types", list(defaults.allowed_mime_types))
    if not isinstance(patterns, list) or not patterns:
        raise ConfigError(f"{where}: allowed_mime_types must be a non-empty list")
    for pattern in patterns:
        if not isinstance(pattern, str) or not MIME_PATTERN_RE.fullmatch(pattern.lower()):
            raise ConfigError(f"{where}: {pattern!r} is not a MIME pattern like 'image/*'")
    return BucketPolicy(
        name=name,
        allowed_mime_types=tuple(p.lower() for p in patterns),
        rate_limit=_bucket_rate_limit(where, spec),
        **values,
    )


def _bucket_rate_limit(where: str, spec: dict[str, Any]) -> str | None:
    """A bucket's own limit on declares, checked (None when it has none)."""
    if "rate_limit" not in spec:
        return None
    try:
        return rate_limit(spec["rate_limit"])
    except ValueError as exc:
        raise ConfigError(f"{where}: rate_limit {exc}") from None


def ensure_secret_key(data_dir: Path) -> str:
    """Return the persisted signing secret, generating it once (race-free across workers)."""
    path = data_dir / SECRET_FILE
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    candidate = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        # link() never replaces: if another worker won the race, its secret stands.
        os.link(candidate, path)
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    return path.read_text(encoding="ascii").strip()
