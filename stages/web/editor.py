"""The zone and line editor's side of the config file: a stream's zones and lines as the analyze stage reads them,
and new ones written into the file in place (comments, order and layout of everything else kept, through
ruamel.yaml's round trip) once the whole config passes the same checks as `vidpipe check`. A live analyze stage
notices the file changed and takes the new geometry without a restart (stages/analyze/stage.py, reload)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

Points = list[list[float]]


class GeometryRejected(ValueError):
    """The edit would make the config invalid: the problems as (field path, message), as `vidpipe check` says them."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # never fold a long flow line the user wrote on one
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _analyze(data: Any) -> tuple[int, Any]:
    stages = data.get("stages") if isinstance(data, dict) else None
    for i, st in enumerate(stages or []):
        if isinstance(st, dict) and st.get("kind") == "analyze":
            return i, st
    raise LookupError("the config has no analyze stage: zones and lines belong to one")


def read_geometry(path: Path, stream: str) -> dict[str, Any]:
    """The stream's frame size and its zones and lines in pixels of that size (relative shapes converted)."""
    import yaml

    _, st = _analyze(yaml.safe_load(path.read_text()))
    cfg = ((st.get("options") or {}).get("streams") or {}).get(stream)
    if cfg is None:
        return {"stream": stream, "frame_size": None, "zones": {}, "lines": {}, "rules": []}
    w, h = cfg["frame_size"]
    rel_default = bool(cfg.get("relative", False))

    def pixels(shape: dict[str, Any]) -> Points:
        rel = shape.get("relative")
        scale = (w, h) if (rel_default if rel is None else rel) else (1, 1)
        return [[float(x) * scale[0], float(y) * scale[1]] for x, y in shape["points"]]

    return {
        "stream": stream, "frame_size": [w, h],
        "zones": {n: pixels(s) for n, s in (cfg.get("zones") or {}).items()},
        "lines": {n: pixels(s) for n, s in (cfg.get("lines") or {}).items()},
        "rules": [{"name": r.get("name"), "type": r.get("type"), "zone": r.get("zone"), "line": r.get("line")} for r in cfg.get("rules") or []],
    }  # fmt: skip


def write_geometry(path: Path, stream: str, frame_size: tuple[int, int], zones: dict[str, Points], lines: dict[str, Points]) -> None:
    """Replaces the stream's zones and lines (pixels of `frame_size`) in the config file at `path`; GeometryRejected
    with every problem if the config would not pass `vidpipe check`, and then the file is left as it was."""
    from ruamel.yaml.comments import CommentedMap

    from pipeline.config import ConfigError, parse_config

    y = _yaml()
    data = y.load(path.read_text())
    _, st = _analyze(data)
    options = st.setdefault("options", CommentedMap())
    streams = options.setdefault("streams", CommentedMap())
    cfg = streams.get(stream)
    if cfg is None:
        cfg = streams[stream] = CommentedMap()
        cfg["frame_size"] = _flow([list(frame_size)])[0]
    cw, ch = cfg["frame_size"]
    sx, sy = cw / frame_size[0], ch / frame_size[1]  # the editor's pixels -> the config's frame size
    relative = bool(cfg.get("relative", False))

    def shape(points: Points) -> Any:
        pts = [[round(x * sx / (cw if relative else 1), 4 if relative else 1), round(y * sy / (ch if relative else 1), 4 if relative else 1)] for x, y in points]
        m = CommentedMap({"points": _flow(pts)})
        m.fa.set_flow_style()
        return m

    for key, shapes in (("zones", zones), ("lines", lines)):
        old = cfg.get(key)
        new = CommentedMap()
        for name, points in shapes.items():
            new[name] = shape(points)
        if old is not None:  # keep the comments that were attached to the section
            old.clear()
            old.update(new)
        elif new:
            cfg[key] = new
    plain = json.loads(json.dumps(data))  # what parse_config takes: plain maps and lists
    try:
        parse_config(plain, str(path), only_stage=st.get("name"))
    except ConfigError as exc:
        raise GeometryRejected(exc.problems) from None
    # Atomically, so that the analyze stage never reads half a file; the file keeps its permissions.
    fd, tmp = tempfile.mkstemp(prefix=".vidpipe-edit-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            y.dump(data, f)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _flow(rows: list[list[float]]) -> Any:
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq([_num(r) for r in rows])
    seq.fa.set_flow_style()
    for r in seq:
        r.fa.set_flow_style()
    return seq


def _num(row: list[float]) -> Any:
    from ruamel.yaml.comments import CommentedSeq

    return CommentedSeq([int(v) if float(v).is_integer() else v for v in row])
