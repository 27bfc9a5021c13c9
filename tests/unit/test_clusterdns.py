"""The real node's cluster DNS, checked without CoreDNS: its Corefile, its reverse zones, its
RBAC role, and the tiny DNS client that tells when it is ready. CoreDNS itself answers pods in
the e2e test (e2e/test_real_node.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from e2e.cluster import clusterdns
from e2e.cluster.nodenet import POD_NETWORK

pytestmark = pytest.mark.unit


def test_reverse_zones_are_whole_octets() -> None:
    assert clusterdns.reverse_zones(["10.88.0.0/16"]) == ["88.10.in-addr.arpa"]
    assert clusterdns.reverse_zones(["127.96.0.0/24"]) == ["0.96.127.in-addr.arpa"]
    assert clusterdns.reverse_zones(["10.96.0.0/12"]) == [f"{n}.10.in-addr.arpa" for n in range(96, 112)]
    assert clusterdns.reverse_zones(["10.0.0.0/8", "10.0.0.0/8"]) == ["10.in-addr.arpa"]


def test_cluster_zones_cover_services_and_both_pod_ranges() -> None:
    zones = clusterdns.cluster_zones()
    assert clusterdns.reverse_zones([POD_NETWORK])[0] in zones
    assert "0.96.127.in-addr.arpa" in zones and "16.127.in-addr.arpa" in zones


def test_corefile_binds_one_address_and_serves_only_its_zones() -> None:
    text = clusterdns.corefile("10.89.7.1", Path("/w/coredns.kubeconfig"), ["88.10.in-addr.arpa"])
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "cluster.local:53 88.10.in-addr.arpa:53 {"
    assert "bind 10.89.7.1" in lines
    assert "kubernetes cluster.local 88.10.in-addr.arpa {" in lines
    assert "kubeconfig /w/coredns.kubeconfig" in lines
    assert not any(line.startswith(("forward", "health", "ready", ".:")) for line in lines)
    assert text.count("{") == text.count("}") == 2


def test_dns_role_only_lists_and_watches() -> None:
    role, binding = clusterdns.rbac_manifests()
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"list", "watch"}
    resources = {res for rule in role["rules"] for res in rule["resources"]}
    assert resources == {"endpoints", "endpointslices", "services", "pods", "namespaces"}
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == clusterdns.DNS_USER
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": clusterdns.DNS_USER}
    ]


def _name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def test_a_query_and_its_reply() -> None:
    query = clusterdns.a_query("kubernetes.default.svc.cluster.local.", 0x1234)
    assert query[:12] == struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert query[12:] == _name("kubernetes.default.svc.cluster.local") + struct.pack(">HH", 1, 1)
    question = query[12:]
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + bytes([127, 96, 0, 1])
    reply = struct.pack(">HHHHHH", 0x1234, 0x8580, 1, 1, 0, 0) + question + answer
    assert clusterdns.parse_a_answer(reply, 0x1234) == (0, ["127.96.0.1"])
    refused = struct.pack(">HHHHHH", 0x1234, 0x8105, 1, 0, 0, 0) + question
    assert clusterdns.parse_a_answer(refused, 0x1234) == (5, [])
    with pytest.raises(ValueError):
        clusterdns.parse_a_answer(reply, 0x4321)
