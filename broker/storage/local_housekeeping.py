"""The embedded store's housekeeping: what it holds (for the reaper) and its own scratch.

Functions over the layout (``disk.py``); ``LocalStorage`` offers them as its
``InventoryStorage`` and ``ScratchStorage`` abilities. Each runs inside ``disk_errors``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .base import OpenUpload, StoredObject
from .disk import UPLOAD_ID, UPLOAD_META, Disk, disk_errors, locked


def iter_uploads(disk: Disk) -> Iterator[OpenUpload]:
    """Every open upload: each ``uploads/<id>/`` whose ``upload.json`` is in place."""
    with disk_errors("list the open uploads"):
        for entry in _scan(disk.uploads):
            if not (UPLOAD_ID.match(entry.name) and entry.is_dir(follow_symlinks=False)):
                continue
            meta = disk.read_pointer(Path(entry.path) / UPLOAD_META)
            if meta is None:  # being opened, or a crash's leftover: sweep_scratch's business
                continue
            yield OpenUpload(
                key=meta["key"], upload_id=entry.name, started_at=float(meta["started_at"])
            )


def iter_objects(disk: Disk) -> Iterator[StoredObject]:
    """Every visible object: each pointer under ``objects/`` (staged ones excluded)."""
    with disk_errors("list the objects"):
        for shard in _scan(disk.objects):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in _scan(Path(shard.path)):
                if entry.name.startswith(".") or not entry.name.endswith(".json"):
                    continue
                pointer = disk.read_pointer(Path(entry.path))
                if pointer is None:  # deleted since the directory was read
                    continue
                yield StoredObject(
                    key=pointer["key"], size=pointer["size"], modified_at=pointer["stored_at"]
                )


def sweep_scratch(disk: Disk, older_than: float) -> int:
    """Remove leftovers of crashes and lost races last touched before ``older_than``:
    ``tmp/*.part`` (a PUT that never finished; a live one's mtime moves with every
    chunk), unreferenced ``.blob`` and staged ``.*.json`` files in the shards, and
    upload directories that have no ``upload.json``."""
    removed = 0
    with disk_errors("sweep its scratch"):
        for entry in _scan(disk.tmp):
            if entry.name.endswith(".part") and _older(entry, older_than):
                removed += _unlink(Path(entry.path))
        for shard in _scan(disk.objects):
            if shard.is_dir(follow_symlinks=False):
                removed += _sweep_shard(disk, Path(shard.path), older_than)
        for entry in _scan(disk.uploads):
            if entry.is_dir(follow_symlinks=False) and _older(entry, older_than):
                removed += _sweep_upload_dir(Path(entry.path))
    return removed


def _sweep_shard(disk: Disk, shard: Path, older_than: float) -> int:
    """Remove a shard's unreferenced blobs and staged pointers, under its lock.

    Every way to leave a blob behind (a crash between the blob's rename and the pointer
    swap, after the swap but before the old blob's unlink, or inside ``delete``) leaves
    a stem with no pointer or with two blobs, so only such shards are locked, and only
    under the lock, where no publish is half done, is a blob judged unreferenced.
    """
    stems: dict[str, list[str]] = {}
    pointers: set[str] = set()
    staged = False
    for entry in _scan(shard):
        name = entry.name
        if name.endswith(".blob"):
            stems.setdefault(name.split(".", 1)[0], []).append(name)
        elif name.startswith("."):
            staged = True
        elif name.endswith(".json"):
            pointers.add(name.removesuffix(".json"))
    if not staged and all(len(b) == 1 and s in pointers for s, b in stems.items()):
        return 0  # the common case: one pointer, one blob per stem; no lock taken
    removed = 0
    with locked(shard):
        for entry in _scan(shard):
            name = entry.name
            if not _older(entry, older_than):
                continue
            if name.startswith(".") and name.endswith(".json"):
                removed += _unlink(Path(entry.path))  # a publish that died mid-way
            elif name.endswith(".blob"):
                pointer = disk.read_pointer(shard / f"{name.split('.', 1)[0]}.json")
                if pointer is None or pointer["blob"] != name:
                    removed += _unlink(Path(entry.path))
    return removed


def _sweep_upload_dir(directory: Path) -> int:
    """Remove an upload directory left without ``upload.json`` (a crash while opening
    or aborting it); an open upload is not scratch."""
    if not UPLOAD_ID.match(directory.name) or (directory / UPLOAD_META).exists():
        return 0
    try:
        with locked(directory):
            if (directory / UPLOAD_META).exists():
                return 0
            shutil.rmtree(directory, ignore_errors=True)
    except FileNotFoundError:  # removed meanwhile (an abort, another sweeper)
        return 0
    return 1


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of a directory (none when it is gone)."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _older(entry: os.DirEntry[str], than: float) -> bool:
    """Whether an entry was last modified before ``than`` (False once it is gone)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime < than
    except FileNotFoundError:
        return False


def _unlink(path: Path) -> int:
    """Remove a file; 1 if this call removed it, 0 if it was gone already."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1
