"""Bring your own detector: tiny TorchScript and ONNX models made here, with outputs we know.

Every model outputs fixed boxes and scores (a constant table broadcast over the batch), plus one
"probe" score computed from its input (the mean of one channel), which shows that colour order,
scaling, letterbox padding and layout reach the model as declared. Frames are 640x480 and the
models take 320x320, so each box is checked in pixels of the original frame, within 1 px.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor, nn

from pipeline.categories import category_name
from pipeline.config import ConfigError, load_config
from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer import backend as bk
from stages.infer.detectors.custom import CustomDetector, CustomOptions
from stages.infer.stage import InferOptions
from tests.helpers.configs import write_config
from tests.helpers.procs import run_vidpipe

# torch 2.13 deprecates TorchScript (torch.jit.script/load warn); it is still what `format: torchscript` loads.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

IN_W, IN_H = 320, 320
BGR = (20, 60, 200)  # frames are blue 20, green 60, red 200
RED, BLUE = 200 / 255, 20 / 255
Expected = list[tuple[str, float, tuple[float, float, float, float]]]


def frame(w: int = 640, h: int = 480, bgr: tuple[int, int, int] = BGR, seq: int = 0) -> Frame:
    image = np.empty((h, w, 3), np.uint8)
    image[:] = bgr
    return Frame("cam", seq, seq / 10, 0.0, w, h, image)


def rows_of(det: Detections) -> Expected:
    return [(category_name(int(c)), float(s), tuple(map(float, b))) for b, s, c in zip(det.boxes, det.scores, det.class_ids)]


def assert_detections(det: Detections, expected: Expected, px: float = 1.0) -> None:
    """Same objects in the same (score) order, boxes within `px` pixels, scores within 1e-3."""
    got = rows_of(det)
    assert len(got) == len(expected), f"got {got}\nexpected {expected}"
    for (gc, gs, gb), (ec, es, eb) in zip(got, expected):
        assert gc == ec, (got, expected)
        assert abs(gs - es) < 1e-3, (got, expected)
        assert np.abs(np.array(gb) - np.array(eb)).max() <= px, (got, expected)


# -- a YOLO-style TorchScript model ----------------------------------------------------------------

# Rows of [cx, cy, w, h] in input pixels, then scores of the columns person, (dropped), car.
YOLO_CLASS_MAP: list[str | None] = ["person", None, "car"]
YOLO_ROWS = [
    [80, 80, 64, 96, 0.90, 0.00, 0.00],  # person
    [82, 81, 64, 96, 0.80, 0.00, 0.00],  # the same person again: NMS merges it into the row above
    [200, 220, 80, 40, 0.00, 0.00, 0.70],  # car
    [260, 60, 40, 40, 0.00, 0.00, 0.45],  # car under the default threshold 0.5
    [160, 160, 100, 100, 0.10, 0.99, 0.10],  # only the dropped column scores: never reported
    [40, 260, 40, 40, 0.00, 0.00, 0.00],  # probe: person = mean red, car = mean blue (of the input)
]
YOLO_PROBE = 5
# The same boxes in pixels of a 640x480 frame (x * 2, y * 1.5).
PERSON = (96.0, 48.0, 224.0, 192.0)
CAR = (320.0, 300.0, 480.0, 360.0)
LOW_CAR = (480.0, 60.0, 560.0, 120.0)
PROBE = (40.0, 360.0, 120.0, 420.0)


class RowsModel(nn.Module):
    """NCHW float input [B, 3, h, w] -> rows [B, N, 4+C]: a fixed table plus probe scores from the input."""

    def __init__(self, rows: list[list[float]], probe_row: int = -1, size: tuple[int, int] = (IN_W, IN_H)) -> None:
        super().__init__()
        table = torch.tensor(rows, dtype=torch.float32)
        mask_red = torch.zeros_like(table)
        mask_blue = torch.zeros_like(table)
        if probe_row >= 0:
            mask_red[probe_row, 4] = 1.0  # column 0: person
            mask_blue[probe_row, 6] = 1.0  # column 2: car
        self.register_buffer("table", table)
        self.register_buffer("mask_red", mask_red)
        self.register_buffer("mask_blue", mask_blue)
        self.w, self.h = size

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 3 or x.shape[2] != self.h or x.shape[3] != self.w:
            raise RuntimeError("RowsModel: unexpected input shape")
        red = x[:, 0].mean(dim=(1, 2)).view(-1, 1, 1)
        blue = x[:, 2].mean(dim=(1, 2)).view(-1, 1, 1)
        return self.table.unsqueeze(0) + self.mask_red.unsqueeze(0) * red + self.mask_blue.unsqueeze(0) * blue


def save_script(path: Path, module: nn.Module) -> Path:
    torch.jit.script(module.eval()).save(str(path))
    return path


@pytest.fixture
def yolo_ts(tmp_path: Path) -> Path:
    return save_script(tmp_path / "yolo.pt", RowsModel(YOLO_ROWS, YOLO_PROBE))


def custom(path: Path, **kw: Any) -> CustomOptions:
    base: dict[str, Any] = {"path": str(path), "layout": "yolo", "class_map": YOLO_CLASS_MAP, "input_size": [IN_W, IN_H], "device": "cpu"}
    base.update(kw)
    return CustomOptions.model_validate(base)


def test_torchscript_yolo_boxes_in_frame_pixels(yolo_ts: Path) -> None:
    det = CustomDetector(custom(yolo_ts))
    [d] = det.detect([frame()])
    # The duplicate person is merged, the 0.45 car is under the threshold, the dropped column never shows,
    # and the probe is a person scored by the red channel (RGB reached the model as declared, scaled by 1/255).
    assert_detections(d, [("person", 0.90, PERSON), ("person", RED, PROBE), ("car", 0.70, CAR)])


def test_per_class_thresholds_and_class_filter(yolo_ts: Path) -> None:
    [d] = CustomDetector(custom(yolo_ts, class_thresholds={"car": 0.4})).detect([frame()])
    assert_detections(d, [("person", 0.90, PERSON), ("person", RED, PROBE), ("car", 0.70, CAR), ("car", 0.45, LOW_CAR)])
    [d] = CustomDetector(custom(yolo_ts, class_thresholds={"person": 0.95})).detect([frame()])
    assert_detections(d, [("car", 0.70, CAR)])
    [d] = CustomDetector(custom(yolo_ts, classes=["car"], score_threshold=0.4)).detect([frame()])
    assert_detections(d, [("car", 0.70, CAR), ("car", 0.45, LOW_CAR)])


def test_nms_is_per_class_and_merges_duplicates(tmp_path: Path) -> None:
    rows = [
        [80, 80, 64, 96, 0.90, 0.0, 0.00],
        [81, 80, 64, 96, 0.85, 0.0, 0.00],  # duplicate person: merged
        [80, 80, 64, 96, 0.00, 0.0, 0.60],  # a car on the very same box: another class, kept
        [80, 80, 64, 96, 0.00, 0.9, 0.00],  # dropped column on the same box: never reported
    ]
    path = save_script(tmp_path / "nms.ts", RowsModel(rows))
    [d] = CustomDetector(custom(path)).detect([frame()])
    assert_detections(d, [("person", 0.90, PERSON), ("car", 0.60, PERSON)])
    [d] = CustomDetector(custom(path, nms_iou=0.99)).detect([frame()])  # duplicates no longer overlap enough
    assert [c for c, _, _ in rows_of(d)] == ["person", "person", "car"]


def test_colour_order_and_normalisation_reach_the_model(yolo_ts: Path) -> None:
    # bgr: the model gets channel 0 = blue, so the probe's "person" score is the blue mean (under 0.5)
    # and its "car" score the red mean.
    [d] = CustomDetector(custom(yolo_ts, color="bgr")).detect([frame()])
    assert_detections(d, [("person", 0.90, PERSON), ("car", RED, PROBE), ("car", 0.70, CAR)])
    # (pixel * scale - mean) / std: red 200 -> (200/255 - 0.1) / 2
    opts = custom(yolo_ts, mean=[0.1, 0.0, 0.0], std=[2.0, 1.0, 1.0])
    [d] = CustomDetector(opts).detect([frame()])
    assert_detections(d, [("person", 0.90, PERSON), ("car", 0.70, CAR)])  # (0.784 - 0.1) / 2 = 0.34 < 0.5
    [d] = CustomDetector(custom(yolo_ts, mean=[0.1, 0.0, 0.0], std=[2.0, 1.0, 1.0], score_threshold=0.3)).detect([frame()])
    assert ("person", pytest.approx((RED - 0.1) / 2, abs=1e-3)) in [(c, s) for c, s, _ in rows_of(d)]


def test_batches_of_mixed_frame_sizes_and_normalised_xyxy_logits(tmp_path: Path) -> None:
    # The same boxes as xyxy normalised to the input, scores as logits.
    def logit(p: float) -> float:
        return -20.0 if p <= 0 else math.log(p / (1 - p))

    rows = []
    for cx, cy, w, h, *scores in YOLO_ROWS[:3]:
        rows.append([(cx - w / 2) / IN_W, (cy - h / 2) / IN_H, (cx + w / 2) / IN_W, (cy + h / 2) / IN_H] + [logit(s) for s in scores])
    path = save_script(tmp_path / "yolo_xyxy.pt", RowsModel(rows))
    det = CustomDetector(custom(path, box_format="xyxy", normalized=True, scores="logits"))
    frames = [frame(), frame(320, 240, seq=1), frame(seq=2)]
    big, small, big2 = det.detect(frames)
    assert_detections(big, [("person", 0.90, PERSON), ("car", 0.70, CAR)])
    assert_detections(big2, [("person", 0.90, PERSON), ("car", 0.70, CAR)])
    half = lambda b: tuple(v / 2 for v in b)  # noqa: E731
    assert_detections(small, [("person", 0.90, half(PERSON)), ("car", 0.70, half(CAR))])


def test_letterbox_maps_boxes_back_and_pads(yolo_ts: Path) -> None:
    # 640x480 into 320x320 keeping the aspect ratio: scale 0.5, content 320x240 at y offset 40.
    # Input pixel (x, y) is frame pixel (x / 0.5, (y - 40) / 0.5).
    # The probe sees the padding (pad_value 0 here): red 200 on 240 of the 320 rows.
    [d] = CustomDetector(custom(yolo_ts, letterbox=True, pad_value=0, score_threshold=0.3)).detect([frame()])
    assert_detections(
        d,
        [
            ("person", 0.90, (96.0, 0.0, 224.0, 176.0)),  # y 32..128 -> -16..176, clipped at 0
            ("car", 0.70, (320.0, 320.0, 480.0, 400.0)),  # y 200..240 -> 320..400
            ("person", 200 * 240 / 320 / 255, (40.0, 400.0, 120.0, 480.0)),  # y 240..280 -> 400..480
            ("car", 0.45, (480.0, 0.0, 560.0, 80.0)),  # y 40..80 -> 0..80
        ],
    )


def test_bf16_autocast_runs_torchscript(yolo_ts: Path) -> None:
    det = CustomDetector(custom(yolo_ts, precision="bf16"))
    assert det.dtype == torch.bfloat16 and det.backend == "torch"  # a TorchScript model autocasts; no export
    [d] = det.detect([frame()])
    assert_detections(d, [("person", 0.90, PERSON), ("person", RED, PROBE), ("car", 0.70, CAR)])


# -- ONNX models built with onnx.helper ------------------------------------------------------------

SSD_CLASS_MAP: list[str | None] = ["person", "car"]  # after the background column 0
SSD_ANCHORS = [
    # (ymin, xmin, ymax, xmax) normalised; scores background, person, car
    ((0.10, 0.20, 0.50, 0.40), (0.05, 0.90, 0.00)),  # person
    ((0.11, 0.20, 0.50, 0.41), (0.05, 0.85, 0.00)),  # the same person: merged
    ((0.60, 0.50, 0.80, 0.90), (0.10, 0.00, 0.60)),  # car
    ((0.10, 0.20, 0.50, 0.40), (0.00, 0.00, 0.70)),  # a car on the person's box: another class, kept
    ((0.30, 0.30, 0.40, 0.40), (0.99, 0.00, 0.00)),  # background only: never reported
    ((0.70, 0.05, 0.90, 0.15), (0.00, 0.00, 0.00)),  # probe: person = mean of input channel 2 / 255
]
SSD_PROBE = 5
SSD_EXPECTED: Expected = [
    ("person", 0.90, (128.0, 48.0, 256.0, 240.0)),
    ("person", RED, (32.0, 336.0, 96.0, 432.0)),
    ("car", 0.70, (128.0, 48.0, 256.0, 240.0)),
    ("car", 0.60, (320.0, 288.0, 576.0, 384.0)),
]


def _save_onnx(path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_ssd_onnx(path: Path, batch: str | int = "batch") -> Path:
    """uint8 NHWC [B, 320, 320, 3] -> scores [B, N, 3] (background first), boxes [B, N, 4]: scores come first."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    n = len(SSD_ANCHORS)
    boxes = np.array([b for b, _ in SSD_ANCHORS], np.float32)[None]
    scores = np.array([s for _, s in SSD_ANCHORS], np.float32)[None]
    mask = np.zeros_like(scores)
    mask[0, SSD_PROBE, 1] = 1.0
    inits = [
        numpy_helper.from_array(boxes, "box_table"),
        numpy_helper.from_array(scores, "score_table"),
        numpy_helper.from_array(mask, "probe_mask"),
        numpy_helper.from_array(np.array([2], np.int64), "c_start"),
        numpy_helper.from_array(np.array([3], np.int64), "c_end"),
        numpy_helper.from_array(np.array([3], np.int64), "c_axis"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape_b11"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["xf", "c_start", "c_end", "c_axis"], ["ch2"]),
        helper.make_node("ReduceMean", ["ch2"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean4", "shape_b11"], ["mean"]),
        helper.make_node("Mul", ["mean", "inv255"], ["probe"]),
        helper.make_node("Mul", ["mean", "zero"], ["batch_zeros"]),  # [B, 1, 1]: the batch dimension
        helper.make_node("Add", ["batch_zeros", "box_table"], ["boxes"]),
        helper.make_node("Add", ["batch_zeros", "score_table"], ["fixed_scores"]),
        helper.make_node("Mul", ["probe", "probe_mask"], ["probe_scores"]),
        helper.make_node("Add", ["fixed_scores", "probe_scores"], ["scores"]),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, IN_H, IN_W, 3])]
    outputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, n, 3]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, n, 4]),
    ]
    return _save_onnx(path, nodes, inputs, outputs, inits)


