"""Traces, generators, capacity profiles and the spec patch: good input works, bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from autoscale_fixtures import profile_doc

from recserve_operator.autoscale import generate
from recserve_operator.autoscale.patch import PatchError, apply_to_manifest, patch_yaml
from recserve_operator.autoscale.profile import (
    ProfileError,
    ProfileLevel,
    check_profile_fits,
    check_slo_possible,
    parse_profile,
    sweep,
)
from recserve_operator.autoscale.trace import TraceError, from_prometheus_matrix, parse_trace, to_csv
from recserve_serving.serving_spec import ServingSpec

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"


# ---------------------------------------------------------------- traces


def test_timestamp_trace_starts_at_its_first_request():
    trace = parse_trace(
        "# an access log\ntimestamp\n1700000000.5\n1700000001\n1700000001\n1700000003.5\n", "t.csv"
    )
    assert trace.kind == "timestamps"
    assert trace.arrivals() == [0.0, 0.5, 0.5, 3.0]
    assert trace.duration_s == 3.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("timestamp\n1\n3\n2\n", r"t\.csv:4: timestamp 2 is before the previous line's 3; sort the trace"),
        ("timestamp\n0\n-1\n", r"t\.csv:3: timestamp -1 is negative"),
        ("timestamp\n0\nsoon\n", r"t\.csv:3: timestamp 'soon' is not a number"),
        ("timestamp\n", r"t\.csv: no data lines"),
        ("", r"t\.csv: empty"),
        ("when,how\n1,2\n", r"t\.csv:1: header 'when,how' is neither `timestamp`"),
        ("time,rate\n0,1\n0,2\n", r"t\.csv:3: time 0 is not after the previous line's 0"),
        ("time,rate\n0,-1\n", r"t\.csv:2: rate -1 is negative"),
        ("time,rate\n0,nan\n", r"t\.csv:2: rate 'nan' must be a finite number"),
        ("time,rate\n0\n", r"t\.csv:2: expected 2 values `time,rate`"),
    ],
)
def test_bad_traces_name_the_line_and_the_fix(text: str, message: str):
    with pytest.raises(TraceError, match=message):
        parse_trace(text, "t.csv")


def test_rate_trace_arrivals_are_seeded_poisson():
    trace = parse_trace("time,rate\n100,2\n200,0\n300,5\n", "r.csv")
    assert trace.times == (0.0, 100.0, 200.0) and trace.duration_s == 300.0
    arrivals = trace.arrivals(seed=1)
    assert arrivals == trace.arrivals(seed=1) != trace.arrivals(seed=2)
    assert not [a for a in arrivals if 100 <= a < 200]
    assert len(arrivals) == pytest.approx(200 + 500, rel=0.1)
    assert trace.mean_rate == pytest.approx(700 / 300)
    assert parse_trace(to_csv(trace), "again.csv").rates == trace.rates


def test_prometheus_range_answer_becomes_a_rate_trace():
    body = {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1000, "1.5"], [1060, "3"]]}]},
    }
    trace = from_prometheus_matrix(body, "prom")
    assert (trace.times, trace.rates, trace.duration_s) == ((0.0, 60.0), (1.5, 3.0), 120.0)
    two = {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {"a": "1"}}, {"metric": {}}]},
    }
    with pytest.raises(TraceError, match="returned 2 series"):
        from_prometheus_matrix(two, "prom")
    with pytest.raises(TraceError, match="the query failed: bad_data"):
        from_prometheus_matrix({"status": "error", "error": "bad_data"}, "prom")


def test_example_shapes():
    day = generate.diurnal(1.0, 10.0, noise=0.0)
    assert len(day.times) == 1440 and day.duration_s == 86_400
    assert max(day.rates or ()) == pytest.approx(10.0) and min(day.rates or ()) == pytest.approx(
        1.0, abs=0.01
    )
    assert (day.rates or ())[14 * 60] == pytest.approx(10.0)  # the peak at 14:00
    spike = generate.flash_spike(2.0, 20.0)
    assert (
        (spike.rates or ())[0] == 2.0 and (spike.rates or ())[700] == 20.0 and (spike.rates or ())[-1] == 2.0
    )
    ramp = generate.slow_ramp(1.0, 5.0)
    assert (ramp.rates or ())[0] == 1.0 and (ramp.rates or ())[-1] == 5.0
    with pytest.raises(ValueError, match="low <= high"):
        generate.diurnal(5.0, 1.0)


def test_shipped_example_traces_parse():
    shipped = sorted((EXAMPLE.parents[2] / "bench/traces").glob("*.csv"))
    assert [p.stem for p in shipped] == ["diurnal", "flash-spike", "slow-ramp"]
    for path in shipped:
        assert parse_trace(path.read_text(), str(path)).kind == "rates"


# ---------------------------------------------------------------- profiles


def test_a_profile_round_trips_and_gives_its_service_model():
    profile = parse_profile(json.dumps(profile_doc()), "p.json")
    service = profile.service_model()
    assert service.throughput(3) == pytest.approx(7.25)
    assert service.size == "lognormal" and service.sigma > 0


def test_profile_levels_must_start_alone_and_increase():
    doc = profile_doc()
    doc["levels"] = doc["levels"][1:]
    with pytest.raises(ProfileError, match=r"p\.json: not a capacity profile: .*start at concurrency 1"):
        parse_profile(json.dumps(doc), "p.json")
    with pytest.raises(ProfileError, match=r"p\.json: not a capacity profile: engineKey"):
        parse_profile(json.dumps({**profile_doc(), "engineKey": ""}), "p.json")


def test_a_profile_of_another_engine_is_refused():
    profile = parse_profile(json.dumps(profile_doc()), "p.json")
    with pytest.raises(
        ProfileError, match=r"p\.json measured engine aaaaaaaaaaaa but the spec serves engine bbbbbbbbbbbb"
    ):
        check_profile_fits(profile, ServingSpec(), "b" * 64, "p.json")
    check_profile_fits(profile, ServingSpec(), "a" * 64, "p.json")
    check_profile_fits(profile, ServingSpec(), None, "p.json")


def test_a_profile_of_a_differently_shaped_replica_is_refused():
    profile = parse_profile(json.dumps(profile_doc()), "p.json")
    serving = ServingSpec.model_validate(
        {"retrieval": {"candidates": 400, "maxK": 100}, "resources": {"cpus": 2}}
    )
    with pytest.raises(ProfileError, match=r"resources\.cpus 2 \(profile: 1\), retrieval\.candidates 400"):
        check_profile_fits(profile, serving, None, "p.json")


def test_an_slo_below_a_lone_request_is_impossible():
    profile = parse_profile(json.dumps(profile_doc()), "p.json")
    with pytest.raises(ProfileError, match=r"p99 of 300 ms is impossible: .* p99 320 ms"):
        check_slo_possible(profile, 300.0)
    check_slo_possible(profile, 320.0)


def _level(concurrency: int, rps: float, errors: int = 0) -> ProfileLevel:
    return ProfileLevel(
        concurrency=concurrency, throughput_rps=rps, p50_ms=100, p99_ms=200, requests=100, errors=errors
    )


def test_the_sweep_stops_at_saturation_or_errors():
    curve = {1: 4.0, 2: 7.0, 4: 9.0, 8: 9.2, 16: 9.3}
    measured: list[int] = []

    def measure(c: int) -> ProfileLevel:
        measured.append(c)
        return _level(c, curve[c])

    levels, saturated = sweep(measure, max_concurrency=64)
    assert measured == [1, 2, 4, 8] and saturated
    assert [x.concurrency for x in levels] == [1, 2, 4, 8]
    levels, saturated = sweep(lambda c: _level(c, curve[c]), max_concurrency=2)
    assert [x.concurrency for x in levels] == [1, 2] and not saturated
    levels, saturated = sweep(lambda c: _level(c, 10.0 * c, errors=5 if c == 2 else 0), max_concurrency=64)
    assert [x.concurrency for x in levels] == [1, 2] and saturated


# ---------------------------------------------------------------- the spec patch


def test_the_patch_edits_the_manifest_in_place_keeping_comments():
    text = EXAMPLE.read_text()
    changes = {"targetOngoingRequests": 3, "upscaleDelaySeconds": 5, "maxOngoingRequests": 64}
    edited = apply_to_manifest(text, changes, "m.yaml")
    assert "# two cores: at most two one-core replicas" in edited
    assert "      targetOngoingRequests: 3\n" in edited and "      maxOngoingRequests: 64\n" in edited
    before, after = yaml.safe_load(text), yaml.safe_load(edited)
    assert after["spec"]["serving"]["autoscaling"] == {**before["spec"]["serving"]["autoscaling"], **changes}
    after["spec"]["serving"]["autoscaling"] = before["spec"]["serving"]["autoscaling"]
    assert after == before
    assert len(edited.splitlines()) == len(text.splitlines()) + 1
    removed = apply_to_manifest(edited, {"maxOngoingRequests": None}, "m.yaml")
    assert removed == text.replace("targetOngoingRequests: 2", "targetOngoingRequests: 3").replace(
        "upscaleDelaySeconds: 10", "upscaleDelaySeconds: 5"
    )


def test_the_patch_adds_a_missing_block_and_refuses_flow_style():
    bare = "apiVersion: recserve.dev/v1alpha1\nkind: RecommenderModel\nmetadata:\n  name: m\nspec:\n  checkpoint:\n    uri: file:///c\n"
    edited = apply_to_manifest(bare, {"minReplicas": 2}, "m.yaml")
    assert yaml.safe_load(edited)["spec"]["serving"] == {"autoscaling": {"minReplicas": 2}}
    flow = bare + "  serving:\n    autoscaling: {minReplicas: 1}\n"
    with pytest.raises(PatchError, match=r"inline \(flow style\).*apply this patch to m\.yaml by hand"):
        apply_to_manifest(flow, {"minReplicas": 2}, "m.yaml")


def test_the_patch_yaml_is_a_merge_patch():
    assert yaml.safe_load(patch_yaml({"minReplicas": 2, "maxOngoingRequests": None})) == {
        "spec": {"serving": {"autoscaling": {"minReplicas": 2, "maxOngoingRequests": None}}}
    }


# ---------------------------------------------------------------- what `profile` reads from Ray


def _serve_answer(replica_states: list[str], rankers: int = 1) -> dict:
    ranker = {
        "deployed_app_config": {
            "args": {
                "engineDir": "/state/engines/" + "c" * 64,
                "batching": {"maxBatchSize": 16, "batchWaitTimeoutMs": 2},
            }
        },
        "deployments": {
            "Ranker": {
                "replicas": [{"state": s} for s in replica_states],
                "deployment_config": {"max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 1.0}},
            }
        },
    }
    apps = {
        "m": {
            "deployed_app_config": {"args": {"retrieval": {"candidates": 100}}},
            "deployments": {"Router": {}},
        }
    }
    for i in range(rankers):
        apps[f"m-{i:010d}"] = ranker
    return {"applications": apps}


def test_the_profiled_ranker_is_read_from_the_serve_rest_api():
    from recserve_operator.autoscale.measure import ranker_under_test, require_one_replica

    ranker = ranker_under_test(_serve_answer(["RUNNING"]), "m")
    assert ranker.app == "m-0000000000" and ranker.running == 1 and ranker.engine_dir.endswith("c" * 64)
    assert (ranker.conditions.max_batch_size, ranker.conditions.candidates) == (16, 100)
    assert ranker.conditions.max_ongoing_requests == 64 and ranker.cpus == 1.0
    require_one_replica(ranker, "m")
    two = ranker_under_test(_serve_answer(["RUNNING", "RUNNING"]), "m")
    with pytest.raises(ProfileError, match="runs 2 replicas; a profile measures exactly one"):
        require_one_replica(two, "m")
    with pytest.raises(ProfileError, match="serves 2 versions"):
        ranker_under_test(_serve_answer(["RUNNING"], rankers=2), "m")
    with pytest.raises(ProfileError, match="model other is not deployed"):
        ranker_under_test(_serve_answer(["RUNNING"]), "other")
