"""Scenario 2, apply to placement: ``kubectl apply`` of the GPU example (H100, pipeline 2) and
everything the cluster then does with it, up to the pods of the Ray cluster on their nodes.

Real: the API server, the operator (the chart's ServiceAccount token), the engine build (a real
``recserve build`` with the Job's own arguments, see below), the job, PV and garbage-collector
controllers, the scheduler's placement, the KubeRay operator (RayService → RayCluster → pods).
Simulated: nodes and pod lifecycles (kwok). No container runs, so:

- The build Job's pod runs nothing. The test runs the Job's container command, ``recserve
  build ARGS`` with the Job's own arguments and environment, on this machine (``--cache`` and
  ``--termination-log`` moved to local paths; the recipe is torch fp32, which builds here,
  where a GPU node would build the example's torch fp16), and hands its termination-log
  output to the pod; the simulated kubelet (kwok's pod-complete stage) puts it in the terminated state's ``message``,
  where a kubelet puts the file at ``terminationMessagePath``. To do that before kwok completes
  the pod, the artifact claim the pod mounts is created only afterwards: until then the real
  scheduler keeps the pod Pending.
- The RayService never becomes Ready: no Ray runs in the pods, so KubeRay cannot reach a
  dashboard to deploy Serve. The model therefore stays at ``Deploying`` (Ready=False,
  Reconciling=True), which is asserted; serving itself is scenario 4, on a real Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.cluster.fleet import GPU_PRODUCT_LABEL, GPU_RESOURCE, H100
from e2e.harness import (
    ArtifactStore,
    OperatorProcess,
    apply,
    audit_events,
    build_jobs,
    condition_summary,
    forbidden,
    get_model,
    gpu_model,
    hand_result_to_pod,
    job_pods,
    model_events,
    now_rfc3339,
    run_build_job_locally,
    unschedulable_message,
)
from e2e.tiny_ranker import cache_dir, index_dir
from recserve_serving.waiting import wait_for

NAME = "movielens-ranker-gpu"
RAY = ("ray.io", "v1")


def test_gpu_model_is_built_on_its_gpu_product_and_its_ray_cluster_placed_by_replica(
    control_plane: ControlPlane,
    kube: Any,
    namespace: str,
    chart: Any,
    tiny_registry: dict[str, str],
    artifact_store: ArtifactStore,
    tmp_path: Path,
) -> None:
    core, batch, custom = client.CoreV1Api(kube), client.BatchV1Api(kube), client.CustomObjectsApi(kube)
    install = chart()
    since = now_rfc3339()
    env = {"RECSERVE_MLFLOW_TRACKING_URI": tiny_registry["trackingUri"]}
    seen: list[dict[str, str]] = []

    def status() -> dict[str, str]:
        summary = condition_summary(get_model(kube, namespace, NAME))
        if not seen or seen[-1] != summary:
            seen.append(summary)
        return summary

    with OperatorProcess(install, tmp_path, env=env) as operator:
        apply(control_plane, namespace, gpu_model(NAME))

        # 1. The build Job, on the requested GPU product.
        (job,) = wait_for(lambda: build_jobs(kube, namespace, NAME), 120, message="the build Job")
        pod_spec = job.spec.template.spec
        assert pod_spec.node_selector == {GPU_PRODUCT_LABEL: H100}
        assert pod_spec.containers[0].resources.limits[GPU_RESOURCE] == "1"
        assert pod_spec.containers[0].args[:3] == [
            "build",
            "--checkpoint",
            "models:/movielens-ranker@champion",
        ]
        wait_for(lambda: status()["phase"] == "Building", 60, message="phase Building")
        building = status()
        assert (building["Reconciling"], building["EngineReady"], building["Ready"]) == (
            "True",
            "False",
            "False",
        )

        # 2. Its pod waits for the artifact claim (the real scheduler says why) while the real
        #    build runs here; the result goes to the pod; then the claim appears.
        def pending_pod() -> Any:
            pods = job_pods(kube, namespace, job.metadata.name)
            return pods[0] if pods and unschedulable_message(pods[0]) else None

        pod = wait_for(pending_pod, 60, message="the build pod Pending on its claim")
        assert 'persistentvolumeclaim "recserve-artifacts" not found' in str(unschedulable_message(pod))
        result = run_build_job_locally(kube, job, tmp_path, cache_dir() / "engines", index_dir())
        engine = json.loads(result)["engine"]
        hand_result_to_pod(kube, pod, result)
        artifact_store.open()

        def placed() -> Any:
            current = core.read_namespaced_pod(pod.metadata.name, namespace)
            return current if current.spec.node_name else None

        node = core.read_node(wait_for(placed, 60, message="the build pod scheduled").spec.node_name)
        assert node.metadata.labels[GPU_PRODUCT_LABEL] == H100

        def complete() -> bool:
            conditions = batch.read_namespaced_job(job.metadata.name, namespace).status.conditions or []
            return any(c.type == "Complete" and c.status == "True" for c in conditions)

        wait_for(complete, 60, message="the build Job Complete")

        # 3. The engine is read from the pod's termination message; the RayService follows.
        wait_for(lambda: status()["phase"] == "Deploying", 90, interval=0.5, message="phase Deploying")
        deploying = status()
        assert (deploying["EngineReady"], deploying["Reconciling"], deploying["Ready"]) == (
            "True",
            "True",
            "False",
        )
        assert deploying["Stalled"] == "False"
        stable = get_model(kube, namespace, NAME)["status"]["stable"]
        assert stable["engine"]["key"] == engine["key"] and stable["version"] == "1"
        assert stable["digest"] == tiny_registry["digest"]
        assert "EngineBuilt" in [e.reason for e in model_events(kube, namespace, NAME)]

        service = custom.get_namespaced_custom_object(*RAY, namespace, "rayservices", NAME)
        assert service["metadata"]["ownerReferences"][0]["name"] == NAME
        (group,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        worker = group["template"]["spec"]
        assert worker["nodeSelector"] == {GPU_PRODUCT_LABEL: H100}
        # One worker pod holds one whole replica: pipeline 2 × 1 GPU, and Ray is told so.
        assert worker["containers"][0]["resources"]["requests"][GPU_RESOURCE] == "2"
        assert group["rayStartParams"]["num-gpus"] == "2" and group["minReplicas"] == 2
        ranker = next(
            d
            for app in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
            for d in app["deployments"]
            if "placement_group_bundles" in d
        )
        bundles = ranker["placement_group_bundles"]  # a coordinator bundle, then one per stage
        assert ranker["placement_group_strategy"] == "STRICT_PACK"
        assert [b.get("GPU", 0) for b in bundles] == [0, 1, 1]
        assert sum(b["CPU"] for b in bundles) <= float(group["rayStartParams"]["num-cpus"])

        # 4. KubeRay creates the RayCluster; the scheduler places head and workers.
        def ray_cluster() -> Any:
            found = custom.list_namespaced_custom_object(*RAY, namespace, "rayclusters")["items"]
            return found[0] if found else None

        cluster = wait_for(ray_cluster, 120, message="KubeRay creates the RayCluster")
        assert cluster["metadata"]["ownerReferences"][0]["kind"] == "RayService"

        def scheduled_workers() -> list[Any]:
            pods = core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=worker").items
            bound = [p for p in pods if p.spec.node_name]
            return bound if len(bound) == 2 else []

        for worker_pod in wait_for(scheduled_workers, 120, message="2 worker pods scheduled"):
            labels = core.read_node(worker_pod.spec.node_name).metadata.labels
            assert labels[GPU_PRODUCT_LABEL] == H100, worker_pod.spec.node_name
            (ray,) = [c for c in worker_pod.spec.containers if c.name == "ray"]
            assert ray.resources.requests[GPU_RESOURCE] == "2"  # the replica's 2 GPUs, on one node

        def scheduled_head() -> Any:
            pods = core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=head").items
            return pods[0] if pods and pods[0].spec.node_name else None

        head = wait_for(scheduled_head, 60, message="the head pod scheduled")
        assert GPU_PRODUCT_LABEL not in core.read_node(head.spec.node_name).metadata.labels

        # 5. The limit of this tier: no Ray in the pods, so the RayService is never Ready.
        after = status()
        assert (after["phase"], after["Ready"], after["Reconciling"]) == ("Deploying", "False", "True")

        # 6. Deletion: the operator's finalizer lets go, and the real garbage collector removes
        #    everything the model owned (RayService → RayCluster → pods, the build Job → its pod).
        control_plane.kubectl(
            "delete", "recommendermodel", NAME, "-n", namespace, "--wait=true", "--timeout=120s"
        )

        def owned_left() -> dict[str, int]:
            left = {
                "rayservices": len(
                    custom.list_namespaced_custom_object(*RAY, namespace, "rayservices")["items"]
                ),
                "rayclusters": len(
                    custom.list_namespaced_custom_object(*RAY, namespace, "rayclusters")["items"]
                ),
                "jobs": len(batch.list_namespaced_job(namespace).items),
                "pods": len(core.list_namespaced_pod(namespace).items),
            }
            return left

        wait_for(lambda: not any(owned_left().values()), 180, interval=1.0, message="owned objects deleted")
    phases = [s["phase"] for s in seen]
    assert phases.index("Building") < phases.index("Deploying"), seen
    assert "Failed" not in phases, seen
    assert forbidden(audit_events(control_plane, install.user, since)) == []
    assert "Traceback" not in operator.log
