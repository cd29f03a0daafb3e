"""Finds the Stage class of a kind: `decode` is `stages.decode`, `pkg.mod:Class` is a user's own."""

from __future__ import annotations

import importlib
import inspect
import re

from pipeline.stage import Stage


def resolve_stage(kind: str) -> type[Stage]:
    if ":" in kind:
        module_name, _, class_name = kind.partition(":")
    else:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
            raise ValueError(f"stage kind {kind!r} is not a module name or module:Class")
        module_name, class_name = f"stages.{kind}", ""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ValueError(f"unknown stage kind {kind!r} (no module {module_name})") from None
        raise
    if class_name:
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Stage)):
            raise ValueError(f"stage kind {kind!r}: {class_name} is not a Stage class in {module_name}")
        return cls
    found = [c for c in vars(module).values() if inspect.isclass(c) and issubclass(c, Stage) and c.kind == kind]
    if len(found) != 1:
        raise ValueError(f"stage kind {kind!r}: {module_name} must define exactly one Stage class, found {len(found)}")
    return found[0]
