"""Benchmark the embedded store's PUT of a large file against ``dd`` writing it to the same disk.

Run from the project root::

    .venv/bin/python bench/put.py [--size 1GiB] [--rounds 3] [--keep-temp] [--form]

One gunicorn server runs the broker with its own settings (``--config
python:broker.gunicorn_conf``, gthread, 2 workers) and the embedded blob store, on a free
port of 127.0.0.1, its data directory inside a temporary directory. A source file of
``--size`` random bytes is written there once. Each round then measures, in alternating
order (put, floor, dd; then dd, floor, put; ...; with ``--form``, the proxied form upload
comes after ``put``, see bench/README.md):

- ``put``: ``POST /v1/files`` declares the file, ``curl -T`` PUTs the source to
  ``upload.url`` with exactly ``upload.headers`` (timed: the PUT alone, whose answer comes
  after the broker has hashed, written, fsynced and renamed the bytes), then
  ``POST /v1/files/{id}/complete`` must answer 200 and ``complete``. Meanwhile a thread
  samples every worker's RSS each 50 ms; the worker that served the PUT is the one whose
  CPU time grew.
- ``floor``: ``curl -T`` PUTs the source to a bare socket server in this process that
  does only what storing an upload requires: ``recv_into`` one reused buffer, SHA-256,
  write, fsync, in one thread (SocketSink). What the broker adds is its own cost.
- ``dd``: ``dd if=source of=<same filesystem> bs=1M conv=fsync``: write the same bytes, then
  fsync, as the broker does (it streams to a temporary file, fsyncs, renames).

Before each timed step everything dirty is flushed (``sync``) and the previous step's
output deleted, so no step pays for another's writeback. The stored bytes are downloaded
and compared (SHA-256) once per run, outside the timed part. The client's own ceiling
(curl PUTting to a socket that discards) and SHA-256's speed on one core are printed too.

The exit status is 0 whatever the ratio says (this is a measurement); 1 when something is
broken (the server did not start, a wrong answer, wrong bytes stored); 130 when
interrupted. The server is always stopped, also on errors and Ctrl-C. Nothing is written
into the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.create import (  # the same servers, HTTP helper and temp dir as create.py
    LOOPBACK,
    PROJECT_ROOT,
    WORKERS,
    BenchError,
    Reply,
    Server,
    call,
    mint_key,
    positive,
    run_main,
    say,
    server_env,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MB = 1_000_000  # throughput is in decimal MB/s, as dd prints it

MAX_SIZE = 5 * GiB  # the largest single PUT a bucket may allow (S3's limit)
CHUNK = MiB
SAMPLE_INTERVAL = 0.05  # seconds between RSS samples
TRANSFER_TIMEOUT = 1800.0  # seconds for one PUT, download or dd: far beyond any sane disk
DISK_MARGIN = GiB  # free space left over beyond what the run itself writes

PUT_TARGET = 0.50  # broker PUT MB/s over dd's

MIME_TYPE = "application/octet-stream"


# -- sizes --------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB}


def parse_size(text: str) -> int:
    """argparse type: ``1GiB``, ``256MiB``, ``512M`` (binary, like dd) or plain bytes.

    >>> parse_size("1GiB"), parse_size("256MiB"), parse_size("512m"), parse_size("4096")
    (1073741824, 268435456, 536870912, 4096)
    """
    match = re.fullmatch(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1GiB, 256MiB or 4096")
    value = int(match.group(1)) * _UNITS[unit]
    if not 1 <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r}: the size must be 1 byte to 5 GiB")
    return value


def human(size: float) -> str:
    """``1 GiB``, ``256 MiB``, ``12.5 MiB`` or ``900 B``."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(size) >= scale:
            return f"{size / scale:.{0 if size % scale == 0 else 1}f} {unit}"
    return f"{size:.0f} B"


def mb_per_s(size: int, seconds: float) -> float:
    """Decimal MB per second."""
    return size / MB / seconds if seconds > 0 else float("inf")


