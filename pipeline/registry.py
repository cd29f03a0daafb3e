"""The stage kinds: `decode` is the Stage class in `stages.decode` (a module or package of `stages`), `pkg.mod:Class` is a user's own."""

from __future__ import annotations

from pipeline.plugins import Registry
from pipeline.stage import Stage

STAGE_KINDS: Registry[type[Stage]] = Registry("stage kind", Stage, "stages", key="kind", entry="stage")


def resolve_stage(kind: str) -> type[Stage]:
    return STAGE_KINDS.get(kind)
