"""Benchmark ``POST /v1/files`` against a Flask hello-world (the floor) and naive boto3 signing.

Run from the project root::

    .venv/bin/python bench/create.py [--duration 8] [--warmup 2] [--rounds 3]
                                     [--connections 16] [--threads 1] [--storage local|s3]
                                     [--baseline REF] [--key tenant|admin]

Gunicorn servers run with the broker's own settings (``bench/gunicorn_conf.py`` loads the
served tree's ``broker.gunicorn_conf``: gthread, 2 workers), each on a free port of
127.0.0.1 with its own temporary data and Prometheus directories:

- ``hello``:    ``bench.apps.hello:app``, one route answering a small JSON object;
- ``naive``:    ``bench.apps.naive:app``, two ``generate_presigned_url`` calls per request;
- ``broker``:   ``wsgi:app``, the broker itself (this work tree), declaring a file per request;
- ``baseline``: with ``--baseline REF``, ``wsgi:app`` as of git ref REF, served from a
  temporary ``git worktree`` of it (its cwd, ``--chdir`` and ``PYTHONPATH``); every worker
  reports the files it imported, and the run is void unless they are all from that tree.

wrk sends each the same request (POST, same headers, same JSON body; the brokers a tenant
key minted on each, or the admin key with ``--key admin``) one target at a time, in rounds
whose order alternates (hello, naive, broker, baseline, then the reverse, ...) so slow
drifts of a noisy machine hit every target alike; each target's figure is its median over
the rounds. The headline is each broker's server CPU per create over the floor's ("x
floor"), and with a baseline the after/before ratio of CPU per create, both within one run.
Each broker run is also checked for correctness: no non-2xx answers, no socket errors, and
at least as many files written as wrk counted answers.

The exit status is 0 whatever the ratios say (this is a measurement); 1 when something is
broken (a server did not start, a wrong answer, rows missing); 130 when interrupted.
Servers are always stopped and the baseline's worktree removed, also on errors and Ctrl-C.
Nothing is written into the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from textwrap import shorten
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
GUNICORN_CONFIG = PROJECT_ROOT / "bench" / "gunicorn_conf.py"
"""Every server's ``--config``: its own tree's ``broker.gunicorn_conf``, plus a report."""
WORKERS = 2
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 15.0
WRK_TIMEOUT_S = 10  # per request; a slower answer counts as a socket error (and fails the run)

HELLO_TARGET = 0.60  # broker req/s over the hello-world floor's
NAIVE_TARGET = 3.0  # broker req/s over naive boto3 signing's

KEY_CHOICES: Mapping[str, str] = {
    "tenant": "a tenant key per broker (tenant 'bench', default scopes, minted with POST "
    "/v1/keys and the admin key), so each create looks its key up; hello and naive get "
    "the same header",
    "admin": "the admin key (BROKER_ADMIN_KEY) for every target: a constant-time compare, "
    "no key lookup (--key tenant, the default, measures the lookup too)",
}
"""``--key``: what the load authenticates with, as the run says it."""

DECLARATION: Mapping[str, Any] = {"name": "a.txt", "size": 1234, "mime_type": "text/plain"}
"""The body of every load request. No ``key``: the broker generates a unique one each time."""

_UNREACHED = {  # the checks run on every create; no run comes near these
    "BROKER_RATE_LIMIT": "1000000/second",
    "BROKER_QUOTA_PENDING_FILES": "1000000000",
    "BROKER_QUOTA_PENDING_BYTES": str(2**62),
}
LIMITS_ENV: Mapping[str, Mapping[str, str]] = {
    "on": _UNREACHED,
    "redis": {**_UNREACHED, "BROKER_REDIS_URL": "redis://127.0.0.1:6379/0"},
    "off": {
        "BROKER_RATE_LIMIT": "off",
        "BROKER_QUOTA_PENDING_FILES": "off",
        "BROKER_QUOTA_PENDING_BYTES": "off",
    },
}
"""``--limits``: the brokers' rate limits and quotas. Their defaults would refuse the load
(100 creates a second per key, 10,000 pending files per tenant), so a run either checks
them at thresholds it never reaches (``on``: counters in memory; ``redis``: in Redis on
127.0.0.1:6379) or turns them off."""

S3_ENV: Mapping[str, str] = {
    "BROKER_STORAGE": "s3",
    "BROKER_S3_BUCKET": "bench",
    "BROKER_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens; creates never call S3
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Inherited variables that would change how or where a server listens, how many workers and
# threads it runs, or which credentials and AWS profile it picks up.
_DROPPED_ENV_PREFIXES = ("BROKER_", "AWS_", "GUNICORN_")
_DROPPED_ENV = frozenset({"PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"})


class BenchError(Exception):
    """Something is broken (a server did not start, a wrong answer): the numbers are void."""


# -- plain HTTP to loopback ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, the parsed JSON body (None if not JSON) and the raw text."""

    status: int
    body: Any
    text: str

    def describe(self) -> str:
        """Status and a bounded excerpt of the body, for error messages."""
        excerpt = self.text if len(self.text) <= 400 else self.text[:400] + "…"
        return f"{self.status} {excerpt}"


