"""The pure helpers of the serving benchmark (bench/serving_bench): statistics, the table,
target verdicts, metric parsing.

The benchmark itself needs minutes and a quiet machine; this only checks that what it
prints is computed correctly.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from bench.serving_bench.measure import Settings
from bench.serving_bench.plots import write_plots
from bench.serving_bench.report import (
    BASELINE,
    DIRECT,
    DIRECT_TODAY,
    FULL,
    SERVE,
    SERVE_EXPLAIN,
    SERVE_OFF,
    SERVE_OIP1,
    SERVE_OIP1_OFF,
    SERVE_PLAIN,
    SERVE_TODAY,
    comparison_table,
    evaluate_targets,
    explain_target,
    format_table,
    ratio,
    render_report,
    summarize,
)
from bench.serving_bench.servers import (
    histogram_stats,
    manifest_variant,
    mean_between,
    oip_ids_body,
    oip_pairs_body,
)
from recserve_operator.loadgen import percentile_ms

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_percentiles_and_summary():
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    row = summarize("p", 8, latencies, elapsed_s=2.0, errors=3)
    assert row.ok == 100 and row.errors == 3
    assert row.qps == pytest.approx(50.0)
    assert row.p50_ms == pytest.approx(50.5)
    assert row.p99_ms == pytest.approx(99.01)
    assert row.p90_ms == pytest.approx(90.1)
    assert len(row.latencies_s) == 100
    assert math.isnan(percentile_ms([], 50))
    assert percentile_ms([0.2], 99) == pytest.approx(200.0)
    assert math.isnan(summarize("p", 1, [], elapsed_s=0.0).qps)


def test_ratio_is_nan_safe():
    assert ratio(3.0, 2.0) == pytest.approx(1.5)
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def rows(*, serve_qps=9.0, off_qps=8.0, oip_on=60.0, oip_off=20.0, full_p99=8000.0, explain_s=0.3):
    s = summarize
    return [
        s(DIRECT, 1, [0.1] * 10, elapsed_s=1.0),  # 10 QPS, p99 100 ms
        s(FULL, 1, [full_p99 / 1000] * 2, elapsed_s=2 * full_p99 / 1000),
        s(SERVE_PLAIN, 1, [0.2] * 5, elapsed_s=1.0),
        s(SERVE_EXPLAIN, 1, [explain_s] * 5, elapsed_s=5 * explain_s),
        s(SERVE, 32, [1.0] * int(serve_qps * 10), elapsed_s=10.0),
        s(SERVE_OIP1, 32, [0.5] * int(oip_on * 10), elapsed_s=10.0),
        s(SERVE_OFF, 32, [1.0] * int(off_qps * 10), elapsed_s=10.0),
        s(SERVE_OIP1_OFF, 32, [0.5] * int(oip_off * 10), elapsed_s=10.0),
        s(BASELINE, 1, [20.0] * 2, elapsed_s=40.0),  # 0.05 QPS
    ]


def test_table_has_ratios_against_the_engine_and_the_baseline():
    table = format_table(rows())
    lines = table.splitlines()
    assert "QPS × engine in-process" in lines[0] and "QPS × baseline" in lines[0]
    assert len(lines) == 2 + 9
    serve32 = next(line for line in lines if line.startswith(f"| {SERVE} | 32 |"))
    cells = [c.strip() for c in serve32.split("|")]
    assert cells[5] == "9.00"  # QPS
    assert cells[9] == "0.90×"  # vs 10 QPS in-process
    assert cells[10] == "180.00×"  # vs 0.05 QPS baseline
    # without a baseline row the ratio column says so instead of failing
    assert "n/a" in format_table(rows()[:-1])


def test_targets_met_and_missed():
    verdicts = {t.name: t for t in evaluate_targets(rows())}
    assert len(verdicts) == 7
    assert not any(t.met for name, t in verdicts.items() if "optimized" in name)  # no today's rows: missed
    serve = next(t for name, t in verdicts.items() if name.startswith("Ray Serve path"))
    assert serve.value == pytest.approx(0.9) and serve.met  # best level (32) vs in-process
    recommend = next(t for name, t in verdicts.items() if "recommend" in name and "batching" in name)
    assert recommend.value == pytest.approx(9 / 8) and not recommend.met
    oip = next(t for name, t in verdicts.items() if "1 pair" in name)
    assert oip.value == pytest.approx(3.0) and oip.met
    two_stage = next(t for name, t in verdicts.items() if name.startswith("two-stage"))
    assert two_stage.value == pytest.approx(80.0) and two_stage.met
    assert "**MET**" in two_stage.line() and "**MISSED**" in recommend.line()
    explain = next(t for name, t in verdicts.items() if "explain" in name)
    assert explain.value == pytest.approx(1.5) and explain.met  # p50 300 ms vs 200 ms: at most 2×
    assert "(target ≤ 2×)" in explain.line()
    costly = explain_target(rows(explain_s=0.5))
    assert costly.value == pytest.approx(2.5) and not costly.met
    assert not explain_target(rows()[:3]).met  # no explain row: missed, not crashed

    missing = evaluate_targets(rows(serve_qps=8.0)[:3])
    assert all(not t.met for t in missing[3:5])  # no batching rows: missed, not crashed
    assert not missing[2].met  # no Serve recommend level at all


def test_histogram_mean_between_scrapes():
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
    assert histogram_stats(after, "recserve_batch_size") == (114.0, 14.0)
    assert mean_between(before, after, "recserve_batch_size") == pytest.approx(110 / 12)
    assert math.isnan(mean_between(after, after, "recserve_batch_size"))


def test_manifest_variant_leaves_the_original_alone():
    original = {"metadata": {"name": "m"}, "spec": {"serving": {"batching": {"maxBatchSize": 32}}}}
    off = manifest_variant(original, "m-off", max_batch_size=1)
    assert off["metadata"]["name"] == "m-off"
    assert off["spec"]["serving"]["batching"]["maxBatchSize"] == 1
    assert original["spec"]["serving"]["batching"]["maxBatchSize"] == 32
    same = manifest_variant(original, "m-on")
    assert same["spec"] == original["spec"] and same["metadata"]["name"] == "m-on"


def test_oip_bodies_follow_the_protocol():
    body = oip_pairs_body(["u", "u"], ["a", "b"])
    assert [t["name"] for t in body["inputs"]] == ["user_text", "item_text"]
    assert all(t["shape"] == [2] and t["datatype"] == "BYTES" for t in body["inputs"])
    ids = oip_ids_body(42, 7)
    assert ids["inputs"][0] == {"name": "user_id", "datatype": "INT64", "shape": [1], "data": [42]}


def test_report_has_table_targets_and_command():
    data = rows()
    text = render_report(
        command=".venv/bin/python bench/serving.py",
        started=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        header=["engine: e"],
        rows=data,
        targets=evaluate_targets(data),
        notes=["n"],
    )
    assert text.startswith("# Serving benchmark, 2026-01-02 03:04 UTC")
    assert "`.venv/bin/python bench/serving.py`" in text
    assert format_table(data) in text
    missed = sum(not t.met for t in evaluate_targets(data))
    assert text.count("→ **") == 7 + missed  # every target, then the missed ones again with their figures
    assert "Missed:" in text and "Optimized path vs today's path" not in text  # no today's rows


def comparison_rows():
    s = summarize
    return [
        *rows(),
        s(DIRECT_TODAY, 1, [1.0] * 10, elapsed_s=10.0),  # 1 QPS in-process
        s(SERVE, 1, [0.15] * 10, elapsed_s=1.5),
        s(SERVE, 8, [0.8] * 80, elapsed_s=8.0),  # 10 QPS
        s(SERVE_TODAY, 1, [0.9] * 10, elapsed_s=9.0),
        s(SERVE_TODAY, 8, [4.0] * 16, elapsed_s=8.0),  # 2 QPS: best level
        s(SERVE_TODAY, 32, [20.0] * 32, elapsed_s=20.0),  # 1.6 QPS
    ]


def test_optimized_against_today_side_by_side():
    data = comparison_rows()
    verdicts = {t.name: t for t in evaluate_targets(data)}
    throughput = next(
        t for name, t in verdicts.items() if name.startswith("recommend throughput at saturation")
    )
    assert throughput.value == pytest.approx(10.0 / 2.0) and throughput.met  # best levels: c=8 vs c=8
    p50 = next(t for name, t in verdicts.items() if name.startswith("recommend p50 at concurrency 1"))
    assert p50.value == pytest.approx(150.0) and p50.met and p50.at_most
    assert "150 ms (target ≤ 200 ms)" in p50.line() and "today's path: 900 ms" in p50.line()
    slow = evaluate_targets([*data[:-6], summarize(SERVE, 1, [0.25] * 4, elapsed_s=1.0), *data[-5:]])
    assert not next(t for t in slow if t.name.startswith("recommend p50")).met

    table = comparison_table(data).splitlines()
    assert table[0].startswith("| path | where | conc. |") and "p90 ms" in table[0]
    assert [line.split("|")[1:4] for line in table[2:]] == [
        [" optimized ", " in-process ", " 1 "],
        [" optimized ", " Ray Serve ", " 1 "],
        [" optimized ", " Ray Serve ", " 8 "],
        [" optimized ", " Ray Serve ", " 32 "],
        [" today ", " in-process ", " 1 "],
        [" today ", " Ray Serve ", " 1 "],
        [" today ", " Ray Serve ", " 8 "],
        [" today ", " Ray Serve ", " 32 "],
    ]
    text = render_report(
        command="c",
        started=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        header=[],
        rows=data,
        targets=evaluate_targets(data),
        notes=[],
        plots=["/x/serving-throughput.png"],
    )
    assert (
        "## Optimized path vs today's path" in text
        and "![serving-throughput](serving-throughput.png)" in text
    )
    assert "optimized / today, throughput at saturation (Ray Serve): 5.00×" in text
    assert "optimized / today, engine in-process (sequential, alternating blocks): 10.00×" in text
    assert "batching on / off at concurrency 32, 1-pair OIP infer: 3.00×" in text


def test_plots_are_written(tmp_path):
    written = write_plots(comparison_rows(), tmp_path, "test", "-quick")
    assert [p.name for p in written] == ["serving-throughput-quick.png", "serving-latency-cdf-quick.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    assert write_plots(rows()[:2], tmp_path / "none", "test") == []  # no Serve levels: nothing drawn


def test_levels_are_whole_rounds_and_quick_is_smaller():
    full, quick = Settings.for_mode(False), Settings.for_mode(True)
    for settings in (full, quick):
        for concurrency in (8, 32):
            assert settings.requests(concurrency) % concurrency == 0
            assert settings.requests(concurrency, small=True) % concurrency == 0
    assert quick.candidates and full.candidates is None and full.catalog_limit is None
    assert all(quick.requests(c) <= full.requests(c) for c in (1, 8, 32))
    assert 0 < quick.explain_requests <= full.explain_requests
    assert full.levels == (1, 2, 4, 8, 16, 32) and {1, 8} <= set(quick.levels)
    for settings in (full, quick):
        for concurrency in settings.levels:
            assert settings.level_requests(concurrency) % concurrency == 0
            assert settings.level_requests(concurrency) >= 2 * concurrency
    assert quick.train and not full.train  # quick trains throwaway checkpoints, in its own state
