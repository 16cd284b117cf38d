"""The Dockerfile's essentials, checked statically: this machine has no Docker engine, so the
image is never built here (README: Deploying). What is checked: a slim Python base of the
version in .python-version, dependencies from requirements.txt, a non-root user for the
server, PORT-driven gunicorn with the Procfile's command, a health check on /v1/health, and a
build context (.dockerignore) that holds every file the Dockerfile copies and no local state.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _all(kind: str) -> list[str]:
    return [rest for word, rest in _instructions() if word == kind]


def test_slim_base_of_the_projects_python() -> None:
    (base,) = _all("FROM")
    version = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert re.fullmatch(rf"python:{re.escape(version)}(\.\d+)?-slim(-\w+)?", base), base


def test_dependencies_come_from_requirements_txt() -> None:
    runs = " ".join(_all("RUN"))
    assert any("requirements.txt" in copy for copy in _all("COPY"))
    assert "-r /tmp/dependencies.txt" in runs
    assert "requirements.txt" in runs
    assert "--no-deps" in runs  # nothing resolved beyond the pins


def test_the_server_runs_as_a_non_root_user() -> None:
    words = [word for word, _ in _instructions()]
    users = _all("USER")
    assert users, "no USER: the server would run as root"
    assert users[-1] not in ("root", "0", "0:0")
    last_user = max(i for i, word in enumerate(words) if word == "USER")
    assert "RUN" not in words[last_user:], "nothing runs as root after the switch"
    assert re.search(rf"useradd .*--system .*\b{re.escape(users[-1])}\b", " ".join(_all("RUN")))


def test_port_driven_gunicorn_with_a_health_check() -> None:
    env = " ".join(_all("ENV"))
    assert re.search(r"\bPORT=8000\b", env)
    assert _all("EXPOSE") == ["8000"]
    (cmd,) = _all("CMD")
    assert cmd == '["gunicorn", "wsgi:app"]'  # gunicorn.conf.py binds 0.0.0.0:$PORT
    (check,) = _all("HEALTHCHECK")
    assert "/v1/health" in check
    assert "os.environ.get('PORT'" in check


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, pattern.lstrip("*/"))
        or path.split("/", 1)[0] == pattern
        or fnmatch.fnmatch(path.split("/", 1)[0], pattern)
        for pattern in patterns
    )


def test_build_context_holds_what_is_copied_and_no_local_state() -> None:
    ignore = ROOT / ".dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for local in (".git", ".venv", ".cache", "broker-data", ".env"):
        assert local in patterns, f".dockerignore must keep {local} out of the image"
    for copy in _all("COPY"):
        *sources, _ = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _ignored(source, patterns), f"{source} is copied but .dockerignore drops it"
