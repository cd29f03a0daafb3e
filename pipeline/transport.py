"""ZeroMQ sockets between stages, from endpoint strings in the config.

An endpoint is a ZeroMQ address, optionally prefixed `@` (bind) or `>` (connect),
as in CZMQ. Without a prefix the receiving side of PUSH/PULL binds and the
sender connects, so many per-camera decoders can feed one infer stage; a PUB
binds and its SUBs connect. `ipc://` and `tcp://` go through the same code.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import zmq

from pipeline.protocol import Message, decode, encode

PUSH, PULL, PUB, SUB = "push", "pull", "pub", "sub"
_SOCKET_TYPES = {PUSH: zmq.PUSH, PULL: zmq.PULL, PUB: zmq.PUB, SUB: zmq.SUB}
_BINDS_BY_DEFAULT = {PULL, PUB}
KEEPALIVE_IDLE_S, KEEPALIVE_INTVL_S, KEEPALIVE_CNT = 30, 5, 4  # a dead idle peer is noticed within ~50 s


def parse_endpoint(spec: str, pattern: str) -> tuple[bool, str]:
    """(bind?, address) for an endpoint spec; raises ValueError naming the problem."""
    bind = pattern in _BINDS_BY_DEFAULT
    addr = spec
    if spec.startswith("@"):
        bind, addr = True, spec[1:]
    elif spec.startswith(">"):
        bind, addr = False, spec[1:]
    scheme, sep, rest = addr.partition("://")
    if not sep or scheme not in ("ipc", "tcp", "inproc") or not rest:
        raise ValueError(f"endpoint {spec!r}: expected ipc://PATH or tcp://HOST:PORT, optionally prefixed @ or >")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not (port == "*" or port.isdigit()):
            raise ValueError(f"endpoint {spec!r}: tcp endpoints need HOST:PORT")
        if not bind and (host == "*" or port == "*"):
            raise ValueError(f"endpoint {spec!r}: cannot connect to a wildcard address")
    if scheme == "ipc" and len(rest.encode()) > 100:
        raise ValueError(f"endpoint {spec!r}: ipc path longer than the 100 bytes a unix socket allows")
    return bind, addr


def bound_ipc_path(endpoint: str, pattern: str) -> str | None:
    """The socket file an endpoint binds, if it binds an ipc:// address."""
    bind, addr = parse_endpoint(endpoint, pattern)
    return addr[len("ipc://") :] if bind and addr.startswith("ipc://") else None


def ensure_private_dir(path: str) -> None:
    """The folder of ipc:// sockets, made private: created 0700; an existing one must be ours and not open to
    others, else another local user could have put their own socket where a stage will connect."""
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"ipc folder {path} is not a folder (a link or file put there?): refusing to use it")
    if st.st_uid != os.getuid():
        raise PermissionError(f"ipc folder {path} belongs to uid {st.st_uid}, not to this user ({os.getuid()}): refusing to use it")
    if st.st_mode & 0o077:
        raise PermissionError(f"ipc folder {path} has mode {stat.S_IMODE(st.st_mode):o}: others may reach its sockets; "
                              f"make it 0700 (chmod 700 {path}) or use another transport.run_dir")


def open_socket(ctx: zmq.Context, pattern: str, endpoint: str, hwm: int, linger_ms: int = 0, max_message_bytes: int = -1) -> zmq.Socket:
    bind, addr = parse_endpoint(endpoint, pattern)
    sock = ctx.socket(_SOCKET_TYPES[pattern])
    sock.setsockopt(zmq.LINGER, linger_ms)
    if max_message_bytes > 0:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # checked by ZeroMQ on the size field, before reading
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if pattern == SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if pattern == PUSH:
        # Queue only to connected peers, so an absent downstream blocks (replay) or sheds (live)
        # instead of filling a queue for a peer that may never come.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    if addr.startswith("tcp://"):
        # Across hosts a peer can vanish without closing its connection (a node lost, a cable pulled).
        # The kernel's keepalive probes notice an idle dead connection in about a minute. Not ZeroMQ's own
        # heartbeats: a receiver whose queue is full stops reading its socket, its PINGs go unanswered,
        # and the sender drops the connection with the messages in it (seen losing frames in replay).
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
    if bind:
        if addr.startswith("ipc://"):
            path = addr[len("ipc://") :]
            ensure_private_dir(os.path.dirname(path) or ".")
            if os.path.exists(path):
                os.unlink(path)  # a stale socket file from a killed process
        sock.bind(addr)
    else:
        sock.connect(addr)
    return sock


class _Socket:
    sock: zmq.Socket
    ipc_path: str | None

    def close(self) -> None:
        """Close; a bound ipc endpoint's socket file is removed (ZeroMQ leaves it behind)."""
        self.sock.close()
        if self.ipc_path:
            try:
                os.unlink(self.ipc_path)
            except FileNotFoundError:
                pass


class Sender(_Socket):
    """PUSH (main path, back-pressure) or PUB (observers, may drop)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, pattern: str = PUSH, hwm: int = 4, linger_ms: int = 0):
        if pattern not in (PUSH, PUB):
            raise ValueError(f"sender pattern must be push or pub, not {pattern!r}")
        self.endpoint = endpoint
        self.pattern = pattern
        self.sock = open_socket(ctx, pattern, endpoint, hwm, linger_ms)
        self.ipc_path = bound_ipc_path(endpoint, pattern)

    def send(self, msg: Message, with_pixels: bool = True, timeout_ms: int | None = None) -> bool:
        """Send one message. timeout_ms None blocks; 0 never waits. False when it could not be queued."""
        parts = encode(msg, with_pixels)
        if timeout_ms is not None and timeout_ms > 0:
            if not self.sock.poll(timeout_ms, zmq.POLLOUT):
                return False
            timeout_ms = 0
        flags = zmq.NOBLOCK if timeout_ms == 0 else 0
        try:
            self.sock.send_multipart(parts, flags=flags, copy=False)
        except zmq.Again:
            return False
        return True


class Receiver(_Socket):
    """PULL (main path) or SUB (observer)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, pattern: str = PULL, hwm: int = 4, max_message_bytes: int = -1):
        if pattern not in (PULL, SUB):
            raise ValueError(f"receiver pattern must be pull or sub, not {pattern!r}")
        self.endpoint = endpoint
        self.pattern = pattern
        self.sock = open_socket(ctx, pattern, endpoint, hwm, max_message_bytes=max_message_bytes)
        self.ipc_path = bound_ipc_path(endpoint, pattern)
        # ZeroMQ drops a peer that sends more than the size cap without telling the application: its
        # disconnections are how such a message is seen (and counted) at all.
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    def disconnections(self) -> int:
        """Peers whose connection ended since the last call (gone away, or dropped for an oversized message)."""
        n = 0
        while self.monitor.poll(0):
            self.monitor.recv_multipart()
            n += 1
        return n

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close()
        super().close()

    def recv(self, timeout_ms: int) -> Message | None:
        """The next message, or None after timeout_ms. Raises ProtocolError for a bad message."""
        if timeout_ms >= 0 and not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        parts: list[Any] = self.sock.recv_multipart(copy=False)
        return decode(parts)
