"""MTCNN face detection against faces boxed by hand in real clips (tests/data/faces/: carphone_pristine.mp4,
a real face in a car, and Megamind.avi, animated faces); see that folder's README for how they were made."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stages.infer.faces.mtcnn import Mtcnn, MtcnnOptions
from tests.helpers.procs import ROOT
from tools.detection_ap import read_frames

LABELS = json.loads((ROOT / "tests" / "data" / "faces" / "labels.json").read_text())
# Hand boxes run from the hairline to the chin, MTCNN's from the brows: the same face overlaps by 0.5-0.8.
MIN_IOU = 0.4


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def labelled_frames(video: str) -> dict[int, np.ndarray]:
    return read_frames(ROOT / "sample_videos" / video, [int(k) for k in LABELS["videos"][video]["frames"]])


def score(video: str, detector: Mtcnn) -> tuple[int, int, int]:
    """(true positives, false positives, misses); boxes matching a `difficult` label count as neither."""
    tp = fp = fn = 0
    frames = labelled_frames(video)
    results = detector.detect_numpy(list(frames.values()))
    for (i, _), (boxes, _scores, _marks) in zip(frames.items(), results):
        truth = LABELS["videos"][video]["frames"][str(i)]
        used: set[int] = set()
        for b in boxes.tolist():
            overlaps = [(iou(b, t["box"]), k) for k, t in enumerate(truth) if k not in used]
            best, k = max(overlaps, default=(0.0, -1))
            if best >= MIN_IOU:
                used.add(k)
                tp += 0 if truth[k]["difficult"] else 1
            else:
                fp += 1
        fn += sum(1 for k, t in enumerate(truth) if k not in used and not t["difficult"])
    return tp, fp, fn


@pytest.mark.parametrize("video", ["carphone_pristine.mp4", "Megamind.avi"])
def test_mtcnn_finds_the_hand_labelled_faces(video: str) -> None:
    tp, fp, fn = score(video, Mtcnn(MtcnnOptions(), torch.device("cpu")))
    recall, precision = tp / (tp + fn), tp / max(tp + fp, 1)
    print(f"{video}: {tp} found, {fp} false, {fn} missed; recall {recall:.2f}, precision {precision:.2f}")
    assert recall >= 0.9 and precision >= 0.9


def test_faces_in_the_head_region_of_person_detections() -> None:
    """`on: persons`: MTCNN runs only on the top of each person box (COCO-SSD's), and finds the face there."""
    import logging
    import time

    from pipeline.protocol import Frame
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
    from stages.infer.faces.runner import FACE, FaceRunner, FacesOptions

    ssd = CocoSsdDetector(CocoSsdOptions())
    runner = FaceRunner(FacesOptions(on="persons"), torch.device("cpu"), logging.getLogger("test"))
    video = "carphone_pristine.mp4"
    frames = labelled_frames(video)
    batch = [Frame("car", i, i / 30, time.time(), 176, 144, image=image) for i, image in frames.items()]
    for f, det in zip(batch, ssd.detect(batch)):
        f.detections = det
    runner.apply(batch)
    found = 0
    for f in batch:
        faces = f.detections.boxes[f.detections.class_ids == FACE]
        truth = LABELS["videos"][video]["frames"][str(f.seq)][0]["box"]
        found += any(iou(b, truth) >= MIN_IOU for b in faces.tolist())
        assert len(faces) <= 1
    assert found >= 0.9 * len(batch), (found, len(batch))
