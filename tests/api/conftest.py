"""The HTTP API runs on every storage backend: here ``harness`` (and so ``client``) is an
app on each of the embedded store, S3 on moto and S3 on LocalStack. A test about the
embedded store itself (its blob URLs) narrows that with ``@on_backends("local")`` and says
why; one that needs a differently configured app passes ``storage_backend`` on to
``make_harness``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import Harness, StorageBackend


@pytest.fixture
def harness(make_harness: Callable[..., Harness], storage_backend: StorageBackend) -> Harness:
    return make_harness(storage_backend)
