"""Storage: the core Protocol, optional abilities, two adapters; ``build_storage`` picks one."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Clock, ConfigError, Settings
from .base import (
    Expected,
    GetGrant,
    InventoryStorage,
    LocatedBlob,
    MultipartStorage,
    ObjectInfo,
    PutGrant,
    ScratchStorage,
    SelfServedStorage,
    Storage,
    StreamingStorage,
)
from .guard import StorageGuard, Timeouts
from .local import LocalStorage
from .s3 import S3Storage

__all__ = [
    "Expected",
    "GetGrant",
    "InventoryStorage",
    "LocalStorage",
    "LocatedBlob",
    "MultipartStorage",
    "ObjectInfo",
    "PutGrant",
    "S3Storage",
    "ScratchStorage",
    "SelfServedStorage",
    "Storage",
    "StorageGuard",
    "StreamingStorage",
    "Timeouts",
    "build_storage",
]


def build_storage(
    settings: Settings, *, clock: Clock, blob_url: Callable[[str], str]
) -> LocalStorage | S3Storage:
    """The adapter the settings ask for: the embedded blob store or S3.

    ``blob_url`` turns a token into the absolute URL where the broker serves it (for a
    ``SelfServedStorage``; S3 signs its own URLs).
    """
    if settings.storage == "local":
        return LocalStorage(
            settings.data_dir / "blobs", settings.secret_key, blob_url=blob_url, clock=clock
        )
    if settings.storage == "s3" and settings.s3_bucket:
        return S3Storage(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            clock=clock,
            timeout=settings.storage_timeout,
            guard=StorageGuard(
                limit=settings.storage_concurrency,
                threshold=settings.storage_breaker_failures,
                cool_down=settings.storage_breaker_cooldown,
            ),
            conditional_writes=settings.s3_conditional_writes,
        )
    raise ConfigError(f"BROKER_STORAGE={settings.storage!r} needs its settings")
