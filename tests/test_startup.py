"""What a process loads before it can work: checking a config, or starting a stage that runs no model, must not
import torch (about 2 s and 200 MiB), so `vidpipe replay` starts its stages sooner and a decode process per
camera stays small."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.procs import ROOT, find_stage, stop, vidpipe, wait_for

HEAVY = ("torch", "onnxruntime", "openvino", "scipy.optimize")
ENV = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout, whatever is installed


def loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The heavy modules a fresh interpreter has imported after running `code`."""
    probe = code + f"\nimport sys\nprint('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-P", "-c", probe], cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), out.stdout
    return set(filter(None, last[len("loaded:") :].split(",")))


def full_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "streams": [{"id": "vtest", "source": str(ROOT / "sample_videos" / "vtest.avi")}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "backend": "openvino", "classes": ["person"]},
                                                          "motion_gate": {"enabled": True}, "faces": {"on": "persons"}}},
            {"name": "track", "kind": "track", "options": {"backend": "onnxruntime"}},
            {"name": "record", "kind": "record", "options": {"out_dir": str(tmp_path / "out")}},
        ],
    }))  # fmt: skip
    return cfg


def test_checking_a_whole_config_imports_no_model_runtime(tmp_path: Path) -> None:
    cfg = full_config(tmp_path)
    assert loaded_after(f"from pipeline.config import load_config\nload_config({str(cfg)!r})") == set()


def test_every_detector_module_imports_without_torch() -> None:
    """Reading a config imports every detector module (the registry builds the options union from them)."""
    assert loaded_after("from stages.infer.detectors import DETECTORS\nDETECTORS.all()") == set()


