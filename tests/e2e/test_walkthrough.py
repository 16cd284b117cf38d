"""The README's curl walk-through, executed verbatim against real gunicorn.

The README is the user's documentation: this test proves that every command in it works as
written (``bash -euo pipefail``, so any failing step fails the test), in both storage modes:
the embedded blob store, and S3 (LocalStack with signature validation on), where step 3 PUTs
straight to S3 and step 5's ``curl -L`` follows the 302 to a presigned S3 URL with
``Authorization: Bearer`` on its command line. curl (7.83 and later) does not send that
header on to another port; AWS S3 would refuse a request carrying both it and the query
signature, while LocalStack tolerates it, so this passing relies on curl, not on LocalStack.
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


@pytest.fixture(params=["local", "s3"])
def server(request: pytest.FixtureRequest) -> BrokerServer:
    """The shared server of each storage mode (LocalStack starts only when s3 is selected)."""
    found: BrokerServer = request.getfixturevalue(
        {"local": "broker", "s3": "s3_broker"}[request.param]
    )
    return found


@pytest.mark.e2e
def test_readme_walkthrough_runs_as_written(server: BrokerServer, tmp_path: Path) -> None:
    env = {**os.environ, "BROKER": server.url, "ADMIN": server.admin_key}
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
    if server.s3 is not None:  # step 7's delete removed the object from the bucket too
        listed = server.s3.client.list_objects_v2(Bucket=server.s3.name, Prefix="acme/default/")
        left = [o["Key"] for o in listed.get("Contents", [])]
        assert not [k for k in left if k.endswith("/docs/hello.txt")], left
