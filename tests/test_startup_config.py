"""A bad setting stops start-up with one line, under bare gunicorn as under ``broker
serve`` (real processes); ``broker config`` prints the effective settings, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "s" * 40
ADMIN = "admin-key-0123456789"


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_") and k != "PORT"}
    env.pop("WEB_CONCURRENCY", None)
    env.update(BROKER_DATA_DIR=str(tmp_path / "data"), **values)
    return env


def _refusal(argv: list[str], env: dict[str, str]) -> str:
    """The one line a refused start-up prints (stderr holds nothing else, no traceback)."""
    result = subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


GUNICORN = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
SERVE = [str(BIN / "broker"), "serve"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BROKER_STORAGE", "ftp", "BROKER_STORAGE='ftp' must be 'local' or 's3'"),
        ("BROKER_THREADS", "0", "BROKER_THREADS=0 must be at least 1"),
        ("BROKER_WORKER_TIMEOUT", "soon", "BROKER_WORKER_TIMEOUT='soon' is not an integer"),
        ("PORT", "http", "PORT='http' is not an integer"),
        ("BROKER_LOG_FORMAT", "xml", "BROKER_LOG_FORMAT='xml' must be one of text, json, auto"),
    ],
)
@pytest.mark.parametrize("argv", [GUNICORN, SERVE], ids=["gunicorn", "serve"])
def test_a_bad_setting_is_one_line(
    tmp_path: Path, argv: list[str], variable: str, value: str, expected: str
) -> None:
    line = _refusal(argv, _env(tmp_path, **{variable: value}))
    assert expected in line


def test_serve_refuses_a_bad_web_concurrency_in_one_line(tmp_path: Path) -> None:
    line = _refusal(SERVE, _env(tmp_path, WEB_CONCURRENCY="abc"))
    assert "WEB_CONCURRENCY='abc' is not an integer" in line


def test_broker_config_prints_effective_settings_masked(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        BROKER_SECRET_KEY=SECRET,
        BROKER_ADMIN_KEY=ADMIN,
        BROKER_REDIS_URL="redis://user:hunter22@cache:6379/0",
        BROKER_THREADS="4",
    )
    result = subprocess.run(
        [str(BIN / "broker"), "config"], env=env, capture_output=True, text=True, check=True
    )
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert rows["BROKER_THREADS"] == ["env", "4"]
    assert rows["WEB_CONCURRENCY"] == ["default", "2"]
    assert rows["FORWARDED_ALLOW_IPS"] == ["default", "127.0.0.1,::1"]
    assert rows["BROKER_STORAGE_CONCURRENCY"] == ["default", "2"]
    assert rows["BROKER_SECRET_KEY"] == ["env", "***"]
    assert rows["BROKER_ADMIN_KEY"] == ["env", "***"]
    assert rows["BROKER_REDIS_URL"] == ["env", "redis://user:***@cache:6379/0"]
    for secret in (SECRET, ADMIN, "hunter22"):
        assert secret not in result.stdout
