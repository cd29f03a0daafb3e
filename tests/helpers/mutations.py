"""Structured mutations for fuzzing: a valid document with fields replaced, dropped or added at any depth."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def mutate(draw: st.DrawFn, obj: Any, values: st.SearchStrategy[Any]) -> Any:
    """`obj` with one field somewhere replaced by a drawn value, dropped, or a field added next to it."""
    if isinstance(obj, (dict, list)) and obj and draw(st.booleans()):
        keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
        key = draw(st.sampled_from(keys))
        out = dict(obj) if isinstance(obj, dict) else list(obj)
        action = draw(st.sampled_from(["replace", "deeper", "drop", "add"]))
        if action == "deeper":
            out[key] = mutate(draw, obj[key], values)
        elif action == "drop":
            del out[key]
        elif action == "add" and isinstance(out, dict):
            out[draw(st.text(max_size=8))] = draw(values)
        else:
            out[key] = draw(values)
        return out
    return draw(values)