def test_a_bad_infer_option_is_still_reported_without_torch(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({
        "streams": [{"id": "a", "source": str(ROOT / "sample_videos" / "vtest.avi")}],
        "stages": [{"name": "decode", "kind": "decode"},
                   {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "backend": "tensorrt", "class_thresholds": {"unicorn": 0.5}}}}],
    }))  # fmt: skip
    code = (
        "from pipeline.config import ConfigError, load_config\n"
        f"try:\n    load_config({str(cfg)!r})\nexcept ConfigError as exc:\n    print(exc)\nelse:\n    raise SystemExit('no error')"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code + "\nimport sys\nprint('torch' in sys.modules)"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "stages[1].options.detector.backend" in out.stdout and "unicorn" in out.stdout
    assert out.stdout.strip().endswith("False")


def test_stages_without_models_import_none(tmp_path: Path) -> None:
    cfg = full_config(tmp_path)
    for kind in ("decode", "record"):
        code = (
            f"from pipeline.config import load_config\nfrom pipeline.registry import resolve_stage\n"
            f"cfg = load_config({str(cfg)!r}, only_stage={kind!r})\nresolve_stage({kind!r})"
        )
        assert loaded_after(code) == set(), kind


def test_coco_ssd_on_a_cpu_runtime_runs_without_torch_once_exported(tmp_path: Path) -> None:
    """The first start exports the network (torch needed); from then on the infer process finds the export by
    the key of its files and runs it with numpy and the runtime alone."""
    code = (
        "import numpy as np\nfrom pipeline.protocol import Frame\nfrom stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions\n"
        "from tools.tracklets import read_frames\n"
        f"images = [im for _, im in read_frames({str(ROOT / 'sample_videos' / 'vtest.avi')!r}, 0, 3)]\n"
        "det = CocoSsdDetector(CocoSsdOptions(device='auto'))\n"
        "found = det.detect([Frame('s', i, 0.0, 0.0, 768, 576, im) for i, im in enumerate(images)])\n"
        "assert det.backend in ('openvino', 'onnxruntime') and all(len(d) for d in found), (det.backend, found)"
    )
    cache = {"VIDPIPE_CACHE_DIR": str(tmp_path / "cache")}
    assert "torch" in loaded_after(code, cache)  # the export is made
    assert loaded_after(code, cache) == {"openvino"}


def test_the_tracker_imports_without_torch() -> None:
    """The tracker, the track stage's module and its options load without torch: only the models (motion LSTM,
    appearance CNN) need it, and they are imported when the stage builds them. With the Kalman motion model and
    no appearance the tracker also runs without it."""
    assert "torch" not in loaded_after("import stages.track, stages.track.stage, stages.track.tracker")
    code = (
        "import numpy as np\nfrom pipeline.detections import Detections\nfrom stages.track.stage import KalmanMotion\n"
        "from stages.track.tracker import StepInput, Tracker\n"
        "tracker = Tracker(KalmanMotion())\n"
        "box = np.array([[10, 10, 50, 120]], np.float32)\n"
        "for i in range(5):\n"
        "    out = tracker.step([StepInput('s', i, Detections(box + 2 * i, np.array([0.9], np.float32), np.zeros(1, np.int32)), None)])\n"
        "assert (out[0].track_ids > 0).all(), out"
    )
    assert "torch" not in loaded_after(code)


def test_the_tracker_runs_without_torch_once_exported(tmp_path: Path) -> None:
    """The motion LSTM and the appearance CNN go
    through the backend layer: the first build exports them
    (torch needed), later ones find the exports by their files' key, cut the crops in numpy and run ONNX
    Runtime, so the track process starts without torch (it delayed a replay's first frame by ~2 s)."""
    code = (
        "import numpy as np\nfrom pipeline.detections import Detections\nfrom stages.track.stage import TrackOptions, build_tracker, embed_rows\n"
        "from stages.track.tracker import StepInput\nfrom tools.tracklets import read_frames\n"
        f"images = [im for _, im in read_frames({str(ROOT / 'sample_videos' / 'vtest.avi')!r}, 0, 4)]\n"
        "tracker, encoder = build_tracker(TrackOptions(motion='lstm'), 'cpu')\n"
        "assert (tracker.motion.backend, encoder.backend) == ('onnxruntime', 'onnxruntime'), (tracker.motion.backend, encoder.backend)\n"
        "box = np.array([[100, 100, 140, 200], [400, 300, 450, 420]], np.float32)\n"
        "for i, im in enumerate(images):\n"
        "    d = Detections(box + 3 * i, np.array([0.9, 0.8], np.float32), np.zeros(2, np.int32))\n"
        "    (emb,) = embed_rows(tracker, encoder, [im], [d])\n"
        "    (out,) = tracker.step([StepInput('s', i, d, emb)])\n"
        "assert (out.track_ids > 0).all(), out"
    )
    cache = {"VIDPIPE_CACHE_DIR": str(tmp_path / "cache")}
    assert "torch" in loaded_after(code, cache)  # the exports are made
    # The assignment solver is scipy's extension module alone (stages.track.association.assignment_solver).
    assert loaded_after(code, cache) == {"onnxruntime"}


def test_stages_are_forked_from_the_launcher_and_say_which_they_are(tmp_path: Path) -> None:
    """The launcher forks its stages (no new interpreter importing what it has loaded already); each shows its own
    stage command in `ps`, and shares nothing with the launcher that a stage needs (the replay completes)."""
    import psutil

    proc = vidpipe("replay", str(ROOT / "sample_videos" / "vtest.avi"), "--out", str(tmp_path / "out"), log_path=tmp_path / "log.txt")
    try:
        wait_for(lambda: find_stage(proc.pid, "infer") is not None and find_stage(proc.pid, "decode") is not None, 60, what="stages")
        for name in ("decode", "infer", "track", "record"):
            pid = find_stage(proc.pid, name)
            assert pid is not None, name
            child = psutil.Process(pid)
            title = " ".join(child.cmdline()).split()
            assert title[0] == "vidpipe" and title[title.index("stage") + 1] == name, title  # a fork's title, no interpreter path
            assert child.ppid() == proc.pid
        assert proc.wait(120) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    finally:
        stop(proc)
    assert find_stage(proc.pid) is None
