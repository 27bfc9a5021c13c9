"""spec.data through the planners and commands: build Jobs read the model's data, routers get it
with a writable online folder (and nothing else writable), and --data reads a manifest or a block."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from recserve_operator.commands.data_option import add_data_arguments, data_spec
from recserve_operator.planners.build_job import build_request, plan_build_job
from recserve_operator.planners.rayservice import plan_rayservice
from recserve_operator.planners.serve_config import DeployPlan, ServedVersion, ServeSite, plan_serve_config
from recserve_operator.settings import OperatorSettings
from recserve_operator.validate import load_model
from recserve_serving.dataspec import DataSpec
from recserve_serving.errors import InvalidRequest
from recserve_serving.example_data import EXAMPLE_DATA
from recserve_serving.serve.config import render_serve_config

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests/examples"
SETTINGS = OperatorSettings()


def test_a_build_job_reads_the_models_data_and_a_data_change_is_another_job() -> None:
    shop = load_model(EXAMPLES / "shop-ranker.yaml")
    recipe = shop.spec.optimization
    request = build_request(shop, "stable", "models:/shop-ranker/1", "d1", recipe, SETTINGS)
    args = plan_build_job(shop, request, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["args"]
    given = DataSpec.model_validate(json.loads(args[args.index("--data-json") + 1]))
    assert given == shop.spec.data
    raw = shop.model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["spec"]["data"]["interactions"]["positiveThreshold"] = 5
    other = type(shop).model_validate(raw)
    again = build_request(other, "stable", "models:/shop-ranker/1", "d1", recipe, SETTINGS)
    assert again.key != request.key


def test_routers_get_the_data_a_writable_online_folder_and_the_pseudonym_key_only() -> None:
    shop = load_model(EXAMPLES / "shop-ranker.yaml")
    site = ServeSite("/index", "/online", pseudonym_key_file=SETTINGS.pseudonym_key_file)
    config = plan_serve_config(shop, DeployPlan(stable=ServedVersion("shop-ranker/1", "/e")), site)
    assert config.router.data == shop.spec.data and config.router.online_dir == "/online/shop-ranker"
    assert config.router.pseudonym_key_file == "/var/run/recserve/pseudonym/key"
    service = plan_rayservice(shop, render_serve_config(config), SETTINGS)
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m for m in head["containers"][0]["volumeMounts"]}
    assert mounts["online"] == {"name": "online", "mountPath": "/online", "subPath": "online"}
    assert mounts["artifacts"]["readOnly"] is True
    claims = {v["name"]: v["persistentVolumeClaim"] for v in head["volumes"] if "persistentVolumeClaim" in v}
    assert claims["artifacts"]["readOnly"] is True and "readOnly" not in claims["online"]
    key = {"name": "pseudonym-key", "mountPath": "/var/run/recserve/pseudonym", "readOnly": True}
    assert mounts["pseudonym-key"] == key
    (secret,) = [v["secret"] for v in head["volumes"] if v["name"] == "pseudonym-key"]
    assert secret == {
        "secretName": "recserve-pseudonym-key",
        "items": [{"key": "key", "path": "key"}],
        "defaultMode": 0o440,
    }
    workers = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert key in workers["containers"][0]["volumeMounts"], "Serve may place the router on a worker"
    renamed = OperatorSettings.from_env({"RECSERVE_PSEUDONYM_SECRET": "shop-keys"})
    again = plan_rayservice(shop, render_serve_config(config), renamed)["spec"]["rayClusterConfig"]
    volumes = again["headGroupSpec"]["template"]["spec"]["volumes"]
    assert [v["secret"]["secretName"] for v in volumes if v["name"] == "pseudonym-key"] == ["shop-keys"]


def test_a_router_that_would_write_raw_user_ids_is_refused() -> None:
    shop = load_model(EXAMPLES / "shop-ranker.yaml")
    with pytest.raises(ValueError, match=r"onlineDir /online/shop-ranker is set.*pseudonymKeyFile is not"):
        plan_serve_config(
            shop, DeployPlan(stable=ServedVersion("shop-ranker/1", "/e")), ServeSite("/i", "/online")
        )
    with pytest.raises(InvalidRequest, match="RECSERVE_PSEUDONYM_SECRET='Bad_Name': must be a Secret name"):
        OperatorSettings.from_env({"RECSERVE_PSEUDONYM_SECRET": "Bad_Name"})


def test_a_model_without_data_serves_the_bundled_example() -> None:
    example = load_model(EXAMPLES / "movielens-ranker-canary.yaml")
    assert example.spec.data is None and example.spec.data_or_example == EXAMPLE_DATA


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return parser.parse_args(argv)


def test_data_comes_from_a_manifest_a_block_json_or_the_example(tmp_path: Path) -> None:
    shop = load_model(EXAMPLES / "shop-ranker.yaml").spec.data
    assert data_spec(parse("--data", str(EXAMPLES / "shop-ranker.yaml"))) == shop
    assert shop is not None
    block = tmp_path / "data.yaml"
    block.write_text(json.dumps({"data": shop.model_dump(mode="json", by_alias=True, exclude_none=True)}))
    assert data_spec(parse("--data", str(block))) == shop
    assert data_spec(parse("--data-json", shop.model_dump_json(by_alias=True))) == shop
    assert data_spec(parse()) == EXAMPLE_DATA
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  catalog: {uri: 's3://b/items.csv', idColumn: id}\n")
    with pytest.raises(
        InvalidRequest, match=r"(?s)--data .*bad.yaml: invalid data block.*s3:// data is not supported"
    ):
        data_spec(parse("--data", str(bad)))
    with pytest.raises(InvalidRequest, match="no such file"):
        data_spec(parse("--data", str(tmp_path / "absent.yaml")))


def test_a_redis_store_without_a_connection_string_uses_the_operators_default() -> None:
    raw = load_model(EXAMPLES / "shop-ranker.yaml").model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["spec"]["data"]["history"]["store"] = {"kind": "redis"}
    shop = type(load_model(EXAMPLES / "shop-ranker.yaml")).model_validate(raw)
    plan = DeployPlan(stable=ServedVersion("shop-ranker/1", "/e"))
    key = SETTINGS.pseudonym_key_file
    site = ServeSite("/index", "/online", key, history_redis="redis.recserve:6379,retry=null")
    store = plan_serve_config(shop, plan, site).router.data.history.store  # type: ignore[union-attr]
    assert store is not None and store.connection_string == "redis.recserve:6379,retry=null"
    with pytest.raises(
        InvalidRequest, match=r"spec.data.history.store: .*config.historyRedis.*set connectionString"
    ):
        plan_serve_config(shop, plan, ServeSite("/index", "/online", key))
    assert OperatorSettings.from_env({"RECSERVE_HISTORY_REDIS": "r:6379"}).history_redis == "r:6379"