# -- processes and memory ------------------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    """The gunicorn master's children (its workers), from /proc."""
    pids: list[int] = []
    for task in Path(f"/proc/{master}/task").iterdir():
        pids += [int(pid) for pid in (task / "children").read_text().split()]
    return sorted(pids)


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks a process has used; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat


def own_cpu() -> float:
    """CPU seconds (user + system) used so far by this process, all its threads."""
    used = os.times()
    return used.user + used.system


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by our finished child processes."""
    used = os.times()
    return used.children_user + used.children_system


def machine_idle() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs since boot, from /proc/stat (0, 0 off Linux)."""
    try:
        fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) if it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class RssSampler:
    """Samples the VmRSS of some processes every ``interval`` seconds in a thread.

    VmHWM (the lifetime peak) is read before and after: if it rose meanwhile, the new value
    is the exact peak, even one reached between two samples.
    """

    def __init__(self, pids: Sequence[int], interval: float = SAMPLE_INTERVAL) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.before = {pid: memory_kib(pid) for pid in self.pids}
        self.cpu_before = {pid: cpu_ticks(pid) for pid in self.pids}
        self.peak = {pid: rss for pid, (rss, _) in self.before.items()}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        for pid in self.pids:
            rss, _ = memory_kib(pid)
            self.peak[pid] = max(self.peak[pid], rss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def busiest(self) -> Memory:
        """The memory figures of the process that used the most CPU while sampled."""
        pid = max(self.pids, key=lambda p: cpu_ticks(p) - self.cpu_before[p])
        rss_before, hwm_before = self.before[pid]
        _, hwm_after = memory_kib(pid)
        peak = max(self.peak[pid], hwm_after if hwm_after > hwm_before else 0)
        cpu = (cpu_ticks(pid) - self.cpu_before[pid]) / os.sysconf("SC_CLK_TCK")
        return Memory(
            pid=pid, before=rss_before * KiB, peak=peak * KiB, samples=self.samples, cpu=cpu
        )


@dataclass(frozen=True)
class Memory:
    """RSS of the worker that served a request: just before it, and the peak during it."""

    pid: int
    before: int
    peak: int
    samples: int
    cpu: float
    """CPU seconds (user + system, all its threads) the worker used meanwhile."""

    @property
    def growth(self) -> int:
        """Peak minus before, in bytes."""
        return self.peak - self.before


# -- the client ----------------------------------------------------------------------------


def ensure_curl() -> str:
    """The path of ``curl`` (the upload client), or BenchError."""
    found = shutil.which("curl")
    if not found:
        raise BenchError("curl is not installed: apt-get install -y curl")
    return found


def _timed_curl(command: list[str], answer: Path, url: str, what: str) -> tuple[int, float]:
    """Run a curl ``command`` (its answer body to ``answer``); (HTTP status, wall seconds)."""
    command = [*command, "--output", str(answer), "--write-out", "%{http_code}", url]
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TRANSFER_TIMEOUT, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"curl {what} failed with status {done.returncode}: {done.stderr.strip()}")
    return int(done.stdout.strip() or 0), seconds


def curl_put(
    curl: str, url: str, source: Path, headers: Mapping[str, str], answer: Path
) -> tuple[int, float]:
    """PUT ``source`` with exactly ``headers``; (HTTP status, wall seconds). Body to ``answer``.

    curl streams the file from disk (page cache) in its own process, so the measurement is
    not limited by Python on the client side. ``Expect:`` (empty) stops curl from adding
    ``Expect: 100-continue``: the request carries only the headers the broker asked for.
    """
    assert urlsplit(url).hostname == LOOPBACK
    command = [curl, "--silent", "--show-error", "--noproxy", "*", "--http1.1"]
    command += ["--upload-file", str(source), "--request", "PUT", "--header", "Expect:"]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    return _timed_curl(command, answer, url, "PUT")