def call(
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    timeout: float = HTTP_TIMEOUT,
) -> Reply:
    """One request to ``127.0.0.1:port`` (stdlib only, so no proxy setting can reroute it)."""
    sent = dict(headers or {})
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = None
    return Reply(response.status, parsed, text)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# -- servers ------------------------------------------------------------------------------


def server_env(workdir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment minus anything that would redirect a server, plus its own dirs.

    Every server gets a ``BROKER_DATA_DIR``, not only the broker: the broker's gunicorn
    configuration builds the broker app once in the master (``on_starting``) whatever app
    it serves, and would otherwise create ``./broker-data`` in the project.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _DROPPED_ENV and not name.startswith(_DROPPED_ENV_PREFIXES)
    }
    (workdir / "metrics").mkdir(parents=True)
    env.update(
        BROKER_DATA_DIR=str(workdir / "data"),
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        # No AWS profile, config file or instance metadata: only the explicit fake values.
        AWS_CONFIG_FILE=str(workdir / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(workdir / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY=LOOPBACK,
        no_proxy=LOOPBACK,
    )
    env.update(extra)
    return env


class Server:
    """A gunicorn master (and its workers) serving one app from ``root`` on a loopback port.

    ``root`` (a source tree: the project's, or a baseline's git worktree) is gunicorn's cwd,
    ``--chdir`` and ``PYTHONPATH``, so the app, ``broker`` and the broker's gunicorn settings
    are imported from it, ahead of the project's editable install.
    """

    def __init__(
        self, name: str, app: str, root: Path, workdir: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.app = app
        self.root = root
        self.workdir = workdir
        self.env = {**env, "PYTHONPATH": str(root), "BENCH_REPORT_DIR": str(self.report_dir)}
        self.report_dir.mkdir(parents=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, always on 127.0.0.1."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def error_log(self) -> Path:
        """gunicorn's error log (its stderr)."""
        return self.workdir / "gunicorn.err"

    @property
    def access_log(self) -> Path:
        """gunicorn's access log (its stdout): one line per request."""
        return self.workdir / "gunicorn.out"

    @property
    def report_dir(self) -> Path:
        """Where each worker writes what it serves (``bench/gunicorn_conf.py``)."""
        return self.workdir / "reports"

    def start(self) -> None:
        """Launch gunicorn in its own session (so Ctrl-C reaches us, and we stop it)."""
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(GUNICORN_CONFIG),
            "--chdir",
            str(self.root),
            "--bind",
            f"{LOOPBACK}:{self.port}",
            "--workers",
            str(WORKERS),
            self.app,
        ]
        with self.access_log.open("wb") as out, self.error_log.open("wb") as err:
            self.proc = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def wait_ready(self, path: str, accept: Callable[[Reply], bool]) -> Reply:
        """Poll ``GET path`` until ``accept`` likes the answer; BenchError if gunicorn died."""
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise BenchError(
                    f"{self.name}: gunicorn exited with status {code} before it was ready.\n"
                    f"{self.log_tail()}"
                )
            try:
                reply = call(self.port, "GET", path, timeout=HTTP_TIMEOUT)
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if accept(reply):
                    return reply
                last = reply.describe()
            time.sleep(0.1)
        raise BenchError(
            f"{self.name}: not ready after {STARTUP_TIMEOUT:.0f} s (GET {path}: {last}).\n"
            f"{self.log_tail()}"
        )

    def served_code(self) -> str:
        """Wait for every worker's report; BenchError unless all it serves is from ``root``.

        Checked in each worker, after it loaded the app: the app's module, ``broker`` and its
        gunicorn settings, and every other ``broker.*`` module loaded. Returns the settings
        line the workers report (gunicorn's resolved configuration).
        """
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(reports := sorted(self.report_dir.glob("worker-*.json"))) < WORKERS:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name}: {len(reports)} of {WORKERS} workers reported what they "
                    f"serve.\n{self.log_tail()}"
                )
            time.sleep(0.1)
        root = self.root.resolve()
        needed = {self.app.split(":")[0], "broker", "broker.gunicorn_conf"}
        settings: set[str] = set()
        for path in reports:
            report = json.loads(path.read_text())
            settings.add(report["settings"])
            files: dict[str, str | None] = report["modules"]
            wrong = [f"{name} not loaded" for name in sorted(needed - files.keys())]
            wrong += [
                f"{name} from {file}"
                for name, file in sorted(files.items())
                if file is None or not Path(file).resolve().is_relative_to(root)
            ]
            if wrong:
                raise BenchError(
                    f"{self.name}: worker {report['pid']} does not serve {root} alone: "
                    + "; ".join(wrong[:5])
                )
        if len(settings) != 1:
            raise BenchError(f"{self.name}: workers report different settings: {settings}")
        return settings.pop()

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) used so far by the master and its workers; None off Linux.

        Read from /proc: less sensitive than req/s to other load on the machine, as long as
        the server is not starved outright, so it tells a slow server from a crowded box.
        """
        assert self.proc is not None
        pids = [self.proc.pid]
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(pid) for pid in (task / "children").read_text().split()]
            ticks = 0
            for pid in pids:
                # Fields after "(comm)": state is the 3rd field, utime the 14th, stime the 15th.
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            return None
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the error log, indented, for error messages."""
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return "  (no error log)"
        tail = text.splitlines()[-lines:] or ["(empty)"]
        return f"  last lines of {self.error_log}:\n" + "\n".join(f"    {line}" for line in tail)

    def stop(self) -> None:
        """SIGTERM the master (graceful), then SIGKILL its process group if anything is left."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        # start_new_session made the master the leader of a group holding only it and its
        # workers: whatever is still in that group is ours.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 0)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- wrk ----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of ``wrk``, installing the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed and we are not root: apt-get install -y wrk")
    say("wrk is not installed; installing the Debian package `wrk` with apt-get:")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        say("  + " + " ".join(command))
        if subprocess.run(command, env=apt_env, check=False).returncode != 0:
            raise BenchError(f"`{' '.join(command)}` failed; install wrk and run again")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def lua_string(value: str) -> str:
    """A Lua string literal for any text: printable ASCII as is, every other byte as \\ddd."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def write_wrk_script(path: Path, body: str, headers: Mapping[str, str]) -> None:
    """A wrk script that POSTs ``body`` with ``headers`` (no per-request Lua: no overhead)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports."""

    requests: int
    """Answers received (wrk counts every complete response, whatever its status)."""
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    """wrk's "Non-2xx or 3xx responses": statuses of 400 and above."""
    socket_errors: Mapping[str, int]
    """connect, read, write and timeout errors."""

    @property
    def problems(self) -> list[str]:
        """What went wrong in this run, if anything."""
        found = [f"{self.non_2xx} non-2xx answers"] if self.non_2xx else []
        found += [f"{n} socket {kind} errors" for kind, n in self.socket_errors.items() if n]
        if self.requests == 0:
            found.append("no answers at all")
        return found


