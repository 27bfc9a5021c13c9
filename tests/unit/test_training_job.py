"""The retrain CronJob: the pure planner, the cluster platform applying it level by level (against
a recording stand-in of the one Kubernetes API module), and ``status.training``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recserve_operator import kube
from recserve_operator.api.status import RecommenderModelStatus, TrainingStatus
from recserve_operator.api.types import RecommenderModel
from recserve_operator.cluster import handlers
from recserve_operator.cluster.platform import ClusterPlatform
from recserve_operator.planners.training_job import (
    CRONJOB_NAME_LIMIT,
    PSEUDONYM_DIR,
    SPEC_HASH_ANNOTATION,
    cronjob_name,
    last_run,
    needs_update,
    plan_training_cronjob,
    training_blocker,
    training_status,
)
from recserve_operator.settings import OperatorSettings
from recserve_operator.validate import check_document, load_model
from recserve_serving.errors import InvalidRequest, Unavailable
from recserve_serving.trainingspec import TrainingSpec

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests/examples"
SETTINGS = OperatorSettings(
    builder_image="reg/builder:1",
    trainer_image="reg/trainer:1",
    mlflow_tracking_uri="http://mlflow.mlops:5000",
    mlflow_credentials_secret="mlflow-creds",
    pseudonym_secret="recserve-pseudonym-key",
    trainer_service_account="recserve-trainer",
)


def model(training: dict[str, Any] | None = None, **meta: Any) -> RecommenderModel:
    loaded = load_model(EXAMPLES / "movielens-ranker.yaml")
    metadata = loaded.metadata.model_copy(update={"namespace": "ml", "uid": "u-1", **meta})
    spec = loaded.spec.model_copy(
        update={"training": None if training is None else TrainingSpec.model_validate(training)}
    )
    return loaded.model_copy(update={"metadata": metadata, "spec": spec})


TRAINED = model({"schedule": "0 3 * * 0", "budget": {"maxMinutes": 90}})


def pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def mounts(cronjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in pod(cronjob)["containers"][0]["volumeMounts"]}


def arg(cronjob: dict[str, Any], flag: str) -> str:
    args: list[str] = pod(cronjob)["containers"][0]["args"]
    return args[args.index(flag) + 1]


def test_schedule_suspend_and_concurrency_come_from_spec_training() -> None:
    cronjob = plan_training_cronjob(TRAINED, SETTINGS)
    assert cronjob["apiVersion"] == "batch/v1" and cronjob["kind"] == "CronJob"
    spec = cronjob["spec"]
    assert (spec["schedule"], spec["suspend"], spec["concurrencyPolicy"]) == ("0 3 * * 0", False, "Forbid")
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    suspended = plan_training_cronjob(model({"schedule": "@daily", "suspend": True}), SETTINGS)
    assert (suspended["spec"]["schedule"], suspended["spec"]["suspend"]) == ("@daily", True)


def test_the_job_deadline_is_the_training_budget() -> None:
    job = plan_training_cronjob(TRAINED, SETTINGS)["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 90 * 60
    assert 0 <= job["backoffLimit"] <= 2
    assert job["ttlSecondsAfterFinished"] > 0
    assert pod({"spec": {"jobTemplate": {"spec": job}}})["restartPolicy"] == "Never"


def test_the_command_is_recserve_retrain_with_the_model_and_its_inputs() -> None:
    cronjob = plan_training_cronjob(TRAINED, SETTINGS)
    container = pod(cronjob)["containers"][0]
    assert container["image"] == "reg/trainer:1"
    assert container["args"][:2] == ["retrain", "movielens-ranker"]
    assert arg(cronjob, "--tracking-uri") == "http://mlflow.mlops:5000"
    assert arg(cronjob, "--feedback-dir") == "/online/movielens-ranker/feedback"
    assert arg(cronjob, "--key-file") == f"{PSEUDONYM_DIR}/key" == "/var/run/recserve/pseudonym/key"
    assert arg(cronjob, "--state") in mounts(cronjob)
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-creds"


def test_model_json_is_the_spec_with_name_and_namespace_only_and_parses_back() -> None:
    observed = TRAINED.model_copy(
        update={
            "status": RecommenderModelStatus(observed_generation=3, phase="Ready"),
            "metadata": TRAINED.metadata.model_copy(update={"annotations": {"a": "b"}, "generation": 3}),
        }
    )
    document = json.loads(arg(plan_training_cronjob(observed, SETTINGS), "--model-json"))
    assert set(document) == {"apiVersion", "kind", "metadata", "spec"}
    assert document["metadata"] == {"name": "movielens-ranker", "namespace": "ml"}
    parsed, problems = check_document(document)
    assert problems == [] and parsed is not None
    assert parsed.spec == TRAINED.spec
    # Status, annotations and the generation do not reach the CronJob: it changes with spec only.
    assert plan_training_cronjob(observed, SETTINGS) == plan_training_cronjob(TRAINED, SETTINGS)


def test_the_feedback_log_data_and_key_are_mounted_read_only_and_only_scratch_is_writable() -> None:
    cronjob = plan_training_cronjob(TRAINED, SETTINGS)
    by_path = mounts(cronjob)
    online = by_path["/online"]
    assert (online["subPath"], online["readOnly"]) == ("online", True)
    assert by_path["/artifacts"]["readOnly"] is True
    assert by_path[PSEUDONYM_DIR]["readOnly"] is True
    volumes = {v["name"]: v for v in pod(cronjob)["volumes"]}
    assert volumes["artifacts"]["persistentVolumeClaim"] == {
        "claimName": "recserve-artifacts",
        "readOnly": True,
    }
    key = volumes["pseudonym-key"]["secret"]
    assert key["secretName"] == "recserve-pseudonym-key"
    assert key["items"] == [{"key": "key", "path": "key"}]
    writable = {path for path, m in by_path.items() if not m.get("readOnly")}
    assert all("emptyDir" in volumes[by_path[p]["name"]] for p in writable)
    assert "/tmp" in writable


def test_the_pod_is_non_root_read_only_and_has_no_kubernetes_token() -> None:
    spec = pod(plan_training_cronjob(TRAINED, SETTINGS))
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "recserve-trainer"
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = spec["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    # Without a trainer account the namespace's default is used, and still without a token.
    plain = OperatorSettings(mlflow_tracking_uri="http://m", pseudonym_secret="k")
    assert "serviceAccountName" not in pod(plan_training_cronjob(TRAINED, plain))
    assert pod(plan_training_cronjob(TRAINED, plain))["automountServiceAccountToken"] is False


def test_resources_and_pull_policy_follow_the_settings() -> None:
    settings = OperatorSettings.from_env(
        {
            "RECSERVE_MLFLOW_TRACKING_URI": "http://m",
            "RECSERVE_PSEUDONYM_SECRET": "k",
            "RECSERVE_BUILDER_IMAGE": "reg/builder:2",
            "RECSERVE_TRAINER_PULL_POLICY": "Always",
            "RECSERVE_TRAINER_RESOURCES": json.dumps(
                {"requests": {"cpu": "4"}, "limits": {"memory": "16Gi"}}
            ),
        }
    )
    container = pod(plan_training_cronjob(TRAINED, settings))["containers"][0]
    assert container["image"] == "reg/builder:2"  # the builder image, unless one is named
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {"requests": {"cpu": "4"}, "limits": {"memory": "16Gi"}}
    assert "imagePullPolicy" not in pod(plan_training_cronjob(TRAINED, SETTINGS))["containers"][0]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"RECSERVE_TRAINER_PULL_POLICY": "Sometimes"}, "training.image.pullPolicy"),
        ({"RECSERVE_TRAINER_RESOURCES": "{not json"}, "training.resources"),
        ({"RECSERVE_TRAINER_RESOURCES": '{"request": {"cpu": "1"}}'}, "training.resources"),
        ({"RECSERVE_TRAINER_RESOURCES": '{"limits": {"cpu": ["1"]}}'}, "training.resources"),
    ],
)
def test_unusable_trainer_settings_are_refused_at_startup(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment.replace(".", r"\.")):
        OperatorSettings.from_env(env)


def test_the_cronjob_is_owned_by_the_model_and_labelled() -> None:
    meta = plan_training_cronjob(TRAINED, SETTINGS)["metadata"]
    assert meta["name"] == "movielens-ranker-retrain" and meta["namespace"] == "ml"
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    assert meta["ownerReferences"][0]["kind"] == "RecommenderModel"
    assert meta["labels"]["app.kubernetes.io/component"] == "retrain"
    assert meta["labels"]["recserve.dev/model"] == "movielens-ranker"


def test_names_fit_the_cronjob_limit_and_long_ones_stay_distinct() -> None:
    assert cronjob_name("ranker") == "ranker-retrain"
    long_a, long_b = "a" * 50 + "-x", "a" * 50 + "-y"
    names = {cronjob_name(long_a), cronjob_name(long_b)}
    assert len(names) == 2
    assert all(len(n) <= CRONJOB_NAME_LIMIT and n.endswith("-retrain") for n in names)
    assert cronjob_name("b" * 44) == "b" * 44 + "-retrain"  # exactly at the limit: unchanged
    assert cronjob_name("b" * 45) != "b" * 45 + "-retrain"
    assert all(len(cronjob_name("c" * n)) <= CRONJOB_NAME_LIMIT for n in range(1, 254))


def test_the_spec_hash_is_stable_and_moves_with_the_spec() -> None:
    first = plan_training_cronjob(TRAINED, SETTINGS)
    again = plan_training_cronjob(model({"schedule": "0 3 * * 0", "budget": {"maxMinutes": 90}}), SETTINGS)
    assert first["metadata"]["annotations"] == again["metadata"]["annotations"]
    assert not needs_update(first, again)
    moved = plan_training_cronjob(model({"schedule": "0 4 * * 0", "budget": {"maxMinutes": 90}}), SETTINGS)
    assert (
        moved["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        != first["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    )
    assert needs_update(first, moved)
    # A hand edit of the schedule or suspension (which spec owns) is put back; API defaults are not.
    edited = {**first, "spec": {**first["spec"], "suspend": True}}
    assert needs_update(edited, first)
    defaulted = {**first, "spec": {**first["spec"], "successfulJobsHistoryLimit": 3, "extra": None}}
    assert not needs_update(defaulted, first)


def test_nothing_is_planned_without_spec_training_or_without_a_registry() -> None:
    assert training_blocker(model(None), SETTINGS) == "spec.training is not set"
    with pytest.raises(ValueError, match=r"spec\.training is not set"):
        plan_training_cronjob(model(None), SETTINGS)
    no_registry = OperatorSettings(pseudonym_secret="k")
    assert "config.mlflowTrackingUri" in (training_blocker(TRAINED, no_registry) or "")
    assert training_status(model(None), None) is None


T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def test_last_run_is_read_from_the_cronjob_status() -> None:
    assert last_run(0, None, None) is None
    assert last_run(1, T1, T0) == "Running"
    assert last_run(0, T0, T0.replace(minute=20)) == "Succeeded"
    assert last_run(0, T1, T0) == "Failed"
    assert last_run(0, T1, None) == "Failed"


def test_status_reports_the_live_cronjob() -> None:
    live = plan_training_cronjob(TRAINED, SETTINGS)
    live["status"] = {
        "active": [{"name": "movielens-ranker-retrain-29000000"}],
        "lastScheduleTime": "2026-11-30T03:00:00Z",
        "lastSuccessfulTime": "2026-11-29T03:41:10Z",
    }
    status = training_status(TRAINED, live)
    assert status == TrainingStatus(
        cron_job="movielens-ranker-retrain",
        schedule="0 3 * * 0",
        suspended=False,
        last_schedule_time=T1,
        last_successful_time=datetime(2026, 11, 29, 3, 41, 10, tzinfo=UTC),
        active=1,
        last_run="Running",
    )
    assert status.to_dict()["cronJob"] == "movielens-ranker-retrain"


class FakeKube:
    """The CronJob calls of ``recserve_operator.kube``, over a dict, recording each write."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.fail: Unavailable | None = None

    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.fail:
            raise self.fail
        found = self.objects.get((namespace, name))
        return None if found is None else json.loads(json.dumps(found))

    def create_cronjob(self, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.objects[key] = json.loads(json.dumps(body))
        self.writes.append(("create", key[1]))

    def patch_cronjob(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        current = self.objects[(namespace, name)]
        current["metadata"]["annotations"] = dict(body["metadata"]["annotations"])
        current["spec"] = json.loads(json.dumps(body["spec"]))
        self.writes.append(("patch", name))

    def delete_cronjob(self, namespace: str, name: str) -> None:
        del self.objects[(namespace, name)]
        self.writes.append(("delete", name))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    recorder = FakeKube()
    for name in ("get_cronjob", "create_cronjob", "patch_cronjob", "delete_cronjob"):
        monkeypatch.setattr(kube, name, getattr(recorder, name))
    return recorder


def test_the_platform_creates_keeps_patches_and_deletes_the_cronjob(fake: FakeKube) -> None:
    platform = ClusterPlatform(SETTINGS)
    status = platform.sync_training(TRAINED)
    assert fake.writes == [("create", "movielens-ranker-retrain")]
    assert status is not None and status.cron_job == "movielens-ranker-retrain"
    assert platform.sync_training(TRAINED) == status
    assert fake.writes == [("create", "movielens-ranker-retrain")]  # unchanged: nothing written
    edited = model({"schedule": "30 2 * * *", "budget": {"maxMinutes": 90}})
    status = platform.sync_training(edited)
    assert fake.writes[-1] == ("patch", "movielens-ranker-retrain")
    assert status is not None and status.schedule == "30 2 * * *"
    assert fake.objects[("ml", "movielens-ranker-retrain")]["spec"]["schedule"] == "30 2 * * *"
    removed = model(None).model_copy(update={"status": RecommenderModelStatus(training=status)})
    assert platform.sync_training(removed) is None
    assert fake.writes[-1] == ("delete", "movielens-ranker-retrain") and not fake.objects
    assert platform.sync_training(removed) is None
    assert fake.writes[-1] == ("delete", "movielens-ranker-retrain")  # nothing more to delete


def test_a_model_without_training_or_a_recorded_retrain_costs_no_api_call(fake: FakeKube) -> None:
    fake.fail = Unavailable("no call was expected")
    assert ClusterPlatform(SETTINGS).sync_training(model(None)) is None
    assert fake.writes == []


def test_the_platform_leaves_a_cronjob_it_does_not_own(fake: FakeKube) -> None:
    foreign = plan_training_cronjob(TRAINED, SETTINGS)
    foreign["metadata"]["ownerReferences"] = [{"uid": "someone-else"}]
    fake.objects[("ml", "movielens-ranker-retrain")] = foreign
    status = ClusterPlatform(SETTINGS).sync_training(TRAINED)
    assert status is not None and status.cron_job is None
    assert "is not this model's" in (status.message or "")
    removed = model(None).model_copy(update={"status": RecommenderModelStatus(training=status)})
    assert ClusterPlatform(SETTINGS).sync_training(removed) is None
    assert fake.writes == []


def test_settings_that_cannot_schedule_remove_the_cronjob_and_say_why(fake: FakeKube) -> None:
    ClusterPlatform(SETTINGS).sync_training(TRAINED)
    status = ClusterPlatform(OperatorSettings(pseudonym_secret="k")).sync_training(TRAINED)
    assert fake.writes[-1] == ("delete", "movielens-ranker-retrain")
    assert status is not None and status.cron_job is None and status.schedule == "0 3 * * 0"
    assert "config.mlflowTrackingUri" in (status.message or "")


def test_an_api_failure_keeps_the_last_training_status_and_is_retried(
    fake: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = ClusterPlatform(SETTINGS)
    monkeypatch.setattr(handlers, "_training", platform)
    first, error = handlers.sync_training(TRAINED)
    assert error is None and first is not None
    fake.fail = Unavailable("Kubernetes API read CronJob ml/movielens-ranker-retrain failed (503): busy")
    observed = TRAINED.model_copy(update={"status": RecommenderModelStatus(training=first)})
    kept, error = handlers.sync_training(observed)
    assert error is not None and "503" in error
    assert kept is not None and kept.cron_job == first.cron_job
    assert "retrain CronJob not applied" in (kept.message or "")


def test_without_a_scheduler_status_says_to_run_recserve_retrain_by_hand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "_training", None)
    status, error = handlers.sync_training(TRAINED)
    assert error is None and status is not None and status.cron_job is None
    assert "recserve retrain movielens-ranker" in (status.message or "")
    assert handlers.sync_training(model(None)) == (None, None)


def test_recserve_retrain_accepts_the_planned_command_and_reads_the_same_model() -> None:
    """The contract with the retrain CLI, checked against its real parser and model loader."""
    import argparse

    from recserve_operator.cli import SUBCOMMANDS
    from recserve_operator.commands import retrain

    args_list = pod(plan_training_cronjob(TRAINED, SETTINGS))["containers"][0]["args"]
    assert SUBCOMMANDS[args_list[0]][0] == retrain.__name__
    parser = argparse.ArgumentParser(prog="recserve retrain", exit_on_error=False)
    retrain.add_arguments(parser)
    args, unknown = parser.parse_known_args(args_list[1:])
    assert unknown == []
    assert (args.name, args.tracking_uri, str(args.key_file)) == (
        "movielens-ranker",
        "http://mlflow.mlops:5000",
        "/var/run/recserve/pseudonym/key",
    )
    assert str(args.feedback_dir) == "/online/movielens-ranker/feedback"
    assert retrain.load_model(args).spec == TRAINED.spec