class SocketSink:
    """A one-shot HTTP server on loopback, in a thread, for one request with a body.

    It reads the body with ``recv_into`` a reused 1 MiB buffer. Without ``store`` it throws
    the bytes away: curl PUTting to it gives the client's ceiling (how fast curl and the
    loopback move them). With ``store`` it does what a minimal server that keeps an upload
    must do, in one thread and nothing more: SHA-256 every byte, write it to ``store``,
    fsync, answer. That is the floor under the broker: the same socket, hash and disk
    work, without HTTP framework, WSGI server or checks.
    """

    def __init__(self, store: Path | None = None) -> None:
        self.store = store
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = 0
        self.sha256 = ""
        self.status = 0
        """The status curl saw (set by ``sink_put``)."""
        self.seconds = 0.0
        """curl's wall time for the whole request (set by ``sink_put``)."""
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="socket-sink", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        raise ConnectionError("the client closed before the headers ended")
                    head += data
                head, _, rest = head.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*([0-9]+)\s*$", head)
                if length is None:
                    raise ConnectionError("no Content-Length")
                self._receive(conn, rest, int(length.group(1)))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.listener.close()

    def _receive(self, conn: socket.socket, first: bytes, wanted: int) -> None:
        hasher = hashlib.sha256(first)
        buffer = memoryview(bytearray(CHUNK))
        self.received = len(first)
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(self.store.open("xb")) if self.store else None
            if out is not None:
                out.write(first)
            while self.received < wanted:
                count = conn.recv_into(buffer, min(CHUNK, wanted - self.received))
                if not count:
                    break
                self.received += count
                if out is not None:
                    hasher.update(buffer[:count])
                    out.write(buffer[:count])
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
        self.sha256 = hasher.hexdigest()

    def join(self) -> None:
        """Wait for the request; BenchError if it failed."""
        self._thread.join(TRANSFER_TIMEOUT)
        if self.error is not None:
            raise BenchError(f"socket sink: {self.error}")


def sink_put(curl: str, source: Path, size: int, answer: Path, store: Path | None) -> SocketSink:
    """curl PUTs ``source`` to a fresh SocketSink; returns it, its request done and checked."""
    sink = SocketSink(store)
    headers = {"Content-Type": MIME_TYPE, "Content-Length": str(size)}
    url = f"http://{LOOPBACK}:{sink.port}/sink"
    sink.status, sink.seconds = curl_put(curl, url, source, headers, answer)
    sink.join()
    if sink.status != 200 or sink.received != size:
        raise BenchError(f"socket sink: status {sink.status}, {sink.received} of {size} bytes")
    return sink


def client_ceiling(curl: str, source: Path, size: int, workdir: Path) -> float:
    """MB/s of curl PUTting ``source`` to a server that discards it."""
    sink = sink_put(curl, source, size, workdir / "discard.answer", store=None)
    return mb_per_s(size, sink.seconds)


def download_sha256(url: str) -> tuple[int, str, int]:
    """GET ``url`` (loopback only), hashing it as it streams: (status, hex SHA-256, bytes)."""
    parts = urlsplit(url)
    assert parts.hostname == LOOPBACK
    assert parts.port is not None
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(LOOPBACK, parts.port, timeout=TRANSFER_TIMEOUT)
    hasher = hashlib.sha256()
    count = 0
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        while chunk := response.read(CHUNK):
            hasher.update(chunk)
            count += len(chunk)
    finally:
        conn.close()
    return response.status, hasher.hexdigest(), count


def sha256_speed(source: Path, limit: int = 64 * MiB, tries: int = 5) -> float:
    """MB/s of hashlib.sha256 on one core over the first ``limit`` bytes of ``source``.

    The best of a few tries: the speed when other load leaves the core alone.
    """
    with source.open("rb") as handle:
        data = handle.read(limit)
    view = memoryview(data)
    best = 0.0
    for _ in range(tries):
        hasher = hashlib.sha256()
        started = time.perf_counter()
        for offset in range(0, len(data), CHUNK):
            hasher.update(view[offset : offset + CHUNK])
        best = max(best, mb_per_s(len(data), time.perf_counter() - started))
    return best


# -- the bench -----------------------------------------------------------------------------


