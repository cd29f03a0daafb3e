"""Reading values off the wire: every field of a received message is checked for its type and range here,
so that a forged or corrupt message is a `ValueError` naming the field, never a crash deeper in a stage
(inf where an int belongs, a string where a map belongs, a shape that overflows, a dtype that numpy
would parse as code).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # stream and stage ids: safe in file names and labels
MAX_TEXT = 4096  # characters of a free text field (a message, a redacted source)
MAX_ITEMS = 100_000  # entries of a list or map in a header


def integer(v: Any, what: str, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be an integer, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{what} {v} is out of range [{lo}, {hi}]")
    return v


def number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what} must be a number, not {type(v).__name__}")
    out = float(v)
    if not math.isfinite(out):
        raise ValueError(f"{what} must be finite, not {out}")
    return out


def text(v: Any, what: str, max_len: int = MAX_TEXT) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a string, not {type(v).__name__}")
    if len(v) > max_len:
        raise ValueError(f"{what} is {len(v)} characters, at most {max_len}")
    return v


def ident(v: Any, what: str) -> str:
    """A stream or stage id, checked like the config's: it becomes file names and metric labels."""
    s = text(v, what, 64)
    if not ID_PATTERN.fullmatch(s):
        raise ValueError(f"{what} {s[:80]!r} is not an id (1-64 letters, digits, '_', '.' or '-', starting with a letter or digit)")
    return s


def flag(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{what} must be true or false, not {type(v).__name__}")
    return v


def mapping(v: Any, what: str, max_items: int = MAX_ITEMS) -> dict[Any, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"{what} must be a map, not {type(v).__name__}")
    if len(v) > max_items:
        raise ValueError(f"{what} has {len(v)} entries, at most {max_items}")
    return v


def sequence(v: Any, what: str, max_items: int = MAX_ITEMS) -> list[Any]:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{what} must be a list, not {type(v).__name__}")
    if len(v) > max_items:
        raise ValueError(f"{what} has {len(v)} entries, at most {max_items}")
    return list(v)


def scalar(v: Any, what: str) -> Any:
    """A plain JSON-like value (details of an alert): str, finite number, bool or None, or lists/maps of them."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return integer(v, what)
    if isinstance(v, float):
        return number(v, what)
    if isinstance(v, str):
        return text(v, what)
    if isinstance(v, (list, tuple)):
        return [scalar(x, f"{what}[{i}]") for i, x in enumerate(sequence(v, what, 1000))]
    if isinstance(v, dict):
        return {text(k, f"{what} key", 256): scalar(x, f"{what}.{k}") for k, x in mapping(v, what, 1000).items()}
    raise ValueError(f"{what} must be a plain value, not {type(v).__name__}")


_READERS: dict[str, Callable[[Any, str], Any]] = {"int": integer, "float": number, "str": text, "bool": flag}


def typed(v: Any, annotation: str, what: str) -> Any:
    """A value of a dataclass field annotated `int`, `float`, `str`, `bool` or `X | None` (as a string)."""
    parts = [p.strip() for p in annotation.split("|")]
    if "None" in parts and v is None:
        return None
    base = next(p for p in parts if p != "None")
    return _READERS[base](v, what)
