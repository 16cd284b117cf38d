"""The README's curl walk-through, executed verbatim against real gunicorn.

The README is the user's documentation: this test proves that every command in it works as
written (``bash -euo pipefail``, so any failing step fails the test).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import LOOPBACK, PROJECT_ROOT, BrokerServer

START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"


def walkthrough_script() -> str:
    """The bash block between the README's walk-through markers, without its fences."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(START) == 1, f"README.md needs exactly one {START}"
    assert readme.count(END) == 1, f"README.md needs exactly one {END}"
    section = readme.split(START, 1)[1].split(END, 1)[0]
    match = re.fullmatch(r"\s*```bash\n(.*)\n```\s*", section, re.DOTALL)
    assert match, "the walk-through must be exactly one ```bash block"
    return match.group(1)


@pytest.mark.e2e
def test_readme_walkthrough_runs_as_written(broker: BrokerServer, tmp_path: Path) -> None:
    env = {**os.environ, "BROKER": broker.url, "ADMIN": broker.admin_key}
    env.update(NO_PROXY=LOOPBACK, no_proxy=LOOPBACK)  # curl must reach loopback directly
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walkthrough_script()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    for expected in ("complete", "round trip ok", "docs/hello.txt", "deleted"):
        assert expected in result.stdout, report
    assert (tmp_path / "copy.txt").read_bytes() == (tmp_path / "hello.txt").read_bytes()