@dataclass(frozen=True)
class Sample:
    """One measured run: what wrk saw, and the server's CPU time per answered request."""

    wrk: WrkResult
    cpu_ms: float | None
    """Server CPU (master and workers, user + system) per request, in ms; None off Linux."""


_TIME_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)"
_PERCENTILE_RE = re.compile(rf"^\s*([0-9.]+)%\s+{_TIME}\s*$", re.MULTILINE)
_REQUESTS_RE = re.compile(rf"^\s*([0-9]+) requests in {_TIME}", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s*([0-9.]+)\s*$", re.MULTILINE)
_SOCKET_RE = re.compile(
    r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)"
)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")


def to_ms(number: str, unit: str) -> float:
    """A wrk duration (``950.00us``, ``4.12ms``, ``1.02s``, ``1.50m``) in milliseconds."""
    return float(number) * _TIME_UNIT_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Parse ``wrk --latency`` output; BenchError naming what is missing.

    wrk prints the socket-error and non-2xx lines only when they are not zero.

    >>> r = parse_wrk('''Running 1s test @ http://127.0.0.1:1/
    ...   Latency Distribution
    ...      50%  950.00us
    ...      75%    1.20ms
    ...      99%    1.02s
    ...   1234 requests in 1.00s, 250.00KB read
    ...   Socket errors: connect 0, read 1, write 0, timeout 2
    ...   Non-2xx or 3xx responses: 3
    ... Requests/sec:   1233.50
    ... ''')
    >>> (r.requests, r.rps, round(r.p50_ms, 3), r.p99_ms, r.non_2xx, sum(r.socket_errors.values()))
    (1234, 1233.5, 0.95, 1020.0, 3, 3)
    """
    percentiles = {float(p): to_ms(n, u) for p, n, u in _PERCENTILE_RE.findall(output)}
    requests = _REQUESTS_RE.search(output)
    rps = _RPS_RE.search(output)
    missing = [
        what
        for what, found in (
            ("the 50% latency", 50.0 in percentiles),
            ("the 99% latency", 99.0 in percentiles),
            ("'N requests in T'", requests is not None),
            ("'Requests/sec'", rps is not None),
        )
        if not found
    ]
    if missing or requests is None or rps is None:
        raise BenchError(f"cannot read {', '.join(missing)} in wrk's output:\n{output}")
    sockets = _SOCKET_RE.search(output)
    counts = [int(n) for n in sockets.groups()] if sockets else [0, 0, 0, 0]
    non_2xx = _NON_2XX_RE.search(output)
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=to_ms(requests.group(2), requests.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), counts, strict=True)),
    )


@dataclass(frozen=True)
class Load:
    """How hard and how long wrk drives a target."""

    wrk: str
    script: Path
    connections: int
    threads: int

    def run(self, url: str, seconds: int) -> WrkResult:
        """One wrk run against ``url`` (always loopback) for ``seconds``."""
        assert urlsplit(url).hostname == LOOPBACK
        command = [
            self.wrk,
            "--latency",
            f"--threads={self.threads}",
            f"--connections={self.connections}",
            f"--duration={seconds}s",
            f"--timeout={WRK_TIMEOUT_S}s",
            f"--script={self.script}",
            url,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if done.returncode != 0:
            raise BenchError(
                f"wrk failed with status {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return parse_wrk(done.stdout)


# -- targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One server under test: what gunicorn serves, from which tree, and where the load goes."""

    name: str
    """Its key and the name of its temporary directory."""
    label: str
    """Short, in the ratio lines."""
    title: str
    """In the table."""
    app: str
    load_path: str
    ready_path: str
    root: Path = PROJECT_ROOT
    is_broker: bool = False


