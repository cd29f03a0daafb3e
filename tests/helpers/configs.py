"""Pipeline configs for tests, written as real YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_config(path: Path, streams: list[dict[str, Any]], out_dir: Path, *, mode: str = "replay",
                 port_base: int | None = None, run_dir: Path | None = None, tcp_ports: list[int] | None = None,
                 stages: list[dict[str, Any]] | None = None, **top: Any) -> Path:
    """decode -> infer -> record over ipc (default) or tcp when two ports are given."""
    if stages is None:
        stages = [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer"},
            {"name": "record", "kind": "record", "options": {"out_dir": str(out_dir)}},
        ]
        if tcp_ports:
            stages[1]["input"] = f"@tcp://127.0.0.1:{tcp_ports[0]}"
            stages[2]["input"] = f"@tcp://127.0.0.1:{tcp_ports[1]}"
    data: dict[str, Any] = {"mode": mode, "streams": streams, "stages": stages}
    data["metrics"] = {"port_base": port_base}
    if run_dir is not None:
        data["transport"] = {"run_dir": str(run_dir)}
    for key, value in top.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
