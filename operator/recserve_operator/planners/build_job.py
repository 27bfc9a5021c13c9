"""The engine build as a ``batch/v1`` Job running ``recserve build`` in the builder image.

The operator cannot see a node's CPU flags or measure its GPU, so it keys a build request
by what it does know: checkpoint digest, recipe, and the target hardware class (a GPU
product, or ``cpu``). The builder computes the exact engine key on the node and reports
it, with the engine's metrics, through the container's termination message, which the
operator reads from the pod status without any storage access of its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from recserve_operator.api.types import RecommenderModel
from recserve_operator.planners.k8s_common import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    TMP_MOUNT,
    artifact_volume,
    common_env,
    container_security_context,
    gpu_tolerations,
    metadata,
    mlflow_env,
    pod_security_context,
    scratch_volume,
)
from recserve_operator.settings import OperatorSettings
from recserve_serving.dataspec import DataSpec
from recserve_serving.recipe import OptimizationRecipe

TERMINATION_LOG = "/dev/termination-log"
BUILD_COMPONENT = "engine-build"


@dataclass(frozen=True)
class BuildRequest:
    """One engine to build: which version it is for, from what, with which recipe, for what hardware."""

    version: str
    checkpoint_uri: str
    checkpoint_digest: str
    recipe: OptimizationRecipe
    gpu_product: str | None
    search_workload: tuple[int, int] | None = None
    """(pairs, threads) of the search benchmark, when the recipe searches: the retrieval
    candidates and engine threads of a replica, since that is what the winner must be fast at."""
    data: DataSpec | None = None
    """The model's ``spec.data``: what the build gates the engine on and indexes for routers
    (None: the bundled example)."""

    @property
    def hardware_class(self) -> str:
        return f"gpu:{self.gpu_product}" if self.gpu_product else "cpu"

    @property
    def key(self) -> str:
        fields: dict[str, Any] = {
            "digest": self.checkpoint_digest,
            "recipe": self.recipe.to_dict(),
            "hardware": self.hardware_class,
        }
        if self.search_workload is not None:
            fields["searchWorkload"] = list(self.search_workload)
        if self.data is not None:
            fields["data"] = self.data.model_dump(mode="json", by_alias=True, exclude_none=True)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def search_args(self) -> list[str]:
        if self.search_workload is None:
            return []
        pairs, threads = self.search_workload
        return ["--pairs", str(pairs), "--threads", str(threads)]

    def data_args(self) -> list[str]:
        if self.data is None:
            return []
        block = self.data.model_dump(mode="json", by_alias=True, exclude_none=True)
        return ["--data-json", json.dumps(block, sort_keys=True)]


def needs_gpu(recipe: OptimizationRecipe, gpus: float) -> bool:
    """TensorRT engines are specific to a GPU architecture, so they build where they will run."""
    return recipe.backend == "tensorrt" or (recipe.backend in {"auto", "torch"} and gpus > 0)


def build_request(
    model: RecommenderModel,
    version: str,
    checkpoint_uri: str,
    digest: str,
    recipe: OptimizationRecipe,
    settings: OperatorSettings,
) -> BuildRequest:
    resources = model.spec.serving.resources
    product = None
    if needs_gpu(recipe, resources.gpus):
        product = resources.gpu_product or settings.default_gpu_product
    workload = None
    if recipe.search is not None:
        workload = (model.spec.serving.retrieval.candidates, resources.engine_threads)
    return BuildRequest(version, checkpoint_uri, digest, recipe, product, workload, model.spec.data)


def job_name(model: RecommenderModel, request: BuildRequest) -> str:
    return f"{model.metadata.name}-build-{request.key[:10]}"


def plan_build_job(
    model: RecommenderModel, request: BuildRequest, settings: OperatorSettings
) -> dict[str, Any]:
    volumes, mounts, store_env = artifact_volume(settings, read_only=False)
    tmp_volume, tmp_mount = scratch_volume("tmp", TMP_MOUNT)
    resources = model.spec.serving.resources
    limits: dict[str, Any] = {"cpu": str(max(2, int(resources.cpus))), "memory": "8Gi"}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": "build",
                "image": settings.builder_image,
                "args": [
                    "build",
                    "--checkpoint",
                    request.checkpoint_uri,
                    "--expect-digest",
                    request.checkpoint_digest,
                    "--recipe-json",
                    json.dumps(request.recipe.to_dict(), sort_keys=True),
                    "--cache",
                    settings.engine_root,
                    "--index-dir",
                    settings.index_dir,
                    "--termination-log",
                    TERMINATION_LOG,
                    *request.search_args(),
                    *request.data_args(),
                ],
                "env": [*common_env(settings), *mlflow_env(settings), *store_env],
                "resources": {"requests": dict(limits), "limits": limits},
                "volumeMounts": [*mounts, tmp_mount],
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": container_security_context(),
            }
        ],
        "volumes": [*volumes, tmp_volume],
    }
    if request.gpu_product is not None:
        limits[GPU_RESOURCE] = "1"
        pod_spec["containers"][0]["resources"] = {"requests": dict(limits), "limits": limits}
        pod_spec["nodeSelector"] = {GPU_PRODUCT_LABEL: request.gpu_product}
        pod_spec["tolerations"] = gpu_tolerations()
    meta = metadata(model, job_name(model, request), BUILD_COMPONENT)
    meta["labels"]["recserve.dev/build-key"] = request.key[:63]
    meta["labels"]["recserve.dev/version"] = request.version
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": settings.build_backoff_limit,
            "activeDeadlineSeconds": settings.build_deadline_seconds,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod_spec},
        },
    }