@dataclass
class Bench:
    """What every measurement needs: the server, the credentials, the files."""

    args: argparse.Namespace
    workdir: Path
    curl: str
    server: Server
    headers: Mapping[str, str]
    """The tenant's Authorization header."""
    source: Path
    source_sha256: str
    verified: bool = False
    """Whether the stored bytes were compared with the source yet (once per run)."""
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes per upload."""
        size: int = self.args.size
        return size

    @property
    def dd_dir(self) -> Path:
        """Where dd writes: next to the broker's data directory, on the same filesystem."""
        return self.workdir / "dd"


@dataclass(frozen=True)
class Sample:
    """One timed transfer, and the serving worker's memory when a server did it."""

    seconds: float
    size: int
    memory: Memory | None = None
    cpu: float = 0.0
    """CPU seconds of the process that did the work when no server did (dd)."""

    @property
    def mb_s(self) -> float:
        """Decimal MB per second."""
        return mb_per_s(self.size, self.seconds)

    @property
    def cpu_per_gib(self) -> float:
        """CPU seconds per GiB moved: the serving worker's (all threads), or dd's."""
        used = self.memory.cpu if self.memory is not None else self.cpu
        return used * GiB / self.size


def settle() -> None:
    """Flush every dirty page now, so the next timed step does not pay for earlier writes."""
    os.sync()


def _expect(condition: bool, what: str, reply: Reply) -> None:
    if not condition:
        raise BenchError(f"broker: {what}; it answered {reply.describe()}")


def declare(bench: Bench, name: str) -> dict[str, Any]:
    """``POST /v1/files`` for the source's size (and SHA-256 with ``--checksum``); checks the
    answer, returns it."""
    body: dict[str, Any] = {"name": name, "size": bench.size, "mime_type": MIME_TYPE}
    if bench.args.checksum:
        body["sha256"] = bench.source_sha256
    reply = call(bench.server.port, "POST", "/v1/files", headers=bench.headers, body=body)
    _expect(reply.status == 201, "POST /v1/files should answer 201", reply)
    created: dict[str, Any] = reply.body
    upload = created.get("upload") or {}
    _expect(created.get("status") == "pending", "the declared file should be pending", reply)
    _expect(created.get("size") == bench.size, "the declared size should be echoed", reply)
    _expect(upload.get("method") == "PUT", "expected a single PUT upload", reply)
    _expect(
        urlsplit(upload.get("url", "")).hostname == LOOPBACK,
        "the upload URL should be on 127.0.0.1",
        reply,
    )
    return created


def finish(bench: Bench, file_id: str) -> dict[str, Any]:
    """``POST /v1/files/{id}/complete``: must answer 200 and ``complete``."""
    reply = call(
        bench.server.port, "POST", f"/v1/files/{file_id}/complete", headers=bench.headers, body={}
    )
    _expect(reply.status == 200, "complete should answer 200", reply)
    done: dict[str, Any] = reply.body
    _expect(done.get("status") == "complete", "the file should be complete", reply)
    _expect(done.get("size") == bench.size, "the completed size should be the source's", reply)
    return done


def verify_download(bench: Bench, done: Mapping[str, Any]) -> None:
    """Download the stored object and compare it with the source (untimed, once per run)."""
    url = done.get("download_url")
    if not isinstance(url, str) or urlsplit(url).hostname != LOOPBACK:
        raise BenchError(f"broker: the complete file has no loopback download URL: {done}")
    status, digest, count = download_sha256(url)
    if status != 200 or count != bench.size or digest != bench.source_sha256:
        raise BenchError(
            f"broker: the download answered {status} with {count} bytes, SHA-256 {digest}; "
            f"the source has {bench.size} bytes, SHA-256 {bench.source_sha256}"
        )
    bench.verified = True
    bench.notes.append(f"download of {done.get('id')}: {count} bytes, SHA-256 matches the source")


def remove(bench: Bench, file_id: str) -> None:
    """Delete a stored file (and its bytes) so rounds do not fill the disk."""
    reply = call(bench.server.port, "DELETE", f"/v1/files/{file_id}", headers=bench.headers)
    _expect(reply.status == 200, f"DELETE /v1/files/{file_id} should answer 200", reply)


