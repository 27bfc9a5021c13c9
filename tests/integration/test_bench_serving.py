"""The pure helpers of bench/serving.py: statistics, the table, target verdicts, metric parsing.

The benchmark itself needs minutes and a quiet machine; this only checks that what it
prints is computed correctly.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serving.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serving", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_percentiles_and_summary(bench):
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    row = bench.summarize("p", 8, latencies, elapsed_s=2.0, errors=3)
    assert row.ok == 100 and row.errors == 3
    assert row.qps == pytest.approx(50.0)
    assert row.p50_ms == pytest.approx(50.5)
    assert row.p99_ms == pytest.approx(99.01)
    assert math.isnan(bench.percentile_ms([], 50))
    assert bench.percentile_ms([0.2], 99) == pytest.approx(200.0)
    assert math.isnan(bench.summarize("p", 1, [], elapsed_s=0.0).qps)


def test_ratio_is_nan_safe(bench):
    assert bench.ratio(3.0, 2.0) == pytest.approx(1.5)
    assert math.isnan(bench.ratio(1.0, 0.0))
    assert math.isnan(bench.ratio(math.nan, 1.0))


def rows(bench, *, serve_qps=9.0, off_qps=8.0, oip_on=60.0, oip_off=20.0, full_p99=8000.0):
    s = bench.summarize
    return [
        s(bench.DIRECT, 1, [0.1] * 10, elapsed_s=1.0),  # 10 QPS, p99 100 ms
        s(bench.FULL, 1, [full_p99 / 1000] * 2, elapsed_s=2 * full_p99 / 1000),
        s(bench.SERVE, 1, [0.2] * 5, elapsed_s=1.0),
        s(bench.SERVE, 32, [1.0] * int(serve_qps * 10), elapsed_s=10.0),
        s(bench.SERVE_OIP1, 32, [0.5] * int(oip_on * 10), elapsed_s=10.0),
        s(bench.SERVE_OFF, 32, [1.0] * int(off_qps * 10), elapsed_s=10.0),
        s(bench.SERVE_OIP1_OFF, 32, [0.5] * int(oip_off * 10), elapsed_s=10.0),
        s(bench.BASELINE, 1, [20.0] * 2, elapsed_s=40.0),  # 0.05 QPS
    ]


def test_table_has_ratios_against_the_engine_and_the_baseline(bench):
    table = bench.format_table(rows(bench))
    lines = table.splitlines()
    assert "QPS × engine in-process" in lines[0] and "QPS × baseline" in lines[0]
    assert len(lines) == 2 + 8
    serve32 = next(line for line in lines if line.startswith(f"| {bench.SERVE} | 32 |"))
    cells = [c.strip() for c in serve32.split("|")]
    assert cells[5] == "9.00"  # QPS
    assert cells[8] == "0.90×"  # vs 10 QPS in-process
    assert cells[9] == "180.00×"  # vs 0.05 QPS baseline
    # without a baseline row the ratio column says so instead of failing
    assert "n/a" in bench.format_table(rows(bench)[:-1])


def test_targets_met_and_missed(bench):
    verdicts = {t.name: t for t in bench.evaluate_targets(rows(bench))}
    assert len(verdicts) == 4
    serve = next(t for name, t in verdicts.items() if name.startswith("Ray Serve path"))
    assert serve.value == pytest.approx(0.9) and serve.met  # best level (32) vs in-process
    recommend = next(t for name, t in verdicts.items() if "recommend" in name and "batching" in name)
    assert recommend.value == pytest.approx(9 / 8) and not recommend.met
    oip = next(t for name, t in verdicts.items() if "1 pair" in name)
    assert oip.value == pytest.approx(3.0) and oip.met
    two_stage = next(t for name, t in verdicts.items() if name.startswith("two-stage"))
    assert two_stage.value == pytest.approx(80.0) and two_stage.met
    assert "**MET**" in two_stage.line() and "**MISSED**" in recommend.line()

    missing = bench.evaluate_targets(rows(bench, serve_qps=8.0)[:3])
    assert all(not t.met for t in missing[1:3])  # no batching rows: missed, not crashed
    assert not missing[0].met  # 5 QPS best (c=1) < 0.85 × 10


def test_histogram_mean_between_scrapes(bench):
    before = (
        "# HELP recserve_batch_size x\n"
        'recserve_batch_size_bucket{model="m",version="v/1",le="1.0"} 2.0\n'
        'recserve_batch_size_sum{model="m",version="v/1"} 4.0\n'
        'recserve_batch_size_count{model="m",version="v/1"} 2.0\n'
    )
    after = (
        'recserve_batch_size_sum{model="m",version="v/1"} 104.0\n'
        'recserve_batch_size_count{model="m",version="v/1"} 12.0\n'
        'recserve_batch_size_sum{model="m",version="v/2"} 10.0\n'
        'recserve_batch_size_count{model="m",version="v/2"} 2.0\n'
        'recserve_batch_size_created{model="m",version="v/2"} 1.7e9\n'
    )
    assert bench.histogram_stats(after, "recserve_batch_size") == (114.0, 14.0)
    assert bench.mean_between(before, after, "recserve_batch_size") == pytest.approx(110 / 12)
    assert math.isnan(bench.mean_between(after, after, "recserve_batch_size"))


def test_manifest_variant_leaves_the_original_alone(bench):
    original = {"metadata": {"name": "m"}, "spec": {"serving": {"batching": {"maxBatchSize": 32}}}}
    off = bench.manifest_variant(original, "m-off", max_batch_size=1)
    assert off["metadata"]["name"] == "m-off"
    assert off["spec"]["serving"]["batching"]["maxBatchSize"] == 1
    assert original["spec"]["serving"]["batching"]["maxBatchSize"] == 32
    same = bench.manifest_variant(original, "m-on")
    assert same["spec"] == original["spec"] and same["metadata"]["name"] == "m-on"


def test_oip_bodies_follow_the_protocol(bench):
    body = bench.oip_pairs_body(["u", "u"], ["a", "b"])
    assert [t["name"] for t in body["inputs"]] == ["user_text", "item_text"]
    assert all(t["shape"] == [2] and t["datatype"] == "BYTES" for t in body["inputs"])
    ids = bench.oip_ids_body(42, 7)
    assert ids["inputs"][0] == {"name": "user_id", "datatype": "INT64", "shape": [1], "data": [42]}


def test_report_has_table_targets_and_command(bench):
    from datetime import UTC, datetime

    data = rows(bench)
    text = bench.render_report(
        command=".venv/bin/python bench/serving.py",
        started=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        header=["engine: e"],
        rows=data,
        targets=bench.evaluate_targets(data),
        notes=["n"],
    )
    assert text.startswith("# Serving benchmark, 2026-01-02 03:04 UTC")
    assert "`.venv/bin/python bench/serving.py`" in text
    assert bench.format_table(data) in text
    assert text.count("→ **") == 4


def test_levels_are_whole_rounds_and_quick_is_smaller(bench):
    full, quick = bench.Settings.for_mode(False), bench.Settings.for_mode(True)
    for settings in (full, quick):
        for concurrency in (8, 32):
            assert settings.requests(concurrency) % concurrency == 0
            assert settings.requests(concurrency, small=True) % concurrency == 0
    assert quick.candidates and full.candidates is None and full.catalog_limit is None
    assert all(quick.requests(c) <= full.requests(c) for c in (1, 8, 32))
