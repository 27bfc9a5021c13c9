"""Pure planners: spec + context in, manifests/config out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from recserve_operator.planners.build_job import build_request, job_name, plan_build_job
from recserve_operator.planners.rayservice import (
    GCS_PORT,
    MAX_SERVED_VERSIONS,
    RAY_METRICS_PORT,
    plan_rayservice,
    worker_group_name,
)
from recserve_operator.planners.serve_config import (
    DeployPlan,
    ServedVersion,
    ServeObservation,
    ServeSite,
    plan_hand_over,
    plan_serve_config,
)
from recserve_operator.settings import OperatorSettings
from recserve_operator.validate import load_model
from recserve_serving.errors import InvalidRequest
from recserve_serving.serve.config import TrafficSplit, render_serve_config
from recserve_serving.serving_spec import FaultInjectionSpec, ResourcesSpec

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests/examples"
SETTINGS = OperatorSettings(serving_image="reg/serving:1", builder_image="reg/builder:1")
SITE = ServeSite(index_dir="/index", online_dir="/online", pseudonym_key_file="/keys/pseudonym")


def model(name: str, **meta):
    loaded = load_model(EXAMPLES / name)
    metadata = loaded.metadata.model_copy(update={"namespace": "ml", "uid": "u-1", **meta})
    return loaded.model_copy(update={"metadata": metadata})


CPU = model("movielens-ranker.yaml")
GPU = model("movielens-ranker-gpu.yaml")
CANARY = model("movielens-ranker-canary.yaml")


def test_cpu_build_job_has_no_gpu_and_is_owned():
    request = build_request(
        CPU, "stable", "models:/movielens-ranker/1", "d1", CPU.spec.optimization, SETTINGS
    )
    job = plan_build_job(CPU, request, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "recserve.dev/v1alpha1",
        "kind": "RecommenderModel",
        "name": "movielens-ranker",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["args"][:3] == ["build", "--checkpoint", "models:/movielens-ranker/1"]
    assert job["spec"]["backoffLimit"] == SETTINGS.build_backoff_limit
    assert job["spec"]["activeDeadlineSeconds"] == SETTINGS.build_deadline_seconds
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "recserve-artifacts"}} in pod[
        "volumes"
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert len(job["metadata"]["name"]) <= 63


def test_gpu_build_job_selects_the_product_and_tolerates_the_taint():
    request = build_request(GPU, "stable", "models:/m@champion", "d1", GPU.spec.optimization, SETTINGS)
    pod = plan_build_job(GPU, request, SETTINGS)["spec"]["template"]["spec"]
    product = GPU.spec.serving.resources.gpu_product
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": product}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_same_inputs_same_job_and_any_change_a_new_one():
    recipe = CPU.spec.optimization
    a = build_request(CPU, "stable", "models:/m/1", "d1", recipe, SETTINGS)
    assert job_name(CPU, a) == job_name(
        CPU, build_request(CPU, "stable", "models:/m/1", "d1", recipe, SETTINGS)
    )
    assert a.key != build_request(CPU, "stable", "models:/m/1", "d2", recipe, SETTINGS).key
    int8_to_fp32 = recipe.model_copy(update={"precision": "fp32"})
    assert a.key != build_request(CPU, "stable", "models:/m/1", "d1", int8_to_fp32, SETTINGS).key


def test_s3_artifact_store_is_refused_at_startup_with_what_is_supported():
    with pytest.raises(InvalidRequest, match=r"must be pvc://CLAIM.*s3:// is not supported"):
        OperatorSettings.from_env({"RECSERVE_ARTIFACT_STORE": "s3://bucket/engines"})
    assert OperatorSettings.from_env({}).artifact_store == "pvc://recserve-artifacts"


def test_a_tracking_uri_with_credentials_is_refused_at_startup():
    env = {"RECSERVE_MLFLOW_TRACKING_URI": "https://alice:s3cret@mlflow.mlops:5000"}
    with pytest.raises(InvalidRequest, match="embeds credentials") as caught:
        OperatorSettings.from_env(env)
    assert "s3cret" not in str(caught.value)


def test_registry_credentials_reach_build_jobs_only_by_secret_reference():
    settings = OperatorSettings.from_env(
        {
            "RECSERVE_MLFLOW_TRACKING_URI": "http://mlflow.mlops:5000",
            "RECSERVE_MLFLOW_CREDENTIALS_SECRET": "recserve-mlflow",
        }
    )
    request = build_request(CPU, "stable", "models:/m/1", "d1", CPU.spec.optimization, settings)
    job_env = plan_build_job(CPU, request, settings)["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in job_env}
    assert by_name["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlops:5000"
    for name, key in (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")):
        assert by_name[name] == {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "recserve-mlflow", "key": key}},
        }
    service = plan_rayservice(CPU, {"applications": []}, settings)
    assert "MLFLOW" not in json.dumps(service)  # serving pods never talk to the registry


def _serve(model_, canary=False, weight=0, stable_dir="/artifacts/engines/a"):
    plan = DeployPlan(
        ServedVersion("m/1", stable_dir),
        ServedVersion("m/2", "/artifacts/engines/b") if canary else None,
        TrafficSplit(canary_weight=weight),
    )
    return plan_serve_config(model_, plan, SITE)


def _apps(rendered):
    return {app["name"]: app for app in rendered["applications"]}


def _ranker(rendered, label="m/1"):
    (app,) = [a for a in rendered["applications"] if a.get("args", {}).get("label") == label]
    (deployment,) = app["deployments"]
    return deployment


def _router_traffic(rendered, name="movielens-ranker"):
    return _apps(rendered)[name]["deployments"][0]["user_config"]


def test_serve_config_maps_autoscaling_and_batching_from_the_spec():
    rendered = render_serve_config(_serve(CPU))
    apps = _apps(rendered)
    router = apps["movielens-ranker"]
    assert router["import_path"] == "recserve_serving.serve.app:build_router"
    assert router["route_prefix"] == "/" and router["args"]["onlineDir"] == "/online/movielens-ranker"
    assert router["args"]["data"]["catalog"]["uri"] == "bundled://movielens-small/movies.csv"
    (ranker_app,) = [a for name, a in apps.items() if name != "movielens-ranker"]
    assert ranker_app["import_path"] == "recserve_serving.serve.app:build_ranker"
    assert ranker_app["route_prefix"] is None, "rankers are reached through the router only"
    ranker = _ranker(rendered)
    spec = CPU.spec.serving
    assert ranker["autoscaling_config"] == {
        "min_replicas": spec.autoscaling.min_replicas,
        "max_replicas": spec.autoscaling.max_replicas,
        "target_ongoing_requests": spec.autoscaling.target_ongoing_requests,
        "upscale_delay_s": spec.autoscaling.upscale_delay_seconds,
        "downscale_delay_s": spec.autoscaling.downscale_delay_seconds,
    }
    assert ranker["max_ongoing_requests"] >= spec.batching.max_batch_size
    assert ranker_app["args"]["batching"]["maxBatchSize"] == spec.batching.max_batch_size
    assert _router_traffic(rendered)["stable"] == {"app": ranker_app["name"], "label": "m/1"}


def test_engine_threads_are_the_whole_cores_a_shard_reserves():
    for example, threads in ((CPU, 1), (GPU, 4)):
        (args,) = [
            a["args"] for a in render_serve_config(_serve(example))["applications"] if "label" in a["args"]
        ]
        assert args["threads"] == threads
    assert ResourcesSpec(cpus=0.5).engine_threads == 1


def test_weights_live_only_in_the_router_user_config():
    at5, at25 = (render_serve_config(_serve(CANARY, canary=True, weight=w)) for w in (5, 25))
    assert _router_traffic(at5, "movielens-ranker")["canaryWeight"] == 5
    assert _router_traffic(at25, "movielens-ranker")["canaryWeight"] == 25
    for rendered in (at5, at25):
        rendered["applications"][0]["deployments"][0].pop("user_config")
    assert at5 == at25, "a weight change must not touch anything but the router's user_config"


def test_promotion_changes_no_application_args():
    """A canary is promoted by routing alone: every app that stays keeps its args."""
    during = render_serve_config(_serve(CANARY, canary=True, weight=80))
    after = render_serve_config(
        plan_serve_config(CANARY, DeployPlan(ServedVersion("m/2", "/artifacts/engines/b")), SITE)
    )
    before_apps, after_apps = _apps(during), _apps(after)
    assert set(after_apps) < set(before_apps)
    for name, app in after_apps.items():
        assert app["args"] == before_apps[name]["args"], name


def test_a_fault_drill_is_in_the_canary_app_args_alone():
    drill = FaultInjectionSpec(abort_percent=20)
    plan = DeployPlan(
        ServedVersion("m/1", "/artifacts/engines/a"),
        ServedVersion("m/2", "/artifacts/engines/b", fault_injection=drill),
        TrafficSplit(canary_weight=25),
    )
    drilled = _apps(render_serve_config(plan_serve_config(CANARY, plan, SITE)))
    plain = _apps(render_serve_config(_serve(CANARY, canary=True, weight=25)))
    by_label = {app["args"].get("label"): (name, app["args"]) for name, app in drilled.items()}
    assert by_label["m/2"][1]["faultInjection"] == {"abortPercent": 20.0}
    assert "faultInjection" not in by_label["m/1"][1]
    assert by_label["m/1"][0] in plain, "stable's application is the same with or without a drill"
    assert by_label["m/2"][0] not in plain, "the drilled canary is an application of its own"


def test_a_fault_strikes_its_share_of_calls():
    drill = FaultInjectionSpec(abort_percent=20)
    assert [drill.strikes(call) for call in range(10)] == [False, False, False, False, True] * 2
    for start in range(0, 50, 7):
        assert sum(drill.strikes(call) for call in range(start, start + 5)) == 1
    assert sum(FaultInjectionSpec(abort_percent=2.5).strikes(call) for call in range(1000)) == 25
    with pytest.raises(ValueError, match="abortPercent"):
        FaultInjectionSpec.model_validate({"abortPercent": 0})


def test_a_split_without_a_canary_leaves_everything_on_stable():
    plan = DeployPlan(ServedVersion("m/1", "/a"), None, TrafficSplit(canary_weight=30, shadow_percent=5))
    traffic = plan_serve_config(CANARY, plan, SITE).traffic()
    assert traffic.canary is None and not traffic.reaches_canary()
    assert _router_traffic(render_serve_config(plan_serve_config(CANARY, plan, SITE)))["canaryWeight"] == 0


def _observed(rendered, running):
    return ServeObservation(rendered, frozenset(running))


def test_hand_over_routes_a_canary_only_once_its_app_runs():
    stable_only = render_serve_config(_serve(CANARY))
    router = "movielens-ranker"
    stable_app = _router_traffic(stable_only, router)["stable"]["app"]
    wanted = _serve(CANARY, canary=True, weight=20)
    canary_app = wanted.traffic().canary.app

    warming = plan_hand_over(wanted, _observed(stable_only, {router, stable_app}))
    assert canary_app in _apps(warming.rendered), "the canary is deployed to warm up"
    assert warming.traffic.canary is None and warming.traffic.canary_weight == 0
    assert not warming.settled

    running = plan_hand_over(wanted, _observed(warming.rendered, {router, stable_app, canary_app}))
    assert running.settled and running.traffic == wanted.traffic()
    assert running.rendered == render_serve_config(wanted)


def test_hand_over_keeps_a_version_that_lost_its_route_until_the_router_applied_it():
    router = "movielens-ranker"
    during = render_serve_config(_serve(CANARY, canary=True, weight=80))
    old_stable = _router_traffic(during, router)["stable"]["app"]
    canary_app = _router_traffic(during, router)["canary"]["app"]
    promoted = plan_serve_config(CANARY, DeployPlan(ServedVersion("m/2", "/artifacts/engines/b")), SITE)
    everything = {router, old_stable, canary_app}

    step1 = plan_hand_over(promoted, _observed(during, everything))
    assert step1.settled and step1.traffic.stable.app == canary_app
    assert old_stable in _apps(step1.rendered), "requests already sent to it must finish"

    # The router has not applied the new traffic yet (its app is updating): keep it.
    step2 = plan_hand_over(promoted, _observed(step1.rendered, everything - {router}))
    assert old_stable in _apps(step2.rendered)

    step3 = plan_hand_over(promoted, _observed(step1.rendered, everything))
    assert old_stable not in _apps(step3.rendered)
    assert step3.rendered == render_serve_config(promoted)


def test_hand_over_keeps_the_old_stable_routed_while_a_new_stable_starts():
    router = "movielens-ranker"
    old = render_serve_config(_serve(CPU))
    old_app = _router_traffic(old, router)["stable"]["app"]
    new = _serve(CPU, stable_dir="/artifacts/engines/new")
    new_app = new.traffic().stable.app
    assert new_app != old_app

    starting = plan_hand_over(new, _observed(old, {router, old_app}))
    assert starting.traffic.stable.app == old_app and not starting.settled
    assert {old_app, new_app} <= set(_apps(starting.rendered))

    took_over = plan_hand_over(new, _observed(starting.rendered, {router, old_app, new_app}))
    assert took_over.traffic.stable.app == new_app and took_over.settled


def test_first_deploy_routes_the_stable_version_at_once():
    step = plan_hand_over(_serve(CPU), ServeObservation())
    assert step.settled and step.rendered == render_serve_config(_serve(CPU))


def test_rayservice_head_has_no_gpu_and_workers_fit_a_placement_group():
    service = plan_rayservice(GPU, render_serve_config(_serve(GPU)), SETTINGS)
    cluster = service["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    (group,) = cluster["workerGroupSpecs"]
    spec = GPU.spec.serving
    shards = spec.parallelism.pipeline * spec.parallelism.tensor
    worker = group["template"]["spec"]
    assert worker["nodeSelector"] == {"nvidia.com/gpu.product": spec.resources.gpu_product}
    assert (
        int(worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) == shards * spec.resources.gpus
    )
    assert group["rayStartParams"]["num-gpus"] == str(int(shards * spec.resources.gpus))
    # Room for a canary and a hand-over from the start: KubeRay never resizes a live cluster.
    assert (group["minReplicas"], group["maxReplicas"]) == (
        spec.autoscaling.min_replicas,
        spec.autoscaling.max_replicas * MAX_SERVED_VERSIONS,
    )
    assert cluster["enableInTreeAutoscaling"] is True
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == render_serve_config(_serve(GPU))


POOL = {
    "nodeSelector": {"recserve.dev/pool": "inference"},
    "tolerations": [{"key": "recserve.dev/pool", "operator": "Exists", "effect": "NoSchedule"}],
}


def _placed(base, placement):
    spec = base.spec.model_copy(update={"placement": type(base.spec.placement).model_validate(placement)})
    return base.model_copy(update={"spec": spec})


def test_placement_reaches_the_head_and_joins_a_gpu_groups_own_selector_and_toleration():
    placed = _placed(GPU, POOL)
    cluster = plan_rayservice(placed, render_serve_config(_serve(placed)), SETTINGS)["spec"][
        "rayClusterConfig"
    ]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"] == POOL["nodeSelector"]
    assert head["tolerations"] == POOL["tolerations"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    product = GPU.spec.serving.resources.gpu_product
    assert worker["nodeSelector"] == {**POOL["nodeSelector"], "nvidia.com/gpu.product": product}
    assert worker["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        *POOL["tolerations"],
    ]


def test_without_placement_cpu_pods_carry_no_selector_or_toleration():
    cluster = plan_rayservice(CPU, render_serve_config(_serve(CPU)), SETTINGS)["spec"]["rayClusterConfig"]
    for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
        assert "nodeSelector" not in template["spec"] and "tolerations" not in template["spec"]


def test_head_size_and_worker_overhead_come_from_the_settings():
    small = OperatorSettings(ray_head_cpu="500m", ray_head_memory="2Gi", ray_worker_overhead_cpu=0.25)
    light = CPU.model_copy(
        update={
            "spec": CPU.spec.model_copy(
                update={
                    "serving": CPU.spec.serving.model_copy(
                        update={"resources": ResourcesSpec(cpus=0.25, memory="512Mi")}
                    )
                }
            )
        }
    )
    cluster = plan_rayservice(light, render_serve_config(_serve(light)), small)["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    assert head["requests"] == head["limits"] == {"cpu": "500m", "memory": "2Gi"}
    (group,) = cluster["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]["resources"]
    assert worker["requests"] == worker["limits"] == {"cpu": "500m", "memory": "2Gi"}
    assert group["rayStartParams"]["num-cpus"] == "2"  # the replica and a coordinator, in Ray's terms
    default = plan_rayservice(CPU, render_serve_config(_serve(CPU)), SETTINGS)["spec"]["rayClusterConfig"]
    cpus = CPU.spec.serving.resources.cpus
    assert default["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["requests"][
        "cpu"
    ] == (str(int(cpus + 1)) if float(cpus).is_integer() else f"{round((cpus + 1) * 1000)}m")
    assert default["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "2",
        "memory": "4Gi",
    }


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"RECSERVE_RAY_HEAD_CPU": "two"}, "RECSERVE_RAY_HEAD_CPU='two'"),
        ({"RECSERVE_RAY_HEAD_CPU": "0m"}, "positive CPU quantity"),
        ({"RECSERVE_RAY_HEAD_MEMORY": "512Mi"}, "at least 1Gi"),
        ({"RECSERVE_RAY_WORKER_OVERHEAD_CPU": "-1"}, "from 0 to 64"),
        ({"RECSERVE_RAY_WORKER_OVERHEAD_CPU": "lots"}, "config.rayWorkerOverheadCpu"),
    ],
)
def test_ray_pod_sizes_are_refused_at_startup_with_the_fix(env, words):
    with pytest.raises(InvalidRequest, match=re.escape(words)):
        OperatorSettings.from_env(env)


def test_ray_pod_sizes_are_read_from_the_environment():
    settings = OperatorSettings.from_env(
        {
            "RECSERVE_RAY_HEAD_CPU": "1.5",
            "RECSERVE_RAY_HEAD_MEMORY": "3Gi",
            "RECSERVE_RAY_WORKER_OVERHEAD_CPU": "0",
        }
    )
    assert (settings.ray_head_cpu, settings.ray_head_memory, settings.ray_worker_overhead_cpu) == (
        "1.5",
        "3Gi",
        0,
    )


def test_a_fixed_size_worker_group_runs_without_the_ray_autoscaler():
    serving = CPU.spec.serving
    fixed = serving.model_copy(
        update={"autoscaling": serving.autoscaling.model_copy(update={"min_replicas": 2, "max_replicas": 2})}
    )
    model = CPU.model_copy(update={"spec": CPU.spec.model_copy(update={"serving": fixed})})
    cluster = plan_rayservice(model, render_serve_config(_serve(model)), SETTINGS)["spec"]["rayClusterConfig"]
    assert "enableInTreeAutoscaling" not in cluster and "autoscalerOptions" not in cluster
    assert cluster["workerGroupSpecs"][0]["replicas"] == 2


def test_workers_are_ready_when_their_raylet_is_since_only_the_head_runs_a_serve_proxy():
    config = render_serve_config(_serve(CPU))
    assert config["proxy_location"] == "HeadOnly"
    cluster = plan_rayservice(CPU, config, SETTINGS)["spec"]["rayClusterConfig"]
    probe = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["readinessProbe"]
    command = probe["exec"]["command"][-1]
    assert "local_raylet_healthz" in command and ":8000" not in command
    assert "readinessProbe" not in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]


def test_worker_group_names_are_dns_safe():
    assert worker_group_name("NVIDIA-H100-80GB-HBM3", 1) == "gpu-nvidia-h100-80gb-hbm3"
    assert worker_group_name(None, 0) == "cpu"


def test_rendered_configs_pass_ray_serves_own_validation():
    from recserve_serving.serve.config import check_with_ray

    for m, canary in ((CPU, False), (GPU, False), (CANARY, True)):
        check_with_ray(render_serve_config(_serve(m, canary=canary, weight=5 if canary else 0)))


def test_ray_validation_rejects_what_ray_would():
    from recserve_serving.errors import InvalidRequest
    from recserve_serving.serve.config import check_with_ray

    rendered = render_serve_config(_serve(CPU))
    ranker = _ranker(rendered)
    ranker["autoscaling_config"]["min_replicas"] = 5
    ranker["autoscaling_config"]["max_replicas"] = 2
    with pytest.raises(InvalidRequest, match="max_replicas"):
        check_with_ray(rendered)


def test_pipeline_parallel_ranker_reserves_a_strict_pack_placement_group():
    serving = CPU.spec.serving.model_copy(
        update={"parallelism": CPU.spec.serving.parallelism.model_copy(update={"pipeline": 2})}
    )
    two_stage = CPU.model_copy(update={"spec": CPU.spec.model_copy(update={"serving": serving})})
    rendered = render_serve_config(_serve(two_stage))
    ranker = _ranker(rendered)
    assert ranker["placement_group_strategy"] == "STRICT_PACK"
    assert ranker["placement_group_bundles"] == [{"CPU": 0.1}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert ranker["ray_actor_options"]["num_cpus"] == 0.1
    gpu_ranker = _ranker(render_serve_config(_serve(GPU)))
    assert all(bundle.get("GPU") == 1 for bundle in gpu_ranker["placement_group_bundles"][1:])


def test_a_models_applications_are_told_apart_from_other_models():
    from recserve_serving.serve.config import owned_by

    rendered = render_serve_config(_serve(CPU))
    assert all(owned_by(app["name"], "movielens-ranker") for app in rendered["applications"])
    assert not any(owned_by(app["name"], "movielens") for app in rendered["applications"])
    assert not owned_by("movielens-ranker-gpu", "movielens-ranker")


def _pods(service):
    """(template) of the head and of every worker group of a planned RayService."""
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


def _build_pod(m=CPU):
    request = build_request(m, "stable", "models:/m/1", "d1", m.spec.optimization, SETTINGS)
    return plan_build_job(m, request, SETTINGS)["spec"]["template"]["spec"]


def test_serving_pods_mount_the_artifact_store_read_only():
    for m in (CPU, GPU):
        for template in _pods(plan_rayservice(m, render_serve_config(_serve(m)), SETTINGS)):
            pod = template["spec"]
            (volume,) = [v for v in pod["volumes"] if v["name"] == "artifacts"]
            assert volume["persistentVolumeClaim"]["readOnly"] is True
            (mount,) = [v for v in pod["containers"][0]["volumeMounts"] if v["name"] == "artifacts"]
            assert mount["readOnly"] is True and mount["mountPath"] == SETTINGS.artifact_mount
    build = _build_pod()
    (mount,) = [v for v in build["containers"][0]["volumeMounts"] if v["name"] == "artifacts"]
    assert mount["readOnly"] is False, "build Jobs write the engines"


def test_build_jobs_write_the_retrieval_index_that_routers_read_from_the_store():
    """Building the index takes torch, which the serving image lacks: the build Job (read-write
    mount) writes it into the artifact store, and routers read it there (read-only mount)."""
    index = SETTINGS.index_dir
    assert index.startswith(SETTINGS.artifact_mount + "/")
    args = _build_pod()["containers"][0]["args"]
    assert args[args.index("--index-dir") + 1] == index
    for template in _pods(plan_rayservice(CPU, render_serve_config(_serve(CPU)), SETTINGS)):
        mounts = {m["mountPath"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert mounts[SETTINGS.artifact_mount]["readOnly"] is True


@pytest.mark.parametrize("kind", ["serving", "build"])
def test_serving_pods_and_build_jobs_run_as_non_root_under_runtime_default_seccomp(kind):
    if kind == "serving":
        templates = [
            t for m in (CPU, GPU) for t in _pods(plan_rayservice(m, render_serve_config(_serve(m)), SETTINGS))
        ]
        pods = [t["spec"] for t in templates]
    else:
        pods = [_build_pod(CPU), _build_pod(GPU)]
    for pod in pods:
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            c = container["securityContext"]
            assert c["allowPrivilegeEscalation"] is False
            assert c["capabilities"] == {"drop": ["ALL"]}
            assert c["readOnlyRootFilesystem"] is True
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert "/tmp" in writable, "Ray's temp dir and tempfile need a writable /tmp"
            scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
            assert {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"} <= scratch


def test_the_ray_autoscaler_sidecar_drops_its_privileges_too():
    service = plan_rayservice(CPU, render_serve_config(_serve(CPU)), SETTINGS)
    security = service["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
    assert security == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


# --- The model's NetworkPolicy, evaluated the way the NetworkPolicy API defines it (matchLabels
# selectors only, which is all the planner and the chart's defaults use).

PEERS = {
    "servingClients": [
        {"podSelector": {}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"recserve.dev/serving-client": "true"}}},
    ],
    "kuberay": [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
        }
    ],
    "operator": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "recserve-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
        }
    ],
    "metrics": [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ],
}
FENCED = OperatorSettings(network_policy=PEERS)


def _selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _admits(policy, pod_labels, source_namespace, source_labels, port):
    """Whether ``policy`` (in the model's namespace) lets a pod in ``source_namespace`` with
    ``source_labels`` reach a pod with ``pod_labels`` on ``port``."""
    spec = policy["spec"]
    if not _selects(spec["podSelector"], pod_labels) or "Ingress" not in spec["policyTypes"]:
        return True
    here = policy["metadata"]["namespace"]
    ns_labels = {"kubernetes.io/metadata.name": source_namespace}
    for rule in spec.get("ingress", []):
        ports = rule.get("ports")
        if ports and port not in {p["port"] for p in ports}:
            continue
        for peer in rule.get("from") or [{"namespaceSelector": {}}]:
            if "namespaceSelector" in peer:
                in_ns = _selects(peer["namespaceSelector"], ns_labels)
            else:
                in_ns = source_namespace == here
            if in_ns and _selects(peer.get("podSelector", {}), source_labels):
                return True
    return False


def _renamed(m, name):
    return m.model_copy(update={"metadata": m.metadata.model_copy(update={"name": name})})


def _fence(m=CPU):
    from recserve_operator.planners.network_policy import plan_network_policy

    assert FENCED.network_policy is not None
    return plan_network_policy(m, FENCED.network_policy, FENCED.serve_port)


def _serving_pod(m=CPU):
    """The labels KubeRay gives a head pod: the template's, plus its own."""
    service = plan_rayservice(m, render_serve_config(_serve(m)), SETTINGS)
    labels = dict(service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"])
    return {**labels, "ray.io/node-type": "head", "ray.io/cluster": f"{m.metadata.name}-raycluster-x"}


def test_serving_pods_carry_the_labels_their_network_policy_selects():
    policy = _fence()
    for template in _pods(plan_rayservice(CPU, render_serve_config(_serve(CPU)), SETTINGS)):
        assert _selects(policy["spec"]["podSelector"], template["metadata"]["labels"])
    assert policy["metadata"]["namespace"] == CPU.metadata.namespace
    assert policy["metadata"]["ownerReferences"][0]["uid"] == CPU.metadata.uid
    other = _renamed(CPU, "other-model")
    assert not _selects(policy["spec"]["podSelector"], _serving_pod(other))


def test_network_policy_denies_the_ray_dashboard_to_other_pods():
    from recserve_operator.planners.rayservice import DASHBOARD_PORT

    policy, pod, ns = _fence(), _serving_pod(), CPU.metadata.namespace
    client = {"app": "web"}
    assert not _admits(policy, pod, ns, client, DASHBOARD_PORT), "a neighbour pod must not submit Ray jobs"
    assert not _admits(policy, pod, "elsewhere", client, DASHBOARD_PORT)
    other_model = _serving_pod(_renamed(CPU, "other-model"))
    assert not _admits(policy, pod, ns, other_model, DASHBOARD_PORT), "another model's Ray pods"
    operator = {"app.kubernetes.io/component": "operator"}
    assert not _admits(policy, pod, "recserve-system", operator, DASHBOARD_PORT)
    kuberay = {"app.kubernetes.io/name": "kuberay-operator"}
    assert _admits(policy, pod, "ray-system", kuberay, DASHBOARD_PORT), "KubeRay deploys Serve apps there"
    assert not _admits(policy, pod, "ray-system", kuberay, GCS_PORT)


def test_network_policy_admits_the_operator_and_serving_clients_on_the_serve_port_only():
    policy, pod, ns, port = _fence(), _serving_pod(), CPU.metadata.namespace, FENCED.serve_port
    assert _admits(policy, pod, ns, {"app": "web"}, port), "any pod in the model's namespace"
    assert not _admits(policy, pod, "elsewhere", {"app": "web"}, port)
    assert _admits(policy, pod, "elsewhere", {"recserve.dev/serving-client": "true"}, port)
    operator = {"app.kubernetes.io/component": "operator"}
    assert _admits(policy, pod, "recserve-system", operator, port), "the operator scrapes /metrics"
    assert not _admits(policy, pod, "some-other-ns", operator, port)
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert _admits(policy, pod, "monitoring", prometheus, RAY_METRICS_PORT)
    assert not _admits(policy, pod, ns, {"app": "web"}, RAY_METRICS_PORT)
    assert not _admits(policy, pod, ns, {"app": "web"}, GCS_PORT)


def test_ray_pods_of_one_model_reach_each_other_on_every_port():
    policy, pod = _fence(), _serving_pod()
    worker = {**pod, "ray.io/node-type": "worker"}
    for port in (GCS_PORT, 8265, 10002, 52365):
        assert _admits(policy, pod, CPU.metadata.namespace, worker, port)


def test_a_peer_group_left_empty_admits_nobody_rather_than_everybody():
    from recserve_operator.planners.network_policy import plan_network_policy

    policy = plan_network_policy(CPU, {**PEERS, "kuberay": []}, FENCED.serve_port)
    assert all(rule.get("from") for rule in policy["spec"]["ingress"])
    assert not _admits(
        policy, _serving_pod(), "ray-system", {"app.kubernetes.io/name": "kuberay-operator"}, 8265
    )


def test_network_policy_setting_is_read_and_checked_at_startup():
    assert OperatorSettings.from_env({}).network_policy is None
    parsed = OperatorSettings.from_env({"RECSERVE_NETWORK_POLICY": json.dumps({"kuberay": PEERS["kuberay"]})})
    assert parsed.network_policy == {
        "servingClients": [],
        "operator": [],
        "kuberay": PEERS["kuberay"],
        "metrics": [],
    }
    for bad in ("not json", '{"clients": []}', '{"kuberay": {}}', '["x"]'):
        with pytest.raises(InvalidRequest, match="RECSERVE_NETWORK_POLICY"):
            OperatorSettings.from_env({"RECSERVE_NETWORK_POLICY": bad})
