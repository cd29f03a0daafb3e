"""Face recognition against a watchlist (stages.infer.faces.encoder / watchlist) on real clips.

Faces are found here with dlib's own HOG detector (`dlib.get_frontal_face_detector()`), wrapped into the
`detect_faces(image) -> xyxy boxes` function the watchlist takes; the pipeline plugs its MTCNN in the same way.
HOG only finds faces of about 80 px and more: carphone's face is about 53 px wide at the clip's 176x144, where HOG
finds it in 0 of 120 frames; on frames upscaled 2x it finds it in 118 of 120 (the last two, where the man turns away,
are missed). The encodings are the same whether computed on the native or the upscaled frame (dlib warps each face
to a 150x150 chip), so faces are encoded on the native frame. vtest's pedestrians have faces of 9-13 px: HOG finds
some only in the head region (top 40 %) of COCO-SSD person boxes upscaled 8x.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from stages.infer.faces.watchlist import DEFAULT_CACHE_NAME, Watchlist, WatchlistOptions

SAMPLES = Path(__file__).resolve().parent.parent / "sample_videos"



def _not_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


_missing = [m for m in ("dlib", "face_recognition_models") if _not_installed(m)]
needs_dlib = pytest.mark.skipif(
    bool(_missing),
    reason=f"{' and '.join(_missing)} not installed (pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0)",
)


def read_frames(name: str, indices: list[int] | None = None) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(SAMPLES / name))
    frames: dict[int, np.ndarray] = {}
    i = 0
    last = max(indices) if indices else None
    while last is None or i <= last:
        ok, frame = cap.read()
        if not ok:
            break
        if indices is None or i in indices:
            frames[i] = frame
        i += 1
    cap.release()
    return frames


def hog_detector(scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """dlib's HOG face detector run on the image upscaled `scale` times; boxes (x1, y1, x2, y2) in the input's pixels."""
    import dlib

    hog = dlib.get_frontal_face_detector()

    def detect_faces(image_bgr: np.ndarray) -> np.ndarray:
        big = cv2.resize(image_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale != 1 else image_bgr
        rects = hog(cv2.cvtColor(big, cv2.COLOR_BGR2RGB), 0)
        boxes = [[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects]
        return np.asarray(boxes, np.float32).reshape(-1, 4) / scale

    return detect_faces


class CountingEncoder:
    """Wraps a FaceEncoder and counts the faces it is asked to encode."""

    def __init__(self, encoder: object) -> None:
        self.inner = encoder
        self.fingerprint = encoder.fingerprint  # type: ignore[attr-defined]
        self.faces = 0

    def encode(self, image: np.ndarray, boxes: np.ndarray, num_jitters: int | None = None) -> np.ndarray:
        self.faces += len(boxes)
        return self.inner.encode(image, boxes, num_jitters=num_jitters)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    from stages.infer.faces.encoder import FaceEncoder

    return FaceEncoder()


@pytest.fixture(scope="module")
def carphone() -> dict[int, np.ndarray]:
    frames = read_frames("carphone_pristine.mp4")
    assert len(frames) == 120 and frames[0].shape == (144, 176, 3)
    return frames


def enrol(root: Path, identity: str, name: str, image: np.ndarray) -> Path:
    path = root / identity / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


# ---------------------------------------------------------------------------------------------- options, match()


def test_options_forbid_unknown_fields_and_describe_every_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        WatchlistOptions(folder=tmp_path, tolerance=0.5)  # type: ignore[call-arg]
    for name, f in WatchlistOptions.model_fields.items():
        assert f.description, name
    o = WatchlistOptions(folder=tmp_path)
    assert (o.threshold, o.num_jitters, o.cache_path()) == (0.6, 1, tmp_path / DEFAULT_CACHE_NAME)
    with pytest.raises(ValidationError):
        o.threshold = 0.5  # type: ignore[misc]


def test_match_takes_the_nearest_identity_within_the_threshold() -> None:
    rng = np.random.default_rng(0)
    a1, a2, b1 = (rng.normal(size=128).astype(np.float32) for _ in range(3))
    wl = Watchlist(["a", "b"], np.stack([a1, a2, b1]), np.array([0, 0, 1], np.int32), ["a/1", "a/2", "b/1"], threshold=0.6)
    offset = np.zeros(128, np.float32)
    offset[0] = 0.5
    queries = np.stack([a2 + offset, b1 - offset, b1 + 2 * offset, np.full(128, np.nan, np.float32)])
    identity, distance = wl.match(queries)
    assert identity.dtype == np.int32 and distance.dtype == np.float32
    assert identity.tolist() == [0, 1, -1, -1]  # a (its 2nd photo), b, too far from b, not encoded
    np.testing.assert_allclose(distance[:3], [0.5, 0.5, 1.0], atol=1e-5)
    assert np.isnan(distance[3])
    empty = Watchlist([], np.zeros((0, 128), np.float32), np.zeros(0, np.int32), [], threshold=0.6)
    identity, distance = empty.match(queries)
    assert identity.tolist() == [-1] * 4 and np.isnan(distance).all()
    identity, distance = wl.match(np.zeros((0, 128), np.float32))
    assert identity.shape == distance.shape == (0,)


# ---------------------------------------------------------------------------------------------- encoder


@needs_dlib
def test_encoder_clips_boxes_and_marks_boxes_outside_the_image(encoder, carphone) -> None:  # type: ignore[no-untyped-def]
    frame = carphone[0]
    box = hog_detector(2)(frame)
    assert len(box) == 1
    x1, y1, _, y2 = box[0]
    w = frame.shape[1]
    boxes = np.array([box[0], [x1, y1, w + 40, y2], [x1, y1, w, y2], [500, 500, 600, 600], [-50, -50, -1, -1]])
    out = encoder.encode(frame, boxes)
    assert out.shape == (5, 128) and out.dtype == np.float32
    assert np.isfinite(out[:3]).all() and np.isnan(out[3:]).all()  # boxes with nothing inside the image: NaN
    np.testing.assert_array_equal(out[1], out[2])  # a box running off the image is clipped to it
    assert encoder.encode(frame, np.zeros((0, 4))).shape == (0, 128)
    grey = encoder.encode(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), box)
    assert np.linalg.norm(grey[0] - out[0]) < 0.35


@needs_dlib
def test_encoder_names_the_missing_package(tmp_path: Path) -> None:
    from stages.infer.faces.encoder import FaceEncoder

    with pytest.raises(FileNotFoundError, match="pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0"):
        FaceEncoder(models=tmp_path)


# ---------------------------------------------------------------------------------------------- real clips


@needs_dlib
@pytest.mark.slow
def test_the_carphone_man_enrolled_from_one_frame_is_recognised_in_the_other_frames(
    tmp_path: Path, encoder, carphone  # type: ignore[no-untyped-def]
) -> None:
    detect = hog_detector(2)
    enrol(tmp_path / "watchlist", "carphone_man", "frame.png", carphone[0])
    wl = Watchlist.load(WatchlistOptions(folder=tmp_path / "watchlist"), encoder, detect)
    assert wl.names == ["carphone_man"] and wl.photos == 1 and not wl.problems

    detected, matched, distances, seconds = 0, 0, [], 0.0
    false_boxes: list[tuple[int, int, float]] = []  # (frame, identity, distance) of HOG's other boxes
    for i in range(1, len(carphone)):
        boxes = detect(carphone[i])
        if not len(boxes):
            continue
        # The man is the only person in the clip and the largest face; HOG also fires on the car window in a
        # frame or two (frame 93): such boxes are reported, not counted.
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        detected += 1
        t = time.perf_counter()
        enc = encoder.encode(carphone[i], boxes[order])
        seconds += time.perf_counter() - t
        identity, distance = wl.match(enc)
        matched += int(identity[0] == 0)
        distances.append(float(distance[0]))
        false_boxes += [(i, int(identity[k]), round(float(distance[k]), 3)) for k in range(1, len(boxes))]
    d = np.array(distances)
    print(
        f"\ncarphone: face found by HOG(2x) in {detected} of {len(carphone) - 1} frames, recognised in {matched} "
        f"({matched / detected:.1%}); distance to the enrolled frame median {np.median(d):.3f}, p95 "
        f"{np.percentile(d, 95):.3f}, max {d.max():.3f}; encoding {1000 * seconds / detected:.0f} ms a frame; "
        f"other HOG boxes (frame, identity, distance): {false_boxes}"
    )
    assert detected >= 100
    assert matched / detected >= 0.9


@pytest.fixture(scope="module")
def vtest_faces() -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(frame index, 8x upscaled head region of a COCO-SSD person box, HOG face boxes in it) for each head where a
    face was found. Frames 350-610, every 10th: the stretch where pedestrians walk nearest the camera."""
    from pipeline.protocol import Frame
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions

    indices = list(range(350, 620, 10))
    frames = read_frames("vtest.avi", indices)
    detector = CocoSsdDetector(CocoSsdOptions(device="cpu", score_threshold=0.5, classes=["person"]))
    found = []
    for k in range(0, len(indices), 9):
        batch = [Frame("vtest", i, i / 10, 0.0, 768, 576, frames[i]) for i in indices[k : k + 9]]
        found += detector.detect(batch)
    detect = hog_detector(1)
    heads = []
    for i, dets in zip(indices, found):
        frame = frames[i]
        for x1, y1, x2, y2 in dets.boxes:
            w, h = x2 - x1, y2 - y1
            x1, x2 = max(0, int(x1 - 0.1 * w)), min(frame.shape[1], int(x2 + 0.1 * w))
            y1, y2 = max(0, int(y1)), min(frame.shape[0], int(y1 + 0.4 * h))
            if x2 - x1 < 4 or y2 - y1 < 4:
                continue
            head = cv2.resize(frame[y1:y2, x1:x2], None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)
            boxes = detect(head)
            if len(boxes):
                heads.append((i, head, boxes))
    return heads


