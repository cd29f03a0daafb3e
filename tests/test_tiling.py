"""Tiled inference (stages/infer/tiling.py): the tiles cover the frame, cut boxes are dropped, and on the
hand-labelled frames the tiled detector finds more of the labelled people than the whole frame alone."""

from __future__ import annotations

import numpy as np

from pipeline.categories import category_id
from pipeline.detections import Detections
from stages.infer.tiling import merge_tiles, tile_rects

PERSON = category_id("person")


def people(boxes: list[list[float]], scores: list[float]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.full(len(boxes), PERSON))


def test_tiles_cover_the_frame_and_overlap_their_neighbours() -> None:
    rects = tile_rects(768, 576, 2, 0.25)
    assert len(rects) == 4 and len({(w, h) for _, _, w, h in rects}) == 1
    covered = np.zeros((576, 768), bool)
    for x, y, w, h in rects:
        covered[y : y + h, x : x + w] = True
    assert covered.all()
    (x0, _, w, _), (x1, _, _, _) = rects[0], rects[1]
    assert x0 + w - x1 >= 0.25 * w  # neighbours share at least a quarter of a tile
    assert tile_rects(768, 576, 1, 0.25) == []


def test_a_box_cut_by_an_inner_tile_border_is_dropped_and_the_rest_move_to_frame_coordinates() -> None:
    # the whole frame: someone, and a smaller box mostly inside theirs (a child in front): the detector's own
    # NMS kept both, and so does the merge
    full = people([[100, 100, 140, 200], [105, 150, 125, 200]], [0.8, 0.6])
    # the top-left tile (0, 0, 439, 330): one person inside, one cut by its right border (inner), one at the
    # frame's top edge (not an inner border: kept)
    top_left = people([[350, 150, 380, 230], [420, 100, 439, 200], [200, 0, 230, 60], [102, 104, 136, 196]], [0.7, 0.9, 0.6, 0.5])
    # the top-right tile starts at x 329: the top-left tile's first person again (where the tiles overlap, seen a
    # little differently: one object), and someone new
    top_right = people([[21, 150, 52, 231], [200, 100, 240, 200]], [0.65, 0.75])
    out = merge_tiles(full, [(top_left, (0, 0, 439, 330)), (top_right, (329, 0, 439, 330))], (768, 576))
    got = sorted(map(tuple, out.boxes.round().astype(int).tolist()))
    # the tile's box of the first person, inside the whole frame's and scored lower, is the same object: dropped
    assert got == sorted([(100, 100, 140, 200), (105, 150, 125, 200), (350, 150, 380, 230), (200, 0, 230, 60), (529, 100, 569, 200)])
    assert out.scores.max() == np.float32(0.8) and (out.class_ids == PERSON).all()


def test_tiles_find_more_of_the_hand_labelled_people() -> None:
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
    from tools.detection_ap import detect_frames, evaluate, load_labels

    frames = load_labels("tests/data/labels/detections.json")
    ap = {}
    for tiles in (1, 2):
        det = CocoSsdDetector(CocoSsdOptions(device="cpu", precision="fp32", backend="torch", score_threshold=0.05, max_detections=1000, tiles=tiles))
        ap[tiles] = evaluate(frames, detect_frames(det, frames), {"person"}).ap
    assert ap[2] > ap[1] + 0.03, ap  # 0.843 -> 0.900 when this was written
