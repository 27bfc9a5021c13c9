"""The Grafana dashboard and the PrometheusRule reference only metrics and labels that exist.

observability/metrics-contract.yaml lists every metric they use. Here:
- the serving section is checked against what the serving app really exports (its
  ServingMetrics registry, rendered in Prometheus' text format and parsed back);
- the Ray section against the metric names in the pinned Ray;
- every PromQL expression of the dashboard and the rules is parsed, and each metric and label it
  names must be in the contract, and every contract metric must be used;
- the rules pass `promtool check rules` and the firing cases of `promtool test rules`
  (promtool from scripts/build-manifest-tools.sh).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Literal

import pytest
import yaml
from k8s_tools import REPO, by_kind, kubeconform, kustomize, one, run, tool, write_core_schemas
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

OBS = REPO / "observability"
DASHBOARD = OBS / "grafana" / "recserve-dashboard.json"
RULES = OBS / "prometheus" / "recserve-rules.yaml"
RULE_TESTS = OBS / "prometheus" / "recserve-rules.test.yaml"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metric(Strict):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    type: Literal["counter", "gauge", "histogram"]
    labels: list[str]
    help: str = Field(min_length=1)


class Section(Strict):
    source: str
    metrics: list[Metric]


class Contract(Strict):
    serving: Section
    operator: Section
    ray: Section
    target_labels: list[str] = Field(alias="targetLabels")

    def metrics(self) -> dict[str, Metric]:
        all_ = [m for s in (self.serving, self.operator, self.ray) for m in s.metrics]
        names = [m.name for m in all_]
        assert len(names) == len(set(names)), "a metric is listed twice"
        return {m.name: m for m in all_}


class Rule(Strict):
    record: str | None = None
    alert: str | None = None
    expr: str
    for_: str | None = Field(default=None, alias="for")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Group(Strict):
    name: str
    interval: str | None = None
    rules: list[Rule]


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.model_validate(yaml.safe_load((OBS / "metrics-contract.yaml").read_text()))


@pytest.fixture(scope="module")
def rule_doc() -> dict:
    return yaml.safe_load(RULES.read_text())


@pytest.fixture(scope="module")
def groups(rule_doc: dict) -> list[Group]:
    return [Group.model_validate(g) for g in rule_doc["spec"]["groups"]]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


# ---------------------------------------------------------------- a small PromQL reader

TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')'
    r"|(?P<range>\[[^\]]*\])"
    r'|(?P<braces>\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})'
    r"|(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<paren>\()"
    r"|(?P<other>\S)"
)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATORS = {"and", "or", "unless", "bool", "offset", "inf", "nan", *GROUPING}
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*,?')


class Refs(BaseModel):
    metrics: set[str] = set()
    labels: dict[str, set[str]] = {}  # metric -> label names in its matchers
    grouping: set[str] = set()  # labels in by/without/on/ignoring clauses


def promql_refs(expr: str) -> Refs:
    refs = Refs()
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr)]
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "ident" and text in GROUPING and following[0] == "paren":
            j = i + 2
            while j < len(tokens) and tokens[j][1] != ")":
                if tokens[j][0] == "ident":
                    refs.grouping.add(tokens[j][1])
                j += 1
            i = j + 1
            continue
        aggregation = following[0] == "ident" and following[1] in GROUPING  # sum by (...) (...)
        if kind == "ident" and following[0] != "paren" and text not in OPERATORS and not aggregation:
            refs.metrics.add(text)
            labels = refs.labels.setdefault(text, set())
            if following[0] == "braces":
                body = following[1][1:-1]
                found = MATCHER.findall(body)
                assert "".join(MATCHER.sub("", body).split()) == "", f"unparsed matchers in {body!r}"
                labels.update(name for name, _ in found)
        i += 1
    return refs


@pytest.mark.unit
def test_the_promql_reader_finds_metrics_labels_and_grouping() -> None:
    refs = promql_refs(
        'histogram_quantile(0.99, sum by (version, le) (rate(a_bucket{model=~"$m",code="5.."}[5m])))'
        ' / on (model) group_left b_total > 14.4 * 0.001 and c:ratio:rate5m{x!="}"}'
    )
    assert refs.metrics == {"a_bucket", "b_total", "c:ratio:rate5m"}
    assert refs.labels == {"a_bucket": {"model", "code"}, "b_total": set(), "c:ratio:rate5m": {"x"}}
    assert refs.grouping == {"version", "le", "model"}


def family(name: str, metrics: dict[str, Metric]) -> Metric | None:
    if name in metrics:
        return metrics[name]
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in metrics and metrics[base].type == "histogram":
            return metrics[base]
    return None


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_]+)\)", var["definition"])
            assert match, var["definition"]
            exprs.append(f"sum by ({match[2]}) ({match[1]})")
    return exprs


def check_exprs(exprs: list[str], contract: Contract, recorded: set[str]) -> set[str]:
    """Fails on any unknown metric or label; returns the contract metrics used."""
    metrics = contract.metrics()
    used: set[str] = set()
    for expr in exprs:
        refs = promql_refs(expr)
        assert refs.metrics, f"no metric in {expr!r}"
        known_labels = set(contract.target_labels) | {"le"}
        for name in refs.metrics:
            if name in recorded:
                continue
            metric = family(name, metrics)
            assert metric is not None, f"{name} (in {expr!r}) is not in metrics-contract.yaml"
            used.add(metric.name)
            allowed = (
                set(metric.labels)
                | set(contract.target_labels)
                | ({"le"} if name.endswith("_bucket") else set())
            )
            assert refs.labels[name] <= allowed, f"{name}: labels {refs.labels[name] - allowed} unknown"
            known_labels |= set(metric.labels)
        if not refs.metrics - recorded:
            known_labels |= {"namespace", "model"}  # what the recording rules keep
        assert refs.grouping <= known_labels, f"grouping by {refs.grouping - known_labels} in {expr!r}"
    return used


@pytest.mark.unit
def test_contract_serving_metrics_are_what_the_serving_app_exports(contract: Contract) -> None:
    from recserve_serving.serve.metrics import ServingMetrics

    m = ServingMetrics()
    labels = ("ranker", "ranker/3")
    m.requests.labels(*labels, "/v1/recommend", "200").inc()
    m.latency.labels(*labels, "/v1/recommend").observe(0.01)
    m.scores.labels(*labels).observe(0.5)
    m.batch_size.labels(*labels).observe(4)
    m.queue_length.labels(*labels).set(2)
    m.ranker_retries.labels(*labels).inc()
    m.shadow_diff.labels("ranker").observe(0.05)
    m.feedback_compacted.labels("ranker", "expired").inc()
    exported: dict[str, tuple[str, set[str], str]] = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        names = {s.name for s in fam.samples}
        label_names = {k for s in fam.samples for k in s.labels} - {"le"}
        if fam.name.endswith("_created"):
            continue  # prometheus_client's creation timestamps of counters and histograms
        name = f"{fam.name}_total" if fam.type == "counter" else fam.name
        if fam.type == "counter":
            assert name in names
        exported[name] = (fam.type, label_names, fam.documentation)
    wanted = {x.name: (x.type, set(x.labels), x.help) for x in contract.serving.metrics}
    assert wanted == exported


@pytest.mark.unit
def test_contract_ray_metrics_exist_in_the_pinned_ray(contract: Contract) -> None:
    spec = importlib.util.find_spec("ray")  # located, not imported: importing Ray is slow
    assert spec is not None and spec.submodule_search_locations
    serve_dir = Path(next(iter(spec.submodule_search_locations))) / "serve"
    source = "\n".join(p.read_text() for p in serve_dir.rglob("*.py"))
    for metric in contract.ray.metrics:
        assert f'"{metric.name.removeprefix("ray_")}"' in source, f"{metric.name} is not a Ray Serve metric"
        for label in metric.labels:
            assert f'"{label}"' in source


@pytest.mark.unit
def test_dashboard_and_rules_use_exactly_the_contract(
    contract: Contract, dashboard: dict, groups: list[Group]
) -> None:
    recorded = {r.record for g in groups for r in g.rules if r.record}
    used = check_exprs(dashboard_exprs(dashboard), contract, recorded)
    used |= check_exprs([r.expr for g in groups for r in g.rules], contract, recorded)
    assert used == set(contract.metrics()), f"in the contract but unused: {set(contract.metrics()) - used}"
    for name in recorded:
        assert re.fullmatch(r"recserve:[a-z_]+:[a-z0-9_]+", name), (
            f"recording rule {name} is not level:metric:op"
        )


@pytest.mark.unit
def test_dashboard_shows_what_operators_need(dashboard: dict) -> None:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}

    def panel_with(*needles: str) -> str:
        hits = [title for title, e in exprs.items() if all(n in e for n in needles)]
        assert hits, f"no panel with {needles}"
        return hits[0]

    panel_with("recserve_requests_total", "by (version)")  # per-version QPS
    panel_with("recserve_requests_total", 'code=~"5.."', "by (version)")  # errors
    panel_with(
        "histogram_quantile(0.5,", "histogram_quantile(0.99,", "recserve_request_duration_seconds_bucket"
    )
    panel_with("recserve_batch_size")
    panel_with("ray_serve_deployment_replica_healthy")
    panel_with("recserve_canary_weight")
    panel_with("recserve_canary_analysis_result", "by (check)")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # No two panels overlap on the 24-column grid.
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']} overlaps another"
        cells |= mine
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in p["targets"]:
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var.startswith("__"), f"${var} undefined"


@pytest.mark.unit
def test_alerts_are_complete_and_link_to_the_guide(groups: list[Group]) -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", guide, re.M)
    }
    alerts = [r for g in groups for r in g.rules if r.alert]
    assert {a.alert for a in alerts} >= {
        "RecserveCanaryRolledBack",
        "RecserveEngineBuildFailing",
        "RecserveErrorBudgetFastBurn",
        "RecserveErrorBudgetSlowBurn",
    }
    for a in alerts:
        assert a.labels.get("severity") in {"critical", "warning", "info"}, a.alert
        assert a.annotations.get("summary") and a.annotations.get("description"), a.alert
        anchor = a.annotations["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{a.alert}: docs/operations.md has no section #{anchor}"


def _plain_rule_files(rule_doc: dict, tmp_path: Path) -> tuple[Path, Path]:
    full = tmp_path / "recserve-rules.full.yaml"
    full.write_text(yaml.safe_dump({"groups": rule_doc["spec"]["groups"]}))
    stripped = {
        "groups": [
            dict(g, rules=[{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]])
            for g in rule_doc["spec"]["groups"]
        ]
    }
    (tmp_path / "recserve-rules.groups.yaml").write_text(yaml.safe_dump(stripped))
    tests = tmp_path / "recserve-rules.test.yaml"
    tests.write_text(RULE_TESTS.read_text())
    return full, tests


@pytest.mark.integration
def test_promtool_checks_and_tests_the_rules(rule_doc: dict, tmp_path: Path) -> None:
    full, tests = _plain_rule_files(rule_doc, tmp_path)
    out = run([tool("promtool"), "check", "rules", full]).stdout
    assert "SUCCESS" in out
    proc = run([tool("promtool"), "test", "rules", tests], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.integration
def test_promtool_tests_can_fail(rule_doc: dict, tmp_path: Path) -> None:
    """The firing cases are real: a rule with a wrong threshold breaks them."""
    broken = json.loads(json.dumps(rule_doc))
    for g in broken["spec"]["groups"]:
        for r in g["rules"]:
            if r.get("alert") == "RecserveErrorBudgetFastBurn":
                r["expr"] = r["expr"].replace("14.4", "144")
    _, tests = _plain_rule_files(broken, tmp_path)
    proc = run([tool("promtool"), "test", "rules", tests], check=False)
    assert proc.returncode != 0 and "RecserveErrorBudgetFastBurn" in proc.stdout + proc.stderr


@pytest.mark.integration
def test_observability_kustomization(dashboard: dict, tmp_path: Path) -> None:
    docs = kustomize(OBS)
    cm = one(docs, "ConfigMap", "recserve-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["recserve-dashboard.json"]) == dashboard
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())["spec"]
    write_core_schemas(tmp_path)
    assert "Invalid: 0, Errors: 0" in kubeconform(by_kind(docs, "ConfigMap"), tmp_path, skip=())
