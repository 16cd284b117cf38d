"""requirements.txt (what a platform's Python build installs) pins every runtime dependency
of pyproject.toml, the PostgreSQL extra included, at a version pyproject allows; so the two
cannot drift. Regenerate it with ``scripts/requirements.sh``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> tuple[dict[str, tuple[str, set[str]]], list[str]]:
    """Name -> (pinned version, extras), and the lines that are not ``name==version``."""
    pins: dict[str, tuple[str, set[str]]] = {}
    others: list[str] = []
    for raw in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            others.append(line)
            continue
        requirement = Requirement(line)
        (version,) = (spec.version for spec in requirement.specifier)
        pins[canonicalize_name(requirement.name)] = (version, set(requirement.extras))
    return pins, others


def _runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["postgres"]]
    return [Requirement(line) for line in declared]


def test_every_runtime_dependency_is_pinned_at_an_allowed_version() -> None:
    pins, _ = _pins()
    for requirement in _runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements.txt does not pin {name}: run scripts/requirements.sh"
        version, extras = pins[name]
        assert requirement.specifier.contains(version), (
            f"requirements.txt pins {name}=={version}, pyproject wants {requirement.specifier}"
        )
        assert requirement.extras <= extras, f"{name} needs the extras {requirement.extras}"


def test_the_postgres_driver_and_the_broker_itself_are_installed() -> None:
    pins, others = _pins()
    assert "binary" in pins["psycopg"][1]  # psycopg[binary]: no libpq build on the platform
    assert others == ["."], "every line but the broker itself (.) is a name==version pin"


def test_python_version_file_names_the_supported_minor() -> None:
    text = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"3\.\d+", text), text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == f">={text}"