def ssd(path: Path, **kw: Any) -> CustomOptions:
    base: dict[str, Any] = {
        "path": str(path), "layout": "ssd", "class_map": SSD_CLASS_MAP, "background_column": 0, "input_size": [IN_W, IN_H],
        "input_layout": "nhwc", "input_dtype": "uint8", "color": "bgr", "device": "cpu", "output_names": ["boxes", "scores"],
    }  # fmt: skip
    base.update(kw)
    return CustomOptions.model_validate(base)


ONNX_BACKENDS = [b for b in ("onnxruntime", "openvino") if bk.available(b)]


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
@pytest.mark.parametrize("batch", ["batch", 1], ids=["dynamic-batch", "fixed-batch-1"])
def test_onnx_ssd_two_outputs_nhwc_uint8_bgr(tmp_path: Path, batch: str | int, backend: str) -> None:
    det = CustomDetector(ssd(make_ssd_onnx(tmp_path / "ssd.onnx", batch), backend=backend))
    assert det.format == "onnx" and det.dtype == torch.float32 and det.backend == backend
    results = det.detect([frame(seq=i) for i in range(3)])
    for d in results:
        # yxyx normalised -> pixels; background dropped; a car on the person's box survives per-class NMS;
        # the probe read channel 2 of a BGR input: red.
        assert_detections(d, SSD_EXPECTED)