def measure_put(bench: Bench, round_index: int) -> Sample:
    """Declare, PUT (timed, RSS sampled), complete; verify the bytes once; delete."""
    created = declare(bench, f"put-{round_index}.bin")
    upload = created["upload"]
    answer = bench.workdir / "put.answer"
    settle()
    assert bench.server.proc is not None
    with RssSampler(worker_pids(bench.server.proc.pid)) as sampler:
        status, seconds = curl_put(
            bench.curl, upload["url"], bench.source, upload["headers"], answer
        )
    text = answer.read_text(errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = None
    stored = Reply(status, parsed, text)
    _expect(status == 200, "the PUT should answer 200", stored)
    # With a declared checksum the store hashes the body and says so; without, it does not
    # hash (the bytes are still checked: the download's SHA-256 is compared once per run).
    expected_sha256 = bench.source_sha256 if bench.args.checksum else None
    _expect(
        isinstance(parsed, dict)
        and parsed.get("size") == bench.size
        and parsed.get("sha256") == expected_sha256,
        "the PUT answer should carry the source's size (and its SHA-256 with --checksum)",
        stored,
    )
    done = finish(bench, created["id"])
    if not bench.verified:
        verify_download(bench, done)
    remove(bench, created["id"])
    return Sample(seconds, bench.size, sampler.busiest())


def measure_dd(bench: Bench, _round_index: int) -> Sample:
    """``dd bs=1M conv=fsync`` of the source to the broker's filesystem (timed); delete."""
    target = bench.dd_dir / "copy.bin"
    target.unlink(missing_ok=True)
    settle()
    command = ["dd", f"if={bench.source}", f"of={target}", "bs=1M", "conv=fsync", "status=none"]
    cpu_before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TRANSFER_TIMEOUT, check=False
    )
    seconds = time.perf_counter() - started
    cpu = children_cpu() - cpu_before
    if done.returncode != 0 or target.stat().st_size != bench.size:
        raise BenchError(f"dd failed with status {done.returncode}: {done.stderr.strip()}")
    target.unlink()
    return Sample(seconds, bench.size, cpu=cpu)


def measure_floor(bench: Bench, _round_index: int) -> Sample:
    """curl PUTs the source to a SocketSink that hashes, writes and fsyncs it (timed)."""
    store = bench.dd_dir / "floor.part"
    store.unlink(missing_ok=True)
    settle()
    cpu_before = own_cpu()
    sink = sink_put(bench.curl, bench.source, bench.size, bench.workdir / "floor.answer", store)
    cpu = own_cpu() - cpu_before
    if sink.sha256 != bench.source_sha256 or store.stat().st_size != bench.size:
        raise BenchError(
            f"socket floor: stored {store.stat().st_size} bytes, SHA-256 {sink.sha256}"
        )
    store.unlink()
    return Sample(sink.seconds, bench.size, cpu=cpu)


# -- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One way of getting the source's bytes onto the disk."""

    name: str
    title: str
    measure: Callable[[Bench, int], Sample]
    goal: float | None = None
    """Least acceptable MB/s as a fraction of dd's (None: a reference, not judged)."""
    rss_limit: int | None = None
    """Largest acceptable growth of the serving worker's RSS, in bytes (None: no limit)."""


BROKER_PUT = Target("put", "broker PUT upload.url", measure_put, goal=PUT_TARGET)
DD = Target("dd", "dd bs=1M conv=fsync", measure_dd)
FLOOR = Target("floor", "socket+sha256+fsync floor", measure_floor)
"""No framework: recv_into, SHA-256, write, fsync in one Python thread (see SocketSink)."""


# -- the proxied form upload (--form) -------------------------------------------------------


def curl_form(
    curl: str, url: str, source: Path, fields: Mapping[str, str], headers: Mapping[str, str],
    answer: Path,
) -> tuple[int, float]:  # fmt: skip
    """POST ``source`` as the form's last field ``file`` after ``fields``; (status, seconds).

    curl encodes the form and streams the file from disk itself; ``Expect:`` (empty) stops
    it from waiting for ``100 Continue`` first.
    """
    assert urlsplit(url).hostname == LOOPBACK
    command = [curl, "--silent", "--show-error", "--noproxy", "*", "--http1.1"]
    command += ["--header", "Expect:"]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    for name, value in fields.items():
        command += ["--form-string", f"{name}={value}"]
    command += ["--form", f"file=@{source};type={MIME_TYPE}"]
    return _timed_curl(command, answer, url, "POST")