HELLO = Target(
    "hello", "hello-world floor", "Flask hello-world (floor)", "bench.apps.hello:app", "/", "/"
)
NAIVE = Target(
    "naive",
    "naive boto3",
    "Flask + boto3 presign x2",
    "bench.apps.naive:app",
    "/v1/files",
    "/healthz",
)
BROKER = Target(
    "broker",
    "broker",
    "broker POST /v1/files",
    "wsgi:app",
    "/v1/files",
    "/v1/health",
    is_broker=True,
)
TARGETS = (HELLO, NAIVE, BROKER)
RATIO_GOALS = ((HELLO, HELLO_TARGET), (NAIVE, NAIVE_TARGET))


def baseline_target(ref: str, tree: Path) -> Target:
    """The broker as of git ref ``ref``, served from its checkout ``tree``."""
    return replace(
        BROKER,
        name="baseline",
        label=f"broker@{ref}",
        title=f"broker@{ref} POST /v1/files",
        root=tree,
    )


def ready_check(target: Target, storage: str) -> Callable[[Reply], bool]:
    """When a target counts as up.

    The broker's health also pings storage; with ``--storage s3`` the endpoint is a dead
    port by design, so a 503 ``storage.unavailable`` is accepted there (the create path
    never calls S3; the smoke check right after proves the broker answers creates).
    """

    def accept(reply: Reply) -> bool:
        if reply.status == 200:
            return True
        if target.is_broker and storage == "s3" and reply.status == 503:
            error = reply.body.get("error") if isinstance(reply.body, dict) else None
            return isinstance(error, dict) and error.get("code") == "storage.unavailable"
        return False

    return accept


def mint_key(broker: Server, admin_key: str) -> str:
    """A fresh API key for tenant ``bench`` (``POST /v1/keys`` with the admin key)."""
    reply = call(
        broker.port,
        "POST",
        "/v1/keys",
        headers={"Authorization": f"Bearer {admin_key}"},
        body={"tenant": "bench", "name": "bench"},
    )
    if reply.status != 201 or not isinstance(reply.body, dict) or "key" not in reply.body:
        raise BenchError(
            f"{broker.name}: POST /v1/keys answered {reply.describe()} (--key admin does without)"
        )
    key: str = reply.body["key"]
    return key


def _expect(condition: bool, target: Target, what: str, reply: Reply) -> None:
    if not condition:
        raise BenchError(f"{target.name}: {what}; it answered {reply.describe()}")


def smoke_check(target: Target, server: Server, headers: Mapping[str, str], storage: str) -> int:
    """Two requests like the load's, checked by hand; returns how many files they created."""
    replies = [
        call(server.port, "POST", target.load_path, headers=headers, body=DECLARATION)
        for _ in range(2)
    ]
    if target is HELLO:
        for reply in replies:
            _expect(reply.status == 200, target, "expected 200", reply)
            _expect(reply.body == {"hello": "world"}, target, "expected the hello JSON", reply)
        return 0
    for reply in replies:
        _expect(reply.status == 201, target, "expected 201", reply)
        _expect(isinstance(reply.body, dict), target, "expected a JSON object", reply)
    first, second = replies[0].body, replies[1].body
    _expect(first.get("key") != second.get("key"), target, "two creates got one key", replies[1])
    if target is NAIVE:
        for url in (first.get("upload_url"), first.get("download_url")):
            _expect(
                isinstance(url, str) and "X-Amz-Signature=" in url,
                target,
                "expected two SigV4-signed URLs",
                replies[0],
            )
        return 0
    upload = first.get("upload") or {}
    for field_name, expected in (
        ("status", "pending"),
        ("name", DECLARATION["name"]),
        ("size", DECLARATION["size"]),
        ("mime_type", DECLARATION["mime_type"]),
    ):
        _expect(first.get(field_name) == expected, target, f"expected {field_name}", replies[0])
    urls = [upload.get("url"), first.get("download_url")]
    _expect(
        all(isinstance(u, str) and urlsplit(u).scheme in ("http", "https") for u in urls),
        target,
        "expected an upload and a download URL",
        replies[0],
    )
    if storage == "s3":
        # Bytes go straight to storage (API.md); the download URL may be the broker's own.
        endpoint = urlsplit(S3_ENV["BROKER_S3_ENDPOINT_URL"]).netloc
        _expect(
            urlsplit(upload["url"]).netloc == endpoint,
            target,
            f"expected the upload URL on the S3 endpoint {endpoint}",
            replies[0],
        )
    return 2


