"""The folder of ipc:// sockets is private: created 0700, and one that another user could have prepared
(theirs, or open to others) is refused with a clear error before any stage starts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.transport import ensure_private_dir
from tests.helpers.configs import write_config
from tests.helpers.procs import run_vidpipe


def test_a_new_run_dir_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "sockets"
    ensure_private_dir(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and path.stat().st_uid == os.getuid()


def test_a_run_dir_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "open"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    with pytest.raises(PermissionError, match="mode 755: others may reach its sockets"):
        ensure_private_dir(str(path))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(PermissionError, match="not a folder"):
        ensure_private_dir(str(link))


@pytest.mark.skipif(os.getuid() != 0, reason="handing a folder to another user needs root")
def test_a_run_dir_owned_by_another_user_stops_the_pipeline_with_a_clear_error(tmp_path: Path, samples: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, 65534, 65534)  # nobody: another local user got there first
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": str(samples / "bikes.mp4")}], tmp_path / "out", run_dir=run_dir)
    res = run_vidpipe("run", str(cfg), timeout=60)
    assert res.returncode == 2
    assert f"ipc folder {run_dir} belongs to uid 65534" in res.stderr
    assert "started" not in res.stderr  # refused before any stage ran


def test_the_default_run_dir_is_under_xdg_runtime_dir_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    cfg = parse_config({"streams": [{"id": "a", "source": "a.mp4"}], "stages": [{"name": "decode", "kind": "decode"}]})
    assert cfg.resolved_run_dir().startswith(f"{tmp_path}/vidpipe-")
