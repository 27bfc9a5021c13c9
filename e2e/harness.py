"""What the recserve scenarios share: the Helm chart installed into a test's namespace, the
operator run as a local process with the chart's ServiceAccount token, a real ``recserve build``
for a simulated build Job, and reading a RecommenderModel's status and events.

Every process started here is stopped by pid (its own process group, SIGTERM then SIGKILL), and
dies with pytest if pytest is killed (``PR_SET_PDEATHSIG``, as the control plane's components).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster.controlplane import TERMINATION_MESSAGE_ANNOTATION, ControlPlane, free_port
from e2e.cluster.process import Component, pid_alive
from recserve_serving.offline import OFFLINE_ENV
from recserve_serving.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "recserve"
E2E_VALUES = CHART / "ci" / "e2e-values.yaml"
EXAMPLES = REPO / "manifests" / "examples"
RECSERVE = [sys.executable, "-m", "recserve_operator.cli"]
GROUP, VERSION, PLURAL = "recserve.dev", "v1alpha1", "recommendermodels"
# The release name contains the chart name, so every object is named "recserve" (no prefix).
RELEASE = "recserve"
PEERING = yaml.safe_load(E2E_VALUES.read_text())["peering"]["name"]
ARTIFACT_CLAIM = "recserve-artifacts"  # the operator's default artifact store: pvc://recserve-artifacts


# ----------------------------------------------------------------------------- the chart


@dataclass(frozen=True)
class Install:
    """The chart installed into ``namespace``, watching it; ``kubeconfig`` holds a token of the
    chart's ServiceAccount, so whatever runs with it has exactly the chart's RBAC."""

    namespace: str
    service_account: str
    kubeconfig: Path

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def install_chart(plane: ControlPlane, namespace: str, workdir: Path, *, webhook: bool = False) -> Install:
    plane.helm(
        "install", RELEASE, str(CHART), "-n", namespace, "-f", str(E2E_VALUES),
        "--set", f"watch.namespaces={{{namespace}}}",
        "--set", f"webhook.enabled={'true' if webhook else 'false'}",
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    account = plane.kubectl(
        "get", "serviceaccount", "-n", namespace,
        "-l", f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
        "-o", "jsonpath={.items[0].metadata.name}",
    ).stdout  # fmt: skip
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    user = f"system:serviceaccount:{namespace}:{account}"
    kubeconfig = plane.kubeconfig_for_token(workdir / f"{account}.kubeconfig", token, user=user)
    return Install(namespace, account, kubeconfig)


def uninstall_chart(plane: ControlPlane, namespace: str) -> None:
    plane.helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s", check=False)


# ----------------------------------------------------------------------------- the operator


class OperatorProcess:
    """``recserve operator --namespace NS --peering ...`` as a local process, authenticated with
    the chart's ServiceAccount token. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        install: Install,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        name: str = "recserve-operator",
    ) -> None:
        self.install = install
        self.workdir = workdir
        self.health_port = free_port()
        self.argv = [
            *RECSERVE, "operator",
            "--namespace", install.namespace,
            "--peering", PEERING,
            "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
            *args,
        ]  # fmt: skip
        base = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        self.env = {
            **base,
            "KUBECONFIG": str(install.kubeconfig),
            "RECSERVE_HOME": str(workdir / "operator-home"),
            **OFFLINE_ENV,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.component = Component(name, self.argv, workdir / f"{name}.log", cwd=workdir, env=self.env)

    @property
    def pid(self) -> int | None:
        return self.component.pid

    @property
    def log(self) -> str:
        return self.component.log.read_text(errors="replace") if self.component.log.exists() else ""

    def start(self, timeout: float = 120) -> OperatorProcess:
        self.component.start()

        def healthy() -> bool:
            if not self.component.alive():
                return True  # reported below, with the log
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5) as r:
                return r.status == 200

        wait_for(healthy, timeout, interval=0.5, message="the operator's liveness endpoint")
        self.component.check_alive()
        return self

    def stop(self) -> None:
        pid = self.component.pid
        self.component.stop()
        assert pid is None or not pid_alive(pid), f"operator pid {pid} outlived its stop"

    def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill would: no handler, no clean-up runs."""
        pid = self.component.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not self.component.alive(), 30, message=f"operator pid {pid} killed")
        self.stop()

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- models


def custom(kube: Any) -> Any:
    return client.CustomObjectsApi(kube)


def get_model(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(custom(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def conditions(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (model.get("status") or {}).get("conditions") or []}


def condition_summary(model: dict[str, Any]) -> dict[str, str]:
    """{type: status} plus the phase, the compact view a test compares."""
    summary = {t: c["status"] for t, c in conditions(model).items()}
    summary["phase"] = (model.get("status") or {}).get("phase", "")
    return summary


def cluster_diagnosis(plane: ControlPlane, namespace: str, name: str) -> str:
    """What a failed wait needs to be understood: the model's conditions and events, the pods
    with their container states, the namespace's events and the Ray containers' last log lines."""

    def run(*args: str) -> str:
        done = plane.kubectl(*args, "-n", namespace, check=False, timeout=60)
        return (done.stdout + done.stderr).strip()

    parts = [
        run("get", "recommendermodel", name, "-o", "jsonpath={.status}"),
        run("get", "pods,rayservices,rayclusters", "-o", "wide"),
        run("get", "events", "--sort-by=.lastTimestamp"),
    ]
    pods = run("get", "pods", "-l", "ray.io/is-ray-node=yes", "-o", "name").split()
    for pod in pods:
        parts.append(f"--- {pod}\n" + run("describe", pod)[-3000:])
        parts.append(run("logs", pod, "--all-containers", "--tail=60"))
    return "\n\n".join(parts)


def model_events(kube: Any, namespace: str, name: str) -> list[Any]:
    """Events the operator posted about the model (kopf posts core/v1 Events)."""
    found = client.CoreV1Api(kube).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=RecommenderModel,involvedObject.name={name}"
    )
    return sorted(found.items, key=lambda e: e.metadata.creation_timestamp)


def apply(plane: ControlPlane, namespace: str, doc: dict[str, Any], *, check: bool = True) -> Any:
    return plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=check)


def registry_free_model(name: str) -> dict[str, Any]:
    """A model whose checkpoint needs no registry: an operator takes it as far as its build Job
    (list/watch and patch the model, patch its status, create and read a Job, peering)."""
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "RecommenderModel",
        "metadata": {"name": name},
        "spec": {"checkpoint": {"uri": "file:///models/ranker"}},
    }


def gpu_model(name: str) -> dict[str, Any]:
    """manifests/examples/movielens-ranker-gpu.yaml (H100, pipeline 2, 2..8 replicas), with a
    recipe this CPU-only machine can really build for the simulated build Job: ``backend: torch``
    (the only backend pipeline stages run) still makes the operator build on the requested GPU
    product (the Job asks for one), and fp32 is what the local ``recserve build`` can make on
    CPU (the example's fp16 needs CUDA). Batch sizes are small so that the one cold build stays
    short."""
    doc = yaml.safe_load((EXAMPLES / "movielens-ranker-gpu.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["optimization"].update(
        backend="torch",
        precision="fp32",
        maxBatchSize=16,
        maxSequenceLength=64,
        qualityGate={"metric": "ndcg@10", "maxDrop": 0.005},
    )
    doc["spec"]["serving"]["batching"]["maxBatchSize"] = 16
    return dict(doc)


# ----------------------------------------------------------------------------- build Jobs


def build_jobs(kube: Any, namespace: str, model: str | None = None) -> list[Any]:
    selector = "app.kubernetes.io/component=engine-build"
    if model:
        selector += f",recserve.dev/model={model}"
    return list(client.BatchV1Api(kube).list_namespaced_job(namespace, label_selector=selector).items)


def run_build_job_locally(kube: Any, job: Any, workdir: Path, cache: Path, index: Path) -> str:
    """Run the Job's container command (``recserve build ...``) here, with the Job's own
    arguments and environment, and return what it wrote to its termination log: exactly the
    message a real build pod would leave in its terminated state. Three paths are node-local in
    a pod and moved here: ``--cache`` (the artifact store's engine root) goes to ``cache``,
    ``--index-dir`` (the store's retrieval index) to ``index``, and ``--termination-log`` to a
    file in ``workdir``."""
    data = kube.sanitize_for_serialization(job)
    (container,) = data["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    out = workdir / f"{data['metadata']['name']}.termination-log"
    args[args.index("--cache") + 1] = str(cache)
    args[args.index("--index-dir") + 1] = str(index)
    args[args.index("--termination-log") + 1] = str(out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    env["RECSERVE_HOME"] = str(workdir / "build-home")
    proc = subprocess.run(
        [*RECSERVE, *args], env=env, capture_output=True, text=True, timeout=3600, cwd=workdir
    )
    if proc.returncode != 0:
        raise AssertionError(f"recserve build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out.read_text()


def hand_result_to_pod(kube: Any, pod: Any, message: str) -> None:
    """Put the build result where the simulated kubelet (kwok's pod-complete stage) copies it
    into the container's terminated state (see controlplane._with_termination_message)."""
    client.CoreV1Api(kube).patch_namespaced_pod(
        pod.metadata.name,
        pod.metadata.namespace,
        {"metadata": {"annotations": {TERMINATION_MESSAGE_ANNOTATION: message}}},
    )


def job_pods(kube: Any, namespace: str, job_name: str) -> list[Any]:
    return list(
        client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
    )


def unschedulable_message(pod: Any) -> str | None:
    for c in pod.status.conditions or []:
        if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
            return str(c.message)
    return None


class ArtifactStore:
    """The claim behind the operator's default store (``pvc://recserve-artifacts``), created on
    demand: until it exists, the real scheduler keeps every pod that mounts it Pending, which is
    how a test gets to hand a build pod its result before kwok runs and completes it. The
    PersistentVolume is pre-bound to the claim (the real PV controller binds them); kwok's pods
    never mount it, a real node's pods mount ``host_path``. ``close()`` deletes the cluster-scoped volume."""

    def __init__(self, kube: Any, namespace: str) -> None:
        self.core = client.CoreV1Api(kube)
        self.namespace = namespace
        self.volume = f"{namespace}-artifacts"[:63]
        self.created = False

    def open(self, timeout: float = 60, host_path: Path | None = None) -> None:
        """``host_path``: a folder a real kubelet mounts (the store as build Jobs leave it)."""
        self.core.create_persistent_volume(
            {
                "metadata": {"name": self.volume, "labels": {"recserve.dev/e2e": "true"}},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": str(host_path or "/nonexistent/recserve-e2e-artifacts")},
                    "claimRef": {"namespace": self.namespace, "name": ARTIFACT_CLAIM},
                },
            }
        )
        self.created = True
        self.core.create_namespaced_persistent_volume_claim(
            self.namespace,
            {
                "metadata": {"name": ARTIFACT_CLAIM},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": self.volume,
                    "resources": {"requests": {"storage": "10Gi"}},
                },
            },
        )

        def bound() -> bool:
            claim = self.core.read_namespaced_persistent_volume_claim(ARTIFACT_CLAIM, self.namespace)
            return claim.status.phase == "Bound"

        wait_for(bound, timeout, message=f"claim {ARTIFACT_CLAIM} Bound (PV controller)")

    def close(self) -> None:
        if self.created:
            try:
                self.core.delete_persistent_volume(self.volume)
            except ApiException as error:
                if error.status != 404:
                    raise


# ----------------------------------------------------------------------------- audit log


def audit_events(plane: ControlPlane, user: str, since: str = "") -> list[dict[str, Any]]:
    """Audit events of ``user`` whose request was received at or after ``since`` (RFC 3339)."""
    events = []
    if not plane.audit_log.exists():
        return events
    with plane.audit_log.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if user not in line:
                continue
            event = json.loads(line)
            if event.get("user", {}).get("username") == user and event["requestReceivedTimestamp"] >= since:
                events.append(event)
    return events


def forbidden(events: list[dict[str, Any]]) -> list[str]:
    """The requests RBAC refused, as ``verb uri``."""
    return [
        f"{e['verb']} {e['requestURI']}"
        for e in events
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]


def now_rfc3339() -> str:
    """Now, formatted as the audit log's timestamps (microseconds), so strings compare in order."""
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