def test_onnx_ssd_outputs_by_position(tmp_path: Path) -> None:
    path = make_ssd_onnx(tmp_path / "ssd.onnx")
    [d] = CustomDetector(ssd(path, output_names=None, boxes_output=1)).detect([frame()])
    assert_detections(d, SSD_EXPECTED)
    with pytest.raises(ValueError, match=r"ssd layout expects boxes \[B, N, 4\], model returned \[1, 6, 3\]"):
        CustomDetector(ssd(path, output_names=None))  # boxes_output 0 is the scores here


def make_yolo_onnx(path: Path) -> Path:
    """float NCHW [B, 3, 320, 320] -> [B, 4+2, N]: xyxy normalised to the input, then logits of car and person.
    Anchor 2 is a probe: its person logit is logit(mean of channel 0)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    lg = lambda p: math.log(p / (1 - p))  # noqa: E731
    anchors = [
        # xyxy normalised to the (letterboxed) input; logits car, person
        ([0.15625, 0.28125, 0.46875, 0.4375], [lg(0.8), -10.0]),  # car: frame (100, 100, 300, 200)
        ([0.625, 0.5, 0.875, 0.859375], [-10.0, lg(0.6)]),  # person: frame (400, 240, 560, 470)
        ([0.015625, 0.140625, 0.078125, 0.21875], [-10.0, 0.0]),  # probe person: frame (10, 10, 50, 60)
        ([0.9375, 0.09375, 1.0, 0.171875], [2.0, -10.0]),  # car reaching into the top padding: frame (600, -20, 640, 30)
    ]
    table = np.array([b + s for b, s in anchors], np.float32).T[None]  # [1, 6, N]
    mask = np.zeros_like(table)
    mask[0, 5, 2] = 1.0
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(mask, "probe_mask"),
        numpy_helper.from_array(np.array([0], np.int64), "c_start"),
        numpy_helper.from_array(np.array([1], np.int64), "c_end"),
        numpy_helper.from_array(np.array([1], np.int64), "c_axis"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape_b11"),
        numpy_helper.from_array(np.array(1, np.float32), "one"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Slice", ["images", "c_start", "c_end", "c_axis"], ["ch0"]),
        helper.make_node("ReduceMean", ["ch0"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean4", "shape_b11"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Log", ["p"], ["log_p"]),
        helper.make_node("Log", ["q"], ["log_q"]),
        helper.make_node("Sub", ["log_p", "log_q"], ["probe"]),
        helper.make_node("Mul", ["p", "zero"], ["batch_zeros"]),
        helper.make_node("Add", ["batch_zeros", "table"], ["fixed"]),
        helper.make_node("Mul", ["probe", "probe_mask"], ["probe_out"]),
        helper.make_node("Add", ["fixed", "probe_out"], ["output0"]),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, IN_H, IN_W])]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 6, len(anchors)])]
    return _save_onnx(path, nodes, inputs, outputs, inits)


def test_onnx_yolo_channels_first_letterbox_logits(tmp_path: Path) -> None:
    opts = custom(
        make_yolo_onnx(tmp_path / "yolo.onnx"), class_map=["car", "person"], channels_first=True,
        box_format="xyxy", normalized=True, scores="logits", letterbox=True,
    )  # fmt: skip
    [d] = CustomDetector(opts).detect([frame()])
    probe = (200 * 240 + 114 * 80) / 320 / 255  # the red mean over content and grey padding: 0.7
    assert_detections(
        d,
        [
            ("car", 1 / (1 + math.exp(-2.0)), (600.0, 0.0, 640.0, 30.0)),  # clipped to the frame
            ("car", 0.8, (100.0, 100.0, 300.0, 200.0)),
            ("person", probe, (10.0, 10.0, 50.0, 60.0)),
            ("person", 0.6, (400.0, 240.0, 560.0, 470.0)),
        ],
    )
    with pytest.raises(ValueError, match=r"expects \[B, N, 4\+C\] .* model returned \[1, 6, 4\]; it looks like \[B, 4\+C, N\]: set channels_first: true"):
        CustomDetector(opts.model_copy(update={"channels_first": False}))


def test_torch_onnx_export_of_the_torchscript_model_gives_the_same_detections(tmp_path: Path, yolo_ts: Path) -> None:
    """torch 2.13's default (dynamo) exporter needs onnxscript; the legacy TorchScript-based one is used."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "yolo_export.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                RowsModel(YOLO_ROWS, YOLO_PROBE).eval(), (torch.zeros(1, 3, IN_H, IN_W),), str(path), dynamo=False,
                input_names=["images"], output_names=["output0"], dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
            )  # fmt: skip
    except Exception as exc:  # the legacy exporter is deprecated and may go away
        pytest.skip(f"torch.onnx.export(dynamo=False) unavailable: {exc}")
    frames = [frame(), frame(320, 240, seq=1)]
    from_ts = CustomDetector(custom(yolo_ts)).detect(frames)
    from_onnx = CustomDetector(custom(path)).detect(frames)
    for a, b in zip(from_ts, from_onnx):
        assert_detections(b, rows_of(a), px=0.01)


