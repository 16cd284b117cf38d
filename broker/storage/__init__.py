"""Storage adapters behind one Protocol; ``build_storage`` picks one from the settings."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Clock, ConfigError, Settings
from .base import ObjectInfo, Storage
from .local import LocalStorage

__all__ = ["LocalStorage", "ObjectInfo", "Storage", "build_storage"]


def build_storage(settings: Settings, *, clock: Clock, base_url: Callable[[], str]) -> Storage:
    """The adapter the settings ask for (only ``local`` until the S3 adapter lands)."""
    if settings.storage == "local":
        return LocalStorage(
            settings.data_dir / "blobs", settings.secret_key, base_url=base_url, clock=clock
        )
    raise ConfigError(f"BROKER_STORAGE={settings.storage!r} is not supported by this version")
