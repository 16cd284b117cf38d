"""``POST /v1/files`` in-process: the broker's own cost per create, without gunicorn or wrk.

Run from the project root::

    .venv/bin/python bench/inproc.py [--storage local|s3] [--creates 2000]
    .venv/bin/python bench/inproc.py --profile               # cProfile, by cumulative time
    .venv/bin/python bench/inproc.py --callgrind             # instructions per create

The app is built as ``wsgi:app`` would build it (a fresh data directory, a tenant key minted
with the admin key) and called as a WSGI application, one create after another, with the
benchmark's request. ``--callgrind`` reruns this script under ``valgrind --tool=callgrind``
with instrumentation switched on only around the measured creates, and prints instructions
per create: on a busy machine that count is repeatable to a percent or so where timings move
by tens of percent, so it is the way to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.create import DECLARATION, LIMITS_ENV, S3_ENV  # noqa: E402

ADMIN_KEY = "bench-admin-key-0123456789"


def build(storage: str, data_dir: Path, limits: str = "on") -> Callable[[], bytes]:
    """The broker app and a function that sends it one create (asserting a 201)."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir / "metrics"))
    (data_dir / "metrics").mkdir(parents=True, exist_ok=True)
    env = {
        "BROKER_DATA_DIR": str(data_dir / "data"),
        "BROKER_ADMIN_KEY": ADMIN_KEY,
        **LIMITS_ENV[limits],
    }
    if storage == "s3":
        env.update(S3_ENV)
        os.environ.update({k: v for k, v in S3_ENV.items() if k.startswith("AWS_")})
    from broker import create_app, prepare_database

    prepare_database(environ=env)  # what the gunicorn master does before it forks
    app = create_app(environ=env)
    minted = app.test_client().post(
        "/v1/keys", json={"tenant": "bench"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    key = minted.get_json()["key"]
    body = json.dumps(dict(DECLARATION)).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/v1/files",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }

    def create() -> bytes:
        statuses: list[str] = []
        answer = app(
            {**environ, "wsgi.input": io.BytesIO(body)}, lambda s, h, e=None: statuses.append(s)
        )
        data = b"".join(answer)
        answer.close()
        assert statuses[0].startswith("201"), (statuses, data)
        return data

    return create


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", choices=("local", "s3"), default="local")
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument(
        "--limits", choices=tuple(LIMITS_ENV), default="on", help="as bench/create.py's"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the creates")
    parser.add_argument("--callgrind", action="store_true", help="count instructions")
    parser.add_argument("--under-callgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.callgrind:
        if not shutil.which("valgrind"):
            print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            creates = min(args.creates, 200)  # ~50x slower under valgrind
            command = [
                "valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out}", sys.executable, __file__,
                "--storage", args.storage, "--creates", str(creates), "--under-callgrind",
                "--limits", args.limits,
            ]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
            totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
            count = int(totals[0].split()[1])
        print(
            f"{count / creates / 1e6:.3f} M instructions per create "
            f"({args.storage}, limits {args.limits})"
        )
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        create = build(args.storage, Path(tmp), args.limits)
        for _ in range(100):  # warm caches, compiled statements, the first connections
            create()
        if args.under_callgrind:
            toggle = ["callgrind_control", "-i"]
            subprocess.run([*toggle, "on", str(os.getpid())], check=True, capture_output=True)
            for _ in range(args.creates):
                create()
            subprocess.run([*toggle, "off", str(os.getpid())], check=True, capture_output=True)
        elif args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(lambda: [create() for _ in range(args.creates)])
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        else:
            best_wall = best_cpu = float("inf")
            for _ in range(5):
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.creates):
                    create()
                best_wall = min(best_wall, (time.perf_counter() - wall) / args.creates)
                best_cpu = min(best_cpu, (time.process_time() - cpu) / args.creates)
            print(
                f"{args.storage}: {best_cpu * 1e6:.0f} µs CPU, {best_wall * 1e6:.0f} µs wall "
                "per create (best of 5; wall includes each create's own fsync)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
