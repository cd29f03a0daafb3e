"""The pipeline's object categories: every detector maps its own labels onto these ids.

Ids are stable (they are written into JSONL results); new categories are appended.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    "traffic_sign",
)

_IDS = {name: i for i, name in enumerate(CATEGORIES)}

VEHICLES: tuple[str, ...] = ("bicycle", "car", "motorcycle", "bus", "truck")

# Groups of categories counted as one (e.g. detection AP per group: a car detected as a truck is still a vehicle found).
GROUPS: dict[str, tuple[str, ...]] = {"people": ("person",), "vehicles": VEHICLES}

# Labels a detector gives one object from frame to frame (a van is a car, then a truck): one group may continue
# another's track. Vehicles that do not look alike stay apart (a bicycle never becomes a bus).
LOOKALIKES: tuple[tuple[str, ...], ...] = (("car", "bus", "truck"), ("bicycle", "motorcycle"))


def _unknown(names: list[str]) -> ValueError:
    return ValueError(f"unknown {'category' if len(names) == 1 else 'categories'} {', '.join(map(repr, names))}; known: {', '.join(CATEGORIES)}")


def category_id(name: str) -> int:
    try:
        return _IDS[name]
    except KeyError:
        raise _unknown([name]) from None


def check_categories(names: Iterable[str]) -> None:
    """Raises ValueError naming every unknown category name at once (and the known ones): the check of every option
    that lists classes."""
    unknown = [n for n in names if n not in _IDS]
    if unknown:
        raise _unknown(unknown)


def category_name(cid: int) -> str:
    return CATEGORIES[cid] if 0 <= cid < len(CATEGORIES) else f"class_{cid}"