@pytest.mark.parametrize("backend", ["torch", *ONNX_BACKENDS])
def test_torchscript_model_on_every_backend_gives_the_same_detections(yolo_ts: Path, backend: str) -> None:
    """The backend layer exports the TorchScript module to ONNX for onnxruntime and OpenVINO; auto keeps eager torch."""
    frames = [frame(), frame(320, 240, seq=1), frame(bgr=(200, 10, 10), seq=2)]
    want = CustomDetector(custom(yolo_ts)).detect(frames)
    det = CustomDetector(custom(yolo_ts, backend=backend))
    assert det.backend == backend
    got = det.detect(frames)
    assert sum(len(d) for d in want) >= 6
    for a, b in zip(want, got):
        assert_detections(b, rows_of(a), px=0.01)


def test_an_onnx_model_has_no_eager_torch_backend(tmp_path: Path) -> None:
    assert CustomDetector(ssd(make_ssd_onnx(tmp_path / "ssd.onnx", "batch"))).backend == "onnxruntime"  # auto on the CPU
    with pytest.raises(ValueError, match="an ONNX model has no torch form"):
        CustomDetector(ssd(make_ssd_onnx(tmp_path / "ssd.onnx", "batch"), backend="torch"))


# -- errors ----------------------------------------------------------------------------------------


