"""How a multipart upload is cut into parts, within S3's limits (which the embedded store shares).

S3: every part but the last is 5 MiB to 5 GiB, at most 10,000 parts, objects up to 5 TiB,
a single PUT up to 5 GiB. The part size is the bucket's preferred one, raised (to a whole
MiB) when the file would otherwise need more than 10,000 parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import GiB, MiB, TiB
from .models import StoredPart

MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * GiB
MAX_OBJECT_SIZE = 5 * TiB


@dataclass(frozen=True)
class PlannedPart:
    """One part of the plan: its number (from 1), where it starts and how long it is."""

    number: int
    offset: int
    size: int


def choose_part_size(size: int, preferred: int) -> int:
    """The part size for a file of ``size`` bytes: ``preferred``, or more if needed."""
    needed = -(-size // MAX_PARTS)  # ceil
    needed = -(-needed // MiB) * MiB  # to a whole MiB
    return min(MAX_PART_SIZE, max(MIN_PART_SIZE, preferred, needed))


def plan(size: int, part_size: int) -> list[PlannedPart]:
    """Every part of a ``size``-byte file cut at ``part_size`` (the last takes the rest)."""
    count = max(1, -(-size // part_size))
    return [
        PlannedPart(number=n + 1, offset=n * part_size, size=min(part_size, size - n * part_size))
        for n in range(count)
    ]


def received(planned: list[PlannedPart], stored: list[StoredPart]) -> list[StoredPart]:
    """The stored parts that count as received: planned, and of their planned length.

    A stored part of another length (a peer that does not enforce the signed length, or
    keeps a cut-off body) is not received; sending that part again replaces it.
    """
    sizes = {p.number: p.size for p in planned}
    return [part for part in stored if sizes.get(part.part_number) == part.size]


def missing(planned: list[PlannedPart], have: list[StoredPart]) -> list[int]:
    """The numbers of the planned parts not among ``have``."""
    numbers = {part.part_number for part in have}
    return [p.number for p in planned if p.number not in numbers]


def numbers_text(numbers: list[int]) -> str:
    """``1, 2, 5`` (at most ten, then an ellipsis) for messages."""
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (", …" if len(numbers) > 10 else "")
