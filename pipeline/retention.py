"""Retention: what a stage keeps of what it wrote, by age and by total size, oldest first.

Files in use are never removed; nothing is removed while no limit is set (the default keeps everything).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class RetentionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_age_days: float | None = Field(None, gt=0, description="Remove what is older than this; null: no age limit.")
    max_total_mb: float | None = Field(None, gt=0, description="Remove the oldest until the rest is at most this size; null: no size limit.")
    check_every_s: float = Field(60.0, gt=0, le=86_400, description="How often the limits are applied.")

    @property
    def active(self) -> bool:
        return self.max_age_days is not None or self.max_total_mb is not None


class Every:
    """When a periodic pass (a stage's retention, from its tick) is due: the first call, then every `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 0.0

    def due(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True


@dataclass
class Pruned:
    """What one pass removed, by the limit that removed it, and what is left."""

    by_age: list[Path]
    by_size: list[Path]
    kept_bytes: int


def prune_files(files: list[Path], in_use: set[Path], options: RetentionOptions, now: float) -> Pruned:
    """Removes, of `files`, those past the age limit, then the oldest until the rest fits the size limit."""
    entries = []
    for path in files:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        entries.append((st.st_mtime, st.st_size, path))
    entries.sort()  # oldest first
    by_age: list[Path] = []
    by_size: list[Path] = []
    kept: list[tuple[float, int, Path]] = []
    for mtime, size, path in entries:
        if path not in in_use and options.max_age_days is not None and now - mtime > options.max_age_days * 86_400:
            _remove(path, by_age)
        else:
            kept.append((mtime, size, path))
    total = sum(size for _, size, _ in kept)
    if options.max_total_mb is not None:
        limit = options.max_total_mb * 2**20
        for _, size, path in list(kept):
            if total <= limit:
                break
            if path in in_use:
                continue
            if _remove(path, by_size):
                total -= size
    return Pruned(by_age, by_size, total)


def _remove(path: Path, removed: list[Path]) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    removed.append(path)
    return True
