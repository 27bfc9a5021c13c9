"""The operator's /metrics carry exactly the names and labels the dashboards and alerts rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from recserve_operator import metrics
from recserve_operator.api.status import AnalysisResult, CanaryStatus, RecommenderModelStatus
from recserve_operator.planners.canary import Event

pytestmark = pytest.mark.unit
CONTRACT = Path(__file__).resolve().parents[2] / "observability/metrics-contract.yaml"


def test_operator_metrics_match_the_contract():
    status = RecommenderModelStatus(
        canary=CanaryStatus(
            checkpoint="models:/m/2",
            digest="d",
            state="RolledBack",
            weight=0,
            analysis=AnalysisResult(
                verdict="Fail", message="score shift 0.9 > 0.5", checked_at=datetime.now(UTC)
            ),
        )
    )
    metrics.observe(
        "m", "ns", status, [Event("Warning", "CanaryRolledBack", "x"), Event("Normal", "EngineBuilt", "y")]
    )
    metrics.RECONCILE_ERRORS.inc()
    exported = {}
    for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                exported.setdefault(sample.name, set()).update(sample.labels)
    contract = yaml.safe_load(CONTRACT.read_text())["operator"]["metrics"]
    for entry in contract:
        assert entry["name"] in exported, f"{entry['name']} is in the contract but not exported"
        assert exported[entry["name"]] == set(entry["labels"]), entry["name"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode())
        for s in f.samples
    }
    assert (
        samples[
            (
                "recserve_canary_analysis_result",
                (("check", "score_shift"), ("model", "m"), ("namespace", "ns")),
            )
        ]
        == 0
    )
    assert (
        samples[
            (
                "recserve_canary_analysis_result",
                (("check", "error_rate"), ("model", "m"), ("namespace", "ns")),
            )
        ]
        == 1
    )
