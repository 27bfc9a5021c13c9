"""A real node on this machine: containerd plus a kubelet, running real containers with runc.

Groundwork for running e2e pods for real beside kwok's simulated ones. Everything the node
owns lives under one workdir (containerd's root, state and socket, runc's state, the kubelet's
root, pod logs, static pod manifests) and one cgroup root, ``/recserve-realnode-<id>`` in every
v1 hierarchy, so that teardown can remove all of it and nothing else.

Host state is protected three ways. containerd and the kubelet run inside one private mount
namespace, held open by a ``pause`` process: the mounts they make (container root filesystems,
volumes, network namespaces) are invisible to the host and go away with the namespace, and
/run, /var/lib and /var/log there are workdir folders. containerd also runs in a network
namespace of its own, where the CNI bridge and the pods' veths live; the kubelet stays on the
host's network to reach the API server, talks to containerd over its unix socket, and reaches
pods through one veth link with a route (``nodenet``), gone with the namespace. In the
mount namespace the six sysctl files the kubelet insists on (vm.overcommit_memory, kernel.panic, ...)
are covered by read-only files holding the values it wants, and ``protectKernelDefaults`` makes
it only check them: without that a kubelet rewrites those host sysctls. The kubelet's own
``oomScoreAdj`` is 0 and containerd's ``restrict_oom_score_adj`` is on, since root here has no
CAP_SYS_RESOURCE to lower an OOM score.

A node registered with an API server can also run the cluster's DNS (``clusterdns``: CoreDNS
on the host's end of its link); its kubelet then hands pods a resolv.conf that names it.

Command line:

    python -m e2e.cluster.realnode demo     # start, run a static busybox pod, show it, stop
    python -m e2e.cluster.realnode up       # start and leave running (prints the workdir)
    python -m e2e.cluster.realnode down DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster.clusterdns import CLUSTER_DOMAIN, PROBE_NAME, cluster_zones, corefile, resolve
from e2e.cluster.controlplane import BUILD_SCRIPT, BuildError, free_port
from e2e.cluster.nodeconfig import PAUSE_IMAGE, cni_config, containerd_config, kubelet_config
from e2e.cluster.nodenet import NodeNetwork
from e2e.cluster.ociimage import ImageSpec, write_archive
from e2e.cluster.process import Component, ComponentError, pid_alive, processes_using, wait_while_alive
from recserve_serving.waiting import wait_for

WORKDIR_PREFIX = "recserve-realnode-"
BUSYBOX_IMAGE = "localhost/recserve/busybox:v1"
CGROUP_FS = Path("/sys/fs/cgroup")
# What the kubelet's setupKernelTunables wants to find (k8s.io/component-helpers sysctl).
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# Host folders that the node's mount namespace sees as workdir folders instead.
PRIVATE_PATHS = ("/run", "/var/lib", "/var/log")
BUSYBOX_APPLETS = (
    "sh",
    "sleep",
    "echo",
    "cat",
    "ls",
    "mkdir",
    "hostname",
    "id",
    "ps",
    "wget",
    "nc",
    "httpd",
    "nslookup",
)


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    pause: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    busybox: Path
    coredns: Path | None

    @classmethod
    def ensure_built(cls, containerd_dir: Path | None = None, *, dns: bool = True) -> NodeBinaries:
        """Build the real-node components (instant when warm) and find the host's runtime
        packages. ``containerd_dir`` picks a containerd other than Debian's; ``dns`` also builds
        the opt-in cluster DNS (CoreDNS), which a node registered with ``dns_kubeconfig`` runs."""
        env = {**os.environ, "RECSERVE_E2E_REAL_NODE": "1" if dns else "0"}
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise BuildError(f"{BUILD_SCRIPT} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        dirs = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        runtime = (containerd_dir or Path("/usr/bin")).resolve()
        bins = cls(
            kubelet=Path(dirs["kubelet"]) / "kubelet",
            pause=Path(dirs["pause"]) / "pause",
            containerd=runtime / "containerd",
            containerd_shim=runtime / "containerd-shim-runc-v2",
            ctr=runtime / "ctr",
            runc=Path(shutil.which("runc") or "/usr/sbin/runc"),
            busybox=Path("/bin/busybox"),
            coredns=Path(dirs["coredns"]) / "coredns" if dns else None,
        )
        missing = [str(p) for p in bins.__dict__.values() if p is not None and not p.exists()]
        if missing:
            raise BuildError(
                "real-node binaries missing (apt-get install containerd runc busybox-static?): "
                + ", ".join(missing)
            )
        return bins


def busybox_pod(name: str, message: str) -> dict[str, Any]:
    """A pod on the node's bridge network that prints ``message`` and stays up."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", f"echo {message}; exec sleep 100000"],
                }
            ],
        },
    }


