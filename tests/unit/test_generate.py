"""`make generate` rewrites every generated file, in an order where each reads fresh inputs.

Each artifact has its own drift test beside it: the CRD in test_crd.py, the chart's copy of it
and the chart README in test_chart_files.py, the kustomize base in test_kustomize.py (it needs
helm). This one keeps the target complete: a generated file names its generator in its header,
and every generator is a step of `make generate`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# generator (as the recipe runs it, without the interpreter) -> what it writes
GENERATORS = {
    "-m recserve_operator.api.crd --write": "manifests/crds/",
    "scripts/sync-chart-crds.sh --crds-only": "charts/recserve/crds/ (copies of manifests/crds/)",
    "scripts/chart-readme.py": "charts/recserve/README.md",
    "scripts/render-kustomize-base.py": "manifests/base/ (from the chart, CRDs included)",
}


def target(name: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a Makefile target."""
    text = (REPO / "Makefile").read_text()
    match = re.search(rf"^{name}:(.*)\n((?:\t.*\n)*)", text, re.M)
    assert match, f"the Makefile has no {name} target"
    return match[1].split(), [line.strip() for line in match[2].splitlines()]


def step_of(command: str, recipe: list[str]) -> int:
    hits = [i for i, line in enumerate(recipe) if line.endswith(command)]
    assert hits, f"`make generate` does not run {command}"
    return hits[0]


def test_generate_needs_only_the_venv_and_runs_every_generator_in_order() -> None:
    prerequisites, recipe = target("generate")
    assert prerequisites == ["env"]
    steps = [step_of(command, recipe) for command in GENERATORS]
    assert steps == sorted(steps), "the CRD first, then its chart copy, the README, the base"
    assert len(recipe) == len(GENERATORS)


def test_every_file_that_says_it_is_generated_is_regenerated() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    _, recipe = target("generate")
    headers = 0
    for name in tracked.stdout.splitlines():
        path = REPO / name
        if path.suffix not in {".yaml", ".md"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for command in re.findall(r"[Gg]enerated .{0,120}?by\s+`python ([^`]+)`", text, re.S):
            headers += 1
            assert any(line.endswith(command) for line in recipe), f"{name}: `make generate` lacks {command}"
    assert headers >= 6  # both CRD copies, the three base files, the chart README
