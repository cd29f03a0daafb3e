"""The alert outbox: what add/due/mark record, and that committed alerts survive a kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipeline.alert import Alert
from stages.alert.outbox import DELIVERED, PENDING, REJECTED, Outbox
from tests.helpers.alerts import make_alert

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox(tmp_path / "outbox.db", ["hook", "file"])
    try:
        yield box
    finally:
        box.close()


def test_add_sets_raised_ts_and_round_trips(outbox: Outbox) -> None:
    alerts = [make_alert(i) for i in range(3)]
    added = outbox.add(alerts, now=100.0)
    assert [a.id for a in added] == [a.id for a in alerts]
    assert all(a.raised_ts == 100.0 for a in added)
    got = outbox.get(alerts[1].id)
    assert got == alerts[1]  # every field, the snapshot bytes and raised_ts included
    assert got is not alerts[1]
    assert outbox.get("nope") is None
    assert outbox.depths() == {"hook": 3, "file": 3}


def test_duplicate_id_is_ignored(outbox: Outbox) -> None:
    a, b = make_alert(1), make_alert(2)
    assert outbox.add([a], now=10.0) == [a]
    again = make_alert(1)
    # A repeat (in a later add, or twice in one add) is neither stored again nor returned.
    assert outbox.add([again, b, make_alert(2)], now=20.0) == [b]
    assert again.raised_ts is None
    assert outbox.get(a.id).raised_ts == 10.0
    assert outbox.depth("hook") == 2
    assert [x.id for x, _ in outbox.due("hook", now=30.0)] == [a.id, b.id]


def test_due_in_raise_order_per_sink(outbox: Outbox) -> None:
    alerts = [make_alert(i, stream=f"cam{i % 2}") for i in range(6)]
    outbox.add(alerts[:3], now=10.0)
    outbox.add(alerts[3:], now=11.0)
    assert outbox.due("hook", now=9.0) == []  # not raised yet at that time
    assert [a.id for a, _ in outbox.due("hook", now=10.5)] == [a.id for a in alerts[:3]]
    assert [a.id for a, n in outbox.due("hook", now=11.0)] == [a.id for a in alerts]
    assert [a.id for a, _ in outbox.due("hook", now=11.0, limit=2)] == [a.id for a in alerts[:2]]
    assert all(n == 0 for _, n in outbox.due("file", now=11.0))
    assert outbox.due("other", now=11.0) == []


def test_mark_semantics(outbox: Outbox) -> None:
    a, b, c = (make_alert(i) for i in range(3))
    outbox.add([a, b, c], now=10.0)

    assert outbox.mark_delivered("hook", a.id, now=10.2)
    assert not outbox.mark_delivered("hook", a.id, now=10.3)  # only a pending delivery is marked
    d = outbox.delivery("hook", a.id)
    assert d.state == DELIVERED and d.delivered_ts == 10.2 and d.attempts == 1
    assert outbox.delivery("file", a.id).state == PENDING  # sinks are independent

    assert outbox.mark_failed("hook", b.id, "connect: refused", next_attempt=20.0)
    d = outbox.delivery("hook", b.id)
    assert (d.state, d.attempts, d.next_attempt, d.last_error) == (PENDING, 1, 20.0, "connect: refused")
    # Head of line: b is not due before 20, and c, raised after it, waits behind it.
    assert outbox.due("hook", now=15.0) == []
    assert outbox.next_due("hook") == 20.0
    assert [(x.id, n) for x, n in outbox.due("hook", now=20.0)] == [(b.id, 1), (c.id, 0)]

    assert outbox.mark_rejected("hook", b.id, "http 400")
    d = outbox.delivery("hook", b.id)
    assert (d.state, d.attempts, d.last_error) == (REJECTED, 2, "http 400")
    assert [x.id for x, _ in outbox.due("hook", now=99.0)] == [c.id]  # never retried
    assert outbox.get(b.id) is not None  # but kept
    assert outbox.counts("hook") == {PENDING: 1, DELIVERED: 1, REJECTED: 1}
    assert outbox.depth("hook") == 1 and outbox.depth("file") == 3

    outbox.mark_delivered("hook", c.id, now=30.0)
    assert outbox.due("hook", now=99.0) == [] and outbox.next_due("hook") is None


def test_wal_mode_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "outbox.db"  # its folder is created
    box = Outbox(path, ["a"])
    box.add([make_alert(1)], now=1.0)
    try:
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = {r[1] for r in db.execute("PRAGMA table_info(deliveries)")}
        assert {"alert_id", "sink", "state", "attempts", "next_attempt", "last_error", "delivered_ts"} <= cols
        db.close()
    finally:
        box.close()


def test_sinks_added_or_dropped_later(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, ["a", "b"])
    old = make_alert(1)
    box.add([old], now=1.0)
    box.close()

    # "b" left the config and "c" joined: b keeps its pending row, c gets only new alerts.
    box = Outbox(path, ["a", "c"])
    try:
        new = make_alert(2)
        box.add([new], now=2.0)
        assert [x.id for x, _ in box.due("c", now=5.0)] == [new.id]
        assert [x.id for x, _ in box.due("b", now=5.0)] == [old.id]
        assert box.depths() == {"a": 2, "c": 1, "b": 1}
    finally:
        box.close()


def test_prune_keeps_pending(outbox: Outbox) -> None:
    a, b = make_alert(1), make_alert(2)
    outbox.add([a, b], now=10.0)
    for sink in ("hook", "file"):
        outbox.mark_delivered(sink, a.id, now=11.0)
    outbox.mark_delivered("hook", b.id, now=11.0)  # b still pending for "file"
    assert outbox.prune(before=50.0) == 1
    assert outbox.get(a.id) is None and outbox.delivery("hook", a.id) is None
    assert outbox.get(b.id) is not None
    c = make_alert(3)
    outbox.add([c], now=60.0)
    assert [x.id for x, _ in outbox.due("file", now=60.0)] == [b.id, c.id]  # raise order holds after a prune


def test_threads_share_one_outbox(outbox: Outbox) -> None:
    alerts = [make_alert(i) for i in range(200)]
    errors: list[BaseException] = []

    def adder(chunk: list[Alert]) -> None:
        try:
            for a in chunk:
                outbox.add([a], now=time.time())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def marker(sink: str) -> None:
        try:
            done = 0
            deadline = time.time() + 20
            while done < len(alerts) and time.time() < deadline:
                for a, _ in outbox.due(sink, now=time.time()):
                    assert outbox.mark_delivered(sink, a.id, now=time.time())
                    done += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=adder, args=(alerts[i::4],)) for i in range(4)]
    threads += [threading.Thread(target=marker, args=(s,)) for s in ("hook", "file")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert outbox.depths() == {"hook": 0, "file": 0}
    assert outbox.counts("hook")[DELIVERED] == 200


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pipeline.alert import Alert, alert_id
    from stages.alert.outbox import Outbox

    box = Outbox(sys.argv[1], ["hook", "file"])
    seq = 0
    print("ready", flush=True)
    while True:
        batch = []
        for _ in range(3):
            seq += 1
            batch.append(Alert(id=alert_id("cam", 0, "r", [seq], seq), stream="cam", rule="r", kind="zone_intrusion",
                               severity="info", track_ids=[seq], seq=seq, pts=0.0, capture_ts=0.0, message="m",
                               snapshot=bytes(2000)))
        for a in box.add(batch, now=time.time()):
            print("added", a.id, flush=True)
    """
)


