"""The browser client's package (``clients/js``): the modules parse, and the TypeScript
declarations accept what an app writes (``tsc --strict`` from the npm registry, installed
by the test into ``.cache``, never committed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
TYPESCRIPT = ROOT / ".cache" / "typescript-5.9.3"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")


@pytest.mark.parametrize("module", ["broker.js", "broker-uppy.js"])
def test_the_modules_parse(module: str) -> None:
    subprocess.run(["node", "--check", str(PACKAGE / module)], check=True, timeout=60)


def test_the_package_names_its_files() -> None:
    package = json.loads((PACKAGE / "package.json").read_text())
    assert package["type"] == "module"
    assert all((PACKAGE / name).exists() for name in package["files"])
    for target in package["exports"].values():
        assert (PACKAGE / target["default"]).exists()
        assert (PACKAGE / target["types"]).exists()


def test_the_declarations_accept_an_app_s_code() -> None:
    tsc = TYPESCRIPT / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        TYPESCRIPT.mkdir(parents=True, exist_ok=True)
        install = ["npm", "install", "--no-audit", "--no-fund", "--silent", "typescript@5.9.3"]
        subprocess.run(install, cwd=TYPESCRIPT, check=True, timeout=600)
    command = [str(tsc), "--noEmit", "--strict", "--target", "es2022", "--module", "es2022",
               "--moduleResolution", "bundler", "--lib", "es2022,dom",
               str(Path(__file__).with_name("usage.ts"))]  # fmt: skip
    checked = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
