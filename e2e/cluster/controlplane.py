"""A real local Kubernetes control plane for the e2e tier.

etcd, kube-apiserver (TLS, client-certificate and service-account-token authentication, RBAC,
admission on), kube-controller-manager, kube-scheduler, the KubeRay operator and kwok, all built
by ``e2e/cluster/build.sh`` from pinned Go modules, all bound to 127.0.0.1 on free ports, each
started as its own process group and stopped by pid. Only nodes and pod lifecycles are
simulated (kwok); everything that decides anything is the real binary.

Command line (for debugging):

    .venv/bin/python -m e2e.cluster.controlplane up      # start, print the kubeconfig, leave it up
    .venv/bin/python -m e2e.cluster.controlplane down DIR
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster.fleet import NodeSpec, default_fleet, node_is_ready
from e2e.cluster.pki import PKI, CertPair
from e2e.cluster.process import Component, ComponentError, pid_alive, processes_using, wait_while_alive

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
KEEP_ENV = "RECSERVE_E2E_KEEP"
WORKDIR_PREFIX = "recserve-e2e-"
# Every address in this cluster is loopback, data included: Service ClusterIPs, pod IPs (kwok
# hands them out) and node IPs. Nothing routes them anywhere but this machine, so a component
# that tries to reach a simulated pod (KubeRay probing a Ray head, say) only ever touches
# 127.0.0.0/8 and gets connection refused.
SERVICE_CIDR = "127.96.0.0/24"
SERVICE_IP = "127.96.0.1"
POD_CIDR = "127.16.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# What ``audit=True`` records: each request (once, when its response completes) made by a
# ServiceAccount outside kube-system, that is, by the processes a test runs as a ServiceAccount
# (the operator under test). The controller-manager's own accounts, kwok, KubeRay and the admin
# are left out, so the log stays small in a whole session.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}
# kwok copies this pod annotation into a completed Job pod's termination message (see
# _with_termination_message): how e2e hands a simulated build Job its real result.
TERMINATION_MESSAGE_ANNOTATION = "e2e.recserve.dev/termination-message"


class BuildError(RuntimeError):
    """build.sh failed: the e2e tier must fail, never skip."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    kwok_stages: Path
    ray_operator: Path
    kuberay_crds: Path
    helm: Path

    @property
    def bin_dirs(self) -> list[Path]:
        return sorted({p.parent for p in (self.kubectl, self.helm, self.etcd, self.kwok, self.ray_operator)})

    @classmethod
    def from_dirs(cls, dirs: dict[str, Path]) -> Binaries:
        k8s, kuberay, kwok = dirs["kubernetes"], dirs["kuberay"], dirs["kwok"]
        bins = cls(
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kubectl=k8s / "kubectl",
            etcd=dirs["etcd"] / "etcd",
            kwok=kwok / "kwok",
            kwok_stages=kwok / "stages",
            ray_operator=kuberay / "ray-operator",
            kuberay_crds=kuberay / "crds",
            helm=dirs["helm"] / "helm",
        )
        missing = [str(p) for p in bins.__dict__.values() if not p.exists()]
        if missing:
            raise BuildError("e2e binaries missing after build: " + ", ".join(missing))
        return bins

    @classmethod
    def ensure_built(cls, log: Path | None = None, echo: bool = True) -> Binaries:
        """Run build.sh (instant when warm) and return the binaries; raise BuildError loudly."""
        proc = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if echo and line.startswith("[e2e build]") and "cached" not in line:
                print(line, end="", file=sys.__stderr__, flush=True)
        rc = proc.wait()
        output = "".join(lines)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(output)
        if rc != 0:
            raise BuildError(f"bash {BUILD_SCRIPT} failed with exit code {rc}:\n{output[-6000:]}")
        dirs = {}
        for line in lines:
            key, sep, value = line.strip().partition("=")
            if sep and key in ("kubernetes", "etcd", "kwok", "kuberay", "helm"):
                dirs[key] = Path(value)
        return cls.from_dirs(dirs)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, server: str, ca: CertPair, user: str, client: CertPair) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "recserve-e2e",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca.cert_pem())},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert_pem()),
                    "client-key-data": _b64(client.key_pem()),
                },
            }
        ],
        "contexts": [{"name": "recserve-e2e", "context": {"cluster": "recserve-e2e", "user": user}}],
        "current-context": "recserve-e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class ControlPlane:
    """Start with ``start()`` (or as a context manager), stop with ``stop()``."""

    def __init__(
        self,
        binaries: Binaries,
        workdir: Path | None = None,
        fleet: Sequence[NodeSpec] | None = None,
        *,
        keep: bool = False,
        audit: bool = False,
        start_timeout: float = 240.0,
    ) -> None:
        self.binaries = binaries
        if workdir is None:
            sweep_stale_workdirs()
            workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fleet = list(default_fleet() if fleet is None else fleet)
        self.keep = keep
        self.audit = audit
        self.start_timeout = start_timeout
        self.logs = self.workdir / "logs"
        self.components: list[Component] = []
        self.ports = {
            name: free_port()
            for name in (
                "etcd",
                "etcd-peer",
                "apiserver",
                "controller-manager",
                "scheduler",
                "kwok",
                "kuberay-metrics",
                "kuberay-probe",
            )
        }
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.pki: PKI | None = None
        self._api_client: Any = None

    # ----------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            self.stop()

    def start(self) -> ControlPlane:
        try:
            self._certificates()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._install_kuberay_crds()
            self._start_kwok()
            self._start_kuberay()
            self._write_state()
            self._wait_controllers()
            self.add_nodes(self.fleet)
        except BaseException:
            report = self.failure_report()
            self.stop(remove=False)
            print(report, file=sys.stderr)
            raise
        return self

    def stop(self, remove: bool | None = None) -> None:
        """Stop every component (reverse start order) by pid; then remove the workdir."""
        errors = []
        for comp in reversed(self.components):
            try:
                comp.stop()
            except ComponentError as exc:
                errors.append(str(exc))
        if self._api_client is not None:
            with contextlib.suppress(Exception):
                self._api_client.close()
            self._api_client = None
        if errors:
            raise ComponentError("; ".join(errors))
        if remove is None:
            remove = True
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.components if c.pid is not None}

    def check_alive(self) -> None:
        for comp in self.components:
            comp.check_alive()

    def failure_report(self) -> str:
        parts = [f"e2e control plane in {self.workdir} failed; component logs in {self.logs}"]
        for comp in self.components:
            state = "running" if comp.alive() else "EXITED"
            parts.append(f"--- {comp.name} (pid {comp.pid}, {state}), last lines of {comp.log}:")
            parts.append(comp.tail(25))
        return "\n".join(parts)

    # ----------------------------------------------------------------------------- clients

    def env(self) -> dict[str, str]:
        """The environment for kubectl/helm/operator subprocesses against this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([*map(str, self.binaries.bin_dirs), env.get("PATH", "")])
        env["HELM_CACHE_HOME"] = str(self.workdir / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.workdir / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.workdir / "helm" / "data")
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.binaries.kubectl), *args], input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.binaries.helm), *args], input, check, timeout)

    def _run(
        self, argv: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient as the cluster admin (system:masters)."""
        from kubernetes import config

        if self._api_client is None:
            self._api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api_client

    def kubeconfig_for_token(self, path: Path, token: str, user: str = "token-user") -> Path:
        """A kubeconfig that authenticates with a bearer token (for example a ServiceAccount's
        token from ``kubectl create token``), so a process runs with exactly that identity."""
        assert self.pki is not None
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": user, "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = user
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # ----------------------------------------------------------------------------- fleet

    def add_nodes(self, nodes: Iterable[NodeSpec], timeout: float = 120) -> None:
        """Create Node objects for kwok and wait until every one is Ready."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        names = []
        for spec in nodes:
            core.create_node(spec.manifest())
            names.append(spec.name)
        wanted = set(names)
        missing: list[str] = sorted(wanted)

        def all_ready() -> bool:
            ready = {n.metadata.name for n in core.list_node().items if node_is_ready(n)}
            missing[:] = sorted(wanted - ready)
            return not missing

        try:
            self._wait_alive(all_ready, timeout, interval=0.5, message=f"{len(wanted)} nodes Ready (kwok)")
        except TimeoutError as error:
            raise TimeoutError(
                f"{len(missing)} of {len(wanted)} nodes not Ready (kwok) after {timeout:.0f}s, "
                f"e.g. {missing[:5]}; is kwok starved of CPU (see its log)?"
            ) from error

    def delete_nodes(self, names: Iterable[str], timeout: float = 120) -> None:
        """Delete Node objects (kwok stops simulating them) and wait until they are gone."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        gone = set(names)
        for name in gone:
            core.delete_node(name)

        def deleted() -> bool:
            return not gone & {n.metadata.name for n in core.list_node().items}

        self._wait_alive(deleted, timeout, interval=0.5, message=f"{len(gone)} nodes deleted")

    # ----------------------------------------------------------------------------- internals

    def _component(self, name: str, argv: Sequence[str | os.PathLike[str]], **kw: Any) -> Component:
        comp = Component(
            name, argv, self.logs / f"{name}.log", cwd=self.workdir, die_with_parent=not self.keep, **kw
        )
        self.components.append(comp)
        comp.start()
        return comp

    def _ssl_context(self, client: CertPair | None = None) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx

    def _wait_alive(
        self, predicate: Callable[[], object], timeout: float, *, interval: float, message: str
    ) -> None:
        wait_while_alive(self.components, predicate, timeout, interval=interval, message=message)

    def _wait_http(
        self, comp: Component, url: str, ctx: ssl.SSLContext | None, expect: bytes | None = None
    ) -> None:
        def ok() -> bool:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                body = resp.read()
                return resp.status == 200 and (expect is None or expect in body)

        self._wait_alive(ok, self.start_timeout, interval=0.3, message=f"{comp.name} healthy at {url}")

    def _certificates(self) -> None:
        pki = self.pki = PKI(self.workdir / "pki")
        loop_dns = ("localhost",)
        self.etcd_server = pki.issue("etcd-server", "etcd", dns=loop_dns, ips=("127.0.0.1",), server=True)
        self.etcd_client = pki.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        self.apiserver_cert = pki.issue(
            "apiserver",
            "kube-apiserver",
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", SERVICE_IP),
            server=True,
        )
        self.sa_key = pki.service_account_key()
        # The aggregation layer's front proxy identity (requestheader authentication), so the
        # controller-manager's and scheduler's delegated authentication is complete.
        self.front_proxy = pki.issue("front-proxy-client", "front-proxy-client", client=True)
        self.admin = pki.issue("admin", "recserve-e2e-admin", orgs=("system:masters",), client=True)
        # The API server's identity towards kubelets (logs, exec): only a real node has one.
        self.kubelet_client = pki.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", orgs=("system:masters",), client=True
        )
        self.kcm_client = pki.issue("controller-manager", "system:kube-controller-manager", client=True)
        self.scheduler_client = pki.issue("scheduler", "system:kube-scheduler", client=True)
        self.kcm_serving = pki.issue(
            "controller-manager-serving",
            "kube-controller-manager",
            dns=loop_dns,
            ips=("127.0.0.1",),
            server=True,
        )
        self.scheduler_serving = pki.issue(
            "scheduler-serving", "kube-scheduler", dns=loop_dns, ips=("127.0.0.1",), server=True
        )
        # kwok plays every kubelet (node status, leases, pod status) and KubeRay is a cluster-wide
        # operator; both are test infrastructure here, not what RBAC is being proven for.
        self.kwok_client = pki.issue("kwok", "kwok-controller", orgs=("system:masters",), client=True)
        self.kuberay_client = pki.issue("kuberay", "kuberay-operator", orgs=("system:masters",), client=True)

        write_kubeconfig(self.kubeconfig, self.server, pki.ca, "recserve-e2e-admin", self.admin)
        kc = self.workdir / "kubeconfigs"
        kc.mkdir(exist_ok=True)
        self.kcm_kubeconfig = write_kubeconfig(
            kc / "controller-manager", self.server, pki.ca, "system:kube-controller-manager", self.kcm_client
        )
        self.scheduler_kubeconfig = write_kubeconfig(
            kc / "scheduler", self.server, pki.ca, "system:kube-scheduler", self.scheduler_client
        )
        self.kwok_kubeconfig = write_kubeconfig(kc / "kwok", self.server, pki.ca, "kwok", self.kwok_client)
        self.kuberay_kubeconfig = write_kubeconfig(
            kc / "kuberay", self.server, pki.ca, "kuberay-operator", self.kuberay_client
        )

    def _start_etcd(self) -> None:
        p = self.ports
        client_url = f"https://127.0.0.1:{p['etcd']}"
        peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
        self.etcd_url = client_url
        comp = self._component(
            "etcd",
            [
                self.binaries.etcd,
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--initial-cluster-state=new",
                f"--cert-file={self.etcd_server.cert}",
                f"--key-file={self.etcd_server.key}",
                f"--trusted-ca-file={self.pki.ca.cert}",  # type: ignore[union-attr]
                "--client-cert-auth=true",
                # Throwaway data on a shared 2-core machine: skip fsync, keep the log quiet.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        self._wait_http(comp, f"{client_url}/health", self._ssl_context(self.etcd_client), b'"health":"true"')

    def _start_apiserver(self) -> None:
        assert self.pki is not None
        args = [
            self.binaries.kube_apiserver,
            f"--etcd-servers={self.etcd_url}",
            f"--etcd-cafile={self.pki.ca.cert}",
            f"--etcd-certfile={self.etcd_client.cert}",
            f"--etcd-keyfile={self.etcd_client.key}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service's endpoints would be the advertise address, and endpoints
            # may not be loopback; nothing here reaches the API through that Service anyway.
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self.apiserver_cert.cert}",
            f"--tls-private-key-file={self.apiserver_cert.key}",
            f"--client-ca-file={self.pki.ca.cert}",
            f"--requestheader-client-ca-file={self.pki.ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.front_proxy.cert}",
            f"--proxy-client-key-file={self.front_proxy.key}",
            f"--kubelet-client-certificate={self.kubelet_client.cert}",
            f"--kubelet-client-key={self.kubelet_client.key}",
            # Node names resolve nowhere here; a real node's InternalIP is on this machine.
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={self.sa_key.cert}",
            f"--service-account-signing-key-file={self.sa_key.key}",
            f"--api-audiences={SA_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            # The defaults (NamespaceLifecycle, ServiceAccount, ResourceQuota, webhooks,
            # ValidatingAdmissionPolicy, ...) plus NodeRestriction, as kubeadm enables.
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        if self.audit:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
            args += [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=batch",
            ]
        comp = self._component("kube-apiserver", args)
        self._wait_http(comp, f"{self.server}/readyz", self._ssl_context(self.admin), b"ok")

    @property
    def audit_log(self) -> Path:
        """Where the API server writes audit events (one JSON per line) when ``audit=True``: every
        request of a ServiceAccount outside kube-system (``AUDIT_POLICY``)."""
        return self.logs / "audit.log"

    def _start_controller_manager(self) -> None:
        assert self.pki is not None
        kc = self.kcm_kubeconfig
        comp = self._component(
            "kube-controller-manager",
            [
                self.binaries.kube_controller_manager,
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--tls-cert-file={self.kcm_serving.cert}",
                f"--tls-private-key-file={self.kcm_serving.key}",
                f"--client-ca-file={self.pki.ca.cert}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_key.key}",
                f"--root-ca-file={self.pki.ca.cert}",
                f"--cluster-signing-cert-file={self.pki.ca.cert}",
                f"--cluster-signing-key-file={self.pki.ca.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--cluster-name=recserve-e2e",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_http(
            comp, f"https://127.0.0.1:{self.ports['controller-manager']}/healthz", self._ssl_context()
        )

    def _start_scheduler(self) -> None:
        assert self.pki is not None
        kc = self.scheduler_kubeconfig
        comp = self._component(
            "kube-scheduler",
            [
                self.binaries.kube_scheduler,
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                f"--tls-cert-file={self.scheduler_serving.cert}",
                f"--tls-private-key-file={self.scheduler_serving.key}",
                f"--client-ca-file={self.pki.ca.cert}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_http(comp, f"https://127.0.0.1:{self.ports['scheduler']}/healthz", self._ssl_context())

    def _install_kuberay_crds(self) -> None:
        # Server-side apply: the RayCluster CRD is too large for the last-applied annotation.
        self.kubectl(
            "apply", "--server-side", "--field-manager=recserve-e2e", "-f", str(self.binaries.kuberay_crds)
        )
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            "crd/rayclusters.ray.io",
            "crd/rayjobs.ray.io",
            "crd/rayservices.ray.io",
            timeout=150,
        )

    def _start_kwok(self) -> None:
        stages = sorted(self.binaries.kwok_stages.glob("*.yaml"))
        if not stages:
            raise ComponentError(f"no kwok stages in {self.binaries.kwok_stages}")
        config = self.workdir / "kwok.yaml"
        config.write_text("\n---\n".join(_with_termination_message(s.name, s.read_text()) for s in stages))
        comp = self._component(
            "kwok",
            [
                self.binaries.kwok,
                f"--kubeconfig={self.kwok_kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
            ],
            env={**os.environ, "HOME": str(self.workdir)},
        )
        self._wait_http(comp, f"http://127.0.0.1:{self.ports['kwok']}/healthz", None)

    def _start_kuberay(self) -> None:
        """KubeRay runs outside the cluster's pod network and DNS (a host process, as the API
        server is), so it reaches each head's dashboard through the API server's service proxy
        (``--use-kubernetes-proxy``, a mode KubeRay supports for exactly that); the API server
        reaches a real node's pod IPs over the node's link."""
        comp = self._component(
            "kuberay-operator",
            [
                self.binaries.ray_operator,
                f"--metrics-addr=127.0.0.1:{self.ports['kuberay-metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{self.ports['kuberay-probe']}",
                "--enable-leader-election=false",
                "--use-kubernetes-proxy",
                "--log-stdout-encoder=console",
            ],
            env={**os.environ, "KUBECONFIG": str(self.kuberay_kubeconfig)},
        )
        self._wait_http(comp, f"http://127.0.0.1:{self.ports['kuberay-probe']}/readyz", None)

    def _wait_controllers(self) -> None:
        """The controller-manager really runs: it created the default ServiceAccount."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api_client())

        def has_default_sa() -> bool:
            try:
                core.read_namespaced_service_account("default", "default")
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        self._wait_alive(
            has_default_sa, self.start_timeout, interval=0.5, message="default ServiceAccount created"
        )

    # ----------------------------------------------------------------------------- state file

    def _write_state(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "pids": self.pids(),
            "ports": self.ports,
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))


def _with_termination_message(name: str, stage: str) -> str:
    """kwok's pod-complete stage (the simulated kubelet finishing a Job's pod), extended by one
    line: the terminated container state carries the pod's ``TERMINATION_MESSAGE_ANNOTATION`` as
    its ``message``, which a real kubelet reads from the container's terminationMessagePath. No
    container runs here, so a test that needs a Job's result writes it there before the pod
    runs; pods without the annotation complete exactly as before."""
    if name != "pod-complete.yaml":
        return stage
    anchor = "            reason: Completed\n"
    if stage.count(anchor) != 1:
        raise ComponentError(f"kwok stage {name} changed shape: no single {anchor.strip()!r} line")
    line = (
        "            {{ with $root.metadata.annotations }}"
        f'{{{{ with index . "{TERMINATION_MESSAGE_ANNOTATION}" }}}}message: {{{{ . | Quote }}}}{{{{ end }}}}'
        "{{ end }}\n"
    )
    return stage.replace(anchor, anchor + line)


def sweep_stale_workdirs(root: Path | None = None, min_age_s: float = 600.0) -> list[Path]:
    """Remove workdirs that a killed session left behind (its components died with it, see
    process._die_with_parent): older than ``min_age_s`` and used by no live process. A kept
    cluster's workdir is in use, so it stays."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            continue
        if path.is_dir() and age > min_age_s and not processes_using(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def down(workdir: Path, timeout: float = 20.0) -> list[str]:
    """Stop a control plane left running (``RECSERVE_E2E_KEEP=1`` or ``up``) by the pids in its
    state file; returns the names stopped. Removes the workdir."""
    state = json.loads((workdir / "state.json").read_text())
    stopped = []
    for name, pid in reversed(list(state["pids"].items())):
        if not pid_alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    leftover = processes_using(str(workdir))
    if leftover:
        raise ComponentError(f"processes still running for {workdir}: {leftover}")
    shutil.rmtree(workdir, ignore_errors=True)
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster.controlplane", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build if needed, start a control plane and leave it running")
    up.add_argument("--workdir", type=Path)
    dn = sub.add_parser("down", help="stop a control plane left running")
    dn.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "up":
        binaries = Binaries.ensure_built()
        plane = ControlPlane(binaries, args.workdir, keep=True).start()
        print(f"kubeconfig: {plane.kubeconfig}")
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print(f"kubectl:    {binaries.kubectl}")
        print(f"stop with:  .venv/bin/python -m e2e.cluster.controlplane down {plane.workdir}")
        return 0
    stopped = down(args.workdir)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
