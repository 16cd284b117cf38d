"""Configuration: defaults, validation with clear messages, the persisted secret."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from broker.config import BucketPolicy, ConfigError, Settings, ensure_secret_key


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"BROKER_DATA_DIR": str(tmp_path), **env})


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.storage == "local"
    assert settings.database_url == f"sqlite:///{tmp_path}/broker.sqlite3"
    assert settings.auto_migrate is True
    assert settings.allow_anonymous is False
    assert settings.admin_key is None
    assert list(settings.buckets) == ["default"]
    assert settings.upload_ttl == 900


def test_secret_is_generated_once_and_persisted_private(tmp_path: Path) -> None:
    first = _settings(tmp_path).secret_key
    second = _settings(tmp_path).secret_key
    assert first == second
    assert len(first) >= 32
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_secret_key(tmp_path)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert sorted(os.listdir(tmp_path)) == ["secret_key"]


def test_configured_secret_wins_and_nothing_is_written(tmp_path: Path) -> None:
    settings = _settings(tmp_path, BROKER_SECRET_KEY="s" * 40)
    assert settings.secret_key == "s" * 40
    assert not (tmp_path / "secret_key").exists()


def test_postgres_url_uses_psycopg3(tmp_path: Path) -> None:
    settings = _settings(tmp_path, BROKER_DATABASE_URL="postgresql://u@127.0.0.1/db")
    assert settings.database_url == "postgresql+psycopg://u@127.0.0.1/db"
    assert settings.auto_migrate is False


@pytest.mark.parametrize(
    "given",
    [
        "postgres://u:p@db.example:5432/d1",  # what Heroku Postgres hands out
        "postgresql://u:p@db.example:5432/d1",
        "postgresql+psycopg://u:p@db.example:5432/d1",
    ],
)
def test_platform_database_url_is_read_and_mapped_to_psycopg3(tmp_path: Path, given: str) -> None:
    settings = _settings(tmp_path, DATABASE_URL=given)
    assert settings.database_url == "postgresql+psycopg://u:p@db.example:5432/d1"
    assert settings.auto_migrate is False  # PostgreSQL: the release step migrates


def test_broker_database_url_wins_over_the_platforms(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, BROKER_DATABASE_URL="postgres://mine@h/a", DATABASE_URL="postgres://theirs@h/b"
    )
    assert settings.database_url == "postgresql+psycopg://mine@h/a"
    settings = _settings(tmp_path, BROKER_DATABASE_URL="", DATABASE_URL="postgres://theirs@h/b")
    assert settings.database_url == "postgresql+psycopg://theirs@h/b"


def test_bad_platform_database_url_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL must be a sqlite") as caught:
        _settings(tmp_path, DATABASE_URL="mysql://x")
    assert "BROKER_DATABASE_URL" not in str(caught.value)


def test_platform_redis_url_is_read_when_the_brokers_is_unset(tmp_path: Path) -> None:
    assert _settings(tmp_path, REDIS_URL="redis://r:6379/0").redis_url == "redis://r:6379/0"
    both = _settings(tmp_path, BROKER_REDIS_URL="redis://mine/1", REDIS_URL="redis://theirs/0")
    assert both.redis_url == "redis://mine/1"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"BROKER_STORAGE": "ftp"}, "BROKER_STORAGE='ftp' must be 'local' or 's3'"),
        ({"BROKER_UPLOAD_TTL": "soon"}, "BROKER_UPLOAD_TTL='soon' is not an integer"),
        ({"BROKER_UPLOAD_TTL": "0"}, "BROKER_UPLOAD_TTL=0 must be at least 1"),
        ({"BROKER_SECRET_KEY": "short"}, "BROKER_SECRET_KEY must be at least 32"),
        ({"BROKER_ADMIN_KEY": "short"}, "BROKER_ADMIN_KEY must be at least 16"),
        ({"BROKER_ALLOW_ANONYMOUS": "maybe"}, "BROKER_ALLOW_ANONYMOUS='maybe' is not a boolean"),
        ({"BROKER_DATABASE_URL": "mysql://x"}, "BROKER_DATABASE_URL must be"),
        ({"BROKER_PUBLIC_URL": "ftp://x"}, "BROKER_PUBLIC_URL='ftp://x' is not an http(s) URL"),
        ({"BROKER_CORS_ORIGINS": "app.example"}, "is not an origin"),
        ({"BROKER_STORAGE": "s3"}, "BROKER_S3_BUCKET is required"),
        ({"BROKER_BUCKETS": "/no/such/file.toml"}, "cannot read /no/such/file.toml"),
        ({"BROKER_LOG_LEVEL": "loud"}, "BROKER_LOG_LEVEL='LOUD'"),
        ({"BROKER_DEMO": "1"}, "BROKER_DEMO needs BROKER_ADMIN_KEY"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, **env)
    assert fragment in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, BROKER_STORAGE="ftp", PORT="http")
    assert "BROKER_STORAGE" in str(caught.value)
    assert "PORT" in str(caught.value)


def test_buckets_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "buckets.toml"
    path.write_text(
        '[buckets.avatars]\nmax_size = 2048\nallowed_mime_types = ["image/*"]\nmax_url_ttl = 60\n'
    )
    bucket = _settings(tmp_path, BROKER_BUCKETS=str(path)).buckets["avatars"]
    assert bucket == BucketPolicy(
        "avatars", max_size=2048, allowed_mime_types=("image/*",), max_url_ttl=60
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"Bad Name": {}}, "names are 1-63"),
        ({"b": {"max_size": -1}}, "max_size must be an integer >= 0"),
        ({"b": {"max_size": "1GB"}}, "max_size must be an integer"),
        ({"b": {"max_url_ttl": 8 * 24 * 3600}}, "7 days"),
        ({"b": {"allowed_mime_types": ["images"]}}, "is not a MIME pattern"),
        ({"b": {"multipart_threshold": 1}}, "multipart_threshold must be an integer >= 5242880"),
        ({"b": {"part_size": 5 * 1024**2 - 1}}, "part_size must be an integer >= 5242880"),
        ({"b": {"part_size": 6 * 1024**3}}, "part_size cannot exceed 5 GiB"),
        ({"b": {"multipart_threshold": 6 * 1024**3}}, "multipart_threshold cannot exceed 5 GiB"),
        ({"b": {"colour": "red"}}, "unknown setting(s) colour"),
        ({}, "at least one bucket"),
    ],
)
def test_bad_bucket_files_are_explained(
    tmp_path: Path, spec: dict[str, Any], fragment: str
) -> None:
    path = tmp_path / "buckets.json"
    path.write_text(json.dumps({"buckets": spec}))
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, BROKER_BUCKETS=str(path))
    assert fragment in str(caught.value)


def test_malformed_bucket_file(tmp_path: Path) -> None:
    path = tmp_path / "buckets.toml"
    path.write_text("[buckets.a\n")
    with pytest.raises(ConfigError, match="is not valid toml"):
        _settings(tmp_path, BROKER_BUCKETS=str(path))


@pytest.mark.parametrize(
    ("patterns", "mime", "allowed"),
    [
        (("*/*",), "application/pdf", True),
        (("image/*",), "image/png", True),
        (("image/*",), "IMAGE/PNG", True),
        (("image/*",), "text/plain", False),
        (("application/pdf",), "application/pdf; charset=binary", True),
        (("application/pdf",), "application/pdfx", False),
        (("*/json",), "application/json", True),
    ],
)
def test_mime_patterns(patterns: tuple[str, ...], mime: str, allowed: bool) -> None:
    assert BucketPolicy("b", allowed_mime_types=patterns).allows(mime) is allowed


def test_server_settings_default_to_loopback_and_follow_port() -> None:
    from broker.config import ServerSettings

    local = ServerSettings.from_env({})
    assert (local.bind, local.workers, local.threads) == ("127.0.0.1:8000", 2, 8)
    assert not local.control_socket
    platform = ServerSettings.from_env({"PORT": "5000", "WEB_CONCURRENCY": "4"})
    assert (platform.bind, platform.workers) == ("0.0.0.0:5000", 4)
    assert ServerSettings.from_env({"PORT": "5000", "BROKER_BIND": "[::1]:9"}).bind == "[::1]:9"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEB_CONCURRENCY", "abc"),
        ("WEB_CONCURRENCY", "0"),
        ("BROKER_THREADS", "-1"),
        ("BROKER_WORKER_TIMEOUT", "soon"),
        ("BROKER_MALLOC_TUNING", "maybe"),
        ("PORT", "http"),
    ],
)
def test_a_bad_server_setting_is_named_with_its_value(name: str, value: str) -> None:
    from broker.config import ConfigError, ServerSettings

    with pytest.raises(ConfigError) as refused:
        ServerSettings.from_env({name: value})
    assert f"{name}=" in str(refused.value)
    assert value in str(refused.value)


def test_db_timeout_is_bounded(tmp_path: Path) -> None:
    assert _settings(tmp_path).db_timeout == 5
    assert _settings(tmp_path, BROKER_DB_TIMEOUT="2").db_timeout == 2
    for bad in ("0", "61", "soon"):
        with pytest.raises(ConfigError, match="BROKER_DB_TIMEOUT"):
            _settings(tmp_path, BROKER_DB_TIMEOUT=bad)


def test_s3_conditional_writes_are_on_unless_turned_off(tmp_path: Path) -> None:
    from broker.storage import S3Storage, build_storage

    s3 = {"BROKER_STORAGE": "s3", "BROKER_S3_BUCKET": "b"}
    for value, expected in ((None, True), ("off", False), ("on", True)):
        env = s3 if value is None else {**s3, "BROKER_S3_CONDITIONAL_WRITES": value}
        settings = _settings(tmp_path, **env)
        assert settings.s3_conditional_writes is expected
        storage = build_storage(settings, clock=lambda: 0.0, blob_url=str)
        assert isinstance(storage, S3Storage)
        assert storage.conditional_writes is expected
    with pytest.raises(ConfigError, match="BROKER_S3_CONDITIONAL_WRITES"):
        _settings(tmp_path, **s3, BROKER_S3_CONDITIONAL_WRITES="maybe")