def verify_rows(broker: Server, headers: Mapping[str, str], answered: int, slack: int) -> str:
    """Check that the broker really wrote a file per answered create; a summary line.

    wrk counts answers; requests still in flight when a run stops (at most one per
    connection) may be written without being counted, hence ``slack``.
    """
    buckets = call(broker.port, "GET", "/v1/buckets", headers=headers)
    data = buckets.body.get("data") if isinstance(buckets.body, dict) else None
    counts = [b.get("file_count") for b in data or [] if b.get("name") == "default"]
    if buckets.status != 200 or len(counts) != 1 or not isinstance(counts[0], int):
        raise BenchError(f"{broker.name}: GET /v1/buckets answered {buckets.describe()}")
    written = counts[0]
    if written < answered:
        raise BenchError(
            f"{broker.name}: {answered} creates were answered but only {written} files exist: "
            "some answers were not written (or were not 2xx)"
        )
    if written > answered + slack:
        raise BenchError(
            f"{broker.name}: {written} files exist for {answered} answered creates "
            f"(at most {slack} more could have been in flight)"
        )
    listing = call(broker.port, "GET", "/v1/buckets/default/files?limit=1", headers=headers)
    rows = listing.body.get("data") if isinstance(listing.body, dict) else None
    if listing.status != 200 or not rows:
        raise BenchError(f"{broker.name}: the listing is empty: {listing.describe()}")
    newest = rows[0]
    for name, expected in (*DECLARATION.items(), ("status", "pending")):
        if newest.get(name) != expected:
            raise BenchError(
                f"{broker.name}: the newest file has {name}={newest.get(name)!r}: {newest}"
            )
    if listing.body.get("has_more") is not True:
        raise BenchError(f"{broker.name}: the listing should have more pages: {listing.describe()}")
    return (
        f"{written} files written for {answered} answered creates "
        f"(+{written - answered} in flight at wrk's cut-offs); newest: "
        f"{newest.get('id')} key {newest.get('key')!r}"
    )


# -- the run ------------------------------------------------------------------------------


def say(message: str = "", end: str = "\n") -> None:
    """Print progress at once (stdout may be a pipe)."""
    print(message, end=end, flush=True)


def wrk_version(wrk: str) -> str:
    """``wrk 4.1.0 [epoll]`` or so (wrk -v prints it before its usage text)."""
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk (unknown version)"


def git(*args: str) -> str:
    """What ``git args`` prints, run in the project; BenchError if it fails."""
    done = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout.strip()


def work_tree_code() -> str:
    """Which code the ``broker`` target serves: this work tree at its HEAD, and whether the
    served files (``broker/``, ``wsgi.py``) have uncommitted changes."""
    try:
        head = git("log", "-1", "--format=%h %s")
        changed = git("status", "--porcelain", "--", "broker", "wsgi.py")
    except BenchError:
        return f"the work tree {PROJECT_ROOT} (not a git checkout)"
    edits = ", with uncommitted changes to broker/ or wsgi.py" if changed else ""
    return f"this work tree, HEAD {shorten(head, 64)}{edits}"


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Shield cleanup from a second Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def baseline_worktree(ref: str, path: Path) -> Iterator[str]:
    """A detached checkout of ``ref`` at ``path`` (``git worktree add``); yields ``<short id>
    <subject>``. Removed afterwards, also on errors and Ctrl-C: the directory and git's
    record of it."""
    try:
        commit = git("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}")
    except BenchError as exc:
        raise BenchError(f"--baseline {ref}: no such commit here ({exc})") from None
    try:
        git("worktree", "add", "--detach", str(path), commit)
        yield git("log", "-1", "--format=%h %s", commit)
    finally:
        with sigint_ignored():
            try:
                git("worktree", "remove", "--force", "--force", str(path))
            except BenchError:  # never added, or half (interrupted): drop what exists
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(BenchError):
                    git("worktree", "prune")


