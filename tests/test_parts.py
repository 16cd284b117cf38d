"""The multipart plan: part sizes and numbering within S3's limits."""

from __future__ import annotations

from broker.config import MiB
from broker.parts import MAX_PARTS, MIN_PART_SIZE, choose_part_size, plan

PART = 5 * MiB


def test_parts_cover_the_file_within_s3_limits() -> None:
    for size in (1, PART - 1, PART, PART + 1, 3 * PART - 7, 5 * 1024**4):
        part_size = choose_part_size(size, PART)
        parts = plan(size, part_size)
        assert MIN_PART_SIZE <= part_size <= 5 * 1024**3
        assert len(parts) <= MAX_PARTS
        assert [p.number for p in parts] == list(range(1, len(parts) + 1))
        assert sum(p.size for p in parts) == size
        assert all(p.size == part_size for p in parts[:-1])
        assert 0 < parts[-1].size <= part_size
        assert all(p.offset == (p.number - 1) * part_size for p in parts)
    # 5 TiB needs more than 16 MiB parts: the size grows to a whole MiB that fits 10,000.
    assert choose_part_size(5 * 1024**4, 16 * MiB) == 525 * MiB