@needs_dlib
@pytest.mark.slow
def test_no_vtest_pedestrian_matches_the_carphone_watchlist(
    tmp_path: Path, encoder, carphone, vtest_faces  # type: ignore[no-untyped-def]
) -> None:
    enrol(tmp_path / "watchlist", "carphone_man", "frame.png", carphone[0])
    wl = Watchlist.load(WatchlistOptions(folder=tmp_path / "watchlist"), encoder, hog_detector(2))
    encodings = np.concatenate([encoder.encode(head, boxes) for _, head, boxes in vtest_faces])
    identity, distance = wl.match(encodings)
    print(
        f"\nvtest: {len(encodings)} pedestrian faces (9-13 px, found in 8x heads) from "
        f"{len({i for i, _, _ in vtest_faces})} frames; distance to carphone_man min {distance.min():.3f}, "
        f"median {np.median(distance):.3f}; matches {(identity >= 0).sum()}"
    )
    assert len(encodings) >= 5, "too few vtest faces found to say anything"
    assert np.isfinite(distance).all()
    assert (identity == -1).all(), f"distances {np.sort(distance)[:5]}"


@needs_dlib
def test_no_animated_face_matches_the_carphone_watchlist(tmp_path: Path, encoder, carphone) -> None:  # type: ignore[no-untyped-def]
    """Megamind.avi's cartoon faces are 70-300 px: HOG finds them at the clip's own size."""
    enrol(tmp_path / "watchlist", "carphone_man", "frame.png", carphone[0])
    wl = Watchlist.load(WatchlistOptions(folder=tmp_path / "watchlist"), encoder, hog_detector(2))
    detect = hog_detector(1)
    frames = read_frames("Megamind.avi", list(range(24, 270, 48)))
    encodings = np.concatenate([encoder.encode(f, detect(f)) for f in frames.values()])
    identity, distance = wl.match(encodings)
    print(f"\nMegamind: {len(encodings)} faces, distance to carphone_man min {distance.min():.3f}")
    assert len(encodings) >= 4
    assert (identity == -1).all()