def start_servers(
    workdir: Path,
    targets: Sequence[Target],
    storage: str,
    admin_key: str,
    servers: dict[str, Server],
    limits: str = "on",
) -> None:
    """Start every target's server at once (startup is not measured) and wait until ready,
    and until each worker has shown that it serves its target's tree alone.

    Each server is put in ``servers`` as soon as it is launched, so the caller can stop it
    whatever happens next.
    """
    for target in targets:
        extra: dict[str, str] = {}
        if target.is_broker:
            extra["BROKER_ADMIN_KEY"] = admin_key
            extra.update(LIMITS_ENV[limits])
            if storage == "s3":
                extra.update(S3_ENV)
        home = workdir / target.name
        server = Server(target.name, target.app, target.root, home, server_env(home, extra))
        servers[target.name] = server
        server.start()
    settings: dict[str, str] = {}
    for target in targets:
        server = servers[target.name]
        try:
            reply = server.wait_ready(target.ready_path, ready_check(target, storage))
        except BenchError as exc:
            if target.is_broker and storage == "s3":
                raise BenchError(
                    f"{target.name} did not start with --storage s3. The S3 adapter may not "
                    "have landed yet (or rejects this configuration); --storage local needs "
                    f"nothing else.\n{exc}"
                ) from None
            raise
        settings[target.name] = server.served_code()
        note = "" if reply.status == 200 else f" (health {reply.status}: S3 endpoint is dead)"
        say(f"  {target.name:<8} {server.url}  {target.app} from {target.root}{note}")
    if len(set(settings.values())) == 1:
        say(f"servers: {settings[targets[0].name]} (as every worker reports)")
    else:
        say("servers: each tree's broker.gunicorn_conf sets its own, and they differ:")
        for name, line in settings.items():
            say(f"  {name:<8} {line}")


def stop_servers(servers: Mapping[str, Server]) -> None:
    """Stop every server, shielded from a second Ctrl-C while doing so."""
    with sigint_ignored():
        for server in servers.values():
            server.stop()


def measure(
    args: argparse.Namespace,
    targets: Sequence[Target],
    loads: Mapping[str, Load],
    servers: Mapping[str, Server],
) -> tuple[dict[str, list[Sample]], dict[str, int]]:
    """Warm up and measure each target in turn, for every round (order alternating).

    Returns each target's measured runs, and how many answers wrk counted for each (warm-ups
    included).
    """
    results: dict[str, list[Sample]] = {t.name: [] for t in targets}
    answered = dict.fromkeys(results, 0)
    phases = (("warm-up", args.warmup), ("measured run", args.duration))
    for round_index in range(args.rounds):
        order = targets if round_index % 2 == 0 else tuple(reversed(targets))
        for target in order:
            server = servers[target.name]
            url = server.url + target.load_path
            say(f"  round {round_index + 1}/{args.rounds}  {target.name:<8}", end="")
            runs = [(phase, seconds) for phase, seconds in phases if seconds]
            for phase, seconds in runs:
                cpu_before = server.cpu_seconds()
                result = loads[target.name].run(url, seconds)
                cpu_after = server.cpu_seconds()
                if result.problems:
                    say()
                    raise BenchError(
                        f"{target.name} ({phase}): {', '.join(result.problems)}.\n"
                        f"{non_2xx_lines(server.access_log)}{server.log_tail(10)}"
                    )
                answered[target.name] += result.requests
            # The measured run is the last one.
            cpu_ms = None
            if cpu_before is not None and cpu_after is not None and result.requests:
                cpu_ms = (cpu_after - cpu_before) * 1000 / result.requests
            results[target.name].append(Sample(result, cpu_ms))
            cpu = f"{cpu_ms:5.2f} ms CPU/req" if cpu_ms is not None else "CPU n/a"
            say(
                f"{result.rps:9.1f} req/s   p50 {result.p50_ms:7.2f} ms   "
                f"p99 {result.p99_ms:7.2f} ms   {cpu}   ({result.requests} requests)"
            )
    return results, answered


def non_2xx_lines(access_log: Path, limit: int = 5) -> str:
    """A few access-log lines whose status is not 2xx (best effort, for error messages)."""
    status = re.compile(r'" ([0-9]{3}) ')
    found: list[str] = []
    with contextlib.suppress(OSError), access_log.open(errors="replace") as handle:
        for line in handle:
            match = status.search(line)
            if match and not match.group(1).startswith("2"):
                found.append("    " + line.rstrip())
                if len(found) == limit:
                    break
    return f"  non-2xx lines in {access_log}:\n" + "\n".join(found) + "\n" if found else ""


