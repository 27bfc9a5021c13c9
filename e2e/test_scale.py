"""Scenario 5, scale (a benchmark: figures are printed and written to e2e/results/scale.md, and
nothing is asserted about time): 200 RecommenderModels applied at once with the KubeRay target,
on 1,000 simulated nodes (the session's 6, then 150 more H100 nodes and 844 CPU nodes, so that
every model's two GPU workers can be placed). ``RECSERVE_E2E_SCALE_MODELS`` and
``RECSERVE_E2E_SCALE_NODES`` change the sizes.

The milestone is the furthest state this tier can reach: every model has its RayService and
``status.phase: Deploying``. ``Reconciling=False`` is never reached here, because no Ray runs
in the simulated pods, so no RayService becomes Ready (scenario 2). Measured:

- time from ``kubectl apply`` until all models are Building with a build Job (the operator's first
  pass over a burst), and from the moment the build results are in place (the artifact claim
  created) until all are Deploying with a RayService (the build Jobs complete, then each
  model's next 10 s resync reads the result and creates its RayService);
- the operator's peak RSS (psutil, sampled every 0.2 s);
- API requests per model, from the API server's audit log: every request of the operator's
  ServiceAccount that completed between the apply and the milestone (a watch counts when it
  ends, so the operator's few open watches are not in the figure).

Real and simulated as in scenario 2: the build Jobs are simulated (kwok) and all carry the
same arguments (same checkpoint, recipe and GPU product), so one real ``recserve build``
provides the result handed to every build pod.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.cluster.fleet import H100, cpu_node, gpu_node
from e2e.harness import (
    ArtifactStore,
    OperatorProcess,
    audit_events,
    build_jobs,
    condition_summary,
    forbidden,
    gpu_model,
    hand_result_to_pod,
    job_pods,
    now_rfc3339,
    run_build_job_locally,
)
from e2e.tiny_ranker import cache_dir, index_dir
from recserve_serving.waiting import wait_for

# A benchmark of many minutes: make test-all runs it, make test does not.
pytestmark = pytest.mark.long

MODELS = int(os.environ.get("RECSERVE_E2E_SCALE_MODELS", "200"))
NODES = int(os.environ.get("RECSERVE_E2E_SCALE_NODES", "1000"))
RESULTS = Path(__file__).resolve().parent / "results" / "scale.md"


class PeakRss:
    """The peak resident set size of a process tree, sampled on a background thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.peak = max(self.peak, self._sample())
            except psutil.Error:
                return

    def stop(self) -> int:
        self.done.set()
        self.thread.join(timeout=10)
        return self.peak


def extra_fleet(existing: int) -> list[Any]:
    """Nodes that bring the fleet to NODES: enough H100 nodes for two 2-GPU workers per model."""
    wanted = max(0, NODES - existing)
    h100 = min(wanted, math.ceil(MODELS * 2 * 2 / 8))
    return [gpu_node(f"scale-h100-{i}", H100) for i in range(h100)] + [
        cpu_node(f"scale-cpu-{i}") for i in range(wanted - h100)
    ]


@pytest.fixture
def fleet(control_plane: ControlPlane, kube: Any) -> Iterator[int]:
    """The session's fleet grown to NODES for this test, and shrunk back afterwards."""
    existing = len(client.CoreV1Api(kube).list_node().items)
    extra = extra_fleet(existing)
    started = time.monotonic()
    control_plane.add_nodes(extra, timeout=600)
    print(f"\n{len(extra)} nodes added and Ready in {time.monotonic() - started:.1f} s")
    yield existing + len(extra)
    if not control_plane.keep:
        control_plane.delete_nodes([n.name for n in extra], timeout=600)


