"""Hosts for tests on one machine: Linux network namespaces joined by veth pairs to a bridge.

Each host has its own network stack (its own loopback, its own address on a private /24), so stages in
different namespaces can reach each other only over TCP through the bridge, as on separate machines.
Needs root and iproute2; everything made here is removed by `close()`.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

IP = shutil.which("ip", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if IP is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


class Hosts:
    def __init__(self, count: int) -> None:
        assert IP is not None
        tag = "%04x" % random.randrange(1 << 16)
        self.subnet = random.randrange(100, 250)
        self.bridge = f"vpbr{tag}"
        self.names = [f"vp{tag}h{i}" for i in range(count)]
        self.addresses = [f"10.77.{self.subnet}.{i + 2}" for i in range(count)]
        self._links: list[str] = []
        try:
            self._ip("link", "add", self.bridge, "type", "bridge")
            self._ip("addr", "add", f"10.77.{self.subnet}.1/24", "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")
            for i, (ns, addr) in enumerate(zip(self.names, self.addresses)):
                outer, inner = f"vh{tag}{i}", f"vn{tag}{i}"
                self._ip("netns", "add", ns)
                self._ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                self._links.append(outer)
                self._ip("link", "set", inner, "netns", ns)
                self._ip("link", "set", outer, "master", self.bridge, "up")
                self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
                self._ip("-n", ns, "link", "set", inner, "up")
                self._ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def _ip(self, *args: str) -> None:
        res = subprocess.run([IP, *args], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")

    def command(self, host: int, argv: list[str]) -> list[str]:
        """`argv` run inside host `host`'s namespace."""
        assert IP is not None
        return [IP, "netns", "exec", self.names[host], *argv]

    def close(self) -> None:
        assert IP is not None
        for ns in self.names:
            subprocess.run([IP, "netns", "del", ns], capture_output=True)
        for link in self._links:
            subprocess.run([IP, "link", "del", link], capture_output=True)
        subprocess.run([IP, "link", "del", self.bridge], capture_output=True)
