"""Schemathesis against a real gunicorn on loopback, driven by /openapi.json.

Every phase (examples, coverage, fuzzing, stateful through the document's links) with every
check: no 5xx, no schema-valid request refused, no schema-violating request accepted, every
status and body as documented. Bounded by examples per operation and a time budget:
~80 s, ~4-5k generated cases, in the default suite. The settings (``schemathesis.toml``)
and hooks (``schemathesis_hooks.py``) say what they adapt to rules no schema can state.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import BrokerServer, Tenant

_HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = 25
TIME_BUDGET = 80


def test_the_api_holds_to_its_openapi_document(
    broker: BrokerServer, tenant: Tenant, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
    env["SCHEMATHESIS_HOOKS"] = "schemathesis_hooks"
    env["PYTHONPATH"] = os.pathsep.join([str(_HERE), env.get("PYTHONPATH", "")])
    command = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file",
        str(_HERE / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{broker.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {tenant.key}",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(TIME_BUDGET),
        "--workers",
        "2",
        "--seed",
        "20261130",
        "--request-timeout",
        "10",
        "--output-truncate",
        "false",
    ]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIME_BUDGET + 60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-2000:]
    assert int(generated.group(1)) >= 500, output[-2000:]
    print(output[output.rfind("Test cases:") :])  # shown with -s: what was run, how long
