"""CURVE on tcp:// sockets: every stage has a key pair, and a stage talks only to the stages the config wires it to.

Keys live in one folder (`transport.curve_keys`), in ZeroMQ's certificate format (`vidpipe keys` writes them):
`NAME.key` holds stage NAME's public key, `NAME.key_secret` its secret key as well. Every host gets every
public key; a stage's secret key is needed only where that stage runs: in its `NAME.key_secret` there, or in
the environment variable VIDPIPE_CURVE_SECRET (Z85; a Kubernetes Secret).

Roles: the side that receives the main path (PULL) and a publisher (PUB) are CURVE servers; they answer only
the stages allowed to send to them (their upstream; the observers of a publisher), checked by a ZAP handler in
the stage's context, which names each accepted peer by its stage (the `User-Id` of its messages). The sending
side (PUSH) and an observer (SUB) are CURVE clients that know their server's public key, so nobody else can
stand in for it. Traffic is encrypted both ways. A peer without keys, with another key or expecting another
server fails its handshake: the server counts it (`vidpipe_peers_refused_total`) and never sees its messages.
ipc:// sockets need none of this: they live in a private folder (see transport.ensure_private_dir).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

log = logging.getLogger(__name__)

SECRET_ENV = "VIDPIPE_CURVE_SECRET"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks its authentication questions (RFC 27)


class CurveKeyError(ValueError):
    """A key that is missing or unreadable; the message names the file or variable."""


def public_key_path(folder: str | os.PathLike[str], name: str) -> Path:
    return Path(folder).expanduser() / f"{name}.key"


def make_keys(folder: str | os.PathLike[str], names: list[str]) -> list[Path]:
    """A new key pair for each name: NAME.key (public, 0644) and NAME.key_secret (0600). Refuses to overwrite."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        for path in (out / f"{name}.key", out / f"{name}.key_secret"):
            if path.exists():
                raise FileExistsError(f"{path} exists: remove it first to replace the key (its peers need the new public key)")
    made = []
    for name in names:
        public, secret = zmq.auth.create_certificates(str(out), name)
        os.chmod(secret, 0o600)
        made += [Path(public), Path(secret)]
    return made


def kubernetes_keys(names: list[str], namespace: str) -> str:
    """New key pairs for `names` as Kubernetes YAML: the public keys in ConfigMap vidpipe-curve-public, the
    secret keys in Secret vidpipe-curve-secret; a stage's pod mounts every public key and its own secret one."""
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        make_keys(tmp, names)
        public = {f"{n}.key": (Path(tmp) / f"{n}.key").read_text() for n in names}
        secret = {f"{n}.key_secret": (Path(tmp) / f"{n}.key_secret").read_text() for n in names}
    meta = {"namespace": namespace, "labels": {"app.kubernetes.io/part-of": "vidpipe"}}
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vidpipe-curve-public", **meta}, "data": public},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vidpipe-curve-secret", **meta}, "type": "Opaque", "stringData": secret},
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def load_public(folder: str | os.PathLike[str], name: str) -> bytes:
    path = public_key_path(folder, name)
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"no public key of stage {name}: {path} ({exc}); make one with: vidpipe keys {Path(folder)} {name}") from None
    return public


def load_secret(folder: str | os.PathLike[str], name: str, env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[bytes, bytes]:
    """(public, secret) of stage `name`: from $VIDPIPE_CURVE_SECRET when set, else NAME.key_secret in `folder`."""
    z85 = env.get(SECRET_ENV)
    if z85:
        try:
            secret = z85.strip().encode()
            return zmq.curve_public(secret), secret
        except (ValueError, zmq.ZMQError):
            raise CurveKeyError(f"{SECRET_ENV} is not a Z85 CURVE secret key (40 characters)") from None
    path = Path(folder).expanduser() / f"{name}.key_secret"
    try:
        public, maybe_secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"no secret key of stage {name}: {path} ({exc}) and {SECRET_ENV} is not set") from None
    if maybe_secret is None:
        raise CurveKeyError(f"{path} holds no secret key")
    return public, maybe_secret


@dataclass
class Curve:
    """One stage's keys and who may talk to it. `allowed[domain]` maps public key -> stage name."""

    name: str
    public: bytes
    secret: bytes
    allowed: dict[str, dict[bytes, str]] = field(default_factory=dict)

    def server(self, sock: zmq.Socket, domain: str, peers: dict[bytes, str]) -> None:
        """Make `sock` a CURVE server answering only `peers` (public key -> stage name)."""
        # ZAP hands over a client's key in binary; key files hold Z85 text.
        self.allowed[domain] = {z85.decode(k) if len(k) == 40 else k: name for k, name in peers.items()}
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.zap_domain = domain.encode()

    def client(self, sock: zmq.Socket, server_key: bytes) -> None:
        """Make `sock` a CURVE client of the server whose public key is `server_key`."""
        sock.curve_serverkey = server_key
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public


class ZapHandler:
    """Answers libzmq's authentication requests for one context (RFC 27), from `curve.allowed`."""

    def __init__(self, ctx: zmq.Context, curve: Curve) -> None:
        self.curve = curve
        self.refused = 0
        self._sock = ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(100):
                continue
            try:
                request = self._sock.recv_multipart()
            except zmq.ZMQError:
                return  # the context is ending
            self._sock.send_multipart(self.answer(request))

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The reply to one ZAP request: 200 with the peer's stage name as User-Id, or 400."""
        version, request_id = (request + [b"", b""])[:2]
        if len(request) < 6 or version != b"1.0":
            return [b"1.0", request_id, b"400", b"malformed request", b"", b""]
        domain, mechanism, credentials = request[2].decode("ascii", "replace"), request[5], request[6:]
        peers = self.curve.allowed.get(domain, {})
        name = peers.get(credentials[0]) if mechanism == b"CURVE" and len(credentials) == 1 else None
        if name is None:
            self.refused += 1
            if self.refused <= 10 or self.refused % 1000 == 0:
                log.warning("refused a %s peer on %s (%d refused so far): its key is not one of %s",
                            mechanism.decode("ascii", "replace"), domain, self.refused, ", ".join(sorted(peers.values())) or "none")  # fmt: skip
            return [b"1.0", request_id, b"400", b"unknown key", b"", b""]
        return [b"1.0", request_id, b"200", b"OK", name.encode(), b""]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