def test_layout_mismatch_names_the_shapes(tmp_path: Path) -> None:
    path = save_script(tmp_path / "wide.pt", RowsModel([[0.0] * 9] * 100))
    with pytest.raises(ValueError) as exc:
        CustomDetector(custom(path))
    assert "yolo layout expects [B, N, 4+C] with C=len(class_map)=3, model returned [1, 100, 9]" in str(exc.value)
    # A model that cannot take the declared input size says so, with the input it got.
    with pytest.raises(ValueError, match=r"failed on a dummy input \[1, 3, 240, 320\]: .*RowsModel: unexpected input shape"):
        CustomDetector(custom(path, input_size=[320, 240]))


def test_ssd_mismatch_names_the_shapes(tmp_path: Path) -> None:
    path = make_ssd_onnx(tmp_path / "ssd.onnx")
    with pytest.raises(ValueError, match=r"ssd layout expects scores \[B, N, C\] with N=6 and C=len\(class_map\)=2, model returned \[1, 6, 3\]"):
        CustomDetector(ssd(path, background_column=None))  # the background column not declared
    with pytest.raises(ValueError, match=r"ONNX input 'image' is tensor\(uint8\), but input_dtype is float32"):
        CustomDetector(ssd(path, input_dtype="float32"))
    with pytest.raises(ValueError, match=r"input_size \[320, 240\] and input_layout nhwc make \[B, 240, 320, 3\]"):
        CustomDetector(ssd(path, input_size=[320, 240]))
    with pytest.raises(ValueError, match="no output named detections"):
        CustomDetector(ssd(path, output_names=["detections", "scores"]))