def test_many_models_on_many_nodes(
    fleet: int,
    control_plane: ControlPlane,
    kube: Any,
    namespace: str,
    chart: Any,
    tiny_registry: dict[str, str],
    artifact_store: ArtifactStore,
    tmp_path: Path,
) -> None:
    custom = client.CustomObjectsApi(kube)
    install = chart()
    names = [f"scale-{i:03d}" for i in range(MODELS)]
    manifest = yaml.safe_dump_all([gpu_model(name) for name in names])
    env = {"RECSERVE_MLFLOW_TRACKING_URI": tiny_registry["trackingUri"]}

    def phases() -> Counter[str]:
        items = custom.list_namespaced_custom_object(
            "recserve.dev", "v1alpha1", namespace, "recommendermodels"
        )
        return Counter(condition_summary(m)["phase"] for m in items["items"])

    def rayservices() -> int:
        return len(custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayservices")["items"])

    with OperatorProcess(install, tmp_path, env=env) as operator:
        assert operator.pid is not None
        rss = PeakRss(operator.pid)
        baseline_rss = rss._sample()
        since = now_rfc3339()
        started = time.monotonic()
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
        applied = time.monotonic()

        wait_for(
            lambda: phases()["Building"] == MODELS and len(build_jobs(kube, namespace)) == MODELS,
            900, interval=2.0, message=f"{MODELS} models Building with a build Job",
        )  # fmt: skip
        all_building = time.monotonic()

        jobs = build_jobs(kube, namespace)
        args = {tuple(j.spec.template.spec.containers[0].args) for j in jobs}
        assert len(args) == 1, "every build Job carries the same build"
        result = run_build_job_locally(kube, jobs[0], tmp_path, cache_dir() / "engines", index_dir())
        built = time.monotonic()
        for job in jobs:
            (pod,) = wait_for(
                lambda job=job: job_pods(kube, namespace, job.metadata.name), 120, message="pod"
            )
            hand_result_to_pod(kube, pod, result)
        artifact_store.open()
        gate_open = time.monotonic()

        wait_for(
            lambda: phases()["Deploying"] == MODELS and rayservices() == MODELS,
            1800, interval=2.0, message=f"{MODELS} models Deploying with a RayService",
        )  # fmt: skip
        milestone = time.monotonic()
        until = now_rfc3339()
        peak = rss.stop()
        # The audit log holds every request up to the milestone once a later one is in it (the
        # operator's next resync).
        wait_for(
            lambda: any(e["requestReceivedTimestamp"] > until for e in audit_events(control_plane, install.user, until)),
            60, message="the audit log caught up",
        )  # fmt: skip
    requests = [
        e for e in audit_events(control_plane, install.user, since) if e["requestReceivedTimestamp"] <= until
    ]
    assert forbidden(requests) == []
    by_kind = Counter(
        f"{e['verb']} {e.get('objectRef', {}).get('resource', e['requestURI'])}"
        + (f"/{e['objectRef']['subresource']}" if e.get("objectRef", {}).get("subresource") else "")
        for e in requests
    )
    latencies = [
        (
            datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00"))
            - datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
        ).total_seconds()
        * 1000
        for e in requests
    ]
    figures = {
        "models": MODELS,
        "nodes (kwok)": str(fleet),
        "apply → all Building with a build Job": f"{all_building - started:.1f} s",
        "local `recserve build` for the Jobs' result (engine cache hit)": f"{built - all_building:.1f} s",
        f"handing the result to the {MODELS} build pods, creating the claim": f"{gate_open - built:.1f} s",
        "results in place → all Deploying with a RayService": f"{milestone - gate_open:.1f} s",
        "apply → milestone, total": f"{milestone - started:.1f} s",
        f"kubectl apply of the {MODELS} (one multi-document file)": f"{applied - started:.1f} s",
        "operator peak RSS": f"{peak / 2**20:.0f} MiB (at start: {baseline_rss / 2**20:.0f} MiB)",
        "operator API requests, total": str(len(requests)),
        "operator API requests per model": f"{len(requests) / MODELS:.1f}",
        "operator API request latency (audit, median)": f"{statistics.median(latencies):.1f} ms",
    }
    lines = [
        "# e2e scale figures",
        "",
        f"`pytest e2e/test_scale.py`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on this shared 2-core machine "
        f"(load average {psutil.getloadavg()[0]:.1f} at the end). Milestone: all {MODELS} "
        "RecommenderModels have a RayService and `status.phase: Deploying` (no RayService becomes "
        "Ready in this tier, so `Reconciling` stays True). The operator resyncs each model every 10 s.",
        "",
        "| figure | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in figures.items()),
        "",
        "API requests of the operator's ServiceAccount, apply → milestone (audit log):",
        "",
        "| request | count |",
        "| --- | --- |",
        *(f"| `{k}` | {v} |" for k, v in by_kind.most_common()),
        "",
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n" + "\n".join(lines))
    assert all(condition_summary(m)["Stalled"] == "False" for m in _models(custom, namespace))


def _models(custom: Any, namespace: str) -> list[dict[str, Any]]:
    return list(
        custom.list_namespaced_custom_object("recserve.dev", "v1alpha1", namespace, "recommendermodels")[
            "items"
        ]
    )