@dataclass(frozen=True)
class Registration:
    """How the kubelet joins an API server instead of running standalone: a kubeconfig whose
    client certificate says ``system:node:<name>`` in ``system:nodes`` (the Node authorizer and
    NodeRestriction admission then hold it to its own node), the CA that signs the API server's
    client certificate for kubelets (logs, exec), the labels and taints it registers with, and,
    for a node that runs the cluster DNS (``clusterdns``), CoreDNS's kubeconfig."""

    kubeconfig: Path
    client_ca: Path
    labels: dict[str, str]
    taints: list[dict[str, str]]
    dns_kubeconfig: Path | None = None


class RealNode:
    """One node: ``start()``, then ``run_static_pod`` (standalone) or pods through the API
    server (with a ``Registration``), then ``stop()``, which leaves nothing behind or raises."""

    def __init__(
        self,
        bins: NodeBinaries,
        workdir: Path | None = None,
        *,
        keep: bool = False,
        name: str = "realnode-0",
        registration: Registration | None = None,
    ) -> None:
        self.bins = bins
        self.keep = keep
        self.name = name
        self.registration = registration
        if workdir is None:
            sweep_stale()
        self.workdir = (workdir or Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))).resolve()
        self.cgroup_root = "/" + self.workdir.name
        self.net = NodeNetwork.for_name(self.workdir.name)
        self.logs = self.workdir / "logs"
        self.components: list[Component] = []
        self.port = free_port()
        self.healthz_port = free_port()
        self.timings: dict[str, float] = {}

    # -- start ---------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> RealNode:
        try:
            t0 = time.monotonic()
            self._prepare_dirs()
            self._start_holder()
            self._link_network()
            self._start_containerd(timeout)
            self.timings["containerd_ready_s"] = time.monotonic() - t0
            self._import_images()
            self.timings["images_imported_s"] = time.monotonic() - t0
            if self.registration is not None and self.registration.dns_kubeconfig is not None:
                self._start_dns(self.registration.dns_kubeconfig, timeout)
                self.timings["dns_ready_s"] = time.monotonic() - t0
            self._start_kubelet(timeout)
            self.timings["kubelet_healthy_s"] = time.monotonic() - t0
            self._write_state()
        except BaseException:
            if not self.keep:
                self.stop()
            raise
        return self

    def _prepare_dirs(self) -> None:
        for sub in ("logs", "manifests", "pod-logs", "cni", "runc", "kubelet", "images", "sysctl"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        for path in PRIVATE_PATHS:
            (self.workdir / "ns" / path.strip("/").replace("/", "-")).mkdir(parents=True, exist_ok=True)
        for key, value in KUBELET_SYSCTLS.items():
            (self.workdir / "sysctl" / key.replace("/", ".")).write_text(value + "\n")
        for hierarchy in self._cgroup_hierarchies():
            (hierarchy / self.cgroup_root.lstrip("/")).mkdir(exist_ok=True)

    @staticmethod
    def _cgroup_hierarchies() -> list[Path]:
        return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())

    def _component(self, name: str, argv: Sequence[str | os.PathLike[str]]) -> Component:
        comp = Component(
            name, argv, self.logs / f"{name}.log", cwd=self.workdir, die_with_parent=not self.keep
        )
        self.components.append(comp)
        comp.start()
        return comp

    def _start_holder(self) -> None:
        """Private mount and network namespaces held by ``pause``: the kubelet's sysctl files covered, and
        /run, /var/lib and /var/log replaced by workdir folders, since the kubelet and containerd
        write to fixed paths there whatever their flags say (device-plugin sockets, shim sockets,
        network namespaces, /var/log/containers links, CNI's IP allocations)."""
        binds = [
            f"mount --bind -o ro {self.workdir / 'sysctl' / key.replace('/', '.')} /proc/sys/{key}"
            for key in KUBELET_SYSCTLS
        ]
        binds += [
            f"mount --bind {self.workdir / 'ns' / path.strip('/').replace('/', '-')} {path}"
            for path in PRIVATE_PATHS
        ]
        forward = "echo 1 > /proc/sys/net/ipv4/ip_forward"  # the node's namespace only
        script = " && ".join(["set -e", *binds, "ip link set lo up", forward, f"exec {self.bins.pause}"])
        self.holder = self._component(
            "node-namespaces", ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script]
        )

        def ready() -> bool:
            return os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt") and (
                Path(f"/proc/{self.holder.pid}/exe").resolve() == self.bins.pause.resolve()
            )

        self._wait(ready, 10, "node namespaces held by pause")

    def _wait(self, predicate: Callable[[], Any], timeout: float, message: str) -> Any:
        return wait_while_alive(self.components, predicate, timeout, interval=0.2, message=message)

    def _link_network(self) -> None:
        conflict = self.net.conflicts()
        if conflict:
            raise ComponentError(f"node network {self.net} is taken on the host:\n{conflict}")
        assert self.holder.pid is not None
        self.net.link(self.holder.pid)

    def _in_namespace(self, argv: Sequence[str | os.PathLike[str]], *, net: bool = False) -> list[str]:
        """``argv`` in the node's mount namespace, and in its network namespace with ``net``."""
        return [
            "nsenter",
            f"--target={self.holder.pid}",
            "--mount",
            *(["--net"] if net else []),
            "--",
            *map(str, argv),
        ]

    def _start_containerd(self, timeout: float) -> None:
        config = self.workdir / "containerd.toml"
        config.write_text(
            containerd_config(self.workdir, self.bins.containerd, self.bins.runc, self.net.node_ip)
        )
        (self.workdir / "cni" / "10-recserve.conflist").write_text(
            json.dumps(cni_config(self.workdir, self.net.pod_subnet), indent=2)
        )
        env_path = (
            f"{self.bins.containerd_shim.parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        )
        self.containerd = self._component(
            "containerd",
            self._in_namespace(
                ["env", f"PATH={env_path}", self.bins.containerd, "--config", config], net=True
            ),
        )
        self._wait(lambda: self.ctr("version").returncode == 0, timeout, "containerd answers")

    def ctr(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(self.bins.ctr),
            "--address",
            str(self.workdir / "containerd.sock"),
            "--namespace",
            "k8s.io",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)

    def _import_images(self) -> None:
        pause = ImageSpec(PAUSE_IMAGE, ["/pause"], files={"/pause": self.bins.pause})
        busybox = ImageSpec(
            BUSYBOX_IMAGE,
            ["/bin/sh"],
            files={"/bin/busybox": self.bins.busybox},
            symlinks={f"/bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS},
        )
        for spec in (pause, busybox):
            archive = write_archive(
                spec, self.workdir / "images" / (spec.name.rsplit("/", 1)[-1].replace(":", "-") + ".tar")
            )
            proc = self.ctr("images", "import", "--no-unpack", str(archive))
            if proc.returncode != 0 or spec.name not in self.ctr("images", "list", "-q").stdout:
                raise ComponentError(f"ctr import of {spec.name} failed: {proc.stdout}{proc.stderr}")

    def import_archive(self, archive: Path, name: str, timeout: float = 600) -> float:
        """Import an OCI archive (``scripts/build-images.sh`` writes the release images as such)
        into the node's containerd, where the kubelet finds it by ``name`` with
        ``imagePullPolicy: Never``; returns the seconds it took. Unpacked when a container first
        uses it, as the node's own images are: the import only copies blobs."""
        t0 = time.monotonic()
        proc = self.ctr("images", "import", "--no-unpack", str(archive), timeout=timeout)
        if proc.returncode != 0 or name not in self.ctr("images", "list", "-q").stdout.split():
            raise ComponentError(f"ctr import of {name} from {archive} failed: {proc.stdout}{proc.stderr}")
        return time.monotonic() - t0

    def _start_dns(self, kubeconfig: Path, timeout: float) -> None:
        """CoreDNS on the host's end of the node's link (``clusterdns``), ready once it answers
        the API server's own Service name with an address, which needs its API watch synced."""
        if self.bins.coredns is None:
            raise BuildError("a node with cluster DNS needs NodeBinaries.ensure_built(dns=True)")
        config = self.workdir / "Corefile"
        config.write_text(corefile(self.net.host_ip, kubeconfig, cluster_zones()))
        self._component("coredns", [self.bins.coredns, "-conf", config])

        def answers() -> bool:
            rcode, addresses = resolve(self.net.host_ip, PROBE_NAME, timeout=1)
            return rcode == 0 and bool(addresses)

        self._wait(answers, timeout, f"cluster DNS on {self.net.host_ip}:53 answers {PROBE_NAME}")

    def _start_kubelet(self, timeout: float) -> None:
        config = self.workdir / "kubelet.yaml"
        settings = kubelet_config(self.workdir, self.cgroup_root, self.port, self.healthz_port)
        extra = []
        if self.registration is not None:
            # Served on the host's end of the node's link (a node IP may not be loopback), and
            # authenticated and authorized as kubeadm's kubelets are: client certificates of the
            # cluster's CA, bearer tokens by TokenReview, every request by SubjectAccessReview.
            settings["registerWithTaints"] = self.registration.taints
            settings["address"] = self.net.host_ip
            settings["authentication"] = {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.registration.client_ca)},
            }
            settings["authorization"] = {"mode": "Webhook"}
            if self.registration.dns_kubeconfig is not None:
                # Pods get a resolv.conf naming the node's CoreDNS and the cluster's search path.
                settings["clusterDNS"] = [self.net.host_ip]
                settings["clusterDomain"] = CLUSTER_DOMAIN
            labels = ",".join(f"{k}={v}" for k, v in self.registration.labels.items())
            extra = [
                f"--kubeconfig={self.registration.kubeconfig}",
                f"--node-labels={labels}",
                f"--node-ip={self.net.host_ip}",
            ]
        config.write_text(yaml.safe_dump(settings))
        self.kubelet = self._component(
            "kubelet",
            self._in_namespace(
                [
                    self.bins.kubelet,
                    f"--config={config}",
                    f"--root-dir={self.workdir / 'kubelet'}",
                    f"--cert-dir={self.workdir / 'kubelet' / 'pki'}",
                    f"--hostname-override={self.name}",
                    "--v=2",
                    *extra,
                ]
            ),
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=3) as resp:
                return bool(resp.status == 200)

        self._wait(healthy, timeout, "kubelet healthz")

    def _write_state(self) -> None:
        state = {
            "pids": {c.name: c.pid for c in self.components},
            "cgroup_root": self.cgroup_root,
            "containerd_dir": str(self.bins.containerd.parent),
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    # -- use -----------------------------------------------------------------------------------

    def kubelet_pods(self) -> list[dict[str, Any]]:
        """The kubelet's own view of its pods (its /pods endpoint), status included."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/pods", context=ctx, timeout=5) as resp:
            items: list[dict[str, Any]] = json.loads(resp.read())["items"]
        return items

    def run_static_pod(self, pod: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """Drop ``pod`` into the manifest folder and wait until the kubelet reports it Running."""
        name = pod["metadata"]["name"]
        (self.workdir / "manifests" / f"{name}.yaml").write_text(yaml.safe_dump(pod))

        def running() -> dict[str, Any] | None:
            for item in self.kubelet_pods():
                statuses = item.get("status", {}).get("containerStatuses") or []
                if (
                    item["metadata"]["name"].startswith(name)
                    and statuses
                    and all("running" in s["state"] for s in statuses)
                ):
                    return item
            return None

        status: dict[str, Any] = self._wait(running, timeout, f"static pod {name} running")
        return status

    def remove_static_pods(self, timeout: float = 60) -> None:
        """Delete every manifest and wait until the kubelet has stopped every container."""
        for manifest in (self.workdir / "manifests").glob("*.yaml"):
            manifest.unlink()

        def stopped() -> bool:
            return "RUNNING" not in self.ctr("tasks", "list").stdout

        wait_for(stopped, timeout, interval=0.5, message="kubelet stops its containers")

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the kubelet, kill what containers remain, stop containerd and the namespace
        holder, then check that no process and no cgroup of ours is left before removing the
        workdir. Raises ComponentError naming whatever could not be cleaned."""
        problems: list[str] = []
        by_name = {c.name: c for c in self.components}
        if "kubelet" in by_name:
            by_name["kubelet"].stop()
        if "coredns" in by_name:
            by_name["coredns"].stop()
        if "containerd" in by_name and by_name["containerd"].alive():
            problems += self._kill_tasks()
            by_name["containerd"].stop()
        problems += self._kill_leftovers()
        if "node-namespaces" in by_name:
            by_name["node-namespaces"].stop()
        try:
            self.net.unlink()
        except RuntimeError as exc:
            problems.append(str(exc))
        problems += self._remove_cgroups()
        leftover = processes_using(self.workdir)
        if leftover:
            problems.append(f"processes still using {self.workdir}: {leftover}")
        if problems:
            raise ComponentError("real node teardown incomplete:\n" + "\n".join(problems))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill_tasks(self) -> list[str]:
        """SIGKILL and delete every task and container containerd still has (shims survive a
        containerd stop, so they must go first)."""
        problems = []
        for cid in self.ctr("containers", "list", "-q").stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", cid)
            with contextlib.suppress(Exception):
                wait_for(partial(self._task_stopped, cid), 20, interval=0.3, message=f"task {cid} killed")
            self.ctr("tasks", "delete", "--force", cid)
            proc = self.ctr("containers", "delete", cid)
            if proc.returncode != 0:
                problems.append(f"ctr containers delete {cid}: {proc.stderr.strip()}")
        return problems

    def _task_stopped(self, cid: str) -> bool:
        return not any(
            line.startswith(cid) and "RUNNING" in line
            for line in self.ctr("tasks", "list").stdout.splitlines()
        )

    def _namespace_members(self) -> list[int]:
        """Live processes in the node's mount namespace, or naming its workdir, but the holder:
        every shim and container process is in that namespace, whatever its command line."""
        holder = getattr(self, "holder", None)
        if holder is None or holder.pid is None:
            return []
        members = set(processes_using(self.workdir))
        with contextlib.suppress(OSError):
            ns = os.readlink(f"/proc/{holder.pid}/ns/mnt")
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        if os.readlink(entry / "ns" / "mnt") == ns:
                            members.add(int(entry.name))
        return sorted(p for p in members - {holder.pid} if pid_alive(p))

    def _kill_leftovers(self) -> list[str]:
        """Processes of the node still running after containerd stopped: a shim whose task was
        deleted exits on its own within moments; whatever is left after 5 s gets SIGKILL."""
        with contextlib.suppress(Exception):
            wait_for(lambda: not self._namespace_members(), 5, interval=0.1, message="shims exit")
        pids = self._namespace_members()
        if pids:
            print(f"real node: SIGKILL to leftover processes {pids}", file=sys.stderr)
        kill_and_wait(pids)
        return [f"pid {p} survived SIGKILL" for p in pids if pid_alive(p)]

    def _remove_cgroups(self) -> list[str]:
        problems = []
        for hierarchy in self._cgroup_hierarchies():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if top.exists():
                problems += remove_cgroup_tree(top)
        return problems


def remove_cgroup_tree(top: Path) -> list[str]:
    """rmdir a cgroup and every cgroup below it, deepest first (a cgroup with children cannot
    go); what would not go, and why."""
    problems = []
    children = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for path in [*children, top]:
        try:
            path.rmdir()
        except OSError as exc:
            problems.append(f"rmdir {path}: {exc}")
    return problems


def kill_and_wait(pids: Collection[int], timeout: float = 10.0) -> None:
    """SIGKILL each pid, then give the kernel up to ``timeout`` to reap them; the caller checks
    what survived (a process in uninterruptible sleep can outlast any signal)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(pid_alive(p) for p in pids), timeout, interval=0.1, message="killed")


def _cgroup_pids(name: str) -> set[int]:
    """Every pid in the cgroup tree ``/<name>`` of any v1 hierarchy: the containers of a node,
    whose command lines do not name its workdir."""
    pids: set[int] = set()
    for procs in CGROUP_FS.glob(f"*/{name}/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in procs.read_text().split())
    return pids


def sweep_stale(root: Path | None = None, min_age_s: float = 600.0) -> list[Path]:
    """Clean up after nodes whose session was SIGKILLed: the kubelet, containerd and the
    namespace holder die with it (PR_SET_PDEATHSIG), but shims and containers do not. For a
    workdir older than ``min_age_s`` whose holder is gone: SIGKILL the processes naming it or in
    its cgroups, remove its cgroups, then the workdir. A node left up on purpose (``up``) keeps
    its holder alive and is left alone."""
    swept = []
    for workdir in Path(root or tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            age = time.time() - workdir.stat().st_mtime
            state = json.loads((workdir / "state.json").read_text())
            holder = state["pids"].get("node-namespaces")
        except (OSError, ValueError, KeyError):
            holder = None
        if age < min_age_s or (holder is not None and pid_alive(holder)):
            continue
        pids = (set(processes_using(workdir)) | _cgroup_pids(workdir.name)) - {os.getpid()}
        kill_and_wait(pids)
        for top in CGROUP_FS.glob(f"*/{workdir.name}"):
            remove_cgroup_tree(top)  # best effort: what survives is swept again next time
        with contextlib.suppress(RuntimeError):
            NodeNetwork.for_name(workdir.name).unlink()
        if not any(pid_alive(p) for p in pids):
            shutil.rmtree(workdir, ignore_errors=True)
            swept.append(workdir)
    return swept


def down(workdir: Path) -> None:
    """Stop a node left running by ``up``, from its state file."""
    state = json.loads((workdir / "state.json").read_text())
    node = RealNode.__new__(RealNode)
    node.workdir, node.cgroup_root, node.logs = workdir, state["cgroup_root"], workdir / "logs"
    node.net = NodeNetwork.for_name(workdir.name)
    node.bins = NodeBinaries.ensure_built(Path(state["containerd_dir"]))
    node.components = []
    for name, pid in state["pids"].items():
        comp = Component(name, [], node.logs / f"{name}.log", cwd=workdir)
        comp.pid = pid
        node.components.append(comp)
    node.holder = next(c for c in node.components if c.name == "node-namespaces")
    node.stop()


def demo(bins: NodeBinaries, logs_to: Path | None = None) -> int:
    t0 = time.monotonic()
    node = RealNode(bins).start()
    try:
        print(
            f"node up in {time.monotonic() - t0:.1f}s: {json.dumps({k: round(v, 1) for k, v in node.timings.items()})}"
        )
        t1 = time.monotonic()
        pod = node.run_static_pod(busybox_pod("hello", "hello-from-a-real-kubelet"))
        print(f"static pod Running {time.monotonic() - t1:.1f}s after its manifest was written")
        print(
            "kubelet /pods:",
            json.dumps(
                {
                    "name": pod["metadata"]["name"],
                    "phase": pod["status"]["phase"],
                    "podIPs": pod["status"].get("podIPs"),
                    "containerStatuses": pod["status"]["containerStatuses"],
                },
                indent=1,
            ),
        )
        print("$ ctr -n k8s.io containers list\n" + node.ctr("containers", "list").stdout)
        tasks = node.ctr("tasks", "list").stdout
        print("$ ctr -n k8s.io tasks list\n" + tasks)
        for line in tasks.splitlines()[1:]:
            pid = line.split()[1]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cgroup = [g for g in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":memory:" in g]
            print(f"pid {pid}: {cmdline.strip()}  {cgroup[0] if cgroup else ''}")
        for log in (node.workdir / "pod-logs").rglob("*.log"):
            print(f"{log.relative_to(node.workdir)}: {log.read_text().strip()}")
        t2 = time.monotonic()
        node.remove_static_pods()
        print(f"static pod removed by the kubelet in {time.monotonic() - t2:.1f}s")
    finally:
        t3 = time.monotonic()
        workdir = node.workdir
        if logs_to is not None:
            shutil.copytree(node.logs, logs_to, dirs_exist_ok=True)
        node.stop()
        print(
            f"node stopped and cleaned in {time.monotonic() - t3:.1f}s; workdir gone: {not workdir.exists()}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster.realnode", description=__doc__)
    parser.add_argument(
        "--containerd-dir", type=Path, help="folder with containerd, its shim and ctr (default /usr/bin)"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    dm = sub.add_parser("demo", help="start, run a static busybox pod, show it, stop")
    dm.add_argument("--logs-to", type=Path, help="copy the components' logs here before cleaning up")
    sub.add_parser("up", help="start a node and leave it running")
    dn = sub.add_parser("down", help="stop a node left running")
    dn.add_argument("workdir", type=Path)
    sw = sub.add_parser("sweep", help="clean up after nodes whose session was killed")
    sw.add_argument("--min-age", type=float, default=600.0, help="seconds (default 600)")
    args = parser.parse_args(argv)
    if args.cmd == "down":
        down(args.workdir)
        return 0
    if args.cmd == "sweep":
        print(f"swept: {[str(p) for p in sweep_stale(min_age_s=args.min_age)] or 'nothing'}")
        return 0
    bins = NodeBinaries.ensure_built(args.containerd_dir)
    if args.cmd == "demo":
        return demo(bins, args.logs_to)
    node = RealNode(bins, keep=True).start()
    print(f"workdir: {node.workdir}\nstop with: python -m e2e.cluster.realnode down {node.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