@dataclass(frozen=True)
class Summary:
    """One target's medians over the rounds, and its spread."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    spread: float
    """(max - min) / median of req/s over the rounds: how noisy this target's figure is."""
    cpu_ms: float | None
    """Median server CPU per request (None when it could not be read)."""

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Summary:
        """Medians per column (each column on its own) over ``samples``."""
        runs = [s.wrk for s in samples]
        rates = [r.rps for r in runs]
        median = statistics.median(rates)
        cpu = [s.cpu_ms for s in samples if s.cpu_ms is not None]
        return cls(
            rps=median,
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            non_2xx=sum(r.non_2xx for r in runs),
            spread=(max(rates) - min(rates)) / median if median else 0.0,
            cpu_ms=statistics.median(cpu) if len(cpu) == len(samples) else None,
        )


def quotient(top: float | None, bottom: float | None) -> float | None:
    """``top / bottom``, or None when either is unknown (or the bottom is 0)."""
    return top / bottom if top is not None and bottom else None


def figure(value: float | None, width: int = 0) -> str:
    """A ratio or a time with two decimals, right-aligned in ``width``; ``n/a`` if unknown."""
    return f"{value:{width}.2f}" if value is not None else f"{'n/a':>{width}}"


def per_round(
    top: Sequence[Sample], bottom: Sequence[Sample], value: Callable[[Sample], float | None]
) -> str:
    """``value`` of ``top`` over ``value`` of ``bottom``, round by round."""
    pairs = zip(top, bottom, strict=True)
    return ", ".join(figure(quotient(value(t), value(b))) for t, b in pairs)


def cpu_of(sample: Sample) -> float | None:
    """A run's server CPU per request."""
    return sample.cpu_ms


def rps_of(sample: Sample) -> float | None:
    """A run's requests per second."""
    return sample.wrk.rps


def report(targets: Sequence[Target], results: Mapping[str, Sequence[Sample]]) -> None:
    """The per-target table; each broker's CPU per create over the floor's; the req/s ratios
    (PASS or FAIL against their targets); with a baseline, after/before CPU per create."""
    summaries = {t.name: Summary.of(results[t.name]) for t in targets}
    brokers = [t for t in targets if t.is_broker]
    ratios = [(b, other, goal) for b in brokers for other, goal in RATIO_GOALS]
    width = 2 + max(
        26,
        *(len(t.title) for t in targets),
        *(len(f"{b.label} / {o.label}") for b, o, _ in ratios),
    )
    say()
    say(
        f"{'target':<{width}}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}"
        f"{'spread':>8}{'CPU ms/req':>12}"
    )
    for target in targets:
        s = summaries[target.name]
        say(
            f"{target.title:<{width}}{s.rps:10.1f}{s.p50_ms:10.2f}{s.p99_ms:10.2f}"
            f"{s.non_2xx:9d}{s.spread:8.0%}{figure(s.cpu_ms, 12)}"
        )
    say("(medians over the rounds; spread = (max - min) / median of req/s;")
    say(" CPU ms/req = the server's CPU time, master and workers, per answered request)")
    say()
    floor = results[HELLO.name]
    say(f"{'CPU per create':<{width}}{'ms/req':>7}{'x floor':>9}  rounds (x floor)")
    for b in brokers:
        cpu = summaries[b.name].cpu_ms
        times_floor = figure(quotient(cpu, summaries[HELLO.name].cpu_ms), 9)
        rounds = per_round(results[b.name], floor, cpu_of)
        say(f"{b.label:<{width}}{figure(cpu, 7)}{times_floor}  {rounds}")
    say("(x floor: the broker's CPU per request over the hello-world's; lower is better)")
    say()
    say(f"{'ratio of req/s':<{width}}{'median':>7}{'target':>10}  verdict  {'by CPU':>6}  rounds")
    for b, other, goal in ratios:
        broker, them = summaries[b.name], summaries[other.name]
        ratio = broker.rps / them.rps
        rounds = per_round(results[b.name], results[other.name], rps_of)
        by_cpu = figure(quotient(them.cpu_ms, broker.cpu_ms), 6)
        verdict = "PASS" if ratio >= goal else "FAIL"
        wanted = f">= {goal:.2f}"
        title = f"{b.label} / {other.label}"
        say(f"{title:<{width}}{ratio:7.2f}{wanted:>10}  {verdict:<7}  {by_cpu}  {rounds}")
    say("(by CPU: the other's CPU/req over the broker's, i.e. the ratio if CPU were the only")
    say(" limit; a req/s ratio well below it means the broker waits rather than computes)")
    if len(brokers) == 2:
        after, before = brokers
        change = quotient(summaries[after.name].cpu_ms, summaries[before.name].cpu_ms)
        rounds = per_round(results[after.name], results[before.name], cpu_of)
        say()
        say(f"after/before CPU per create: {figure(change)}")
        say(
            f"({after.label} over {before.label}, medians of this run; rounds {rounds}; "
            "below 1.00: the work tree costs less)"
        )


