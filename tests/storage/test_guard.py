"""The storage guard (issue #9): time-outs derived from one bound, the bulkhead, the
circuit breaker, and the settings that configure them."""

from __future__ import annotations

import threading
import time

import pytest

from broker.config import Settings
from broker.errors import StorageUnavailable
from broker.storage import S3Storage, StorageGuard, Timeouts, build_storage


class Ticks:
    """A monotonic clock a test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("bound", [1, 2, 3, 5, 6, 10, 30, 60])
def test_timeouts_stay_within_the_bound(bound: float) -> None:
    timeouts = Timeouts.within(bound)
    assert timeouts.worst_case <= bound + 1e-9
    assert timeouts.connect <= 2.0
    assert timeouts.read > 0
    assert timeouts.attempts == (2 if bound >= 6 else 1)
    probe = Timeouts.probe(bound)
    assert probe.attempts == 1
    assert probe.worst_case <= min(3.0, bound / 2) + 1e-9


def test_default_bound_is_ten_seconds_two_attempts() -> None:
    assert Timeouts.within(10) == Timeouts(connect=2.0, read=2.5, attempts=2)


def opened(guard: StorageGuard) -> bool:
    """Whether the breaker is open (a call, so mypy does not narrow the property)."""
    return guard.is_open


def _fail(guard: StorageGuard) -> None:
    with guard.call("test") as failed:
        failed()


def _succeed(guard: StorageGuard) -> None:
    with guard.call("test"):
        pass


def test_breaker_opens_after_consecutive_failures_and_fails_fast() -> None:
    ticks = Ticks()
    guard = StorageGuard(limit=4, threshold=3, cool_down=5.0, clock=ticks)
    _fail(guard)
    _fail(guard)
    _succeed(guard)  # a success resets the count
    _fail(guard)
    _fail(guard)
    assert not opened(guard)
    _fail(guard)
    assert opened(guard)
    reached = []
    with pytest.raises(StorageUnavailable) as refused, guard.call("head"):
        reached.append(True)
    assert reached == []  # storage was never asked
    assert refused.value.status == 503
    assert refused.value.headers["Retry-After"] == "5"


def test_after_the_cool_down_one_probe_goes_through() -> None:
    ticks = Ticks()
    guard = StorageGuard(limit=4, threshold=1, cool_down=5.0, clock=ticks)
    _fail(guard)
    ticks.now += 5.0
    with guard.call("probe") as failed:
        # While the probe is out, every other call still fails fast.
        with pytest.raises(StorageUnavailable):
            _succeed(guard)
        failed()
    assert opened(guard)  # the probe failed: open for another cool-down
    with pytest.raises(StorageUnavailable):
        _succeed(guard)
    ticks.now += 5.0
    _succeed(guard)  # the probe succeeds: closed
    assert not opened(guard)
    _succeed(guard)


def test_an_error_storage_answered_is_not_a_failure() -> None:
    guard = StorageGuard(limit=4, threshold=1, cool_down=5.0)
    with pytest.raises(KeyError), guard.call("head"):
        raise KeyError("a 404, a refused part: storage answered")
    assert not opened(guard)


def test_bulkhead_full_answers_503_quickly_and_does_not_open_the_breaker() -> None:
    guard = StorageGuard(limit=2, threshold=1, cool_down=5.0)
    inside = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with guard.call("slow"):
            inside.wait()
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
    inside.wait()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as refused:
        _succeed(guard)
    assert time.monotonic() - started < 1.0
    assert "Too many" in refused.value.message
    release.set()
    for holder in holders:
        holder.join()
    assert not opened(guard)
    _succeed(guard)


def test_settings_and_build_storage(tmp_path: object) -> None:
    env = {"BROKER_DATA_DIR": str(tmp_path), "BROKER_STORAGE": "s3", "BROKER_S3_BUCKET": "b"}
    defaults = Settings.from_env(env)
    assert defaults.storage_timeout == 10.0
    assert defaults.storage_concurrency == 6  # BROKER_THREADS (8) - 2
    assert defaults.storage_breaker_failures == 5
    assert defaults.storage_breaker_cooldown == 5.0
    assert Settings.from_env({**env, "BROKER_THREADS": "2"}).storage_concurrency == 1
    tuned = Settings.from_env(
        {
            **env,
            "BROKER_STORAGE_TIMEOUT": "2.5",
            "BROKER_STORAGE_CONCURRENCY": "3",
            "BROKER_STORAGE_BREAKER_FAILURES": "2",
            "BROKER_STORAGE_BREAKER_COOLDOWN": "0.5",
        }
    )
    storage = build_storage(tuned, clock=time.time, blob_url=str)
    assert isinstance(storage, S3Storage)
    assert storage.connection.timeouts == Timeouts.within(2.5)
    guard = storage.connection.guard
    assert (guard.limit, guard.threshold, guard.cool_down) == (3, 2, 0.5)
    for name, value in [
        ("BROKER_STORAGE_TIMEOUT", "0.5"),
        ("BROKER_STORAGE_TIMEOUT", "soon"),
        ("BROKER_STORAGE_CONCURRENCY", "0"),
        ("BROKER_STORAGE_BREAKER_COOLDOWN", "nan"),
    ]:
        with pytest.raises(Exception, match=name):
            Settings.from_env({**env, name: value})


def test_calls_and_failures_are_counted_by_action() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "calls": sample("broker_storage_call_duration_seconds_count", action="metered"),
        "unavailable": sample(
            "broker_storage_errors_total", action="metered", reason="unavailable"
        ),
        "refused": sample("broker_storage_errors_total", action="metered", reason="refused"),
    }
    guard = StorageGuard(limit=4, threshold=1, cool_down=5.0, clock=Ticks())
    with guard.call("metered"):
        pass
    with guard.call("metered") as failed:
        failed()
    with pytest.raises(StorageUnavailable), guard.call("metered"):
        pass  # the breaker is open: refused, storage not asked
    assert sample("broker_storage_call_duration_seconds_count", action="metered") == (
        before["calls"] + 2
    )
    assert sample("broker_storage_errors_total", action="metered", reason="unavailable") == (
        before["unavailable"] + 1
    )
    assert sample("broker_storage_errors_total", action="metered", reason="refused") == (
        before["refused"] + 1
    )
