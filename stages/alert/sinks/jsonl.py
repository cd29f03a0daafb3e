"""The jsonl sink: one JSON line per alert, appended to a file.

Each line is fsynced before the alert counts as delivered. A crash between the write and the
outbox recording the delivery makes the alert come again after the restart, so on open the sink
reads the ids already in the file and skips those: each alert is in the file once. A line torn by
a crash mid-write is cut off on open (its alert was not delivered, so it comes again).
With `snapshots_dir` the JPEG goes to `<snapshots_dir>/<id>.jpg` and the line names it in
`snapshot_path`; without it the line carries the JPEG as base64 in `snapshot_jpeg`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.alert import Alert
from stages.alert.sink import DeliveryError, Sink, alert_json


def _fsync_dir(path: Path) -> None:
    # A new file's name is durable only once its folder is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["jsonl"] = Field(description="One JSON line per alert, appended to a file.")
    path: str = Field(description="The file (created with its folder if missing).")
    snapshots_dir: str | None = Field(
        None, description="Write snapshots to this folder as <id>.jpg and put `snapshot_path` in the line instead of base64."
    )
    fsync: bool = Field(True, description="fsync after every line, so an alert counted as delivered survives a power cut.")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class JsonlSink(Sink):
    type = "jsonl"
    Options = JsonlOptions

    def __init__(self, name: str, options: JsonlOptions) -> None:
        super().__init__(name)
        self.options = options
        self.path = Path(options.path)
        # Absolute, so that the path in a line is usable from wherever the file is read.
        self.snapshots_dir = Path(options.snapshots_dir).resolve() if options.snapshots_dir else None
        self._file: BinaryIO | None = None
        self._ids: set[str] = set()

    def _read_ids(self) -> None:
        """Collect the ids in the file; cut off a torn last line."""
        good = 0  # end of the last complete line
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                good += len(line)
                try:
                    self._ids.add(json.loads(line)["id"])
                except (ValueError, KeyError, TypeError):
                    pass  # not ours, or damaged: kept, but it names no alert
            size = f.seek(0, os.SEEK_END)
        if size > good:
            os.truncate(self.path, good)

    def _open(self) -> BinaryIO:
        if self._file is not None:
            return self._file
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._read_ids()
            # Unbuffered: a failed write leaves nothing in a buffer to surface later.
            f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open across deliveries
            if self.options.fsync:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise DeliveryError(f"cannot open {self.path}: {exc}", reason="io") from exc
        self._file = f
        return f

    def _write_snapshot(self, alert: Alert, jpeg: bytes) -> Path:
        assert self.snapshots_dir is not None
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", alert.id) + ".jpg"
        final = self.snapshots_dir / name
        tmp = self.snapshots_dir / f".{name}.tmp"
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            out.write(jpeg)
            if self.options.fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, final)  # never a half-written JPEG under the final name
        if self.options.fsync:
            _fsync_dir(self.snapshots_dir)
        return final

    def deliver(self, alert: Alert) -> None:
        f = self._open()
        if alert.id in self._ids:
            return  # written before a crash; the outbox did not get to record it
        try:
            if self.snapshots_dir is not None and alert.snapshot is not None:
                snap = self._write_snapshot(alert, alert.snapshot)
                line = alert_json(alert, snapshot=False, extra={"snapshot_path": str(snap)})
            else:
                line = alert_json(alert, snapshot=self.snapshots_dir is None)
        except OSError as exc:
            raise DeliveryError(f"cannot write the snapshot of {alert.id}: {exc}", reason="io") from exc
        end = f.seek(0, os.SEEK_END)
        data = memoryview(line + b"\n")
        try:
            while data:
                n = f.write(data)
                if not n:
                    raise OSError("the write took no bytes")
                data = data[n:]
            if self.options.fsync:
                os.fsync(f.fileno())
        except OSError as exc:
            try:
                f.truncate(end)  # no torn line in front of the next one (a full disk)
            except OSError:
                pass
            raise DeliveryError(f"cannot append to {self.path}: {exc}", reason="io") from exc
        self._ids.add(alert.id)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
