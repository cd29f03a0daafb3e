"""128-d face encodings with dlib's ResNet face recognition model (the model behind `face_recognition`).

The two model files come from the `face_recognition_models` package and are loaded straight into dlib:
`shape_predictor_5_face_landmarks.dat` (5 landmarks, to align the face) and
`dlib_face_recognition_resnet_model_v1.dat` (the 128-d encoder). This is what `face_recognition.face_encodings`
does (model="small", its default), without importing `face_recognition` or `face_recognition_models`: both import
`pkg_resources`, which setuptools >= 81 no longer ships, and `import face_recognition` then quits the process.
The package directory is found with importlib, which does not import the package.

Distances between encodings are Euclidean; the same person is typically 0.3-0.45 apart, different people 0.6 and
more, and `face_recognition` uses 0.6 as its default tolerance.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

INSTALL = "pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0"
"""What the encoder needs (the `[faces]` extra). dlib-bin is a prebuilt dlib; `pip install dlib` compiles for minutes."""

SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DIM = 128


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as e:
        raise ImportError(f"face recognition needs dlib, which is not installed ({e}); install it with: {INSTALL}") from e
    return dlib


def models_dir() -> Path:
    """The `models` folder of the installed `face_recognition_models` package, found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"face recognition needs the package face_recognition_models, which is not installed; install it with: {INSTALL}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if (folder / RECOGNITION_MODEL).is_file():
            return folder
    raise ImportError(
        f"face_recognition_models is installed at {list(spec.submodule_search_locations)} but holds no models/{RECOGNITION_MODEL}; "
        f"reinstall it with: {INSTALL}"
    )


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 BGR (HxWx3), BGRA (HxWx4) or grey (HxW) -> C-contiguous uint8 RGB, what dlib takes."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # a new contiguous array
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")


class FaceEncoder:
    """dlib's 5-point aligner and ResNet encoder. Calls are serialised by a lock: one instance may be shared
    between threads, but they take turns (dlib's models are not re-entrant)."""

    def __init__(self, models: str | Path | None = None, num_jitters: int = 1) -> None:
        """models: folder holding the two .dat files (default: the installed face_recognition_models package).
        num_jitters: default for encode(); 1 (or 0) encodes the face once, n > 1 averages n randomly jittered
        copies (n times slower, slightly more stable)."""
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        dlib = _import_dlib()
        folder = Path(models) if models is not None else models_dir()
        paths = [folder / SHAPE_PREDICTOR, folder / RECOGNITION_MODEL]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"face model {p} not found; install the models with: {INSTALL}")
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(paths[0]))
        self._net = dlib.face_recognition_model_v1(str(paths[1]))
        self._lock = threading.Lock()
        self.num_jitters = num_jitters
        # Names what produced the encodings (cached encodings from another model are not reused).
        self.fingerprint = f"dlib-{dlib.__version__}/{paths[0].name}:{paths[0].stat().st_size}/{paths[1].name}:{paths[1].stat().st_size}"

    def encode(self, image_bgr: np.ndarray, boxes: np.ndarray, num_jitters: int | None = None) -> np.ndarray:
        """One 128-d encoding per face box.

        image_bgr: uint8 HxWx3 BGR (HxW grey and HxWx4 BGRA are taken too). boxes: [N, 4] (x1, y1, x2, y2) in
        pixels of that image, as detectors give them; they are rounded and clipped to the image. A box with
        nothing left inside the image gets a row of NaN. Returns float32 [N, 128].
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.full((len(boxes), DIM), np.nan, np.float32)
        if not len(boxes):
            return out
        jitters = self.num_jitters if num_jitters is None else num_jitters
        h, w = image_bgr.shape[:2]
        # xyxy with an exclusive right/bottom edge -> dlib's inclusive integer rectangle, inside the image.
        x1 = np.clip(np.floor(boxes[:, 0]), 0, w - 1).astype(int)
        y1 = np.clip(np.floor(boxes[:, 1]), 0, h - 1).astype(int)
        x2 = np.clip(np.ceil(boxes[:, 2]) - 1, 0, w - 1).astype(int)
        y2 = np.clip(np.ceil(boxes[:, 3]) - 1, 0, h - 1).astype(int)
        valid = np.isfinite(boxes).all(axis=1) & (x2 > x1) & (y2 > y1)
        rows = np.flatnonzero(valid)
        if not len(rows):
            return out
        rgb = to_rgb(image_bgr)
        dlib = self._dlib
        with self._lock:
            shapes = dlib.full_object_detections()
            for i in rows:
                shapes.append(self._shape(rgb, dlib.rectangle(int(x1[i]), int(y1[i]), int(x2[i]), int(y2[i]))))
            descriptors = self._net.compute_face_descriptor(rgb, shapes, int(jitters))
        out[rows] = np.asarray([np.asarray(d) for d in descriptors], np.float32)
        return out
