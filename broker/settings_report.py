"""What ``broker config`` prints: every variable the settings read, its effective value and
whether it came from the environment or the default, with secrets masked."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from .config import ServerSettings, Settings

SECRETS = frozenset({"BROKER_SECRET_KEY", "BROKER_ADMIN_KEY", "BROKER_METRICS_TOKEN"})
_FIELD_OF = {
    "WEB_CONCURRENCY": "workers",
    "PROMETHEUS_MULTIPROC_DIR": "metrics_dir",
    "BROKER_GUNICORN_CONTROL_SOCKET": "control_socket",
}
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


class _Recording(Mapping[str, str]):
    """The environment, noting every name the settings ask for (set or not)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.asked: dict[str, None] = {}

    def __getitem__(self, name: str) -> str:
        self.asked[name] = None
        return self.env[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.asked[name] = None
        return self.env.get(name, default)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked[name] = None
        return name in self.env

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def mask(name: str, value: str) -> str:
    """A value fit to print: secrets as ``***``, passwords in URLs as ``***``."""
    if name in SECRETS and value:
        return "***"
    return _URL_PASSWORD.sub(r"\1***@", value)


def effective(env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(variable, value, source)`` for every variable read, ``source`` ``env`` or
    ``default``; ConfigError when the environment is invalid."""
    recording = _Recording(env)
    objects = (ServerSettings.from_env(recording), Settings.from_env(recording))
    rows = []
    for name in sorted(recording.asked):
        if env.get(name, "").strip():
            rows.append((name, mask(name, env[name].strip()), "env"))
            continue
        field = _FIELD_OF.get(name) or name.lower().removeprefix("broker_")
        value = next((getattr(o, field) for o in objects if hasattr(o, field)), None)
        rows.append((name, "(unset)" if value is None else mask(name, _show(value)), "default"))
    return rows


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ",".join(value)
    if isinstance(value, tuple):
        return ",".join(value) or "(none)"
    return str(value)
