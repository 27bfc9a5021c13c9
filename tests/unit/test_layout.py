"""The layout promises of the product brief, checked where a regression would hide."""

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


def test_serving_never_imports_the_operator():
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "serving").rglob("*.py")
        if "recserve_operator" in path.read_text()
    ]
    assert offenders == []