def test_options_are_checked_with_clear_messages(tmp_path: Path, yolo_ts: Path) -> None:
    def err(**kw: Any) -> str:
        with pytest.raises(ValueError) as exc:
            custom(kw.pop("path", yolo_ts), **kw)
        return str(exc.value)

    assert "entry 1: unknown category 'dog'" in err(class_map=["person", "dog"])
    assert "model file not found" in err(path=str(tmp_path / "missing.pt"))
    (tmp_path / "model.bin").write_bytes(b"x")
    assert "cannot tell the model format from the suffix '.bin'" in err(path=str(tmp_path / "model.bin"))
    assert "every class_map entry is null" in err(class_map=[None, None])
    assert "scale, mean and std apply to input_dtype float32" in err(input_dtype="uint8", mean=[0.5, 0.5, 0.5])
    assert "output_names: the ssd layout reads [boxes, scores]" in err(layout="ssd", output_names=["out"])
    # An explicit format overrides the suffix; a file that is not TorchScript says so.
    with pytest.raises(ValueError, match="cannot load .* as TorchScript"):
        CustomDetector(custom(tmp_path / "model.bin", format="torchscript"))


def test_missing_onnxruntime_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ort(name: str, *args: Any, **kw: Any) -> Any:
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kw)

    (tmp_path / "m.onnx").write_bytes(b"not read")
    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(ImportError, match=r"pip install vidpipe\[onnx\]"):
        CustomDetector(custom(tmp_path / "m.onnx"))