def measure_form(bench: Bench, round_index: int) -> Sample:
    """POST the source as a form (timed, RSS sampled): 201 and complete; verify once; delete.

    The answer comes after the broker has streamed, hashed, written, fsynced and renamed
    the bytes and marked the file complete: the whole job, where ``put`` leaves ``complete``
    out of its timing.
    """
    answer = bench.workdir / "form.answer"
    fields = {
        "name": f"form-{round_index}.bin",
        "size": str(bench.size),
        "sha256": bench.source_sha256,
    }
    settle()
    assert bench.server.proc is not None
    with RssSampler(worker_pids(bench.server.proc.pid)) as sampler:
        status, seconds = curl_form(
            bench.curl, f"{bench.server.url}/v1/files", bench.source, fields, bench.headers,
            answer,
        )  # fmt: skip
    text = answer.read_text(errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = None
    stored = Reply(status, parsed, text)
    _expect(status == 201, "the form upload should answer 201", stored)
    _expect(
        isinstance(parsed, dict)
        and parsed.get("status") == "complete"
        and parsed.get("size") == bench.size
        and parsed.get("sha256") == bench.source_sha256,
        "the form upload should answer a complete file with the source's size and SHA-256",
        stored,
    )
    assert isinstance(parsed, dict)
    if not bench.verified:
        verify_download(bench, parsed)
    remove(bench, parsed["id"])
    return Sample(seconds, bench.size, sampler.busiest())


FORM = Target("form", "broker POST form upload", measure_form, goal=PUT_TARGET, rss_limit=64 * MiB)


def targets(args: argparse.Namespace) -> tuple[Target, ...]:
    """The targets of this run, baseline (dd) last."""
    if getattr(args, "form", False):
        return (BROKER_PUT, FORM, FLOOR, DD)
    return (BROKER_PUT, FLOOR, DD)


# -- the run -------------------------------------------------------------------------------


def check_disk(workdir: Path, size: int) -> None:
    """Enough free space for the source, one stored copy, dd's copy and a margin."""
    free = shutil.disk_usage(workdir).free
    needed = 3 * size + DISK_MARGIN
    if free < needed:
        raise BenchError(
            f"{workdir} has {human(free)} free; this run needs about {human(needed)} "
            "(source, the broker's copy, dd's copy, margin). Try a smaller --size."
        )


def write_source(path: Path, size: int) -> str:
    """``size`` random bytes (1 MiB of os.urandom at a time), fsynced; their hex SHA-256."""
    hasher = hashlib.sha256()
    with path.open("xb") as out:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            hasher.update(block)
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
    return hasher.hexdigest()


def write_buckets(path: Path) -> None:
    """A bucket policy allowing one PUT of up to 5 GiB (not split into parts)."""
    path.write_text(
        "[buckets.default]\n"
        f"max_size = {MAX_SIZE}\n"
        f"multipart_threshold = {MAX_SIZE}  # a single PUT whatever the size\n"
        "max_url_ttl = 3600\n",
        encoding="utf-8",
    )


def start_broker(workdir: Path, admin_key: str) -> Server:
    """The broker under gunicorn (not yet waited for); its data dir is ``workdir/broker/data``."""
    home = workdir / "broker"
    buckets = workdir / "buckets.toml"
    write_buckets(buckets)
    extra = {
        "BROKER_ADMIN_KEY": admin_key,
        "BROKER_BUCKETS": str(buckets),
        "BROKER_RATE_LIMIT": "off",  # the same load through every target: nothing refused
    }
    server = Server("broker", "wsgi:app", PROJECT_ROOT, home, server_env(home, extra))
    server.start()
    return server


def same_filesystem(*paths: Path) -> None:
    """BenchError unless every path is on one device (dd must write where the broker does)."""
    devices = {path: path.stat().st_dev for path in paths}
    if len(set(devices.values())) != 1:
        raise BenchError(f"not one filesystem: {devices}")


def filesystem_of(path: Path) -> str:
    """``ext4 on /dev/vda (mounted at /)`` or so, from /proc/mounts (best effort)."""
    best = ("?", "?", "?")
    resolved = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown filesystem"
    for line in mounts:
        device, mount_point, kind = line.split()[:3]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[1]):
            best = (device, mount_point, kind)
    return f"{best[2]} on {best[0]} (mounted at {best[1]})"


