#!/usr/bin/env python
"""One-hop transport benchmark: vidpipe Sender/Receiver against bare pyzmq, same run.

Two real OS processes (multiprocessing, 'spawn'): a sender and a receiver, kept
alive for the whole run and told what to do over pipes, so that every test pays
the same process and import costs. For every (resolution, transport) the bare
pyzmq baseline and vidpipe alternate, round after round, and the medians are
compared: on a noisy shared machine only ratios measured side by side mean much.

  baseline  PUSH/PULL, send_multipart([header, pixels], copy=False), blocking send,
            recv_multipart(copy=False), same HWM/LINGER/IMMEDIATE as open_socket. The
            header is a struct (seq, send time) zero-padded to the size of vidpipe's
            header, so both put the same bytes on the wire (--base-header-bytes 16 for
            the bare struct; on tcp a tiny first part was measured to be slower).
  vidpipe   pipeline.transport.Sender.send(Frame, timeout_ms=200) and
            Receiver.recv(200) as the replay runtime calls them, with a Frame
            carrying 10 detections and one stamp (pipeline.protocol encode/decode).

Both receivers read the first and last pixel byte of every frame (so zero-copy is
not trivially free), nothing more. Throughput: the sender sends as fast as it can;
the receiver counts frames after a warm-up. Latency: the sender sends at a fixed
modest rate (queues stay empty) and stamps CLOCK_MONOTONIC (system-wide on Linux)
just before encoding; the receiver subtracts after decoding and touching.

The workers run with glibc's mmap/trim thresholds raised (see TUNED_MALLOC;
--glibc-malloc for the defaults), because with the defaults the receiver page-faults
on a random share of the multi-MB frame buffers, for either side, and that swamps
the difference being measured. The rx faults/f column shows it.

    python bench/transport.py            # ~60 s
    python bench/transport.py --quick    # ~10 s
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import struct
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's pipeline/, also without an install

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
TRANSPORTS = ("ipc", "tcp")
IMPLS = ("baseline", "vidpipe")
HWM = 4  # pipeline.config.TransportConfig.hwm default
POLL_MS = 200  # pipeline.runtime.POLL_MS: how the runtime calls send/recv
POOL = 4  # distinct frames the sender cycles through
N_BOXES = 10
BASE_HDR = struct.Struct("<qq")  # seq, monotonic ns (seq -1 = end), zero-padded to the header size asked for
TARGET = 0.8
RESULT_TIMEOUT_S = 60.0
# glibc settings for the worker processes unless --glibc-malloc: with glibc's defaults a receiver that
# frees a multi-MB frame buffer per message page-faults on a varying share of them (heap trimmed, or
# buffers mmapped afresh), for baseline and vidpipe alike and at random, which swings fps by +-40%.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


# --------------------------------------------------------------------------------------
# worker processes


def _frames(res: str, cache: dict[str, list[Any]]) -> list[Any]:
    import numpy as np

    if res not in cache:
        w, h = RESOLUTIONS[res]
        rng = np.random.default_rng(1)
        cache[res] = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(POOL)]
    return cache[res]


def _detections() -> Any:
    import numpy as np

    from pipeline.detections import Detections

    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 1000, (N_BOXES, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(10, 200, (N_BOXES, 2)).astype(np.float32)], axis=1)
    return Detections(boxes, rng.uniform(0.3, 1, N_BOXES).astype(np.float32), np.zeros(N_BOXES, np.int32))


def _bare_socket(ctx: Any, kind: int) -> Any:
    import zmq

    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    if kind == zmq.PUSH:
        sock.setsockopt(zmq.IMMEDIATE, 1)  # as pipeline.transport.open_socket does
    return sock


def receiver_main(conn: Any) -> None:
    """Binds PULL per test, receives until end of stream, reports figures."""
    import numpy as np
    import zmq

    from pipeline.protocol import Frame
    from pipeline.transport import Receiver

    ctx = zmq.Context()
    while True:
        cmd = conn.recv()
        if cmd[0] == "quit":
            break
        _, impl, endpoint, mode, warm_s = cmd
        if impl == "vidpipe":
            rx = Receiver(ctx, endpoint, hwm=HWM)
            sock = rx.sock
        else:
            rx = None
            sock = _bare_socket(ctx, zmq.PULL)
            sock.bind(endpoint)
        conn.send(("ready", sock.getsockopt(zmq.LAST_ENDPOINT).decode()))

        touched = 0
        lat: list[int] = []
        count = 0
        t_first = t_start = t_last = None
        cpu_start = 0.0
        flt_start = 0
        while True:
            if rx is not None:
                msg = rx.recv(POLL_MS)
                if msg is None:
                    continue
                if not isinstance(msg, Frame):
                    break  # eos
                img = msg.image
                touched += int(img[0, 0, 0]) + int(img[-1, -1, -1])
                sent_ns = round(msg.capture_ts * 1e9)
            else:
                parts = sock.recv_multipart(copy=False)
                seq, sent_ns = BASE_HDR.unpack_from(parts[0].buffer)
                if seq < 0:
                    break
                buf = parts[1].buffer
                touched += buf[0] + buf[-1]
            now = time.monotonic_ns()
            if mode == "latency":
                lat.append(now - sent_ns)
                continue
            if t_first is None:
                t_first = now
            if t_start is None:
                if now - t_first >= warm_s * 1e9:
                    t_start, cpu_start = now, time.process_time()
                    flt_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                continue
            count += 1
            t_last = now
        cpu = time.process_time() - cpu_start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt_start
        if rx is not None:
            rx.close()
        else:
            sock.close()
        if mode == "latency":
            conn.send(("result", {"lat_ns": np.asarray(lat, np.int64), "touched": touched}))
        else:
            el = (t_last - t_start) / 1e9 if t_start is not None and t_last is not None and count else 0.0
            conn.send(("result", {"fps": count / el if el > 0 else 0.0, "frames": count,
                                  "cpu_us": cpu / max(count, 1) * 1e6, "faults": faults / max(count, 1),
                                  "touched": touched}))
    ctx.term()


def sender_main(conn: Any) -> None:
    """Connects PUSH per test and sends: flat out for a duration, or paced at a rate."""
    import zmq

    from pipeline.protocol import KIND_EOS, Control, Frame, encode
    from pipeline.transport import Sender

    ctx = zmq.Context()
    cache: dict[str, list[Any]] = {}
    dets = _detections()
    prev: Any = None  # the last test's socket stays open until the next command (LINGER 0)
    while True:
        cmd = conn.recv()
        if prev is not None:
            prev.close()
            prev = None
        if cmd[0] == "quit":
            break
        _, impl, endpoint, res, mode, seconds, rate, n_lat, hdr_bytes = cmd
        pool = _frames(res, cache)
        w, h = RESOLUTIONS[res]
        if not hdr_bytes:  # as long as vidpipe's header for the same frame
            hdr_bytes = len(encode(Frame("cam0", 1000, 40.0, time.monotonic_ns() / 1e9, w, h, pool[0],
                                         detections=dets))[0])
        pad = bytes(max(0, hdr_bytes - BASE_HDR.size))
        if impl == "vidpipe":
            tx = Sender(ctx, endpoint, hwm=HWM)
            sock = tx.sock
        else:
            tx = None
            sock = _bare_socket(ctx, zmq.PUSH)
            sock.connect(endpoint)
        prev = sock

        def send(seq: int) -> None:
            img = pool[seq % POOL]
            if tx is not None:
                ts = time.monotonic_ns() / 1e9
                frame = Frame("cam0", seq, seq / 25.0, ts, w, h, img, detections=dets)
                while not tx.send(frame, True, timeout_ms=POLL_MS):
                    pass
            else:
                sock.send_multipart([BASE_HDR.pack(seq, time.monotonic_ns()) + pad, img], copy=False)

        seq = 0
        cpu0 = time.process_time()
        if mode == "latency":
            period = 1.0 / rate
            t0 = time.monotonic() + 0.05
            for seq in range(n_lat):
                delay = t0 + seq * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                send(seq)
            seq = n_lat
        else:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                send(seq)
                seq += 1
        cpu = time.process_time() - cpu0
        if tx is not None:
            while not tx.send(Control(KIND_EOS, "cam0", "bench"), timeout_ms=POLL_MS):
                pass
        else:
            sock.send_multipart([BASE_HDR.pack(-1, 0) + pad])
        conn.send(("sent", {"frames": seq, "cpu_us": cpu / max(seq, 1) * 1e6, "hdr_bytes": len(pad) + BASE_HDR.size}))
    ctx.term()


# --------------------------------------------------------------------------------------
# driver


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        mpc = mp.get_context("spawn")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # spawned workers start with it (glibc reads MALLOC_* at start)
        self.tmp = tempfile.mkdtemp(prefix="vpb-")
        self.rx_conn, rx_child = mpc.Pipe()
        self.tx_conn, tx_child = mpc.Pipe()
        self.rx = mpc.Process(target=receiver_main, args=(rx_child,), daemon=True, name="bench-rx")
        self.tx = mpc.Process(target=sender_main, args=(tx_child,), daemon=True, name="bench-tx")
        self.rx.start()
        self.tx.start()
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
        self.n = 0

    def _get(self, conn: Any, what: str) -> Any:
        if not conn.poll(RESULT_TIMEOUT_S):
            raise RuntimeError(f"no {what} from a worker within {RESULT_TIMEOUT_S:.0f}s")
        try:
            tag, val = conn.recv()
        except EOFError:
            raise RuntimeError("a worker process died (its traceback is above)") from None
        assert tag == what, (tag, what)
        return val

    def run(self, impl: str, transport: str, res: str, mode: str, seconds: float = 1.0, warm_s: float = 0.2,
            rate: float = 100.0, n_lat: int = 100, hdr_bytes: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        self.n += 1
        endpoint = f"ipc://{self.tmp}/t{self.n}.sock" if transport == "ipc" else "tcp://127.0.0.1:*"
        self.rx_conn.send(("run", impl, endpoint, mode, warm_s))
        endpoint = self._get(self.rx_conn, "ready")
        self.tx_conn.send(("run", impl, endpoint, res, mode, seconds + warm_s, rate, n_lat, hdr_bytes))
        sent = self._get(self.tx_conn, "sent")
        got = self._get(self.rx_conn, "result")
        return sent, got

    def close(self) -> None:
        for conn in (self.tx_conn, self.rx_conn):
            try:
                conn.send(("quit",))
            except OSError:
                pass
        for p in (self.tx, self.rx):
            p.join(5)
            if p.is_alive():
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _codec_cost(base_us: dict[tuple[str, str], float]) -> None:
    """In-process, hot: what vidpipe's header costs per frame against the baseline's struct header."""
    import timeit

    import numpy as np

    from pipeline.protocol import Frame, decode, encode

    class Part:  # stands in for a received zmq.Frame
        def __init__(self, data: Any) -> None:
            self.buffer = memoryview(data).cast("B")

    dets = _detections()
    img = np.zeros((720, 1280, 3), np.uint8)

    def vidpipe() -> None:
        ts = time.monotonic_ns() / 1e9
        parts = encode(Frame("cam0", 1, 0.04, ts, 1280, 720, img, detections=dets))
        m = decode([Part(parts[0]), Part(parts[1])])
        m.image[0, 0, 0]

    def baseline() -> None:
        parts = [BASE_HDR.pack(1, time.monotonic_ns()), img]
        BASE_HDR.unpack(Part(parts[0]).buffer)
        Part(parts[1]).buffer[0]

    n = 2000
    t_b = min(timeit.repeat(baseline, number=n, repeat=5)) / n * 1e6
    t_v = min(timeit.repeat(vidpipe, number=n, repeat=5)) / n * 1e6
    hdr = len(encode(Frame("cam0", 1, 0.04, 0.0, 1280, 720, img, detections=dets))[0])
    shares = ", ".join(f"{res} {tr} {(t_v - t_b) / us * 100:.1f}%" for (res, tr), us in base_us.items() if us)
    print(f"Header codec, in-process and hot: vidpipe Frame encode+decode ({hdr}-byte msgpack header, {N_BOXES} boxes) "
          f"{t_v:.1f} us vs struct header {t_b:.1f} us ({t_v / t_b:.0f}x);\n"
          f"  the difference as a share of the baseline's time per frame: {shares}")


def _table(rows: list[list[str]], right_from: int = 2) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        cells = [c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _spread(vals: list[float]) -> str:
    med = statistics.median(vals)
    return f"{(max(vals) - min(vals)) / med * 100:.0f}%" if med else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short run (~10 s)")
    p.add_argument("--rounds", type=int, help="interleaved baseline/vidpipe rounds per case (default 5; quick 2)")
    p.add_argument("--seconds", type=float, help="measured seconds per throughput run (default 0.6; quick 0.25)")
    p.add_argument("--latency-frames", type=int, help="latency samples per case and impl (default 250; quick 40)")
    p.add_argument("--base-header-bytes", type=int, default=0,
                   help="baseline header size: 0 (default) pads it to vidpipe's header size so that both send the "
                        "same bytes; 16 is the bare struct (on tcp a tiny first part was measured to be slower)")
    p.add_argument("--rate", type=float, default=100.0, help="frames/s sent in the latency test (default 100)")
    p.add_argument("--res", nargs="+", choices=list(RESOLUTIONS), default=list(RESOLUTIONS))
    p.add_argument("--transport", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    p.add_argument("--glibc-malloc", action="store_true",
                   help="run the workers with glibc's malloc defaults (as stages run today): results then swing "
                        "with page faults in the receiver, see the faults/f column")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--no-throughput", action="store_true")
    a = p.parse_args(argv)
    rounds = a.rounds or (2 if a.quick else 5)
    seconds = a.seconds or (0.25 if a.quick else 0.6)
    warm = 0.1 if a.quick else 0.15
    n_lat = a.latency_frames or (40 if a.quick else 250)

    import zmq

    print(f"vidpipe one-hop transport benchmark: pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, "
          f"{os.cpu_count()} CPUs, HWM {HWM}, {rounds} interleaved rounds")
    base_hdr = 0
    cases = [(r, t) for r in a.res for t in a.transport]
    t_begin = time.monotonic()
    env = {} if a.glibc_malloc else TUNED_MALLOC
    print("worker processes: " + (" ".join(f"{k}={v}" for k, v in env.items()) if env else "glibc malloc defaults")
          + " (see --glibc-malloc)")
    bench = Bench(env)
    try:
        if not a.no_throughput:
            base_us: dict[tuple[str, str], float] = {}
            fps: dict[tuple[str, str, str], list[float]] = {}
            cpu: dict[tuple[str, str, str, str], list[float]] = {}
            for rnd in range(rounds):
                for res, tr in cases:
                    # alternate which goes first, so a drift in machine load favours neither
                    order = IMPLS if rnd % 2 == 0 else IMPLS[::-1]
                    for impl in order:
                        sent, got = bench.run(impl, tr, res, "throughput", seconds, warm, hdr_bytes=a.base_header_bytes)
                        if impl == "baseline":
                            base_hdr = sent["hdr_bytes"]
                        fps.setdefault((res, tr, impl), []).append(got["fps"])
                        cpu.setdefault((res, tr, impl, "tx"), []).append(sent["cpu_us"])
                        cpu.setdefault((res, tr, impl, "rx"), []).append(got["cpu_us"])
                        cpu.setdefault((res, tr, impl, "flt"), []).append(got["faults"])
            print(f"\nThroughput, frames/s (median of {rounds} x {seconds:g}s; spread = (max-min)/median; "
                  f"baseline header {base_hdr} bytes), target vidpipe/baseline >= {TARGET}")
            rows = [["res", "transport", "baseline fps", "spread", "vidpipe fps", "spread", "ratio", "",
                     "per-round ratios", "GB/s base", "tx cpu us/f b|v", "rx cpu us/f b|v", "rx faults/f b|v"]]
            failed = 0
            for res, tr in cases:
                b, v = fps[(res, tr, "baseline")], fps[(res, tr, "vidpipe")]
                mb, mv = statistics.median(b), statistics.median(v)
                ratio = mv / mb if mb else 0.0
                ok = ratio >= TARGET
                failed += not ok
                w, h = RESOLUTIONS[res]
                txb, txv = statistics.median(cpu[(res, tr, "baseline", "tx")]), statistics.median(cpu[(res, tr, "vidpipe", "tx")])
                rxb, rxv = statistics.median(cpu[(res, tr, "baseline", "rx")]), statistics.median(cpu[(res, tr, "vidpipe", "rx")])
                paired = sorted(x / y for x, y in zip(v, b) if y)
                base_us[(res, tr)] = 1e6 / mb if mb else 0.0
                rows.append([res, tr, f"{mb:.0f}", _spread(b), f"{mv:.0f}", _spread(v), f"{ratio:.2f}",
                             "PASS" if ok else "FAIL", " ".join(f"{x:.2f}" for x in paired), f"{mb * w * h * 3 / 1e9:.2f}",
                             f"{txb:.0f} | {txv:.0f}", f"{rxb:.0f} | {rxv:.0f}",
                             f"{statistics.median(cpu[(res, tr, 'baseline', 'flt')]):.0f} | "
                             f"{statistics.median(cpu[(res, tr, 'vidpipe', 'flt')]):.0f}"])
            print(_table(rows))
            print("(ratio: of the medians; per-round ratios: vidpipe/baseline of each interleaved pair, sorted;\n"
                  " cpu us/f: process CPU time per frame incl. the libzmq I/O thread; rx faults/f: minor page faults\n"
                  " per frame in the receiver (a 1080p frame is 1519 pages); each pair is baseline | vidpipe)")
            _codec_cost(base_us)

        if not a.no_latency:
            lat: dict[tuple[str, str, str], list[Any]] = {}
            per = max(1, n_lat // rounds)
            for rnd in range(rounds):
                for res, tr in cases:
                    order = IMPLS if rnd % 2 == 0 else IMPLS[::-1]
                    for impl in order:
                        sent, got = bench.run(impl, tr, res, "latency", rate=a.rate, n_lat=per, hdr_bytes=a.base_header_bytes)
                        if impl == "baseline":
                            base_hdr = sent["hdr_bytes"]
                        lat.setdefault((res, tr, impl), []).append(got["lat_ns"])
            import numpy as np

            print(f"\nLatency per hop, microseconds ({per * rounds} frames at {a.rate:g}/s per cell, "
                  f"from before encode to after decode and touch; baseline header {base_hdr} bytes)")
            rows = [["res", "transport", "base p50", "vidpipe p50", "added p50", "ratio p50",
                     "base p99", "vidpipe p99", "added p99"]]
            for res, tr in cases:
                b = np.concatenate(lat[(res, tr, "baseline")]) / 1e3
                v = np.concatenate(lat[(res, tr, "vidpipe")]) / 1e3
                b50, b99 = np.percentile(b, [50, 99])
                v50, v99 = np.percentile(v, [50, 99])
                rows.append([res, tr, f"{b50:.0f}", f"{v50:.0f}", f"{v50 - b50:+.0f}", f"{v50 / b50:.2f}",
                             f"{b99:.0f}", f"{v99:.0f}", f"{v99 - b99:+.0f}"])
            print(_table(rows))
    finally:
        bench.close()
    print(f"\n(total {time.monotonic() - t_begin:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
