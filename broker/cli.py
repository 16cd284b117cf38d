"""The ``broker`` command: serve, config, db upgrade, keys create|list|revoke, sweep, s3 setup."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from .config import ConfigError, ServerSettings, Settings
from .models import Scope

if TYPE_CHECKING:
    from .storage import S3Storage

_DURATION = re.compile(r"^\s*(\d+)\s*([smh]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """Whole seconds from ``90``, ``90s``, ``15m`` or ``1h`` (a click option callback)."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration like 90s, 15m or 1h")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _admin() -> Any:
    from .models import Principal

    return Principal(tenant="default", scopes=frozenset({Scope.ADMIN.value}), key_id="cli")


def _echo(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group()
@click.version_option(package_name="broker")
def main() -> None:
    """broker: signed upload and download URLs for files in a blob store or S3."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=int, default=None, help="Port (default: $PORT or 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (default 2).")
def serve(host: str, port: int | None, workers: int | None) -> None:
    """Run the broker under gunicorn (gthread workers) with the bundled configuration."""
    settings = _settings()
    try:  # the same check gunicorn's configuration makes, but before exec: one clean line
        ServerSettings.from_env(os.environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    gunicorn = shutil.which("gunicorn") or os.path.join(os.path.dirname(sys.executable), "gunicorn")
    argv = [
        gunicorn,
        "--config",
        "python:broker.gunicorn_conf",
        "--bind",
        f"{host}:{port or settings.port}",
    ]
    if workers:
        argv += ["--workers", str(workers)]
    argv.append("broker.wsgi:app")
    click.echo(
        f"broker: serving on http://{host}:{port or settings.port} "
        f"(storage={settings.storage}, data={settings.data_dir})",
        err=True,
    )
    os.execv(argv[0], argv)  # noqa: S606  (replace this process: signals reach gunicorn)


@main.command("config")
def config_command() -> None:
    """Print the effective settings: each variable, its value (secrets masked) and where
    it came from (env or default); a bad value is refused as at start-up."""
    from .settings_report import effective

    try:
        rows = effective(os.environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        click.echo(f"{name:<{width}}  {source:<7}  {value}")


@main.group()
def db() -> None:
    """Metadata database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (the Procfile release step runs this)."""
    from .db import Database

    settings = _settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url, busy_timeout=settings.db_timeout)
    database.upgrade()
    click.echo("database schema is up to date", err=True)


@main.group()
def keys() -> None:
    """API keys (the CLI acts with admin rights on the configured database)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to.")
@click.option("--name", default=None, help="A label for the key.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice([s.value for s in Scope]),
    help="Repeat for several; default files:read, files:write and files:delete.",
)
@click.option(
    "--expires-at", type=int, default=None, help="Unix time the key stops working (default: never)."
)
@click.option(
    "--rate-limit",
    default=None,
    help="The key's own request limit, e.g. 1000/minute (default: BROKER_RATE_LIMIT).",
)
def keys_create(
    tenant: str,
    name: str | None,
    scopes: tuple[str, ...],
    expires_at: int | None,
    rate_limit: str | None,
) -> None:
    """Mint a key; it is printed once and stored hashed."""
    from marshmallow import ValidationError

    from .schemas import KeyCreatedSchema, KeyCreateSchema

    data: dict[str, Any] = {
        "tenant": tenant,
        "name": name,
        "scopes": list(scopes) or None,
        "expires_at": expires_at,
        "rate_limit": rate_limit,
    }
    data = {k: v for k, v in data.items() if v is not None}
    try:
        body = KeyCreateSchema().load(data)
    except ValidationError as exc:
        raise click.ClickException(f"invalid key request: {exc.messages}") from exc
    from .errors import BrokerError

    with _services() as service:
        try:
            created = service.keys.create(
                _admin(), body["tenant"], body.get("name"), body.get("scopes"),
                expires_at=body.get("expires_at"), rate_limit=body.get("rate_limit"),
            )  # fmt: skip
        except BrokerError as exc:
            raise click.ClickException(
                f"invalid key request: {exc.details or exc.message}"
            ) from exc
        _echo(KeyCreatedSchema().dump(created))


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def keys_list(tenant: str | None) -> None:
    """List keys (never their secrets)."""
    from .schemas import KeySchema

    with _services() as service:
        _echo(KeySchema(many=True).dump(service.keys.all(_admin(), tenant)))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id."""
    from .errors import BrokerError
    from .schemas import KeySchema

    with _services() as service:
        try:
            _echo(KeySchema().dump(service.keys.revoke(_admin(), key_id)))
        except BrokerError as exc:
            raise click.ClickException(exc.message) from exc


@main.command()
@click.option(
    "--grace",
    callback=_duration,
    metavar="DURATION",
    default="15m",
    show_default=True,
    help="How long past its URLs' expiry a pending file is left alone (a PUT started just "
    "before expiry may still be streaming, and its client still has to call complete), and "
    "how old an orphan must be before it is removed.",
)
@click.option(
    "--every",
    callback=_duration,
    metavar="DURATION",
    default=None,
    help="Sweep again every interval, forever (a Procfile worker); default: once.",
)
@click.option(
    "--objects-every",
    callback=_duration,
    metavar="DURATION",
    default="1h",
    show_default=True,
    help="With --every: list every stored object to find orphans at most this often "
    "(listing a large bucket is slow and billed per 1,000 keys).",
)
def sweep(grace: int, every: int | None, objects_every: int) -> None:
    """Expire pending files whose URLs ran out (plus --grace), abort their multipart
    uploads, delete orphan objects and stale temporary files. Safe to run on several
    machines at once. Prints what each pass did as JSON; once, exits 1 if a pass hit an
    unavailable database or storage."""
    from .sweep import Sweeper

    if every is not None and every < 1:
        raise click.BadParameter("must be at least 1s", param_hint="--every")
    with _services() as service:
        ctx = service.ctx
        sweeper = Sweeper(ctx.settings, ctx.store, ctx.storage, ctx.clock)
        if every is None:
            report = sweeper.run(grace)
            _echo(report.as_dict())
            if report.errors:
                raise SystemExit(1)
            return
        # A plain flag, not threading.Event: the handler runs in this thread, and Event.set()
        # would deadlock if the signal landed while Event.wait held the Event's lock.
        stopping: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, _frame: stopping.append(signum))
        last_scan = float("-inf")
        while not stopping:  # finish the pass, then leave
            started = time.monotonic()
            report = sweeper.run(grace, objects=started - last_scan >= objects_every)
            if report.objects_scanned:
                last_scan = started
            click.echo(json.dumps(report.as_dict()))
            while not stopping and (left := every - (time.monotonic() - started)) > 0:
                time.sleep(min(left, 0.2))


@main.group()
def s3() -> None:
    """S3 storage (BROKER_STORAGE=s3)."""


@s3.command("setup")
@click.option("--create-bucket", is_flag=True, help="Create BROKER_S3_BUCKET if it is missing.")
@click.option(
    "--abort-multipart-days",
    type=click.IntRange(1, 365),
    default=1,
    show_default=True,
    help="Lifecycle: abort incomplete multipart uploads after this many days.",
)
def s3_setup(create_bucket: bool, abort_multipart_days: int) -> None:
    """Prepare the bucket: CORS for BROKER_CORS_ORIGINS (PUT/GET with the headers the broker
    signs, ETag exposed) and a lifecycle rule that aborts incomplete multipart uploads."""
    from .errors import BrokerError
    from .storage.s3_setup import setup

    settings = _settings()
    try:
        done = setup(
            _s3_storage(settings),
            create=create_bucket,
            cors_origins=settings.cors_origins,
            abort_multipart_days=abort_multipart_days,
        )
    except BrokerError as exc:
        raise click.ClickException(exc.message) from exc
    for line in done:
        click.echo(line)
    if not settings.cors_origins:
        click.echo("CORS: none applied (BROKER_CORS_ORIGINS is empty; browsers cannot PUT)")


@s3.command("check")
def s3_check() -> None:
    """Check that the bucket's CORS rule lets each BROKER_CORS_ORIGINS origin PUT (with the
    headers the broker signs) and GET, and exposes ETag; print what is missing, exit 1."""
    from .errors import BrokerError
    from .storage.s3_cors import CorsCheck

    settings = _settings()
    if not settings.cors_origins:
        click.echo("CORS: nothing to check (BROKER_CORS_ORIGINS is empty)")
        return
    check = CorsCheck(_s3_storage(settings), settings.cors_origins, clock=time.time)
    try:
        problems = check.problems()
    except BrokerError as exc:
        raise click.ClickException(exc.message) from exc
    for problem in problems:
        click.echo(f"CORS missing: {problem}")
    if problems:
        click.echo("run `broker s3 setup` to write a rule that admits them", err=True)
        raise SystemExit(1)
    click.echo(f"CORS: ok for {', '.join(settings.cors_origins)}")


def _s3_storage(settings: Settings) -> S3Storage:
    """The configured S3 bucket, for operator commands (a usage error without one)."""
    from .storage import S3Storage

    if settings.storage != "s3" or not settings.s3_bucket:
        raise click.ClickException("set BROKER_STORAGE=s3 and BROKER_S3_BUCKET first")
    return S3Storage(
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        clock=time.time,
        timeout=settings.storage_timeout,
    )


@contextlib.contextmanager
def _services() -> Iterator[Any]:
    """The use cases on the configured database and storage, without the HTTP app."""
    from . import services
    from .db import Database

    settings = _settings()
    database = Database(settings.database_url, busy_timeout=settings.db_timeout)
    try:
        if settings.auto_migrate:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            database.upgrade()
        yield services.build(
            settings,
            database,
            clock=time.time,
            base_url=lambda: settings.public_url or f"http://127.0.0.1:{settings.port}",
        )
    finally:
        database.dispose()
