"""ZeroMQ sockets between stages, from endpoint strings in the config.

An endpoint is a ZeroMQ address, optionally prefixed `@` (bind) or `>` (connect),
as in CZMQ. Without a prefix the receiving side of PUSH/PULL binds and the
sender connects, so many per-camera decoders can feed one infer stage; a PUB
binds and its SUBs connect. `ipc://` and `tcp://` go through the same code.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from typing import Any, Callable

import zmq
import zmq.utils.monitor

from pipeline.protocol import Message, ProtocolError, decode, encode

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


Secure = Callable[[zmq.Socket], None]
"""Sets a tcp:// socket's security (pipeline.curve) before it binds or connects."""


def is_loopback(addr: str) -> bool:
    """Whether a tcp:// address can only be reached from this host."""
    host = addr[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "lo", "::1"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # *, an interface name, a host name: reachable from elsewhere


def open_socket(
    ctx: zmq.Context, pattern: str, endpoint: str, hwm: int, linger_ms: int = 0, max_message_bytes: int = -1, secure: Secure | None = None
) -> zmq.Socket:
    bind, addr = parse_endpoint(endpoint, pattern)
    sock = ctx.socket(_SOCKET_TYPES[pattern])
    if secure is not None and addr.startswith("tcp://"):
        secure(sock)
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


_REFUSALS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",  # the ZAP handler said no: an unknown key
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake",  # no keys, a wrong server key, not ZMTP at all
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake",
}


class _Socket:
    sock: zmq.Socket
    ipc_path: str | None
    monitor: zmq.Socket | None = None

    def _watch(self) -> None:
        """Follow the socket's connection events: ends of connections, and refused handshakes."""
        self._events = {"disconnected": 0, "auth": 0, "handshake": 0}
        mask = zmq.EVENT_DISCONNECTED
        for event in _REFUSALS:
            mask |= event
        self.monitor = self.sock.get_monitor_socket(mask)

    def _drain(self) -> None:
        while self.monitor is not None and self.monitor.poll(0):
            event = int(zmq.utils.monitor.parse_monitor_message(self.monitor.recv_multipart())["event"])
            self._events[_REFUSALS.get(event, "disconnected")] += 1

    def disconnections(self) -> int:
        """Peers whose connection ended since the last call (gone away, or dropped for an oversized message)."""
        self._drain()
        n, self._events["disconnected"] = self._events["disconnected"], 0
        return n

    def refused(self) -> dict[str, int]:
        """Peers whose handshake failed since the last call, by reason: auth (unknown key), handshake (no or wrong keys)."""
        self._drain()
        out = {k: self._events[k] for k in ("auth", "handshake")}
        self._events.update(auth=0, handshake=0)
        return out

    def close(self) -> None:
        """Close; a bound ipc endpoint's socket file is removed (ZeroMQ leaves it behind)."""
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close()
        self.sock.close()
        if self.ipc_path:
            try:
                os.unlink(self.ipc_path)
            except FileNotFoundError:
                pass


class Sender(_Socket):
    """PUSH (main path, back-pressure) or PUB (observers, may drop)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, pattern: str = PUSH, hwm: int = 4, linger_ms: int = 0, secure: Secure | None = None):
        if pattern not in (PUSH, PUB):
            raise ValueError(f"sender pattern must be push or pub, not {pattern!r}")
        self.endpoint = endpoint
        self.pattern = pattern
        self.sock = open_socket(ctx, pattern, endpoint, hwm, linger_ms, secure=secure)
        self.ipc_path = bound_ipc_path(endpoint, pattern)
        if pattern == PUB and secure is not None:
            self._watch()  # a publisher is a CURVE server: it counts the observers it refuses

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

    def __init__(
        self, ctx: zmq.Context, endpoint: str, pattern: str = PULL, hwm: int = 4, max_message_bytes: int = -1,
        secure: Secure | None = None, server_name: str | None = None,
    ):  # fmt: skip
        if pattern not in (PULL, SUB):
            raise ValueError(f"receiver pattern must be pull or sub, not {pattern!r}")
        self.endpoint = endpoint
        self.pattern = pattern
        self.sock = open_socket(ctx, pattern, endpoint, hwm, max_message_bytes=max_message_bytes, secure=secure)
        self.ipc_path = bound_ipc_path(endpoint, pattern)
        # Who a message comes from, when CURVE says so: the User-Id the ZAP handler gave the peer (a server),
        # or the one server whose key a client pinned. A message claiming another sender is refused.
        self.authenticated = secure is not None and parse_endpoint(endpoint, pattern)[1].startswith("tcp://")
        self.server_name = server_name
        # ZeroMQ drops a peer that sends more than the size cap without telling the application: its
        # disconnections are how such a message is seen (and counted) at all.
        self._watch()

    def recv(self, timeout_ms: int) -> Message | None:
        """The next message, or None after timeout_ms. Raises ProtocolError for a bad message, and for one
        whose sender is not the peer CURVE authenticated."""
        if timeout_ms >= 0 and not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        parts: list[Any] = self.sock.recv_multipart(copy=False)
        msg = decode(parts)
        if self.authenticated:
            peer = self.server_name or parts[0].get("User-Id")
            if msg.sender != peer:
                raise ProtocolError("sender", f"a message claiming to come from {msg.sender!r} on the connection of {peer!r}")
        return msg