def measure(bench: Bench, chosen: Sequence[Target]) -> dict[str, list[Sample]]:
    """Every target once per round, order alternating between rounds."""
    results: dict[str, list[Sample]] = {t.name: [] for t in chosen}
    rounds: int = bench.args.rounds
    for round_index in range(rounds):
        order = chosen if round_index % 2 == 0 else tuple(reversed(chosen))
        for target in order:
            say(f"  round {round_index + 1}/{rounds}  {target.name:<5}", end="")
            sample = target.measure(bench, round_index)
            results[target.name].append(sample)
            line = (
                f"{sample.mb_s:9.1f} MB/s  ({sample.seconds:.2f} s, "
                f"{sample.cpu_per_gib:.2f} CPU s/GiB)"
            )
            if sample.memory is not None:
                m = sample.memory
                line += (
                    f"  worker {m.pid}: RSS {human(m.before)} -> {human(m.peak)} "
                    f"(+{human(m.growth)}, {m.samples} samples)"
                )
            say(line)
    return results


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how noisy a figure is over the rounds."""
    median = statistics.median(values)
    return (max(values) - min(values)) / median if median else 0.0


def report(results: Mapping[str, Sequence[Sample]], chosen: Sequence[Target], sha: float) -> None:
    """The per-target table, then each broker target's ratio to dd and its RSS growth."""
    say()
    say(
        f"{'target':<26}{'MB/s':>9}{'spread':>8}{'CPU s/GiB':>11}"
        f"{'RSS before':>12}{'peak':>11}{'growth':>11}"
    )
    for target in chosen:
        samples = results[target.name]
        rates = [s.mb_s for s in samples]
        cpu = statistics.median(s.cpu_per_gib for s in samples)
        memory = [s.memory for s in samples if s.memory is not None]
        line = f"{target.title:<26}{statistics.median(rates):9.1f}{spread(rates):8.0%}{cpu:11.2f}"
        if memory:
            before = statistics.median(m.before for m in memory)
            peak = statistics.median(m.peak for m in memory)
            growth = max(m.growth for m in memory)
            line += f"{human(before):>12}{human(peak):>11}{'+' + human(growth):>11}"
        say(line)
    say("(medians over the rounds; spread = (max - min) / median of MB/s; CPU s/GiB: the")
    say(" serving worker's CPU, all threads, or dd's; RSS of the worker that served each upload,")
    say(" sampled every 50 ms and by VmHWM; growth: the largest of any round)")
    say()
    baseline = results[DD.name]
    width = max(len(t.title) for t in chosen) + len(" RSS growth") + 1
    say(f"{'ratio of MB/s':<{width}}{'median':>7}{'target':>10}  verdict  rounds")
    for target in chosen:
        if target.goal is None:
            continue
        ratios = [s.mb_s / b.mb_s for s, b in zip(results[target.name], baseline, strict=True)]
        ratio = statistics.median(ratios)
        verdict = "PASS" if ratio >= target.goal else "FAIL"
        wanted = f">= {target.goal:.2f}"
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        say(f"{target.title + ' / dd':<{width}}{ratio:7.2f}{wanted:>10}  {verdict:<7}  {rounds}")
    floor = results.get(FLOOR.name)
    for target in chosen:
        if target.goal is None or floor is None:
            continue
        ratios = [s.mb_s / f.mb_s for s, f in zip(results[target.name], floor, strict=True)]
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        title = f"{target.title} / floor"
        say(f"{title:<{width}}{statistics.median(ratios):7.2f}{'-':>10}  {'-':<7}  {rounds}")
    for target in chosen:
        if target.rss_limit is None:
            continue
        growth = max(s.memory.growth for s in results[target.name] if s.memory is not None)
        verdict = "PASS" if growth <= target.rss_limit else "FAIL"
        limit = f"<= {human(target.rss_limit)}"
        say(f"{target.title + ' RSS growth':<{width}}{human(growth):>7}{limit:>10}  {verdict}")
    say(f"(SHA-256 alone runs at {sha:.0f} MB/s on one core here: the broker hashes every")
    say(" byte of a form upload, and of a PUT with --checksum; a plain PUT and dd do not.")
    say(" The floor shows what socket + hash + disk cost without any framework.)")


