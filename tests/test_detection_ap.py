"""AP50 of tools.detection_ap on hand-made cases, and COCO-SSD's AP50 on the hand-labelled frames.

Hand-made boxes are 10x10 squares far apart unless a case needs overlap, so IoU is 1 on the box a
detection copies and 0 elsewhere; expected values are worked out in the comments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.categories import category_id
from pipeline.detections import Detections
from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
from tools.detection_ap import (
    FP,
    GROUPS,
    IGNORED,
    TP,
    GroundTruth,
    LabelledFrame,
    LabelMismatchError,
    Scored,
    average_precision,
    box_iou,
    detect_frames,
    evaluate,
    load_labels,
    match_frame,
)

LABELS = Path(__file__).resolve().parent / "data" / "labels" / "detections.json"


def box(i: int) -> list[float]:
    """The i-th 10x10 square, 100 px apart from the next: disjoint from every other."""
    return [100.0 * i, 0.0, 100.0 * i + 10, 10.0]


def gt(*boxes: list[float], ignore: list[bool] | None = None) -> GroundTruth:
    return GroundTruth(np.array(boxes).reshape(-1, 4), ignore if ignore is not None else [False] * len(boxes))


def dets(*pairs: tuple[list[float], float]) -> Scored:
    return Scored(np.array([b for b, _ in pairs]).reshape(-1, 4), [s for _, s in pairs])


# --- average_precision on hand-made cases -------------------------------------------------------------


def test_perfect_detections() -> None:
    # 3 GT over 2 frames, each found once: every point of the ranking has precision 1, recall ends at 1 -> AP 1.
    # Scores 0.9, 0.4, 0.6: two of three reach 0.5 -> recall@0.5 = 2/3, precision@0.5 = 1.
    r = average_precision(
        [dets((box(0), 0.9), (box(1), 0.4)), dets((box(0), 0.6))],
        [gt(box(0), box(1)), gt(box(0))],
    )
    assert r.ap == 1.0
    assert (r.n_gt, r.n_dets, r.n_ignored) == (3, 3, 0)
    assert (r.best_f1, r.best_f1_tp, r.best_f1_fp, r.best_f1_threshold) == (1.0, 3, 0, pytest.approx(0.4))
    assert r.recall_at_05 == pytest.approx(2 / 3) and r.precision_at_05 == 1.0


def test_false_positive_ranked_above_all_true_positives() -> None:
    # 2 GT. Ranking: FP 0.9, TP 0.8, TP 0.7.
    #   precision 0/1, 1/2, 2/3; recall 0, 1/2, 1.
    #   envelope (best precision at this recall or beyond): 2/3 at recall 1/2, 2/3 at recall 1.
    #   AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    # best F1 = 2TP / (TP + FP + n_gt): after 3 detections 4/5 = 0.8 (after 2: 2/4), threshold 0.7.
    r = average_precision([dets((box(5), 0.9), (box(0), 0.8), (box(1), 0.7))], [gt(box(0), box(1))])
    assert r.ap == pytest.approx(2 / 3)
    assert (r.best_f1, r.best_f1_tp, r.best_f1_fp) == (pytest.approx(0.8), 2, 1)
    assert r.best_f1_threshold == pytest.approx(0.7)


def test_false_positive_between_true_positives_uses_the_envelope() -> None:
    # 2 GT. Ranking: TP 0.9, FP 0.8, TP 0.7: precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    #   At recall 1/2 the envelope is max(1, 1/2, 2/3) = 1, at recall 1 it is 2/3.
    #   AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 (VOC2007's 11-point rule would give (6 * 1 + 5 * 2/3) / 11 = 0.8485).
    r = average_precision([dets((box(0), 0.9), (box(5), 0.8), (box(1), 0.7))], [gt(box(0), box(1))])
    assert r.ap == pytest.approx(5 / 6)


def test_false_positive_below_all_true_positives_costs_no_ap() -> None:
    # TP 0.9, TP 0.8, FP 0.7: recall 1 is reached at precision 1; the FP after it changes nothing. AP = 1.
    # It still counts at a threshold below its score: at 0.5, TP 2, FP 1 -> precision 2/3.
    r = average_precision([dets((box(0), 0.9), (box(1), 0.8), (box(5), 0.7))], [gt(box(0), box(1))])
    assert r.ap == 1.0
    assert r.at_threshold(0.5) == (2, 1) and r.precision_at_05 == pytest.approx(2 / 3)
    assert r.at_threshold(0.75) == (2, 0) and r.at_threshold(0.95) == (0, 0)


def test_ranking_is_across_frames() -> None:
    # Frame 1 holds an FP at 0.9, frame 2 the only GT found at 0.8: ranking FP, TP -> precision 0, 1/2 at
    # recall 0, 1 -> AP = 1 * 1/2 = 0.5. Swapping the scores puts the TP first -> AP 1.
    frames_gt = [gt(), gt(box(0))]
    assert average_precision([dets((box(3), 0.9)), dets((box(0), 0.8))], frames_gt).ap == pytest.approx(0.5)
    assert average_precision([dets((box(3), 0.8)), dets((box(0), 0.9))], frames_gt).ap == 1.0


def test_missed_ground_truth() -> None:
    # 4 GT, 3 found without FP: precision 1 up to recall 3/4, nothing beyond -> AP = 3/4 * 1 = 0.75.
    # best F1 = 2*3 / (3 + 0 + 4) = 6/7.
    r = average_precision(
        [dets((box(0), 0.9), (box(1), 0.8), (box(2), 0.7))], [gt(box(0), box(1), box(2), box(3))]
    )
    assert r.ap == pytest.approx(0.75)
    assert r.n_gt == 4 and r.best_f1 == pytest.approx(6 / 7) and r.recall_at_05 == pytest.approx(0.75)


def test_nothing_detected_and_nothing_to_detect() -> None:
    assert average_precision([dets()], [gt(box(0))]).ap == 0.0  # 1 GT, recall never leaves 0
    r = average_precision([dets((box(0), 0.9))], [gt()])  # AP is undefined without ground truth
    assert math.isnan(r.ap) and r.n_gt == 0 and r.at_threshold(0.5) == (0, 1)


def test_detections_on_ignored_boxes_are_not_counted() -> None:
    # GT: box 0 real, box 1 ignored. Detections: box 1 at 0.95 (ignored), box 0 at 0.6 (TP).
    # Counted ranking: TP only -> AP 1 (counted as an FP it would be FP, TP -> AP 1/2).
    # The ignored box is not in n_gt, and missing it costs nothing.
    g = gt(box(0), box(1), ignore=[False, True])
    r = average_precision([dets((box(1), 0.95), (box(0), 0.6))], [g])
    assert r.ap == 1.0
    assert (r.n_gt, r.n_dets, r.n_ignored) == (1, 1, 1)
    assert r.at_threshold(0.5) == (1, 0)
    assert average_precision([dets((box(0), 0.6))], [g]).ap == 1.0


def test_ignored_box_absorbs_several_detections_but_real_boxes_come_first() -> None:
    # Box 1 is ignored; two detections on it are both ignored (like VOC's "difficult").
    g = gt(box(0), box(1), ignore=[False, True])
    assert match_frame(dets((box(1), 0.9), (box(1), 0.8), (box(0), 0.7)), g).tolist() == [IGNORED, IGNORED, TP]
    # A real box and an ignored box in the same place (the occluded person behind a labelled one): the
    # first detection takes the real box, the second lands on the ignored one instead of being an FP.
    g = gt(box(0), box(0), ignore=[True, False])
    assert match_frame(dets((box(0), 0.9), (box(0), 0.8)), g).tolist() == [TP, IGNORED]
    # Overlap below 0.5 with the ignored box does not excuse a detection: IoU([0,0,10,10], [0,0,10,25]) = 0.4.
    assert match_frame(dets(([0, 0, 10, 25], 0.9)), gt(box(0), ignore=[True])).tolist() == [FP]


def test_duplicate_detection_is_a_false_positive() -> None:
    # 2 GT. Box 0 is detected twice (0.9 and 0.8), box 1 once (0.7): the second detection of box 0 finds
    # it taken -> FP. Ranking TP, FP, TP: AP = 5/6 as in the envelope case above; at 0.75: TP 1, FP 1.
    r = average_precision([dets((box(0), 0.9), (box(0), 0.8), (box(1), 0.7))], [gt(box(0), box(1))])
    assert r.ap == pytest.approx(5 / 6)
    assert r.at_threshold(0.75) == (1, 1) and r.n_dets == 3
    # The higher score takes the box whatever the input order.
    assert match_frame(dets((box(0), 0.3), (box(0), 0.6)), gt(box(0))).tolist() == [FP, TP]


def test_greedy_match_takes_the_unmatched_box_of_highest_iou() -> None:
    # GT a = [0,0,10,10] and b = [0,0,10,16] overlap.
    #   d1 (0.9) = [0,0,10,13]: IoU with a 100/130 = 0.77, with b 130/160 = 0.81 -> takes b (the higher).
    #   d2 (0.8) = [0,0,10,26]: IoU with a 100/260 = 0.38, with b 160/260 = 0.62 -> b is taken -> FP.
    #   d3 (0.7) = a: takes a -> TP.
    # Greedy, like VOC and COCO: an optimal assignment would have given d1 a and d2 b.
    a, b = [0, 0, 10, 10], [0, 0, 10, 16]
    d1, d2 = [0, 0, 10, 13], [0, 0, 10, 26]
    iou = box_iou(np.array([d1, d2], float), np.array([a, b], float))
    assert iou == pytest.approx(np.array([[100 / 130, 130 / 160], [100 / 260, 160 / 260]]))
    assert match_frame(dets((d1, 0.9), (d2, 0.8), (a, 0.7)), gt(a, b)).tolist() == [TP, FP, TP]


def test_iou_of_exactly_one_half_matches() -> None:
    # [0,0,10,20] vs [0,0,10,10]: intersection 100, union 200 -> IoU 0.5, which counts (>= 0.5).
    assert match_frame(dets(([0, 0, 10, 20], 0.9)), gt(box(0))).tolist() == [TP]


def test_vehicles_are_class_agnostic_and_per_class_ap_is_not() -> None:
    # A car labelled, a truck detected on it: a vehicle found (AP 1), but for class car an FP and a miss (AP 0).
    image = np.zeros((20, 20, 3), np.uint8)
    frame = LabelledFrame("x.mp4", 0, image, np.array([box(0)], np.float32), ("car",), np.array([False]))
    truck = Detections(np.array([box(0)]), np.array([0.9]), np.array([category_id("truck")]))
    assert evaluate([frame], [truck], GROUPS["vehicles"]).ap == 1.0
    car = evaluate([frame], [truck], {"car"})
    assert car.ap == 0.0 and car.at_threshold(0.5) == (0, 0)  # the truck is not a car detection at all
    assert evaluate([frame], [truck], GROUPS["people"]).n_gt == 0


# --- the labelled frames -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled() -> list[LabelledFrame]:
    return load_labels(LABELS)  # raises LabelMismatchError when a frame decodes differently


def test_labels_load_and_match_their_frames(labelled: list[LabelledFrame]) -> None:
    assert len(labelled) == 24
    assert sum(f.video == "vtest.avi" for f in labelled) == 14
    # The README's counts: 128 boxes not ignored, 25 ignored.
    assert sum(int((~f.ignore).sum()) for f in labelled) == 128
    assert sum(int(f.ignore.sum()) for f in labelled) == 25


def test_label_drift_is_caught(tmp_path: Path, samples: Path) -> None:
    data = json.loads(LABELS.read_text())
    entry = next(f for f in data["frames"] if f["video"] == "bikes.mp4" and f["frame_index"] == 10)
    assert len(load_labels(_write(tmp_path / "ok.json", entry), samples)) == 1
    entry = {**entry, "frame_index": 11}  # the boxes of frame 10 on frame 11
    with pytest.raises(LabelMismatchError, match="bikes.mp4 frame 11: the decoded frame's sha256 differs"):
        load_labels(_write(tmp_path / "drift.json", entry), samples)


def _write(path: Path, entry: dict) -> Path:
    path.write_text(json.dumps({"version": 1, "classes": [], "frames": [entry]}))
    return path


# COCO-SSD fp32 on the CPU, score_threshold 0.05, max_detections 1000, measured on 2026-11-30 on top of
# commit 78e731c (labels added; detector as of ef9cf79), same figures as `python bench/detect_ap.py`:
#   people   AP50 0.8432 (81 GT)      vehicles AP50 0.8373 (47 GT)
# bf16 gave 0.8445 / 0.8339. The floors below are those values minus 0.02.
PEOPLE_FLOOR = 0.8432 - 0.02
VEHICLES_FLOOR = 0.8373 - 0.02


def test_coco_ssd_ap50_does_not_regress(labelled: list[LabelledFrame]) -> None:
    detector = CocoSsdDetector(
        CocoSsdOptions(device="cpu", precision="fp32", score_threshold=0.05, max_detections=1000)
    )
    detections = detect_frames(detector, labelled)
    people = evaluate(labelled, detections, GROUPS["people"])
    vehicles = evaluate(labelled, detections, GROUPS["vehicles"])
    assert (people.n_gt, vehicles.n_gt) == (81, 47)
    assert people.ap >= PEOPLE_FLOOR, f"people AP50 {people.ap:.4f} fell below {PEOPLE_FLOOR:.4f}"
    assert vehicles.ap >= VEHICLES_FLOOR, f"vehicles AP50 {vehicles.ap:.4f} fell below {VEHICLES_FLOOR:.4f}"
