"""The files a real node runs from: containerd's config, the CNI network, the kubelet's config.

Kept apart from ``realnode`` (which starts and stops the processes) so that what the node is
told can be read, and unit-tested, without root or a runtime. Every path points into the node's
workdir and every setting that would touch the host is switched off; the reasons are next to
each setting.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "localhost/recserve/pause:v1"


def containerd_major(containerd: Path) -> int:
    out = subprocess.run([str(containerd), "--version"], capture_output=True, text=True, check=True).stdout
    version = next(word for word in out.split() if word[:1] in "v0123456789" and "." in word)
    return int(version.lstrip("v").split(".")[0])


def containerd_config(workdir: Path, containerd: Path, runc: Path, stream_address: str) -> str:
    """containerd's config: its own root, state and sockets, runc with its state in the
    workdir, the local pause image, Debian's CNI plugins; config version 2 for containerd 1.x,
    3 for 2.x (whose CRI plugin is split into images and runtime). The streaming server (exec,
    attach, port-forward) listens on the node's end of its link, where the kubelet, on the
    host's network, can reach it."""
    stream = {"stream_server_address": stream_address, "stream_server_port": "0"}
    cri_runtime = {
        "restrict_oom_score_adj": True,
        "cni": {"bin_dir": "/usr/lib/cni", "conf_dir": str(workdir / "cni")},
        "containerd": {
            "default_runtime_name": "runc",
            "runtimes": {
                "runc": {
                    "runtime_type": "io.containerd.runc.v2",
                    "options": {
                        "BinaryName": str(runc),
                        "Root": str(workdir / "runc"),
                        "SystemdCgroup": False,
                    },
                }
            },
        },
    }
    if containerd_major(containerd) >= 2:
        cri_runtime["cni"] = {"bin_dirs": ["/usr/lib/cni"], "conf_dir": str(workdir / "cni")}
        plugins: dict[str, Any] = {
            "io.containerd.cri.v1.images": {"pinned_images": {"sandbox": PAUSE_IMAGE}},
            "io.containerd.cri.v1.runtime": cri_runtime,
            "io.containerd.grpc.v1.cri": stream,
        }
        version = 3
    else:
        plugins = {"io.containerd.grpc.v1.cri": {"sandbox_image": PAUSE_IMAGE, **stream, **cri_runtime}}
        version = 2
    lines = [
        f"version = {version}",
        f'root = "{workdir / "containerd" / "root"}"',
        f'state = "{workdir / "containerd" / "state"}"',
        "[grpc]",
        f'  address = "{workdir / "containerd.sock"}"',
        "[ttrpc]",
        f'  address = "{workdir / "containerd.sock"}.ttrpc"',
        "[debug]",
        '  level = "info"',
    ]
    lines += _toml_tables("plugins", plugins)
    return "\n".join(lines) + "\n"


def _toml_tables(prefix: str, table: dict[str, Any]) -> list[str]:
    """Just enough TOML for containerd's nested plugin tables (quoted keys, scalars)."""
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    lines = [f"[{prefix}]"] if scalars else []
    for key, value in scalars.items():
        lines.append(f"  {key} = {json.dumps(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            lines += _toml_tables(f'{prefix}."{key}"', value)
    return lines


def cni_config(workdir: Path, subnet: str) -> dict[str, Any]:
    """A bridge network for pods. It lives in containerd's own network namespace (a pod's
    veth pair and the bridge are made where the CNI plugins run), so the bridge, the routes and
    the forwarding sysctl never touch the host's network and vanish with that namespace; the
    host reaches the pods through the node's one veth link (``nodenet``)."""
    return {
        "cniVersion": "0.4.0",
        "name": "recserve-realnode",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "recserve0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(workdir / "cni-ipam"),
                },
            }
        ],
    }


def kubelet_config(workdir: Path, cgroup_root: str, port: int, healthz_port: int) -> dict[str, Any]:
    """Standalone kubelet: static pods only, cgroupfs on this cgroup v1 host, nothing written
    to host sysctls or iptables, its API on loopback without authentication (tests only).

    ``cpuCFSQuota: false``: a container's CPU limit is not enforced by a CFS quota. This node
    shares a 2-core machine with the control plane and the tests, and the pods it runs (a Ray
    head and two workers) ask for fractions of a CPU; a quota would throttle them to their
    limits in 100 ms periods even while cores sit idle, so their start-up (Python imports, Ray's
    processes) would take many times longer. Requests still drive scheduling and CPU shares."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{workdir / 'containerd.sock'}",
        "staticPodPath": str(workdir / "manifests"),
        "fileCheckFrequency": "2s",
        "podLogsDir": str(workdir / "pod-logs"),
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "protectKernelDefaults": True,
        "makeIPTablesUtilChains": False,
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "cpuCFSQuota": False,
        "resolvConf": "/etc/resolv.conf",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
    }