def run(args: argparse.Namespace, workdir: Path) -> None:
    """The whole benchmark inside ``workdir`` (temporary, outside the repo)."""
    wrk = ensure_wrk()
    admin_key = secrets.token_urlsafe(32)
    say(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {wrk_version(wrk)}")
    say(
        f"load:    POST {json.dumps(DECLARATION)}; wrk {args.threads} thread(s), "
        f"{args.connections} connections, {args.warmup} s warm-up + {args.duration} s measured, "
        f"{args.rounds} rounds; storage {args.storage}"
    )
    say(f"key:     {KEY_CHOICES[args.key]}")
    say(f"limits:  {args.limits}: {json.dumps(LIMITS_ENV[args.limits])}")
    say(f"code:    broker: {work_tree_code()}")
    targets = list(TARGETS)
    servers: dict[str, Server] = {}
    with contextlib.ExitStack() as cleanup:
        if args.baseline:
            tree = workdir / "baseline-tree"
            commit = cleanup.enter_context(baseline_worktree(args.baseline, tree))
            targets.append(baseline_target(args.baseline, tree))
            say(f"         baseline: broker@{args.baseline} = {shorten(commit, 64)} (git worktree)")
        cleanup.callback(stop_servers, servers)  # runs first: before the worktree goes
        say("starting servers (127.0.0.1 only):")
        start_servers(workdir, targets, args.storage, admin_key, servers, args.limits)
        brokers = [t for t in targets if t.is_broker]
        if args.key == "admin":
            keys = dict.fromkeys((t.name for t in targets), admin_key)
        else:
            keys = {t.name: mint_key(servers[t.name], admin_key) for t in brokers}
        # hello and naive get a header like the brokers': the work tree broker's key.
        headers = {
            t.name: {"Authorization": f"Bearer {keys.get(t.name, keys[BROKER.name])}"}
            for t in targets
        }
        created = {
            t.name: smoke_check(t, servers[t.name], headers[t.name], args.storage) for t in targets
        }
        loads: dict[str, Load] = {}
        for t in targets:
            script = workdir / t.name / "post.lua"
            request_headers = {**headers[t.name], "Content-Type": "application/json"}
            write_wrk_script(script, json.dumps(DECLARATION), request_headers)
            loads[t.name] = Load(wrk, script, args.connections, args.threads)
        say("measuring:")
        results, answered = measure(args, targets, loads, servers)
        wrk_runs = args.rounds * (2 if args.warmup else 1)
        for t in brokers:
            rows = verify_rows(
                servers[t.name],
                headers[t.name],
                answered[t.name] + created[t.name],
                slack=wrk_runs * args.connections,
            )
            say(f"{t.name} rows: {rows}")
        report(targets, results)


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Requests/s and latency of POST /v1/files against a Flask hello-world "
        "floor and naive boto3 presigning, on one machine in one run.",
    )
    parser.add_argument(
        "--duration", type=positive, default=8, help="seconds measured per run (default 8)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of warm-up before each run (default 2)"
    )
    parser.add_argument(
        "--connections", type=positive, default=16, help="wrk connections (default 16)"
    )
    parser.add_argument("--threads", type=positive, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--rounds", type=positive, default=3, help="rounds over the targets (default 3)"
    )
    parser.add_argument(
        "--storage",
        choices=("local", "s3"),
        default="local",
        help="broker storage: the embedded blob store, or S3 (signing only) (default local)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure the broker as of git ref REF (a commit, branch, HEAD~3, ...), "
        "served from a temporary git worktree, and compare its CPU per create with this "
        "tree's in the same run",
    )
    parser.add_argument(
        "--key",
        choices=tuple(KEY_CHOICES),
        default="tenant",
        help="authenticate the load with a minted tenant key (default) or the admin key",
    )
    parser.add_argument(
        "--limits",
        choices=tuple(LIMITS_ENV),
        default="on",
        help="the brokers' rate limits and quotas: checked at thresholds the run never "
        "reaches, counters in memory (on, default) or in Redis (redis); or off",
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temporary directory (server logs, data) and print its path",
    )
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads (wrk needs one per thread)")
    return args


@contextlib.contextmanager
def temporary_directory(keep: bool) -> Iterator[Path]:
    """A fresh directory under the system temp dir, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP: unwind like Ctrl-C, so the servers are stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(
    args: argparse.Namespace, run: Callable[[argparse.Namespace, Path], None], servers: str
) -> int:
    """Run a benchmark in its temporary directory; 0 when measured (whatever the ratios),
    1 when broken, 130 when interrupted (``servers`` stopped either way)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    started = time.monotonic()
    try:
        with temporary_directory(args.keep_temp) as workdir:
            run(args, workdir)
    except BenchError as exc:
        print(f"\nBROKEN: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; {servers} stopped", file=sys.stderr, flush=True)
        return 130
    say(f"\ntotal time {time.monotonic() - started:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when measured (whatever the ratios), 1 when broken."""
    return run_main(parse_args(argv), run, "servers")


if __name__ == "__main__":
    sys.exit(main())