GOOD = {
    "mode": "replay",
    "streams": [{"id": "cam1", "source": "video.mp4"}],
    "stages": [
        {"name": "decode", "kind": "decode"},
        {"name": "infer", "kind": "infer", "options": {"detector": "custom"}},
        {"name": "record", "kind": "record", "options": {"out_dir": "out"}},
    ],
}


def test_config_requires_custom_options(tmp_path: Path, yolo_ts: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    # `detector: custom` alone is the custom detector with its defaults: what has none is missing.
    assert exc.value.problems == [
        (f"stages[1].options.detector.{key}", "missing required field") for key in ("path", "layout", "class_map", "input_size")
    ]
    result = run_vidpipe("check", str(path))
    assert result.returncode == 2
    assert "stages[1].options.detector.path: missing required field" in result.stderr
    # Problems inside the detector's settings are named by their own path.
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["stages"][1]["options"]["detector"] = {
        "type": "custom", "path": str(yolo_ts), "layout": "yolo", "class_map": ["person", "dog"], "input_size": [320, 320],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    result = run_vidpipe("check", str(path))
    assert result.returncode == 2 and "stages[1].options.detector.class_map: entry 1: unknown category 'dog'" in result.stderr
    data["stages"][1]["options"]["detector"]["class_map"] = ["person", None, "car"]
    path.write_text(yaml.safe_dump(data))
    assert run_vidpipe("check", "--no-sources", str(path)).returncode == 0  # video.mp4 is a name only
    detector = InferOptions.model_validate(data["stages"][1]["options"]).detector
    assert isinstance(detector, CustomOptions) and detector.class_map == ["person", None, "car"]


# -- a real pipeline run ---------------------------------------------------------------------------


def test_pipeline_run_with_a_custom_detector(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    out = tmp_path / "out"
    model = save_script(tmp_path / "fixed.pt", RowsModel(YOLO_ROWS))  # no probe: the same objects on every frame
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "infer", "kind": "infer", "options": {"detector": {
            "type": "custom", "path": str(model), "layout": "yolo", "class_map": ["person", None, "car"],
            "input_size": [IN_W, IN_H], "device": "cpu", "class_thresholds": {"car": 0.6},
        }}},
        {"name": "record", "kind": "record", "options": {"out_dir": str(out)}},
    ]  # fmt: skip
    streams = [{"id": "car", "source": str(samples / "carphone_pristine.mp4")}]
    cfg = write_config(tmp_path / "run.yaml", streams, out, port_base=None, run_dir=sock_dir, stages=stages)
    result = run_vidpipe("run", str(cfg), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())["streams"]["car"]
    assert summary["status"] == "complete" and summary["frames"] > 0
    lines = [json.loads(x) for x in (out / "car.jsonl").read_text().splitlines()]
    assert len(lines) == summary["frames"]
    # 176x144 frames from a 320x320 model: x * 0.55, y * 0.45.
    expected = [("person", 0.9, (26.4, 14.4, 61.6, 57.6)), ("car", 0.7, (88.0, 90.0, 132.0, 108.0))]
    for rec in lines:
        assert (rec["width"], rec["height"]) == (176, 144)
        objs = rec["objects"]
        got = list(zip(objs["classes"], objs["scores"], objs["boxes"]))
        assert len(got) == 2, rec
        for (gc, gs, gb), (ec, es, eb) in zip(got, expected):
            assert gc == ec and abs(gs - es) < 1e-3 and np.abs(np.array(gb) - np.array(eb)).max() <= 1.0, rec
