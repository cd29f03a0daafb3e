"""A full disk under the results or under the outbox: the run ends with an error that names the place, its status
is not complete, nothing hangs, and no alert is counted as raised that was not.

The full disk is a real one: a small tmpfs (needs root, as CI runs; skipped elsewhere)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.analytics import make_clip, vtest_analytics_config
from tests.helpers.procs import run_logged

SAMPLES = Path(__file__).resolve().parent.parent / "sample_videos"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs, 12 MiB of it taken."""
    mount = Path(tempfile.mkdtemp(prefix="vp-disk-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        mount.rmdir()
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk tests need a real small disk")
    try:
        (mount / "filler").write_bytes(b"\0" * (12 << 20))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(SAMPLES / "vtest.avi", tmp_path_factory.mktemp("clip") / "vtest60.avi", 60)


def _config(tmp_path: Path, clip: Path, sock_dir: Path, out_dir: Path, outbox: Path) -> Path:
    cfg = vtest_analytics_config(tmp_path, clip, sock_dir)
    data = yaml.safe_load(cfg.read_text())
    stages = {s["name"]: s for s in data["stages"]}
    stages["record"]["options"] = {"out_dir": str(out_dir)}
    stages["alert"]["options"]["outbox"] = str(outbox)
    stages["alert"]["options"]["disk_wait_s"] = 1
    data["supervisor"].update({"max_restarts": 1, "restart_initial_s": 0.1})
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


def test_a_full_disk_under_the_results_ends_the_run_with_an_error(tmp_path: Path, clip: Path, sock_dir: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    cfg = _config(tmp_path, clip, sock_dir, out, tmp_path / "outbox.db")
    rc, log = run_logged("run", str(cfg), log_path=tmp_path / "log.txt", timeout=240)
    assert rc == 1, log[-3000:]
    assert f"the disk of {out} is full" in log
    assert "record exited with status 1, 2 times in a row: giving up" in log
    summary = out / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["streams"]["vtest"]["status"] != "complete"


def test_a_full_disk_under_the_outbox_ends_the_run_with_an_error(tmp_path: Path, clip: Path, sock_dir: Path, small_disk: Path) -> None:
    (small_disk / "more").write_bytes(b"\0" * ((4 << 20) - 64 * 1024))  # now nothing is left but a few blocks
    outbox = small_disk / "alerts" / "outbox.db"
    cfg = _config(tmp_path, clip, sock_dir, tmp_path / "out", outbox)
    rc, log = run_logged("run", str(cfg), log_path=tmp_path / "log.txt", timeout=240)
    assert rc == 1, log[-3000:]
    assert f"outbox {outbox}" in log and "full" in log
    assert "alert exited with status 1, 2 times in a row: giving up" in log
    assert "vidpipe.alert: raised" not in log  # no alert counted as raised that is not in an outbox
