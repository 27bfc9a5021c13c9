"""Cluster DNS for the real node: CoreDNS's ``kubernetes`` plugin, serving ``cluster.local``
from the e2e API server.

Pods on the real node resolve Services by name the way they would in any cluster (KubeRay's
workers join their head at ``<cluster>-head-svc.<ns>.svc.cluster.local``, a headless Service
whose answer is the head pod's IP). CoreDNS is built from its Go module (``tools/coredns``,
with only the plugins this file's Corefile names) and runs on the host's network, bound to the
host's end of the node's link (``NodeNetwork.host_ip``), which pods reach through their default
route; it listens on nothing else. It answers only for the cluster domain and the reverse zones
of the Service and pod ranges: any other name gets REFUSED, since the e2e tier has no upstream
resolver to forward to.

CoreDNS reads the API server as its own user, with a client certificate from the control
plane's CA, bound to a ClusterRole that may only list and watch what the kubernetes plugin
reads (the same resources as upstream's ``system:coredns`` role).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster.controlplane import POD_CIDR, SERVICE_CIDR, ControlPlane, write_kubeconfig
from e2e.cluster.nodenet import POD_NETWORK

CLUSTER_DOMAIN = "cluster.local"
DNS_USER = "recserve-e2e:coredns"
# What the kubernetes plugin lists and watches; nothing else, and no verb but list and watch.
DNS_RULES = [
    {
        "apiGroups": [""],
        "resources": ["endpoints", "services", "pods", "namespaces"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
]
# A name every cluster serves (the API server's own Service): CoreDNS answering it for real
# means its kubernetes plugin has synced with the API server.
PROBE_NAME = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"


def reverse_zones(cidrs: Iterable[str]) -> list[str]:
    """The in-addr.arpa zones covering ``cidrs``: DNS delegates reverse zones by whole
    octets, so a range whose prefix is not a multiple of 8 becomes the zones of its subnets at
    the next octet boundary."""
    zones: list[str] = []
    for cidr in cidrs:
        net = ipaddress.IPv4Network(cidr)
        prefix = -(-net.prefixlen // 8) * 8
        for sub in net.subnets(new_prefix=prefix):
            octets = str(sub.network_address).split(".")[: prefix // 8]
            zone = ".".join([*reversed(octets), "in-addr.arpa"])
            if zone not in zones:
                zones.append(zone)
    return zones


def corefile(bind_ip: str, kubeconfig: Path, zones: Iterable[str]) -> str:
    """One server block for the cluster domain and ``zones``, on ``bind_ip`` port 53 (UDP and
    TCP) only. ``pods insecure`` answers ``<a-b-c-d>.<ns>.pod.cluster.local`` as kube-dns did;
    a 5 s TTL keeps a re-created pod's new IP from being cached for long."""
    served = [CLUSTER_DOMAIN, *zones]
    return (
        f"{' '.join(f'{zone}:53' for zone in served)} {{\n"
        f"    bind {bind_ip}\n"
        "    errors\n"
        "    log\n"
        f"    kubernetes {' '.join(served)} {{\n"
        f"        kubeconfig {kubeconfig}\n"
        "        pods insecure\n"
        "        ttl 5\n"
        "    }\n"
        "}\n"
    )


def cluster_zones(node_pod_network: str = POD_NETWORK) -> list[str]:
    """The reverse zones of the control plane's Service range, kwok's pod range and the real
    nodes' pod range."""
    return reverse_zones([SERVICE_CIDR, POD_CIDR, node_pod_network])


def rbac_manifests(user: str = DNS_USER) -> list[dict[str, Any]]:
    """A ClusterRole with ``DNS_RULES`` and its binding to ``user``, both named after it."""
    meta = {"name": user, "labels": {"app.kubernetes.io/part-of": "recserve-e2e"}}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta,
        "rules": DNS_RULES,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    return [role, binding]


def dns_identity(plane: ControlPlane) -> Path:
    """A kubeconfig for CoreDNS: a client certificate for ``DNS_USER`` from the control plane's
    CA, and the least-privilege role applied (idempotent: every real node of a session calls it)."""
    assert plane.pki is not None
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac_manifests()))
    client = plane.pki.issue("coredns", DNS_USER, client=True)
    return write_kubeconfig(
        plane.workdir / "kubeconfigs" / "coredns", plane.server, plane.pki.ca, DNS_USER, client
    )


def a_query(name: str, query_id: int) -> bytes:
    """A recursive-desired DNS query for ``name``'s A records."""
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.rstrip(".").split("."))
    return struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)


def parse_a_answer(reply: bytes, query_id: int) -> tuple[int, list[str]]:
    """(rcode, the A records' addresses) of a reply to ``a_query``."""
    rid, flags, qdcount, ancount = struct.unpack(">HHHH", reply[:8])
    if rid != query_id or not flags & 0x8000:
        raise ValueError(f"not a reply to query {query_id}")
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(reply, pos) + 4
    addresses = []
    for _ in range(ancount):
        pos = _skip_name(reply, pos)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", reply[pos : pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[pos : pos + 4]))
        pos += length
    return flags & 0xF, addresses


def _skip_name(msg: bytes, pos: int) -> int:
    while msg[pos] != 0:
        if msg[pos] & 0xC0 == 0xC0:  # a compression pointer ends the name
            return pos + 2
        pos += msg[pos] + 1
    return pos + 1


def resolve(server: str, name: str, timeout: float = 2.0) -> tuple[int, list[str]]:
    """Ask ``server`` (port 53, UDP) for ``name``'s A records: (rcode, addresses)."""
    query_id = secrets.randbelow(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(a_query(name, query_id), (server, 53))
        return parse_a_answer(sock.recv(4096), query_id)