def test_committed_alerts_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported: list[str] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        while len(reported) < 150:
            line = proc.stdout.readline()
            assert line, "writer ended early: " + (proc.stderr.read() if proc.stderr else "")
            reported.append(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)  # mid-loop: likely inside a transaction
        proc.wait(10)
        # What it printed before dying was committed before the print.
        reported += [line.split()[1] for line in proc.stdout.read().splitlines() if line.startswith("added ")]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    box = Outbox(path, ["hook", "file"])
    try:
        for aid in reported:
            got = box.get(aid)
            assert got is not None, f"alert {aid} was reported added but is gone"
            assert got.snapshot == bytes(2000)
        # Every stored alert has its deliveries (the transaction was all or nothing).
        depths = box.depths()
        assert depths["hook"] == depths["file"] >= len(reported)
        due = box.due("hook", now=time.time() + 1, limit=10_000)
        assert [a.id for a, _ in due][: len(reported)] == reported  # raise order
    finally:
        box.close()


def test_a_file_that_is_not_a_database_is_moved_aside_for_a_fresh_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(os.urandom(8192))
    box = Outbox(path, ["hook"])
    try:
        (rec,) = box.recoveries
        assert Path(rec.moved_to).name.startswith("outbox.db.damaged-") and Path(rec.moved_to).read_bytes()  # kept, for a look
        assert rec.requeued == 0 and "not a database" in rec.error
        assert [a.id for a in box.add([make_alert(1)], 5.0)] == [make_alert(1).id] and box.depth("hook") == 1
    finally:
        box.close()


def test_damaged_pages_cost_their_alerts_and_the_pending_rest_goes_out_again(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, ["hook", "mqtt"])
    big = os.urandom(6000)  # a snapshot over a page: each alert has pages of its own
    alerts = [make_alert(i, snapshot=big) for i in range(60)]
    box.add(alerts, 1.0)
    for a in alerts[:20]:  # delivered everywhere: not sent again
        box.mark_delivered("hook", a.id, 2.0)
        box.mark_delivered("mqtt", a.id, 2.0)
    box.mark_delivered("hook", alerts[20].id, 2.0)  # still pending for mqtt: sent again
    box.close()
    for suffix in ("-wal", "-shm"):  # checkpointed at close: the damage is in the database file itself
        assert not Path(f"{path}{suffix}").exists() or Path(f"{path}{suffix}").stat().st_size == 0
    data = bytearray(path.read_bytes())
    page = 4096
    middle = len(data) // page // 2
    data[middle * page : (middle + 3) * page] = os.urandom(3 * page)
    path.write_bytes(bytes(data))

    box = Outbox(path, ["hook", "mqtt"])
    try:
        (rec,) = box.recoveries
        assert rec.lost > 0 and rec.requeued + rec.lost <= 40 + 3  # what was damaged; none of the delivered ones again
        assert rec.requeued >= 25
        due = {a.id for a, _ in box.due("mqtt", 10.0, limit=100)}
        assert len(due) == rec.requeued and not due & {a.id for a in alerts[:20]}
        assert all(box.get(i) is not None and box.get(i).snapshot == big for i in due)  # type: ignore[union-attr]
        new = make_alert(100)
        assert box.add([new], 11.0) == [new]  # the fresh outbox takes new alerts
    finally:
        box.close()


def test_a_reader_pages_and_filters_the_history_while_the_owner_writes(tmp_path: Path) -> None:
    from stages.alert.outbox import OutboxReader

    reader = OutboxReader(tmp_path / "outbox.db")
    assert reader.history() == (0, [])  # nothing raised yet: no file
    sqlite3.connect(tmp_path / "outbox.db").close()
    assert reader.history() == (0, []) and reader.get("x") is None  # a file without tables yet: the writer is starting
    box = Outbox(tmp_path / "outbox.db", ["hook"])
    try:
        alerts = [make_alert(i, stream="cam1" if i % 2 else "cam2", rule="door" if i < 6 else "gate") for i in range(10)]
        for i, a in enumerate(alerts):
            box.add([a], 1_000.0 + i)
        total, page = reader.history(limit=3)
        assert total == 10 and [a.id for a in page] == [alerts[9].id, alerts[8].id, alerts[7].id]  # newest first
        total, page = reader.history(stream="cam1", rule="door", limit=10)
        assert total == 3 and [a.seq for a in page] == [5, 3, 1]
        total, page = reader.history(since=1_004.0, until=1_006.0, offset=1)
        assert total == 3 and [a.seq for a in page] == [5, 4]
        got = reader.get(alerts[4].id)
        assert got is not None and got.snapshot == alerts[4].snapshot and reader.get("nope") is None
        box.add([make_alert(99)], 2_000.0)  # the owner goes on writing: the reader sees it
        assert reader.history()[0] == 11
    finally:
        box.close()
