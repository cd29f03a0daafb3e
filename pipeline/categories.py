"""The pipeline's object categories: every detector maps its own labels onto these ids.

Ids are stable (they are written into JSONL results); new categories are appended.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "motion",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "bus",
    "truck",
    "traffic_light",
    "stop_sign",
    "face",
)

_IDS = {name: i for i, name in enumerate(CATEGORIES)}


def category_id(name: str) -> int:
    try:
        return _IDS[name]
    except KeyError:
        raise ValueError(f"unknown category {name!r}; known: {', '.join(CATEGORIES)}") from None


def category_name(cid: int) -> str:
    return CATEGORIES[cid] if 0 <= cid < len(CATEGORIES) else f"class_{cid}"
