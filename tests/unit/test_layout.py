"""The layout promises of the product brief, checked where a regression would hide."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_stdlib_operator_is_not_shadowed_from_the_repo_root():
    code = "import operator, recserve_operator, recserve_serving; operator.add; print(operator.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "recserve" not in out.stdout and not (REPO / "operator" / "__init__.py").exists()


def test_import_contracts_hold():
    """pyproject.toml's [tool.importlinter] contracts; PYTHONPATH makes lint-imports read this
    checkout's sources rather than wherever the package is installed from."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    paths = [str(REPO / "operator"), str(REPO / "serving"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    out = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_serving_package_names_the_example_data_only_in_its_adapter():
    """Any catalog is an input (spec.data): MovieLens is one example, read through one adapter,
    never a constant of serving."""
    adapter = REPO / "serving/recserve_serving/example_data.py"
    naming = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "serving/recserve_serving").rglob("*.py"))
        if path != adapter
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "movielens" in line.lower()
    ]
    assert not naming, f"MovieLens named outside {adapter.name}: {naming}"
    assert "movielens" in adapter.read_text().lower(), "the adapter moved: point this test at it"