def run(args: argparse.Namespace, workdir: Path) -> None:
    """The whole benchmark inside ``workdir`` (temporary, outside the repo)."""
    curl = ensure_curl()
    chosen = targets(args)
    check_disk(workdir, args.size)
    admin_key = secrets.token_urlsafe(32)
    curl_version = subprocess.run(
        [curl, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n", 1)[0]
    say(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    say(f"client:  {' '.join(curl_version.split()[:2])} (--upload-file: streams from disk)")
    say(f"server:  gunicorn wsgi:app, {WORKERS} workers")
    say(
        "put:     "
        + (
            "SHA-256 declared (--checksum): the store hashes every byte"
            if args.checksum
            else "no checksum declared: the store does not hash (--checksum to declare one)"
        )
    )
    free = human(shutil.disk_usage(workdir).free)
    say(f"disk:    {workdir}: {filesystem_of(workdir)}, {free} free")
    server: Server | None = None
    try:
        server = start_broker(workdir, admin_key)
        source = workdir / "source.bin"
        say(f"writing {human(args.size)} of random bytes to {source} ...", end="")
        started = time.monotonic()
        digest = write_source(source, args.size)
        say(f" {time.monotonic() - started:.1f} s")
        server.wait_ready("/v1/health", lambda reply: reply.status == 200)
        say(f"broker:  {server.url} (127.0.0.1 only), data in {server.workdir / 'data'}")
        key = mint_key(server, admin_key)
        bench = Bench(
            args, workdir, curl, server, {"Authorization": f"Bearer {key}"}, source, digest
        )
        bench.dd_dir.mkdir()
        same_filesystem(source, server.workdir / "data", bench.dd_dir)
        settle()
        sha = sha256_speed(source)
        ceiling = client_ceiling(curl, source, args.size, workdir)
        say(f"client ceiling: curl PUT to a discarding socket {ceiling:.0f} MB/s; ", end="")
        say(f"SHA-256 on one core {sha:.0f} MB/s")
        say(f"measuring {args.rounds} round(s) of {human(args.size)}:")
        idle_before, total_before = machine_idle()
        results = measure(bench, chosen)
        idle_after, total_after = machine_idle()
        for note in bench.notes:
            say(f"checked: {note}")
        if total_after > total_before:
            idle = (idle_after - idle_before) / (total_after - total_before)
            say(f"machine: {idle:.0%} idle while measuring (other load slows the broker most)")
        report(results, chosen, sha)
    finally:
        if server is not None:
            server.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Throughput and worker memory of the embedded store's PUT of a large file, "
        "against dd writing the same bytes to the same disk, in one run.",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=GiB,
        help="bytes per upload: 1GiB, 256MiB, 512M, ... up to 5GiB (default 1GiB)",
    )
    parser.add_argument(
        "--rounds", type=positive, default=3, help="rounds over the targets (default 3)"
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temporary directory (source, server logs, data) and print its path",
    )
    parser.add_argument(
        "--checksum",
        action="store_true",
        help="declare the source's SHA-256, so the store must hash every byte of the PUT "
        "(default: a plain PUT, which the embedded store does not hash)",
    )
    parser.add_argument(
        "--form",
        action="store_true",
        help="also measure the proxied upload: POST /v1/files with multipart/form-data "
        "(the source as field 'file'), its worker RSS growth limited to 64 MiB",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when measured (whatever the ratio), 1 when broken."""
    return run_main(parse_args(argv), run, "server")


if __name__ == "__main__":
    sys.exit(main())
