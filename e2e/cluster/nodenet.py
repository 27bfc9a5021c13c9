"""The one link between a real node's network namespace and the host: a veth pair and a route.

Pods live on a CNI bridge inside the node's own network namespace (see ``realnode``). The
kubelet, the API server and the tests are on the host's network, and they need to reach pod IPs
(httpGet probes, a test calling a server in a pod). So the node gets a veth pair: the host end
carries a /30 and a route to the node's pod subnet, the node end forwards to the bridge. No
iptables rule and no host sysctl is involved (the host only sends to and receives from the
veth; forwarding is switched on in the node's namespace, where it is a per-namespace setting).
Deleting the namespace deletes both ends, and the route with them; ``unlink`` does it early.

Each node draws its subnets from its workdir name, so that two nodes (a test session and a demo)
can run side by side: pods in ``10.88.<n>.0/24``, the link in ``10.89.<n>.0/30``.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass

# Every real node's pod subnet is a /24 of this range (the cluster DNS serves its reverse zone).
POD_NETWORK = "10.88.0.0/16"


@dataclass(frozen=True)
class NodeNetwork:
    index: int

    @classmethod
    def for_name(cls, name: str) -> NodeNetwork:
        return cls(1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 250)

    @property
    def pod_subnet(self) -> str:
        return f"10.88.{self.index}.0/24"

    @property
    def host_link(self) -> str:
        return f"rn-host-{self.index}"

    @property
    def host_ip(self) -> str:
        return f"10.89.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.89.{self.index}.2"

    def conflicts(self) -> str:
        """What on the host already uses this node's link or subnets ("" when nothing does)."""
        routes = _ip("route", "show", "to", "match", self.pod_subnet.replace("0/24", "1")).stdout
        links = _ip("-br", "link", "show", self.host_link, check=False).stdout
        return "\n".join(r for r in routes.splitlines() if not r.startswith("default")) + links

    def link(self, holder_pid: int) -> None:
        """Create the pair with its node end inside the namespace of ``holder_pid``."""
        node = ["nsenter", f"--target={holder_pid}", "--net", "--", "ip"]
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "host0", "netns", str(holder_pid))
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _run([*node, "addr", "add", f"{self.node_ip}/30", "dev", "host0"])
        _run([*node, "link", "set", "host0", "up"])
        _ip("route", "add", self.pod_subnet, "via", self.node_ip, "dev", self.host_link)

    def exists(self) -> bool:
        return _ip("link", "show", self.host_link, check=False).returncode == 0

    def unlink(self) -> None:
        """Delete the pair now; tolerated when the kernel is deleting it already (the holder's
        network namespace is torn down asynchronously after its last process exits)."""
        if self.exists():
            proc = _ip("link", "delete", self.host_link, check=False)
            if proc.returncode != 0 and self.exists():
                raise RuntimeError(f"ip link delete {self.host_link}: {proc.stderr.strip()}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check=check)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc
