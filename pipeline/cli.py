"""The `vidpipe` command: replay, run, stage, keys, check."""

from __future__ import annotations

import argparse
import copy
import faulthandler
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.config import STAGE_NAME, ConfigError, PipelineConfig, load_config, parse_config, redacted
from pipeline.entry import interrupted
from pipeline.metrics import version
from pipeline.paths import resolve_config_inputs
from pipeline.protocol import PROTOCOL_VERSION

# The chain `vidpipe replay` runs without --config: data, not code (the stages it names are plugins).
REPLAY_PRESET = "presets/replay.yaml"


def default_stages() -> list[dict[str, Any]]:
    data = yaml.safe_load(resources.files("pipeline").joinpath(REPLAY_PRESET).read_text())
    return list(data["stages"])


def _free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port with `count` consecutive free ports after it."""
    for _ in range(200):
        base = random.randint(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports found")


def _stream_ids(videos: list[str]) -> list[str]:
    ids: list[str] = []
    for v in videos:
        # A URL's id is its host and path: its credentials and query must not become a name in every output.
        if "://" in v:
            url = urlsplit(v)
            name = (url.hostname or "") + url.path
        else:
            name = Path(v).stem
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "stream"
        stem = stem.lstrip("_.-") or "stream"
        sid, n = stem[:60], 2
        while sid in ids:
            sid, n = f"{stem[:56]}-{n}", n + 1
        ids.append(sid)
    return ids


def build_replay_config(videos: list[str], config_path: str | None, out_dir: str, run_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The effective config of a replay: the given config (or the default chain), these videos, lossless mode; and
    the same before this run's own settings (its --out, run dir and ports), which replays the same again with
    `vidpipe replay --config` from anywhere."""
    if config_path:
        data = yaml.safe_load(Path(config_path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError([("", "the config must be a YAML mapping")], config_path)
        # What the config reads is found beside it (pipeline/paths.py), and the copy written beside the results
        # names it absolutely: it runs from anywhere.
        data = resolve_config_inputs(data, Path(config_path).resolve().parent)
    else:
        data = {"stages": default_stages()}
    data["mode"] = "replay"
    if videos:
        data["streams"] = [
            {"id": sid, "source": v if "://" in v else os.path.abspath(v)} for sid, v in zip(_stream_ids(videos), videos)
        ]
    shareable = copy.deepcopy(data)
    from pipeline.registry import resolve_stage

    for st in data.get("stages") or []:
        if isinstance(st, dict) and isinstance(st.get("kind"), str) and isinstance(st.get("options", {}), dict):
            try:
                cls = resolve_stage(st["kind"])
            except (ImportError, ValueError):
                continue  # parse_config reports it
            options = dict(st.get("options", {}))
            cls.replay_options(options, os.path.abspath(out_dir))
            if options != st.get("options", {}):
                st["options"] = options
    # A batch job should fail rather than retry forever when a stage cannot run at all.
    data.setdefault("supervisor", {}).setdefault("max_restarts", 3)
    transport = data.setdefault("transport", {})
    transport["run_dir"] = run_dir
    n_proc = len(data.get("streams") or []) + len(data.get("stages") or []) + 1
    data.setdefault("metrics", {})["port_base"] = _free_port_block(n_proc)
    return data, shareable


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """A YAML file only its owner can read (0600 from its creation, also when it existed before)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def _scrape(url: str) -> dict[str, float]:
    """frames_in per stream of one stage, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=0.5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "vidpipe_frames_in":
            for sample in fam.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["stream"]] = sample.value
    return out


def _expected_frames(source: str | int) -> int:
    import cv2

    if isinstance(source, int) or "://" in str(source) or not os.path.isfile(str(source)):
        return 0
    cap = cv2.VideoCapture(str(source))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    return n


def cmd_replay(args: argparse.Namespace) -> int:
    from pipeline.config import source_problems
    from pipeline.launcher import Launcher
    from pipeline.progress import ReplayProgress

    out_dir = os.path.abspath(args.out)
    if not args.videos and not args.config:
        print("replay: give at least one video (or a --config with streams)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vidpipe-") as run_dir:
        try:
            data, shareable = build_replay_config(args.videos, args.config, out_dir, run_dir)
            cfg = parse_config(data, args.config or "replay")
            # Inputs are checked before any stage starts: a missing file is a clear error at once.
            missing = source_problems(cfg.streams)
            if missing:
                raise ConfigError(missing, args.config or "replay")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        except (OSError, yaml.YAMLError) as exc:
            print(f"replay: cannot read config: {exc}", file=sys.stderr)
            return 2
        os.makedirs(out_dir, exist_ok=True)
        # The stages read the config with its secrets from the private run dir (gone with the run); the copy
        # beside the results says what ran, without them, and runs again as it is (`vidpipe replay --config`).
        effective = Path(run_dir) / "config.yaml"
        _write_private(effective, data)
        _write_private(Path(out_dir) / "config.yaml", redacted(shareable, cfg))
        last = cfg.stages[-1].name
        port = cfg.metrics_port(last, None) if not cfg.is_source(last) else None
        totals = {s.id: _expected_frames(s.source) or None for s in cfg.streams}
        started = time.monotonic()
        show = not args.quiet and sys.stderr.isatty()
        state = {"last": 0.0}
        with ReplayProgress(totals, started, enabled=show) as progress:

            def tick() -> None:
                now = time.monotonic()
                if not show or port is None or now - state["last"] < 0.5:
                    return
                state["last"] = now
                try:
                    progress.update(_scrape(f"http://{cfg.metrics.host}:{port}/metrics"), now)
                except OSError:
                    return

            launcher = Launcher(cfg, str(effective), args.log_level, stage_log=progress.log if show else None)
            rc = launcher.run(on_tick=tick)
            elapsed = time.monotonic() - started
            progress.finish(_frames_done(Path(out_dir) / "summary.json"), elapsed)
    if launcher.failed:
        print("replay: a stage kept crashing (see the log above); stopped", file=sys.stderr)
        return 1
    if rc != 0:
        return rc
    status = _report(cfg, out_dir, elapsed)
    print(f"config: {Path(out_dir) / 'config.yaml'} (vidpipe replay --config {Path(out_dir) / 'config.yaml'} --out DIR runs it again)")
    return 128 + launcher.stop_signal if launcher.stop_signal is not None else status


def _frames_done(summary: Path) -> dict[str, tuple[int, int | None]]:
    """Per stream, the frames a replay's results hold and how many its source had (the record stage's summary)."""
    try:
        streams = json.loads(summary.read_text())["streams"]
        return {sid: (int(s["frames"]), s.get("source_frames")) for sid, s in streams.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _report(cfg: PipelineConfig, out_dir: str | None, elapsed: float) -> int:
    """What the stages that write results say about them (record's summary table), as an exit status: 1 when a
    stream is not complete; when none wrote any, 1 for a replay (`out_dir`), 0 for a run without such stages."""
    from pipeline.registry import resolve_stage

    statuses = []
    for st in cfg.stages:
        cls = resolve_stage(st.kind)
        status = cls.replay_report(cls.Options.model_validate(st.options), elapsed)
        if status is not None:
            statuses.append(status)
    if not statuses:
        if out_dir is None:
            return 0
        print(f"replay: no stage wrote results to {out_dir}", file=sys.stderr)
        return 1
    return max(statuses)


def _load(path: str, only_stage: str | None = None, sources: bool = False) -> PipelineConfig | None:
    """The config, or None after printing every problem in it (`sources`: its missing file sources among them)."""
    try:
        return load_config(path, only_stage, sources)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import source_problems
    from pipeline.launcher import Launcher

    cfg = _load(args.config)
    if cfg is None:
        return 2
    # A deployment runs the streams it can: a missing file ends its own stream (with this error in the summary),
    # never the others. Said at once, before the stages load their models.
    for path, problem in source_problems(cfg.streams):
        logging.getLogger("vidpipe").warning("%s: %s (that stream will end with this error; the others run)", path, problem)
    started = time.monotonic()
    launcher = Launcher(cfg, args.config, args.log_level)
    rc = launcher.run()
    if rc == 0 and launcher.stop_signal is not None:
        return 128 + launcher.stop_signal  # stopped by a signal, cleanly: as replay says it
    if rc != 0 or cfg.mode != "replay" or launcher.stopping.is_set():
        return rc
    # A replay that ran to its end: its exit status says whether every stream is complete.
    return _report(cfg, None, time.monotonic() - started)


def _pick_stage(cfg: PipelineConfig, which: str) -> str:
    names = [s.name for s in cfg.stages]
    if which in names:
        return which
    of_kind = [s.name for s in cfg.stages if s.kind == which]
    if len(of_kind) == 1:
        return of_kind[0]
    if of_kind:
        raise ValueError(f"several stages are of kind {which!r} ({', '.join(of_kind)}): name one")
    raise ValueError(f"no stage named or of kind {which!r}; stages: {', '.join(names)}")


def cmd_stage(args: argparse.Namespace) -> int:
    from pipeline.runtime import run_stage

    cfg = _load(args.config, only_stage=args.stage)
    if cfg is None:
        return 2
    try:
        name = _pick_stage(cfg, args.stage)
    except ValueError as exc:
        print(f"stage: {exc}", file=sys.stderr)
        return 2
    try:
        return run_stage(cfg, name, args.stream, args.metrics_port, args.restarted, Path(args.config).resolve())
    except ValueError as exc:
        print(f"stage {name}: {exc}", file=sys.stderr)
        return 2


def cmd_keys(args: argparse.Namespace) -> int:
    from pipeline.curve import kubernetes_keys, make_keys

    names = list(args.names)
    if args.kubernetes and args.folder:
        names.insert(0, args.folder)  # no folder with --kubernetes: the first word is a stage too
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            print(f"keys: cannot read {args.config}: {exc}", file=sys.stderr)
            return 2
        names += [st["name"] for st in data.get("stages") or [] if isinstance(st, dict) and isinstance(st.get("name"), str)]
    names = list(dict.fromkeys(names))
    bad = [n for n in names if not STAGE_NAME.fullmatch(n)]
    if not names or bad:
        print(f"keys: give stage names (or --config){': not a stage name: ' + ', '.join(bad) if bad else ''}", file=sys.stderr)
        return 2
    if args.kubernetes:
        if args.if_missing:
            print("keys: --if-missing is for a keys folder; --kubernetes makes new pairs every time", file=sys.stderr)
            return 2
        print(kubernetes_keys(names, args.namespace), end="")
        return 0
    if not args.folder:
        print("keys: give the keys folder (or --kubernetes)", file=sys.stderr)
        return 2
    os.makedirs(args.folder, mode=0o700, exist_ok=True)
    if args.if_missing:
        # Idempotent (a container that makes the keys at every start): keep whole pairs, never half of one.
        have = {n: [p.name for p in (Path(args.folder) / f"{n}.key", Path(args.folder) / f"{n}.key_secret") if p.exists()] for n in names}
        half = [f for files in have.values() if len(files) == 1 for f in files]
        if half:
            print(f"keys: {', '.join(half)} in {args.folder} without the other half of its pair: remove it first", file=sys.stderr)
            return 2
        names = [n for n in names if not have[n]]
        if not names:
            print(f"keys: every stage has its pair in {args.folder}: none made", file=sys.stderr)
            return 0
    try:
        made = make_keys(args.folder, names)
    except FileExistsError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    for path in made:
        print(path)
    print("keys: copy the .key files to every host; each NAME.key_secret only to where stage NAME runs "
          "(or put its secret in $VIDPIPE_CURVE_SECRET there)", file=sys.stderr)  # fmt: skip
    return 0


def _probe_cameras(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """Each camera and URL source opened and read once, all at once (each within its stream's open timeout); what
    answers is said on stdout, what does not comes back as a problem."""
    from concurrent.futures import ThreadPoolExecutor

    # The problems are said below, once each: not also in FFmpeg's and OpenCV's own words.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    from stages.decode import SourceError, probe, redact, source_kind

    live = [(i, s) for i, s in enumerate(cfg.streams) if source_kind(s.source) in ("url", "device")]

    def one(stream: Any) -> tuple[bool, str]:
        try:
            return True, probe(stream)
        except (SourceError, ValueError) as exc:
            return False, str(exc)

    with ThreadPoolExecutor(max_workers=min(16, len(live) or 1)) as pool:
        answers = list(pool.map(one, [s for _, s in live]))
    problems = []
    for (i, stream), (ok, what) in zip(live, answers):
        if ok:
            print(f"stream {stream.id}: {redact(stream.source)} answers ({what})")
        else:
            problems.append((f"streams[{i}].source", what))
    return problems


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config, sources=not args.no_sources)
    if cfg is None:
        return 2
    if args.cameras:
        problems = _probe_cameras(cfg)
        if problems:
            print(ConfigError(problems, args.config), file=sys.stderr)
            return 2
    main = " -> ".join(s.name for s in cfg.stages if s.input_pattern == "pull")
    observers = "".join(f", {s.name} observing {', '.join(cfg.upstream(s.name))}" for s in cfg.stages if s.input_pattern == "sub")
    print(f"{args.config}: ok ({cfg.mode} mode, {len(cfg.streams)} streams, stages: {main}{observers})")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidpipe", description="Real-time video analytics pipeline over ZeroMQ stages.")
    p.add_argument("--log-level", default=os.environ.get("VIDPIPE_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--version", action="version", version=f"vidpipe {version()} (protocol {PROTOCOL_VERSION})")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("replay", help="process video files losslessly and write the results")
    r.add_argument("videos", nargs="*", help="video files or folders of images (one stream each)")
    r.add_argument("--config", help="pipeline YAML whose stages to use (its streams are replaced by the videos given)")
    r.add_argument("--out", default="out", help="results folder (default: out)")
    r.add_argument("--quiet", action="store_true", help="no progress line")
    r.set_defaults(func=cmd_replay)

    r = sub.add_parser("run", help="run a whole config on this machine, stages supervised")
    r.add_argument("config")
    r.set_defaults(func=cmd_run)

    r = sub.add_parser("stage", help="run one stage (for another host or Kubernetes)")
    r.add_argument("stage", help="stage name or kind")
    r.add_argument("--config", required=True)
    r.add_argument("--stream", help="stream id (decode runs one process per stream)")
    r.add_argument("--metrics-port", type=int, help="override the /metrics port")
    r.add_argument("--restarted", action="store_true",
                   help="replay: this process replaces a lost one and the sources start their streams again: "
                   "frames of an epoch it did not see start are dropped (the launcher passes it)")  # fmt: skip
    r.set_defaults(func=cmd_stage)

    r = sub.add_parser("keys", help="make CURVE key pairs for stages (transport.curve_keys): NAME.key public, NAME.key_secret private")
    r.add_argument("folder", nargs="?", help="the keys folder (created 0700 if missing)")
    r.add_argument("names", nargs="*", help="stage names (default: every stage of --config)")
    r.add_argument("--config", help="a pipeline YAML: make a pair for each of its stages")
    r.add_argument("--kubernetes", action="store_true",
                   help="print a ConfigMap vidpipe-curve-public (NAME.key) and a Secret vidpipe-curve-secret (NAME.key_secret) "
                   "instead of writing files: vidpipe keys --kubernetes --config C | kubectl apply -f -")  # fmt: skip
    r.add_argument("--namespace", default="vidpipe", help="namespace of --kubernetes's objects (default: vidpipe)")
    r.add_argument("--if-missing", action="store_true",
                   help="make pairs only for the stages that have none in the folder, and succeed when all have one")  # fmt: skip
    r.set_defaults(func=cmd_keys)

    r = sub.add_parser("check", help="validate a config and that its file sources are there; exit status 2 on errors")
    r.add_argument("config")
    r.add_argument("--no-sources", action="store_true", help="do not look for the file sources (a config for another machine)")
    r.add_argument("--cameras", action="store_true", help="also open each camera and URL source and read a frame from it (each within its open timeout)")
    r.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the launcher took the signal over: nothing was started yet
        return interrupted()


def _main(argv: list[str] | None) -> int:
    args = make_parser().parse_args(argv)
    from pipeline.runtime import setup_logging

    setup_logging(args.log_level)
    logging.getLogger("vidpipe").setLevel(args.log_level.upper())
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a hung process is waiting on.
    # The launcher replaces this with a handler that also hands the signal on to its stages.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    code = int(args.func(args) or 0)
    if args.func is cmd_stage and argv is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End a stage process that has finished: its sockets, files and metrics server are closed by now.

    Skipping the interpreter's teardown keeps a native runtime's worker threads (OpenVINO's TBB arena,
    ONNX Runtime's pools, OpenMP) from holding a finished stage up while they are torn down: the
    launcher waits for every stage to exit, so a stage stuck there would hang the whole replay.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