# ---------------------------------------------------------------------------------------------- loading, problems


@needs_dlib
def test_unusable_photos_are_reported_by_name_and_skipped(
    tmp_path: Path, encoder, carphone, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    root = tmp_path / "watchlist"
    enrol(root, "carphone_man", "frame.png", carphone[0])
    (root / "carphone_man" / "garbage.jpg").write_bytes(os.urandom(2000))
    (root / "carphone_man" / "empty.jpg").write_bytes(b"")
    road = read_frames("vtest.avi", [0])[0][420:576, 0:300]  # the road and kerb in the first vtest frame, nobody on it
    enrol(root, "carphone_man", "road.png", road)
    (root / "carphone_man" / "notes.txt").write_text("not a photo")
    enrol(root, "nobody", "grey.png", np.full((200, 200, 3), 128, np.uint8))
    (root / "README.txt").write_text("loose file")
    (root / "carphone_man" / ".DS_Store").write_bytes(b"hidden: ignored")
    with caplog.at_level(logging.WARNING):
        wl = Watchlist.load(WatchlistOptions(folder=root), encoder, hog_detector(2))
    assert wl.names == ["carphone_man"] and wl.files == ["carphone_man/frame.png"]
    problems = dict(wl.problems)
    assert problems == {
        "README.txt": "not inside an identity folder (one sub-folder per identity)",
        "carphone_man/empty.jpg": "unreadable: OpenCV cannot decode it as an image",
        "carphone_man/garbage.jpg": "unreadable: OpenCV cannot decode it as an image",
        "carphone_man/notes.txt": "not a photo (jpg, jpeg, png, bmp, webp)",
        "carphone_man/road.png": "no face found",
        "nobody/grey.png": "no face found",
        "nobody/": "no usable photo: identity left out",
    }
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name, reason in wl.problems:
        assert any(name in m and reason in m for m in logged), (name, logged)
    # The same outcome from the cache, logged again.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = Watchlist.load(WatchlistOptions(folder=root), encoder, hog_detector(2))
    assert again.encoded == 0 and again.problems == wl.problems
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == len(wl.problems)


@needs_dlib
def test_a_photo_with_several_faces_uses_the_largest_and_says_so(tmp_path: Path, encoder, carphone) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "watchlist"
    small = cv2.resize(carphone[60], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    canvas = np.full((144, 176 + 88, 3), 90, np.uint8)
    canvas[:, :176] = carphone[0]
    canvas[:72, 176:] = small
    enrol(root, "carphone_man", "two.png", canvas)
    wl = Watchlist.load(WatchlistOptions(folder=root), encoder, hog_detector(4))
    assert wl.photos == 1 and not wl.problems
    assert len(wl.notes) == 1 and wl.notes[0][0] == "carphone_man/two.png" and "2 faces found, used the largest" in wl.notes[0][1]
    full = encoder.encode(carphone[0], hog_detector(2)(carphone[0]))
    assert np.linalg.norm(wl.encodings[0] - full[0]) < 0.05


@needs_dlib
def test_the_cache_skips_unchanged_photos_and_follows_changes(
    tmp_path: Path, encoder, carphone, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    root = tmp_path / "watchlist"
    a = enrol(root, "carphone_man", "a.png", carphone[0])
    b = enrol(root, "carphone_man", "b.png", carphone[60])
    c = enrol(root, "other", "c.png", carphone[100])
    detect_calls = 0
    hog = hog_detector(2)

    def detect(image: np.ndarray) -> np.ndarray:
        nonlocal detect_calls
        detect_calls += 1
        return hog(image)

    def load(**options: object) -> tuple[Watchlist, int, int]:
        nonlocal detect_calls
        counting, detect_calls = CountingEncoder(encoder), 0
        wl = Watchlist.load(WatchlistOptions(folder=root, **options), counting, detect, detector_key="hog2x")  # type: ignore[arg-type]
        return wl, counting.faces, detect_calls

    first, faces, detections = load()
    assert (faces, detections, first.encoded, first.cached) == (3, 3, 3, 0)
    assert (root / DEFAULT_CACHE_NAME).is_file()
    assert first.names == ["carphone_man", "other"] and first.files == ["carphone_man/a.png", "carphone_man/b.png", "other/c.png"]

    # Unchanged: nothing detected or encoded, the same encodings; the cache file is not rewritten.
    stamp = (root / DEFAULT_CACHE_NAME).stat().st_mtime_ns
    second, faces, detections = load()
    assert (faces, detections, second.encoded, second.cached) == (0, 0, 0, 3)
    np.testing.assert_array_equal(second.encodings, first.encodings)
    assert second.names == first.names and second.files == first.files
    np.testing.assert_array_equal(second.labels, first.labels)
    assert (root / DEFAULT_CACHE_NAME).stat().st_mtime_ns == stamp

    # Touched (same bytes, new mtime): encoded again.
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched, faces, _ = load()
    assert (faces, touched.encoded, touched.cached) == (1, 1, 2)
    np.testing.assert_array_equal(touched.encodings, first.encodings)

    # Replaced by another frame, its mtime set back to the old one: size and SHA-1 still tell.
    st = b.stat()
    enrol(root, "carphone_man", "b.png", carphone[61])
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    replaced, faces, _ = load()
    assert faces == 1 and replaced.files == first.files
    assert not np.array_equal(replaced.encodings[1], first.encodings[1])
    np.testing.assert_array_equal(replaced.encodings[[0, 2]], touched.encodings[[0, 2]])

    # Added: only the new photo is encoded.
    enrol(root, "carphone_man", "d.png", carphone[90])
    added, faces, _ = load()
    assert faces == 1 and added.files == ["carphone_man/a.png", "carphone_man/b.png", "carphone_man/d.png", "other/c.png"]

    # Removed: dropped without encoding anything; the identity left without a photo is reported.
    c.unlink()
    removed, faces, _ = load()
    assert faces == 0 and removed.names == ["carphone_man"] and "other/c.png" not in removed.files
    assert ("other/", "no usable photo: identity left out") in removed.problems
    with np.load(root / DEFAULT_CACHE_NAME) as z:
        assert "other/c.png" not in str(z["meta"]) and len(z["encodings"]) == 3

    # Other settings (jitters) or another detector: everything is encoded again.
    _, faces, _ = load(num_jitters=2)
    assert faces == 3
    _, faces, _ = load(num_jitters=2)
    assert faces == 0

    # A broken cache is rebuilt with a warning; a cache elsewhere works the same.
    (root / DEFAULT_CACHE_NAME).write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        _, faces, _ = load(num_jitters=2)
    assert faces == 3 and any("unreadable" in r.getMessage() for r in caplog.records)
    elsewhere = tmp_path / "cache" / "enc.npz"
    _, faces, _ = load(cache=elsewhere)
    assert faces == 3 and elsewhere.is_file()
    _, faces, _ = load(cache=elsewhere)
    assert faces == 0


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Watchlist.load(WatchlistOptions(folder=tmp_path / "nope"), object(), lambda image: np.zeros((0, 4)))  # type: ignore[arg-type]
