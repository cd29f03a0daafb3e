"""The traffic-sign classes the sign classifier tells apart, in the order of its outputs (the codes of `sign.class`).

European (Vienna convention) shapes and colours, plus the US `yield`; each is drawn from its geometry by
tools/signs/render.py, never from copied artwork.
"""

from __future__ import annotations

SPEED_LIMITS = (20, 30, 40, 50, 60, 70, 80, 100, 120)

SIGN_CLASSES: tuple[str, ...] = (
    "stop",
    "give_way",
    "yield",
    "no_entry",
    *(f"speed_limit_{v}" for v in SPEED_LIMITS),
    "no_parking",
    "no_stopping",
    "pedestrian_crossing",
    "one_way",
    "roundabout",
    "keep_right",
    "danger",
)

# Shape families, for evaluation on real signs whose exact symbol is too small to read.
FAMILIES: dict[str, str] = {
    "stop": "octagon",
    "give_way": "inverted_triangle",
    "yield": "inverted_triangle",
    "no_entry": "red_disk",
    **{f"speed_limit_{v}": "red_ring" for v in SPEED_LIMITS},
    "no_parking": "blue_disk_red_ring",
    "no_stopping": "blue_disk_red_ring",
    "pedestrian_crossing": "blue_square",
    "one_way": "blue_square",
    "roundabout": "blue_disk",
    "keep_right": "blue_disk",
    "danger": "warning_triangle",
}
