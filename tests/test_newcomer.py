"""A newcomer's first hour, scripted (issue 20): the README's example commands run as written from another working
directory with every output under --out, the config written beside the results runs again as it is, `vidpipe
check` lists every problem of a config at once, and a Ctrl-C during start-up returns at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VIDPIPE = Path(sys.executable).parent / "vidpipe"  # the console command the README's install puts there

pytestmark = pytest.mark.skipif(not VIDPIPE.exists(), reason="the vidpipe command is not installed (pip install -e .)")


def readme_commands() -> list[str]:
    """The `vidpipe replay` commands of the README's shell blocks (the install line's last command too)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    out = []
    for block in blocks:
        for line in block.splitlines():
            command = line.split("&&")[-1].split("#")[0].strip()
            if command.startswith("vidpipe replay"):
                out.append(command)
    return out


def _as_written(command: str, out: Path) -> list[str]:
    """The README's command with its repository paths made absolute (it is run from elsewhere) and its --out
    pointed into the test's folder; nothing else changed."""
    args = command.split()[1:]
    fixed = []
    for i, a in enumerate(args):
        if i > 0 and args[i - 1] == "--out":
            fixed.append(str(out))
        elif a.startswith(("sample_videos/", "deploy/")):
            fixed.append(str(ROOT / a))
        else:
            fixed.append(a)
    return [str(VIDPIPE), *fixed, "--quiet"]


def _alerts(path: Path) -> list[dict[str, object]]:
    """The alerts of a JSONL sink, less where each one's snapshot went (another --out, another folder) and the
    wall-clock times of the run (a file's frames are stamped as they are read)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        assert Path(row.pop("snapshot_path")).parent == path.parent / "snapshots"
        del row["capture_ts"], row["raised_ts"]
    return rows


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_the_readme_examples_run_from_elsewhere_with_every_output_under_out(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) >= 2 and any("--config" in c for c in commands), commands
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    repo_before = _files(ROOT / "deploy") | _files(ROOT / "sample_videos")
    for n, command in enumerate(commands):
        out = tmp_path / f"out{n}"
        res = subprocess.run(_as_written(command, out), cwd=elsewhere, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{command}\n{res.stdout}\n{res.stderr[-4000:]}"
        written = {p.relative_to(out).as_posix() for p in _files(out)}
        assert {"vtest.mp4", "vtest.jsonl", "summary.json", "config.yaml"} <= written, written
        if "--config" in command:
            assert {"alerts/alerts.jsonl", "alerts/outbox.db"} <= written and any(w.startswith("alerts/snapshots/") for w in written), written
            # The end-of-run table lists every file the run wrote.
            for name in ("alerts/alerts.jsonl", "alerts/outbox.db", "vtest.mp4", "vtest.jsonl", "summary.json", "config.yaml"):
                assert str(out / name) in res.stdout, (name, res.stdout)
            # The config beside the results runs again as it is, from anywhere, into another folder: the same
            # alerts (a replay is deterministic), all of them under the new --out.
            again = tmp_path / "again"
            res2 = subprocess.run([str(VIDPIPE), "replay", "--config", str(out / "config.yaml"), "--out", str(again), "--quiet"],
                                  cwd=elsewhere, capture_output=True, text=True, timeout=300)  # fmt: skip
            assert res2.returncode == 0, res2.stderr[-4000:]
            first, second = _alerts(out / "alerts" / "alerts.jsonl"), _alerts(again / "alerts" / "alerts.jsonl")
            assert first and first == second
            assert (again / "vtest.jsonl").read_bytes() == (out / "vtest.jsonl").read_bytes()
        written_config = yaml.safe_load((out / "config.yaml").read_text())
        assert "run_dir" not in written_config.get("transport", {}) and "port_base" not in written_config.get("metrics", {})
    assert not any(elsewhere.iterdir()), sorted(elsewhere.rglob("*"))  # nothing written where it ran
    assert _files(ROOT / "deploy") | _files(ROOT / "sample_videos") == repo_before  # nor beside the config or the videos


def test_check_lists_every_problem_of_a_config_at_once(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "deploy" / "config" / "vtest-analytics.yaml").read_text())
    data["streams"][0]["source"] = "vtest-missing.avi"  # 1: a source that is not there
    data["batching"] = {"max_size": "eight"}  # 2: a key the config does not have
    data["stages"][-1]["kind"] = "recrod"  # 3: a typo in a stage kind
    data["stages"][1]["options"]["detector"]["score_treshold"] = 0.2  # 4: a typo in an option
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    res = subprocess.run([str(VIDPIPE), "check", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr
    assert "4 problems" in err, err
    assert "streams[0].source: no such file or folder" in err
    assert "batching: unknown key" in err
    assert "stages[5].kind" in err and "did you mean record?" in err
    assert "stages[1].options.detector.score_treshold: unknown key (did you mean score_threshold?)" in err, err


def _stage_pids(log: str) -> list[int]:
    return [int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", log)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1].startswith("Z")  # a zombie has exited


@pytest.mark.parametrize("after", ["loading", "stages started"])
def test_a_ctrl_c_during_start_up_returns_within_3_s(tmp_path: Path, after: str) -> None:
    log_path = tmp_path / "log.txt"
    cmd = [str(VIDPIPE), "replay", "--config", str(ROOT / "deploy" / "config" / "vtest-analytics.yaml"),
           str(ROOT / "sample_videos" / "vtest.avi"), "--out", str(tmp_path / "out")]  # fmt: skip
    # An empty model cache: the stages spend seconds exporting their models (a first run), whatever ran before.
    env = {**os.environ, "VIDPIPE_CACHE_DIR": str(tmp_path / "models")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        if after == "loading":
            time.sleep(0.3)  # the command is still importing its modules
        else:  # every stage process started, none has loaded its models yet
            deadline = time.monotonic() + 30
            while len(_stage_pids(log_path.read_text())) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(_stage_pids(log_path.read_text())) == 6, log_path.read_text()
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert took < 3.0, f"{took:.1f}s\n{log[-3000:]}"
    assert rc == 130, log[-3000:]  # a stop, as `vidpipe run` says it too
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert all(_gone(pid) for pid in _stage_pids(log))


def test_progress_on_a_terminal_keeps_its_own_line_and_ends_at_the_results(tmp_path: Path, samples: Path) -> None:
    """On a terminal (a pseudo-terminal here) the progress bar is redrawn below the log lines, not through them, ends
    at every frame of the clip and says the time the summary line says."""
    import pty

    from tests.helpers.analytics import make_clip

    clip = make_clip(samples / "vtest.avi", tmp_path / "clip.avi", 60)
    cmd = [str(VIDPIPE), "replay", str(clip), "--out", str(tmp_path / "out")]
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other end closed: the command ended
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert rc == 0, text[-3000:]
    # Every log line is a line of its own: none begins after a progress bar's text.
    log_lines = [line for line in re.split(r"[\r\n]+", text) if " INFO " in line]
    assert log_lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", line) for line in log_lines), log_lines[:5]
    summary = re.search(r"60 frames in (\d+\.\d)s", text)
    assert summary, text[-2000:]
    # Per redraw: a bar redrawn in place follows the one before after a carriage return, on the same line of text.
    bars = [m for part in re.split(r"[\r\n]+", text) for m in re.findall(r"clip .*?(\d+)/(\d+) .*?(\d+\.\d) fps (\d+\.\d)s", part)]
    assert bars, text[-2000:]
    done, total, _, seconds = bars[-1]
    assert (done, total) == ("60", "60") and seconds == summary[1], (bars[-3:], summary[0])
